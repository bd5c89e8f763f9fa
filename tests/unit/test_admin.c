/* Unit tests for core/admin: request parsing, server + client round trip,
 * errors, socket mode, stale and live sockets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/admin.h"

#include "test_dir.h"

static json_t *cmd_echo(void *ctx, json_t *req, struct vm_err *err)
{
	(void)err;
	int *calls = ctx;
	(*calls)++;
	return json_pack("{s:O}", "got", json_object_get(req, "arg"));
}

static json_t *cmd_fail(void *ctx, json_t *req, struct vm_err *err)
{
	(void)ctx, (void)req;
	vm_err_set(err, VM_ERR_INVALID, "nope");
	return NULL;
}

static const struct admin_cmd cmds[] = {{"echo", cmd_echo}, {"fail", cmd_fail}};

static void test_admin_round_trip_and_errors(void **state)
{
	(void)state;
	int calls = 0;
	char rt[128], sock[160];
	snprintf(rt, sizeof(rt), "%s/run", test_dir);
	struct vm_err err = {0};
	struct admin_server *srv = admin_start(rt, cmds, 2, &calls, &err);
	assert_non_null(srv);
	admin_socket_path(rt, sock, sizeof(sock));
	struct stat st;
	assert_int_equal(stat(sock, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(stat(rt, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);

	char *reply;
	assert_int_equal(admin_call(sock, "{\"cmd\":\"echo\",\"arg\":42}", 2000, &reply, &err), 0);
	assert_string_equal(reply, "{\"ok\":true,\"result\":{\"got\":42}}");
	free(reply);
	assert_int_equal(calls, 1);
	assert_int_equal(admin_call(sock, "{\"cmd\":\"fail\"}", 2000, &reply, &err), 0);
	assert_non_null(strstr(reply, "\"ok\":false"));
	assert_non_null(strstr(reply, "nope"));
	free(reply);
	assert_int_equal(admin_call(sock, "{\"cmd\":\"nosuch\"}", 2000, &reply, &err), 0);
	assert_non_null(strstr(reply, "unknown_command"));
	free(reply);
	assert_int_equal(admin_call(sock, "not json", 2000, &reply, &err), 0);
	assert_non_null(strstr(reply, "bad_request"));
	free(reply);

	/* a second server on the same directory sees a live socket and refuses */
	assert_null(admin_start(rt, cmds, 2, &calls, &err));
	assert_int_equal(err.code, VM_ERR_BUSY);
	admin_stop(srv);
	assert_int_equal(access(sock, F_OK), -1);
	assert_int_equal(admin_call(sock, "{\"cmd\":\"echo\"}", 2000, &reply, &err),
	                 -VM_ERR_NOTFOUND);
}

static void test_admin_replaces_stale_socket(void **state)
{
	(void)state;
	int calls = 0;
	char rt[128], sock[160];
	snprintf(rt, sizeof(rt), "%s/run", test_dir);
	admin_socket_path(rt, sock, sizeof(sock));
	mkdir(rt, 0700);
	FILE *f = fopen(sock, "w"); /* left behind by a killed agent */
	fclose(f);
	struct vm_err err = {0};
	struct admin_server *srv = admin_start(rt, cmds, 2, &calls, &err);
	assert_non_null(srv);
	char *reply;
	assert_int_equal(admin_call(sock, "{\"cmd\":\"echo\"}", 2000, &reply, &err), 0);
	free(reply);
	admin_stop(srv);
}

static void test_admin_parse_request(void **state)
{
	(void)state;
	char cmd[16];
	json_t *req;
	struct vm_err err = {0};
	assert_int_equal(
	    admin_parse_request("{\"cmd\":\"status\"}", 16, cmd, sizeof(cmd), &req, &err), 0);
	assert_string_equal(cmd, "status");
	json_decref(req);
	static const char *const bad[] = {"",
	                                  "[]",
	                                  "{}",
	                                  "{\"cmd\":1}",
	                                  "{\"cmd\":\"\"}",
	                                  "{\"cmd\":\"waytoolongcommandname\"}",
	                                  "{\"cmd\":\"a\",\"cmd\":\"b\"}"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(
		    admin_parse_request(bad[i], strlen(bad[i]), cmd, sizeof(cmd), &req, &err),
		    -VM_ERR_INVALID);
		assert_null(req);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_admin_round_trip_and_errors, test_dir_setup,
	                                    test_dir_teardown),
	    cmocka_unit_test_setup_teardown(test_admin_replaces_stale_socket, test_dir_setup,
	                                    test_dir_teardown),
	    cmocka_unit_test(test_admin_parse_request),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
