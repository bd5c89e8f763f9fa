/* The shell's control-message parser (webhook/shell_control.c). */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "webhook/internal.h"

static int parse(const char *s, struct wh_shell_ctl *c)
{
	struct vm_err err = {0};
	return wh_shell_control_parse(s, strlen(s), c, &err);
}

static void test_shell_control_resize_in_bounds(void **state)
{
	(void)state;
	struct wh_shell_ctl c;
	assert_int_equal(parse("{\"type\":\"resize\",\"cols\":132,\"rows\":43}", &c), 0);
	assert_int_equal(c.type, WH_SHELL_CTL_RESIZE);
	assert_int_equal(c.cols, 132);
	assert_int_equal(c.rows, 43);
}

static void test_shell_control_invalid_sizes_refused(void **state)
{
	(void)state;
	static const char *const bad[] = {
	    "{\"type\":\"resize\",\"cols\":0,\"rows\":10}",
	    "{\"type\":\"resize\",\"cols\":10,\"rows\":-1}",
	    "{\"type\":\"resize\",\"cols\":100000,\"rows\":10}",
	    "{\"type\":\"resize\",\"cols\":\"80\",\"rows\":10}",
	    "{\"type\":\"resize\",\"cols\":80.5,\"rows\":10}",
	    "{\"type\":\"resize\"}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct wh_shell_ctl c;
		assert_int_not_equal(parse(bad[i], &c), 0);
		assert_int_equal(c.type, WH_SHELL_CTL_NONE);
	}
}

static void test_shell_control_signal_names(void **state)
{
	(void)state;
	struct wh_shell_ctl c;
	assert_int_equal(parse("{\"type\":\"signal\",\"name\":\"INT\"}", &c), 0);
	assert_int_equal(c.signo, SIGINT);
	assert_int_equal(parse("{\"type\":\"signal\",\"name\":\"SIGTERM\"}", &c), 0);
	assert_int_equal(c.signo, SIGTERM);
	assert_int_not_equal(parse("{\"type\":\"signal\",\"name\":\"NOPE\"}", &c), 0);
	assert_int_not_equal(parse("{\"type\":\"signal\",\"name\":9}", &c), 0);
}

static void test_shell_control_close_and_garbage(void **state)
{
	(void)state;
	struct wh_shell_ctl c;
	assert_int_equal(parse("{\"type\":\"close\"}", &c), 0);
	assert_int_equal(c.type, WH_SHELL_CTL_CLOSE);
	static const char *const bad[] = {
	    "",
	    "[]",
	    "null",
	    "{\"type\":\"exec\"}",
	    "{\"type\":1}",
	    "{\"type\":\"close\",\"type\":\"close\"}",
	    "{\"type\":\"close\"",
	    "\xff\xfe",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_not_equal(parse(bad[i], &c), 0);
	/* over the bound: refused unread */
	char big[WH_SHELL_CTL_MAX + 2];
	memset(big, ' ', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_not_equal(parse(big, &c), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_shell_control_resize_in_bounds),
	    cmocka_unit_test(test_shell_control_invalid_sizes_refused),
	    cmocka_unit_test(test_shell_control_signal_names),
	    cmocka_unit_test(test_shell_control_close_and_garbage),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
