/* Unit tests for core/admin: request parsing, server + client round trip,
 * errors, socket mode, stale and live sockets. */
#include <errno.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/admin.h"
#include "core/proc.h"
#include "core/time.h"

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

/* Starts a server with lim in <test_dir>/run and puts its socket path in sock. */
static struct admin_server *start_limited(const struct admin_limits *lim, int *calls, char *sock,
                                          size_t cap)
{
	char rt[128];
	snprintf(rt, sizeof(rt), "%s/run", test_dir);
	struct vm_err err = {0};
	struct admin_server *srv = admin_start_with(rt, cmds, 2, calls, lim, &err);
	assert_non_null(srv);
	admin_socket_path(rt, sock, cap);
	return srv;
}

static int raw_connect(const char *sock)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	size_t n = strlen(sock);
	assert_true(n < sizeof(a.sun_path));
	memcpy(a.sun_path, sock, n + 1);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	return fd;
}

/* Reads one reply line (or until EOF) within timeout_ms; returns its length
 * (0 = closed without a reply, -1 = still open at the timeout). */
static long read_reply(int fd, char *buf, size_t cap, int timeout_ms)
{
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	size_t n = 0;
	while (n + 1 < cap) {
		ssize_t r = recv(fd, buf + n, cap - 1 - n, 0);
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		n += (size_t)r;
		if (memchr(buf, '\n', n) != NULL)
			break;
	}
	buf[n] = '\0';
	return (long)n;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static void test_admin_serves_while_other_clients_stall(void **state)
{
	(void)state;
	int calls = 0;
	char sock[160];
	struct admin_limits lim = {.max_conns = 8, .deadline_ms = 5000};
	struct admin_server *srv = start_limited(&lim, &calls, sock, sizeof(sock));
	int idle[6];
	for (size_t i = 0; i < 6; i++) {
		idle[i] = raw_connect(sock);
		if (i % 2 == 1) /* half have sent part of a request */
			assert_int_equal(send(idle[i], "{\"cmd\":", 7, MSG_NOSIGNAL), 7);
	}
	/* Each call is answered at once, not after the stalled ones' deadline. */
	for (int k = 0; k < 3; k++) {
		int64_t t0 = time_mono_ms();
		char *reply = NULL;
		struct vm_err err = {0};
		assert_int_equal(
		    admin_call(sock, "{\"cmd\":\"echo\",\"arg\":1}", 2000, &reply, &err), 0);
		assert_string_equal(reply, "{\"ok\":true,\"result\":{\"got\":1}}");
		free(reply);
		assert_true(time_mono_ms() - t0 < 500);
	}
	assert_int_equal(calls, 3);
	for (size_t i = 0; i < 6; i++)
		close(idle[i]);
	admin_stop(srv);
}

static void test_admin_drops_dripping_client_at_deadline(void **state)
{
	(void)state;
	int calls = 0;
	char sock[160];
	struct admin_limits lim = {.max_conns = 4, .deadline_ms = 300};
	struct admin_server *srv = start_limited(&lim, &calls, sock, sizeof(sock));
	int fd = raw_connect(sock);
	int64_t t0 = time_mono_ms();
	/* One byte every 20 ms, never a newline: every recv succeeds, yet the
	 * whole request has one deadline. Bounded: 150 bytes = 3 s. */
	const char req[] = "{\"cmd\":\"echo\",\"arg\":\"";
	bool closed = false;
	for (int i = 0; i < 150 && !closed; i++) {
		char c = i < (int)sizeof(req) - 1 ? req[i] : 'x';
		if (send(fd, &c, 1, MSG_NOSIGNAL | MSG_DONTWAIT) != 1)
			closed = true;
		char buf[16];
		ssize_t r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
			closed = true;
		sleep_ms(20);
	}
	int64_t took = time_mono_ms() - t0;
	assert_true(closed);
	assert_true(took >= 250);
	assert_true(took < 1500);
	assert_int_equal(calls, 0);
	close(fd);
	admin_stop(srv);
}

static void test_admin_answers_busy_beyond_max_conns(void **state)
{
	(void)state;
	int calls = 0;
	char sock[160];
	struct admin_limits lim = {.max_conns = 2, .deadline_ms = 400};
	struct admin_server *srv = start_limited(&lim, &calls, sock, sizeof(sock));
	int a = raw_connect(sock), b = raw_connect(sock);
	sleep_ms(50); /* both accepted into the two slots */
	int c = raw_connect(sock);
	char buf[256];
	int64_t t0 = time_mono_ms();
	assert_true(read_reply(c, buf, sizeof(buf), 1000) > 0);
	assert_true(time_mono_ms() - t0 < 300);
	assert_non_null(strstr(buf, "\"code\":\"busy\""));
	close(c);

	/* A call shorter than the slots' deadline gets the busy answer... */
	char *reply = NULL;
	struct vm_err err = {0};
	assert_int_equal(admin_call(sock, "{\"cmd\":\"echo\"}", 100, &reply, &err), 0);
	assert_string_equal(reply, ADMIN_REPLY_BUSY);
	free(reply);
	/* ...a longer one retries until the stalled slots time out. */
	assert_int_equal(admin_call(sock, "{\"cmd\":\"echo\",\"arg\":2}", 3000, &reply, &err), 0);
	assert_string_equal(reply, "{\"ok\":true,\"result\":{\"got\":2}}");
	free(reply);
	/* The stalled clients were closed without an answer. */
	assert_int_equal(read_reply(a, buf, sizeof(buf), 1000), 0);
	assert_int_equal(read_reply(b, buf, sizeof(buf), 1000), 0);
	close(a);
	close(b);
	admin_stop(srv);
}

static void test_admin_rejects_oversized_request(void **state)
{
	(void)state;
	int calls = 0;
	char sock[160];
	struct admin_limits lim = {.request_max = 1024};
	struct admin_server *srv = start_limited(&lim, &calls, sock, sizeof(sock));
	char big[2048];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	static const char head[] = "{\"cmd\":\"echo\",\"arg\":\"";
	memcpy(big, head, sizeof(head) - 1);
	char *reply = NULL;
	struct vm_err err = {0};
	assert_int_equal(admin_call(sock, big, 2000, &reply, &err), 0);
	assert_non_null(strstr(reply, "bad_request"));
	assert_non_null(strstr(reply, "1024 bytes"));
	free(reply);
	assert_int_equal(calls, 0);
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
	    cmocka_unit_test_setup_teardown(test_admin_serves_while_other_clients_stall,
	                                    test_dir_setup, test_dir_teardown),
	    cmocka_unit_test_setup_teardown(test_admin_drops_dripping_client_at_deadline,
	                                    test_dir_setup, test_dir_teardown),
	    cmocka_unit_test_setup_teardown(test_admin_answers_busy_beyond_max_conns,
	                                    test_dir_setup, test_dir_teardown),
	    cmocka_unit_test_setup_teardown(test_admin_rejects_oversized_request, test_dir_setup,
	                                    test_dir_teardown),
	    cmocka_unit_test(test_admin_parse_request),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
