/*
 * cpg_lat COUNT SIZE GROUP
 *
 * Ordered multicast latency through libcpg: joins GROUP, then COUNT times
 * multicasts one CPG_TYPE_AGREED message of SIZE bytes and waits for its
 * own delivery. Prints
 *   RESULT n=N p50_us=A p99_us=B max_us=C mean_us=D
 * or "UNAVAILABLE <why>" (exit 3) when no cpg service answers.
 */
#include "common.h"
#include <corosync/cpg.h>
#include <poll.h>
#include <sys/uio.h>
#include <unistd.h>

static uint32_t my_nodeid, my_pid;
static uint64_t want, got_seq;

static void deliver(cpg_handle_t h, const struct cpg_name *g, uint32_t nodeid, uint32_t pid, void *msg, size_t len)
{
	uint64_t seq;
	(void)h; (void)g;
	if (nodeid != my_nodeid || pid != my_pid || len < sizeof(seq))
		return;
	memcpy(&seq, msg, sizeof(seq));
	got_seq = seq;
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
	size_t size, count, i;
	uint64_t *lat, t0;
	char *buf;
	int fd, tries;

	if (argc < 4) {
		fprintf(stderr, "usage: cpg_lat COUNT SIZE GROUP\n");
		return 2;
	}
	count = (size_t)atol(argv[1]);
	size = (size_t)atol(argv[2]);
	if (size < sizeof(uint64_t))
		size = sizeof(uint64_t);
	if (count == 0 || strlen(argv[3]) >= sizeof(group.value)) {
		fprintf(stderr, "bad count or group name\n");
		return 2;
	}
	group.length = (uint32_t)strlen(argv[3]);
	memcpy(group.value, argv[3], group.length);
	buf = calloc(1, size);
	lat = calloc(count, sizeof(*lat));
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

	for (i = 0; i < count; i++) {
		want = i + 1;
		memcpy(buf, &want, sizeof(want));
		t0 = mono_ns();
		while ((err = cpg_mcast_joined(h, CPG_TYPE_AGREED, &iov, 1)) == CS_ERR_TRY_AGAIN)
			cpg_dispatch(h, CS_DISPATCH_ALL);
		if (err != CS_OK) {
			fprintf(stderr, "cpg_mcast_joined: %d\n", err);
			return 1;
		}
		while (got_seq != want) {
			struct pollfd p = { .fd = fd, .events = POLLIN };
			if (poll(&p, 1, 10000) == 0) {
				fprintf(stderr, "message %llu not delivered within 10 s\n", (unsigned long long)want);
				return 1;
			}
			cpg_dispatch(h, CS_DISPATCH_ALL);
		}
		lat[i] = mono_ns() - t0;
	}
	double sum = 0;
	for (i = 0; i < count; i++)
		sum += (double)lat[i];
	qsort(lat, count, sizeof(*lat), cmp_u64);
	printf("RESULT n=%zu p50_us=%.1f p99_us=%.1f max_us=%.1f mean_us=%.1f\n", count,
		percentile(lat, count, 50) / 1e3, percentile(lat, count, 99) / 1e3, lat[count - 1] / 1e3,
		sum / count / 1e3);
	cpg_leave(h, &group);
	cpg_finalize(h);
	return 0;
}
