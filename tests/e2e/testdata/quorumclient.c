/*
 * quorumclient: a corosync client of corobus's own, against libquorum
 * (model v1), libvotequorum and libcfg. It tracks quorum and membership,
 * registers for the shutdown callback, refuses the first shutdown request
 * and accepts the next. Every callback prints one line, so a test can
 * follow it:
 *
 *   quorum quorate=1 ring=1.4 members=1
 *   nodelist ring=1.4 members=1 joined= left=
 *   vq-quorum quorate=1 context=4660 nodes=1:1
 *   vq-nodelist context=4660 ring=1.4 nodes=1
 *   vq-expected context=4660 expected=2
 *   shutdown flags=0 -> no
 *   shutdown flags=0 -> yes
 *   closed
 *
 * "ready" is printed once every registration is done. With QC_TIME set in
 * the environment each line starts with the wall-clock time in
 * milliseconds since the epoch; with QC_REFUSE set it refuses every
 * shutdown request, as a Pacemaker with resources running does. With
 * QC_MODEL0 set libquorum is initialized with quorum_initialize (model
 * v0), whose one callback prints
 *
 *   quorum0 quorate=1 ring_seq=4 members=1
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <corosync/cfg.h>
#include <corosync/quorum.h>
#include <corosync/votequorum.h>

static int shutdowns;
static int stamps;
static int refuse;

static void stamp(void)
{
	struct timespec ts;

	if (!stamps)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	printf("%lld ", (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}
static corosync_cfg_handle_t cfg;

static void list(const char *label, uint32_t n, const uint32_t *ids)
{
	printf(" %s=", label);
	for (uint32_t i = 0; i < n; i++)
		printf("%s%" PRIu32, i ? "," : "", ids[i]);
}

static void q_quorum(quorum_handle_t h, uint32_t quorate, struct quorum_ring_id ring,
		     uint32_t n, const uint32_t *view)
{
	stamp();
	printf("quorum quorate=%" PRIu32 " ring=%" PRIx32 ".%" PRIx64, quorate, ring.nodeid, ring.seq);
	list("members", n, view);
	printf("\n");
	fflush(stdout);
}

static void q_quorum0(quorum_handle_t h, uint32_t quorate, uint64_t ring_seq,
		      uint32_t n, uint32_t *view)
{
	stamp();
	printf("quorum0 quorate=%" PRIu32 " ring_seq=%" PRIx64, quorate, ring_seq);
	list("members", n, view);
	printf("\n");
	fflush(stdout);
}

static void q_nodelist(quorum_handle_t h, struct quorum_ring_id ring,
		       uint32_t n, const uint32_t *members,
		       uint32_t nj, const uint32_t *joined,
		       uint32_t nl, const uint32_t *left)
{
	stamp();
	printf("nodelist ring=%" PRIx32 ".%" PRIx64, ring.nodeid, ring.seq);
	list("members", n, members);
	list("joined", nj, joined);
	list("left", nl, left);
	printf("\n");
	fflush(stdout);
}

static void vq_quorum(votequorum_handle_t h, uint64_t context, uint32_t quorate,
		      uint32_t n, votequorum_node_t nodes[])
{
	stamp();
	printf("vq-quorum quorate=%" PRIu32 " context=%" PRIu64 " nodes=", quorate, context);
	for (uint32_t i = 0; i < n; i++)
		printf("%s%" PRIu32 ":%" PRIu32, i ? "," : "", nodes[i].nodeid, nodes[i].state);
	printf("\n");
	fflush(stdout);
}

static void vq_nodelist(votequorum_handle_t h, uint64_t context, votequorum_ring_id_t ring,
			uint32_t n, uint32_t nodes[])
{
	stamp();
	printf("vq-nodelist context=%" PRIu64 " ring=%" PRIx32 ".%" PRIx64, context, ring.nodeid, ring.seq);
	list("nodes", n, nodes);
	printf("\n");
	fflush(stdout);
}

static void vq_expected(votequorum_handle_t h, uint64_t context, uint32_t expected)
{
	stamp();
	printf("vq-expected context=%" PRIu64 " expected=%" PRIu32 "\n", context, expected);
	fflush(stdout);
}

static void cfg_shutdown(corosync_cfg_handle_t h, corosync_cfg_shutdown_flags_t flags)
{
	int yes = !refuse && shutdowns++ > 0;
	stamp();
	printf("shutdown flags=%d -> %s\n", flags, yes ? "yes" : "no");
	fflush(stdout);
	cs_error_t err = corosync_cfg_replyto_shutdown(h, yes ? COROSYNC_CFG_SHUTDOWN_FLAG_YES : COROSYNC_CFG_SHUTDOWN_FLAG_NO);
	if (err != CS_OK) {
		printf("replyto_shutdown: %d\n", err);
		fflush(stdout);
	}
}

static void die(const char *what, cs_error_t err)
{
	printf("%s: error %d\n", what, err);
	exit(1);
}

/*
 * RETRY evaluates a library call again while it answers CS_ERR_TRY_AGAIN
 * (the node is synchronizing its services), every 100 ms for up to 10 s,
 * as corosync's clients do (Pacemaker's cs_repeat): a node that has just
 * become quorate may still be in a synchronization round.
 */
#define RETRY(call) ({ \
	cs_error_t r_; \
	int tries_ = 0; \
	while ((r_ = (call)) == CS_ERR_TRY_AGAIN && ++tries_ < 100) \
		nanosleep(&(struct timespec){ .tv_nsec = 100 * 1000 * 1000 }, NULL); \
	r_; \
})

int main(void)
{
	stamps = getenv("QC_TIME") != NULL;
	refuse = getenv("QC_REFUSE") != NULL;
	quorum_handle_t q;
	votequorum_handle_t vq;
	uint32_t qtype;
	cs_error_t err;
	quorum_model_v1_data_t model = { .model = QUORUM_MODEL_V1,
		.quorum_notify_fn = q_quorum, .nodelist_notify_fn = q_nodelist };
	votequorum_callbacks_t vcb = { .votequorum_quorum_notify_fn = vq_quorum,
		.votequorum_expectedvotes_notify_fn = vq_expected,
		.votequorum_nodelist_notify_fn = vq_nodelist };
	corosync_cfg_callbacks_t ccb = { .corosync_cfg_shutdown_callback = cfg_shutdown };

	quorum_callbacks_t model0 = { .quorum_notify_fn = q_quorum0 };

	if (getenv("QC_MODEL0") != NULL) {
		if ((err = RETRY(quorum_initialize(&q, &model0, &qtype))) != CS_OK)
			die("quorum_initialize", err);
	} else if ((err = RETRY(quorum_model_initialize(&q, QUORUM_MODEL_V1, (quorum_model_data_t *)&model, &qtype, NULL))) != CS_OK)
		die("quorum_model_initialize", err);
	if (qtype != QUORUM_SET)
		die("quorum type is not QUORUM_SET", CS_ERR_LIBRARY);
	if ((err = RETRY(quorum_trackstart(q, CS_TRACK_CHANGES))) != CS_OK)
		die("quorum_trackstart", err);
	if ((err = RETRY(votequorum_initialize(&vq, &vcb))) != CS_OK)
		die("votequorum_initialize", err);
	if ((err = RETRY(votequorum_trackstart(vq, 4660, CS_TRACK_CHANGES))) != CS_OK)
		die("votequorum_trackstart", err);
	if ((err = RETRY(corosync_cfg_initialize(&cfg, &ccb))) != CS_OK)
		die("corosync_cfg_initialize", err);
	if ((err = RETRY(corosync_cfg_trackstart(cfg, 0))) != CS_OK)
		die("corosync_cfg_trackstart", err);
	int quorate = -1;
	if ((err = RETRY(quorum_getquorate(q, &quorate))) != CS_OK)
		die("quorum_getquorate", err);
	unsigned int local;
	if ((err = RETRY(corosync_cfg_local_get(cfg, &local))) != CS_OK)
		die("corosync_cfg_local_get", err);
	stamp();
	printf("ready quorate=%d local=%u\n", quorate, local);
	fflush(stdout);

	int fds[3];
	if (quorum_fd_get(q, &fds[0]) != CS_OK || votequorum_fd_get(vq, &fds[1]) != CS_OK ||
	    corosync_cfg_fd_get(cfg, &fds[2]) != CS_OK)
		die("fd_get", CS_ERR_LIBRARY);
	for (;;) {
		struct pollfd p[3];
		for (int i = 0; i < 3; i++)
			p[i] = (struct pollfd){ .fd = fds[i], .events = POLLIN };
		int n = poll(p, 3, 500);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("poll", CS_ERR_LIBRARY);
		}
		if (n == 0) {
			/* A datagram event socket does not report its server's
			 * end: ask something, which fails once it is gone. */
			unsigned int id;
			if (corosync_cfg_local_get(cfg, &id) != CS_OK) {
				printf("closed\n");
				fflush(stdout);
				return 0;
			}
			continue;
		}
		for (int i = 0; i < 3; i++) {
			if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			switch (i) {
			case 0: err = quorum_dispatch(q, CS_DISPATCH_ALL); break;
			case 1: err = votequorum_dispatch(vq, CS_DISPATCH_ALL); break;
			default: err = corosync_cfg_dispatch(cfg, CS_DISPATCH_ALL); break;
			}
			if (err != CS_OK || (p[i].revents & (POLLHUP | POLLERR))) {
				printf("closed\n");
				fflush(stdout);
				return 0;
			}
		}
	}
}
