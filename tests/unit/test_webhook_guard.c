/* Unit tests for webhook/guard.c: a request not in by its deadline has its
 * read side shut; while every worker is busy, slow headers are shed early;
 * a request that is in, or a listener that does not shed, is left alone. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <poll.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "webhook/internal.h"

static uint64_t ms_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Milliseconds until fd reads end-of-file (its read side was shut), or -1. */
static long eof_within(int fd, int max_ms)
{
	uint64_t t0 = ms_now();
	struct pollfd p = {fd, POLLIN, 0};
	if (poll(&p, 1, max_ms) != 1)
		return -1;
	char c;
	return recv(fd, &c, 1, MSG_DONTWAIT) == 0 ? (long)(ms_now() - t0) : -1;
}

static void test_webhook_guard_cuts_request_at_deadline(void **state)
{
	(void)state;
	struct vm_err err = {0};
	struct wh_guard *g = wh_guard_new(4, 150, false, &err);
	assert_non_null(g);
	int sv[2], sv2[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv2), 0);
	struct wh_guard_slot *s = wh_guard_attach(g, sv[0]);
	struct wh_guard_slot *done = wh_guard_attach(g, sv2[0]);
	assert_non_null(s);
	wh_guard_headers_in(g, s, true); /* a body is coming: the deadline goes on */
	wh_guard_headers_in(g, done, false);
	assert_true(wh_guard_reading(g, s));
	assert_false(wh_guard_reading(g, done));
	long el = eof_within(sv[0], 2000);
	assert_true(el >= 100 && el < 1000);
	assert_true(wh_guard_was_cut(g, s));
	/* the request that was in is never touched */
	assert_int_equal(eof_within(sv2[0], 300), -1);
	assert_false(wh_guard_was_cut(g, done));
	wh_guard_detach(g, s);
	wh_guard_detach(g, done);
	wh_guard_free(g);
	close(sv[0]), close(sv[1]), close(sv2[0]), close(sv2[1]);
}

static void test_webhook_guard_sheds_slow_headers_only_when_full(void **state)
{
	(void)state;
	struct vm_err err = {0};
	int sv[2][2];
	for (int i = 0; i < 2; i++)
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv[i]), 0);
	/* shedding listener, one worker busy of two: nothing is shed */
	struct wh_guard *g = wh_guard_new(2, 10000, true, &err);
	struct wh_guard_slot *a = wh_guard_attach(g, sv[0][0]);
	assert_int_equal(eof_within(sv[0][0], 400), -1);
	/* both busy: the one still sending headers goes after ~200 ms */
	struct wh_guard_slot *b = wh_guard_attach(g, sv[1][0]);
	wh_guard_headers_in(g, b, false);
	long el = eof_within(sv[0][0], 2000);
	assert_true(el >= 0 && el < 1000);
	assert_true(wh_guard_was_cut(g, a));
	assert_false(wh_guard_was_cut(g, b));
	wh_guard_detach(g, a);
	wh_guard_detach(g, b);
	wh_guard_free(g);
	for (int i = 0; i < 2; i++)
		close(sv[i][0]), close(sv[i][1]);

	/* a listener that does not shed waits for the deadline even when full */
	for (int i = 0; i < 2; i++)
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv[i]), 0);
	g = wh_guard_new(2, 10000, false, &err);
	a = wh_guard_attach(g, sv[0][0]);
	b = wh_guard_attach(g, sv[1][0]);
	assert_int_equal(eof_within(sv[0][0], 500), -1);
	/* keep-alive: the next request's headers get a fresh deadline */
	wh_guard_next_request(g, a);
	assert_true(wh_guard_reading(g, a));
	wh_guard_detach(g, a);
	wh_guard_detach(g, b);
	wh_guard_free(g);
	for (int i = 0; i < 2; i++)
		close(sv[i][0]), close(sv[i][1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_webhook_guard_cuts_request_at_deadline),
	    cmocka_unit_test(test_webhook_guard_sheds_slow_headers_only_when_full),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
