/* Probe internals: the typed request (request.c), the step
 * table (steps.c, one file per type in steps/) and the persistence helpers (store.c) the executor
 * uses. */
#ifndef VMA_PROBE_INTERNAL_H
#define VMA_PROBE_INTERNAL_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/cgroup.h"
#include "core/codec.h"
#include "core/config.h"
#include "core/err.h"
#include "probe/probe.h"

#define PROBE_MAX_STEPS 32
#define PROBE_MAX_ARGV  256
#define PROBE_MAX_ENV   64
#define PROBE_ARG_MAX   8192
#define PROBE_NAME_MAX  64
#define PROBE_IDEM_MAX  128

/* What one record may hold, derived once (probe_record_max): the request is
 * refused at validation when the worst case of its steps exceeds the budget,
 * and the store reads back records up to the same limit. */
#define PROBE_RECORD_HEAD    (64u << 10)  /* id, times, error, key: everything but steps */
#define PROBE_STEP_OVERHEAD  (64u << 10)  /* a step's fields besides its output */
#define PROBE_OUTPUT_BUDGET  (136u << 20) /* sum of the steps' worst cases */
#define PROBE_QUARANTINE_DIR "quarantine" /* unreadable records, under runs/ */
#define PROBE_SPILL_MIN      (64u << 10)  /* larger result strings go to disk */

/* One step of a request. Strings point into the request's JSON document. */
struct probe_step_req {
	int type; /* index into probe_steps[] */
	const char *name;
	/* exec / script */
	const char *argv[PROBE_MAX_ARGV + 1];
	int argc;
	const char *env[PROBE_MAX_ENV]; /* "KEY=value" strings built in envbuf */
	int nenv;
	char *envbuf;
	const char *cwd;
	const char *stdin_data;
	size_t stdin_len;
	const char *user, *group;
	uint64_t timeout_ms; /* 0 = the probe's */
	const char *interpreter, *body;
	/* file.read / file.write */
	const char *path;
	uint64_t max_bytes;
	uint8_t *content; /* decoded content_b64 */
	size_t content_len;
	int mode; /* -1 = keep / 0644 for new files */
	const char *owner;
	bool backup, create_only, has_sha256;
	uint8_t sha256[SHA256_LEN];
	/* Every step type: the step's JSON object (owned by the request's doc) and
	 * "check": true, a dry run that reports what would change and changes nothing. */
	json_t *obj;
	bool check;
	/* A step type's own parsed parameters (host, container, backup steps):
	 * set by its parse, freed by ext_free with the request. Keeps new types
	 * out of this struct. */
	void *ext;
	void (*ext_free)(void *ext);
};

struct probe_request {
	json_t *doc; /* owns every string the steps point to */
	const char *idempotency_key;
	uint64_t timeout_ms; /* 0 = probe.default_timeout */
	bool continue_on_error;
	struct cg_limits limits; /* "limits": 0 fields = the probe.* defaults */
	int nsteps;
	struct probe_step_req steps[PROBE_MAX_STEPS];
	uint8_t body_hash[SHA256_LEN]; /* of the canonical JSON: idempotency compares it */
};

/* Parses an untrusted request body. On error, path names the bad field
 * ("steps[1].argv[0]") and err says why. Pure: no I/O. Free with
 * probe_request_free (also after an error). */
int probe_request_parse(const char *body, size_t len, struct probe_request *req, char *path,
                        size_t path_cap, struct vm_err *err);
void probe_request_free(struct probe_request *req);

/* The largest record a request may produce with this output cap, and the
 * budget its steps share (at least one process step at the cap always fits). */
uint64_t probe_output_budget(uint64_t output_cap);
size_t probe_record_max(uint64_t output_cap);
/* Refuses a request whose steps could together produce more than the budget:
 * path names the field that crossed it ("steps[1].max_bytes", or "steps[3]"
 * for a process step, whose outputs are capped by probe.output_cap). */
int probe_request_check_output(const struct probe_request *req, uint64_t output_cap, char *path,
                               size_t path_cap, struct vm_err *err);

/* --- steps ------------------------------------------------------------------------ */

/* Large result fields stream to the probe's spill file instead of memory
 * (the executor splices them into the final record). */
struct probe_sink;
/* Starts result field name (a JSON string), then any number of chunks, then
 * end. b64 chunks are base64-encoded on the way (any split is fine). */
int probe_sink_begin(struct probe_sink *s, const char *name, struct vm_err *err);
int probe_sink_write_b64(struct probe_sink *s, const void *data, size_t len, struct vm_err *err);
int probe_sink_end(struct probe_sink *s, struct vm_err *err);

/* How far a long step got, for progress events (total < 0: unknown). */
struct probe_progress {
	int64_t current, total;
	const char *unit; /* "bytes", "packages", "files"… */
	/* Borrowed, may be NULL: its members are added to the event's progress
	 * object (a backup's {file, op, percent, transferred_bytes}). */
	json_t *detail;
};

/* The agent's HTTP client settings (agent.ca_file, agent.proxy_url,
 * agent.proxy_credentials_file) for steps that fetch (ssh_keys.sync). */
struct probe_http {
	char ca_file[PATH_MAX];
	char proxy_url[CFG_STR_MAX];
	char proxy_credentials_file[PATH_MAX];
};

/* What a running step may use. */
struct probe_step_ctx {
	const char *work_dir;
	uint64_t output_cap;
	uint64_t grace_ms;
	const struct cfg_strlist *allow;
	int64_t deadline_ms; /* monotonic: min(step timeout, probe deadline) */
	const atomic_bool *cancel;
	void (*on_output)(void *ctx, int stream, const char *data, size_t len);
	/* A `progress` event {step, level, message, progress?} into the probe's
	 * event stream (level "info", "warn" or "error"; progress may be NULL).
	 * Long steps send one at least every 2 s; use probe_step_event. */
	void (*on_event)(void *ctx, const char *level, const char *message,
	                 const struct probe_progress *progress);
	void *out_ctx; /* both callbacks' ctx */
	struct cg_tree *cgroup;  /* NULL = process group only (see proc_spec) */
	struct cg_limits limits; /* the request's, else probe.* */
	struct probe_sink *sink; /* NULL: large fields stay in the result */
	const struct cfg_backup *backup; /* backup.* (NULL: remote backups refused) */
	const struct cfg_host *host; /* host.* settings; NULL (unit tests) = defaults */
	const struct probe_http *http; /* NULL = system CAs, libcurl's proxy handling */
	struct ctr_engine *containers; /* container steps' engine; NULL = none */
	const char *probe_id, *sub;    /* the probe and its caller (container labels) */
};

/* Step outcome, mapped to the step's "status" and the probe's state. */
enum probe_step_status { STEP_OK = 0, STEP_FAILED, STEP_TIMED_OUT, STEP_CANCELED };

struct probe_step_type {
	const char *name; /* "exec", "script", "file.read", "file.write" */
	/* The token scope this type needs besides probe:run (NULL = none), e.g.
	 * "host:write"; probe_submit refuses the request without it. */
	const char *scope;
	/* Reads the type's fields from obj into st; path is the step's JSON path. */
	int (*parse)(json_t *obj, struct probe_step_req *st, const char *path, char *epath,
	             size_t ecap, struct vm_err *err);
	/* Runs the step; fills result (a JSON object) and returns its status. */
	enum probe_step_status (*run)(const struct probe_step_req *st,
	                              const struct probe_step_ctx *ctx, json_t *result);
	/* The most this step can add to the record (output_cap per stream). */
	uint64_t (*output_bound)(const struct probe_step_req *st, uint64_t output_cap);
	/* Version of this type's parameters (GET /v1/capabilities, the runner's
	 * ready message): 1 at first, +1 on each change an older sender could
	 * get wrong (a new required field, a changed meaning). */
	int schema;
};

extern const struct probe_step_type probe_steps[];
extern const size_t probe_step_count;

/* Shared by exec and script: runs argv (argv[0] resolved and checked against
 * probe.allow) with the step's env/cwd/stdin/user/group, in its own cgroup
 * with the probe's limits; fd3 > 0 is passed to the child as fd 3. */
enum probe_step_status probe_run_argv(const struct probe_step_req *st, const char *const *argv,
                                      int fd3, const struct probe_step_ctx *ctx, json_t *result);

/* Field readers for step parsers: each writes "<path>.<name>" into epath on error. */
int probe_field_str(json_t *obj, const char *name, bool required, size_t max, const char **out,
                    const char *path, char *epath, size_t ecap, struct vm_err *err);
int probe_field_bool(json_t *obj, const char *name, bool *out, const char *path, char *epath,
                     size_t ecap, struct vm_err *err);
int probe_field_duration(json_t *obj, const char *name, uint64_t *out, const char *path,
                         char *epath, size_t ecap, struct vm_err *err);
/* Refuses members not in the NULL-terminated list (typos must not be ignored). */
int probe_fields_known(json_t *obj, const char *const *known, const char *path, char *epath,
                       size_t ecap, struct vm_err *err);

/* Sends a progress event through ctx->on_event (nothing when it is NULL);
 * the message is formatted and cut at 1 KiB. */
void probe_step_event(const struct probe_step_ctx *ctx, const char *level,
                      const struct probe_progress *progress, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Adds text to a JSON object as name (valid UTF-8) or name_b64 (anything else). */
void probe_json_set_bytes(json_t *obj, const char *name, const char *data, size_t len);

/* Reads up to max bytes of fd into result field name as base64 (through the
 * sink when there is one: O(chunk) memory), hashing the whole file; got and
 * truncated say how much was taken. */
int probe_read_fd_b64(const struct probe_step_ctx *ctx, int fd, uint64_t max, json_t *result,
                      const char *name, uint64_t *got, bool *truncated, uint8_t digest[SHA256_LEN],
                      struct vm_err *err);

/* --- spilled output and streamed records (record.c) ---------------------------------- */

/* One probe's spill file, runs/<id>.spill (created on first use). The worker
 * owns it while the probe runs, then the final record's writer. */
struct probe_sink *probe_sink_new(const char *dir, const char *id);
void probe_sink_free(struct probe_sink *s); /* removes the file; NULL is fine */
/* Removes the file (frees its space) but remembers which steps had spilled
 * fields, so records can say output_not_persisted. */
void probe_sink_discard(struct probe_sink *s);
void probe_sink_set_step(struct probe_sink *s, int step); /* fields go to this step */
bool probe_sink_has(const struct probe_sink *s, int step);
/* Drops a field a failed step left half written. */
void probe_sink_abort_open(struct probe_sink *s);
/* Moves the result's large strings (process output) to the sink. */
void probe_sink_spill_large(struct probe_sink *s, json_t *result);

/* A record ready to stream: its small parts dumped (call with rec stable,
 * under the executor's lock), spilled fields copied from the sink (borrowed)
 * when with_spills, else marked output_not_persisted. */
struct probe_image;
struct probe_image *probe_image_new(json_t *rec, const struct probe_sink *sink, bool with_spills);
void probe_image_free(struct probe_image *img);
int probe_image_write(void *ctx, int fd, struct vm_err *err); /* a probe_write_fn */

/* --- store ---------------------------------------------------------------------- */

/* Writes a record's bytes to fd; returns 0 or an error. */
typedef int (*probe_write_fn)(void *ctx, int fd, struct vm_err *err);
int probe_write_text(void *ctx, int fd, struct vm_err *err); /* ctx: a NUL-terminated text */
int probe_write_all(int fd, const void *data, size_t len, struct vm_err *err);

/* Writes <dir>/<id>.json atomically (text is the record's JSON, or fn writes it). */
int probe_store_write(const char *dir, const char *id, const char *text, struct vm_err *err);
int probe_store_write_stream(const char *dir, const char *id, probe_write_fn fn, void *wctx,
                             struct vm_err *err);
/* Batched durable writes from many threads (group commit); each call returns
 * once its record is durable. After stop began, writes go straight to disk. */
struct probe_committer;
struct probe_committer *probe_committer_start(const char *dir, struct vm_err *err);
int probe_committer_write(struct probe_committer *c, const char *id, const char *text,
                          struct vm_err *err);
int probe_committer_write_stream(struct probe_committer *c, const char *id, probe_write_fn fn,
                                 void *wctx, struct vm_err *err);
/* The same, durable through the journal alone: the record file is written at
 * the next checkpoint (or by a later write of the same id). For records of
 * unfinished probes, which readers take from memory. */
int probe_committer_log(struct probe_committer *c, const char *id, const char *text,
                        struct vm_err *err);
int probe_committer_log_stream(struct probe_committer *c, const char *id, probe_write_fn fn,
                               void *wctx, struct vm_err *err);
/* probe_committer_log that runs mw->fn(mw->ctx) on the calling thread while
 * the writer flushes the record, and stores its result in mw->rc (the
 * webhook flushes the request's audit line meanwhile: two flushes at once
 * instead of one after the other). fn runs exactly once, whatever the
 * write's outcome. */
struct probe_meanwhile {
	int (*fn)(void *ctx);
	void *ctx;
	int rc;
};
int probe_committer_log_meanwhile(struct probe_committer *c, const char *id, const char *text,
                                  struct probe_meanwhile *mw, struct vm_err *err);
/* Says id's record file was just written the direct way (probe_store_write*):
 * the checkpoint must not replace it with an older journal-only copy. */
void probe_committer_forget(struct probe_committer *c, const char *id);
/* Queues a write and returns at once; on_done(ctx, rc, msg) runs on the writer
 * thread once it is durable (or failed). Takes text (malloc'd); the stream
 * variant borrows wctx until on_done. Returns -1 (nothing taken) when the
 * writer is stopping or out of memory. Stop drains every queued write and its
 * callback first. */
typedef void (*probe_commit_done_fn)(void *ctx, int rc, const char *msg);
int probe_committer_write_async(struct probe_committer *c, const char *id, char *text,
                                probe_commit_done_fn on_done, void *ctx);
int probe_committer_write_stream_async(struct probe_committer *c, const char *id, probe_write_fn fn,
                                       void *wctx, probe_commit_done_fn on_done, void *ctx);
/* A record durable through the journal alone (no file created until the
 * checkpoint); readers go through probe_committer_open/read. settled: the
 * final record of a finished probe (the materializer may write its file);
 * else an unfinished probe's (read from memory meanwhile). Only where
 * probe_committer_journaled. */
int probe_committer_log_stream_async(struct probe_committer *c, const char *id, probe_write_fn fn,
                                     void *wctx, bool settled, probe_commit_done_fn on_done,
                                     void *ctx);
bool probe_committer_journaled(const struct probe_committer *c);
/* probe_store_open / probe_store_read that also see journal-only records: the
 * newest write of id since the checkpoint (a memfd copy), else the file. */
int probe_committer_open(struct probe_committer *c, const char *dir, const char *id, size_t max,
                         uint64_t *size);
json_t *probe_committer_read(struct probe_committer *c, const char *dir, const char *id,
                             size_t max);
/* A record's temp file written by the calling thread (in parallel, outside
 * any lock: creating files is most of a record write's CPU), then handed to
 * the writer, which only journals and renames it. Discard unless handed. */
struct probe_prepared {
	int fd;
	char tmp[PATH_MAX + 64];
};
int probe_store_prepare(const char *dir, const char *id, probe_write_fn fn, void *wctx,
                        struct probe_prepared *out, struct vm_err *err);
void probe_prepared_discard(struct probe_prepared *p);
/* Takes prep (its fd is -1 after) and returns 0, or -1 leaving it to the caller. */
int probe_committer_write_prepared_async(struct probe_committer *c, const char *id,
                                         struct probe_prepared *prep, probe_commit_done_fn on_done,
                                         void *ctx);
void probe_committer_stop(struct probe_committer *c);

/* Replays dir/journal after a crash (the newest entry of each id, unless the
 * record file is newer and intact), makes the replayed records durable and
 * empties the journal. Call before probe_store_scan and the committer. */
int probe_store_recover(const char *dir, int *replayed, struct vm_err *err);

/* Reads one record (NULL when missing, larger than max or not a JSON object). */
json_t *probe_store_read(const char *dir, const char *id, size_t max);
void probe_store_remove(const char *dir, const char *id);
/* Opens one record file to send as is (fd, or -1 when missing or larger than max). */
int probe_store_open(const char *dir, const char *id, size_t max, uint64_t *size);

/* Calls fn for each record in dir, oldest id first; at most max records.
 * Unreadable ones are moved to dir/quarantine/ and counted in *quarantined;
 * leftover temp and spill files are removed. */
int probe_store_scan(const char *dir, int max, size_t record_max,
                     void (*fn)(void *ctx, const char *id, json_t *rec), void *ctx,
                     int *quarantined, struct vm_err *err);

#endif
