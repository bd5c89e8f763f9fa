/* Probes: ordered steps (exec, script, file.read, file.write) run on this VM
 * for the control plane. A bounded queue feeds probe.max_concurrent workers;
 * every record is persisted atomically, so a restart reports what ran, and a
 * probe that was running or queued when the agent died becomes `interrupted`
 * (never re-run). Records and results are JSON (jansson) as the API serves them. */
#ifndef VMA_PROBE_PROBE_H
#define VMA_PROBE_PROBE_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/cgroup.h"
#include "core/config.h"
#include "core/err.h"

#define PROBE_ID_MAX       40
#define PROBE_ERR_PATH_MAX 128

struct probe_exec;

/* Loads the records under probe.work_dir/runs (marking unfinished ones
 * interrupted), applies retention and starts the workers. The executor copies
 * what it needs from cfg; cg (borrowed until probe_exec_stop, may be NULL)
 * gives each step its own cgroup; budget (borrowed likewise, NULL = none) is
 * limits.max_concurrent: a probe runs only with one of its slots, and waits
 * queued for one (the executor is the budget's watcher). */
struct budget;
struct probe_exec *probe_exec_start(const struct cfg *cfg, struct cg_tree *cg,
                                    struct budget *budget, struct vm_err *err);
/* The container engine the container.* and image.pull steps use (borrowed;
 * set once before any probe runs). */
struct ctr_engine;
void probe_exec_set_containers(struct probe_exec *ex, struct ctr_engine *engine);

/* Stops taking work, interrupts queued and running probes (SIGTERM, then
 * SIGKILL after probe.cancel_grace), persists their records, wakes every event
 * reader, joins the workers and frees. NULL is fine. */
void probe_exec_stop(struct probe_exec *ex);

/* Applies a reload's probe.allow, probe.default_timeout, probe.cancel_grace
 * and probe.retention_*: the next step and the next probe use them (the other
 * probe.* keys need a restart, see cfg_key_apply). NULL is fine. */
void probe_exec_reconfigure(struct probe_exec *ex, const struct cfg *cfg);

/* Probes waiting in the queue and running now (health, status). NULL gives 0. */
void probe_queue_depth(struct probe_exec *ex, uint64_t *queued, uint64_t *running);

/* Once: fn(ctx, id) for each probe that start-up found unfinished and marked
 * interrupted (queued or running when the agent died), so that the webhook
 * audits them. Returns how many more there were than it kept (a bound). */
typedef void (*probe_id_fn)(void *ctx, const char *id);
size_t probe_exec_take_interrupted(struct probe_exec *ex, probe_id_fn fn, void *ctx);

/* Records that could not be written since start (disk full, I/O errors) and
 * unreadable ones moved to runs/quarantine/ at start (health). NULL gives 0. */
void probe_store_health(struct probe_exec *ex, uint64_t *write_failures, uint64_t *quarantined);

/* Results of probe_submit (negative ones are errors). */
enum probe_submit_rc {
	PROBE_CREATED = 0,      /* new probe queued: 202 */
	PROBE_EXISTING = 1,     /* same idempotency_key and same body: 200 */
	PROBE_E_INVALID = -1,   /* request does not validate: 400, see err_path */
	PROBE_E_CONFLICT = -2,  /* same idempotency_key, different body: 409 */
	PROBE_E_FULL = -3,      /* queue full: 429 */
	PROBE_E_STOPPED = -4,   /* shutting down: 503 */
	PROBE_E_IO = -5,        /* out of memory, an unreadable record, no id: 500 */
	PROBE_E_TOO_LARGE = -6, /* could produce more than a record holds: 400, see err_path */
	PROBE_E_FORBIDDEN = -7, /* a step type needs a scope the caller lacks: 403, see err_path */
	PROBE_E_PERSIST = -8,   /* the accepted record could not be persisted (full disk): 507 */
	PROBE_E_ADMIT = -9,     /* admit refused (the audit line is not on disk): not run, 500 */
};

/* Who submits (from the verified token): idempotency keys are scoped by
 * both, so one subject can never replay another's key. NULL fields = "". */
struct probe_caller {
	const char *tenant_id;
	const char *sub;
	/* The token's scopes (space-separated): a step type that needs more than
	 * probe:run (host:write, containers:write, backup:run…) is refused with
	 * PROBE_E_FORBIDDEN unless they hold its scope. NULL = none beyond probe:run. */
	const char *scope;
	/* NULL, or a last condition of acceptance, run while the accepted record
	 * is being flushed (so the two flushes overlap): the probe is queued only
	 * once both are done and admit returned 0. When it fails the probe never
	 * runs: its record ends `failed` and probe_submit returns PROBE_E_ADMIT.
	 * The webhook makes the request's audit "started" line durable here. */
	int (*admit)(void *ctx);
	void *admit_ctx;
};

struct probe_submit_out {
	char id[PROBE_ID_MAX];
	char err_path[PROBE_ERR_PATH_MAX]; /* JSON path of the bad field ("steps[0].argv") */
	json_t *record;                    /* new reference (caller decrefs); NULL on error */
};

/* Parses and queues a request body (JSON). err says why on failure. */
int probe_submit(struct probe_exec *ex, const char *body, size_t len,
                 const struct probe_caller *who, struct probe_submit_out *out, struct vm_err *err);

/* The record of one probe (new reference), or NULL when unknown (or unreadable). */
json_t *probe_get(struct probe_exec *ex, const char *id);

/* A finished probe's durable record as its file, to stream without parsing:
 * returns an fd (caller closes) and its size, -2 when the record is in memory
 * (use probe_get), -1 when unknown or unreadable. */
int probe_record_fd(struct probe_exec *ex, const char *id, uint64_t *size);

/* Summaries of the newest probes first, optionally only in state (NULL = all). */
json_t *probe_list(struct probe_exec *ex, const char *state, int limit);

/* True when s names a probe state. */
bool probe_state_valid(const char *s);

/* Results of probe_cancel (negative ones are errors). */
enum probe_cancel_rc {
	PROBE_CANCEL_OK = 0,        /* canceled (queued) or told to stop (running): 202 */
	PROBE_CANCEL_UNKNOWN = -1,  /* no probe with this id: 404 */
	PROBE_CANCEL_FINISHED = -2, /* it has already finished: 409 */
};

/* Cancels a queued or running probe. On PROBE_CANCEL_OK *record is the record
 * (new ref; NULL when it cannot be read), otherwise NULL. */
enum probe_cancel_rc probe_cancel(struct probe_exec *ex, const char *id, json_t **record);

/* Event streams hold an HTTP worker each: at most PROBE_MAX_STREAMS at a time.
 * acquire returns false when the limit is reached; each true needs a release. */
#define PROBE_MAX_STREAMS 8
bool probe_events_acquire(struct probe_exec *ex);
void probe_events_release(struct probe_exec *ex);

/* Events of one probe for streaming: `state`, `step` and `output` events as
 * JSON objects, in order, with increasing sequence numbers, ending with one
 * `end` event carrying the final record. */
struct probe_event {
	uint64_t seq;
	char type[16];
	char *data; /* JSON text, malloc'd; free with probe_event_free */
};

/* Waits up to timeout_ms for the events after *seq (0 = from the start) and
 * returns how many were stored in evs (at most max), advancing *seq. Returns 0
 * on timeout, -1 when the id is unknown or the executor is stopping. After the
 * `end` event nothing more comes. A reader too slow for a noisy step skips the
 * oldest chunks (a `lost` event says how many); the final record has them. */
int probe_events_wait(struct probe_exec *ex, const char *id, uint64_t *seq, struct probe_event *evs,
                      int max, int timeout_ms);
void probe_event_free(struct probe_event *ev);

/* --- one step without the executor: the runner's front door (probe/oneshot.c) -------- */

/* Validates a request body exactly as probe_submit does (parse, output
 * budget for output_cap), without queueing it or checking token scopes. */
int probe_request_validate(const char *body, size_t len, uint64_t output_cap, char *path,
                           size_t path_cap, struct vm_err *err);

/* What one synchronous step may use (the caller's policy and limits). */
struct probe_run_opts {
	const char *work_dir;
	uint64_t output_cap, grace_ms, default_timeout_ms;
	const struct cfg_strlist *allow; /* probe.allow semantics; NULL or empty = anything */
	int64_t deadline_ms;             /* monotonic hard end (a TTL); 0 = none */
	const atomic_bool *cancel;       /* may be NULL */
	struct cg_tree *cgroup;          /* as the executor's: each step's whole tree dies with it */
	/* Output chunks (stream 1 stdout, 2 stderr) and progress events, as
	 * the executor's output and progress events (total < 0: unknown,
	 * unit may be NULL); both may be NULL. */
	void (*on_output)(void *ctx, int stream, const char *data, size_t len);
	void (*on_event)(void *ctx, const char *level, const char *message, int64_t current,
	                 int64_t total, const char *unit);
	void *ctx;
};

/* Runs one step, a JSON object as in a request's "steps" (borrowed), with
 * timeout (a request's "timeout" value, may be NULL) through the same parser,
 * validation, step table and policy as a probe. Every step type is allowed:
 * the caller decides who may run this. Returns 0 with *result (new reference:
 * the step's record fields, "status", "duration_ms") and *ok, or
 * PROBE_E_INVALID / PROBE_E_TOO_LARGE with path ("step.argv") and err. */
int probe_run_step(json_t *step, json_t *timeout, const struct probe_run_opts *o, json_t **result,
                   bool *ok, char *path, size_t path_cap, struct vm_err *err);

/* What this agent can do (GET /v1/capabilities, the runner's `ready`
 * message): {"version", "platform", "architecture", "step_types": [{"type",
 * "schema", "scope"}], "features": {"shell": bool, ...}}. Step types come
 * from the step table; cfg (may be NULL: features that depend on it are
 * off) decides the configurable features. New reference; NULL on OOM. */
json_t *probe_capabilities(const struct cfg *cfg);

#endif
