/* The one owner of the agent's clocks, timestamp text and monotonic
 * condition variables (see core/time.h). */
#include "core/time.h"

#include <stdio.h>

static int64_t ms_of(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t time_mono_ms(void)
{
	return ms_of(CLOCK_MONOTONIC);
}

int64_t time_wall_ms(void)
{
	return ms_of(CLOCK_REALTIME);
}

size_t time_rfc3339(char *buf, size_t cap, int64_t ms, bool with_ms)
{
	if (cap > 0)
		buf[0] = '\0';
	/* floor division: a time before the epoch still reads correctly */
	int64_t sec = ms / 1000 - (ms % 1000 < 0), frac = ms - sec * 1000;
	time_t t = (time_t)sec;
	struct tm tm;
	if (gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 > 9999 || tm.tm_year + 1900 < 0)
		return 0;
	int n = with_ms ? snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
	                           tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	                           tm.tm_min, tm.tm_sec, (int)frac)
	                : snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900,
	                           tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
	if (n < 0 || (size_t)n >= cap) {
		if (cap > 0)
			buf[0] = '\0';
		return 0;
	}
	return (size_t)n;
}

int time_cond_init(pthread_cond_t *cv)
{
	pthread_condattr_t a;
	int rc = pthread_condattr_init(&a);
	if (rc != 0)
		return rc;
	rc = pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	if (rc == 0)
		rc = pthread_cond_init(cv, &a);
	pthread_condattr_destroy(&a);
	return rc;
}

struct timespec time_deadline(int64_t ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	if (ms < 0)
		ms = 0;
	ts.tv_sec += (time_t)(ms / 1000);
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return ts;
}
