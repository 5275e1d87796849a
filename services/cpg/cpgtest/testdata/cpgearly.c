/*
 * cpgearly: a libcpg client started before its node, as a client started
 * at boot beside the engine. It connects the moment the node lets it
 * (cpg_initialize retried every 10 ms while the service is missing or
 * answers CS_ERR_TRY_AGAIN), then, for SECS seconds (argument 1, default
 * 3), leaves a group it never joined, again and again. corosync accepts
 * no connection before its first synchronization is done, so every such
 * leave is answered CS_ERR_NOT_EXIST; a node still synchronizing its
 * services would answer CS_ERR_TRY_AGAIN (6).
 *
 * Output: "# init attempts N (try_again T)", "# leaves N not_exist E
 * try_again T other O (last L)", then PASSED or FAILED.
 */
#include <corosync/cpg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void deliver_cb(cpg_handle_t h, const struct cpg_name *g, uint32_t node, uint32_t pid, void *msg, size_t len) {}
static void confchg_cb(cpg_handle_t h, const struct cpg_name *g, const struct cpg_address *m, size_t nm,
		       const struct cpg_address *l, size_t nl, const struct cpg_address *j, size_t nj) {}

int main(int argc, char **argv)
{
	double secs = argc > 1 ? atof(argv[1]) : 3;
	cpg_callbacks_t cb = {.cpg_deliver_fn = deliver_cb, .cpg_confchg_fn = confchg_cb};
	cpg_handle_t h;
	cs_error_t e;
	int attempts = 0, init_again = 0;
	setvbuf(stdout, NULL, _IOLBF, 0);
	/* Up to two minutes: the node may be slow to start on a loaded machine. */
	for (double until = now() + 120; (e = cpg_initialize(&h, &cb)) != CS_OK && now() < until; attempts++) {
		if (e == CS_ERR_TRY_AGAIN)
			init_again++;
		usleep(10000);
	}
	attempts++;
	printf("# init attempts %d (try_again %d)\n", attempts, init_again);
	if (e != CS_OK) {
		printf("cpg_initialize: %d\nFAILED\n", e);
		return 1;
	}
	struct cpg_name g;
	strcpy(g.value, "cpgearly");
	g.length = strlen(g.value);
	int leaves = 0, not_exist = 0, again = 0, other = 0, last = 0;
	for (double until = now() + secs; now() < until; leaves++) {
		e = cpg_leave(h, &g);
		if (e == CS_ERR_NOT_EXIST)
			not_exist++;
		else if (e == CS_ERR_TRY_AGAIN)
			again++;
		else
			other++;
		if (e != CS_ERR_NOT_EXIST)
			last = e;
		usleep(1000);
	}
	printf("# leaves %d not_exist %d try_again %d other %d (last %d)\n", leaves, not_exist, again, other, last);
	cpg_finalize(h);
	printf(not_exist == leaves ? "PASSED\n" : "FAILED\n");
	return not_exist == leaves ? 0 : 1;
}
