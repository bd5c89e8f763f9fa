/* Unit tests for health collectors: known /proc fixtures (tests/data/proc/),
 * parser edge cases, and the live system. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "health/internal.h"

static char root[512];

static int fake_statvfs(const char *path, struct statvfs *st)
{
	memset(st, 0, sizeof(*st));
	st->f_frsize = 4096;
	st->f_bsize = 4096;
	if (strcmp(path, "/") == 0) {
		st->f_blocks = 1000;
		st->f_bfree = 100;
		st->f_bavail = 50;
		st->f_files = 1000;
		st->f_ffree = 900;
		return 0;
	}
	if (strcmp(path, "/mnt/My Disk") == 0) {
		st->f_blocks = 10;
		st->f_bfree = 10;
		st->f_bavail = 10;
		return 0;
	}
	return -1; /* /var/lib/data: unreadable, left out */
}

static void test_health_collect_fixture_all_fields(void **state)
{
	(void)state;
	struct health_proc_ctx ctx = {.proc_root = root, .statvfs_fn = fake_statvfs};
	struct health_cpu_ticks prev = {.total = 9000, .idle = 7800};
	struct health_system *s = calloc(1, sizeof(*s));
	health_collect(&ctx, &prev, s);
	assert_int_equal(s->errors, 0);
	/* total 1000+50+300+8000+400+0+50+0 = 9800, idle 8400: busy 200 of 800 = 25 % */
	assert_int_equal(s->ticks.total, 9800);
	assert_int_equal(s->ticks.idle, 8400);
	assert_true(s->cpu_percent > 24.9 && s->cpu_percent < 25.1);
	assert_int_equal(s->ncpu, 2);
	assert_int_equal(s->boot_time, 1700000000);
	assert_true(s->load1 == 0.5 && s->load5 == 0.75 && s->load15 == 1.25);
	assert_int_equal(s->mem_total, 8000000ull * 1024);
	assert_int_equal(s->mem_available, 2000000ull * 1024);
	assert_int_equal(s->swap_total, 1048576ull * 1024);
	assert_int_equal(s->swap_free, 524288ull * 1024);
	assert_true(s->uptime_s > 12345.6 && s->uptime_s < 12345.7);
	assert_int_equal(s->processes, 3);
	assert_int_equal(s->nnet, 2); /* lo skipped */
	assert_string_equal(s->net[0].iface, "eth0");
	assert_int_equal(s->net[0].rx_bytes, 123456789);
	assert_int_equal(s->net[0].tx_bytes, 987654321);
	assert_int_equal(s->nfs, 2);
	assert_string_equal(s->fs[0].mount, "/");
	assert_string_equal(s->fs[0].fstype, "ext4");
	assert_int_equal(s->fs[0].size_bytes, 1000 * 4096);
	assert_int_equal(s->fs[0].avail_bytes, 50 * 4096);
	assert_int_equal(s->fs[0].inodes_free, 900);
	assert_string_equal(s->fs[1].mount, "/mnt/My Disk");
	assert_int_equal(s->self_rss_bytes, 12345ull * 1024);
	assert_int_equal(s->self_threads, 7);
	assert_int_equal(s->self_fds, 4);
	free(s);
}

static void test_health_collect_first_sample_has_no_cpu_percent(void **state)
{
	(void)state;
	struct health_proc_ctx ctx = {.proc_root = root, .statvfs_fn = fake_statvfs};
	struct health_system *s = calloc(1, sizeof(*s));
	health_collect(&ctx, NULL, s);
	assert_true(s->cpu_percent < 0);
	free(s);
}

static void test_health_collect_missing_root_sets_error_bits(void **state)
{
	(void)state;
	struct health_proc_ctx ctx = {.proc_root = "/nonexistent-proc", .statvfs_fn = fake_statvfs};
	struct health_system *s = calloc(1, sizeof(*s));
	health_collect(&ctx, NULL, s);
	assert_int_equal(s->errors, 0xff);
	assert_int_equal(s->mem_total, 0);
	free(s);
}

static void test_health_parsers_reject_malformed(void **state)
{
	(void)state;
	struct health_cpu_ticks t;
	uint64_t n, r;
	int64_t b;
	double x, y, z;
	struct health_system sys;
	struct health_net net[2];
	struct health_fs fs[2];
	size_t cnt;
	assert_int_equal(health_parse_stat("", &t, &n, &b, &r), -1);
	assert_int_equal(health_parse_stat("cpu  1 2\n", &t, &n, &b, &r), -1);
	assert_int_equal(health_parse_stat("cpu  99999999999999999999 1 1 1\n", &t, &n, &b, &r),
	                 -1);
	assert_int_equal(health_parse_loadavg("0.1 abc", &x, &y, &z), -1);
	assert_int_equal(health_parse_loadavg("-1 0 0", &x, &y, &z), -1);
	assert_int_equal(health_parse_uptime("", &x), -1);
	memset(&sys, 0, sizeof(sys));
	assert_int_equal(health_parse_meminfo("MemTotal: 10 kB\n", &sys), -1);
	assert_int_equal(health_parse_netdev("h\nh\n eth0 1 2 3\n", net, 2, &cnt), -1);
	assert_int_equal(health_parse_netdev("h\nh\n eth0: 1 2\n", net, 2, &cnt), -1);
	/* more interfaces than room: bounded, not an error */
	assert_int_equal(health_parse_netdev("h\nh\na: 1 2 3 4 5 6 7 8 9\nb: 1 2 3 4 5 6 7 8 9\n"
	                                     "c: 1 2 3 4 5 6 7 8 9\n",
	                                     net, 2, &cnt),
	                 0);
	assert_int_equal(cnt, 2);
	assert_int_equal(health_parse_mounts("onlydevice\n", fs, 2, &cnt), -1);
	assert_int_equal(
	    health_parse_mounts("/dev/a /x ext4 rw 0 0\n/dev/b /x xfs rw 0 0\n", fs, 2, &cnt), 0);
	assert_int_equal(cnt, 1); /* the later mount hides the earlier */
	assert_string_equal(fs[0].fstype, "xfs");
	uint64_t rss, thr;
	assert_int_equal(health_parse_self_status("Threads: 3\n", &rss, &thr), -1);
}

static void test_health_pseudo_filesystems_skipped(void **state)
{
	(void)state;
	assert_true(health_fs_is_pseudo("proc"));
	assert_true(health_fs_is_pseudo("squashfs"));
	assert_true(health_fs_is_pseudo("nfs4"));
	assert_true(health_fs_is_pseudo("tmpfs"));
	assert_false(health_fs_is_pseudo("ext4"));
	assert_false(health_fs_is_pseudo("xfs"));
	assert_false(health_fs_is_pseudo("overlay"));
}

static void test_health_collect_live_system_is_sane(void **state)
{
	(void)state;
	struct health_proc_ctx ctx = {.proc_root = "/proc"};
	struct health_system *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
	health_collect(&ctx, NULL, a);
	usleep(50000);
	health_collect(&ctx, &a->ticks, b);
	assert_int_equal(b->errors & 0x7f, 0); /* all but maybe fds under odd sandboxes */
	assert_true(b->ncpu >= 1);
	assert_true(b->mem_total > 0 && b->mem_available <= b->mem_total);
	assert_true(b->uptime_s > 0);
	assert_true(b->processes >= 1);
	assert_true(b->self_rss_bytes > 0);
	assert_true(b->self_threads >= 1);
	assert_true(b->cpu_percent <= 100.0);
	for (size_t i = 0; i < b->nfs; i++)
		assert_true(b->fs[i].avail_bytes <= b->fs[i].size_bytes);
	free(a);
	free(b);
}

int main(void)
{
	const char *data = getenv("VMA_TEST_DATA");
	snprintf(root, sizeof(root), "%s/proc/basic", data ? data : "tests/data");
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_health_collect_fixture_all_fields),
	    cmocka_unit_test(test_health_collect_first_sample_has_no_cpu_percent),
	    cmocka_unit_test(test_health_collect_missing_root_sets_error_bits),
	    cmocka_unit_test(test_health_parsers_reject_malformed),
	    cmocka_unit_test(test_health_pseudo_filesystems_skipped),
	    cmocka_unit_test(test_health_collect_live_system_is_sane),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
