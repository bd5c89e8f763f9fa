/* The health monitor: one thread that collects and evaluates every
 * check_interval, keeps the latest snapshot for readers (webhook, admin
 * socket), and wakes the reporter thread when the state changes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "core/time.h"
#include "health/internal.h"

extern const char vma_build_version[];

static void settings_from_cfg(struct health_monitor *m, const struct cfg *cfg)
{
	health_thresholds_from_cfg(cfg, &m->th);
	m->check_interval_ms = cfg->health.check_interval_ms;
	m->report_interval_ms = cfg->health.report_interval_ms;
	m->spool_lim.max_entries = (uint64_t)cfg->health.spool_max_entries;
	m->spool_lim.max_bytes = cfg->health.spool_max_bytes;
	health_inventory_settings(m, cfg);
}

/* Returns true when anything changed. Caller holds mu (or is alone). */
static bool endpoint_from_cfg(struct health_monitor *m, const struct cfg *cfg)
{
	bool changed = strcmp(m->cp.url, cfg->agent.control_plane_url) != 0 ||
	               strcmp(m->cp.ca_file, cfg->agent.ca_file) != 0 ||
	               strcmp(m->cp.proxy, cfg->agent.proxy_url) != 0 ||
	               strcmp(m->cp.credentials_file, cfg->agent.credentials_file) != 0;
	cp_conf_of(cfg, &m->cp);
	return changed;
}

void health_paths(const char *state_dir, char *last_report, size_t lr_cap, char *spool_dir,
                  size_t sd_cap)
{
	if (last_report != NULL)
		snprintf(last_report, lr_cap, "%.*s/health/last_report.json", PATH_MAX - 32,
		         state_dir);
	if (spool_dir != NULL)
		snprintf(spool_dir, sd_cap, "%.*s/health/spool", PATH_MAX - 32, state_dir);
}

void health_snapshot_copy(struct health_monitor *m, struct health_snapshot *out)
{
	pthread_mutex_lock(&m->mu);
	*out = m->cur;
	pthread_mutex_unlock(&m->mu);
}

/* Waits up to ms on the condition; returns early on stop or a signal. */
static void wait_ms(struct health_monitor *m, uint64_t ms)
{
	/* monotonic (time_cond_init): a wall-clock step neither cuts nor stretches it */
	struct timespec ts = time_deadline((int64_t)ms);
	pthread_mutex_lock(&m->mu);
	if (!atomic_load(&m->stop))
		pthread_cond_timedwait(&m->cond, &m->mu, &ts);
	pthread_mutex_unlock(&m->mu);
}

/* One round: collect outside the lock (slow: statvfs, /proc), merge under it. */
static void check_once(struct health_monitor *m, struct health_cpu_ticks *prev)
{
	struct health_system *sys = malloc(sizeof(*sys));
	if (sys == NULL)
		return;
	health_collect(&m->proc, prev, sys);
	*prev = sys->ticks;
	struct health_tunnel_state tun = {0};
	uint64_t queued = 0, running = 0;
	if (m->src.tunnel != NULL)
		m->src.tunnel(m->src.ctx, &tun);
	uint64_t write_failures = 0, quarantined = 0;
	if (m->src.probe_queue != NULL)
		m->src.probe_queue(m->src.ctx, &queued, &running);
	if (m->src.probe_store != NULL)
		m->src.probe_store(m->src.ctx, &write_failures, &quarantined);
	struct log_stats logst;
	log_get_stats(&logst);
	struct health_containment cont = {0};
	if (m->src.containment != NULL)
		m->src.containment(m->src.ctx, &cont);
	uint64_t in_use = 0, limit = 0;
	if (m->src.budget != NULL)
		m->src.budget(m->src.ctx, &in_use, &limit);
	struct health_engine eng = {0};
	if (m->src.engine != NULL)
		m->src.engine(m->src.ctx, &eng);

	pthread_mutex_lock(&m->mu);
	struct health_snapshot *s = &m->cur;
	enum health_state before = s->state;
	bool first = s->time == 0;
	s->time = (int64_t)time(NULL);
	s->sys = *sys;
	s->tunnel = tun;
	s->probe_enabled = m->src.probe_queue != NULL;
	s->probe_queued = queued;
	s->probe_running = running;
	s->probe_write_failures = write_failures;
	s->probe_quarantined = quarantined;
	s->log = logst;
	s->containment_known = m->src.containment != NULL;
	s->containment = cont;
	s->budget_known = m->src.budget != NULL;
	s->budget_in_use = in_use;
	s->budget_limit = limit;
	s->engine_known = m->src.engine != NULL;
	s->engine = eng;
	health_evaluate(s, &m->th);
	if (!first && s->state != before) {
		m->state_changed = true;
		pthread_cond_broadcast(&m->cond);
		log_info("health", "state %s -> %s%s%s", health_state_name(before),
		         health_state_name(s->state), s->nreasons ? ": " : "",
		         s->nreasons ? s->reasons[0] : "");
	}
	pthread_mutex_unlock(&m->mu);
	free(sys);
}

static void *monitor_main(void *arg)
{
	struct health_monitor *m = arg;
	struct health_cpu_ticks prev = {0, 0};
	while (!atomic_load(&m->stop)) {
		check_once(m, &prev);
		pthread_mutex_lock(&m->mu);
		uint64_t ms = m->check_interval_ms;
		pthread_mutex_unlock(&m->mu);
		wait_ms(m, ms);
	}
	return NULL;
}

static int open_spool(struct health_monitor *m, struct vm_err *err)
{
	m->spool = health_spool_open(m->spool_dir, &m->spool_lim, err);
	if (m->spool == NULL)
		return -1;
	uint64_t corrupt;
	pthread_mutex_lock(&m->mu);
	health_spool_stats(m->spool, &m->cur.spool_entries, &m->cur.spool_bytes,
	                   &m->cur.spool_dropped, &corrupt);
	pthread_mutex_unlock(&m->mu);
	return 0;
}

static int start_reporter(struct health_monitor *m, struct vm_err *err)
{
	if (pthread_create(&m->reporter_thr, NULL, health_reporter_main, m) != 0)
		return vm_err_set(err, VM_ERR_INTERNAL, "cannot start the health reporter thread");
	m->have_reporter = true;
	return 0;
}

struct health_monitor *health_start(const struct cfg *cfg, const struct health_sources *sources,
                                    struct vm_err *err)
{
	struct health_monitor *m = calloc(1, sizeof(*m));
	if (m == NULL) {
		vm_err_set(err, VM_ERR_NOMEM, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&m->mu, NULL);
	pthread_mutex_init(&m->inv_mu, NULL);
	time_cond_init(&m->cond); /* the reporter waits on it too, with time_deadline */
	atomic_init(&m->stop, false);
	if (sources != NULL)
		m->src = *sources;
	snprintf(m->proc_root, sizeof(m->proc_root), "%s", cfg->health.proc_root);
	m->proc.proc_root = m->proc_root;
	settings_from_cfg(m, cfg);
	m->cur.started_at = (int64_t)time(NULL);
	m->cur.sys.cpu_percent = -1;
	snprintf(m->agent_id, sizeof(m->agent_id), "%s", cfg->agent.id);
	snprintf(m->tenant_id, sizeof(m->tenant_id), "%s", cfg->agent.tenant_id);
	endpoint_from_cfg(m, cfg);
	health_paths(cfg->agent.state_dir, m->last_report_path, sizeof(m->last_report_path),
	             m->spool_dir, sizeof(m->spool_dir));
	m->cur.reporting_enabled = m->cp.url[0] != '\0';

	if (m->cur.reporting_enabled && open_spool(m, err) != 0)
		goto fail;
	/* First check before anyone can ask, so /v1/health never shows zeros. */
	struct health_cpu_ticks prev = {0, 0};
	check_once(m, &prev);
	if (pthread_create(&m->monitor_thr, NULL, monitor_main, m) != 0) {
		vm_err_set(err, VM_ERR_INTERNAL, "cannot start the health thread");
		goto fail;
	}
	m->have_monitor = true;
	if (m->cur.reporting_enabled) {
		if (start_reporter(m, err) != 0)
			goto fail;
	} else {
		log_info("health", "reporting off: agent.control_plane_url is not set");
	}
	return m;
fail:
	health_stop(m);
	return NULL;
}

void health_stop(struct health_monitor *m)
{
	if (m == NULL)
		return;
	pthread_mutex_lock(&m->mu);
	atomic_store(&m->stop, true);
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->mu);
	if (m->have_monitor)
		pthread_join(m->monitor_thr, NULL);
	if (m->have_reporter)
		pthread_join(m->reporter_thr, NULL);
	health_spool_close(m->spool);
	pthread_cond_destroy(&m->cond);
	pthread_mutex_destroy(&m->mu);
	pthread_mutex_destroy(&m->inv_mu);
	free(m->inv_text);
	free(m);
}

void health_reconfigure(struct health_monitor *m, const struct cfg *cfg)
{
	if (m == NULL)
		return;
	pthread_mutex_lock(&m->mu);
	settings_from_cfg(m, cfg);
	m->spool_lim_changed = true;
	if (endpoint_from_cfg(m, cfg))
		m->creds_reload = true;
	m->cur.reporting_enabled = m->cp.url[0] != '\0';
	bool start = m->cur.reporting_enabled && !m->have_reporter;
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->mu);
	/* Reporting switched on by a reload: the reporter did not exist yet, so
	 * nothing else touches the spool. (state_dir changes need a restart.) */
	if (start) {
		struct vm_err err = {0};
		if ((m->spool == NULL && open_spool(m, &err) != 0) || start_reporter(m, &err) != 0)
			log_error("health", "reporting not started: %s", err.msg);
	}
}

char *health_json(struct health_monitor *m)
{
	struct health_snapshot *s = malloc(sizeof(*s));
	if (s == NULL)
		return NULL;
	health_snapshot_copy(m, s);
	json_t *j = health_snapshot_json(s, m->agent_id, vma_build_version);
	free(s);
	char *text = j != NULL ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(10)) : NULL;
	json_decref(j);
	return text;
}

char *health_prometheus(struct health_monitor *m)
{
	struct health_snapshot *s = malloc(sizeof(*s));
	if (s == NULL)
		return NULL;
	health_snapshot_copy(m, s);
	char *text = health_format_prometheus(s, vma_build_version);
	free(s);
	return text;
}
