/*
 * clock.h - the two clocks coarchd reads: monotonic seconds for intervals and rates, and
 * wall-clock nanoseconds for the timestamps stored in job and repository rows.
 *
 * Threading: any thread (both wrap clock_gettime(2), which cannot fail for these clocks).
 */
#ifndef COARCH_UTIL_CLOCK_H
#define COARCH_UTIL_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Seconds on CLOCK_MONOTONIC: only differences mean anything. */
static inline double clock_monotonic_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Nanoseconds since the Unix epoch on CLOCK_REALTIME. */
static inline int64_t clock_realtime_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#endif
