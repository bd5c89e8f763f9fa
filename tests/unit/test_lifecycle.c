/* Unit tests for lifecycle internals: version ordering, the flat config
 * editor, the unit template, remote upgrade request checks and journal
 * recovery. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/fs.h"
#include "lifecycle/internal.h"

#include "test_dir.h"
#include "test_fake_io.h"

static void test_lifecycle_version_order(void **state)
{
	(void)state;
	static const struct {
		const char *a, *b;
		int want;
	} rows[] = {
	    {"1.2.3", "1.2.3", 0},         {"1.2.10", "1.2.9", 1}, {"0.9", "0.10", -1},
	    {"1.2", "1.2.1", -1},          {"v2.0.0", "1.9.9", 1}, {"1.0.0-rc1", "1.0.0", -1},
	    {"1.0.0-rc2", "1.0.0-rc1", 1}, {"99.0.0", "0.1.0", 1},
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		bool ok;
		int got = lc_version_cmp(rows[i].a, rows[i].b, &ok);
		assert_true(ok);
		assert_int_equal(got, rows[i].want);
	}
	bool ok;
	lc_version_cmp("abc", "1.0", &ok);
	assert_false(ok);
	lc_version_cmp("1.0x", "1.0", &ok);
	assert_false(ok);
}

static void test_lifecycle_cfg_edit_roundtrip_validates_and_quotes(void **state)
{
	(void)state;
	static const char text[] = "agent:\n  id: a1\npiko:\n  reconnect:\n    max_delay: 30s\n"
	                           "health:\nprobe:\n  allow: [\"/bin/a,b\", \"/bin/c\"]\n";
	struct cfg_doc *doc = NULL;
	struct vm_err err = {0};
	assert_int_equal(cfg_doc_parse(&doc, "t", text, strlen(text), &err), 0);
	assert_int_equal(cfg_doc_values(doc)->piko.reconnect.max_delay_ms, 30000);
	assert_int_equal(cfg_doc_set(doc, "agent.tenant_id", "te\"n\\ant", &err), 0);
	assert_int_equal(cfg_doc_set(doc, "webhook.port", "9100", &err), 0);
	assert_int_not_equal(cfg_doc_set(doc, "agent.nope", "1", &err), 0);
	assert_int_not_equal(cfg_doc_set(doc, "agent.id", "a\nb", &err), 0);
	const char *out = cfg_doc_text(doc, NULL);
	assert_non_null(out);
	assert_int_equal(cfg_doc_validate(doc, &err), 0);
	struct cfg_doc *back = NULL;
	assert_int_equal(cfg_doc_parse(&back, "t", out, strlen(out), &err), 0);
	assert_string_equal(cfg_doc_values(back)->agent.tenant_id, "te\"n\\ant");
	assert_int_equal(cfg_doc_values(back)->piko.reconnect.max_delay_ms, 30000);
	assert_non_null(strstr(out, "allow: [\"/bin/a,b\", \"/bin/c\"]")); /* a list stays a list */
	assert_int_equal(cfg_doc_values(back)->probe.allow.count, 2);
	assert_int_equal(cfg_doc_unset(back, "webhook.port", &err), 0);
	assert_false(cfg_doc_has(back, "webhook.port"));
	cfg_doc_free(doc);
	cfg_doc_free(back);
}

static void test_lifecycle_cfg_write_keeps_backup_and_refuses_invalid(void **state)
{
	(void)state;
	char path[128], bak[140];
	snprintf(path, sizeof(path), "%s/config.yaml", test_dir);
	snprintf(bak, sizeof(bak), "%s.bak", path);
	struct cfg_doc *doc = NULL;
	struct vm_err err = {0};
	assert_int_equal(cfg_doc_read(&doc, path, &err), 0); /* missing: empty */
	assert_int_equal(cfg_doc_set(doc, "webhook.port", "9100", &err), 0);
	assert_int_equal(lc_config_write(path, doc, &err), 0);
	assert_int_equal(cfg_doc_set(doc, "webhook.port", "9200", &err), 0);
	assert_int_equal(lc_config_write(path, doc, &err), 0);
	char *data;
	size_t len;
	assert_int_equal(fs_read_file(bak, 4096, &data, &len, &err), 0);
	assert_non_null(strstr(data, "9100"));
	free(data);
	assert_int_equal(cfg_doc_set(doc, "piko.endpoint", "a/b", &err), 0);
	assert_int_not_equal(lc_config_write(path, doc, &err), 0);
	assert_int_equal(fs_read_file(path, 4096, &data, &len, &err), 0);
	assert_non_null(strstr(data, "9200")); /* unchanged */
	free(data);
	cfg_doc_free(doc);
}

static void test_lifecycle_unit_template_has_the_binary_and_hardening(void **state)
{
	(void)state;
	char *u = lc_svc_render_unit("/opt/x/vm-agent");
	assert_non_null(u);
	assert_non_null(
	    strstr(u, "ExecStart=/opt/x/vm-agent run --config /etc/vm-agent/config.yaml"));
	assert_null(strstr(u, "@BIN@"));
	assert_non_null(strstr(u, "Restart=on-failure"));
	assert_non_null(strstr(u, "After=network-online.target"));
	assert_non_null(strstr(u, "WantedBy=multi-user.target"));
	free(u);
	struct lc_paths p;
	assert_int_equal(lc_paths_init(&p, test_dir, NULL, NULL), 0);
	struct vm_err err;
	assert_int_not_equal(lc_svc_write_unit(&p, "/bad path/vm-agent", NULL, &err), 0);
}

static void test_lifecycle_remote_upgrade_request_is_checked(void **state)
{
	(void)state;
	static const char sum[] =
	    "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
	const struct lc_upgrade_request bad[] = {
	    {NULL, "https://a/b", sum, NULL, false, NULL},
	    {"1.0;rm -rf /", "https://a/b", sum, NULL, false, NULL},
	    {"1.0", "file:///etc/shadow", sum, NULL, false, NULL},
	    {"1.0", "https://a/b c", sum, NULL, false, NULL},
	    {"1.0", "https://a/b", "sha256:00", NULL, false, NULL},
	    {"1.0", "https://a/b", "md5:0123456789abcdef0123456789abcdef", NULL, false, NULL},
	    {"1.0", "https://a/b", sum, "ftp://x/y", false, NULL},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct vm_err err = {0};
		assert_int_not_equal(lc_upgrade_start_background(&bad[i], &err), 0);
		assert_int_equal(err.code, VM_ERR_INVALID);
	}
}

/* The background upgrade's start without systemd: detached into its own
 * session, the caller not waiting for it. */
static void test_lifecycle_spawn_detached_runs_in_its_own_session(void **state)
{
	(void)state;
	if (access("/run/systemd/system", F_OK) == 0)
		skip(); /* there it is a systemd-run transient unit */
	char out[256], script[3 * 256 + 64];
	snprintf(out, sizeof(out), "%s/sid", test_dir);
	snprintf(script, sizeof(script), "ps -o sid= -p $$ > %s.tmp; mv %s.tmp %s", out, out, out);
	const char *argv[] = {"/bin/sh", "-c", script, NULL};
	struct vm_err err = {0};
	assert_int_equal(lc_svc_spawn_detached(argv, &err), 0);
	FILE *f = NULL;
	for (int i = 0; i < 500 && (f = fopen(out, "r")) == NULL; i++)
		usleep(10000);
	assert_non_null(f);
	long sid = 0;
	assert_int_equal(fscanf(f, "%ld", &sid), 1);
	fclose(f);
	assert_true(sid > 0);
	assert_int_not_equal(sid, (long)getsid(0));
	const char *nope[] = {"/nonexistent/vm-agent", NULL};
	assert_int_not_equal(lc_svc_spawn_detached(nope, &err), 0);
}

static void write_file(const char *path, const char *text)
{
	assert_int_equal(fs_write_atomic(path, text, strlen(text), 0755, NULL), 0);
}

/* The request file of a remotely started upgrade: read once and removed; a
 * symlink, a file others could read, or a directory others could write is
 * refused (the request holds a presigned URL). */
static void test_lifecycle_upgrade_request_file_private_and_consumed(void **state)
{
	(void)state;
	static const char good[] =
	    "{\"version\":\"9.9.9\",\"url\":\"https://h/a?sig=S\",\"checksum\":\"sha256:"
	    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\","
	    "\"allow_downgrade\":true}";
	char dir[PATH_MAX], path[PATH_MAX + 32], link[PATH_MAX + 32];
	snprintf(dir, sizeof(dir), "%s/run", test_dir);
	assert_int_equal(mkdir(dir, 0700), 0);
	snprintf(path, sizeof(path), "%s/upgrade-request.1.json", dir);
	assert_int_equal(fs_write_atomic(path, good, strlen(good), 0600, NULL), 0);
	struct lc_upgrade_request_buf rq;
	struct vm_err err = {0};
	assert_int_equal(lc_upgrade_request_load(path, &rq, &err), 0);
	assert_string_equal(rq.url, "https://h/a?sig=S");
	assert_string_equal(rq.version, "9.9.9");
	assert_true(rq.allow_downgrade);
	assert_string_equal(rq.signature_url, "");
	assert_int_equal(access(path, F_OK), -1); /* consumed */

	assert_int_equal(fs_write_atomic(path, good, strlen(good), 0644, NULL), 0);
	assert_int_not_equal(lc_upgrade_request_load(path, &rq, &err), 0);
	assert_int_equal(err.code, VM_ERR_PERM);

	char target[PATH_MAX + 32];
	snprintf(target, sizeof(target), "%s/target.json", dir);
	assert_int_equal(fs_write_atomic(target, good, strlen(good), 0600, NULL), 0);
	snprintf(link, sizeof(link), "%s/upgrade-request.2.json", dir);
	assert_int_equal(symlink(target, link), 0);
	assert_int_not_equal(lc_upgrade_request_load(link, &rq, &err), 0);
	assert_int_equal(access(target, F_OK), 0);

	assert_int_equal(chmod(dir, 0733), 0);
	assert_int_equal(fs_write_atomic(path, good, strlen(good), 0600, NULL), 0);
	assert_int_not_equal(lc_upgrade_request_load(path, &rq, &err), 0);
	assert_int_equal(err.code, VM_ERR_PERM);

	static const char bad[] = "{\"version\":\"1;reboot\",\"url\":\"https://h/a\","
	                          "\"checksum\":\"sha256:00\"}";
	assert_int_equal(chmod(dir, 0700), 0);
	assert_int_equal(fs_write_atomic(path, bad, strlen(bad), 0600, NULL), 0);
	assert_int_not_equal(lc_upgrade_request_load(path, &rq, &err), 0);
	assert_int_equal(err.code, VM_ERR_INVALID);
}

/* An upgrade killed before it read its request file (the webhook matrix hit
 * it: the unit killed in the first milliseconds) left the file, URL and all,
 * in the runtime dir: the agent's start removes every such file, nothing else
 * there, and nothing from a directory that is not private to it. */
static void test_lifecycle_sweep_requests_removes_only_request_files(void **state)
{
	(void)state;
	char dir[PATH_MAX], p[PATH_MAX + 64];
	snprintf(dir, sizeof(dir), "%s/run", test_dir);
	assert_int_equal(mkdir(dir, 0700), 0);
	static const char *const mine[] = {"upgrade-request.0011223344556677.json",
	                                   "upgrade-request.x.json"};
	static const char *const others[] = {"admin.sock", "upgrade-request.json.keep",
	                                     "upgrade-request.", "xupgrade-request.a.json"};
	for (size_t i = 0; i < 2; i++) {
		snprintf(p, sizeof(p), "%s/%s", dir, mine[i]);
		assert_int_equal(fs_write_atomic(p, "{}", 2, 0600, NULL), 0);
	}
	for (size_t i = 0; i < 4; i++) {
		snprintf(p, sizeof(p), "%s/%s", dir, others[i]);
		assert_int_equal(fs_write_atomic(p, "x", 1, 0600, NULL), 0);
	}
	assert_int_equal(chmod(dir, 0755), 0); /* not private: left alone */
	assert_int_equal(lc_upgrade_sweep_requests(dir), 0);
	assert_int_equal(chmod(dir, 0700), 0);
	assert_int_equal(lc_upgrade_sweep_requests(dir), 2);
	for (size_t i = 0; i < 2; i++) {
		snprintf(p, sizeof(p), "%s/%s", dir, mine[i]);
		assert_int_equal(access(p, F_OK), -1);
	}
	for (size_t i = 0; i < 4; i++) {
		snprintf(p, sizeof(p), "%s/%s", dir, others[i]);
		assert_int_equal(access(p, F_OK), 0);
	}
	assert_int_equal(lc_upgrade_sweep_requests(dir), 0);
	assert_int_equal(lc_upgrade_sweep_requests("relative"), 0);
	snprintf(p, sizeof(p), "%s/missing", test_dir);
	assert_int_equal(lc_upgrade_sweep_requests(p), 0);
}

/* No journal: none; a journal whose lock is held: running; a journal nobody
 * holds the lock for: orphaned (what a running agent watches for). */
static void test_lifecycle_upgrade_state_tells_running_from_orphaned(void **state)
{
	(void)state;
	char j[PATH_MAX], l[PATH_MAX];
	snprintf(j, sizeof(j), "%s/upgrade.journal", test_dir);
	snprintf(l, sizeof(l), "%s/upgrade.lock", test_dir);
	assert_int_equal(lc_upgrade_state(test_dir), LC_UPGRADE_NONE);
	assert_int_equal(fs_write_atomic(j, "{\"phase\":\"swapped\"}", 19, 0600, NULL), 0);
	int fd = open(l, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(flock(fd, LOCK_EX), 0);
	assert_int_equal(lc_upgrade_state(test_dir), LC_UPGRADE_RUNNING);
	close(fd); /* the upgrade died */
	assert_int_equal(lc_upgrade_state(test_dir), LC_UPGRADE_ORPHANED);
	/* looking does not settle it, and leaves the lock free */
	assert_int_equal(lc_upgrade_state(test_dir), LC_UPGRADE_ORPHANED);
	assert_int_equal(unlink(j), 0);
	assert_int_equal(lc_upgrade_state(test_dir), LC_UPGRADE_NONE);
}

static void test_lifecycle_recover_rolls_back_a_swapped_binary(void **state)
{
	(void)state;
	char bin[128], prev[140], journal[160], text[1024];
	snprintf(bin, sizeof(bin), "%s/vm-agent", test_dir);
	snprintf(prev, sizeof(prev), "%s.prev", bin);
	snprintf(journal, sizeof(journal), "%s/upgrade.journal", test_dir);
	char out[256], msg[256];
	assert_int_equal(lc_upgrade_recover(test_dir, out, sizeof(out), msg, sizeof(msg)),
	                 LC_RECOVER_NOTHING);
	write_file(bin, "new");
	write_file(prev, "old");
	snprintf(text, sizeof(text),
	         "{\"phase\":\"swapped\",\"bin\":\"%s\",\"prev\":\"%s\","
	         "\"new\":\"\",\"to\":\"2.0\"}",
	         bin, prev);
	write_file(journal, text);
	assert_int_equal(lc_upgrade_recover(test_dir, out, sizeof(out), msg, sizeof(msg)),
	                 LC_RECOVER_ROLLED_BACK);
	assert_string_equal(out, bin);
	char *data;
	size_t len;
	assert_int_equal(fs_read_file(bin, 64, &data, &len, NULL), 0);
	assert_string_equal(data, "old");
	free(data);
	assert_true(lc_exists(prev));
	assert_false(lc_exists(journal));

	/* before the swap: the download goes, the binary stays */
	char fresh[140];
	snprintf(fresh, sizeof(fresh), "%s/.vm-agent.new.1", test_dir);
	write_file(fresh, "dl");
	snprintf(text, sizeof(text),
	         "{\"phase\":\"verified\",\"bin\":\"%s\",\"prev\":\"%s\","
	         "\"new\":\"%s\",\"to\":\"2.0\"}",
	         bin, prev, fresh);
	write_file(journal, text);
	assert_int_equal(lc_upgrade_recover(test_dir, out, sizeof(out), msg, sizeof(msg)),
	                 LC_RECOVER_CLEANED);
	assert_false(lc_exists(fresh));
	assert_false(lc_exists(journal));
	assert_int_equal(fs_read_file(bin, 64, &data, &len, NULL), 0);
	assert_string_equal(data, "old");
	free(data);
}

static void assert_file_is(const char *path, const char *want)
{
	char *data;
	size_t len;
	assert_int_equal(fs_read_file(path, 4096, &data, &len, NULL), 0);
	assert_string_equal(data, want);
	free(data);
}

/* Recovery of a journal at phase ph naming bin and prev (1.0 -> 2.0). */
static enum lc_recover_result recover_from(const char *ph, const char *bin, const char *prev)
{
	char journal[160], text[1024], out[256], msg[256];
	snprintf(journal, sizeof(journal), "%s/upgrade.journal", test_dir);
	snprintf(text, sizeof(text),
	         "{\"phase\":\"%s\",\"bin\":\"%s\",\"prev\":\"%s\",\"new\":\"\","
	         "\"from\":\"1.0\",\"to\":\"2.0\"}",
	         ph, bin, prev);
	write_file(journal, text);
	return lc_upgrade_recover(test_dir, out, sizeof(out), msg, sizeof(msg));
}

/* The windows the upgrade kill -9 matrix (TestFaultKill9UpgradeMatrix) hit:
 * killed between linking .prev.tmp and renaming it (journal "verified"),
 * between the swap's rename and the "swapped" journal (journal "prev_saved",
 * but the new binary installed), and between the record's rewrite and the
 * journal's removal (record already naming the new version). */
static void test_lifecycle_recover_settles_every_kill_window(void **state)
{
	(void)state;
	char bin[128], prev[140], ptmp[150], journal[160], record[160], text[1024];
	snprintf(bin, sizeof(bin), "%s/vm-agent", test_dir);
	snprintf(prev, sizeof(prev), "%s.prev", bin);
	snprintf(ptmp, sizeof(ptmp), "%s.tmp", prev);
	snprintf(journal, sizeof(journal), "%s/upgrade.journal", test_dir);
	snprintf(record, sizeof(record), "%s/install.json", test_dir);

	/* verified: .prev.tmp (a link to the binary) goes too */
	write_file(bin, "old");
	assert_int_equal(link(bin, ptmp), 0);
	assert_int_equal(recover_from("verified", bin, prev), LC_RECOVER_CLEANED);
	assert_false(lc_exists(ptmp));
	assert_file_is(bin, "old");

	/* prev_saved, but the rename of the new binary happened: rolled back */
	assert_int_equal(link(bin, prev), 0);
	write_file(bin, "new");
	assert_int_equal(recover_from("prev_saved", bin, prev), LC_RECOVER_ROLLED_BACK);
	assert_file_is(bin, "old");
	/* prev_saved before that rename: .prev and the binary are one file, nothing to undo */
	assert_int_equal(recover_from("prev_saved", bin, prev), LC_RECOVER_CLEANED);
	assert_file_is(bin, "old");

	/* swapped, the record already rewritten for the new version: the
	 * record names the restored binary again */
	char old_sum[65];
	assert_int_equal(lc_sha256_hex(bin, old_sum, NULL), 0);
	write_file(bin, "new");
	snprintf(text, sizeof(text),
	         "{\"bin\":\"/usr/local/bin/vm-agent\",\"sha256\":\"%064d\",\"version\":\"2.0\","
	         "\"from_package\":false}",
	         0);
	write_file(record, text);
	assert_int_equal(recover_from("swapped", bin, prev), LC_RECOVER_ROLLED_BACK);
	assert_file_is(bin, "old");
	struct lc_paths *p = calloc(1, sizeof(*p));
	assert_non_null(p);
	snprintf(p->install_record, sizeof(p->install_record), "%s", record);
	struct lc_record rec;
	assert_int_equal(lc_record_read(p, &rec, NULL), 0);
	free(p);
	assert_string_equal(rec.version, "1.0");
	assert_string_equal(rec.sha256, old_sum);
	assert_string_equal(rec.bin, "/usr/local/bin/vm-agent");
	assert_false(lc_exists(journal));
}

/* No temp copy (name.tmp.XXXXXX) is left in dir. */
static void assert_no_temp_left(const char *dir)
{
	DIR *d = opendir(dir);
	assert_non_null(d);
	struct dirent *e;
	while ((e = readdir(d)) != NULL)
		if (strstr(e->d_name, ".tmp.") != NULL)
			fail_msg("temp file left: %s/%s", dir, e->d_name);
	closedir(d);
}

static void test_lifecycle_copy_stops_at_cap_while_copying(void **state)
{
	(void)state;
	char src[128], dst[128], fifo[128];
	snprintf(src, sizeof(src), "%s/src", test_dir);
	snprintf(dst, sizeof(dst), "%s/dst", test_dir);
	snprintf(fifo, sizeof(fifo), "%s/fifo", test_dir);
	static char data[200000];
	memset(data, 'x', sizeof(data));
	assert_int_equal(fs_write_atomic(src, data, sizeof(data), 0600, NULL), 0);
	struct vm_err err = {0};
	/* exactly at the cap is fine; one byte over is not */
	assert_int_equal(fs_copy_file(src, dst, 0600, sizeof(data), &err), 0);
	struct stat st;
	assert_int_equal(stat(dst, &st), 0);
	assert_int_equal(st.st_size, (off_t)sizeof(data));
	unlink(dst);
	assert_int_equal(fs_copy_file(src, dst, 0600, sizeof(data) - 1, &err), -VM_ERR_INVALID);
	assert_non_null(strstr(err.msg, "larger than 199999 bytes"));
	assert_int_not_equal(access(dst, F_OK), 0);
	/* st_size 0, gigabytes to read: stopped by counting */
	assert_int_equal(fs_copy_file("/proc/self/pagemap", dst, 0600, 65536, &err),
	                 -VM_ERR_INVALID);
	assert_non_null(strstr(err.msg, "larger than 65536 bytes"));
	assert_int_not_equal(access(dst, F_OK), 0);
	/* not a regular file: refused on the opened fd, without blocking on a FIFO */
	assert_int_equal(mkfifo(fifo, 0600), 0);
	assert_int_equal(fs_copy_file(fifo, dst, 0600, 65536, &err), -VM_ERR_INVALID);
	assert_non_null(strstr(err.msg, "not a regular file"));
	assert_int_equal(fs_copy_file("/dev/zero", dst, 0600, 65536, &err), -VM_ERR_INVALID);
	assert_no_temp_left(test_dir);
}

static void test_lifecycle_copy_fails_when_write_returns_zero(void **state)
{
	(void)state;
	char src[128], dst[128];
	snprintf(src, sizeof(src), "%s/src", test_dir);
	snprintf(dst, sizeof(dst), "%s/dst", test_dir);
	assert_int_equal(fs_write_atomic(src, "payload", 7, 0600, NULL), 0);
	struct vm_err err = {0};
	fake_write_zero_begin();
	int rc = fs_copy_file(src, dst, 0600, 0, &err);
	fake_write_zero_end();
	assert_int_equal(rc, -VM_ERR_IO);
	assert_int_not_equal(access(dst, F_OK), 0);
	assert_no_temp_left(test_dir);
}

/* The lifecycle commands read credentials.json through the one strict
 * parser (core/cp; before, lifecycle had its own that cut the token at 4095): a token over the
 * limit is an error (never cut), and a file others can read is refused like everywhere else. */
static void test_lifecycle_credentials_strict_never_truncated(void **state)
{
	(void)state;
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/credentials.json", test_dir);
	size_t n = CP_TOKEN_MAX + 100;
	char *doc = malloc(n + 100);
	assert_non_null(doc);
	struct vm_err err = {0};
	struct cp_creds c;
	/* 5000 bytes is within the one limit, and it is kept whole */
	int w = snprintf(doc, n + 100, "{\"agent_id\":\"a-1\",\"token\":\"%0*d\"}", 5000, 7);
	assert_int_equal(fs_write_atomic(path, doc, (size_t)w, 0600, &err), 0);
	assert_int_equal(cp_creds_load(path, &c, &err), 0);
	assert_int_equal(c.token.len, 5000);
	cp_creds_clear(&c);
	/* over the limit: an error naming the token, never a cut */
	w = snprintf(doc, n + 100, "{\"version\":1,\"agent_id\":\"a-1\",\"token\":\"%0*d\"}",
	             (int)n, 7);
	assert_int_equal(fs_write_atomic(path, doc, (size_t)w, 0600, &err), 0);
	assert_int_equal(cp_creds_load(path, &c, &err), -VM_ERR_INVALID);
	assert_non_null(strstr(err.msg, "token"));
	/* a file others can read is refused, as by the health reporter */
	assert_int_equal(fs_write_atomic(path, doc, (size_t)w, 0644, &err), 0);
	assert_int_equal(cp_creds_load(path, &c, &err), -VM_ERR_PERM);
	free(doc);
}

/* One agent per state directory: a second claim fails naming the holder's pid,
 * and a claim made while the holder is exiting waits for it. */
static void test_lifecycle_agent_claim_is_exclusive_and_waits(void **state)
{
	(void)state;
	struct vm_err err = {0};
	int ready[2];
	assert_int_equal(pipe(ready), 0);
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		struct vm_err e = {0};
		char c = lc_agent_claim(test_dir, 0, &e) == 0 ? 'y' : 'n';
		(void)!write(ready[1], &c, 1);
		struct timespec nap = {0, 300 * 1000 * 1000};
		nanosleep(&nap, NULL);
		_exit(0);
	}
	char c = 0;
	assert_int_equal(read(ready[0], &c, 1), 1);
	assert_int_equal(c, 'y');
	close(ready[0]);
	close(ready[1]);
	/* held: refused at once, naming the holder */
	assert_int_equal(lc_agent_claim(test_dir, 0, &err), -VM_ERR_BUSY);
	char want[64];
	snprintf(want, sizeof(want), "pid %ld", (long)child);
	assert_non_null(strstr(err.msg, want));
	/* the holder exits within the wait: the claim is ours, and so is the pid file */
	assert_int_equal(lc_agent_claim(test_dir, 10000, &err), 0);
	int st;
	assert_int_equal(waitpid(child, &st, 0), child);
	char path[PATH_MAX], *text = NULL;
	size_t len;
	snprintf(path, sizeof(path), "%s/agent.pid", test_dir);
	assert_int_equal(fs_read_file(path, 64, &text, &len, &err), 0);
	assert_int_equal(strtol(text, NULL, 10), (long)getpid());
	free(text);
	/* still ours while this process lives */
	snprintf(path, sizeof(path), "%s/agent.lock", test_dir);
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(flock(fd, LOCK_EX | LOCK_NB), -1);
	close(fd);
	assert_int_equal(lc_agent_claim(test_dir, 100, &err), -VM_ERR_BUSY);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_lifecycle_version_order),
	    cmocka_unit_test(test_lifecycle_cfg_edit_roundtrip_validates_and_quotes),
	    cmocka_unit_test_setup_teardown(
	        test_lifecycle_cfg_write_keeps_backup_and_refuses_invalid, test_dir_setup,
	        test_dir_teardown),
	    cmocka_unit_test_setup_teardown(
	        test_lifecycle_unit_template_has_the_binary_and_hardening, test_dir_setup,
	        test_dir_teardown),
	    cmocka_unit_test(test_lifecycle_remote_upgrade_request_is_checked),
	    cmocka_unit_test_setup_teardown(
	        test_lifecycle_upgrade_request_file_private_and_consumed, test_dir_setup,
	        test_dir_teardown),
	    cmocka_unit_test_setup_teardown(test_lifecycle_sweep_requests_removes_only_request_files,
	                                    test_dir_setup, test_dir_teardown),
	    cmocka_unit_test_setup_teardown(test_lifecycle_spawn_detached_runs_in_its_own_session,
	                                    test_dir_setup, test_dir_teardown),
	    cmocka_unit_test_setup_teardown(test_lifecycle_recover_settles_every_kill_window,
	                                    test_dir_setup, test_dir_teardown),
	    cmocka_unit_test_setup_teardown(test_lifecycle_upgrade_state_tells_running_from_orphaned,
	                                    test_dir_setup, test_dir_teardown),
	    cmocka_unit_test_setup_teardown(test_lifecycle_recover_rolls_back_a_swapped_binary,
	                                    test_dir_setup, test_dir_teardown),
	    cmocka_unit_test_setup_teardown(test_lifecycle_copy_stops_at_cap_while_copying,
	                                    test_dir_setup, test_dir_teardown),
	    cmocka_unit_test_setup_teardown(test_lifecycle_credentials_strict_never_truncated,
	                                    test_dir_setup, test_dir_teardown),
	    cmocka_unit_test_setup_teardown(test_lifecycle_copy_fails_when_write_returns_zero,
	                                    test_dir_setup, test_dir_teardown),
	    cmocka_unit_test_setup_teardown(test_lifecycle_agent_claim_is_exclusive_and_waits,
	                                    test_dir_setup, test_dir_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
