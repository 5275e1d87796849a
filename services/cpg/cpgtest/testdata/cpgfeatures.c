/*
 * cpgfeatures: libcpg's API against whatever serves "cpg" — corobus or a
 * real corosync. corobus's own test program. It forks a second member that
 * multicasts small messages while the first sends 1 MiB and 16 MiB messages
 * (libcpg sends them in fragments) and a zero-copy buffer; both check every
 * message's content and compare the order they delivered everything in.
 * It also checks the model and context calls, iteration, membership_get,
 * local_get, join and leave errors, and the dispatch modes.
 *
 * usage: cpgfeatures [GROUP]
 * Prints "ok <check>" or "FAIL <check>: <why>" lines; exit status 0 when
 * every check passed.
 */
#include <corosync/cpg.h>
#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAGIC 0xc0b05c9aU
#define END_SEQ 0xffffffffU

struct hdr {
	uint32_t magic;
	uint32_t seq;
	uint32_t len;
	uint32_t pad;
};

static int failures;
static const char *who = "parent";

static void ok(const char *check) { printf("ok %s %s\n", who, check); fflush(stdout); }

static void fail(const char *check, const char *fmt, ...)
{
	va_list ap;
	printf("FAIL %s %s: ", who, check);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	failures++;
}

static void expect(cs_error_t got, cs_error_t want, const char *check)
{
	if (got == want)
		ok(check);
	else
		fail(check, "got %d, want %d", got, want);
}

static uint8_t pattern(uint32_t seq, size_t i) { return (uint8_t)(i * 31 + seq * 7); }

/* What a member saw. */
static uint32_t my_pid, peer_pid;
static int joined, left, members, totem_seen;
static uint64_t digest = 1469598103934665603ULL, delivered;
static uint32_t next_seq_from[2]; /* [0] from the parent, [1] from the child */
static int got_end, content_errors;
static uint64_t digest_at_end, delivered_at_end;
static uint32_t parent_pid;

static void mix(uint64_t v)
{
	for (int i = 0; i < 8; i++) {
		digest ^= (v >> (8 * i)) & 0xff;
		digest *= 1099511628211ULL;
	}
}

static void deliver_cb(cpg_handle_t h, const struct cpg_name *g, uint32_t node, uint32_t pid, void *msg, size_t len)
{
	struct hdr hd;
	(void)h;
	(void)g;
	(void)node;
	if (len < sizeof(hd)) {
		content_errors++;
		return;
	}
	memcpy(&hd, msg, sizeof(hd));
	int from = pid == parent_pid ? 0 : 1;
	if (hd.magic != MAGIC || hd.len != len) {
		printf("# %s: bad header from %u: magic %x len %u/%zu\n", who, pid, hd.magic, hd.len, len);
		content_errors++;
		return;
	}
	if (hd.seq == END_SEQ) {
		got_end = 1;
		mix(((uint64_t)from << 40) | 0xffffffffULL);
		digest_at_end = digest;
		delivered_at_end = ++delivered;
		return;
	} else {
		if (hd.seq != next_seq_from[from]) {
			printf("# %s: message %u from %u, expected %u\n", who, hd.seq, pid, next_seq_from[from]);
			content_errors++;
		}
		next_seq_from[from] = hd.seq + 1;
		const uint8_t *b = msg;
		for (size_t i = sizeof(hd); i < len; i++) {
			if (b[i] != pattern(hd.seq, i)) {
				printf("# %s: message %u from %u differs at byte %zu of %zu\n", who, hd.seq, pid, i, len);
				content_errors++;
				break;
			}
		}
	}
	mix(((uint64_t)from << 40) | ((uint64_t)hd.seq << 8));
	mix(len);
	delivered++;
}

static void confchg_cb(cpg_handle_t h, const struct cpg_name *g,
		       const struct cpg_address *m, size_t mn,
		       const struct cpg_address *l, size_t ln,
		       const struct cpg_address *j, size_t jn)
{
	(void)h;
	(void)g;
	(void)m;
	members = (int)mn;
	for (size_t i = 0; i < jn; i++)
		if (j[i].pid == my_pid && j[i].reason == CPG_REASON_JOIN)
			joined = 1;
	for (size_t i = 0; i < ln; i++)
		if (l[i].pid == my_pid && l[i].reason == CPG_REASON_LEAVE)
			left = 1;
}

static void totem_cb(cpg_handle_t h, struct cpg_ring_id ring, uint32_t n, const uint32_t *m)
{
	(void)h;
	(void)ring;
	(void)m;
	if (n > 0)
		totem_seen++;
}

static cpg_handle_t h;
static int fd;

static void pump(int ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	if (poll(&p, 1, ms) > 0) {
		cs_error_t e = cpg_dispatch(h, CS_DISPATCH_ALL);
		if (e != CS_OK) {
			fail("dispatch", "cpg_dispatch(ALL) %d", e);
			exit(1);
		}
	}
}

static char *message(uint32_t seq, size_t len)
{
	char *b = malloc(len);
	struct hdr hd = {.magic = MAGIC, .seq = seq, .len = (uint32_t)len};
	memcpy(b, &hd, sizeof(hd));
	for (size_t i = sizeof(hd); i < len; i++)
		b[i] = pattern(seq, i);
	return b;
}

static cs_error_t send_msg(uint32_t seq, size_t len)
{
	char *b = message(seq, len);
	struct iovec iov = {.iov_base = b, .iov_len = len};
	cs_error_t e;
	while ((e = cpg_mcast_joined(h, CPG_TYPE_AGREED, &iov, 1)) == CS_ERR_TRY_AGAIN)
		pump(1);
	free(b);
	return e;
}

static void init(void *ctx)
{
	cpg_model_v1_data_t model = {
		.model = CPG_MODEL_V1,
		.cpg_deliver_fn = deliver_cb,
		.cpg_confchg_fn = confchg_cb,
		.cpg_totem_confchg_fn = totem_cb,
		.flags = CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF,
	};
	cs_error_t e;
	/* The service may still be starting: not there yet, or not ready. */
	for (int i = 0; (e = cpg_model_initialize(&h, CPG_MODEL_V1, (cpg_model_data_t *)&model, ctx)) != CS_OK && i < 300; i++)
		usleep(100000);
	if (e != CS_OK) {
		fail("cpg_model_initialize", "%d", e);
		exit(1);
	}
	cpg_fd_get(h, &fd);
}

static void join(struct cpg_name *g)
{
	cs_error_t e;
	while ((e = cpg_join(h, g)) == CS_ERR_TRY_AGAIN)
		usleep(10000);
	if (e != CS_OK) {
		fail("cpg_join", "%d", e);
		exit(1);
	}
	while (!joined)
		pump(100);
}

/* The second member: small messages until the first one's end marker. */
static int child(struct cpg_name *g, int ready)
{
	who = "child";
	my_pid = getpid();
	init(NULL);
	join(g);
	if (write(ready, "j", 1) != 1)
		return 1;
	/* Nothing before the parent is a member: it would not get it. */
	while (members < 2)
		pump(100);
	uint32_t seq = 0;
	while (!got_end) {
		if (send_msg(seq, 64 + seq % 200) != CS_OK) {
			fail("child mcast", "seq %u", seq);
			return 1;
		}
		seq++;
		pump(1);
	}
	/* Its own messages sent before the end marker are all back. */
	while (next_seq_from[1] < seq)
		pump(100);
	printf("order child %016" PRIx64 " %" PRIu64 "\n", digest_at_end, delivered_at_end);
	fflush(stdout);
	if (write(ready, &digest_at_end, sizeof(digest)) != sizeof(digest) || write(ready, &delivered_at_end, sizeof(delivered)) != sizeof(delivered))
		return 1;
	cpg_finalize(h);
	return content_errors ? 1 : 0;
}

int main(int argc, char **argv)
{
	const char *group = argc > 1 ? argv[1] : "cpgfeatures";
	struct cpg_name g;
	g.length = strlen(group);
	memcpy(g.value, group, g.length);
	parent_pid = my_pid = getpid();
	setvbuf(stdout, NULL, _IOLBF, 0);

	int pipefd[2];
	if (pipe(pipefd) != 0)
		return 2;
	pid_t kid = fork();
	if (kid == 0) {
		close(pipefd[0]);
		return child(&g, pipefd[1]);
	}
	close(pipefd[1]);
	peer_pid = kid;

	int token = 42;
	init(&token);
	void *ctx = NULL;
	cpg_context_get(h, &ctx);
	if (ctx == &token)
		ok("context_get");
	else
		fail("context_get", "%p, want %p", ctx, (void *)&token);
	cpg_context_set(h, &peer_pid);
	cpg_context_get(h, &ctx);
	if (ctx == &peer_pid)
		ok("context_set");
	else
		fail("context_set", "%p", ctx);
	uint32_t atomic;
	cpg_max_atomic_msgsize_get(h, &atomic);
	if (atomic == 1024 * 1024 - 1024)
		ok("max_atomic_msgsize_get");
	else
		fail("max_atomic_msgsize_get", "%u", atomic);
	cpg_flow_control_state_t fcs;
	expect(cpg_flow_control_state_get(h, &fcs), CS_OK, "flow_control_state_get");
	unsigned int local;
	expect(cpg_local_get(h, &local), CS_OK, "local_get");
	printf("# local node %u\n", local);
	expect(cpg_dispatch(h, CS_DISPATCH_ONE_NONBLOCKING), CS_ERR_TRY_AGAIN, "dispatch ONE_NONBLOCKING with nothing to do");

	/* Leave before a join. */
	expect(cpg_leave(h, &g), CS_ERR_NOT_EXIST, "leave without a join");

	/* Join: the own join's confchg, and the initial totem confchg the
	 * model asked for. */
	join(&g);
	ok("join");
	for (int i = 0; i < 50 && !totem_seen; i++)
		pump(100);
	if (totem_seen)
		ok("initial totem confchg");
	else
		fail("initial totem confchg", "none");
	expect(cpg_join(h, &g), CS_ERR_EXIST, "join twice");

	/* The second member. */
	char c;
	if (read(pipefd[0], &c, 1) != 1) {
		fail("child", "did not join");
		return 1;
	}
	while (members < 2)
		pump(100);
	struct cpg_address ml[CPG_MEMBERS_MAX];
	int mn = CPG_MEMBERS_MAX;
	expect(cpg_membership_get(h, &g, ml, &mn), CS_OK, "membership_get");
	int seen_me = 0, seen_kid = 0;
	for (int i = 0; i < mn; i++) {
		seen_me |= ml[i].pid == my_pid && ml[i].nodeid == local;
		seen_kid |= ml[i].pid == (uint32_t)kid;
	}
	if (mn == 2 && seen_me && seen_kid)
		ok("membership_get lists both members");
	else
		fail("membership_get lists both members", "%d members", mn);

	/* Iteration. */
	const struct {
		cpg_iteration_type_t type;
		struct cpg_name *group;
		int want;
		const char *name;
	} iters[] = {
		{CPG_ITERATION_NAME_ONLY, NULL, 1, "iteration NAME_ONLY"},
		{CPG_ITERATION_ONE_GROUP, &g, 2, "iteration ONE_GROUP"},
		{CPG_ITERATION_ALL, NULL, 2, "iteration ALL"},
	};
	for (size_t k = 0; k < sizeof(iters) / sizeof(iters[0]); k++) {
		cpg_iteration_handle_t it;
		cs_error_t e = cpg_iteration_initialize(h, iters[k].type, iters[k].group, &it);
		if (e != CS_OK) {
			fail(iters[k].name, "initialize %d", e);
			continue;
		}
		struct cpg_iteration_description_t d;
		int n = 0, mine = 0;
		while ((e = cpg_iteration_next(it, &d)) == CS_OK) {
			if (d.group.length == g.length && memcmp(d.group.value, g.value, g.length) == 0) {
				n++;
				mine |= iters[k].type == CPG_ITERATION_NAME_ONLY ? d.pid == 0 : d.pid == my_pid;
			}
		}
		if (e != CS_ERR_NO_SECTIONS)
			fail(iters[k].name, "next ended with %d", e);
		else if (n != iters[k].want || !mine)
			fail(iters[k].name, "%d items of the group", n);
		else
			ok(iters[k].name);
		expect(cpg_iteration_finalize(it), CS_OK, "iteration_finalize");
	}

	/* Messages: small, 1 MiB, small, 16 MiB, small — while the child
	 * multicasts small ones. */
	const size_t sizes[] = {100, 1 << 20, 200, 16 << 20, 300};
	uint32_t seq = 0;
	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++, seq++) {
		cs_error_t e = send_msg(seq, sizes[k]);
		char name[64];
		snprintf(name, sizeof(name), "mcast %zu bytes", sizes[k]);
		expect(e, CS_OK, name);
	}

	/* Zero-copy: a 64 KiB buffer. */
	void *zb = NULL;
	size_t zlen = 64 << 10;
	expect(cpg_zcb_alloc(h, zlen, &zb), CS_OK, "zcb_alloc");
	if (zb) {
		char *m = message(seq, zlen);
		memcpy(zb, m, zlen);
		free(m);
		cs_error_t e;
		while ((e = cpg_zcb_mcast_joined(h, CPG_TYPE_AGREED, zb, zlen)) == CS_ERR_TRY_AGAIN)
			pump(1);
		expect(e, CS_OK, "zcb_mcast_joined");
		seq++;
	}

	/* The end marker; then everything back. */
	char *endm = message(END_SEQ, 64);
	struct iovec iov = {.iov_base = endm, .iov_len = 64};
	while (cpg_mcast_joined(h, CPG_TYPE_AGREED, &iov, 1) == CS_ERR_TRY_AGAIN)
		pump(1);
	while (!got_end)
		pump(100);
	if (next_seq_from[0] == seq)
		ok("own messages delivered whole and in order");
	else
		fail("own messages delivered whole and in order", "%u of %u", next_seq_from[0], seq);
	if (content_errors == 0)
		ok("every message's content");
	else
		fail("every message's content", "%d errors", content_errors);

	/* The child's order is the parent's. */
	uint64_t kd, kn;
	if (read(pipefd[0], &kd, sizeof(kd)) != sizeof(kd) || read(pipefd[0], &kn, sizeof(kn)) != sizeof(kn)) {
		fail("same order in both members", "no digest from the child");
	} else {
		/* The child stopped at the end marker; compare up to it. */
		printf("order parent %016" PRIx64 " %" PRIu64 "\n", digest_at_end, delivered_at_end);
		if (kd == digest_at_end && kn == delivered_at_end)
			ok("same order in both members");
		else
			fail("same order in both members", "child %016" PRIx64 "/%" PRIu64 ", parent %016" PRIx64 "/%" PRIu64, kd, kn, digest_at_end, delivered_at_end);
	}
	int st;
	waitpid(kid, &st, 0);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		ok("child");
	else
		fail("child", "status %d", st);

	/* Leave: done when its confchg comes; after it the connection is in
	 * no group. */
	expect(cpg_leave(h, &g), CS_OK, "leave");
	while (!left)
		pump(100);
	ok("own leave confchg");
	expect(cpg_leave(h, &g), CS_ERR_NOT_EXIST, "leave twice");
	/* corosync 3.1.7 keeps a connection's group after its leave. */
	expect(cpg_join(h, &g), CS_ERR_EXIST, "join the left group again");
	if (zb) {
		expect(cpg_zcb_mcast_joined(h, CPG_TYPE_AGREED, zb, zlen), CS_ERR_NOT_EXIST, "zcb_mcast_joined after the leave");
		expect(cpg_zcb_free(h, zb), CS_OK, "zcb_free");
	}
	expect(cpg_finalize(h), CS_OK, "finalize");
	expect(cpg_finalize(h), CS_ERR_BAD_HANDLE, "finalize twice");
	printf("%s\n", failures ? "FAILED" : "PASSED");
	return failures ? 1 : 0;
}
