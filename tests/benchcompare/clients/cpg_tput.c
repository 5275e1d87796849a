/*
 * cpg_tput SIZE SECONDS GROUP
 *
 * Ordered multicast throughput through libcpg: joins GROUP, multicasts
 * CPG_TYPE_AGREED messages of SIZE bytes for SECONDS (waiting out
 * CS_ERR_TRY_AGAIN, the library's flow control, by dispatching), and counts
 * its own messages as they are delivered back. Prints
 *   RESULT msgs_per_s=N mb_per_s=M
 * (own deliveries per second of the sending time, until the last one sent
 * is delivered), or "UNAVAILABLE <why>" (exit 3) when no cpg service
 * answers.
 */
#include "common.h"
#include <corosync/cpg.h>
#include <poll.h>
#include <sys/uio.h>
#include <unistd.h>

static uint32_t my_nodeid, my_pid;
static uint64_t delivered;

static void deliver(cpg_handle_t h, const struct cpg_name *g, uint32_t nodeid, uint32_t pid, void *msg, size_t len)
{
	(void)h; (void)g; (void)msg; (void)len;
	if (nodeid == my_nodeid && pid == my_pid)
		delivered++;
}

static void confchg(cpg_handle_t h, const struct cpg_name *g,
	const struct cpg_address *m, size_t nm, const struct cpg_address *l, size_t nl,
	const struct cpg_address *j, size_t nj)
{
	(void)h; (void)g; (void)m; (void)nm; (void)l; (void)nl; (void)j; (void)nj;
}

int main(int argc, char **argv)
{
	cpg_callbacks_t cb = { .cpg_deliver_fn = deliver, .cpg_confchg_fn = confchg };
	cpg_handle_t h;
	struct cpg_name group;
	struct iovec iov;
	cs_error_t err;
	size_t size;
	double secs, t0, t1, t;
	uint64_t sent = 0;
	char *buf;
	int fd, tries;

	if (argc < 4) {
		fprintf(stderr, "usage: cpg_tput SIZE SECONDS GROUP\n");
		return 2;
	}
	size = (size_t)atol(argv[1]);
	secs = atof(argv[2]);
	if (strlen(argv[3]) >= sizeof(group.value)) {
		fprintf(stderr, "group name too long\n");
		return 2;
	}
	group.length = (uint32_t)strlen(argv[3]);
	memcpy(group.value, argv[3], group.length);
	buf = calloc(1, size ? size : 1);
	iov.iov_base = buf;
	iov.iov_len = size;
	my_pid = (uint32_t)getpid();

	for (tries = 0;; tries++) {
		err = cpg_initialize(&h, &cb);
		if (err == CS_OK)
			break;
		if (err != CS_ERR_TRY_AGAIN || tries > 100) {
			printf("UNAVAILABLE cpg_initialize: %d\n", err);
			return 3;
		}
		usleep(100000);
	}
	if ((err = cpg_local_get(h, &my_nodeid)) != CS_OK) {
		printf("UNAVAILABLE cpg_local_get: %d\n", err);
		return 3;
	}
	while ((err = cpg_join(h, &group)) == CS_ERR_TRY_AGAIN)
		usleep(10000);
	if (err != CS_OK) {
		printf("UNAVAILABLE cpg_join: %d\n", err);
		return 3;
	}
	cpg_fd_get(h, &fd);

	t0 = mono();
	for (;;) {
		t = mono();
		if (t - t0 >= secs)
			break;
		err = cpg_mcast_joined(h, CPG_TYPE_AGREED, &iov, 1);
		if (err == CS_OK) {
			sent++;
		} else if (err == CS_ERR_TRY_AGAIN) {
			struct pollfd p = { .fd = fd, .events = POLLIN };
			poll(&p, 1, 10);
		} else {
			fprintf(stderr, "cpg_mcast_joined: %d\n", err);
			return 1;
		}
		cpg_dispatch(h, CS_DISPATCH_ALL);
	}
	/* Everything sent must come back; 30 s is generous. */
	while (delivered < sent && mono() - t < 30) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		poll(&p, 1, 100);
		cpg_dispatch(h, CS_DISPATCH_ALL);
	}
	t1 = mono();
	if (delivered < sent) {
		fprintf(stderr, "only %llu of %llu messages delivered\n", (unsigned long long)delivered, (unsigned long long)sent);
		return 1;
	}
	printf("RESULT msgs_per_s=%.0f mb_per_s=%.1f\n", (double)delivered / (t1 - t0),
		(double)delivered * (double)size / (t1 - t0) / 1e6);
	cpg_leave(h, &group);
	cpg_finalize(h);
	return 0;
}
