/* Unit tests for core/cp: the credentials file (the one strict parser, 0600,
 * version, one token limit, atomic writes) and the JWT times it schedules by. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/cp.h"
#include "core/fs.h"

#include "test_dir.h"

static void test_cp_creds_parse_and_mode(void **state)
{
	(void)state;
	struct cp_creds c;
	struct vm_err err = {0};
	const char *good = "{\"version\":1,\"agent_id\":\"a-1\",\"tenant_id\":\"t\","
	                   "\"token\":\"s3cr3t-token\"}";
	assert_int_equal(cp_creds_parse(good, strlen(good), &c, &err), 0);
	assert_string_equal(c.agent_id, "a-1");
	assert_string_equal(c.token.value, "s3cr3t-token");
	cp_creds_clear(&c);
	static const char *const bad[] = {
	    "",
	    "[]",
	    "{\"agent_id\":\"a\"}",
	    "{\"agent_id\":\"a/b\",\"token\":\"x\"}",
	    "{\"agent_id\":\"a\",\"token\":\"x\\ny\"}",
	    "{\"version\":2,\"agent_id\":\"a\",\"token\":\"x\"}",
	    "{\"agent_id\":\"a\",\"token\":\"s3cr3t\",\"token\":\"x\"}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(cp_creds_parse(bad[i], strlen(bad[i]), &c, &err), -VM_ERR_INVALID);
		assert_null(strstr(err.msg, "s3cr3t"));
	}
	char path[128];
	snprintf(path, sizeof(path), "%s/cred.json", test_dir);
	assert_int_equal(fs_write_atomic(path, good, strlen(good), 0644, &err), 0);
	assert_int_equal(cp_creds_load(path, &c, &err), -VM_ERR_PERM);
	assert_non_null(strstr(err.msg, "chmod 600"));
	chmod(path, 0600);
	assert_int_equal(cp_creds_load(path, &c, &err), 0);
	cp_creds_clear(&c);
}

static void test_cp_creds_token_over_limit_is_an_error_not_cut(void **state)
{
	(void)state;
	struct cp_creds c;
	struct vm_err err = {0};
	size_t n = CP_TOKEN_MAX + 1;
	char *doc = malloc(n + 64);
	assert_non_null(doc);
	int w = snprintf(doc, n + 64, "{\"agent_id\":\"a\",\"token\":\"%0*d\"}", (int)n, 1);
	assert_int_equal(cp_creds_parse(doc, (size_t)w, &c, &err), -VM_ERR_INVALID);
	assert_non_null(strstr(err.msg, "8192"));
	w = snprintf(doc, n + 64, "{\"agent_id\":\"a\",\"token\":\"%0*d\"}", (int)n - 1, 1);
	assert_int_equal(cp_creds_parse(doc, (size_t)w, &c, &err), 0);
	assert_int_equal(c.token.len, CP_TOKEN_MAX);
	cp_creds_clear(&c);
	/* an embedded NUL would cut the token where C strings end */
	static const char nul[] = "{\"agent_id\":\"a\",\"token\":\"ab\\u0000cd\"}";
	assert_int_equal(cp_creds_parse(nul, strlen(nul), &c, &err), -VM_ERR_INVALID);
	free(doc);
}

static void test_cp_creds_write_is_0600_and_round_trips(void **state)
{
	(void)state;
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/credentials.json", test_dir);
	struct cp_creds c = {.agent_id = "agent-7", .tenant_id = "t-1", .deregistered = true};
	struct vm_err err = {0};
	assert_int_equal(secret_set(&c.token, "tok-123", &err), 0);
	json_t *extra = json_pack("{s:s,s:s}", "control_plane_url", "https://cp", "token", "NOT");
	assert_int_equal(cp_creds_write(path, &c, extra, &err), 0);
	json_decref(extra);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	struct cp_creds back;
	assert_int_equal(cp_creds_load(path, &back, &err), 0);
	assert_string_equal(back.agent_id, "agent-7");
	assert_string_equal(back.tenant_id, "t-1");
	assert_string_equal(back.token.value, "tok-123"); /* extra never overrides it */
	assert_true(back.deregistered);
	cp_creds_clear(&back);
	cp_creds_clear(&c);
}

static void test_cp_token_times_reads_iat_and_exp(void **state)
{
	(void)state;
	/* {"alg":"HS256"} . {"iat":100,"exp":130} . sig */
	const char *tok = "eyJhbGciOiJIUzI1NiJ9.eyJpYXQiOjEwMCwiZXhwIjoxMzB9.c2ln";
	int64_t iat, exp;
	assert_int_equal(cp_token_times(tok, &iat, &exp), 0);
	assert_int_equal(iat, 100);
	assert_int_equal(exp, 130);
	assert_int_equal(cp_token_times("opaque-token", &iat, &exp), -VM_ERR_INVALID);
	assert_int_equal(exp, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_cp_creds_parse_and_mode, test_dir_setup,
	                                    test_dir_teardown),
	    cmocka_unit_test(test_cp_creds_token_over_limit_is_an_error_not_cut),
	    cmocka_unit_test_setup_teardown(test_cp_creds_write_is_0600_and_round_trips,
	                                    test_dir_setup, test_dir_teardown),
	    cmocka_unit_test(test_cp_token_times_reads_iat_and_exp),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
