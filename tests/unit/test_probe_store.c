/* Unit tests for the executor's persistence: recovery of unfinished records as
 * interrupted, the idempotency index across restarts, retention, and the queue
 * limit. They run the real executor on a temporary work_dir. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/budget.h"
#include "core/codec.h"
#include "core/fs.h"
#include "probe/internal.h"

static char *const no_env[] = {NULL};

static struct cfg *make_cfg(const char *extra)
{
	static char dir[64];
	snprintf(dir, sizeof(dir), "/tmp/vma-probe-test-XXXXXX");
	assert_non_null(mkdtemp(dir));
	char yaml[1024];
	snprintf(yaml, sizeof(yaml), "agent:\n  state_dir: %s\nprobe:\n  cancel_grace: 100ms\n%s",
	         dir, extra);
	struct cfg *c = malloc(sizeof(*c));
	struct vm_err err = {0};
	if (cfg_load_buffer(c, "t.yaml", yaml, strlen(yaml), no_env, &err) != 0)
		fail_msg("%s", err.msg);
	return c;
}

static void rm_tree(const struct cfg *c)
{
	char cmd[PATH_MAX + 16];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", c->agent.state_dir);
	assert_int_equal(system(cmd), 0);
}

static const char *state_of(json_t *rec)
{
	return json_string_value(json_object_get(rec, "state"));
}

/* Polls until the probe leaves queued/running (bounded: 10 s). */
static json_t *wait_done(struct probe_exec *ex, const char *id)
{
	for (int i = 0; i < 1000; i++) {
		json_t *rec = probe_get(ex, id);
		assert_non_null(rec);
		const char *s = state_of(rec);
		if (strcmp(s, "queued") != 0 && strcmp(s, "running") != 0)
			return rec;
		json_decref(rec);
		usleep(10000);
	}
	fail_msg("probe %s did not finish", id);
	return NULL;
}

/* Polls until a worker took the probe (bounded: 5 s). */
static void wait_running(struct probe_exec *ex, const char *id)
{
	for (int i = 0; i < 500; i++) {
		json_t *rec = probe_get(ex, id);
		bool running = strcmp(state_of(rec), "running") == 0;
		json_decref(rec);
		if (running)
			return;
		usleep(10000);
	}
	fail_msg("probe %s never ran", id);
}

static int submit_as(struct probe_exec *ex, const char *sub, const char *body,
                     struct probe_submit_out *out)
{
	struct vm_err err = {0};
	struct probe_caller who = {"tenant-a", sub, NULL, NULL, NULL};
	int rc = probe_submit(ex, body, strlen(body), &who, out, &err);
	json_decref(out->record);
	out->record = NULL;
	return rc;
}

static int submit(struct probe_exec *ex, const char *body, struct probe_submit_out *out)
{
	return submit_as(ex, "operator", body, out);
}

static void collect_id(void *ctx, const char *id)
{
	char *seen = ctx;
	size_t n = strlen(seen);
	snprintf(seen + n, 64 - n, "|%s", id);
}

static int admit_no(void *ctx)
{
	(*(int *)ctx)++;
	return -1;
}

/* The caller's admit (the webhook: the audit line's flush) fails: the probe
 * is accepted on disk, so its record ends failed, and no step runs. */
static void test_probe_store_admit_refused_never_runs(void **state)
{
	(void)state;
	struct cfg *c = make_cfg("");
	struct vm_err err = {0};
	struct probe_exec *ex = probe_exec_start(c, NULL, NULL, &err);
	assert_non_null(ex);
	char mark[PATH_MAX + 16];
	snprintf(mark, sizeof(mark), "%s/ran", c->agent.state_dir);
	char body[PATH_MAX + 128];
	snprintf(body, sizeof(body),
	         "{\"steps\":[{\"type\":\"exec\",\"argv\":[\"/usr/bin/touch\",\"%s\"]}]}",
	         mark);
	int calls = 0;
	struct probe_caller who = {"tenant-a", "operator", NULL, admit_no, &calls};
	struct probe_submit_out out;
	assert_int_equal(probe_submit(ex, body, strlen(body), &who, &out, &err), PROBE_E_ADMIT);
	assert_int_equal(calls, 1);
	assert_null(out.record);
	assert_true(out.id[0] != '\0');
	json_t *rec = wait_done(ex, out.id);
	assert_string_equal(state_of(rec), "failed");
	assert_string_equal(
	    json_string_value(json_object_get(json_array_get(json_object_get(rec, "steps"), 0),
	                                      "status")),
	    "skipped");
	json_decref(rec);
	probe_exec_stop(ex);
	assert_int_not_equal(access(mark, F_OK), 0);
	/* durable as failed: a restart finds it finished, not interrupted */
	ex = probe_exec_start(c, NULL, NULL, &err);
	assert_non_null(ex);
	rec = probe_get(ex, out.id);
	assert_string_equal(state_of(rec), "failed");
	json_decref(rec);
	probe_exec_stop(ex);
	rm_tree(c);
	free(c);
}

static void test_probe_store_unfinished_records_become_interrupted(void **state)
{
	(void)state;
	struct cfg *c = make_cfg("");
	char runs[PATH_MAX + 8];
	snprintf(runs, sizeof(runs), "%s/runs", c->probe.work_dir);
	struct vm_err err = {0};
	assert_int_equal(fs_mkdir_p(runs, 0700, &err), 0);
	const char *running =
	    "{\"id\":\"p-000000000001-aa\",\"state\":\"running\",\"created_ms\":1,"
	    "\"steps\":[{\"index\":0,\"status\":\"running\"},"
	    "{\"index\":1,\"status\":\"pending\"}]}";
	const char *queued = "{\"id\":\"p-000000000002-aa\",\"state\":\"queued\",\"created_ms\":2,"
	                     "\"steps\":[{\"index\":0,\"status\":\"pending\"}]}";
	assert_int_equal(probe_store_write(runs, "p-000000000001-aa", running, &err), 0);
	assert_int_equal(probe_store_write(runs, "p-000000000002-aa", queued, &err), 0);
	/* junk in the directory is not fatal: it is moved aside (quarantine/) */
	assert_int_equal(probe_store_write(runs, "p-000000000003-aa", "not json", &err), 0);
	char moved[PATH_MAX + 64];
	snprintf(moved, sizeof(moved), "%s/quarantine/p-000000000003-aa.json", runs);

	struct probe_exec *ex = probe_exec_start(c, NULL, NULL, &err);
	assert_non_null(ex);
	assert_int_equal(access(moved, F_OK), 0);
	uint64_t failures, quarantined;
	probe_store_health(ex, &failures, &quarantined);
	assert_int_equal(quarantined, 1);
	json_t *rec = probe_get(ex, "p-000000000001-aa");
	assert_non_null(rec);
	assert_string_equal(state_of(rec), "interrupted");
	json_t *steps = json_object_get(rec, "steps");
	assert_string_equal(json_string_value(json_object_get(json_array_get(steps, 0), "status")),
	                    "interrupted");
	assert_string_equal(json_string_value(json_object_get(json_array_get(steps, 1), "status")),
	                    "skipped");
	json_decref(rec);
	rec = probe_get(ex, "p-000000000002-aa");
	assert_string_equal(state_of(rec), "interrupted");
	json_decref(rec);
	/* the webhook audits both, once */
	char seen[64] = "";
	assert_int_equal(probe_exec_take_interrupted(ex, collect_id, seen), 0);
	assert_true(strstr(seen, "|p-000000000001-aa") != NULL);
	assert_true(strstr(seen, "|p-000000000002-aa") != NULL);
	assert_int_equal(strlen(seen), 2 * strlen("|p-000000000001-aa"));
	seen[0] = '\0';
	assert_int_equal(probe_exec_take_interrupted(ex, collect_id, seen), 0);
	assert_string_equal(seen, "");
	probe_exec_stop(ex);

	/* the change is on disk: a second start sees interrupted, not running */
	rec = probe_store_read(runs, "p-000000000001-aa", 1 << 20);
	assert_string_equal(state_of(rec), "interrupted");
	json_decref(rec);
	rm_tree(c);
	free(c);
}

static void test_probe_store_idempotency_survives_restart(void **state)
{
	(void)state;
	struct cfg *c = make_cfg("");
	struct vm_err err = {0};
	struct probe_exec *ex = probe_exec_start(c, NULL, NULL, &err);
	assert_non_null(ex);
	const char *body =
	    "{\"idempotency_key\":\"abc\",\"steps\":[{\"type\":\"exec\",\"argv\":[\"true\"]}]}";
	struct probe_submit_out out, again;
	assert_int_equal(submit(ex, body, &out), PROBE_CREATED);
	json_decref(wait_done(ex, out.id));
	assert_int_equal(submit(ex, body, &again), PROBE_EXISTING);
	assert_string_equal(again.id, out.id);
	probe_exec_stop(ex);

	ex = probe_exec_start(c, NULL, NULL, &err);
	assert_non_null(ex);
	assert_int_equal(submit(ex, body, &again), PROBE_EXISTING);
	assert_string_equal(again.id, out.id);
	const char *other =
	    "{\"idempotency_key\":\"abc\",\"steps\":[{\"type\":\"exec\",\"argv\":[\"false\"]}]}";
	assert_int_equal(submit(ex, other, &again), PROBE_E_CONFLICT);
	json_t *rec = probe_get(ex, out.id);
	assert_string_equal(state_of(rec), "succeeded");
	json_decref(rec);
	probe_exec_stop(ex);
	rm_tree(c);
	free(c);
}

static int count_records(const struct cfg *c)
{
	char runs[PATH_MAX + 8];
	snprintf(runs, sizeof(runs), "%s/runs", c->probe.work_dir);
	DIR *d = opendir(runs);
	assert_non_null(d);
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL)
		n += strstr(de->d_name, ".json") != NULL && strstr(de->d_name, ".tmp") == NULL;
	closedir(d);
	return n;
}

static void test_probe_store_retention_by_count(void **state)
{
	(void)state;
	struct cfg *c = make_cfg("  retention_count: 2\n");
	struct vm_err err = {0};
	struct probe_exec *ex = probe_exec_start(c, NULL, NULL, &err);
	assert_non_null(ex);
	char ids[4][PROBE_ID_MAX];
	for (int i = 0; i < 4; i++) {
		struct probe_submit_out out;
		assert_int_equal(
		    submit(ex, "{\"steps\":[{\"type\":\"exec\",\"argv\":[\"true\"]}]}", &out),
		    PROBE_CREATED);
		json_decref(wait_done(ex, out.id));
		snprintf(ids[i], sizeof(ids[i]), "%s", out.id);
	}
	/* the final state is visible a moment before the record is written and
	 * retention runs: poll (bounded) */
	json_t *list = NULL;
	for (int i = 0; i < 200; i++) {
		json_decref(list);
		list = probe_list(ex, NULL, 100);
		if (json_array_size(list) == 2)
			break;
		usleep(10000);
	}
	assert_int_equal(json_array_size(list), 2);
	assert_string_equal(json_string_value(json_object_get(json_array_get(list, 0), "id")),
	                    ids[3]);
	json_decref(list);
	assert_null(probe_get(ex, ids[0]));
	json_t *last = probe_get(ex, ids[3]); /* from the journal: no file yet */
	assert_non_null(last);
	assert_string_equal(json_string_value(json_object_get(last, "state")), "succeeded");
	json_decref(last);
	/* finished records stay in the journal until the checkpoint (a clean stop
	 * is one): then only the retained ones get a file */
	probe_exec_stop(ex);
	assert_int_equal(count_records(c), 2);
	rm_tree(c);
	free(c);
}

static void test_probe_store_queue_limit_and_shutdown_interrupts(void **state)
{
	(void)state;
	struct cfg *c = make_cfg("  max_concurrent: 1\n  queue_size: 1\n");
	struct vm_err err = {0};
	struct probe_exec *ex = probe_exec_start(c, NULL, NULL, &err);
	assert_non_null(ex);
	const char *slow = "{\"steps\":[{\"type\":\"exec\",\"argv\":[\"sleep\",\"30\"]}]}";
	struct probe_submit_out a, b, full;
	assert_int_equal(submit(ex, slow, &a), PROBE_CREATED);
	wait_running(ex, a.id);
	assert_int_equal(submit(ex, slow, &b), PROBE_CREATED);
	assert_int_equal(submit(ex, slow, &full), PROBE_E_FULL);
	probe_exec_stop(ex); /* interrupts both within cancel_grace */

	ex = probe_exec_start(c, NULL, NULL, &err);
	json_t *rec = probe_get(ex, a.id);
	assert_string_equal(state_of(rec), "interrupted");
	json_decref(rec);
	rec = probe_get(ex, b.id);
	assert_string_equal(state_of(rec), "interrupted");
	json_decref(rec);
	probe_exec_stop(ex);
	rm_tree(c);
	free(c);
}

/* limits.max_concurrent: with every slot held (a shell, say), a probe stays
 * queued, a queued one can still be canceled, and a released slot runs the
 * next; stopping with a probe waiting for a slot does not hang. */
static void test_probe_store_probe_waits_queued_for_a_budget_slot(void **state)
{
	(void)state;
	struct cfg *c = make_cfg("  max_concurrent: 2\n");
	struct vm_err err = {0};
	struct budget *b = budget_new(1, &err);
	assert_non_null(b);
	assert_true(budget_try_take(b)); /* the shell's slot */
	struct probe_exec *ex = probe_exec_start(c, NULL, b, &err);
	assert_non_null(ex);
	const char *quick = "{\"steps\":[{\"type\":\"exec\",\"argv\":[\"true\"]}]}";
	struct probe_submit_out p1, p2, p3;
	assert_int_equal(submit(ex, quick, &p1), PROBE_CREATED);
	assert_int_equal(submit(ex, quick, &p2), PROBE_CREATED);
	usleep(300 * 1000);
	json_t *rec = probe_get(ex, p1.id);
	assert_string_equal(state_of(rec), "queued");
	json_decref(rec);
	assert_int_equal(probe_cancel(ex, p2.id, &rec), PROBE_CANCEL_OK);
	json_decref(rec);
	uint64_t queued, running;
	probe_queue_depth(ex, &queued, &running);
	assert_int_equal(running, 0);

	budget_give(b); /* the shell ended */
	rec = wait_done(ex, p1.id);
	assert_string_equal(state_of(rec), "succeeded");
	json_decref(rec);
	rec = probe_get(ex, p2.id);
	assert_string_equal(state_of(rec), "canceled");
	json_decref(rec);
	int used, limit;
	budget_usage(b, &used, &limit);
	assert_int_equal(used, 0); /* the probe gave its slot back */

	assert_true(budget_try_take(b));
	assert_int_equal(submit(ex, quick, &p3), PROBE_CREATED);
	probe_exec_stop(ex); /* p3 waits for a slot: recorded interrupted, no hang */
	ex = probe_exec_start(c, NULL, b, &err);
	rec = probe_get(ex, p3.id);
	assert_string_equal(state_of(rec), "interrupted");
	json_decref(rec);
	probe_exec_stop(ex);
	budget_free(b);
	rm_tree(c);
	free(c);
}

static void test_probe_store_idempotency_key_scoped_by_subject(void **state)
{
	(void)state;
	struct cfg *c = make_cfg("");
	struct vm_err err = {0};
	struct probe_exec *ex = probe_exec_start(c, NULL, NULL, &err);
	assert_non_null(ex);
	const char *body =
	    "{\"idempotency_key\":\"k\",\"steps\":[{\"type\":\"exec\",\"argv\":[\"true\"]}]}";
	struct probe_submit_out mine, theirs, again;
	assert_int_equal(submit_as(ex, "alice", body, &mine), PROBE_CREATED);
	assert_int_equal(submit_as(ex, "mallory", body, &theirs), PROBE_CREATED);
	assert_string_not_equal(theirs.id, mine.id);
	assert_int_equal(submit_as(ex, "alice", body, &again), PROBE_EXISTING);
	assert_string_equal(again.id, mine.id);
	json_decref(wait_done(ex, mine.id));
	json_decref(wait_done(ex, theirs.id));
	probe_exec_stop(ex);
	ex = probe_exec_start(c, NULL, NULL, &err); /* the scope survives a restart */
	assert_non_null(ex);
	assert_int_equal(submit_as(ex, "mallory", body, &again), PROBE_EXISTING);
	assert_string_equal(again.id, theirs.id);
	probe_exec_stop(ex);
	rm_tree(c);
	free(c);
}

/* Output larger than what stays in memory goes through the spill file and is
 * spliced back into the final record byte for byte (text with escapes, and
 * base64 of a read). */
static void test_probe_store_spilled_output_reads_back(void **state)
{
	(void)state;
	struct cfg *c = make_cfg("");
	struct vm_err err = {0};
	char src[PATH_MAX + 16];
	snprintf(src, sizeof(src), "%s/src", c->agent.state_dir);
	size_t n = 200001; /* not a multiple of 3 or of any chunk */
	char *data = malloc(n);
	for (size_t i = 0; i < n; i++)
		data[i] = (char)(i * 31 + 7);
	assert_int_equal(fs_write_atomic(src, data, n, 0600, &err), 0);
	struct probe_exec *ex = probe_exec_start(c, NULL, NULL, &err);
	assert_non_null(ex);
	char body[PATH_MAX + 512];
	snprintf(body, sizeof(body),
	         "{\"steps\":[{\"type\":\"script\",\"body\":\"i=0; while [ $i -lt 20000 ]; do "
	         "printf 'a\\\\\\\\b\\\"c\\\\n'; i=$((i+1)); done\"},"
	         "{\"type\":\"file.read\",\"path\":\"%s\"}]}",
	         src);
	struct probe_submit_out out;
	assert_int_equal(submit(ex, body, &out), PROBE_CREATED);
	json_t *rec = wait_done(ex, out.id);
	json_decref(rec);
	/* the final state shows a moment before the record is on disk: poll */
	for (int i = 0; i < 500; i++) {
		rec = probe_get(ex, out.id);
		if (rec != NULL && json_object_get(json_array_get(json_object_get(rec, "steps"), 1),
		                                   "content_b64") != NULL)
			break;
		json_decref(rec);
		rec = NULL;
		usleep(10000);
	}
	assert_non_null(rec);
	assert_string_equal(state_of(rec), "succeeded");
	json_t *steps = json_object_get(rec, "steps");
	const char *out0 = json_string_value(json_object_get(json_array_get(steps, 0), "stdout"));
	assert_non_null(out0);
	assert_int_equal(strlen(out0), 20000 * 6);
	assert_memory_equal(out0, "a\\b\"c\n", 6);
	const char *b64 =
	    json_string_value(json_object_get(json_array_get(steps, 1), "content_b64"));
	assert_non_null(b64);
	uint8_t *dec = malloc(b64_decoded_max(strlen(b64)));
	assert_int_equal(b64_decode(b64, strlen(b64), dec, 0), (long)n);
	assert_memory_equal(dec, data, n);
	free(dec);
	json_decref(rec);
	probe_exec_stop(ex);
	char spill[PATH_MAX + 64];
	snprintf(spill, sizeof(spill), "%s/runs/%s.spill", c->probe.work_dir, out.id);
	assert_int_not_equal(access(spill, F_OK), 0);
	free(data);
	rm_tree(c);
	free(c);
}

static void copy_file(const char *from, const char *to)
{
	char cmd[2 * PATH_MAX + 128];
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", from, to);
	assert_int_equal(system(cmd), 0);
}

/* An empty journal starts with a zero header (the file stays pre-zeroed). */
static bool journal_empty(const char *path)
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	uint32_t magic = 1;
	assert_int_equal(fread(&magic, sizeof(magic), 1, f), 1);
	fclose(f);
	return magic == 0;
}

/* Flips a byte of the journal entry holding text, as a torn write would. */
static void tear_entry(const char *path, const char *text)
{
	FILE *f = fopen(path, "r+b");
	assert_non_null(f);
	static char buf[64 * 1024];
	size_t n = fread(buf, 1, sizeof(buf), f);
	char *hit = memmem(buf, n, text, strlen(text));
	assert_non_null(hit);
	assert_int_equal(fseek(f, (long)(hit - buf) + 2, SEEK_SET), 0);
	assert_int_equal(fputc('X', f), 'X');
	fclose(f);
}

/* Writes n records through the committer and keeps a copy of the journal as
 * a crash would leave it (in saved), then stops (a clean stop checkpoints). */
static void write_then_save_journal(const char *dir, const char *const *ids,
                                    const char *const *texts, int n, char *saved, size_t cap)
{
	struct vm_err err = {0};
	struct probe_committer *c = probe_committer_start(dir, &err);
	assert_non_null(c);
	for (int i = 0; i < n; i++)
		assert_int_equal(probe_committer_write(c, ids[i], texts[i], &err), 0);
	char j[PATH_MAX];
	snprintf(j, sizeof(j), "%s/journal", dir);
	snprintf(saved, cap, "%s.saved", dir);
	copy_file(j, saved);
	probe_committer_stop(c);
}

/* A batch's records are durable through the journal alone (one fdatasync):
 * after a crash that lost the record files (renames not yet on disk), the
 * replay brings back the newest acknowledged version of each. */
static void test_probe_store_journal_replays_lost_records(void **state)
{
	(void)state;
	char dir[] = "/tmp/vma-journal-XXXXXX";
	assert_non_null(mkdtemp(dir));
	struct vm_err err = {0};
	static const char *const ids[] = {"p-1", "p-1", "p-2"};
	static const char *const texts[] = {"{\"v\":1}", "{\"v\":2}", "{\"v\":3}"};
	char j[PATH_MAX], saved[PATH_MAX], rec[PATH_MAX];
	write_then_save_journal(dir, ids, texts, 3, saved, sizeof(saved));
	snprintf(j, sizeof(j), "%s/journal", dir);
	assert_true(journal_empty(j)); /* a clean stop checkpoints */
	snprintf(rec, sizeof(rec), "%s/p-1.json", dir);
	assert_int_equal(unlink(rec), 0);
	snprintf(rec, sizeof(rec), "%s/p-2.json", dir);
	assert_int_equal(truncate(rec, 0), 0); /* renamed, data lost */
	copy_file(saved, j);
	int replayed = -1;
	assert_int_equal(probe_store_recover(dir, &replayed, &err), 0);
	assert_int_equal(replayed, 2);
	json_t *r1 = probe_store_read(dir, "p-1", 1024), *r2 = probe_store_read(dir, "p-2", 1024);
	assert_non_null(r1);
	assert_non_null(r2);
	assert_int_equal(json_integer_value(json_object_get(r1, "v")), 2);
	assert_int_equal(json_integer_value(json_object_get(r2, "v")), 3);
	json_decref(r1);
	json_decref(r2);
	assert_true(journal_empty(j));
	/* a torn tail is ignored, the entries before it still count */
	copy_file(saved, j);
	tear_entry(j, "{\"v\":3}");
	snprintf(rec, sizeof(rec), "%s/p-1.json", dir);
	assert_int_equal(unlink(rec), 0);
	snprintf(rec, sizeof(rec), "%s/p-2.json", dir);
	assert_int_equal(unlink(rec), 0);
	assert_int_equal(probe_store_recover(dir, &replayed, &err), 0);
	assert_int_equal(replayed, 1);
	r1 = probe_store_read(dir, "p-1", 1024);
	assert_non_null(r1);
	assert_int_equal(json_integer_value(json_object_get(r1, "v")), 2);
	json_decref(r1);
	assert_null(probe_store_read(dir, "p-2", 1024));
	unlink(saved);
	char cmd[PATH_MAX + 16];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

/* A record written later the direct way (the failure record after a failed
 * final write) is never replaced by the journal's older copy. */
static void test_probe_store_journal_keeps_newer_direct_record(void **state)
{
	(void)state;
	char dir[] = "/tmp/vma-journal-XXXXXX";
	assert_non_null(mkdtemp(dir));
	struct vm_err err = {0};
	static const char *const ids[] = {"p-1"};
	static const char *const texts[] = {"{\"v\":1}"};
	char j[PATH_MAX], saved[PATH_MAX];
	write_then_save_journal(dir, ids, texts, 1, saved, sizeof(saved));
	snprintf(j, sizeof(j), "%s/journal", dir);
	assert_int_equal(probe_store_write(dir, "p-1", "{\"v\":9}", &err), 0);
	copy_file(saved, j);
	int replayed = -1;
	assert_int_equal(probe_store_recover(dir, &replayed, &err), 0);
	assert_int_equal(replayed, 0);
	json_t *r = probe_store_read(dir, "p-1", 1024);
	assert_non_null(r);
	assert_int_equal(json_integer_value(json_object_get(r, "v")), 9);
	json_decref(r);
	unlink(saved);
	char cmd[PATH_MAX + 16];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

/* Past 4 MiB of journal the writer checkpoints: the records it renamed are
 * made durable, a journal-only record (an unfinished probe's) gets its file
 * from the journal copy, and the journal starts again from empty. */
static void test_probe_store_journal_checkpoint_writes_journal_only_records(void **state)
{
	(void)state;
	char dir[] = "/tmp/vma-journal-XXXXXX";
	assert_non_null(mkdtemp(dir));
	struct vm_err err = {0};
	struct probe_committer *c = probe_committer_start(dir, &err);
	assert_non_null(c);
	assert_int_equal(probe_committer_log(c, "p-log", "{\"v\":7}", &err), 0);
	json_t *none = probe_store_read(dir, "p-log", 1024);
	assert_null(none); /* durable in the journal only, so far */
	size_t n = 64 * 1024;
	char *big = malloc(n + 16);
	snprintf(big, 16, "{\"pad\":\"");
	memset(big + 8, 'x', n - 10);
	memcpy(big + n - 2, "\"}", 3);
	for (int i = 0; i < 80; i++) { /* 5 MiB */
		char id[32];
		snprintf(id, sizeof(id), "p-big-%d", i);
		assert_int_equal(probe_committer_write(c, id, big, &err), 0);
	}
	/* the writes after the checkpoint start a new journal: p-log is not in it */
	char j[PATH_MAX];
	snprintf(j, sizeof(j), "%s/journal", dir);
	FILE *f = fopen(j, "rb");
	assert_non_null(f);
	char *head = malloc(2 << 20);
	size_t got = fread(head, 1, 2 << 20, f);
	fclose(f);
	assert_null(memmem(head, got, "p-log", 5));
	free(head);
	json_t *r = probe_store_read(dir, "p-log", 1024);
	assert_non_null(r);
	assert_int_equal(json_integer_value(json_object_get(r, "v")), 7);
	json_decref(r);
	r = probe_store_read(dir, "p-big-79", 2 * n);
	assert_non_null(r);
	json_decref(r);
	probe_committer_stop(c);
	free(big);
	char cmd[PATH_MAX + 16];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

/* Polls (bounded: 5 s) until the journal holds id's record in state st. */
static void wait_journal_state(const char *runs, const char *id, const char *st)
{
	char j[PATH_MAX + 32], want[256];
	snprintf(j, sizeof(j), "%s/journal", runs);
	snprintf(want, sizeof(want), "{\"id\":\"%s\",\"state\":\"%s\"", id, st);
	static char buf[1 << 20];
	for (int i = 0; i < 500; i++) {
		FILE *f = fopen(j, "rb");
		assert_non_null(f);
		size_t n = fread(buf, 1, sizeof(buf), f);
		fclose(f);
		if (memmem(buf, n, want, strlen(want)) != NULL)
			return;
		usleep(10000);
	}
	fail_msg("the journal never held %s", want);
}

/* While a worker runs a step, the start of the next queued probe's step 0 is
 * written ahead. A crash then reports that step interrupted (it may have
 * run), never skipped; a cancel before it runs still ends it canceled with
 * step 0 skipped, also after a restart (the final record is the newer). */
static void test_probe_store_step_start_written_ahead(void **state)
{
	(void)state;
	struct cfg *c = make_cfg("  max_concurrent: 1\n");
	struct vm_err err = {0};
	struct probe_exec *ex = probe_exec_start(c, NULL, NULL, &err);
	assert_non_null(ex);
	const char *two = "{\"steps\":[{\"type\":\"exec\",\"argv\":[\"sleep\",\"0.3\"]},"
	                  "{\"type\":\"exec\",\"argv\":[\"sleep\",\"30\"]}]}";
	const char *quick = "{\"steps\":[{\"type\":\"exec\",\"argv\":[\"true\"]}]}";
	struct probe_submit_out a, b, d;
	assert_int_equal(submit(ex, two, &a), PROBE_CREATED);
	wait_running(ex, a.id);
	assert_int_equal(submit(ex, quick, &b), PROBE_CREATED);
	assert_int_equal(submit(ex, quick, &d), PROBE_CREATED);
	char runs[PATH_MAX + 8], j[PATH_MAX + 32], saved[PATH_MAX + 32], rec_path[PATH_MAX + 96];
	snprintf(runs, sizeof(runs), "%s/runs", c->probe.work_dir);
	/* a's step 1 started: b (the queue's head) is written ahead, d is not */
	wait_journal_state(runs, b.id, "running");
	json_t *rec = probe_get(ex, b.id);
	assert_string_equal(state_of(rec), "queued"); /* nothing visible before it runs */
	json_decref(rec);
	snprintf(j, sizeof(j), "%s/journal", runs);
	snprintf(saved, sizeof(saved), "%s.saved", runs);
	copy_file(j, saved); /* as a crash would leave it */
	assert_int_equal(probe_cancel(ex, b.id, &rec), PROBE_CANCEL_OK);
	json_decref(rec);
	probe_exec_stop(ex);

	ex = probe_exec_start(c, NULL, NULL, &err);
	assert_non_null(ex);
	rec = probe_get(ex, b.id);
	assert_string_equal(state_of(rec), "canceled");
	assert_string_equal(json_string_value(json_object_get(
	                        json_array_get(json_object_get(rec, "steps"), 0), "status")),
	                    "skipped");
	json_decref(rec);
	probe_exec_stop(ex);

	/* the crash: the journal as saved, the record files not yet written */
	copy_file(saved, j);
	const char *ids[] = {a.id, b.id, d.id};
	for (int i = 0; i < 3; i++) {
		snprintf(rec_path, sizeof(rec_path), "%s/%s.json", runs, ids[i]);
		(void)unlink(rec_path);
	}
	ex = probe_exec_start(c, NULL, NULL, &err);
	assert_non_null(ex);
	/* step 0 of a ran, b's was written ahead, d's was not */
	const char *want[] = {"succeeded", "interrupted", "skipped"};
	for (int i = 0; i < 3; i++) {
		rec = probe_get(ex, ids[i]);
		assert_non_null(rec);
		assert_string_equal(state_of(rec), "interrupted");
		assert_string_equal(json_string_value(json_object_get(
		                        json_array_get(json_object_get(rec, "steps"), 0), "status")),
		                    want[i]);
		json_decref(rec);
	}
	probe_exec_stop(ex);
	unlink(saved);
	rm_tree(c);
	free(c);
}

/* A final record too large for a journal entry is written the direct way:
 * neither GET nor the checkpoint may then take the probe's older journal-only
 * record (its step start) for the current one. */
struct done_wait {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done;
	int rc;
};

static void on_done_signal(void *ctx, int rc, const char *msg)
{
	(void)msg;
	struct done_wait *w = ctx;
	pthread_mutex_lock(&w->mu);
	w->done = true;
	w->rc = rc;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

static void test_probe_store_journal_large_final_record_supersedes_log(void **state)
{
	(void)state;
	char dir[] = "/tmp/vma-journal-XXXXXX";
	assert_non_null(mkdtemp(dir));
	struct vm_err err = {0};
	struct probe_committer *c = probe_committer_start(dir, &err);
	assert_non_null(c);
	if (!probe_committer_journaled(c))
		fail_msg("no journal in %s (disk nearly full?)", dir);
	assert_int_equal(probe_committer_log(c, "p-x", "{\"v\":1}", &err), 0);
	size_t n = (2u << 20) + 16; /* over an entry's 1 MiB */
	char *big = malloc(n + 16);
	assert_non_null(big);
	snprintf(big, 16, "{\"pad\":\"");
	memset(big + 8, 'x', n - 10);
	memcpy(big + n - 2, "\"}", 3);
	struct done_wait w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, -1};
	assert_int_equal(probe_committer_log_stream_async(c, "p-x", probe_write_text, big, true,
	                                                  on_done_signal, &w),
	                 0);
	pthread_mutex_lock(&w.mu);
	while (!w.done)
		pthread_cond_wait(&w.cv, &w.mu);
	pthread_mutex_unlock(&w.mu);
	assert_int_equal(w.rc, 0);
	json_t *r = probe_committer_read(c, dir, "p-x", 4 * n);
	assert_non_null(r);
	assert_non_null(json_object_get(r, "pad"));
	json_decref(r);
	probe_committer_stop(c); /* checkpoints */
	r = probe_store_read(dir, "p-x", 4 * n);
	assert_non_null(r);
	assert_non_null(json_object_get(r, "pad"));
	json_decref(r);
	free(big);
	char cmd[PATH_MAX + 16];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_probe_store_unfinished_records_become_interrupted),
	    cmocka_unit_test(test_probe_store_admit_refused_never_runs),
	    cmocka_unit_test(test_probe_store_idempotency_survives_restart),
	    cmocka_unit_test(test_probe_store_retention_by_count),
	    cmocka_unit_test(test_probe_store_queue_limit_and_shutdown_interrupts),
	    cmocka_unit_test(test_probe_store_idempotency_key_scoped_by_subject),
	    cmocka_unit_test(test_probe_store_probe_waits_queued_for_a_budget_slot),
	    cmocka_unit_test(test_probe_store_spilled_output_reads_back),
	    cmocka_unit_test(test_probe_store_journal_replays_lost_records),
	    cmocka_unit_test(test_probe_store_journal_keeps_newer_direct_record),
	    cmocka_unit_test(test_probe_store_journal_checkpoint_writes_journal_only_records),
	    cmocka_unit_test(test_probe_store_journal_large_final_record_supersedes_log),
	    cmocka_unit_test(test_probe_store_step_start_written_ahead),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
