/* Unit tests for the audit boundary: core/codec's UTF-8 check, cut and escape,
 * and webhook/audit's lines (any caller bytes give a valid line; a write that
 * fails is reported, whole or not at all). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/codec.h"
#include "core/config.h"
#include "core/fs.h"
#include "test_dir.h"
#include "test_tmpfs.h"
#include "webhook/internal.h"

static void test_codec_utf8_valid_rejects_malformed(void **state)
{
	(void)state;
	static const struct {
		const char *s;
		bool ok;
	} cases[] = {
	    {"plain", true},
	    {"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", true}, /* é € 😀 */
	    {"\xed\x9f\xbf", true},                         /* U+D7FF */
	    {"\xf4\x8f\xbf\xbf", true},                     /* U+10FFFF */
	    {"\xff", false},
	    {"\x80", false},             /* lone continuation */
	    {"\xc3", false},             /* cut */
	    {"\xe2\x82", false},         /* cut */
	    {"\xc0\xaf", false},         /* overlong "/" */
	    {"\xe0\x80\xaf", false},     /* overlong */
	    {"\xf0\x80\x80\xaf", false}, /* overlong */
	    {"\xed\xa0\x80", false},     /* surrogate U+D800 */
	    {"\xf4\x90\x80\x80", false}, /* U+110000 */
	    {"\xc3\x28", false},         /* bad continuation */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (utf8_valid(cases[i].s, strlen(cases[i].s)) != cases[i].ok)
			fail_msg("utf8_valid case %zu", i);
}

static void test_codec_utf8_cut_keeps_whole_characters(void **state)
{
	(void)state;
	const char *s = "a\xe2\x82\xac\xf0\x9f\x98\x80"; /* a € 😀 : 1 + 3 + 4 */
	assert_int_equal(utf8_cut(s, 1), 1);
	assert_int_equal(utf8_cut(s, 2), 1);
	assert_int_equal(utf8_cut(s, 3), 1);
	assert_int_equal(utf8_cut(s, 4), 4);
	assert_int_equal(utf8_cut(s, 7), 4);
	assert_int_equal(utf8_cut(s, 8), 8);
	assert_int_equal(utf8_cut(s, 0), 0);
}

static void test_codec_utf8_escape_bytes_controls_and_backslash(void **state)
{
	(void)state;
	char out[64];
	unsigned res;
	size_t n = utf8_escape(out, sizeof(out), "ok\xc3\xa9", 4, 0, &res);
	assert_string_equal(out, "ok\xc3\xa9");
	assert_int_equal(n, 4);
	assert_int_equal(res, 0);
	utf8_escape(out, sizeof(out), "a\xff\xc3 \\\n\t", 7, 0, &res);
	assert_string_equal(out, "a\\xFF\\xC3 \\\n\t"); /* without flags: bytes only */
	assert_int_equal(res, UTF8_ESCAPED);
	utf8_escape(out, sizeof(out), "a\xff \\\n\t\x7f\xc2\x9b", 9,
	            UTF8_ESC_CTRL | UTF8_ESC_BACKSLASH, &res);
	assert_string_equal(out, "a\\xFF \\\\\\x0A\t\\x7F\\xC2\\x9B");
	/* NUL-free input with an embedded length: a NUL byte is a control too */
	utf8_escape(out, sizeof(out), "x\0y", 3, UTF8_ESC_CTRL, &res);
	assert_string_equal(out, "x\\x00y");
}

static void test_codec_utf8_escape_cuts_on_boundaries(void **state)
{
	(void)state;
	char out[6];
	unsigned res;
	/* "ab€" needs 5 + NUL: fits; "abc€" does not and stops before the € */
	assert_int_equal(utf8_escape(out, sizeof(out), "ab\xe2\x82\xac", 5, 0, &res), 5);
	assert_int_equal(res, 0);
	assert_int_equal(utf8_escape(out, sizeof(out), "abc\xe2\x82\xac", 6, 0, &res), 3);
	assert_string_equal(out, "abc");
	assert_int_equal(res, UTF8_CUT);
	/* an escape is never split either */
	assert_int_equal(utf8_escape(out, sizeof(out), "ab\xff", 3, 0, &res), 2);
	assert_string_equal(out, "ab");
	assert_int_equal(res, UTF8_CUT);
	char one[1];
	assert_int_equal(utf8_escape(one, 1, "x", 1, 0, &res), 0);
	assert_string_equal(one, "");
}

/* --- audit lines ------------------------------------------------------------ */

static struct wh_audit *open_audit(const char *path, uint64_t max_size)
{
	struct cfg cfg;
	memset(&cfg, 0, sizeof(cfg));
	snprintf(cfg.auth.audit_file, sizeof(cfg.auth.audit_file), "%s", path);
	cfg.auth.audit_max_size = max_size;
	cfg.auth.audit_max_files = 1;
	struct vm_err err = {0};
	struct wh_audit *a = wh_audit_open(&cfg, &err);
	if (a == NULL)
		fail_msg("wh_audit_open %s: %s", path, err.msg);
	return a;
}

static char *read_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return NULL;
	static char buf[1 << 16];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return buf;
}

static const struct wh_audit_entry hostile = {
    .outcome = "denied",
    .status = 401,
    .tenant = "",
    .sub = "CORP\\alice",
    .jti = "",
    .route = "GET /v1/probes/{id}",
    .path = "/v1/probes/\xff\xfe",
    .error = "missing_token",
    .remote_addr = "127.0.0.1",
    .forwarded_for = "203.0.113.9\xc3",
    .probe_id = NULL,
};

static void test_audit_line_for_any_bytes_is_valid_json(void **state)
{
	(void)state;
	char *text = wh_audit_format(&hostile);
	assert_non_null(text);
	assert_true(utf8_valid(text, strlen(text)));
	json_error_t jerr;
	json_t *l = json_loads(text, 0, &jerr);
	assert_non_null(l);
	assert_string_equal(json_string_value(json_object_get(l, "path")), "/v1/probes/\\xFF\\xFE");
	assert_string_equal(json_string_value(json_object_get(l, "forwarded_for")),
	                    "203.0.113.9\\xC3");
	/* a clean field stays byte for byte, backslash included */
	assert_string_equal(json_string_value(json_object_get(l, "sub")), "CORP\\alice");
	json_t *esc = json_object_get(l, "escaped");
	assert_int_equal(json_array_size(esc), 2);
	assert_string_equal(json_string_value(json_array_get(esc, 0)), "path");
	assert_string_equal(json_string_value(json_array_get(esc, 1)), "forwarded_for");
	assert_null(json_object_get(l, "truncated"));
	assert_null(json_object_get(l, "probe_id"));
	json_decref(l);
	free(text);

	/* an escaped field doubles its backslashes, so it unescapes exactly */
	struct wh_audit_entry e = hostile;
	e.sub = "CORP\\alice\xff";
	text = wh_audit_format(&e);
	l = json_loads(text, 0, &jerr);
	assert_non_null(l);
	assert_string_equal(json_string_value(json_object_get(l, "sub")), "CORP\\\\alice\\xFF");
	json_decref(l);
	free(text);
}

static void test_audit_long_multibyte_field_is_cut_on_a_character(void **state)
{
	(void)state;
	char xff[400] = "a";
	for (int i = 0; i < 100; i++)
		strcat(xff, "\xe2\x82\xac");
	struct wh_audit_entry e = hostile;
	e.forwarded_for = xff;
	char *text = wh_audit_format(&e);
	assert_non_null(text);
	json_error_t jerr;
	json_t *l = json_loads(text, 0, &jerr);
	assert_non_null(l);
	const char *fwd = json_string_value(json_object_get(l, "forwarded_for"));
	assert_int_equal(strlen(fwd), 1 + 84 * 3); /* 255 bytes would split the 85th */
	assert_memory_equal(fwd, xff, strlen(fwd));
	json_t *cut = json_object_get(l, "truncated");
	assert_int_equal(json_array_size(cut), 1);
	assert_string_equal(json_string_value(json_array_get(cut, 0)), "forwarded_for");
	json_decref(l);
	free(text);
}

static void test_audit_write_reports_a_full_device(void **state)
{
	(void)state;
	/* a really full filesystem: every write fails with ENOSPC */
	char dir[128], path[160];
	snprintf(dir, sizeof(dir), "%s/full", test_dir);
	if (!test_tmpfs_full(dir, "64k", 0))
		skip();
	snprintf(path, sizeof(path), "%s/audit.log", dir);
	struct wh_audit *a = open_audit(path, 1 << 20);
	struct vm_err err = {0};
	assert_int_not_equal(wh_audit_write(a, &hostile, true, &err), 0);
	assert_non_null(strstr(err.msg, "No space left"));
	wh_audit_close(a);
	test_tmpfs_release(dir);
}

static struct wh_audit *try_open(const char *path, struct vm_err *err)
{
	struct cfg cfg;
	memset(&cfg, 0, sizeof(cfg));
	snprintf(cfg.auth.audit_file, sizeof(cfg.auth.audit_file), "%s", path);
	cfg.auth.audit_max_size = 1 << 20;
	cfg.auth.audit_max_files = 1;
	return wh_audit_open(&cfg, err);
}

/* The audit file is the agent's own: a symlink, a device, a FIFO or a file of
 * another user in its place is refused, never written through. */
static void test_audit_open_refuses_what_is_not_its_own_file(void **state)
{
	(void)state;
	char target[128], path[128];
	snprintf(target, sizeof(target), "%s/secret", test_dir);
	assert_int_equal(fs_write_atomic(target, "x", 1, 0600, NULL), 0);
	snprintf(path, sizeof(path), "%s/link.log", test_dir);
	assert_int_equal(symlink(target, path), 0);
	struct vm_err err = {0};
	struct wh_audit *a = try_open(path, &err);
	wh_audit_close(a);
	assert_null(a);
	struct stat st;
	assert_int_equal(stat(target, &st), 0);
	assert_int_equal(st.st_size, 1);

	snprintf(path, sizeof(path), "%s/dev.log", test_dir);
	assert_int_equal(symlink("/dev/full", path), 0);
	a = try_open(path, &err);
	wh_audit_close(a);
	assert_null(a);

	snprintf(path, sizeof(path), "%s/fifo.log", test_dir);
	assert_int_equal(mkfifo(path, 0600), 0);
	int reader = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	assert_true(reader >= 0);
	a = try_open(path, &err);
	wh_audit_close(a);
	close(reader);
	assert_null(a);

	if (geteuid() == 0) {
		snprintf(path, sizeof(path), "%s/nobody.log", test_dir);
		assert_int_equal(fs_write_atomic(path, "", 0, 0600, NULL), 0);
		assert_int_equal(chown(path, 65534, 65534), 0);
		a = try_open(path, &err);
		wh_audit_close(a);
		assert_null(a);
	}

	/* our own file with a looser mode is taken back to 0600 */
	snprintf(path, sizeof(path), "%s/loose.log", test_dir);
	assert_int_equal(fs_write_atomic(path, "", 0, 0644, NULL), 0);
	a = try_open(path, &err);
	assert_non_null(a);
	wh_audit_close(a);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
}

/* Re-created after removal or rotation, the file is still opened without
 * following a symlink planted in its place. */
static void test_audit_recreate_and_rotate_never_follow_a_symlink(void **state)
{
	(void)state;
	char target[128], path[128];
	snprintf(target, sizeof(target), "%s/victim", test_dir);
	assert_int_equal(fs_write_atomic(target, "", 0, 0600, NULL), 0);
	snprintf(path, sizeof(path), "%s/planted.log", test_dir);
	struct wh_audit *a = open_audit(path, 1 << 20);
	struct vm_err err = {0};
	assert_int_equal(wh_audit_write(a, &hostile, false, &err), 0);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(symlink(target, path), 0);
	assert_int_not_equal(wh_audit_write(a, &hostile, false, &err), 0); /* fail closed */
	wh_audit_close(a);
	struct stat st;
	assert_int_equal(stat(target, &st), 0);
	assert_int_equal(st.st_size, 0);

	/* rotation: the new file is opened the same way */
	snprintf(path, sizeof(path), "%s/rot.log", test_dir);
	a = open_audit(path, 1); /* every line rotates */
	assert_int_equal(wh_audit_write(a, &hostile, false, &err), 0);
	assert_int_equal(wh_audit_write(a, &hostile, false, &err), 0);
	char rotated[160];
	snprintf(rotated, sizeof(rotated), "%s.1", path);
	assert_int_equal(stat(rotated, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	wh_audit_close(a);
}

static void test_audit_write_never_leaves_a_torn_line(void **state)
{
	(void)state;
	char path[128];
	snprintf(path, sizeof(path), "%s/audit.log", test_dir);
	struct wh_audit *a = open_audit(path, 1 << 20);
	struct vm_err err = {0};
	assert_int_equal(wh_audit_write(a, &hostile, false, &err), 0);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	off_t one = st.st_size;
	/* a file size limit just past the current end: the next write is short */
	struct rlimit old, lim;
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = (rlim_t)one + 10;
	void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	int rc = wh_audit_write(a, &hostile, false, &err);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, prev);
	assert_int_not_equal(rc, 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, one); /* the partial line was taken back */
	/* and the log goes on afterwards, line by line */
	assert_int_equal(wh_audit_write(a, &hostile, true, &err), 0);
	wh_audit_close(a);
	char *data = read_file(path);
	assert_non_null(data);
	int lines = 0;
	for (char *line = strtok(data, "\n"); line != NULL; line = strtok(NULL, "\n")) {
		json_error_t jerr;
		json_t *l = json_loads(line, 0, &jerr);
		if (l == NULL)
			fail_msg("torn audit line: %s", line);
		json_decref(l);
		lines++;
	}
	assert_int_equal(lines, 2);
}

static void test_audit_write_recreates_a_removed_file(void **state)
{
	(void)state;
	char path[128];
	snprintf(path, sizeof(path), "%s/removed.log", test_dir);
	struct wh_audit *a = open_audit(path, 1 << 20);
	struct vm_err err = {0};
	assert_int_equal(wh_audit_write(a, &hostile, false, &err), 0);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(wh_audit_write(a, &hostile, false, &err), 0);
	wh_audit_close(a);
	struct stat st;
	assert_int_equal(stat(path, &st), 0); /* the line went somewhere a reader sees */
	assert_true(st.st_size > 0);
	assert_int_equal(st.st_mode & 0777, 0600);
}

/* Durable lines from many threads share their flushes (one thread syncs for
 * all the lines appended before it began): every call still returns only
 * once its line is in the file, and rotation in between loses none. */
struct writer_arg {
	struct wh_audit *a;
	int id, fails;
};

static void *durable_writer(void *arg)
{
	struct writer_arg *w = arg;
	for (int i = 0; i < 40; i++) {
		char jti[32];
		snprintf(jti, sizeof(jti), "w%d-%d", w->id, i);
		struct wh_audit_entry e = hostile;
		e.jti = jti;
		struct vm_err err = {0};
		w->fails += wh_audit_write(w->a, &e, i % 2 == 0, &err) != 0;
	}
	return NULL;
}

/* 8 threads of durable_writer on a; none may fail. */
static void run_writers(struct wh_audit *a)
{
	pthread_t t[8];
	struct writer_arg w[8];
	for (int i = 0; i < 8; i++) {
		w[i] = (struct writer_arg){a, i, 0};
		assert_int_equal(pthread_create(&t[i], NULL, durable_writer, &w[i]), 0);
	}
	for (int i = 0; i < 8; i++) {
		assert_int_equal(pthread_join(t[i], NULL), 0);
		assert_int_equal(w[i].fails, 0);
	}
}

static size_t count_lines(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return 0;
	size_t n = 0;
	int ch;
	while ((ch = fgetc(f)) != EOF)
		n += ch == '\n';
	fclose(f);
	return n;
}

static void test_audit_durable_lines_from_many_threads(void **state)
{
	(void)state;
	char dir[] = "/tmp/vma-audit-XXXXXX", path[64], old[80];
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/audit.log", dir);
	snprintf(old, sizeof(old), "%s.1", path);
	struct wh_audit *a = open_audit(path, 1 << 20);
	run_writers(a);
	wh_audit_close(a);
	assert_int_equal(count_lines(path), 8 * 40);
	/* again with a rotation every few lines (max_files 1: file and file.1) */
	unlink(path);
	a = open_audit(path, 4096);
	run_writers(a);
	wh_audit_close(a);
	size_t lines = count_lines(path);
	assert_true(lines > 0 && lines <= 4096 / 100);
	unlink(path);
	unlink(old);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_codec_utf8_valid_rejects_malformed),
	    cmocka_unit_test(test_codec_utf8_cut_keeps_whole_characters),
	    cmocka_unit_test(test_codec_utf8_escape_bytes_controls_and_backslash),
	    cmocka_unit_test(test_codec_utf8_escape_cuts_on_boundaries),
	    cmocka_unit_test(test_audit_line_for_any_bytes_is_valid_json),
	    cmocka_unit_test(test_audit_long_multibyte_field_is_cut_on_a_character),
	    cmocka_unit_test(test_audit_write_reports_a_full_device),
	    cmocka_unit_test(test_audit_write_never_leaves_a_torn_line),
	    cmocka_unit_test(test_audit_write_recreates_a_removed_file),
	    cmocka_unit_test(test_audit_open_refuses_what_is_not_its_own_file),
	    cmocka_unit_test(test_audit_recreate_and_rotate_never_follow_a_symlink),
	    cmocka_unit_test(test_audit_durable_lines_from_many_threads),
	};
	return cmocka_run_group_tests(tests, test_dir_setup, test_dir_teardown);
}
