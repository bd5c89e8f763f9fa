/* Probes: ordered steps (exec, script, file.read, file.write) run on this VM
 * for the control plane. A bounded queue feeds probe.max_concurrent workers;
 * every record is persisted atomically, so a restart reports what ran, and a
 * probe that was running or queued when the agent died becomes `interrupted`
 * (never re-run). Records and results are JSON (jansson) as the API serves them. */
#ifndef VMA_PROBE_PROBE_H
#define VMA_PROBE_PROBE_H

#include <jansson.h>
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
 * gives each step its own cgroup. */
struct probe_exec *probe_exec_start(const struct cfg *cfg, struct cg_tree *cg, struct vm_err *err);
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
	PROBE_E_IO = -5,        /* the record could not be persisted: 500 */
	PROBE_E_TOO_LARGE = -6, /* could produce more than a record holds: 400, see err_path */
	PROBE_E_FORBIDDEN = -7, /* a step type needs a scope the caller lacks: 403, see err_path */
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

/* Cancels a queued or running probe. Returns 0 (record in *record, new ref),
 * -1 unknown id, -2 already finished (*record NULL). */
int probe_cancel(struct probe_exec *ex, const char *id, json_t **record);

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

#endif
