/* Reporter: builds a report every report_interval (and at once when the state
 * changes) and delivers it to POST {control_plane_url}/v1/agents/{id}/health.
 * When the spool is empty a report is sent directly; if that fails, or when
 * older reports wait, it goes to the spool first and the spool is drained
 * oldest first, so the control plane sees reports in order, each at least
 * once (ids let it de-duplicate). Runs on its own thread: a hung control
 * plane never delays checks, the tunnel or the webhook. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/cp.h"
#include "core/fs.h"
#include "core/http.h"
#include "core/log.h"
#include "core/rand.h"
#include "core/time.h"
#include "health/internal.h"

extern const char vma_build_version[];

/* --- one delivery --------------------------------------------------------------------- */

struct outcome {
	int rc; /* http_request's */
	long status;
	long retry_after_s;
	bool has_time;
	double server_time;
	bool want_inventory; /* the answer asks for an inventory report */
	char error[160];
};

static bool delivered(const struct outcome *o)
{
	/* 409: the control plane already has this id (a resend after a lost answer). */
	return o->rc == 0 && ((o->status >= 200 && o->status < 300) || o->status == 409);
}

/* A report the control plane will never take (malformed for it): drop it
 * instead of blocking every later one behind it. */
static bool rejected(const struct outcome *o)
{
	return o->rc == 0 && (o->status == 400 || o->status == 413 || o->status == 422);
}

static void send_report(struct health_monitor *m, const struct cp_creds *cred, const char *id,
                        const char *body, size_t len, struct outcome *out)
{
	struct cp_conf conf;
	char tenant[CFG_ID_MAX];
	pthread_mutex_lock(&m->mu);
	conf = m->cp;
	snprintf(tenant, sizeof(tenant), "%s", m->tenant_id);
	uint64_t interval = m->report_interval_ms;
	pthread_mutex_unlock(&m->mu);
	memset(out, 0, sizeof(*out));
	char path[CP_ID_MAX + 32], idem[80];
	snprintf(path, sizeof(path), "/v1/agents/%s/health", cred->agent_id);
	snprintf(idem, sizeof(idem), "Idempotency-Key: %s", id);
	const char *extra[] = {idem, NULL};
	/* A call never outlives the interval by much, nor takes more than 30 s. */
	uint64_t total = interval < 2000 ? 2000 : interval > 30000 ? 30000 : interval;
	struct cp_opts o = cp_conf_opts(&conf);
	o.timeout_ms = total;
	o.cancel = &m->stop;
	struct http_resp r;
	struct vm_err err = {0};
	/* One attempt: the spool and retry_wait own the retries of reports. */
	out->rc = cp_call(&o, cred->token.value, cred, tenant, "POST", path, body, len, extra, 1,
	                  &r, &err);
	out->status = r.status;
	out->retry_after_s = r.retry_after_s;
	if (out->rc != 0)
		snprintf(out->error, sizeof(out->error), "%.*s", (int)sizeof(out->error) - 1,
		         err.msg);
	else if (!delivered(out))
		snprintf(out->error, sizeof(out->error), "HTTP %ld", r.status);
	if (out->rc == 0 && r.body != NULL) {
		json_t *j = json_loads(r.body, 0, NULL);
		json_t *st = json_object_get(j, "server_time");
		if (json_is_number(st)) {
			out->has_time = true;
			out->server_time = json_number_value(st);
		}
		out->want_inventory = json_is_true(json_object_get(j, "want_inventory"));
		json_decref(j);
	}
	http_resp_free(&r);
}

/* --- the loop ----------------------------------------------------------------------- */

struct reporter {
	struct health_monitor *m;
	struct cp_creds cred;
	bool have_cred;
	char cred_error[256];
	unsigned failures; /* consecutive, for backoff */
	bool inventory_wanted; /* an answer asked for it: the next report carries one */
};

static void write_last_report(struct health_monitor *m, const char *id, const struct outcome *o,
                              enum health_state state)
{
	json_t *j = json_pack("{s:s,s:I,s:b,s:i,s:s?,s:s}", "id", id, "at", (json_int_t)time(NULL),
	                      "delivered", delivered(o), "status", (int)o->status, "error",
	                      o->error[0] ? o->error : NULL, "state", health_state_name(state));
	char *text = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(10)) : NULL;
	json_decref(j);
	if (text != NULL) {
		struct vm_err err;
		if (fs_write_atomic(m->last_report_path, text, strlen(text), 0600, &err) != 0)
			log_warn("health", "%s", err.msg);
		free(text);
	}
}

static void record(struct reporter *rp, const char *id, const struct outcome *o)
{
	struct health_monitor *m = rp->m;
	int64_t now = (int64_t)time(NULL);
	pthread_mutex_lock(&m->mu);
	struct health_snapshot *s = &m->cur;
	s->last_report_at = now;
	s->last_report_status = (int)o->status;
	snprintf(s->last_report_error, sizeof(s->last_report_error), "%s", o->error);
	if (delivered(o)) {
		s->last_report_ok_at = now;
		s->reports_sent++;
		s->cp_unreachable_since = 0;
	} else {
		s->reports_failed++;
		if (s->cp_unreachable_since == 0 && (o->rc != 0 || o->status >= 500))
			s->cp_unreachable_since = now;
	}
	if (o->has_time) {
		s->clock_skew_known = true;
		s->clock_skew_s = o->server_time - (double)now;
	}
	enum health_state st = s->state;
	pthread_mutex_unlock(&m->mu);
	write_last_report(m, id, o, st);
	if (delivered(o) && o->want_inventory)
		rp->inventory_wanted = true;
}

static void publish_spool(struct reporter *rp)
{
	uint64_t n, b, d, c;
	health_spool_stats(rp->m->spool, &n, &b, &d, &c);
	pthread_mutex_lock(&rp->m->mu);
	rp->m->cur.spool_entries = n;
	rp->m->cur.spool_bytes = b;
	rp->m->cur.spool_dropped = d;
	pthread_mutex_unlock(&rp->m->mu);
}

static bool ensure_credentials(struct reporter *rp)
{
	if (rp->have_cred)
		return true;
	struct vm_err err = {0};
	struct health_monitor *m = rp->m;
	char path[PATH_MAX];
	pthread_mutex_lock(&m->mu);
	memcpy(path, m->cp.credentials_file, sizeof(path));
	pthread_mutex_unlock(&m->mu);
	int rc;
	if (path[0] == '\0')
		rc = vm_err_set(&err, VM_ERR_INVALID, "agent.credentials_file is not set");
	else
		rc = cp_creds_load(path, &rp->cred, &err);
	if (rc == 0) {
		rp->have_cred = true;
		rp->cred_error[0] = '\0';
		return true;
	}
	/* Say it once per distinct problem, not every interval. */
	if (strcmp(rp->cred_error, err.msg) != 0) {
		log_error("health", "cannot report to the control plane: %s", err.msg);
		snprintf(rp->cred_error, sizeof(rp->cred_error), "%s", err.msg);
	}
	pthread_mutex_lock(&m->mu);
	snprintf(m->cur.last_report_error, sizeof(m->cur.last_report_error), "credentials: %.*s",
	         (int)sizeof(m->cur.last_report_error) - 14, err.msg);
	pthread_mutex_unlock(&m->mu);
	return false;
}

/* A report gets a random id (the control plane de-duplicates by it) and the
 * creation time in milliseconds (it orders reports by it). */
int health_report_new(struct health_monitor *m, const char *trigger, char id[HEALTH_ID_LEN + 1],
                      char **body, size_t *len, struct vm_err *err)
{
	*body = NULL;
	*len = 0;
	int rc = id_new(id, err);
	if (rc != 0)
		return rc;
	struct health_snapshot *s = malloc(sizeof(*s));
	if (s == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "report: out of memory");
	health_snapshot_copy(m, s);
	json_t *h = health_snapshot_json(s, m->agent_id, vma_build_version);
	char created[TIME_RFC3339_MAX];
	time_rfc3339(created, sizeof(created), time_wall_ms(), true);
	json_t *doc =
	    h ? json_pack("{s:s,s:s,s:s,s:s,s:o}", "id", id, "created_at", created, "trigger",
	                  trigger, "state", health_state_name(s->state), "health", h)
	      : NULL;
	free(s);
	/* asked for by the control plane: the same document as GET /v1/inventory */
	if (doc != NULL && strcmp(trigger, "inventory") == 0) {
		size_t ilen = 0;
		struct vm_err ierr = {0};
		char *inv = health_inventory_json(m, &ilen, &ierr);
		json_t *ij = inv != NULL ? json_loadb(inv, ilen, 0, NULL) : NULL;
		free(inv);
		if (ij == NULL)
			ij = json_pack("{s:{s:s}}", "errors", "inventory", ierr.msg);
		json_object_set_new(doc, "inventory", ij);
	}
	char *text = doc ? json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(10)) : NULL;
	json_decref(doc);
	if (text == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "report: cannot encode");
	*body = text;
	*len = strlen(text);
	return 0;
}

/* Sends spooled reports oldest first until one fails. Returns true when the
 * spool is empty afterwards. */
static bool drain(struct reporter *rp, struct outcome *last)
{
	struct health_monitor *m = rp->m;
	for (;;) {
		if (atomic_load(&m->stop))
			return false;
		char id[HEALTH_ID_LEN + 1], *body;
		size_t len;
		struct vm_err err = {0};
		int rc = health_spool_peek(m->spool, id, &body, &len, &err);
		if (rc != 0 || body == NULL) {
			if (rc != 0)
				log_warn("health", "spool: %s", err.msg);
			publish_spool(rp);
			return rc == 0;
		}
		send_report(m, &rp->cred, id, body, len, last);
		free(body);
		record(rp, id, last);
		if (delivered(last) || rejected(last)) {
			if (rejected(last))
				log_warn("health", "control plane rejected report %s (%s); dropped",
				         id, last->error);
			health_spool_pop(m->spool, NULL);
			publish_spool(rp);
			continue;
		}
		if (last->status == 401 || last->status == 403) {
			/* maybe rotated on disk: read the file again next time */
			cp_creds_clear(&rp->cred);
			rp->have_cred = false;
		}
		publish_spool(rp);
		return false;
	}
}

static void report_once(struct reporter *rp, const char *trigger, struct outcome *last)
{
	struct health_monitor *m = rp->m;
	char id[HEALTH_ID_LEN + 1], *body;
	size_t len;
	struct vm_err err = {0};
	if (health_report_new(m, trigger, id, &body, &len, &err) != 0) {
		/* never a guessable id: this report is skipped, the next interval tries again */
		log_error("health", "no report this time: %s", err.msg);
		snprintf(last->error, sizeof(last->error), "%.120s", err.msg);
		last->rc = err.code;
		return;
	}
	uint64_t queued, b, d, c;
	health_spool_stats(m->spool, &queued, &b, &d, &c);
	bool creds = ensure_credentials(rp);
	if (creds && queued == 0) {
		send_report(m, &rp->cred, id, body, len, last);
		record(rp, id, last);
		if (delivered(last) || rejected(last)) {
			free(body);
			return;
		}
		if (last->status == 401 || last->status == 403) {
			/* maybe rotated on disk: read the file again next time */
			cp_creds_clear(&rp->cred);
			rp->have_cred = false;
		}
	}
	if (health_spool_push(m->spool, id, body, len, &err) != 0)
		log_error("health", "report %s lost: %s", id, err.msg);
	free(body);
	publish_spool(rp);
	if (creds && queued > 0)
		drain(rp, last);
}

/* After a failed delivery: retry the spool sooner than the next report when
 * the interval is long (backoff from 1 s up to the interval; Retry-After wins). */
static uint64_t retry_wait(uint64_t interval, unsigned failures, const struct outcome *o)
{
	struct http_retry rt = {
	    .initial_delay_ms = 1000, .max_delay_ms = interval, .multiplier = 2};
	return http_backoff_next_ms(&rt, failures, o->retry_after_s);
}

void *health_reporter_main(void *arg)
{
	struct reporter rp = {.m = arg};
	struct health_monitor *m = rp.m;
	const char *trigger = "startup";
	for (;;) {
		if (atomic_load(&m->stop))
			break;
		pthread_mutex_lock(&m->mu);
		if (m->spool_lim_changed) {
			health_spool_set_limits(m->spool, &m->spool_lim);
			m->spool_lim_changed = false;
		}
		if (m->creds_reload) {
			cp_creds_clear(&rp.cred);
			rp.have_cred = false;
			rp.failures = 0;
			m->creds_reload = false;
		}
		uint64_t interval = m->report_interval_ms;
		bool enabled = m->cp.url[0] != '\0';
		pthread_mutex_unlock(&m->mu);

		/* Switched off by a reload: keep the spool, report nothing. */
		struct outcome last = {.status = enabled ? 0 : 202};
		if (enabled)
			report_once(&rp, trigger, &last);
		/* One inventory report per request, and a request in the answer to an
		 * inventory report is not honoured: a control plane that always asks
		 * gets one every other report, never a loop. */
		bool inventory_next = rp.inventory_wanted && strcmp(trigger, "inventory") != 0;
		rp.inventory_wanted = false;
		uint64_t wait = interval;
		if (!delivered(&last) && !rejected(&last)) {
			rp.failures++;
			/* retry the spool sooner than the next report when the interval is long */
			wait = retry_wait(interval, rp.failures, &last);
		} else {
			rp.failures = 0;
		}

		/* Sleep until the next report, a state change, or stop; retry the
		 * spool on the backoff schedule in between. */
		uint64_t next_ms = (uint64_t)time_mono_ms() + interval;
		trigger = "interval";
		if (inventory_next) {
			trigger = "inventory";
			continue;
		}
		for (;;) {
			pthread_mutex_lock(&m->mu);
			bool changed = m->state_changed;
			m->state_changed = false;
			pthread_mutex_unlock(&m->mu);
			if (changed) {
				trigger = "state_change";
				break;
			}
			if (atomic_load(&m->stop))
				break;
			uint64_t now_ms = (uint64_t)time_mono_ms();
			if (now_ms >= next_ms)
				break;
			uint64_t left = next_ms - now_ms;
			uint64_t chunk = wait < left ? wait : left;
			/* timed wait on the monitor's condition (state change, stop) */
			struct timespec ts =
			    time_deadline((int64_t)chunk); /* m->cond: time_cond_init */
			pthread_mutex_lock(&m->mu);
			if (!m->state_changed && !atomic_load(&m->stop))
				pthread_cond_timedwait(&m->cond, &m->mu, &ts);
			pthread_mutex_unlock(&m->mu);
			now_ms = (uint64_t)time_mono_ms();
			uint64_t queued, b, d, c;
			health_spool_stats(m->spool, &queued, &b, &d, &c);
			if (enabled && now_ms < next_ms && queued > 0 && ensure_credentials(&rp)) {
				struct outcome o = {0};
				if (drain(&rp, &o))
					rp.failures = 0;
				else if (!delivered(&o)) {
					rp.failures++;
					wait = retry_wait(interval, rp.failures, &o);
				}
			}
		}
	}
	cp_creds_clear(&rp.cred);
	return NULL;
}
