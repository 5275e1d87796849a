/*
 * cmap_bench KEY SECONDS [START_NS]
 *
 * One synchronous libcmap client: cmap_set_uint32 of KEY for SECONDS,
 * then cmap_get_uint32 of it for SECONDS. Prints
 *   RESULT set ops_per_s=N
 *   RESULT get ops_per_s=N
 * or "UNAVAILABLE <why>" (exit 3) when no cmap service answers. START_NS
 * (Unix nanoseconds) makes several clients start together.
 */
#include "common.h"
#include <corosync/cmap.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	cmap_handle_t h;
	cs_error_t err;
	double secs, t0, t;
	uint64_t n;
	uint32_t v;
	int tries;

	if (argc < 3) {
		fprintf(stderr, "usage: cmap_bench KEY SECONDS [START_NS]\n");
		return 2;
	}
	secs = atof(argv[2]);
	for (tries = 0;; tries++) {
		err = cmap_initialize(&h);
		if (err == CS_OK)
			break;
		if (err != CS_ERR_TRY_AGAIN || tries > 100) {
			printf("UNAVAILABLE cmap_initialize: %d\n", err);
			return 3;
		}
		usleep(100000);
	}
	start_at(argc > 3 ? strtoull(argv[3], NULL, 10) : 0);

	n = 0;
	t0 = mono();
	do {
		err = cmap_set_uint32(h, argv[1], (uint32_t)n);
		if (err != CS_OK) {
			fprintf(stderr, "cmap_set_uint32 %s: %d\n", argv[1], err);
			return 1;
		}
		n++;
		t = mono();
	} while (t - t0 < secs);
	printf("RESULT set ops_per_s=%.0f\n", (double)n / (t - t0));

	n = 0;
	t0 = mono();
	do {
		err = cmap_get_uint32(h, argv[1], &v);
		if (err != CS_OK) {
			fprintf(stderr, "cmap_get_uint32 %s: %d\n", argv[1], err);
			return 1;
		}
		n++;
		t = mono();
	} while (t - t0 < secs);
	printf("RESULT get ops_per_s=%.0f\n", (double)n / (t - t0));
	cmap_finalize(h);
	return 0;
}
