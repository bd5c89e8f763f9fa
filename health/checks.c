/* Threshold checks: a table of functions, each adding reasons and raising the
 * state; the worst one wins. Thresholds come from the health config section. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "health/internal.h"

const char *health_state_name(enum health_state s)
{
	static const char *const names[] = {"healthy", "degraded", "unhealthy"};
	return (unsigned)s < 3 ? names[s] : "unknown";
}

void health_thresholds_from_cfg(const struct cfg *cfg, struct health_thresholds *t)
{
	t->disk_warn_percent = cfg->health.disk_warn_percent;
	t->disk_critical_percent = cfg->health.disk_critical_percent;
	t->memory_warn_percent = cfg->health.memory_warn_percent;
	t->tunnel_down_after_ms = cfg->health.tunnel_down_after_ms;
	t->cp_unreachable_after_ms = cfg->health.control_plane_unreachable_after_ms;
	t->clock_skew_max_ms = cfg->health.clock_skew_max_ms;
}

static void add(struct health_snapshot *s, enum health_state level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void add(struct health_snapshot *s, enum health_state level, const char *fmt, ...)
{
	if (level > s->state)
		s->state = level;
	if (s->nreasons >= HEALTH_MAX_REASONS)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s->reasons[s->nreasons++], sizeof(s->reasons[0]), fmt, ap);
	va_end(ap);
}

static double used_percent(uint64_t total_free_basis, uint64_t free, uint64_t avail)
{
	/* Like df: used / (used + available), so root-reserved blocks count as full. */
	uint64_t used = total_free_basis > free ? total_free_basis - free : 0;
	uint64_t denom = used + avail;
	return denom == 0 ? 0 : (double)used * 100.0 / (double)denom;
}

static void check_disk(struct health_snapshot *s, const struct health_thresholds *t)
{
	for (size_t i = 0; i < s->sys.nfs; i++) {
		const struct health_fs *f = &s->sys.fs[i];
		double pct = used_percent(f->size_bytes, f->free_bytes, f->avail_bytes);
		if (pct >= t->disk_critical_percent)
			add(s, HEALTH_UNHEALTHY, "disk %s is %.0f%% full", f->mount, pct);
		else if (pct >= t->disk_warn_percent)
			add(s, HEALTH_DEGRADED, "disk %s is %.0f%% full", f->mount, pct);
		if (f->inodes_total == 0)
			continue;
		double ipct =
		    (double)(f->inodes_total - f->inodes_free) * 100.0 / (double)f->inodes_total;
		if (ipct >= t->disk_critical_percent)
			add(s, HEALTH_UNHEALTHY, "disk %s has %.0f%% of inodes used", f->mount,
			    ipct);
		else if (ipct >= t->disk_warn_percent)
			add(s, HEALTH_DEGRADED, "disk %s has %.0f%% of inodes used", f->mount,
			    ipct);
	}
}

static void check_memory(struct health_snapshot *s, const struct health_thresholds *t)
{
	if (s->sys.mem_total == 0)
		return;
	uint64_t avail =
	    s->sys.mem_available < s->sys.mem_total ? s->sys.mem_available : s->sys.mem_total;
	double pct = (double)(s->sys.mem_total - avail) * 100.0 / (double)s->sys.mem_total;
	if (pct >= t->memory_warn_percent)
		add(s, HEALTH_DEGRADED, "memory is %.0f%% used", pct);
}

static void check_tunnel(struct health_snapshot *s, const struct health_thresholds *t)
{
	if (!s->tunnel.enabled || s->tunnel.connected)
		return;
	int64_t since = s->tunnel.changed_at ? s->tunnel.changed_at : s->started_at;
	int64_t down_s = s->time - since;
	if (down_s >= 0 && (uint64_t)down_s * 1000 >= t->tunnel_down_after_ms)
		add(s, HEALTH_UNHEALTHY, "tunnel down for %llds", (long long)down_s);
	else
		add(s, HEALTH_DEGRADED, "tunnel reconnecting");
}

static void check_control_plane(struct health_snapshot *s, const struct health_thresholds *t)
{
	if (!s->reporting_enabled)
		return;
	if (s->last_report_status == 401 || s->last_report_status == 403)
		add(s, HEALTH_UNHEALTHY, "control plane refuses the agent credentials (HTTP %d)",
		    s->last_report_status);
	if (s->cp_unreachable_since == 0)
		return;
	int64_t down_s = s->time - s->cp_unreachable_since;
	if (down_s >= 0 && (uint64_t)down_s * 1000 >= t->cp_unreachable_after_ms)
		add(s, HEALTH_DEGRADED, "control plane unreachable for %llds (%.100s)",
		    (long long)down_s,
		    s->last_report_error[0] ? s->last_report_error : "no answer");
}

static void check_clock(struct health_snapshot *s, const struct health_thresholds *t)
{
	if (!s->clock_skew_known)
		return;
	double skew = s->clock_skew_s < 0 ? -s->clock_skew_s : s->clock_skew_s;
	if (skew * 1000.0 > (double)t->clock_skew_max_ms)
		add(s, HEALTH_DEGRADED, "clock skew %.0fs against the control plane",
		    s->clock_skew_s);
}

static void check_collectors(struct health_snapshot *s, const struct health_thresholds *t)
{
	(void)t;
	if (s->sys.errors != 0)
		add(s, HEALTH_DEGRADED, "some metrics could not be collected (mask 0x%x)",
		    s->sys.errors);
}

static void check_spool(struct health_snapshot *s, const struct health_thresholds *t)
{
	(void)t;
	if (s->spool_dropped > 0)
		add(s, HEALTH_DEGRADED, "%llu health reports dropped (a full spool or disk)",
		    (unsigned long long)s->spool_dropped);
}

/* Probe records: a failed write means an outcome may be lost on restart; a
 * quarantined record is one a human should look at (runs/quarantine/). */
static void check_probe_store(struct health_snapshot *s, const struct health_thresholds *t)
{
	(void)t;
	if (s->probe_write_failures > 0)
		add(s, HEALTH_DEGRADED,
		    "%llu probe record write(s) failed since start (disk full?)",
		    (unsigned long long)s->probe_write_failures);
	if (s->probe_quarantined > 0)
		add(s, HEALTH_DEGRADED, "%llu unreadable probe record(s) moved to runs/quarantine/",
		    (unsigned long long)s->probe_quarantined);
}

/* A container host whose engine is gone can start nothing: degraded. */
static void check_engine(struct health_snapshot *s, const struct health_thresholds *t)
{
	(void)t;
	if (s->engine_known && s->engine.enabled && s->engine.seen &&
	    !s->engine.reachable)
		add(s, HEALTH_DEGRADED, "container engine unreachable: %s", s->engine.why);
}

static const struct {
	const char *name;
	void (*fn)(struct health_snapshot *, const struct health_thresholds *);
} checks[] = {
    {"disk", check_disk},     {"memory", check_memory},
    {"tunnel", check_tunnel}, {"control_plane", check_control_plane},
    {"clock", check_clock},   {"collectors", check_collectors},
    {"spool", check_spool},   {"probe_store", check_probe_store},
    {"engine", check_engine},
};

void health_evaluate(struct health_snapshot *s, const struct health_thresholds *t)
{
	s->state = HEALTH_HEALTHY;
	s->nreasons = 0;
	for (size_t i = 0; i < sizeof(checks) / sizeof(checks[0]); i++)
		checks[i].fn(s, t);
}
