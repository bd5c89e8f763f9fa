/* Unit tests for core/buf: the bounded byte buffer (grow to a hard cap,
 * compact, give memory back) and the bounded text appender. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"

static void test_buf_grows_to_max_and_refuses_more(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b, 10000);
	static char chunk[3000];
	memset(chunk, 'a', sizeof(chunk));
	for (int i = 0; i < 3; i++)
		assert_int_equal(buf_append(&b, chunk, sizeof(chunk)), 0);
	assert_int_equal(b.len, 9000);
	assert_int_equal(buf_append(&b, chunk, sizeof(chunk)), -1); /* nothing appended */
	assert_int_equal(b.len, 9000);
	assert_true(b.cap <= 10000);
	assert_int_equal(buf_append(&b, chunk, 1000), 0); /* exactly at max */
	assert_null(buf_reserve(&b, 1));
	buf_consume(&b, 9500);
	assert_int_equal(b.len, 500);
	/* compacts instead of growing past max */
	assert_int_equal(buf_append(&b, chunk, 3000), 0);
	assert_int_equal(b.len, 3500);
	buf_free(&b);
}

static void test_buf_printf_is_whole_or_nothing_and_take_gives_a_string(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b, 16);
	assert_int_equal(buf_printf(&b, "%s=%d;", "a", 1), 0);
	assert_int_equal(buf_printf(&b, "%s=%d;", "bb", 22), 0);
	assert_int_equal(buf_printf(&b, "%s", "too long for the rest"), -1);
	assert_string_equal((const char *)buf_data(&b), "a=1;bb=22;");
	buf_consume(&b, 4);
	size_t len;
	char *s = buf_take(&b, &len);
	assert_string_equal(s, "bb=22;");
	assert_int_equal(len, 6);
	free(s);
	assert_int_equal(b.len, 0);
	s = buf_take(&b, &len); /* empty: "" */
	assert_string_equal(s, "");
	assert_int_equal(len, 0);
	free(s);
	buf_free(&b);
}

static void test_buf_empty_large_buffer_is_released_unless_kept(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b, 1 << 20);
	assert_non_null(buf_reserve(&b, 200000));
	buf_commit(&b, 200000);
	buf_consume(&b, 200000);
	assert_null(b.p);
	b.keep = true;
	assert_non_null(buf_reserve(&b, 200000));
	buf_commit(&b, 200000);
	buf_consume(&b, 200000);
	assert_non_null(b.p);
	buf_free(&b);
}

/* Every cap from 0 to past the full text: never a byte beyond cap, always
 * NUL-terminated, cap returned once cut, never a wrapped offset. */
static void test_str_appendf_never_overflows_or_wraps(void **state)
{
	(void)state;
	const char *want = "alpha, beta, \xc3\xa9t\xc3\xa9, gamma";
	size_t full = strlen(want);
	for (size_t cap = 0; cap <= full + 4; cap++) {
		char mem[64];
		memset(mem, 0x5a, sizeof(mem));
		char *s = mem + 8;
		size_t o = 0;
		o = str_appendf(s, cap, o, "%s", "alpha");
		o = str_appendf(s, cap, o, ", %s", "beta");
		o = str_appendf(s, cap, o, ", %s", "\xc3\xa9t\xc3\xa9");
		o = str_appendf(s, cap, o, ", %s", "gamma");
		for (size_t i = 0; i < 8; i++)
			assert_int_equal((unsigned char)mem[i], 0x5a);
		for (size_t i = 8 + cap; i < sizeof(mem); i++)
			if ((unsigned char)mem[i] != 0x5a)
				fail_msg("cap %zu: byte %zu written", cap, i - 8);
		if (cap == 0) {
			assert_int_equal(o, 0);
			continue;
		}
		assert_true(o <= cap);
		if (cap > full) {
			assert_int_equal(o, full);
			assert_string_equal(s, want);
		} else {
			assert_int_equal(o, cap);
			assert_true(strlen(s) < cap);
			assert_memory_equal(s, want, strlen(s));
			/* never cut inside the two-byte e-acute */
			assert_int_not_equal((unsigned char)s[strlen(s) ? strlen(s) - 1 : 0], 0xc3);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_buf_grows_to_max_and_refuses_more),
	    cmocka_unit_test(test_buf_printf_is_whole_or_nothing_and_take_gives_a_string),
	    cmocka_unit_test(test_buf_empty_large_buffer_is_released_unless_kept),
	    cmocka_unit_test(test_str_appendf_never_overflows_or_wraps),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
