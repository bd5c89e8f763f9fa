/* Unit tests for core/time and core/rand: timestamp text, waits that a
 * wall-clock step cannot cut or stretch, and randomness that fails as an
 * error, never as zeros. clock_gettime and getrandom are interposed (the
 * library is linked statically, so its calls reach these first): stepping
 * the real clock would disturb every other process on the machine. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core/rand.h"
#include "core/time.h"

static atomic_llong wall_offset_s; /* added to CLOCK_REALTIME readings */
static atomic_bool random_fails;

int clock_gettime(clockid_t id, struct timespec *ts)
{
	int rc = (int)syscall(SYS_clock_gettime, id, ts);
	if (rc == 0 && id == CLOCK_REALTIME)
		ts->tv_sec += (time_t)atomic_load(&wall_offset_s);
	return rc;
}

ssize_t getrandom(void *buf, size_t n, unsigned flags)
{
	if (atomic_load(&random_fails)) {
		errno = ENOSYS; /* a seccomp filter or an old kernel */
		return -1;
	}
	return (ssize_t)syscall(SYS_getrandom, buf, n, flags);
}

static void test_time_rfc3339_formats_utc_with_and_without_ms(void **state)
{
	(void)state;
	char b[TIME_RFC3339_MAX];
	assert_int_equal(time_rfc3339(b, sizeof(b), 1764637631123LL, true), 24);
	assert_string_equal(b, "2025-12-02T01:07:11.123Z");
	assert_int_equal(time_rfc3339(b, sizeof(b), 1764637631999LL, false), 20);
	assert_string_equal(b, "2025-12-02T01:07:11Z");
	assert_int_equal(time_rfc3339(b, sizeof(b), -1, true), 24);
	assert_string_equal(b, "1969-12-31T23:59:59.999Z");
	assert_int_equal(time_rfc3339(b, 20, 0, false), 0); /* no room for the NUL */
	assert_string_equal(b, "");
}

/* A wall clock that reads an hour behind (or ahead) as the deadline is
 * taken, as after an NTP step: the wait still lasts what it was asked. */
static void test_time_cond_wait_ignores_wall_clock_steps(void **state)
{
	(void)state;
	pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	pthread_cond_t cv;
	assert_int_equal(time_cond_init(&cv), 0);
	for (int k = 0; k < 2; k++) {
		atomic_store(&wall_offset_s, k == 0 ? -3600 : 3600);
		int64_t t0 = time_mono_ms();
		struct timespec until = time_deadline(200);
		pthread_mutex_lock(&mu);
		int rc = 0;
		while (rc != ETIMEDOUT)
			rc = pthread_cond_timedwait(&cv, &mu, &until);
		pthread_mutex_unlock(&mu);
		int64_t took = time_mono_ms() - t0;
		if (took < 190 || took > 2000)
			fail_msg("offset %+d s: waited %lld ms, not 200", k == 0 ? -3600 : 3600,
			         (long long)took);
	}
	/* what the old pattern did: a realtime deadline from a clock an hour
	 * behind has already passed, so the wait is cut to nothing */
	atomic_store(&wall_offset_s, -3600);
	pthread_cond_t old = PTHREAD_COND_INITIALIZER;
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 1;
	int64_t t0 = time_mono_ms();
	pthread_mutex_lock(&mu);
	assert_int_equal(pthread_cond_timedwait(&old, &mu, &until), ETIMEDOUT);
	pthread_mutex_unlock(&mu);
	assert_true(time_mono_ms() - t0 < 100);
	atomic_store(&wall_offset_s, 0);
	pthread_cond_destroy(&cv);
}

static void test_time_mono_does_not_follow_the_wall_clock(void **state)
{
	(void)state;
	int64_t m0 = time_mono_ms(), w0 = time_wall_ms();
	atomic_store(&wall_offset_s, 3600);
	int64_t m1 = time_mono_ms(), w1 = time_wall_ms();
	atomic_store(&wall_offset_s, 0);
	assert_true(m1 - m0 < 1000);
	assert_true(w1 - w0 >= 3600 * 1000 - 1000);
}

static bool all_zero(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != 0)
			return false;
	return true;
}

static void test_rand_failure_is_error_never_zeros(void **state)
{
	(void)state;
	unsigned char b[32];
	struct vm_err err = {0};
	assert_int_equal(rand_bytes(b, sizeof(b), &err), 0);
	assert_false(all_zero(b, sizeof(b)));
	char id[ID_LEN + 1], id2[ID_LEN + 1];
	assert_int_equal(id_new(id, &err), 0);
	assert_int_equal(id_new(id2, &err), 0);
	assert_int_equal(strlen(id), ID_LEN);
	assert_int_not_equal(strcmp(id, id2), 0);
	assert_int_equal(id[14], '4');
	assert_non_null(strchr("89ab", id[19]));

	atomic_store(&random_fails, true);
	memset(b, 0xee, sizeof(b));
	assert_int_equal(rand_bytes(b, sizeof(b), &err), -VM_ERR_IO);
	assert_non_null(strstr(err.msg, "random"));
	assert_int_equal(id_new(id, &err), -VM_ERR_IO);
	assert_string_equal(id, ""); /* no id at all, never 00000000-0000-4000-8000-... */
	atomic_store(&random_fails, false);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_time_rfc3339_formats_utc_with_and_without_ms),
	    cmocka_unit_test(test_time_cond_wait_ignores_wall_clock_steps),
	    cmocka_unit_test(test_time_mono_does_not_follow_the_wall_clock),
	    cmocka_unit_test(test_rand_failure_is_error_never_zeros),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
