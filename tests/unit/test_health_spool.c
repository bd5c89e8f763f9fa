/* Unit tests for the health spool (order, bounds, drop-oldest, crash
 * leftovers, corrupt entries) and report ids (credentials: test_cp.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <dirent.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/fs.h"
#include "health/internal.h"

#include "test_dir.h"

/* getrandom interposed (the library is linked statically): a kernel or
 * seccomp filter that refuses it must not yield a guessable report id. */
static atomic_bool random_fails;
ssize_t getrandom(void *buf, size_t n, unsigned flags)
{
	if (atomic_load(&random_fails)) {
		errno = ENOSYS;
		return -1;
	}
	return (ssize_t)syscall(SYS_getrandom, buf, n, flags);
}

static void make_id(int i, char id[HEALTH_ID_LEN + 1])
{
	snprintf(id, HEALTH_ID_LEN + 1, "00000000-0000-4000-8000-%012d", i);
}

static void push_n(struct health_spool *sp, int from, int n)
{
	for (int i = from; i < from + n; i++) {
		char id[HEALTH_ID_LEN + 1], body[64];
		make_id(i, id);
		int len = snprintf(body, sizeof(body), "{\"n\":%d}", i);
		struct vm_err err = {0};
		assert_int_equal(health_spool_push(sp, id, body, (size_t)len, &err), 0);
	}
}

/* Pops everything, checking the ids come back as want[0..n). */
static void expect_order(struct health_spool *sp, const int *want, int n)
{
	for (int i = 0; i < n; i++) {
		char id[HEALTH_ID_LEN + 1], exp[HEALTH_ID_LEN + 1], *body;
		size_t len;
		struct vm_err err = {0};
		assert_int_equal(health_spool_peek(sp, id, &body, &len, &err), 0);
		make_id(want[i], exp);
		assert_string_equal(id, exp);
		char eb[64];
		snprintf(eb, sizeof(eb), "{\"n\":%d}", want[i]);
		assert_string_equal(body, eb);
		free(body);
		assert_int_equal(health_spool_pop(sp, &err), 0);
	}
	char id[HEALTH_ID_LEN + 1], *body;
	size_t len;
	/* empty is an answer, not an error */
	assert_int_equal(health_spool_peek(sp, id, &body, &len, NULL), 0);
	assert_null(body);
}

/* An empty spool answers 0 with no body; an entry whose file vanished is
 * skipped, not mistaken for the end (nor for an error). */
static void test_spool_empty_is_a_value_not_an_error(void **state)
{
	(void)state;
	struct health_spool_limits lim = {100, 1 << 20};
	struct vm_err err = {0};
	struct health_spool *sp = health_spool_open(test_dir, &lim, &err);
	assert_non_null(sp);
	char id[HEALTH_ID_LEN + 1], *body = (char *)"x";
	size_t len = 7;
	assert_int_equal(health_spool_peek(sp, id, &body, &len, &err), 0);
	assert_null(body);
	assert_int_equal(len, 0);
	assert_int_equal(err.code, 0);
	push_n(sp, 1, 2);
	/* the oldest entry's file disappears behind the spool's back */
	DIR *d = opendir(test_dir);
	assert_non_null(d);
	struct dirent *de;
	char victim[512] = "";
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.' &&
		    (victim[0] == '\0' || strcmp(de->d_name, victim + strlen(test_dir) + 1) < 0))
			snprintf(victim, sizeof(victim), "%s/%s", test_dir, de->d_name);
	closedir(d);
	assert_int_equal(unlink(victim), 0);
	assert_int_equal(health_spool_peek(sp, id, &body, &len, &err), 0);
	char want[HEALTH_ID_LEN + 1];
	make_id(2, want);
	assert_non_null(body);
	assert_string_equal(id, want);
	free(body);
	assert_int_equal(health_spool_pop(sp, &err), 0);
	assert_int_equal(health_spool_peek(sp, id, &body, &len, &err), 0);
	assert_null(body);
	/* nothing to remove: a caller's mistake, said so */
	assert_int_not_equal(health_spool_pop(sp, &err), 0);
	assert_int_equal(err.code, VM_ERR_INVALID);
	health_spool_close(sp);
}

static void test_spool_replays_in_order_across_reopen(void **state)
{
	(void)state;
	struct health_spool_limits lim = {100, 1 << 20};
	struct vm_err err = {0};
	struct health_spool *sp = health_spool_open(test_dir, &lim, &err);
	assert_non_null(sp);
	push_n(sp, 1, 12); /* crosses a hex digit boundary in the file names */
	health_spool_close(sp);
	sp = health_spool_open(test_dir, &lim, &err);
	assert_non_null(sp);
	uint64_t n, b, d, c;
	health_spool_stats(sp, &n, &b, &d, &c);
	assert_int_equal(n, 12);
	int want[12];
	for (int i = 0; i < 12; i++)
		want[i] = i + 1;
	expect_order(sp, want, 12);
	/* sequence continues after the old entries even when they are gone */
	push_n(sp, 50, 1);
	health_spool_close(sp);
	assert_int_equal(health_spool_usage(test_dir, &n, &b, &err), 0);
	assert_int_equal(n, 1);
}

/* A report the spool cannot write (a full or failing disk) is lost: counted
 * in dropped, never in the queue; the spool works again once it can write. */
static void test_spool_counts_a_report_it_could_not_write(void **state)
{
	(void)state;
	char dir[PATH_MAX], moved[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s/s", test_dir);
	snprintf(moved, sizeof(moved), "%s/s2", test_dir);
	struct health_spool_limits lim = {100, 1 << 20};
	struct vm_err err = {0};
	struct health_spool *sp = health_spool_open(dir, &lim, &err);
	assert_non_null(sp);
	assert_int_equal(rename(dir, moved), 0);
	FILE *f = fopen(dir, "w"); /* a file where the directory was: ENOTDIR */
	assert_non_null(f);
	fclose(f);
	char id[HEALTH_ID_LEN + 1];
	make_id(1, id);
	assert_int_not_equal(health_spool_push(sp, id, "{}", 2, &err), 0);
	uint64_t n, b, d, c;
	health_spool_stats(sp, &n, &b, &d, &c);
	assert_int_equal(n, 0);
	assert_int_equal(d, 1);
	assert_int_equal(unlink(dir), 0);
	assert_int_equal(rename(moved, dir), 0);
	push_n(sp, 2, 1);
	health_spool_stats(sp, &n, &b, &d, &c);
	assert_int_equal(n, 1);
	assert_int_equal(d, 1);
	health_spool_close(sp);
}

static void test_spool_drops_oldest_when_full_by_count_and_bytes(void **state)
{
	(void)state;
	struct health_spool_limits lim = {3, 1 << 20};
	struct vm_err err = {0};
	struct health_spool *sp = health_spool_open(test_dir, &lim, &err);
	push_n(sp, 1, 5);
	uint64_t n, b, d, c;
	health_spool_stats(sp, &n, &b, &d, &c);
	assert_int_equal(n, 3);
	assert_int_equal(d, 2);
	expect_order(sp, (int[]){3, 4, 5}, 3);
	/* by bytes: each entry is header (111) + body (8 or 9) */
	lim.max_entries = 100;
	lim.max_bytes = 2 * 120;
	health_spool_set_limits(sp, &lim);
	push_n(sp, 6, 3);
	health_spool_stats(sp, &n, &b, &d, &c);
	assert_int_equal(n, 2);
	assert_true(b <= lim.max_bytes);
	assert_int_equal(d, 3);
	expect_order(sp, (int[]){7, 8}, 2);
	/* one report bigger than the whole spool is refused */
	char big[300];
	memset(big, 'x', sizeof(big));
	char id[HEALTH_ID_LEN + 1];
	make_id(9, id);
	assert_int_equal(health_spool_push(sp, id, big, sizeof(big), &err), -VM_ERR_INVALID);
	health_spool_close(sp);
}

static void write_file(const char *name, const char *data, size_t len)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/%s", test_dir, name);
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	fwrite(data, 1, len, f);
	fclose(f);
}

static bool exists(const char *name)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/%s", test_dir, name);
	return access(path, F_OK) == 0;
}

static void test_spool_recovers_from_crash_leftovers_and_corrupt_entries(void **state)
{
	(void)state;
	struct health_spool_limits lim = {100, 1 << 20};
	struct vm_err err = {0};
	struct health_spool *sp = health_spool_open(test_dir, &lim, &err);
	push_n(sp, 1, 3);
	health_spool_close(sp);
	/* a write interrupted by kill -9: the temp file never got renamed */
	write_file("0000000000000004.rep.tmp.AbC123", "vmspool1 garbage", 16);
	/* a torn/foreign entry in the middle and a truncated tail entry */
	char p2[256];
	snprintf(p2, sizeof(p2), "%s/0000000000000002.rep", test_dir);
	char *data;
	size_t len;
	assert_int_equal(fs_read_file(p2, 4096, &data, &len, &err), 0);
	data[len - 2] ^= 1; /* bit flip in the body: checksum mismatch */
	write_file("0000000000000002.rep", data, len);
	write_file("0000000000000005.rep", data, 40); /* truncated header */
	free(data);
	write_file("README", "not an entry", 12);

	sp = health_spool_open(test_dir, &lim, &err);
	assert_non_null(sp);
	assert_false(exists("0000000000000004.rep.tmp.AbC123"));
	expect_order(sp, (int[]){1, 3}, 2);
	uint64_t n, b, d, c;
	health_spool_stats(sp, &n, &b, &d, &c);
	assert_int_equal(c, 2);
	assert_true(exists("0000000000000002.rep.corrupt"));
	assert_true(exists("README"));
	/* new entries go after the highest sequence seen, even a corrupt one */
	push_n(sp, 10, 1);
	assert_true(exists("0000000000000006.rep"));
	health_spool_close(sp);
}

static void test_spool_entry_parser(void **state)
{
	(void)state;
	char hdr[200], id[HEALTH_ID_LEN + 1], want[HEALTH_ID_LEN + 1];
	make_id(7, want);
	size_t hl = health_spool_format_header(want, "{}", 2, hdr, sizeof(hdr));
	assert_int_equal(hl, 111);
	char entry[256];
	memcpy(entry, hdr, hl);
	memcpy(entry + hl, "{}", 2);
	const char *body;
	size_t bl;
	assert_int_equal(health_spool_parse_entry(entry, hl + 2, id, &body, &bl), 0);
	assert_string_equal(id, want);
	assert_int_equal(bl, 2);
	assert_int_equal(health_spool_parse_entry(entry, hl + 1, id, &body, &bl), -1);
	entry[70] = 'G';
	assert_int_equal(health_spool_parse_entry(entry, hl + 2, id, &body, &bl), -1);
	assert_int_equal(health_spool_parse_entry("", 0, id, &body, &bl), -1);
}

static struct health_monitor *test_monitor(void)
{
	struct health_monitor *m = calloc(1, sizeof(*m));
	assert_non_null(m);
	pthread_mutex_init(&m->mu, NULL);
	snprintf(m->agent_id, sizeof(m->agent_id), "agent-1");
	return m;
}

static void test_uuid4_format(void **state)
{
	(void)state;
	struct health_monitor *m = test_monitor();
	char a[HEALTH_ID_LEN + 1], b[HEALTH_ID_LEN + 1], *body;
	size_t len;
	struct vm_err err = {0};
	assert_int_equal(health_report_new(m, "startup", a, &body, &len, &err), 0);
	assert_non_null(strstr(body, a));
	assert_int_equal(strlen(body), len);
	free(body);
	assert_int_equal(health_report_new(m, "startup", b, &body, &len, &err), 0);
	free(body);
	assert_int_equal(strlen(a), 36);
	assert_int_equal(a[14], '4');
	assert_true(strchr("89ab", a[19]) != NULL);
	assert_string_not_equal(a, b);
	pthread_mutex_destroy(&m->mu);
	free(m);
}

/* No randomness, no report: the reporter tries again at the next interval
 * rather than send an id derived from the clock that others could predict. */
static void test_health_uuid_failure_is_error_not_guessable(void **state)
{
	(void)state;
	struct health_monitor *m = test_monitor();
	char id[HEALTH_ID_LEN + 1];
	memset(id, 'x', sizeof(id));
	char *body = (char *)"untouched";
	size_t len = 7;
	struct vm_err err = {0};
	atomic_store(&random_fails, true);
	int rc = health_report_new(m, "startup", id, &body, &len, &err);
	atomic_store(&random_fails, false);
	assert_int_not_equal(rc, 0);
	assert_int_equal(err.code, VM_ERR_IO);
	assert_string_equal(id, "");
	assert_null(body);
	assert_int_equal(len, 0);
	pthread_mutex_destroy(&m->mu);
	free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_spool_replays_in_order_across_reopen,
	                                    test_dir_setup, test_dir_teardown),
	    cmocka_unit_test_setup_teardown(test_spool_counts_a_report_it_could_not_write, test_dir_setup,
	                                    test_dir_teardown),
	    cmocka_unit_test_setup_teardown(test_spool_drops_oldest_when_full_by_count_and_bytes,
	                                    test_dir_setup, test_dir_teardown),
	    cmocka_unit_test_setup_teardown(
	        test_spool_recovers_from_crash_leftovers_and_corrupt_entries, test_dir_setup,
	        test_dir_teardown),
	    cmocka_unit_test_setup_teardown(test_spool_empty_is_a_value_not_an_error,
	                                    test_dir_setup, test_dir_teardown),
	    cmocka_unit_test(test_spool_entry_parser),
	    cmocka_unit_test(test_uuid4_format),
	    cmocka_unit_test(test_health_uuid_failure_is_error_not_guessable),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
