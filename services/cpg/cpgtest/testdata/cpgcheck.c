/*
 * cpgcheck: a libcpg member that multicasts numbered messages and logs
 * everything it is given, for services/cpg/vscheck to judge (total order,
 * virtual synchrony, no duplicates, self-delivery in send order). corobus's
 * own test program; it runs unchanged against corobus and a real corosync.
 *
 * usage: cpgcheck -g GROUP -n COUNT [-i INTERVAL_US] [-s SIZE] [-e EXIT_AFTER]
 *                 [-w MEMBERS] [-l LINGER_S] [-o LOG]
 *
 *   -n  messages to send; -i pause between them (µs); -s message size (≥ 16)
 *   -w  wait until the group has this many members before sending
 *   -e  leave after this many messages (own deliveries drained): cpg_finalize
 *   -l  after the last message, keep receiving this long, then finalize
 *
 * Log lines (one event each, flushed at once):
 *   I <node>/<pid>                                                who logs
 *   C m=<node/pid,…> l=<node/pid/reason,…> j=<node/pid/reason,…>   confchg
 *   T <ringnode>.<ringseq> <node,…>                                totem confchg
 *   D <node>/<pid> <seq> <len>                                    delivery
 *   S <seq>                                                       sent
 *   E <text>                                                      error
 *   END                                                           clean end
 * A message starts with {u32 node, u32 pid, u64 seq} (host order), its
 * sender's own idea of who it is; a delivery whose header disagrees with
 * the callback's node and pid is an error.
 */
#include <corosync/cpg.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

struct hdr {
	uint32_t node;
	uint32_t pid;
	uint64_t seq;
};

static FILE *out;
static uint32_t my_node, my_pid;
static int joined, members, failed;
static uint64_t own_delivered;

static void logf_(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfprintf(out, fmt, ap);
	va_end(ap);
	fputc('\n', out);
	fflush(out);
}

static void deliver_cb(cpg_handle_t h, const struct cpg_name *g, uint32_t node, uint32_t pid, void *msg, size_t len)
{
	struct hdr hd;
	(void)h;
	(void)g;
	if (len < sizeof(hd)) {
		logf_("E short message of %zu bytes from %u/%u", len, node, pid);
		failed = 1;
		return;
	}
	memcpy(&hd, msg, sizeof(hd));
	if (hd.node != node || hd.pid != pid) {
		logf_("E message header %u/%u delivered as from %u/%u", hd.node, hd.pid, node, pid);
		failed = 1;
	}
	logf_("D %u/%u %" PRIu64 " %zu", node, pid, hd.seq, len);
	if (node == my_node && pid == my_pid)
		own_delivered++;
}

static void print_list(char *b, size_t n, const struct cpg_address *l, size_t k, int reason)
{
	size_t o = strlen(b);
	for (size_t i = 0; i < k && o < n; i++) {
		if (reason)
			o += snprintf(b + o, n - o, "%s%u/%u/%u", i ? "," : "", l[i].nodeid, l[i].pid, l[i].reason);
		else
			o += snprintf(b + o, n - o, "%s%u/%u", i ? "," : "", l[i].nodeid, l[i].pid);
	}
}

static void confchg_cb(cpg_handle_t h, const struct cpg_name *g,
		       const struct cpg_address *m, size_t mn,
		       const struct cpg_address *l, size_t ln,
		       const struct cpg_address *j, size_t jn)
{
	char b[16384] = "C m=";
	(void)h;
	(void)g;
	print_list(b, sizeof(b), m, mn, 0);
	strncat(b, " l=", sizeof(b) - strlen(b) - 1);
	print_list(b, sizeof(b), l, ln, 1);
	strncat(b, " j=", sizeof(b) - strlen(b) - 1);
	print_list(b, sizeof(b), j, jn, 1);
	logf_("%s", b);
	members = (int)mn;
	for (size_t i = 0; i < jn; i++)
		if (j[i].nodeid == my_node && j[i].pid == my_pid)
			joined = 1;
}

static void totem_cb(cpg_handle_t h, struct cpg_ring_id ring, uint32_t n, const uint32_t *m)
{
	char b[4096];
	size_t o = 0;
	(void)h;
	b[0] = 0;
	for (uint32_t i = 0; i < n && o < sizeof(b); i++)
		o += snprintf(b + o, sizeof(b) - o, "%s%u", i ? "," : "", m[i]);
	logf_("T %u.%" PRIu64 " %s", ring.nodeid, ring.seq, b);
}

static void dispatch(cpg_handle_t h, int fd, int ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	if (poll(&p, 1, ms) > 0) {
		cs_error_t e = cpg_dispatch(h, CS_DISPATCH_ALL);
		if (e != CS_OK) {
			logf_("E dispatch %d", e);
			exit(1);
		}
	}
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int main(int argc, char **argv)
{
	const char *group = "cpgcheck", *logpath = NULL;
	long count = 100, interval = 1000, size = 64, exit_after = -1, want = 1, linger = 2;
	int opt;
	while ((opt = getopt(argc, argv, "g:n:i:s:e:w:l:o:")) != -1) {
		switch (opt) {
		case 'g': group = optarg; break;
		case 'n': count = atol(optarg); break;
		case 'i': interval = atol(optarg); break;
		case 's': size = atol(optarg); break;
		case 'e': exit_after = atol(optarg); break;
		case 'w': want = atol(optarg); break;
		case 'l': linger = atol(optarg); break;
		case 'o': logpath = optarg; break;
		default:
			fprintf(stderr, "usage: %s -g GROUP -n COUNT [-i US] [-s SIZE] [-e N] [-w MEMBERS] [-l S] [-o LOG]\n", argv[0]);
			return 2;
		}
	}
	if (size < (long)sizeof(struct hdr))
		size = sizeof(struct hdr);
	out = logpath ? fopen(logpath, "w") : stdout;
	if (!out) {
		perror(logpath);
		return 2;
	}
	my_pid = getpid();

	cpg_model_v1_data_t model = {
		.model = CPG_MODEL_V1,
		.cpg_deliver_fn = deliver_cb,
		.cpg_confchg_fn = confchg_cb,
		.cpg_totem_confchg_fn = totem_cb,
		.flags = CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF,
	};
	cpg_handle_t h;
	cs_error_t e;
	/* The service may still be starting: not there yet, or not ready. */
	for (int tries = 0; (e = cpg_model_initialize(&h, CPG_MODEL_V1, (cpg_model_data_t *)&model, NULL)) != CS_OK; tries++) {
		if (tries > 300) {
			logf_("E cpg_model_initialize %d", e);
			return 1;
		}
		usleep(100000);
	}
	unsigned int node;
	if ((e = cpg_local_get(h, &node)) != CS_OK) {
		logf_("E cpg_local_get %d", e);
		return 1;
	}
	my_node = node;
	logf_("I %u/%u", my_node, my_pid);
	int fd;
	cpg_fd_get(h, &fd);
	struct cpg_name g;
	g.length = strlen(group);
	memcpy(g.value, group, g.length);
	while ((e = cpg_join(h, &g)) == CS_ERR_TRY_AGAIN)
		usleep(10000);
	if (e != CS_OK) {
		logf_("E cpg_join %d", e);
		return 1;
	}
	while (!joined || members < want)
		dispatch(h, fd, 100);

	char *buf = calloc(1, size);
	struct hdr *hd = (struct hdr *)buf;
	struct iovec iov = {.iov_base = buf, .iov_len = size};
	hd->node = my_node;
	hd->pid = my_pid;
	long sent = 0, limit = exit_after >= 0 && exit_after < count ? exit_after : count;
	while (sent < limit) {
		hd->seq = sent;
		e = cpg_mcast_joined(h, CPG_TYPE_AGREED, &iov, 1);
		if (e == CS_ERR_TRY_AGAIN) {
			dispatch(h, fd, 1);
			continue;
		}
		if (e != CS_OK) {
			logf_("E cpg_mcast_joined %d", e);
			return 1;
		}
		logf_("S %ld", sent);
		sent++;
		dispatch(h, fd, 0);
		if (interval > 0)
			usleep(interval);
	}
	while (own_delivered < (uint64_t)sent)
		dispatch(h, fd, 100);
	if (exit_after < 0) {
		uint64_t end = now_ms() + linger * 1000;
		while (now_ms() < end)
			dispatch(h, fd, 50);
	}
	cpg_finalize(h);
	logf_("END");
	return failed;
}
