/* Shared by the side-by-side benchmark clients (tests/benchcompare). */
#ifndef BENCHCOMPARE_COMMON_H
#define BENCHCOMPARE_COMMON_H

#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Monotonic time in seconds. */
static inline double mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * Wait until the wall clock reaches start_ns (Unix nanoseconds), so that
 * the clients of one run, started one after the other, all begin at once.
 * 0 means now.
 */
static inline void start_at(uint64_t start_ns)
{
	struct timespec ts;
	if (start_ns == 0)
		return;
	ts.tv_sec = (time_t)(start_ns / 1000000000u);
	ts.tv_nsec = (long)(start_ns % 1000000000u);
	while (clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static inline int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

/* The p-th percentile (nearest rank) of n sorted values. */
static inline uint64_t percentile(const uint64_t *sorted, size_t n, double p)
{
	size_t rank;
	if (n == 0)
		return 0;
	rank = (size_t)(p / 100.0 * (double)n + 0.5);
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return sorted[rank - 1];
}

#endif
