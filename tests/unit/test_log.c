/* Unit tests for core/log: redaction of secrets, JSON lines, size rotation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <fcntl.h>
#include <signal.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/codec.h"
#include "core/fs.h"
#include "core/log.h"

static const char *redact(const char *in, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s", in);
	log_redact(buf, cap);
	return buf;
}

static void expect_redacted(const char *in, const char *want)
{
	char buf[1024];
	redact(in, buf, sizeof(buf));
	if (strcmp(buf, want) != 0)
		fail_msg("redact(\"%s\")\n  got  \"%s\"\n  want \"%s\"", in, buf, want);
}

static void test_log_redacts_bearer_and_jwt(void **state)
{
	(void)state;
	expect_redacted("Authorization: Bearer abc.def.ghi", "Authorization: Bearer [REDACTED]");
	expect_redacted("sent bearer s3cr3t to x", "sent bearer [REDACTED] to x");
	/* the words "bearer token" in a message are not a secret */
	expect_redacted("denied GET /v1/health (401 missing_token): no bearer token",
	                "denied GET /v1/health (401 missing_token): no bearer token");
	expect_redacted("Bearer tokenABCDEF123", "Bearer [REDACTED]");
	expect_redacted("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig_value- rejected",
	                "token [REDACTED] rejected");
}

static void test_log_redacts_key_value_pairs(void **state)
{
	(void)state;
	expect_redacted("piko.token=abc123 port=1", "piko.token=[REDACTED] port=1");
	expect_redacted("{\"password\": \"hunter2\", \"user\": \"bob\"}",
	                "{\"password\": \"[REDACTED]\", \"user\": \"bob\"}");
	expect_redacted("install-key: K-123-456", "install-key: [REDACTED]");
	expect_redacted("api_key=zzz&x=1", "api_key=[REDACTED]&x=1");
	expect_redacted("client_secret='abc'", "client_secret='[REDACTED]'");
	/* names that merely contain "key" elsewhere are left alone */
	expect_redacted("token_file=/etc/vm-agent/token path",
	                "token_file=/etc/vm-agent/token path");
	expect_redacted("webhook.port: expected integer 1-65535",
	                "webhook.port: expected integer 1-65535");
}

static void test_log_redacts_pem_private_key(void **state)
{
	(void)state;
	expect_redacted(
	    "key -----BEGIN PRIVATE KEY-----\nMIIEv\nQQ==\n-----END PRIVATE KEY----- done",
	    "key [REDACTED] done");
	expect_redacted("-----BEGIN CERTIFICATE-----", "-----BEGIN CERTIFICATE-----");
}

static void test_log_redaction_never_overflows(void **state)
{
	(void)state;
	/* a buffer exactly full of a secret: the marker must not write past cap */
	char buf[24];
	snprintf(buf, sizeof(buf), "token=%s", "abcdefghijklmnopq");
	log_redact(buf, sizeof(buf));
	assert_string_equal(buf, "token=[REDACTED]");
	char tiny[12];
	snprintf(tiny, sizeof(tiny), "token=abcd");
	log_redact(tiny, sizeof(tiny));
	assert_null(strstr(tiny, "abcd"));
}

#include "test_dir.h"
#include "test_tmpfs.h"

static int teardown_dir(void **state)
{
	log_shutdown(); /* closes the log file inside the directory first */
	return test_dir_teardown(state);
}

static char *read_all(const char *path)
{
	char *data = NULL;
	struct vm_err err;
	if (fs_read_file(path, 1 << 20, &data, NULL, &err) != 0)
		return NULL;
	return data;
}

static void test_log_json_lines_are_redacted(void **state)
{
	(void)state;
	char path[128];
	snprintf(path, sizeof(path), "%s/json.log", test_dir);
	struct log_opts o = {LOG_INFO, LOG_FORMAT_JSON, path, 1 << 20, 2};
	struct vm_err err;
	assert_int_equal(log_configure(&o, &err), 0);
	log_info("test", "dial with Bearer topsecret \"quoted\"");
	log_debug("test", "hidden by level");
	char *data = read_all(path);
	assert_non_null(data);
	assert_null(strstr(data, "topsecret"));
	assert_null(strstr(data, "hidden by level"));
	assert_non_null(strstr(data, "\"level\":\"info\",\"module\":\"test\","
	                             "\"msg\":\"dial with Bearer [REDACTED] \\\"quoted\\\"\"}\n"));
	free(data);
}

/* The caller's bytes in a message: no forged second line, no invalid UTF-8,
 * and a message cut at LOG_LINE_MAX never ends inside a character. */
static void test_log_line_is_one_line_of_valid_utf8(void **state)
{
	(void)state;
	char path[128];
	snprintf(path, sizeof(path), "%s/utf8.log", test_dir);
	struct log_opts o = {LOG_INFO, LOG_FORMAT_JSON, path, 1 << 20, 2};
	struct vm_err err;
	assert_int_equal(log_configure(&o, &err), 0);
	log_warn("test", "denied GET %s", "/v1/x\xff\xc3\n{\"level\":\"info\"}");
	static char big[5000];
	big[0] = 'a';
	for (size_t i = 1; i + 3 < sizeof(big); i += 3)
		memcpy(big + i, "\xe2\x82\xac", 3); /* the cut falls inside some "€" */
	log_warn("test", "%s", big);
	o.format = LOG_FORMAT_TEXT;
	assert_int_equal(log_configure(&o, &err), 0);
	log_warn("test", "text %s", "a\nb\xfe");
	char *data = read_all(path);
	assert_non_null(data);
	size_t n = strlen(data), lines = 0;
	assert_true(utf8_valid(data, n));
	for (size_t i = 0; i < n; i++)
		lines += data[i] == '\n';
	assert_int_equal(lines, 3);
	assert_non_null(strstr(data, "denied GET /v1/x\\\\xFF\\\\xC3\\\\x0A{\\\"level"));
	assert_non_null(strstr(data, "test: text a\\x0Ab\\xFE\n"));
	free(data);
}

static void test_log_rotates_by_size_and_keeps_max_files(void **state)
{
	(void)state;
	char path[128], rotated[160];
	snprintf(path, sizeof(path), "%s/rot.log", test_dir);
	struct log_opts o = {LOG_INFO, LOG_FORMAT_TEXT, path, 4096, 2};
	struct vm_err err;
	assert_int_equal(log_configure(&o, &err), 0);
	char filler[200];
	memset(filler, 'x', sizeof(filler) - 1);
	filler[sizeof(filler) - 1] = '\0';
	for (int i = 0; i < 200; i++) /* ~50 KB: many rotations */
		log_info("test", "line %03d %s", i, filler);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_true(st.st_size <= 4096);
	snprintf(rotated, sizeof(rotated), "%s.1", path);
	assert_int_equal(stat(rotated, &st), 0);
	assert_true(st.st_size <= 4096);
	snprintf(rotated, sizeof(rotated), "%s.2", path);
	assert_int_equal(stat(rotated, &st), 0);
	snprintf(rotated, sizeof(rotated), "%s.3", path);
	assert_int_not_equal(stat(rotated, &st), 0); /* max_files = 2 */
	/* the newest line is in the current file, older ones rotated out in order */
	char *data = read_all(path);
	assert_non_null(strstr(data, "line 199"));
	free(data);
	snprintf(rotated, sizeof(rotated), "%s.1", path);
	data = read_all(rotated);
	assert_null(strstr(data, "line 199"));
	assert_non_null(strstr(data, "line 1"));
	free(data);
}

static void test_log_configure_bad_file_keeps_previous(void **state)
{
	(void)state;
	char path[128];
	snprintf(path, sizeof(path), "%s/keep.log", test_dir);
	struct log_opts good = {LOG_INFO, LOG_FORMAT_TEXT, path, 1 << 20, 1};
	struct log_opts bad = {LOG_INFO, LOG_FORMAT_TEXT, "/nonexistent/dir/x.log", 1 << 20, 1};
	struct vm_err err;
	assert_int_equal(log_configure(&good, &err), 0);
	assert_int_not_equal(log_configure(&bad, &err), 0);
	assert_non_null(strstr(err.msg, "/nonexistent/dir/x.log"));
	log_warn("test", "still here");
	char *data = read_all(path);
	assert_non_null(strstr(data, "warn  test: still here"));
	free(data);
}

/* fd 2 into a pipe while fn runs (a pipe: no file size limit applies to
 * it); returns what was written there (caller frees). */
static char *capture_stderr(void (*fn)(void *), void *arg)
{
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	fflush(stderr);
	int saved = dup(2);
	assert_true(saved >= 0);
	dup2(p[1], 2);
	close(p[1]);
	fn(arg); /* a few lines: far below the pipe's 64 KiB */
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	static char buf[65536];
	size_t n = 0;
	ssize_t r;
	while (n < sizeof(buf) - 1 && (r = read(p[0], buf + n, sizeof(buf) - 1 - n)) > 0)
		n += (size_t)r;
	close(p[0]);
	buf[n] = '\0';
	return strdup(buf);
}

static void log_marker(void *arg)
{
	log_error("audit", "audit line NOT written: %s", (const char *)arg);
}

/* A full disk under the log file: the line goes to stderr (journald under
 * systemd) instead of nowhere, and the drop is counted. */
static void test_log_full_disk_falls_back_to_stderr(void **state)
{
	(void)state;
	char dir[128], path[160];
	snprintf(dir, sizeof(dir), "%s/full", test_dir);
	if (!test_tmpfs_full(dir, "64k", 0))
		skip();
	snprintf(path, sizeof(path), "%s/agent.log", dir);
	struct log_opts o = {LOG_INFO, LOG_FORMAT_TEXT, path, 1 << 20, 1};
	struct vm_err err;
	assert_int_equal(log_configure(&o, &err), 0);
	struct log_stats before, after;
	log_get_stats(&before);
	char *out = capture_stderr(log_marker, "marker-enospc");
	log_get_stats(&after);
	log_shutdown();
	test_tmpfs_release(dir);
	assert_non_null(out);
	assert_non_null(strstr(out, "audit line NOT written: marker-enospc"));
	free(out);
	assert_int_equal(after.file_write_failures, before.file_write_failures + 1);
	assert_int_equal(after.lines_lost, before.lines_lost);
}

/* A short write (file size limit reached mid-line): the partial line is taken
 * back from the file and the whole line goes to stderr. */
static void test_log_short_write_falls_back_to_stderr(void **state)
{
	(void)state;
	char path[128];
	snprintf(path, sizeof(path), "%s/short.log", test_dir);
	struct log_opts o = {LOG_INFO, LOG_FORMAT_TEXT, path, 1 << 20, 1};
	struct vm_err err;
	assert_int_equal(log_configure(&o, &err), 0);
	log_info("test", "first line");
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	off_t one = st.st_size;
	struct rlimit old, lim;
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = (rlim_t)one + 10;
	void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	struct log_stats before, after;
	log_get_stats(&before);
	char *out = capture_stderr(log_marker, "marker-short-write");
	log_get_stats(&after);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, prev);
	assert_non_null(out);
	assert_non_null(strstr(out, "audit line NOT written: marker-short-write"));
	free(out);
	assert_int_equal(after.file_write_failures, before.file_write_failures + 1);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, one); /* no torn line left in the file */
	log_info("test", "after");         /* and the file is used again */
	char *data = read_all(path);
	assert_non_null(strstr(data, "test: after\n"));
	free(data);
	log_shutdown();
}

static atomic_int loggers_done;

static void *log_loop(void *arg)
{
	(void)arg;
	for (int i = 0; i < 2000; i++) {
		log_debug("race", "debug %d", i);
		log_error("race", "error %d", i);
	}
	atomic_fetch_add(&loggers_done, 1);
	return NULL;
}

/* log_msg reads the level while a reload (another thread) sets it: the level
 * is atomic, so this is race-free (run it under -fsanitize=thread), and every
 * line written is whole; no error line is lost to a level change. */
static void test_log_level_changes_while_threads_log(void **state)
{
	(void)state;
	char path[128];
	snprintf(path, sizeof(path), "%s/race.log", test_dir);
	struct log_opts lo = {LOG_DEBUG, LOG_FORMAT_TEXT, path, 64 << 20, 1};
	struct vm_err err;
	assert_int_equal(log_configure(&lo, &err), 0);
	atomic_store(&loggers_done, 0);
	pthread_t th[2];
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, log_loop, NULL), 0);
	/* bounded: the loggers finish 2 × 4000 calls long before this */
	for (int i = 0; i < 1000000 && atomic_load(&loggers_done) < 2; i++) {
		lo.level = i % 2 ? LOG_ERROR : LOG_DEBUG;
		assert_int_equal(log_configure(&lo, &err), 0);
	}
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	log_shutdown();
	char *data = read_all(path);
	size_t errors = 0;
	for (char *save = NULL, *l = strtok_r(data, "\n", &save); l != NULL;
	     l = strtok_r(NULL, "\n", &save)) {
		if (strstr(l, " race: error ") != NULL)
			errors++;
		else if (strstr(l, " race: debug ") == NULL)
			fail_msg("not a whole line: %s", l);
	}
	assert_int_equal(errors, 4000);
	free(data);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_log_redacts_bearer_and_jwt),
	    cmocka_unit_test(test_log_redacts_key_value_pairs),
	    cmocka_unit_test(test_log_redacts_pem_private_key),
	    cmocka_unit_test(test_log_redaction_never_overflows),
	    cmocka_unit_test(test_log_json_lines_are_redacted),
	    cmocka_unit_test(test_log_line_is_one_line_of_valid_utf8),
	    cmocka_unit_test(test_log_rotates_by_size_and_keeps_max_files),
	    cmocka_unit_test(test_log_configure_bad_file_keeps_previous),
	    cmocka_unit_test(test_log_full_disk_falls_back_to_stderr),
	    cmocka_unit_test(test_log_short_write_falls_back_to_stderr),
	    cmocka_unit_test(test_log_level_changes_while_threads_log),
	};
	return cmocka_run_group_tests(tests, test_dir_setup, teardown_dir);
}
