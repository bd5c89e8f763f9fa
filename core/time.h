/* Clocks and timestamps. CLOCK_MONOTONIC for every interval, deadline and
 * timed wait, so a wall-clock step (NTP, an operator, a VM resumed) cannot
 * stretch or cut them; the wall clock for timestamps only. */
#ifndef VMA_CORE_TIME_H
#define VMA_CORE_TIME_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Milliseconds on CLOCK_MONOTONIC (arbitrary origin, never steps). */
int64_t time_mono_ms(void);

/* Milliseconds since the epoch (CLOCK_REALTIME): for timestamps, never waits. */
int64_t time_wall_ms(void);

/* Room for the longest time_rfc3339 text and its NUL. */
#define TIME_RFC3339_MAX 32

/* Writes the wall-clock time ms (epoch milliseconds) as RFC 3339 UTC:
 * "2026-12-02T01:07:11Z", or "2026-12-02T01:07:11.123Z" with with_ms.
 * Returns the length, or 0 (and "" when cap > 0) when it does not fit. */
size_t time_rfc3339(char *buf, size_t cap, int64_t ms, bool with_ms);

/* Initialises cv to time its waits on CLOCK_MONOTONIC: pair it with
 * time_deadline() in pthread_cond_timedwait. Returns 0 or an errno value. */
int time_cond_init(pthread_cond_t *cv);

/* The absolute CLOCK_MONOTONIC time ms from now (ms < 0 counts as 0), for a
 * pthread_cond_timedwait on a condition made by time_cond_init. */
struct timespec time_deadline(int64_t ms);

#endif
