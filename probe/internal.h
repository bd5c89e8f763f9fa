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

/* --- steps ------------------------------------------------------------------------ */

/* What a running step may use. */
struct probe_step_ctx {
	const char *work_dir;
	uint64_t output_cap;
	uint64_t grace_ms;
	const struct cfg_strlist *allow;
	int64_t deadline_ms; /* monotonic: min(step timeout, probe deadline) */
	const atomic_bool *cancel;
	void (*on_output)(void *ctx, int stream, const char *data, size_t len);
	void *out_ctx;
	struct cg_tree *cgroup;  /* NULL = process group only (see proc_spec) */
	struct cg_limits limits; /* the request's, else probe.* */
};

/* Step outcome, mapped to the step's "status" and the probe's state. */
enum probe_step_status { STEP_OK = 0, STEP_FAILED, STEP_TIMED_OUT, STEP_CANCELED };

struct probe_step_type {
	const char *name; /* "exec", "script", "file.read", "file.write" */
	/* Reads the type's fields from obj into st; path is the step's JSON path. */
	int (*parse)(json_t *obj, struct probe_step_req *st, const char *path, char *epath,
	             size_t ecap, struct vm_err *err);
	/* Runs the step; fills result (a JSON object) and returns its status. */
	enum probe_step_status (*run)(const struct probe_step_req *st,
	                              const struct probe_step_ctx *ctx, json_t *result);
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

/* Adds text to a JSON object as name (valid UTF-8) or name_b64 (anything else). */
void probe_json_set_bytes(json_t *obj, const char *name, const char *data, size_t len);

/* --- store ---------------------------------------------------------------------- */

/* Writes <dir>/<id>.json atomically (text is the record's JSON). */
int probe_store_write(const char *dir, const char *id, const char *text, struct vm_err *err);
/* Batched durable writes from many threads (group commit); each call returns
 * once its record is durable. After stop began, writes go straight to disk. */
struct probe_committer;
struct probe_committer *probe_committer_start(const char *dir, struct vm_err *err);
int probe_committer_write(struct probe_committer *c, const char *id, const char *text,
                          struct vm_err *err);
/* Queues a write and returns at once; on_done(ctx, rc, msg) runs on the writer
 * thread once it is durable (or failed). Takes text (malloc'd). Returns -1
 * (text not taken) when the writer is stopping or out of memory. Stop drains
 * every queued write and its callback first. */
typedef void (*probe_commit_done_fn)(void *ctx, int rc, const char *msg);
int probe_committer_write_async(struct probe_committer *c, const char *id, char *text,
                                probe_commit_done_fn on_done, void *ctx);
void probe_committer_stop(struct probe_committer *c);

/* Reads one record (NULL when missing or unreadable). */
json_t *probe_store_read(const char *dir, const char *id, size_t max);
void probe_store_remove(const char *dir, const char *id);

/* Calls fn for each record in dir, oldest id first; at most max records. */
int probe_store_scan(const char *dir, int max, size_t record_max,
                     void (*fn)(void *ctx, const char *id, json_t *rec), void *ctx,
                     struct vm_err *err);

#endif
