/* Unit tests for the probe request parser: typed fields, defaults, limits,
 * and the JSON path of each kind of bad field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "probe/internal.h"

static int parse(const char *body, struct probe_request *req, char *path, struct vm_err *err)
{
	return probe_request_parse(body, strlen(body), req, path, PROBE_ERR_PATH_MAX, err);
}

static void expect_path(const char *body, const char *want_path, const char *want_msg)
{
	struct probe_request *req = malloc(sizeof(*req));
	char path[PROBE_ERR_PATH_MAX];
	struct vm_err err = {0};
	int rc = parse(body, req, path, &err);
	probe_request_free(req);
	free(req);
	if (rc == 0)
		fail_msg("%s: accepted", body);
	if (strcmp(path, want_path) != 0)
		fail_msg("%s: path %s, want %s (%s)", body, path, want_path, err.msg);
	if (want_msg != NULL && strstr(err.msg, want_msg) == NULL)
		fail_msg("%s: message %s lacks %s", body, err.msg, want_msg);
}

static void test_probe_request_full_request_is_typed(void **state)
{
	(void)state;
	const char *body =
	    "{\"idempotency_key\":\"k\",\"timeout\":\"90s\",\"continue_on_error\":true,\"steps\":["
	    "{\"type\":\"exec\",\"name\":\"uptime\",\"argv\":[\"/usr/bin/uptime\",\"-p\"],"
	    "\"env\":{\"A\":\"1\",\"B\":\"two\"},\"cwd\":\"/"
	    "tmp\",\"stdin\":\"in\",\"user\":\"nobody\","
	    "\"timeout\":5},"
	    "{\"type\":\"script\",\"body\":\"echo hi\"},"
	    "{\"type\":\"file.read\",\"path\":\"/etc/hostname\",\"max_bytes\":10},"
	    "{\"type\":\"file.write\",\"path\":\"/tmp/"
	    "x\",\"content_b64\":\"aGk=\",\"mode\":\"0600\","
	    "\"create_only\":true,\"sha256\":"
	    "\"8f434346648f6b96df89dda901c5176b10a6d83961dd3c1ac88b59b2dc327aa4\"}]}";
	struct probe_request *req = malloc(sizeof(*req));
	char path[PROBE_ERR_PATH_MAX];
	struct vm_err err = {0};
	assert_int_equal(parse(body, req, path, &err), 0);
	assert_string_equal(req->idempotency_key, "k");
	assert_int_equal(req->timeout_ms, 90000);
	assert_true(req->continue_on_error);
	assert_int_equal(req->nsteps, 4);
	const struct probe_step_req *s = &req->steps[0];
	assert_string_equal(probe_steps[s->type].name, "exec");
	assert_int_equal(s->argc, 2);
	assert_string_equal(s->argv[1], "-p");
	assert_null(s->argv[2]);
	assert_int_equal(s->nenv, 2);
	assert_string_equal(s->env[1], "B=two");
	assert_string_equal(s->cwd, "/tmp");
	assert_int_equal(s->stdin_len, 2);
	assert_int_equal(s->timeout_ms, 5000);
	assert_null(req->steps[1].interpreter); /* default /bin/sh applied when run */
	assert_int_equal(req->steps[2].max_bytes, 10);
	s = &req->steps[3];
	assert_int_equal(s->content_len, 2);
	assert_memory_equal(s->content, "hi", 2);
	assert_int_equal(s->mode, 0600);
	assert_true(s->create_only);
	assert_true(s->has_sha256);
	assert_int_equal(s->sha256[0], 0x8f);
	probe_request_free(req);
	free(req);
}

static void test_probe_request_hash_ignores_formatting(void **state)
{
	(void)state;
	struct probe_request a, b, c;
	char path[PROBE_ERR_PATH_MAX];
	struct vm_err err;
	assert_int_equal(
	    parse("{\"steps\":[{\"type\":\"exec\",\"argv\":[\"true\"]}]}", &a, path, &err), 0);
	assert_int_equal(
	    parse(" { \"steps\" : [ { \"argv\" : [\"true\"], \"type\" : \"exec\" } ] } ", &b, path,
	          &err),
	    0);
	assert_int_equal(
	    parse("{\"steps\":[{\"type\":\"exec\",\"argv\":[\"false\"]}]}", &c, path, &err), 0);
	assert_memory_equal(a.body_hash, b.body_hash, SHA256_LEN);
	assert_memory_not_equal(a.body_hash, c.body_hash, SHA256_LEN);
	probe_request_free(&a);
	probe_request_free(&b);
	probe_request_free(&c);
}

static void test_probe_request_errors_name_the_path(void **state)
{
	(void)state;
	expect_path("", "$", "not valid JSON");
	expect_path("{\"steps\":[{\"type\":\"exec\",\"argv\":[\"a\"]}],\"steps\":[]}", "$", NULL);
	expect_path("[7]", "$", "must be a JSON object");
	expect_path("{}", "steps", "required");
	expect_path("{\"steps\":{}}", "steps", "list of 1 to 32");
	expect_path("{\"steps\":[1]}", "steps[0]", "must be an object");
	expect_path("{\"steps\":[{}]}", "steps[0].type", "required");
	expect_path("{\"steps\":[{\"type\":\"exec\",\"argv\":[\"\"]}]}", "steps[0].argv[0]",
	            "non-empty");
	expect_path("{\"steps\":[{\"type\":\"exec\",\"argv\":[\"a\\u0000b\"]}]}", "$",
	            "not allowed"); /* NUL is refused by the JSON parser already */
	expect_path("{\"steps\":[{\"type\":\"exec\",\"argv\":[\"a\"],\"argz\":1}]}",
	            "steps[0].argz", "unknown field");
	expect_path("{\"steps\":[{\"type\":\"exec\",\"argv\":[\"a\"],\"env\":{\"A=B\":\"x\"}}]}",
	            "steps[0].env.A=B", "variable name");
	expect_path("{\"steps\":[{\"type\":\"exec\",\"argv\":[\"a\"],\"cwd\":\"tmp\"}]}",
	            "steps[0].cwd", "absolute");
	expect_path("{\"steps\":[{\"type\":\"script\"}]}", "steps[0].body", "required");
	expect_path("{\"steps\":[{\"type\":\"script\",\"body\":\"x\",\"interpreter\":\"\"}]}",
	            "steps[0].interpreter", NULL);
	expect_path("{\"steps\":[{\"type\":\"file.read\",\"path\":\"/x\",\"max_bytes\":-1}]}",
	            "steps[0].max_bytes", NULL);
	expect_path("{\"steps\":[{\"type\":\"file.write\",\"path\":\"/x\",\"content_b64\":\"\","
	            "\"mode\":\"999\"}]}",
	            "steps[0].mode", "octal");
	expect_path("{\"steps\":[{\"type\":\"file.write\",\"path\":\"/x\",\"content_b64\":\"\","
	            "\"sha256\":\"zz\"}]}",
	            "steps[0].sha256", "hex");
	expect_path("{\"steps\":[{\"type\":\"file.write\",\"path\":\"/x/\",\"content_b64\":\"\"}]}",
	            "steps[0].path", NULL);
	expect_path("{\"idempotency_key\":\"\",\"steps\":[{\"type\":\"exec\",\"argv\":[\"a\"]}]}",
	            "idempotency_key", "empty");
	expect_path("{\"continue_on_error\":1,\"steps\":[{\"type\":\"exec\",\"argv\":[\"a\"]}]}",
	            "continue_on_error", NULL);
	expect_path("{\"timeout\":\"8d\",\"steps\":[{\"type\":\"exec\",\"argv\":[\"a\"]}]}",
	            "timeout", NULL);
}

static void test_probe_request_limits(void **state)
{
	(void)state;
	/* 33 steps */
	char *body = malloc(65536);
	strcpy(body, "{\"steps\":[");
	for (int i = 0; i < PROBE_MAX_STEPS + 1; i++)
		strcat(body, i ? ",{\"type\":\"exec\",\"argv\":[\"a\"]}"
		               : "{\"type\":\"exec\",\"argv\":[\"a\"]}");
	strcat(body, "]}");
	expect_path(body, "steps", "1 to 32");
	/* 257 argv entries */
	strcpy(body, "{\"steps\":[{\"type\":\"exec\",\"argv\":[");
	for (int i = 0; i < PROBE_MAX_ARGV + 1; i++)
		strcat(body, i ? ",\"a\"" : "\"a\"");
	strcat(body, "]}]}");
	expect_path(body, "steps[0].argv", "1 to 256");
	free(body);
}

/* The one derivation: what validation lets through always fits the record
 * limit the store reads back, whatever probe.output_cap is. */
static void test_probe_request_output_bounded_at_validation(void **state)
{
	(void)state;
	const uint64_t caps[] = {1024, 1u << 20, 16u << 20, 1ull << 30};
	for (size_t c = 0; c < sizeof(caps) / sizeof(caps[0]); c++) {
		uint64_t budget = probe_output_budget(caps[c]);
		assert_true(probe_record_max(caps[c]) >= budget + PROBE_RECORD_HEAD);
		/* one process step at the cap always fits */
		assert_true(probe_steps[0].output_bound(NULL, caps[c]) <= budget);
	}
	struct probe_request req;
	char path[PROBE_ERR_PATH_MAX];
	struct vm_err err = {0};
	const char *two =
	    "{\"steps\":[{\"type\":\"file.read\",\"path\":\"/x\",\"max_bytes\":67108864},"
	    "{\"type\":\"file.read\",\"path\":\"/y\",\"max_bytes\":67108864}]}";
	assert_int_equal(parse(two, &req, path, &err), 0);
	assert_int_not_equal(probe_request_check_output(&req, 1u << 20, path, sizeof(path), &err),
	                     0);
	assert_string_equal(path, "steps[1].max_bytes");
	assert_non_null(strstr(err.msg, "more than"));
	probe_request_free(&req);
	/* 32 process steps at the default 1 MiB cap are fine */
	char *body = malloc(65536);
	strcpy(body, "{\"steps\":[");
	for (int i = 0; i < PROBE_MAX_STEPS; i++)
		strcat(body, i ? ",{\"type\":\"exec\",\"argv\":[\"a\"]}"
		               : "{\"type\":\"exec\",\"argv\":[\"a\"]}");
	strcat(body, "]}");
	assert_int_equal(parse(body, &req, path, &err), 0);
	assert_int_equal(probe_request_check_output(&req, 1u << 20, path, sizeof(path), &err), 0);
	/* with a 1 GiB cap only one process step fits: the second is named */
	assert_int_not_equal(probe_request_check_output(&req, 1ull << 30, path, sizeof(path), &err),
	                     0);
	assert_string_equal(path, "steps[1]");
	probe_request_free(&req);
	free(body);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_probe_request_full_request_is_typed),
	    cmocka_unit_test(test_probe_request_hash_ignores_formatting),
	    cmocka_unit_test(test_probe_request_errors_name_the_path),
	    cmocka_unit_test(test_probe_request_limits),
	    cmocka_unit_test(test_probe_request_output_bounded_at_validation),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
