/* Unit tests for the backup steps' pure parts: rsync's output (items,
 * progress2 updates split on '\r', stats), its exit statuses, and the ignore
 * globs (what they accept and that they match as rsync's --exclude does). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/proc.h"
#include "probe/steps/backup.h"
#include "test_dir.h"

#define MAX_RECS 32

struct got {
	int n;
	struct rsync_rec recs[MAX_RECS];
};

static void collect(void *ctx, const struct rsync_rec *rec)
{
	struct got *g = ctx;
	if (g->n < MAX_RECS)
		g->recs[g->n++] = *rec;
}

static struct rsync_reader reader;

static void feed_all(struct got *g, const char *text, size_t chunk)
{
	memset(g, 0, sizeof(*g));
	rsync_reader_init(&reader, collect, g);
	size_t len = strlen(text);
	for (size_t o = 0; o < len; o += chunk)
		rsync_reader_feed(&reader, text + o, len - o < chunk ? len - o : chunk);
	rsync_reader_finish(&reader);
}

/* Real output of rsync 3.5 -a --info=progress2 --out-format="VMA1|%i|%l|%n". */
static const char real_run[] =
    "VMA1|cd+++++++++|4096|src/\n"
    "VMA1|>f+++++++++|3|src/a.txt\n"
    "\r              3   0%    0.00kB/s    0:00:00  \r              3   0%    0.00kB/s    "
    "0:00:00 (xfr#1, to-chk=4/6)\n"
    "VMA1|>f+++++++++|3000000|src/big.bin\n"
    "\r      2,195,459  73%    1.95MB/s    0:00:00  \r      3,000,003  99%    1.92MB/s    "
    "0:00:01 (xfr#2, to-chk=3/6)\n"
    "VMA1|cL+++++++++|5|src/lnk\n"
    "VMA1|>f+++++++++|1|src/we\\#012ird\n"
    "\n"
    "Number of files: 6 (reg: 3, dir: 2, link: 1)\n"
    "Number of regular files transferred: 3\n"
    "Total file size: 3,000,009 bytes\n"
    "Total transferred file size: 3,000,004 bytes\n"
    "Literal data: 3,000,004 bytes\n";

static void test_rsync_reader_items_progress_and_stats_whatever_the_chunking(void **state)
{
	(void)state;
	static struct got a, b;
	feed_all(&a, real_run, sizeof(real_run));
	feed_all(&b, real_run, 1); /* byte by byte: the same records */
	assert_int_equal(a.n, b.n);
	for (int i = 0; i < a.n; i++) {
		assert_int_equal(a.recs[i].type, b.recs[i].type);
		assert_string_equal(a.recs[i].name, b.recs[i].name);
		assert_int_equal(a.recs[i].bytes, b.recs[i].bytes);
	}
	assert_int_equal(a.n, 14);
	assert_int_equal(a.recs[0].type, RSYNC_REC_ITEM);
	assert_string_equal(a.recs[0].name, "src/");
	assert_int_equal(a.recs[0].kind, 'd');
	assert_string_equal(a.recs[0].op, "create");
	assert_int_equal(a.recs[1].kind, 'f');
	assert_string_equal(a.recs[1].op, "copy");
	assert_int_equal(a.recs[1].length, 3);
	assert_int_equal(a.recs[2].type, RSYNC_REC_PROGRESS);
	assert_int_equal(a.recs[2].xfr, -1);
	assert_int_equal(a.recs[3].type, RSYNC_REC_PROGRESS);
	assert_int_equal(a.recs[3].xfr, 1);
	assert_int_equal(a.recs[3].to_chk, 4);
	assert_int_equal(a.recs[3].total, 6);
	assert_int_equal(a.recs[4].length, 3000000);
	assert_int_equal(a.recs[5].bytes, 2195459);
	assert_int_equal(a.recs[5].percent, 73);
	assert_int_equal(a.recs[6].bytes, 3000003);
	assert_int_equal(a.recs[6].percent, 99);
	assert_int_equal(a.recs[6].xfr, 2);
	assert_int_equal(a.recs[7].kind, 'L');
	assert_string_equal(a.recs[8].name, "src/we\\#012ird");
	assert_int_equal(a.recs[9].type, RSYNC_REC_STAT);
	assert_int_equal(a.recs[9].stat, RSYNC_STAT_FILES);
	assert_int_equal(a.recs[9].value, 6);
	assert_int_equal(a.recs[10].stat, RSYNC_STAT_REG_TRANSFERRED);
	assert_int_equal(a.recs[10].value, 3);
	assert_int_equal(a.recs[11].stat, RSYNC_STAT_TOTAL_SIZE);
	assert_int_equal(a.recs[11].value, 3000009);
	assert_int_equal(a.recs[12].stat, RSYNC_STAT_TRANSFERRED);
	assert_int_equal(a.recs[12].value, 3000004);
	assert_int_equal(a.recs[13].type, RSYNC_REC_OTHER); /* Literal data */
}

static void test_rsync_item_ops_and_changes(void **state)
{
	(void)state;
	struct rsync_rec r;
	const char *line = "VMA1|.f          |12|a/b";
	rsync_parse_record(line, strlen(line), &r);
	assert_int_equal(r.type, RSYNC_REC_ITEM);
	assert_string_equal(r.op, "unchanged");
	assert_false(r.changes);
	line = "VMA1|.d..t......|4096|a/";
	rsync_parse_record(line, strlen(line), &r);
	assert_string_equal(r.op, "attrs");
	assert_true(r.changes);
	line = "VMA1|*deleting|0|old";
	rsync_parse_record(line, strlen(line), &r);
	assert_string_equal(r.op, "delete");
	line = "VMA1|hf+++++++++|7|x|y|z"; /* the name is the rest, '|' and all */
	rsync_parse_record(line, strlen(line), &r);
	assert_string_equal(r.op, "link");
	assert_string_equal(r.name, "x|y|z");
}

static void test_rsync_malformed_records_are_other_never_items(void **state)
{
	(void)state;
	static const char *const bad[] = {
	    "VMA1|",
	    "VMA1|>f+++|",
	    "VMA1|>f+++|12",
	    "VMA1|>f+++|12|",
	    "VMA1|>f+++|x|a",
	    "VMA1|>f+++|-1|a",
	    "VMA1|0123456789abcdef|1|a",
	    "VMA1|>|1|a",
	    "12 percent",
	    "99999999999999999999999 10% x",
	    "3 101% 1kB/s",
	    ",3 10% 1kB/s",
	    "Total file size: lots",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct rsync_rec r;
		rsync_parse_record(bad[i], strlen(bad[i]), &r);
		assert_int_equal(r.type, RSYNC_REC_OTHER);
	}
	/* a NUL inside a name never makes a shorter item */
	struct rsync_rec r;
	rsync_parse_record("VMA1|>f+++|1|a\0b", 15, &r);
	assert_int_equal(r.type, RSYNC_REC_OTHER);
}

static void test_rsync_overlong_record_dropped_and_counted(void **state)
{
	(void)state;
	static struct got g;
	memset(&g, 0, sizeof(g));
	rsync_reader_init(&reader, collect, &g);
	static char big[RSYNC_LINE_MAX + 100];
	memset(big, 'x', sizeof(big));
	memcpy(big, "VMA1|>f+++|1|", 13);
	rsync_reader_feed(&reader, big, sizeof(big));
	rsync_reader_feed(&reader, "\nVMA1|>f+++|2|ok\n", 17);
	rsync_reader_finish(&reader);
	assert_int_equal(reader.overlong, 1);
	assert_int_equal(g.n, 1);
	assert_string_equal(g.recs[0].name, "ok");
	/* a long name that fits the line is kept, cut, and says so */
	memset(&g, 0, sizeof(g));
	rsync_reader_init(&reader, collect, &g);
	rsync_reader_feed(&reader, big, RSYNC_NAME_MAX * 2);
	rsync_reader_finish(&reader);
	assert_int_equal(g.n, 1);
	assert_true(g.recs[0].name_cut);
	assert_int_equal(strlen(g.recs[0].name), RSYNC_NAME_MAX - 1);
}

static void test_rsync_exit_codes_mapped(void **state)
{
	(void)state;
	assert_string_equal(rsync_exit_describe(23).code, "partial_transfer");
	assert_false(rsync_exit_describe(23).warning);
	assert_string_equal(rsync_exit_describe(24).code, "source_files_vanished");
	assert_true(rsync_exit_describe(24).warning);
	assert_string_equal(rsync_exit_describe(255).code, "ssh_failed");
	assert_string_equal(rsync_exit_describe(12).code, "connection_failed");
	assert_string_equal(rsync_exit_describe(30).code, "timeout");
	assert_string_equal(rsync_exit_describe(35).code, "timeout");
	assert_string_equal(rsync_exit_describe(77).code, "rsync_failed");
}

static void test_backup_glob_refuses_what_rsync_reads_differently(void **state)
{
	(void)state;
	static const char *const bad[] = {
	    "",   "**", "a/**/b",      "+ keep", "- drop", "!",    "a\\*",  "[]x]", "[^a]",
	    "[a", "x]", "[[:alpha:]]", "a//b",   "/",      "a\nb", "[a/b]", "[-a]"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct backup_glob g;
		char why[128];
		assert_int_equal(backup_glob_parse(bad[i], &g, why, sizeof(why)), -1);
		assert_true(why[0] != '\0');
	}
	char longer[BACKUP_GLOB_MAX + 1];
	memset(longer, 'a', sizeof(longer) - 1);
	longer[sizeof(longer) - 1] = '\0';
	struct backup_glob g;
	char why[128];
	assert_int_equal(backup_glob_parse(longer, &g, why, sizeof(why)), -1);
}

static bool excluded(const char *pat, const char *name, bool is_dir)
{
	struct backup_glob g;
	char why[128];
	assert_int_equal(backup_glob_parse(pat, &g, why, sizeof(why)), 0);
	return backup_glob_excluded(&g, 1, name, is_dir);
}

/* The rsync(1) INCLUDE/EXCLUDE PATTERN RULES, one case each. */
static void test_backup_glob_matches_like_rsync_exclude(void **state)
{
	(void)state;
	/* no slash: the last component, anywhere, dot files included */
	assert_true(excluded("*.log", "src/a/b.log", false));
	assert_true(excluded("*.log", "src/.hidden.log", false));
	assert_false(excluded("*.log", "src/b.log/x", false));
	assert_true(excluded("cache", "src/a/cache", true));
	assert_false(excluded("cache", "src/a/cachex", true));
	/* '*' and '?' never cross a slash */
	assert_false(excluded("/src*", "src/a", false));
	assert_true(excluded("b?d", "src/bad", false));
	/* a leading '/' anchors to the transfer root */
	assert_true(excluded("/src/tmp", "src/tmp", true));
	assert_false(excluded("/src/tmp", "x/src/tmp", true));
	assert_false(excluded("/tmp", "src/tmp", true));
	/* infix slash, unanchored: the last components, at a component boundary */
	assert_true(excluded("a/*.o", "src/a/x.o", false));
	assert_true(excluded("a/*.o", "a/x.o", false));
	assert_false(excluded("a/*.o", "src/ba/x.o", false));
	assert_false(excluded("a/*.o", "src/a/b/x.o", false));
	/* trailing '/': directories only */
	assert_true(excluded("build/", "src/build", true));
	assert_false(excluded("build/", "src/build", false));
	/* classes */
	assert_true(excluded("*.[ch]", "src/x.c", false));
	assert_false(excluded("*.[!ch]", "src/x.c", false));
	assert_true(excluded("[a-c]x", "src/bx", false));
	/* several globs: any match excludes */
	struct backup_glob gs[2];
	char why[64];
	assert_int_equal(backup_glob_parse("*.tmp", &gs[0], why, sizeof(why)), 0);
	assert_int_equal(backup_glob_parse("/src/cache/", &gs[1], why, sizeof(why)), 0);
	assert_true(backup_glob_excluded(gs, 2, "src/cache", true));
	assert_true(backup_glob_excluded(gs, 2, "src/x.tmp", false));
	assert_false(backup_glob_excluded(gs, 2, "src/x", false));
}

/* The tree of the rsync comparison: names relative to the transfer root. */
static const struct {
	const char *name;
	bool dir;
} tree[] = {
    {"src", true},
    {"src/a.log", false},
    {"src/a.txt", false},
    {"src/.hidden", false},
    {"src/cache", true},
    {"src/cache/x", false},
    {"src/sub", true},
    {"src/sub/cache", false},
    {"src/sub/x.o", false},
    {"src/sub/deep", true},
    {"src/sub/deep/y.o", false},
    {"src/sub/deep/z.c", false},
    {"src/tmp", true},
    {"src/tmp/t", false},
    {"src/sub/tmp", true},
    {"src/sub/tmp/u", false},
    {"src/bx", false},
    {"src/b.h", false},
};

/* What the walker keeps: an entry is out when it or a directory above it is excluded. */
static bool walker_keeps(const struct backup_glob *g, size_t i)
{
	char name[256];
	snprintf(name, sizeof(name), "%s", tree[i].name);
	for (;;) {
		bool is_dir = strcmp(name, tree[i].name) != 0 || tree[i].dir;
		if (backup_glob_excluded(g, 1, name, is_dir))
			return false;
		char *slash = strrchr(name, '/');
		if (slash == NULL)
			return true;
		*slash = '\0';
	}
}

struct names {
	char buf[8192];
	size_t len;
};

static void collect_name(void *ctx, const struct rsync_rec *rec)
{
	struct names *n = ctx;
	if (rec->type != RSYNC_REC_ITEM)
		return;
	size_t l = strlen(rec->name);
	if (l > 0 && rec->name[l - 1] == '/')
		l--;
	n->len +=
	    (size_t)snprintf(n->buf + n->len, sizeof(n->buf) - n->len, "|%.*s|", (int)l, rec->name);
}

/* Each accepted pattern excludes exactly what real rsync's --exclude does. */
static void test_backup_glob_agrees_with_real_rsync(void **state)
{
	(void)state;
	char rsync[PATH_MAX];
	struct vm_err err = {0};
	if (proc_resolve("rsync", rsync, sizeof(rsync), &err) != 0)
		fail_msg("rsync is not installed (scripts/deps.sh installs it): %s", err.msg);
	char root[128], p[256];
	snprintf(root, sizeof(root), "%s/src", test_dir);
	for (size_t i = 0; i < sizeof(tree) / sizeof(tree[0]); i++) {
		snprintf(p, sizeof(p), "%s/%s", test_dir, tree[i].name);
		if (tree[i].dir)
			assert_int_equal(mkdir(p, 0755), 0);
		else
			assert_int_equal(close(open(p, O_CREAT | O_WRONLY, 0644)), 0);
	}
	static const char *const pats[] = {
	    "*.log",          "cache",     "cache/", "/src/tmp", "tmp",    "sub/*.o", "deep/*",
	    "/src/sub/deep/", ".*",        "*.[ch]", "*.[!ch]",  "[a-c]x", "?",       "src",
	    "/src/*",         "sub/tmp/u", "*/x*",
	};
	char dst[128];
	snprintf(dst, sizeof(dst), "%s/dst/", test_dir);
	for (size_t k = 0; k < sizeof(pats) / sizeof(pats[0]); k++) {
		struct backup_glob g;
		char why[128], ex[300];
		assert_int_equal(backup_glob_parse(pats[k], &g, why, sizeof(why)), 0);
		snprintf(ex, sizeof(ex), "--exclude=%s", pats[k]);
		const char *argv[] = {
		    rsync, "-a", "--dry-run", "-ii", "--out-format=" RSYNC_OUT_FORMAT,
		    ex,    "--", root,        dst,   NULL};
		const char *envp[] = {"LC_ALL=C", NULL};
		struct proc_spec spec = {.path = rsync,
		                         .argv = (char *const *)argv,
		                         .envp = (char *const *)envp,
		                         .out_cap = 1 << 20,
		                         .deadline_ms = time_mono_ms() + 120000, /* a loaded CI machine */
		                         .grace_ms = 100};
		struct proc_result res;
		assert_int_equal(proc_run(&spec, &res, &err), 0);
		assert_int_equal(res.exit_code, 0);
		static struct names got;
		memset(&got, 0, sizeof(got));
		rsync_reader_init(&reader, collect_name, &got);
		rsync_reader_feed(&reader, res.out, res.out_len);
		rsync_reader_finish(&reader);
		proc_result_free(&res);
		for (size_t i = 0; i < sizeof(tree) / sizeof(tree[0]); i++) {
			char key[260];
			snprintf(key, sizeof(key), "|%s|", tree[i].name);
			bool by_rsync = strstr(got.buf, key) != NULL;
			if (by_rsync != walker_keeps(&g, i))
				fail_msg("pattern %s, %s: rsync %s it, the walker %s it", pats[k],
				         tree[i].name, by_rsync ? "keeps" : "drops",
				         by_rsync ? "drops" : "keeps");
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rsync_reader_items_progress_and_stats_whatever_the_chunking),
	    cmocka_unit_test(test_rsync_item_ops_and_changes),
	    cmocka_unit_test(test_rsync_malformed_records_are_other_never_items),
	    cmocka_unit_test(test_rsync_overlong_record_dropped_and_counted),
	    cmocka_unit_test(test_rsync_exit_codes_mapped),
	    cmocka_unit_test(test_backup_glob_refuses_what_rsync_reads_differently),
	    cmocka_unit_test(test_backup_glob_matches_like_rsync_exclude),
	    cmocka_unit_test_setup_teardown(test_backup_glob_agrees_with_real_rsync, test_dir_setup,
	                                    test_dir_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
