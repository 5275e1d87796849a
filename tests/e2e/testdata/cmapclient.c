/*
 * A libcmap client of corobus's own: set, get, inc, iterate, track.
 * usage: cmapclient check        one pass of every call, prints OK
 *        cmapclient loop N KEY   N rounds of set/get/inc on KEY
 *        cmapclient bench SECS   set, then get, one u32 for SECS each; prints ops/s
 */
#include <corosync/cmap.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <time.h>

#define CHECK(e) do { cs_error_t _r = (e); if (_r != CS_OK) { \
	fprintf(stderr, "%s:%d %s = %d\n", __FILE__, __LINE__, #e, _r); exit(1); } } while (0)

static int notified;

static void notify(cmap_handle_t h, cmap_track_handle_t t, int32_t event, const char *key,
		   struct cmap_notify_value nv, struct cmap_notify_value ov, void *ctx)
{
	(void)h; (void)t; (void)nv; (void)ov; (void)ctx;
	if (event == CMAP_TRACK_MODIFY && strcmp(key, "client.track.k") == 0)
		notified++;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	cmap_handle_t h;
	CHECK(cmap_initialize(&h));
	if (argc >= 3 && strcmp(argv[1], "bench") == 0) {
		/* One synchronous client: sets for SECONDS, then gets. */
		double secs = atof(argv[2]);
		uint32_t v = 0;
		long sets = 0, gets = 0;
		double t0 = now();
		while (now() - t0 < secs) {
			CHECK(cmap_set_uint32(h, "client.bench.k", (uint32_t)sets));
			sets++;
		}
		double t1 = now();
		while (now() - t1 < secs) {
			CHECK(cmap_get_uint32(h, "client.bench.k", &v));
			gets++;
		}
		double t2 = now();
		printf("RESULT set_ops_per_s=%.0f get_ops_per_s=%.0f\n", sets / (t1 - t0), gets / (t2 - t1));
		cmap_finalize(h);
		return 0;
	}
	if (argc >= 4 && strcmp(argv[1], "loop") == 0) {
		int n = atoi(argv[2]);
		uint32_t v;
		for (int i = 0; i < n; i++) {
			CHECK(cmap_set_uint32(h, argv[3], (uint32_t)i));
			CHECK(cmap_get_uint32(h, argv[3], &v));
			CHECK(cmap_inc(h, argv[3]));
		}
		cmap_finalize(h);
		return 0;
	}
	uint32_t u; char *s = NULL;
	CHECK(cmap_set_uint32(h, "client.u", 41));
	CHECK(cmap_inc(h, "client.u"));
	CHECK(cmap_get_uint32(h, "client.u", &u));
	if (u != 42) { fprintf(stderr, "inc: %u\n", u); return 1; }
	CHECK(cmap_dec(h, "client.u"));
	CHECK(cmap_get_uint32(h, "client.u", &u));
	if (u != 41) { fprintf(stderr, "dec: %u\n", u); return 1; }
	CHECK(cmap_set_string(h, "client.s", "corobus"));
	CHECK(cmap_get_string(h, "client.s", &s));
	if (strcmp(s, "corobus") != 0) { fprintf(stderr, "string: %s\n", s); return 1; }
	free(s);
	if (cmap_get_uint32(h, "client.missing", &u) != CS_ERR_NOT_EXIST) { fprintf(stderr, "missing key\n"); return 1; }

	cmap_iter_handle_t it; char key[CMAP_KEYNAME_MAXLEN + 1]; size_t len; cmap_value_types_t t;
	int keys = 0;
	CHECK(cmap_set_uint8(h, "client.it.a", 1));
	CHECK(cmap_set_uint8(h, "client.it.b", 2));
	CHECK(cmap_iter_init(h, "client.it.", &it));
	while (cmap_iter_next(h, it, key, &len, &t) == CS_OK) keys++;
	CHECK(cmap_iter_finalize(h, it));
	if (keys != 2) { fprintf(stderr, "iterated %d keys\n", keys); return 1; }

	cmap_track_handle_t th;
	CHECK(cmap_set_uint8(h, "client.track.k", 1));
	CHECK(cmap_track_add(h, "client.track.", CMAP_TRACK_MODIFY | CMAP_TRACK_PREFIX, notify, NULL, &th));
	CHECK(cmap_set_uint8(h, "client.track.k", 2));
	for (int i = 0; i < 200 && !notified; i++) {
		cmap_dispatch(h, CS_DISPATCH_ONE_NONBLOCKING);
		struct timespec ts = {0, 10 * 1000 * 1000}; nanosleep(&ts, NULL);
	}
	if (!notified) { fprintf(stderr, "no track notification\n"); return 1; }
	CHECK(cmap_track_delete(h, th));
	CHECK(cmap_finalize(h));
	printf("OK\n");
	return 0;
}
