/* The probe executor: the in-memory index of probes (newest last), a bounded
 * queue, probe.max_concurrent worker threads, per-probe event rings for
 * streaming, persistence at submit, at each step start and at the end (the
 * streamed record and spill file live in record.c), and retention. One mutex
 * guards everything here; processes and disk writes run outside it. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "core/budget.h"
#include "core/fs.h"
#include "core/jwt.h"
#include "core/log.h"
#include "core/proc.h"
#include "core/rand.h"
#include "core/time.h"
#include "probe/internal.h"

#define EV_RING         64   /* events kept per probe for late or slow readers */
#define EV_CHUNK        4096 /* output bytes per event */
#define RINGS_AFTER_END 8    /* finished probes whose event ring is still kept */
#define LOAD_SLACK      1024 /* records loaded beyond retention_count (unfinished ones) */
#define RETAIN_EVERY_S  60   /* idle workers check retention by age this often */

enum pstate { P_QUEUED, P_RUNNING, P_SUCCEEDED, P_FAILED, P_CANCELED, P_TIMED_OUT, P_INTERRUPTED };

static const char *const state_names[] = {"queued",   "running",   "succeeded",  "failed",
                                          "canceled", "timed_out", "interrupted"};
#define NSTATES ((int)(sizeof(state_names) / sizeof(state_names[0])))

static const char *const step_status_names[] = {[STEP_OK] = "succeeded",
                                                [STEP_FAILED] = "failed",
                                                [STEP_TIMED_OUT] = "timed_out",
                                                [STEP_CANCELED] = "canceled"};

struct ev {
	uint64_t seq;
	char type[16];
	char *data;
};

struct probe {
	char id[PROBE_ID_MAX];
	enum pstate state;
	int64_t created_ms, finished_ms; /* wall clock */
	char idem[PROBE_IDEM_MAX + 1];
	uint8_t idem_scope[SHA256_LEN]; /* who may replay the key: sha256(tenant, sub) */
	char sub[256];                  /* the caller (labels of what container steps create) */
	uint8_t body_hash[SHA256_LEN];
	json_t *rec;               /* full record while unfinished; NULL once on disk */
	struct probe_request *req; /* while unfinished */
	atomic_bool cancel;
	bool interrupt;  /* cancel came from shutdown */
	bool persisting; /* submit has not written the first record yet */
	bool in_queue;   /* referenced by the queue: retention must not free it */
	bool finishing;  /* final record is being written; final_state once durable */
	/* The start of step 0 written ahead ("may have started", see prestart_locked):
	 * pre_pending while that write is in flight, pre_durable once it is
	 * durable (the worker then runs step 0 without writing it again),
	 * pre_counted while it counts in ex->npre. */
	bool pre_pending, pre_durable, pre_counted;
	struct probe_image *pre_img; /* the write in flight */
	enum pstate final_state;
	struct probe_sink *sink; /* spilled output while running (worker, then writer) */
	struct probe_image *img; /* the final record being written */
	struct probe_exec *ex;   /* for the write-completion callback */
	struct ev ring[EV_RING];
	uint64_t ev_first, ev_next; /* seq range held in ring */
	bool ended;
	struct probe *prev, *next;
};

struct probe_exec {
	pthread_mutex_t mu;
	pthread_cond_t work_cv, ev_cv;
	struct probe *head, *tail;
	int nfinished;
	int rings_full; /* ended probes whose ring holds more than their `end` event */
	struct probe **queue;
	int qcap, qhead, qlen, qreserved;
	pthread_t *workers;
	int nworkers;
	int idle; /* workers waiting for work */
	int npre; /* queued probes whose step 0 start is written ahead (at most nworkers) */
	/* ids marked interrupted at start, until probe_exec_take_interrupted */
	char (*recovered)[PROBE_ID_MAX];
	size_t nrecovered, recovered_cap, recovered_lost;
	bool stopping;
	int streams; /* event readers (probe_events_acquire) */
	char work_dir[PATH_MAX];
	char runs_dir[PATH_MAX + 8];
	struct probe_committer *store;
	uint64_t default_timeout_ms, output_cap, grace_ms, retention_age_ms;
	size_t record_max; /* largest record validation allows (probe_record_max) */
	uint64_t write_failures, quarantined; /* for health */
	int retention_count;
	struct cfg_strlist allow;
	struct cfg_backup backup; /* backup.*: the backup steps' SSH settings */
	struct cfg_host host;    /* host.* for host steps (live) */
	struct probe_http http;  /* agent.ca_file, proxy_url, proxy_credentials_file (live) */
	struct cg_tree *cgroup;  /* borrowed from run */
	struct cg_limits limits; /* probe.memory_max, cpu_max, pids_max */
	struct budget *budget;   /* borrowed: limits.max_concurrent, shared with shells */
	struct ctr_engine *containers; /* borrowed; container steps (NULL: they fail) */
};

static void http_settings(struct probe_http *h, const struct cfg *cfg)
{
	snprintf(h->ca_file, sizeof(h->ca_file), "%s", cfg->agent.ca_file);
	snprintf(h->proxy_url, sizeof(h->proxy_url), "%s", cfg->agent.proxy_url);
	snprintf(h->proxy_credentials_file, sizeof(h->proxy_credentials_file), "%s",
	         cfg->agent.proxy_credentials_file);
}

static json_t *time_json(int64_t ms)
{
	char buf[TIME_RFC3339_MAX];
	if (ms == 0 || time_rfc3339(buf, sizeof(buf), ms, true) == 0)
		return json_null();
	return json_string(buf);
}

static bool terminal(enum pstate s)
{
	return s != P_QUEUED && s != P_RUNNING;
}

bool probe_state_valid(const char *s)
{
	for (int i = 0; i < NSTATES; i++)
		if (strcmp(state_names[i], s) == 0)
			return true;
	return false;
}

static int state_of(const char *s)
{
	for (int i = 0; i < NSTATES; i++)
		if (s != NULL && strcmp(state_names[i], s) == 0)
			return i;
	return -1;
}

/* --- index ----------------------------------------------------------------------------- */

static struct probe *find(struct probe_exec *ex, const char *id)
{
	for (struct probe *p = ex->tail; p != NULL; p = p->prev)
		if (strcmp(p->id, id) == 0)
			return p;
	return NULL;
}

static void link_probe(struct probe_exec *ex, struct probe *p)
{
	p->prev = ex->tail;
	p->next = NULL;
	if (ex->tail != NULL)
		ex->tail->next = p;
	else
		ex->head = p;
	ex->tail = p;
}

static void ring_clear(struct probe *p)
{
	for (int i = 0; i < EV_RING; i++) {
		free(p->ring[i].data);
		p->ring[i].data = NULL;
	}
	p->ev_first = p->ev_next;
}

static void free_probe(struct probe *p)
{
	ring_clear(p);
	json_decref(p->rec);
	if (p->req != NULL) {
		probe_request_free(p->req);
		free(p->req);
	}
	free(p);
}

static void unlink_probe(struct probe_exec *ex, struct probe *p)
{
	if (p->prev != NULL)
		p->prev->next = p->next;
	else
		ex->head = p->next;
	if (p->next != NULL)
		p->next->prev = p->prev;
	else
		ex->tail = p->prev;
}

/* Appends an event (data is a JSON object, consumed); drops the oldest when full. */
static void emit(struct probe_exec *ex, struct probe *p, const char *type, json_t *data)
{
	char *text = json_dumps(data, JSON_COMPACT);
	json_decref(data);
	if (text == NULL)
		return;
	struct ev *e = &p->ring[p->ev_next % EV_RING];
	if (p->ev_next - p->ev_first == EV_RING) {
		free(e->data);
		p->ev_first++;
	}
	e->seq = p->ev_next++;
	snprintf(e->type, sizeof(e->type), "%s", type);
	e->data = text;
	pthread_cond_broadcast(&ex->ev_cv);
}

/* Retention: finished records beyond retention_count or older than retention_age. */
static void retain(struct probe_exec *ex)
{
	int64_t horizon = time_wall_ms() - (int64_t)ex->retention_age_ms;
	struct probe *p = ex->head;
	while (p != NULL && (ex->nfinished > ex->retention_count || p->created_ms < horizon)) {
		struct probe *next = p->next;
		if (terminal(p->state) && p->ended && !p->in_queue && !p->pre_pending &&
		    (ex->nfinished > ex->retention_count || p->finished_ms < horizon)) {
			unlink_probe(ex, p);
			probe_committer_forget(ex->store, p->id); /* no checkpoint writes it back */
			probe_store_remove(ex->runs_dir, p->id);
			ex->nfinished--;
			ex->rings_full -= p->ev_first + 1 < p->ev_next;
			free_probe(p);
		}
		p = next;
	}
	/* Event rings of all but the most recently finished probes are dropped;
	 * the walk ends once no full ring is left to drop (not O(records)). */
	int kept = 0;
	for (p = ex->tail; p != NULL && ex->rings_full > RINGS_AFTER_END; p = p->prev)
		if (p->ended && p->ev_first + 1 < p->ev_next && ++kept > RINGS_AFTER_END) {
			ex->rings_full--;
			/* keep only the final `end` event */
			struct ev end = p->ring[(p->ev_next - 1) % EV_RING];
			p->ring[(p->ev_next - 1) % EV_RING].data = NULL;
			ring_clear(p);
			p->ev_first = p->ev_next - 1;
			p->ring[end.seq % EV_RING] = end;
		}
}

/* --- records --------------------------------------------------------------------------- */

static json_t *new_record(const struct probe *p, const struct probe_request *req,
                          uint64_t timeout_ms)
{
	char hex[2 * SHA256_LEN + 1];
	hex_encode(req->body_hash, SHA256_LEN, hex);
	json_t *steps = json_array();
	for (int i = 0; i < req->nsteps; i++) {
		const struct probe_step_req *st = &req->steps[i];
		json_t *s = json_pack("{s:i,s:s,s:s}", "index", i, "type",
		                      probe_steps[st->type].name, "status", "pending");
		if (st->name != NULL)
			json_object_set_new(s, "name", json_string(st->name));
		json_array_append_new(steps, s);
	}
	json_t *rec =
	    json_pack("{s:s,s:s,s:o,s:I,s:o,s:o,s:I,s:b,s:s,s:o}", "id", p->id, "state", "queued",
	              "created_at", time_json(p->created_ms), "created_ms",
	              (json_int_t)p->created_ms, "started_at", json_null(), "finished_at",
	              json_null(), "timeout_ms", (json_int_t)timeout_ms, "continue_on_error",
	              req->continue_on_error, "request_sha256", hex, "steps", steps);
	if (rec != NULL && p->idem[0] != '\0') {
		char scope[2 * SHA256_LEN + 1];
		hex_encode(p->idem_scope, SHA256_LEN, scope);
		json_object_set_new(rec, "idempotency_key", json_string(p->idem));
		json_object_set_new(rec, "idempotency_scope", json_string(scope));
	}
	return rec;
}

static void set_state(struct probe_exec *ex, struct probe *p, enum pstate st)
{
	p->state = st;
	json_object_set_new(p->rec, "state", json_string(state_names[st]));
	emit(ex, p, "state", json_pack("{s:s,s:s}", "id", p->id, "state", state_names[st]));
}

/* The final record is durable (or, keep_rec, could not be written at all and
 * is served from memory): the final state becomes visible, memory is dropped,
 * the `end` event goes out. */
static void finish_done_locked(struct probe_exec *ex, struct probe *p, bool keep_rec)
{
	enum pstate st = p->final_state;
	set_state(ex, p, st);
	probe_image_free(p->img);
	p->img = NULL;
	probe_sink_free(p->sink);
	p->sink = NULL;
	if (!keep_rec) {
		json_decref(p->rec);
		p->rec = NULL;
	}
	if (p->req != NULL) {
		probe_request_free(p->req);
		free(p->req);
		p->req = NULL;
	}
	emit(ex, p, "end", json_pack("{s:s,s:s}", "id", p->id, "state", state_names[st]));
	p->ended = true;
	ex->rings_full += p->ev_first + 1 < p->ev_next;
	ex->nfinished++;
	log_info("probe", "%s %s", p->id, state_names[st]);
	retain(ex);
}

/* The final record could not be written (disk full, I/O error): its output is
 * dropped (the spill file too, which frees its space) and a small record says
 * so: state failed, error_code record_write_failed. If even that cannot be
 * written, that record is served from memory (list and GET agree) and health
 * reports the failure; a restart then shows the last durable state as
 * interrupted. Called with the lock held. */
static void finish_fallback_locked(struct probe_exec *ex, struct probe *p, const char *why)
{
	ex->write_failures++;
	log_error("probe", "%s: cannot persist the final record: %s", p->id, why);
	probe_image_free(p->img);
	p->img = NULL;
	probe_sink_discard(p->sink);
	char msg[300];
	snprintf(msg, sizeof(msg), "the final record could not be written (%s); output dropped",
	         why);
	json_object_set_new(p->rec, "state", json_string(state_names[P_FAILED]));
	json_object_set_new(p->rec, "error_code", json_string("record_write_failed"));
	json_object_set_new(p->rec, "error", json_string(msg));
	struct probe_image *img = probe_image_new(p->rec, p->sink, false);
	json_object_set_new(p->rec, "state", json_string(state_names[p->state]));
	struct vm_err err = {0};
	probe_committer_forget(ex->store, p->id); /* before: no checkpoint between */
	int rc = img != NULL
	             ? probe_store_write_stream(ex->runs_dir, p->id, probe_image_write, img, &err)
	             : vm_err_set(&err, VM_ERR_NOMEM, "out of memory");
	probe_image_free(img);
	p->final_state = P_FAILED;
	if (rc != 0) {
		ex->write_failures++;
		log_error("probe",
		          "%s: cannot persist even the failure record: %s; served from "
		          "memory until the agent restarts",
		          p->id, err.msg);
		/* without the spilled fields: what memory holds is what GET serves */
		size_t i;
		json_t *st;
		json_array_foreach(json_object_get(p->rec, "steps"), i, st)
		{
			if (probe_sink_has(p->sink, (int)i))
				json_object_set_new(st, "output_not_persisted", json_true());
		}
	}
	finish_done_locked(ex, p, rc != 0);
}

static void on_committed(void *ctx, int rc, const char *msg)
{
	struct probe *p = ctx;
	struct probe_exec *ex = p->ex;
	pthread_mutex_lock(&ex->mu);
	if (rc != 0)
		finish_fallback_locked(ex, p, msg);
	else
		finish_done_locked(ex, p, false);
	pthread_mutex_unlock(&ex->mu);
}

static void finish_write_locked(struct probe_exec *ex, struct probe *p);

/* Ends a probe. The final record goes to the group-commit writer without
 * waiting (workers go on with the next probe); until it is durable, readers
 * still see the previous state, so no one sees an outcome a crash could undo.
 * Called with the lock held; never releases it. */
static void finish_begin_locked(struct probe_exec *ex, struct probe *p, enum pstate st,
                                const char *error)
{
	p->finished_ms = time_wall_ms();
	json_object_set_new(p->rec, "finished_at", time_json(p->finished_ms));
	json_object_set_new(p->rec, "finished_ms", json_integer(p->finished_ms));
	if (error != NULL)
		json_object_set_new(p->rec, "error", json_string(error));
	/* steps that never ran */
	size_t i;
	json_t *s;
	json_array_foreach(json_object_get(p->rec, "steps"), i, s)
	{
		const char *ss = json_string_value(json_object_get(s, "status"));
		if (ss != NULL && strcmp(ss, "pending") == 0)
			json_object_set_new(s, "status", json_string("skipped"));
	}
	p->finishing = true;
	p->final_state = st;
	p->ex = ex;
	json_object_set_new(p->rec, "state", json_string(state_names[st]));
	p->img = probe_image_new(p->rec, p->sink, true);
	json_object_set_new(p->rec, "state", json_string(state_names[p->state]));
}

static void finish_locked(struct probe_exec *ex, struct probe *p, enum pstate st, const char *error)
{
	finish_begin_locked(ex, p, st, error);
	finish_write_locked(ex, p);
}

/* Hands the final record image to the writer, or writes it here. */
static void finish_write_locked(struct probe_exec *ex, struct probe *p)
{
	if (p->img != NULL &&
	    probe_committer_write_stream_async(ex->store, p->id, probe_image_write, p->img,
	                                       on_committed, p) == 0)
		return;
	/* no writer (shutting down, out of memory): write here, under the lock */
	struct vm_err err = {0};
	if (p->img == NULL)
		vm_err_set(&err, VM_ERR_NOMEM, "out of memory");
	probe_committer_forget(ex->store, p->id);
	if (p->img == NULL ||
	    probe_store_write_stream(ex->runs_dir, p->id, probe_image_write, p->img, &err) != 0)
		finish_fallback_locked(ex, p, err.msg);
	else
		finish_done_locked(ex, p, false);
}

/* finish_locked for the worker that ran the probe: the final record's temp
 * file is created and written here with the lock released (that is most of a
 * record write's CPU, and on the writer thread it ran serially for every
 * worker); the writer then only journals and renames it. p is `finishing`
 * meanwhile, so nothing else touches it. */
static void finish_run_locked(struct probe_exec *ex, struct probe *p, enum pstate st,
                              const char *error)
{
	finish_begin_locked(ex, p, st, error);
	/* with a journal the final record stays there alone until the checkpoint:
	 * no file is created on the way to the final state */
	if (p->img != NULL && probe_committer_journaled(ex->store) &&
	    probe_committer_log_stream_async(ex->store, p->id, probe_image_write, p->img, true,
	                                     on_committed, p) == 0)
		return;
	struct probe_image *keep = p->img;
	if (keep != NULL) {
		struct probe_prepared prep;
		struct vm_err err = {0};
		pthread_mutex_unlock(&ex->mu);
		int rc =
		    probe_store_prepare(ex->runs_dir, p->id, probe_image_write, keep, &prep, &err);
		pthread_mutex_lock(&ex->mu);
		if (rc == 0 && probe_committer_write_prepared_async(ex->store, p->id, &prep,
		                                                    on_committed, p) == 0)
			return;
		if (rc == 0)
			probe_prepared_discard(&prep);
	}
	finish_write_locked(ex, p);
}

/* --- starting ahead ------------------------------------------------------------------------ */

/* A step runs only once its start is durable (a crash then reports it
 * interrupted, never skipped), and waiting for that flush was half of a
 * worker's cycle. So the start of step 0 may be written ahead: with the
 * accepted record when a worker is idle (one flush instead of two), or while
 * a worker runs a step, for the queued probe a worker takes next (the flush
 * overlaps the running step). A durable start means "may have started": a
 * crash before the step ran reports it interrupted (the conservative
 * direction; at most nworkers queued probes are written ahead at a time).
 * Memory, and so everything visible, keeps the probe queued until a worker
 * really starts it. */

/* rec as it reads once step 0 runs. Under the lock, undone by unmark_started. */
static void mark_started(json_t *rec, int64_t now_ms)
{
	json_object_set_new(rec, "state", json_string(state_names[P_RUNNING]));
	json_object_set_new(rec, "started_at", time_json(now_ms));
	json_t *s0 = json_array_get(json_object_get(rec, "steps"), 0);
	if (s0 != NULL) {
		json_object_set_new(s0, "status", json_string("running"));
		json_object_set_new(s0, "started_at", time_json(now_ms));
	}
}

static void unmark_started(json_t *rec)
{
	json_object_set_new(rec, "state", json_string(state_names[P_QUEUED]));
	json_object_set_new(rec, "started_at", json_null());
	json_t *s0 = json_array_get(json_object_get(rec, "steps"), 0);
	if (s0 != NULL) {
		json_object_set_new(s0, "status", json_string("pending"));
		json_object_del(s0, "started_at");
	}
}

/* A slot of the concurrency budget is free for one more probe written ahead. */
static bool slot_free_locked(struct probe_exec *ex)
{
	int used = 0, limit = 0;
	if (ex->budget == NULL)
		return true;
	budget_usage(ex->budget, &used, &limit);
	return used + ex->npre < limit;
}

/* p no longer counts as a queued probe written ahead (a worker took it, or it ended). */
static void pre_release_locked(struct probe_exec *ex, struct probe *p)
{
	if (p->pre_counted) {
		p->pre_counted = false;
		ex->npre--;
	}
}

static void on_prestarted(void *ctx, int rc, const char *msg)
{
	struct probe *p = ctx;
	struct probe_exec *ex = p->ex;
	pthread_mutex_lock(&ex->mu);
	probe_image_free(p->pre_img);
	p->pre_img = NULL;
	p->pre_pending = false;
	p->pre_durable = rc == 0;
	if (rc != 0) {
		/* the worker writes the start itself, and reports it if that fails too */
		log_warn("probe", "%s: writing the start ahead failed: %s", p->id, msg);
		pre_release_locked(ex, p);
	}
	/* a cancel while this write was in flight: finished only now, so the
	 * final record is the newer one */
	if (atomic_load(&p->cancel) && !p->interrupt && p->in_queue && p->state == P_QUEUED &&
	    !p->finishing)
		finish_locked(ex, p, P_CANCELED, NULL);
	pthread_cond_broadcast(&ex->work_cv); /* a worker may wait for it */
	pthread_mutex_unlock(&ex->mu);
}

/* Writes ahead the start of step 0 of queued p, without waiting. */
static void prestart_locked(struct probe_exec *ex, struct probe *p)
{
	mark_started(p->rec, time_wall_ms());
	struct probe_image *img = probe_image_new(p->rec, NULL, false);
	unmark_started(p->rec);
	if (img == NULL)
		return;
	p->ex = ex;
	p->pre_img = img;
	p->pre_pending = p->pre_counted = true;
	ex->npre++;
	/* on_prestarted waits for our lock */
	if (probe_committer_log_stream_async(ex->store, p->id, probe_image_write, img, false,
	                                     on_prestarted, p) != 0) {
		p->pre_pending = false;
		p->pre_img = NULL;
		probe_image_free(img);
		pre_release_locked(ex, p);
	}
}

/* A worker is about to run a step: the first queued probe not yet written
 * ahead (they are at the head of the queue) gets its start written ahead. */
static void prestart_next_locked(struct probe_exec *ex)
{
	if (ex->stopping || ex->npre >= ex->nworkers || !probe_committer_journaled(ex->store))
		return;
	for (int k = 0; k < ex->qlen && k < 2 * ex->nworkers; k++) {
		struct probe *q = ex->queue[(ex->qhead + k) % ex->qcap];
		if (q->state != P_QUEUED || q->finishing || q->persisting || q->pre_counted ||
		    q->pre_pending || q->pre_durable || atomic_load(&q->cancel) || q->req == NULL ||
		    q->req->nsteps == 0)
			continue;
		prestart_locked(ex, q);
		return;
	}
}

/* --- running ----------------------------------------------------------------------------- */

struct out_ctx {
	struct probe_exec *ex;
	struct probe *p;
	int step;
	int64_t persisted_ms; /* when the step's last_progress was last made durable */
};

/* A long step's last progress event is kept in its record (last_progress) and
 * made durable this often, so that a restarted agent can say how far an
 * interrupted backup or install got. */
#define PROGRESS_PERSIST_MS 5000

static void on_output(void *c, int stream, const char *data, size_t len)
{
	struct out_ctx *oc = c;
	pthread_mutex_lock(&oc->ex->mu);
	for (size_t off = 0; off < len; off += EV_CHUNK) {
		size_t n = len - off < EV_CHUNK ? len - off : EV_CHUNK;
		json_t *ev = json_pack("{s:i,s:s}", "step", oc->step, "stream",
		                       stream == 1 ? "stdout" : "stderr");
		probe_json_set_bytes(ev, "data", data + off, n);
		emit(oc->ex, oc->p, "output", ev);
	}
	pthread_mutex_unlock(&oc->ex->mu);
}

static void ex_count_write_failure(struct probe_exec *ex);

static void on_event(void *c, const char *level, const char *message,
                     const struct probe_progress *pr)
{
	struct out_ctx *oc = c;
	json_t *ev = json_pack("{s:i,s:s}", "step", oc->step, "level", level);
	probe_json_set_bytes(ev, "message", message, strlen(message));
	if (pr != NULL) {
		json_t *pj = json_pack("{s:I}", "current", (json_int_t)pr->current);
		if (pr->total >= 0)
			json_object_set_new(pj, "total", json_integer((json_int_t)pr->total));
		if (pr->unit != NULL)
			json_object_set_new(pj, "unit", json_string(pr->unit));
		if (pr->detail != NULL)
			json_object_update(pj, pr->detail);
		json_object_set_new(ev, "progress", pj);
	}
	json_t *last = json_deep_copy(ev);
	if (last != NULL) {
		json_object_del(last, "step");
		json_object_set_new(last, "at", time_json(time_wall_ms()));
	}
	struct probe_exec *ex = oc->ex;
	struct probe *p = oc->p;
	pthread_mutex_lock(&ex->mu);
	emit(ex, p, "progress", ev);
	json_t *srec = json_array_get(json_object_get(p->rec, "steps"), (size_t)oc->step);
	struct probe_image *img = NULL;
	int64_t now = time_mono_ms();
	if (srec != NULL && last != NULL) {
		json_object_set_new(srec, "last_progress", last);
		last = NULL;
		if (now - oc->persisted_ms >= PROGRESS_PERSIST_MS)
			img = probe_image_new(p->rec, p->sink, false);
	}
	pthread_mutex_unlock(&ex->mu);
	json_decref(last);
	if (img == NULL)
		return;
	/* journal only (the record of a running probe is read from memory): one
	 * append and one fdatasync every PROGRESS_PERSIST_MS at most */
	struct vm_err werr = {0};
	if (probe_committer_log_stream(ex->store, p->id, probe_image_write, img, &werr) != 0) {
		log_warn("probe", "%s: the progress of step %d could not be persisted: %s", p->id,
		         oc->step, werr.msg);
		ex_count_write_failure(ex);
	}
	probe_image_free(img);
	oc->persisted_ms = now;
}

/* Each limit the request names replaces the probe.* default. */
static struct cg_limits step_limits(const struct cg_limits *req, const struct cg_limits *dflt)
{
	struct cg_limits l = *dflt;
	if (req->memory_max)
		l.memory_max = req->memory_max;
	if (req->cpu_max)
		l.cpu_max = req->cpu_max;
	if (req->pids_max)
		l.pids_max = req->pids_max;
	return l;
}

static void ex_count_write_failure(struct probe_exec *ex)
{
	pthread_mutex_lock(&ex->mu);
	ex->write_failures++;
	pthread_mutex_unlock(&ex->mu);
}

static void run_probe(struct probe_exec *ex, struct probe *p)
{
	/* p->req is only read (not freed) until finish_locked, which this thread calls
	 * (it is freed once the final record is durable). */
	const struct probe_request *req = p->req;
	pthread_mutex_lock(&ex->mu); /* probe_exec_reconfigure may change the settings */
	uint64_t timeout = req->timeout_ms ? req->timeout_ms : ex->default_timeout_ms;
	pthread_mutex_unlock(&ex->mu);
	int64_t deadline = time_mono_ms() + (int64_t)timeout;
	enum pstate final = P_SUCCEEDED;
	const char *error = NULL;
	char errbuf[300];
	json_t *steps = json_object_get(p->rec, "steps");
	/* the worker alone uses the sink until finish_locked hands it to the writer */
	p->sink = probe_sink_new(ex->runs_dir, p->id);
	for (int i = 0; i < req->nsteps; i++) {
		const struct probe_step_req *st = &req->steps[i];
		if (atomic_load(&p->cancel)) {
			final = p->interrupt ? P_INTERRUPTED : P_CANCELED;
			break;
		}
		int64_t now = time_mono_ms();
		if (now >= deadline) {
			final = P_TIMED_OUT;
			error = "probe timeout reached";
			break;
		}
		int64_t dl = st->timeout_ms ? now + (int64_t)st->timeout_ms : deadline;
		struct out_ctx oc = {ex, p, i, time_mono_ms()};
		/* each step checks the allow-list in force when it starts (reloads apply) */
		struct cfg_strlist allow;
		pthread_mutex_lock(&ex->mu);
		allow = ex->allow;
		struct cfg_backup backup = ex->backup;
		uint64_t grace_ms = ex->grace_ms;
		struct cg_limits limits = step_limits(&req->limits, &ex->limits);
		struct cfg_host host = ex->host;
		struct probe_http http = ex->http;
		pthread_mutex_unlock(&ex->mu);
		struct probe_step_ctx ctx = {
		    .work_dir = ex->work_dir,
		    .output_cap = ex->output_cap,
		    .grace_ms = grace_ms,
		    .allow = &allow,
		    .deadline_ms = dl < deadline ? dl : deadline,
		    .cancel = &p->cancel,
		    .on_output = on_output,
		    .on_event = on_event,
		    .out_ctx = &oc,
		    .cgroup = ex->cgroup,
		    .limits = limits,
		    .sink = p->sink,
		    .backup = &backup,
		    .host = &host,
		    .http = &http,
		    .containers = ex->containers,
		    .probe_id = p->id,
		    .sub = p->sub,
		};
		pthread_mutex_lock(&ex->mu);
		json_t *srec = json_array_get(steps, (size_t)i);
		json_object_set_new(srec, "status", json_string("running"));
		json_object_set_new(srec, "started_at", time_json(time_wall_ms()));
		/* Durable before it runs: after a crash this step is `interrupted` (it
		 * may have run), never `skipped`. Spilled output of earlier steps is
		 * not copied each time: the record marks it output_not_persisted.
		 * Step 0's start may have been written ahead (prestart_locked). */
		bool ahead = i == 0 && p->pre_durable;
		p->pre_durable = false;
		struct probe_image *img = ahead ? NULL : probe_image_new(p->rec, p->sink, false);
		pthread_mutex_unlock(&ex->mu);
		struct vm_err werr = {0};
		int wrc = 0;
		if (!ahead && img == NULL)
			wrc = vm_err_set(&werr, VM_ERR_NOMEM, "out of memory");
		else if (!ahead)
			wrc = probe_committer_log_stream(ex->store, p->id, probe_image_write, img,
			                                 &werr);
		probe_image_free(img);
		pthread_mutex_lock(&ex->mu);
		if (wrc != 0) {
			/* running a step whose start is not durable could be misreported */
			json_object_set_new(srec, "status", json_string("pending"));
			json_object_del(srec, "started_at");
			pthread_mutex_unlock(&ex->mu);
			snprintf(errbuf, sizeof(errbuf),
			         "the start of step %d could not be persisted: %.200s", i,
			         werr.msg);
			log_error("probe", "%s: %s", p->id, errbuf);
			ex_count_write_failure(ex);
			final = P_FAILED;
			error = errbuf;
			break;
		}
		emit(ex, p, "step", json_pack("{s:i,s:s}", "step", i, "status", "running"));
		prestart_next_locked(ex); /* its flush overlaps this step */
		pthread_mutex_unlock(&ex->mu);

		json_t *result = json_object();
		int64_t t0 = time_mono_ms();
		probe_sink_set_step(p->sink, i);
		enum probe_step_status ss = probe_steps[st->type].run(st, &ctx, result);
		json_object_set_new(result, "duration_ms", json_integer(time_mono_ms() - t0));
		json_object_set_new(result, "status", json_string(step_status_names[ss]));
		if (p->sink != NULL) {
			probe_sink_abort_open(p->sink);
			probe_sink_spill_large(p->sink, result);
		}

		pthread_mutex_lock(&ex->mu);
		json_object_update(srec, result);
		json_t *ev = json_pack("{s:i,s:s}", "step", i, "status", step_status_names[ss]);
		json_t *code = json_object_get(result, "exit_code");
		if (code != NULL)
			json_object_set(ev, "exit_code", code);
		emit(ex, p, "step", ev);
		pthread_mutex_unlock(&ex->mu);
		json_decref(result);

		if (ss == STEP_CANCELED) {
			final = p->interrupt ? P_INTERRUPTED : P_CANCELED;
			break;
		}
		if (ss == STEP_TIMED_OUT && time_mono_ms() >= deadline) {
			final = P_TIMED_OUT;
			error = "probe timeout reached";
			break;
		}
		if (ss != STEP_OK) {
			final = ss == STEP_TIMED_OUT ? P_TIMED_OUT : P_FAILED;
			if (!req->continue_on_error)
				break;
		}
	}
	if (final == P_SUCCEEDED && atomic_load(&p->cancel))
		final = p->interrupt ? P_INTERRUPTED : P_CANCELED;
	if (final == P_INTERRUPTED)
		error = "the agent was shutting down";
	pthread_mutex_lock(&ex->mu);
	if (error == errbuf)
		json_object_set_new(p->rec, "error_code", json_string("record_write_failed"));
	finish_run_locked(ex, p, final, error);
	pthread_mutex_unlock(&ex->mu);
}

/* The next probe for a worker, under ex->mu: entries canceled while queued
 * are dropped; a live probe leaves the queue only with a slot of the
 * concurrency budget (*slot), else it stays queued and NULL says wait. While
 * stopping, or when canceled, it leaves without one (only to be recorded). */
static struct probe *next_locked(struct probe_exec *ex, bool *slot)
{
	*slot = false;
	while (ex->qlen > 0) {
		struct probe *p = ex->queue[ex->qhead];
		bool stale = p->state != P_QUEUED || p->finishing;
		if (!stale && !ex->stopping && !atomic_load(&p->cancel)) {
			if (!budget_try_take(ex->budget))
				return NULL;
			*slot = true;
		}
		ex->qhead = (ex->qhead + 1) % ex->qcap;
		ex->qlen--;
		p->in_queue = false;
		pre_release_locked(ex, p);
		if (!stale)
			return p;
	}
	return NULL;
}

/* budget watcher: a slot came free (a probe or a shell ended). */
static void slot_freed(void *ctx)
{
	struct probe_exec *ex = ctx;
	pthread_mutex_lock(&ex->mu);
	pthread_cond_broadcast(&ex->work_cv);
	pthread_mutex_unlock(&ex->mu);
}

static void *worker(void *arg)
{
	struct probe_exec *ex = arg;
	pthread_mutex_lock(&ex->mu);
	for (;;) {
		bool slot;
		struct probe *p = next_locked(ex, &slot);
		if (p == NULL) {
			if (ex->stopping)
				break; /* and nothing left */
			/* idle: apply retention by age now and then, not only when probes end */
			struct timespec until = time_deadline(RETAIN_EVERY_S * 1000);
			ex->idle++;
			int wr = pthread_cond_timedwait(&ex->work_cv, &ex->mu, &until);
			ex->idle--;
			if (wr == ETIMEDOUT)
				retain(ex);
			continue;
		}
		/* its start is being written ahead: never finished or run before that
		 * write is done (the record written next must be the newer one) */
		while (p->pre_pending)
			pthread_cond_wait(&ex->work_cv, &ex->mu);
		if (!slot) {
			finish_locked(ex, p,
			              ex->stopping || p->interrupt ? P_INTERRUPTED : P_CANCELED,
			              ex->stopping ? "the agent was shutting down" : NULL);
			continue;
		}
		set_state(ex, p, P_RUNNING);
		json_object_set_new(p->rec, "started_at", time_json(time_wall_ms()));
		pthread_mutex_unlock(&ex->mu);
		run_probe(ex, p);
		budget_give(ex->budget); /* not under ex->mu: its watcher takes it */
		pthread_mutex_lock(&ex->mu);
	}
	pthread_mutex_unlock(&ex->mu);
	return NULL;
}

/* --- API ----------------------------------------------------------------------------------- */

static int new_id(char *out, size_t cap, struct vm_err *err)
{
	uint8_t rnd[5];
	char hex[11];
	if (rand_bytes(rnd, sizeof(rnd), err) != 0)
		return -1; /* never a guessable id: it names the probe's output */
	hex_encode(rnd, sizeof(rnd), hex);
	snprintf(out, cap, "p-%012" PRIx64 "-%s", (uint64_t)time_wall_ms(), hex);
	return 0;
}

/* Keys are per caller: sha256(tenant_id NUL sub), so a replay by another
 * subject never reaches this subject's probe or output. */
static void caller_scope(const struct probe_caller *who, uint8_t out[SHA256_LEN])
{
	const char *t = who != NULL && who->tenant_id != NULL ? who->tenant_id : "";
	const char *u = who != NULL && who->sub != NULL ? who->sub : "";
	size_t tl = strlen(t), ul = strlen(u);
	char *buf = malloc(tl + ul + 2);
	if (buf == NULL) {
		memset(out, 0xff, SHA256_LEN); /* matches nothing real */
		return;
	}
	memcpy(buf, t, tl + 1);
	memcpy(buf + tl + 1, u, ul + 1);
	sha256_buf(buf, tl + ul + 2, out);
	free(buf);
}

int probe_submit(struct probe_exec *ex, const char *body, size_t len,
                 const struct probe_caller *who, struct probe_submit_out *out, struct vm_err *err)
{
	memset(out, 0, sizeof(*out));
	struct probe_request *req = calloc(1, sizeof(*req));
	struct probe *p = calloc(1, sizeof(*p));
	if (req == NULL || p == NULL) {
		free(req);
		free(p);
		vm_err_set(err, VM_ERR_NOMEM, "out of memory");
		return PROBE_E_IO;
	}
	if (probe_request_parse(body, len, req, out->err_path, sizeof(out->err_path), err) != 0) {
		probe_request_free(req);
		free(req);
		free(p);
		return PROBE_E_INVALID;
	}
	if (probe_request_check_output(req, ex->output_cap, out->err_path, sizeof(out->err_path),
	                               err) != 0) {
		probe_request_free(req);
		free(req);
		free(p);
		return PROBE_E_TOO_LARGE;
	}
	for (int i = 0; i < req->nsteps; i++) {
		const char *need = probe_steps[req->steps[i].type].scope;
		if (need != NULL && !jwt_scope_list_has(who != NULL ? who->scope : NULL, need)) {
			snprintf(out->err_path, sizeof(out->err_path), "steps[%d].type", i);
			vm_err_set(err, VM_ERR_PERM, "step type %s needs scope %s",
			           probe_steps[req->steps[i].type].name, need);
			probe_request_free(req);
			free(req);
			free(p);
			return PROBE_E_FORBIDDEN;
		}
	}
	caller_scope(who, p->idem_scope);
	snprintf(p->sub, sizeof(p->sub), "%s", who != NULL && who->sub != NULL ? who->sub : "");
	int rc = PROBE_CREATED;
	pthread_mutex_lock(&ex->mu);
	if (ex->stopping) {
		rc = PROBE_E_STOPPED;
		vm_err_set(err, VM_ERR_BUSY, "the agent is shutting down");
		goto unlock_fail;
	}
	if (req->idempotency_key != NULL) {
		for (struct probe *q = ex->tail; q != NULL; q = q->prev) {
			if (strcmp(q->idem, req->idempotency_key) != 0 ||
			    memcmp(q->idem_scope, p->idem_scope, SHA256_LEN) != 0)
				continue;
			snprintf(out->id, sizeof(out->id), "%s", q->id);
			if (memcmp(q->body_hash, req->body_hash, SHA256_LEN) != 0) {
				rc = PROBE_E_CONFLICT;
				vm_err_set(err, VM_ERR_INVALID,
				           "idempotency_key was used by probe %s with a "
				           "different request",
				           q->id);
				goto unlock_fail;
			}
			rc = PROBE_EXISTING;
			json_t *rec = q->rec != NULL ? json_deep_copy(q->rec) : NULL;
			pthread_mutex_unlock(&ex->mu);
			out->record = rec != NULL ? rec : probe_get(ex, q->id);
			probe_request_free(req);
			free(req);
			free(p);
			if (out->record == NULL) {
				vm_err_set(err, VM_ERR_IO, "the record of probe %s is unreadable",
				           out->id);
				return PROBE_E_IO;
			}
			return rc;
		}
	}
	if (ex->qlen + ex->qreserved >= ex->qcap) {
		rc = PROBE_E_FULL;
		vm_err_set(err, VM_ERR_BUSY,
		           "the probe queue is full (%d queued, probe.queue_size)", ex->qcap);
		goto unlock_fail;
	}
	if (new_id(p->id, sizeof(p->id), err) != 0) {
		rc = PROBE_E_IO;
		goto unlock_fail;
	}
	ex->qreserved++;
	p->created_ms = time_wall_ms();
	p->state = P_QUEUED;
	p->persisting = true;
	p->req = req;
	memcpy(p->body_hash, req->body_hash, SHA256_LEN);
	if (req->idempotency_key != NULL)
		snprintf(p->idem, sizeof(p->idem), "%s", req->idempotency_key);
	p->rec = new_record(p, req, req->timeout_ms ? req->timeout_ms : ex->default_timeout_ms);
	/* a worker is idle and nothing is queued: it takes this probe at once, so
	 * the accepted record carries step 0's start (one flush before it runs) */
	bool ahead = p->rec != NULL && ex->idle > ex->npre && ex->qlen == 0 && req->nsteps > 0 &&
	             slot_free_locked(ex) && probe_committer_journaled(ex->store);
	if (ahead) {
		mark_started(p->rec, p->created_ms);
		p->pre_counted = true;
		ex->npre++;
	}
	char *text = p->rec != NULL ? json_dumps(p->rec, JSON_COMPACT) : NULL;
	if (ahead)
		unmark_started(p->rec);
	link_probe(ex, p);
	emit(ex, p, "state", json_pack("{s:s,s:s}", "id", p->id, "state", "queued"));
	pthread_mutex_unlock(&ex->mu);

	/* Durable before it can run: a crash from here on shows it as interrupted
	 * (and never runs it). The caller's admit flushes meanwhile. */
	struct vm_err werr = {0};
	struct probe_meanwhile mw = {who != NULL ? who->admit : NULL,
	                             who != NULL ? who->admit_ctx : NULL, 0};
	int wrc = text == NULL     ? -1
	          : mw.fn != NULL ? probe_committer_log_meanwhile(ex->store, p->id, text, &mw, &werr)
	                          : probe_committer_log(ex->store, p->id, text, &werr);
	free(text);

	pthread_mutex_lock(&ex->mu);
	ex->qreserved--;
	p->persisting = false;
	bool refused = wrc == 0 && mw.rc != 0;
	p->pre_durable = ahead && wrc == 0 && !refused;
	if (wrc != 0 || refused || atomic_load(&p->cancel) || ex->stopping)
		pre_release_locked(ex, p); /* it never enters the queue */
	if (wrc != 0) {
		unlink_probe(ex, p);
		pthread_mutex_unlock(&ex->mu);
		vm_err_set(err, VM_ERR_IO, "cannot persist the probe record: %s",
		           text == NULL ? "out of memory" : werr.msg);
		free_probe(p);
		return text == NULL ? PROBE_E_IO : PROBE_E_PERSIST;
	}
	snprintf(out->id, sizeof(out->id), "%s", p->id);
	if (refused) {
		/* accepted on disk, so it ends there too: as not run */
		finish_locked(ex, p, P_FAILED, "not run: the audit log could not be written");
		pthread_mutex_unlock(&ex->mu);
		vm_err_set(err, VM_ERR_IO, "its audit line could not be written; the probe was not run");
		return PROBE_E_ADMIT;
	}
	out->record = json_deep_copy(p->rec);
	if (atomic_load(&p->cancel) || ex->stopping) {
		finish_locked(ex, p, ex->stopping || p->interrupt ? P_INTERRUPTED : P_CANCELED,
		              NULL);
	} else {
		ex->queue[(ex->qhead + ex->qlen) % ex->qcap] = p;
		ex->qlen++;
		p->in_queue = true;
		pthread_cond_signal(&ex->work_cv);
	}
	pthread_mutex_unlock(&ex->mu);
	return PROBE_CREATED;

unlock_fail:
	pthread_mutex_unlock(&ex->mu);
	probe_request_free(req);
	free(req);
	free(p);
	return rc;
}

json_t *probe_get(struct probe_exec *ex, const char *id)
{
	pthread_mutex_lock(&ex->mu);
	struct probe *p = find(ex, id);
	json_t *rec = p != NULL && p->rec != NULL ? json_deep_copy(p->rec) : NULL;
	bool on_disk = p != NULL && p->rec == NULL;
	pthread_mutex_unlock(&ex->mu);
	if (on_disk)
		rec = probe_committer_read(ex->store, ex->runs_dir, id, ex->record_max);
	return rec;
}

int probe_record_fd(struct probe_exec *ex, const char *id, uint64_t *size)
{
	pthread_mutex_lock(&ex->mu);
	struct probe *p = find(ex, id);
	int rc = p == NULL ? -1 : p->rec != NULL ? -2 : 0;
	pthread_mutex_unlock(&ex->mu);
	if (rc != 0)
		return rc;
	return probe_committer_open(ex->store, ex->runs_dir, id, ex->record_max, size);
}

json_t *probe_list(struct probe_exec *ex, const char *state, int limit)
{
	json_t *arr = json_array();
	int want = state_of(state);
	pthread_mutex_lock(&ex->mu);
	for (struct probe *p = ex->tail; p != NULL && (int)json_array_size(arr) < limit;
	     p = p->prev) {
		if (want >= 0 && (int)p->state != want)
			continue;
		json_t *s = json_pack("{s:s,s:s,s:o,s:o}", "id", p->id, "state",
		                      state_names[p->state], "created_at", time_json(p->created_ms),
		                      "finished_at", time_json(p->finished_ms));
		if (p->idem[0] != '\0')
			json_object_set_new(s, "idempotency_key", json_string(p->idem));
		json_array_append_new(arr, s);
	}
	pthread_mutex_unlock(&ex->mu);
	return arr;
}

enum probe_cancel_rc probe_cancel(struct probe_exec *ex, const char *id, json_t **record)
{
	*record = NULL;
	pthread_mutex_lock(&ex->mu);
	struct probe *p = find(ex, id);
	if (p == NULL) {
		pthread_mutex_unlock(&ex->mu);
		return PROBE_CANCEL_UNKNOWN;
	}
	if (terminal(p->state) || p->finishing) {
		pthread_mutex_unlock(&ex->mu);
		/* not loaded: a finished record can be as large as the limit */
		return PROBE_CANCEL_FINISHED;
	}
	atomic_store(&p->cancel, true);
	/* queued: nothing to kill; the worker skips it. Running: proc_run sees the flag. */
	if (p->state == P_QUEUED && !p->persisting && !p->pre_pending)
		finish_locked(ex, p, P_CANCELED, NULL); /* else on_prestarted or the worker */
	json_t *rec = p->rec != NULL ? json_deep_copy(p->rec) : NULL;
	pthread_mutex_unlock(&ex->mu);
	*record = rec != NULL ? rec : probe_get(ex, id);
	if (*record != NULL)
		json_object_set_new(*record, "cancel_requested", json_true());
	return PROBE_CANCEL_OK;
}

bool probe_events_acquire(struct probe_exec *ex)
{
	pthread_mutex_lock(&ex->mu);
	bool ok = ex->streams < PROBE_MAX_STREAMS;
	ex->streams += ok;
	pthread_mutex_unlock(&ex->mu);
	return ok;
}

void probe_events_release(struct probe_exec *ex)
{
	pthread_mutex_lock(&ex->mu);
	ex->streams--;
	pthread_mutex_unlock(&ex->mu);
}

void probe_event_free(struct probe_event *ev)
{
	free(ev->data);
	ev->data = NULL;
}

int probe_events_wait(struct probe_exec *ex, const char *id, uint64_t *seq, struct probe_event *evs,
                      int max, int timeout_ms)
{
	/* monotonic (time_cond_init): a wall-clock step neither ends an event
	 * stream's wait early nor holds it past its timeout */
	struct timespec until = time_deadline(timeout_ms);
	int n = 0;
	pthread_mutex_lock(&ex->mu);
	for (;;) {
		struct probe *p = find(ex, id);
		if (p == NULL || ex->stopping) {
			n = -1;
			break;
		}
		if (p->ev_next > *seq) {
			if (*seq < p->ev_first && n < max) {
				char buf[64];
				snprintf(buf, sizeof(buf), "{\"lost\":%" PRIu64 "}",
				         p->ev_first - *seq);
				evs[n].seq = p->ev_first - 1;
				snprintf(evs[n].type, sizeof(evs[n].type), "lost");
				evs[n++].data = strdup(buf);
				*seq = p->ev_first;
			}
			for (; *seq < p->ev_next && n < max; (*seq)++) {
				const struct ev *e = &p->ring[*seq % EV_RING];
				evs[n].seq = e->seq;
				snprintf(evs[n].type, sizeof(evs[n].type), "%s", e->type);
				evs[n++].data = strdup(e->data != NULL ? e->data : "{}");
			}
			break;
		}
		if (pthread_cond_timedwait(&ex->ev_cv, &ex->mu, &until) == ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&ex->mu);
	return n;
}

/* --- start / stop ------------------------------------------------------------------------- */

struct load_ctx {
	struct probe_exec *ex;
	int interrupted;
};

static void hex_to(const char *hex, uint8_t out[SHA256_LEN])
{
	if (hex != NULL)
		(void)hex_decode(hex, strlen(hex), out, SHA256_LEN);
}

/* Bounded: unfinished records are at most the last run's queue and workers,
 * unless its configuration was larger; the rest are only counted. */
#define RECOVERED_MAX 4096

static void note_recovered(struct probe_exec *ex, const char *id)
{
	if (ex->nrecovered == ex->recovered_cap) {
		size_t cap = ex->recovered_cap ? 2 * ex->recovered_cap : 16;
		void *n = cap <= RECOVERED_MAX ? realloc(ex->recovered, cap * sizeof(*ex->recovered))
		                               : NULL;
		if (n == NULL) {
			ex->recovered_lost++;
			return;
		}
		ex->recovered = n;
		ex->recovered_cap = cap;
	}
	snprintf(ex->recovered[ex->nrecovered++], PROBE_ID_MAX, "%s", id);
}

size_t probe_exec_take_interrupted(struct probe_exec *ex, probe_id_fn fn, void *ctx)
{
	pthread_mutex_lock(&ex->mu);
	char(*ids)[PROBE_ID_MAX] = ex->recovered;
	size_t n = ex->nrecovered, lost = ex->recovered_lost;
	ex->recovered = NULL;
	ex->nrecovered = ex->recovered_cap = ex->recovered_lost = 0;
	pthread_mutex_unlock(&ex->mu);
	for (size_t i = 0; i < n; i++)
		fn(ctx, ids[i]);
	free(ids);
	return lost;
}

/* A record found at startup. Unfinished ones ran (or were about to) when the
 * agent died: they become interrupted, and are never run again. */
static void load_one(void *c, const char *id, json_t *rec)
{
	struct load_ctx *lc = c;
	struct probe_exec *ex = lc->ex;
	struct probe *p = calloc(1, sizeof(*p));
	if (p == NULL)
		return;
	snprintf(p->id, sizeof(p->id), "%s", id);
	int st = state_of(json_string_value(json_object_get(rec, "state")));
	p->created_ms = (int64_t)json_integer_value(json_object_get(rec, "created_ms"));
	p->finished_ms = (int64_t)json_integer_value(json_object_get(rec, "finished_ms"));
	const char *idem = json_string_value(json_object_get(rec, "idempotency_key"));
	if (idem != NULL)
		snprintf(p->idem, sizeof(p->idem), "%s", idem);
	hex_to(json_string_value(json_object_get(rec, "request_sha256")), p->body_hash);
	/* records from before keys were scoped match no caller: a replay makes a new probe */
	memset(p->idem_scope, 0xff, SHA256_LEN);
	hex_to(json_string_value(json_object_get(rec, "idempotency_scope")), p->idem_scope);
	if (st < 0 || !terminal((enum pstate)st)) {
		p->finished_ms = time_wall_ms();
		json_object_set_new(rec, "state", json_string("interrupted"));
		json_object_set_new(rec, "error",
		                    json_string("the agent stopped while this probe was "
		                                "queued or running; it was not re-run"));
		json_object_set_new(rec, "finished_at", time_json(p->finished_ms));
		json_object_set_new(rec, "finished_ms", json_integer(p->finished_ms));
		size_t i;
		json_t *s;
		json_array_foreach(json_object_get(rec, "steps"), i, s)
		{
			const char *ss = json_string_value(json_object_get(s, "status"));
			if (ss != NULL && strcmp(ss, "running") == 0)
				json_object_set_new(s, "status", json_string("interrupted"));
			else if (ss != NULL && strcmp(ss, "pending") == 0)
				json_object_set_new(s, "status", json_string("skipped"));
		}
		char *text = json_dumps(rec, JSON_COMPACT);
		struct vm_err err = {0};
		if (text == NULL || probe_store_write(ex->runs_dir, id, text, &err) != 0)
			log_error("probe", "%s: cannot mark interrupted: %s", id, err.msg);
		free(text);
		st = P_INTERRUPTED;
		lc->interrupted++;
		note_recovered(ex, id);
	}
	p->state = (enum pstate)st;
	p->ended = true;
	emit(ex, p, "end", json_pack("{s:s,s:s}", "id", p->id, "state", state_names[st]));
	link_probe(ex, p);
	ex->nfinished++;
}

struct probe_exec *probe_exec_start(const struct cfg *cfg, struct cg_tree *cg,
                                    struct budget *budget, struct vm_err *err)
{
	struct probe_exec *ex = calloc(1, sizeof(*ex));
	if (ex == NULL) {
		vm_err_set(err, VM_ERR_NOMEM, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&ex->mu, NULL);
	time_cond_init(&ex->work_cv);
	time_cond_init(&ex->ev_cv);
	snprintf(ex->work_dir, sizeof(ex->work_dir), "%s", cfg->probe.work_dir);
	snprintf(ex->runs_dir, sizeof(ex->runs_dir), "%s/runs", cfg->probe.work_dir);
	ex->default_timeout_ms = cfg->probe.default_timeout_ms;
	ex->output_cap = cfg->probe.output_cap;
	/* the same derivation validation uses: every accepted record reads back */
	ex->record_max = probe_record_max(ex->output_cap);
	ex->grace_ms = cfg->probe.cancel_grace_ms;
	ex->retention_age_ms = cfg->probe.retention_age_ms;
	ex->retention_count = cfg->probe.retention_count;
	ex->allow = cfg->probe.allow;
	ex->backup = cfg->backup;
	ex->host = cfg->host;
	http_settings(&ex->http, cfg);
	ex->cgroup = cg;
	ex->budget = budget;
	ex->limits = (struct cg_limits){cfg->probe.memory_max, (uint32_t)cfg->probe.cpu_max,
	                                (uint32_t)cfg->probe.pids_max};
	ex->qcap = cfg->probe.queue_size;
	ex->queue = calloc((size_t)ex->qcap, sizeof(*ex->queue));
	ex->workers = calloc((size_t)cfg->probe.max_concurrent, sizeof(*ex->workers));
	if (ex->queue == NULL || ex->workers == NULL) {
		vm_err_set(err, VM_ERR_NOMEM, "out of memory");
		goto fail;
	}
	char scripts[PATH_MAX + 16];
	snprintf(scripts, sizeof(scripts), "%s/scripts", ex->work_dir);
	if (fs_mkdir_p(ex->runs_dir, 0700, err) != 0 || fs_mkdir_p(scripts, 0700, err) != 0)
		goto fail;
	int replayed = 0;
	if (probe_store_recover(ex->runs_dir, &replayed, err) != 0)
		goto fail;
	if (replayed > 0)
		log_info("probe", "%d record(s) restored from the journal", replayed);
	struct load_ctx lc = {ex, 0};
	int quarantined = 0;
	pthread_mutex_lock(&ex->mu);
	int rc = probe_store_scan(ex->runs_dir, ex->retention_count + LOAD_SLACK, ex->record_max,
	                          load_one, &lc, &quarantined, err);
	ex->quarantined = (uint64_t)quarantined;
	retain(ex);
	pthread_mutex_unlock(&ex->mu);
	if (rc != 0)
		goto fail;
	ex->store = probe_committer_start(ex->runs_dir, err);
	if (ex->store == NULL)
		goto fail;
	if (quarantined > 0)
		log_warn("probe", "%d unreadable record(s) moved to %s/%s/", quarantined,
		         ex->runs_dir, PROBE_QUARANTINE_DIR);
	if (lc.interrupted > 0)
		log_warn("probe",
		         "%d probe(s) were unfinished when the agent stopped: marked "
		         "interrupted, not re-run",
		         lc.interrupted);
	budget_watch(ex->budget, slot_freed, ex);
	for (int i = 0; i < cfg->probe.max_concurrent; i++) {
		if (pthread_create(&ex->workers[i], NULL, worker, ex) != 0) {
			vm_err_set(err, VM_ERR_NOMEM, "cannot start probe workers");
			probe_exec_stop(ex);
			return NULL;
		}
		ex->nworkers++;
	}
	log_info("probe", "executor: %d workers, queue %d, records in %s", ex->nworkers, ex->qcap,
	         ex->runs_dir);
	return ex;
fail:
	probe_exec_stop(ex);
	return NULL;
}

void probe_exec_stop(struct probe_exec *ex)
{
	if (ex == NULL)
		return;
	pthread_mutex_lock(&ex->mu);
	ex->stopping = true;
	for (struct probe *p = ex->head; p != NULL; p = p->next) {
		if (terminal(p->state) || p->finishing)
			continue;
		p->interrupt = true;
		atomic_store(&p->cancel, true);
	}
	pthread_cond_broadcast(&ex->work_cv);
	pthread_cond_broadcast(&ex->ev_cv);
	pthread_mutex_unlock(&ex->mu);
	/* Workers drain the queue (each queued probe is recorded interrupted) and
	 * their running step is terminated within probe.cancel_grace. */
	for (int i = 0; i < ex->nworkers; i++)
		pthread_join(ex->workers[i], NULL);
	budget_watch(ex->budget, NULL, NULL); /* a shell's release may be calling it */
	probe_committer_stop(ex->store);
	while (ex->head != NULL) {
		struct probe *p = ex->head;
		unlink_probe(ex, p);
		free_probe(p);
	}
	free(ex->queue);
	free(ex->workers);
	free(ex->recovered);
	pthread_cond_destroy(&ex->work_cv);
	pthread_cond_destroy(&ex->ev_cv);
	pthread_mutex_destroy(&ex->mu);
	free(ex);
}

void probe_exec_reconfigure(struct probe_exec *ex, const struct cfg *cfg)
{
	if (ex == NULL)
		return;
	pthread_mutex_lock(&ex->mu);
	ex->allow = cfg->probe.allow;
	ex->backup = cfg->backup;
	ex->host = cfg->host;
	http_settings(&ex->http, cfg);
	ex->default_timeout_ms = cfg->probe.default_timeout_ms;
	ex->grace_ms = cfg->probe.cancel_grace_ms;
	ex->retention_age_ms = cfg->probe.retention_age_ms;
	ex->retention_count = cfg->probe.retention_count;
	ex->limits = (struct cg_limits){cfg->probe.memory_max, (uint32_t)cfg->probe.cpu_max,
	                                (uint32_t)cfg->probe.pids_max};
	retain(ex);
	pthread_mutex_unlock(&ex->mu);
}

void probe_queue_depth(struct probe_exec *ex, uint64_t *queued, uint64_t *running)
{
	*queued = *running = 0;
	if (ex == NULL)
		return;
	pthread_mutex_lock(&ex->mu);
	*queued = (uint64_t)ex->qlen;
	/* the list holds at most retention_count + LOAD_SLACK records: cheap to walk */
	for (struct probe *p = ex->head; p != NULL; p = p->next)
		*running += p->state == P_RUNNING;
	pthread_mutex_unlock(&ex->mu);
}

void probe_store_health(struct probe_exec *ex, uint64_t *write_failures, uint64_t *quarantined)
{
	*write_failures = *quarantined = 0;
	if (ex == NULL)
		return;
	pthread_mutex_lock(&ex->mu);
	*write_failures = ex->write_failures;
	*quarantined = ex->quarantined;
	pthread_mutex_unlock(&ex->mu);
}

void probe_exec_set_containers(struct probe_exec *ex, struct ctr_engine *engine)
{
	if (ex != NULL)
		ex->containers = engine;
}
