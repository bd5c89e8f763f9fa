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
	/* named for a session's end, but not one a client may send */
	assert_int_not_equal(parse("{\"type\":\"signal\",\"name\":\"SEGV\"}", &c), 0);
	assert_string_equal(wh_shell_signal_name(SIGSEGV), "SEGV");
	assert_string_equal(wh_shell_signal_name(SIGTERM), "TERM");
	assert_string_equal(wh_shell_signal_name(SIGKILL), "KILL");
	assert_null(wh_shell_signal_name(0));
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

/* A "start" message: every parameter, validated as the query's are. */
static void test_shell_control_start_carries_parameters(void **state)
{
	(void)state;
	struct wh_shell_ctl c;
	assert_int_equal(parse("{\"type\":\"start\",\"cols\":90,\"rows\":33,"
	                       "\"command\":[\"/bin/sh\",\"-c\",\"echo hi\"],\"user\":\"nobody\","
	                       "\"env\":{\"LANG\":\"C.UTF-8\",\"X_1\":\"\"},\"cwd\":\"/tmp\","
	                       "\"term\":\"vt100\"}",
	                       &c),
	                 0);
	assert_int_equal(c.type, WH_SHELL_CTL_START);
	assert_int_equal(c.params.cols, 90);
	assert_int_equal(c.params.rows, 33);
	assert_int_equal(c.params.argc, 3);
	assert_string_equal(c.params.argv[2], "echo hi");
	assert_null(c.params.argv[3]);
	assert_int_equal(c.params.nenv, 2);
	assert_string_equal(c.params.env[0], "LANG=C.UTF-8");
	assert_string_equal(c.params.env[1], "X_1=");
	assert_string_equal(c.params.user, "nobody");
	assert_string_equal(c.params.cwd, "/tmp");
	assert_string_equal(c.params.term, "vt100");
	wh_shell_ctl_free(&c);

	/* nothing given: all defaults; sizes out of range are ignored, as in the query */
	assert_int_equal(parse("{\"type\":\"start\",\"cols\":0,\"rows\":\"24\"}", &c), 0);
	assert_int_equal(c.type, WH_SHELL_CTL_START);
	assert_int_equal(c.params.cols + c.params.rows + c.params.argc, 0);
	assert_int_equal(c.params.nenv, -1);
	assert_null(c.params.user);
	wh_shell_ctl_free(&c);
}

static void test_shell_control_start_refuses_bad_parameters(void **state)
{
	(void)state;
	static const char *const bad[] = {
	    "{\"type\":\"start\",\"command\":[]}",
	    "{\"type\":\"start\",\"command\":\"/bin/sh\"}",
	    "{\"type\":\"start\",\"command\":[\"\"]}",
	    "{\"type\":\"start\",\"command\":[\"/bin/sh\",1]}",
	    "{\"type\":\"start\",\"env\":{\"1A\":\"x\"}}",
	    "{\"type\":\"start\",\"env\":{\"A-B\":\"x\"}}",
	    "{\"type\":\"start\",\"env\":{\"A\":1}}",
	    "{\"type\":\"start\",\"env\":[\"A=1\"]}",
	    "{\"type\":\"start\",\"user\":\"\"}",
	    "{\"type\":\"start\",\"user\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}",
	    "{\"type\":\"start\",\"cwd\":7}",
	    "{\"type\":\"start\",\"shell\":\"/bin/sh\"}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct wh_shell_ctl c;
		if (parse(bad[i], &c) == 0)
			fail_msg("accepted %s", bad[i]);
		assert_int_equal(c.type, WH_SHELL_CTL_NONE);
		assert_int_equal(c.asked, WH_SHELL_CTL_START); /* the session says why it ends */
		assert_int_equal(c.params.argc, 0);
	}
	struct wh_shell_ctl n;
	assert_int_not_equal(parse("{\"type\":\"start\",\"command\":[\"/bin/sh\\u0000x\"]}", &n), 0);
	/* 65 arguments */
	char big[1024] = "{\"type\":\"start\",\"command\":[\"a\"";
	for (int i = 0; i < WH_SHELL_ARGV_MAX; i++)
		strcat(big, ",\"a\"");
	strcat(big, "]}");
	struct wh_shell_ctl c;
	assert_int_not_equal(parse(big, &c), 0);
}

/* The query's values go through the same setter; a start merges over them. */
static void test_shell_params_set_and_merge(void **state)
{
	(void)state;
	struct wh_shell_params q, st;
	struct vm_err err = {0};
	wh_shell_params_init(&q);
	wh_shell_params_init(&st);
	json_t *v = json_string("root");
	assert_int_equal(wh_shell_param_set(&q, "user", v, &err), 0);
	json_decref(v);
	v = json_integer(100);
	assert_int_equal(wh_shell_param_set(&q, "cols", v, &err), 0);
	json_decref(v);
	v = json_pack("[s]", "/bin/true");
	assert_int_equal(wh_shell_param_set(&st, "command", v, &err), 0);
	json_decref(v);
	v = json_null();
	assert_int_not_equal(wh_shell_param_set(&st, "command", v, &err), 0);
	assert_non_null(strstr(err.msg, "command"));
	assert_int_not_equal(wh_shell_param_set(&st, "nope", v, &err), 0);
	json_decref(v);
	wh_shell_params_merge(&q, &st);
	assert_string_equal(q.user, "root"); /* kept from the query */
	assert_int_equal(q.cols, 100);
	assert_int_equal(q.argc, 1);
	assert_string_equal(q.argv[0], "/bin/true");
	assert_int_equal(st.argc, 0);
	wh_shell_params_free(&q);
	wh_shell_params_free(&st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_shell_control_resize_in_bounds),
	    cmocka_unit_test(test_shell_control_invalid_sizes_refused),
	    cmocka_unit_test(test_shell_control_signal_names),
	    cmocka_unit_test(test_shell_control_close_and_garbage),
	    cmocka_unit_test(test_shell_control_start_carries_parameters),
	    cmocka_unit_test(test_shell_control_start_refuses_bad_parameters),
	    cmocka_unit_test(test_shell_params_set_and_merge),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
