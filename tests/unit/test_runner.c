/* Unit tests for the runner's line parser (runner_line_parse) and for
 * probe_run_step, the runner's door into the probe step engine. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "probe/probe.h"
#include "runner/runner.h"

static int parse(const char *line, struct runner_cmd *cmd, char *path, struct vm_err *err)
{
	return runner_line_parse(line, strlen(line), cmd, path, RUNNER_PATH_MAX, err);
}

static void expect_refused(const char *line, const char *want_path, const char *want_id)
{
	struct runner_cmd cmd;
	char path[RUNNER_PATH_MAX];
	struct vm_err err = {0};
	int rc = parse(line, &cmd, path, &err);
	if (rc == 0)
		fail_msg("%s: accepted", line);
	if (strcmp(path, want_path) != 0)
		fail_msg("%s: path %s, want %s (%s)", line, path, want_path, err.msg);
	if ((want_id == NULL) != (cmd.id == NULL) ||
	    (want_id != NULL && strcmp(cmd.id, want_id) != 0))
		fail_msg("%s: id %s, want %s", line, cmd.id ? cmd.id : "(none)",
		         want_id ? want_id : "(none)");
	runner_cmd_free(&cmd);
}

static void test_runner_line_full_command_is_typed(void **state)
{
	(void)state;
	struct runner_cmd cmd;
	char path[RUNNER_PATH_MAX];
	struct vm_err err = {0};
	assert_int_equal(parse("{\"type\":\"command\",\"id\":\"c-1.a:b_2\",\"timeout\":\"30s\","
	                       "\"idempotency_key\":\"k1\",\"step\":{\"type\":\"exec\","
	                       "\"argv\":[\"true\"]}}",
	                       &cmd, path, &err),
	                 0);
	assert_string_equal(cmd.id, "c-1.a:b_2");
	assert_string_equal(cmd.idempotency_key, "k1");
	assert_true(json_is_object(cmd.step));
	assert_string_equal(json_string_value(cmd.timeout), "30s");
	runner_cmd_free(&cmd);
	assert_int_equal(parse("{\"type\":\"command\",\"id\":\"x\",\"step\":{},\"timeout\":null}",
	                       &cmd, path, &err),
	                 0);
	assert_null(cmd.timeout);
	assert_null(cmd.idempotency_key);
	runner_cmd_free(&cmd);
}

/* A reused idempotency key must match the command: step and timeout count,
 * formatting and the id do not. */
static void test_runner_line_hash_covers_step_and_timeout(void **state)
{
	(void)state;
	const char *lines[] = {
	    "{\"type\":\"command\",\"id\":\"a\",\"step\":{\"type\":\"exec\",\"argv\":[\"x\"]}}",
	    "{ \"step\" : {\"argv\":[\"x\"], \"type\":\"exec\"}, \"id\":\"b\", "
	    "\"type\":\"command\"}",
	    "{\"type\":\"command\",\"id\":\"a\",\"step\":{\"type\":\"exec\",\"argv\":[\"y\"]}}",
	    "{\"type\":\"command\",\"id\":\"a\",\"timeout\":5,\"step\":{\"type\":\"exec\","
	    "\"argv\":[\"x\"]}}",
	};
	uint8_t h[4][32];
	for (int i = 0; i < 4; i++) {
		struct runner_cmd cmd;
		char path[RUNNER_PATH_MAX];
		struct vm_err err = {0};
		assert_int_equal(parse(lines[i], &cmd, path, &err), 0);
		memcpy(h[i], cmd.hash, 32);
		runner_cmd_free(&cmd);
	}
	assert_memory_equal(h[0], h[1], 32);
	assert_memory_not_equal(h[0], h[2], 32);
	assert_memory_not_equal(h[0], h[3], 32);
}

static void test_runner_line_errors_name_the_field(void **state)
{
	(void)state;
	expect_refused("", "$", NULL);
	expect_refused("{\"type\":\"command\"", "$", NULL);
	expect_refused("[1,2]", "$", NULL);
	expect_refused("{\"type\":\"command\",\"step\":{}}", "id", NULL);
	expect_refused("{\"id\":\"a b\",\"type\":\"command\",\"step\":{}}", "id", NULL);
	expect_refused("{\"id\":7,\"type\":\"command\",\"step\":{}}", "id", NULL);
	/* the id is known from here on: the error line can name the command */
	expect_refused("{\"id\":\"c\",\"type\":\"cmd\",\"step\":{}}", "type", "c");
	expect_refused("{\"id\":\"c\",\"step\":{}}", "type", "c");
	expect_refused("{\"id\":\"c\",\"type\":\"command\"}", "step", "c");
	expect_refused("{\"id\":\"c\",\"type\":\"command\",\"step\":[]}", "step", "c");
	expect_refused("{\"id\":\"c\",\"type\":\"command\",\"step\":{},\"timeout\":[]}", "timeout",
	               "c");
	expect_refused("{\"id\":\"c\",\"type\":\"command\",\"step\":{},\"idempotency_key\":\"\"}",
	               "idempotency_key", "c");
	expect_refused("{\"id\":\"c\",\"type\":\"command\",\"step\":{},\"extra\":1}", "extra", "c");
	/* found by fuzz_runner_line: an empty member name still gets a path */
	expect_refused("{\"id\":\"c\",\"type\":\"command\",\"step\":{},\"\":1}", "$", "c");
	expect_refused("{\"id\":\"c\",\"id\":\"d\",\"type\":\"command\",\"step\":{}}", "$", NULL);
	char longid[RUNNER_ID_MAX + 40];
	snprintf(longid, sizeof(longid), "{\"id\":\"%0*d\",\"type\":\"command\",\"step\":{}}",
	         RUNNER_ID_MAX + 1, 0);
	expect_refused(longid, "id", NULL);
}

/* Bytes after a NUL or invalid UTF-8 never pass as a command. */
static void test_runner_line_binary_refused(void **state)
{
	(void)state;
	static const char line[] = "{\"id\":\"c\",\"type\":\"command\",\"step\":{}}\0junk";
	struct runner_cmd cmd;
	char path[RUNNER_PATH_MAX];
	struct vm_err err = {0};
	assert_int_not_equal(
	    runner_line_parse(line, sizeof(line) - 1, &cmd, path, sizeof(path), &err), 0);
	assert_string_equal(path, "$");
	runner_cmd_free(&cmd);
	assert_int_not_equal(
	    parse("{\"id\":\"\xff\",\"type\":\"command\",\"step\":{}}", &cmd, path, &err), 0);
	runner_cmd_free(&cmd);
}

struct seen {
	char out[256];
	int events;
};

static void on_output(void *ctx, int stream, const char *data, size_t len)
{
	struct seen *s = ctx;
	if (stream == 1)
		strncat(s->out, data,
		        len < sizeof(s->out) - strlen(s->out) - 1
		            ? len
		            : sizeof(s->out) - strlen(s->out) - 1);
}

/* One step through the probe parser and step table: the policy applies, and
 * errors name "step", not "steps[0]". */
static void test_probe_run_step_same_engine_and_policy(void **state)
{
	(void)state;
	struct seen s = {0};
	struct cfg_strlist allow = {.count = 1};
	snprintf(allow.items[0], sizeof(allow.items[0]), "/usr/bin/echo");
	struct probe_run_opts o = {.work_dir = "/tmp",
	                           .output_cap = 1 << 20,
	                           .grace_ms = 100,
	                           .default_timeout_ms = 10000,
	                           .allow = &allow,
	                           .on_output = on_output,
	                           .ctx = &s};
	json_t *step = json_pack("{s:s,s:[s,s]}", "type", "exec", "argv", "/usr/bin/echo", "hi");
	json_t *res = NULL;
	bool ok = false;
	char path[128];
	struct vm_err err = {0};
	assert_int_equal(probe_run_step(step, NULL, &o, &res, &ok, path, sizeof(path), &err), 0);
	assert_true(ok);
	assert_string_equal(json_string_value(json_object_get(res, "stdout")), "hi\n");
	assert_string_equal(json_string_value(json_object_get(res, "status")), "succeeded");
	assert_string_equal(s.out, "hi\n");
	json_decref(res);
	json_decref(step);

	step = json_pack("{s:s,s:[s]}", "type", "exec", "argv", "/usr/bin/true");
	assert_int_equal(probe_run_step(step, NULL, &o, &res, &ok, path, sizeof(path), &err), 0);
	assert_false(ok);
	assert_non_null(strstr(json_string_value(json_object_get(res, "error")), "probe.allow"));
	json_decref(res);
	json_decref(step);

	step = json_pack("{s:s,s:[]}", "type", "exec", "argv");
	assert_int_equal(probe_run_step(step, NULL, &o, &res, &ok, path, sizeof(path), &err),
	                 PROBE_E_INVALID);
	assert_null(res);
	assert_string_equal(path, "step.argv");
	assert_int_equal(strncmp(err.msg, "step.argv", 9), 0);
	json_decref(step);

	json_t *bad_timeout = json_string("soon");
	step = json_pack("{s:s,s:[s]}", "type", "exec", "argv", "/usr/bin/echo");
	assert_int_equal(probe_run_step(step, bad_timeout, &o, &res, &ok, path, sizeof(path), &err),
	                 PROBE_E_INVALID);
	assert_string_equal(path, "timeout");
	json_decref(step);
	json_decref(bad_timeout);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_runner_line_full_command_is_typed),
	    cmocka_unit_test(test_runner_line_hash_covers_step_and_timeout),
	    cmocka_unit_test(test_runner_line_errors_name_the_field),
	    cmocka_unit_test(test_runner_line_binary_refused),
	    cmocka_unit_test(test_probe_run_step_same_engine_and_policy),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
