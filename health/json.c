/* The health snapshot as JSON: the body of GET /v1/health, of `status
 * --json`'s health part, and (with an id) of a report to the control plane. */
#include <math.h>
#include <stdio.h>
#include <time.h>

#include "core/time.h"
#include "health/internal.h"

static json_t *iso_time(int64_t t)
{
	if (t <= 0)
		return json_null();
	char buf[TIME_RFC3339_MAX];
	if (t > INT64_MAX / 1000 || time_rfc3339(buf, sizeof(buf), t * 1000, false) == 0)
		return json_null();
	return json_string(buf);
}

static json_t *num(double v)
{
	return isfinite(v) ? json_real(v) : json_null();
}

static json_t *u64(uint64_t v)
{
	return json_integer(v > (uint64_t)INT64_MAX ? INT64_MAX : (json_int_t)v);
}

static json_t *system_json(const struct health_system *y)
{
	json_t *fs = json_array(), *net = json_array();
	for (size_t i = 0; i < y->nfs; i++) {
		const struct health_fs *f = &y->fs[i];
		json_array_append_new(
		    fs, json_pack("{s:s,s:s,s:s,s:o,s:o,s:o,s:o,s:o}", "mountpoint", f->mount,
		                  "fstype", f->fstype, "device", f->device, "size_bytes",
		                  u64(f->size_bytes), "avail_bytes", u64(f->avail_bytes),
		                  "free_bytes", u64(f->free_bytes), "inodes_total",
		                  u64(f->inodes_total), "inodes_free", u64(f->inodes_free)));
	}
	for (size_t i = 0; i < y->nnet; i++)
		json_array_append_new(net, json_pack("{s:s,s:o,s:o}", "device", y->net[i].iface,
		                                     "rx_bytes", u64(y->net[i].rx_bytes),
		                                     "tx_bytes", u64(y->net[i].tx_bytes)));
	return json_pack(
	    "{s:o,s:o,s:{s:o,s:o,s:o},s:{s:o,s:o,s:o,s:o},s:o,s:o,s:o,s:o,s:o,s:{s:o,s:o,s:o}}",
	    "cpu_percent", y->cpu_percent < 0 ? json_null() : num(y->cpu_percent), "cpus",
	    u64(y->ncpu), "load", "1m", num(y->load1), "5m", num(y->load5), "15m", num(y->load15),
	    "memory", "total_bytes", u64(y->mem_total), "available_bytes", u64(y->mem_available),
	    "swap_total_bytes", u64(y->swap_total), "swap_free_bytes", u64(y->swap_free),
	    "uptime_seconds", num(y->uptime_s), "processes", u64(y->processes), "filesystems", fs,
	    "network", net, "collector_errors", json_integer(y->errors), "self", "rss_bytes",
	    u64(y->self_rss_bytes), "open_fds", u64(y->self_fds), "threads", u64(y->self_threads));
}

json_t *health_snapshot_json(const struct health_snapshot *s, const char *agent_id,
                             const char *version)
{
	json_t *reasons = json_array();
	for (size_t i = 0; i < s->nreasons; i++)
		json_array_append_new(reasons, json_string(s->reasons[i]));
	json_t *tunnel = json_pack(
	    "{s:b,s:b,s:o,s:o}", "enabled", s->tunnel.enabled, "connected", s->tunnel.connected,
	    "changed_at", iso_time(s->tunnel.changed_at), "reconnects", u64(s->tunnel.reconnects));
	json_t *probe = json_pack("{s:b,s:o,s:o,s:o,s:o}", "enabled", s->probe_enabled, "queued",
	                          u64(s->probe_queued), "running", u64(s->probe_running),
	                          "record_write_failures", u64(s->probe_write_failures),
	                          "quarantined_records", u64(s->probe_quarantined));
	json_t *cont = json_null();
	if (s->containment_known)
		cont = json_pack(
		    "{s:s,s:{s:b,s:b,s:b},s:s?}", "mode", s->containment.mode, "limits", "memory",
		    s->containment.memory, "cpu", s->containment.cpu, "pids", s->containment.pids,
		    "limits_unavailable", s->containment.why[0] ? s->containment.why : NULL);
	json_t *eng = json_null();
	if (s->engine_known && s->engine.enabled)
		eng = json_pack("{s:b,s:b,s:s,s:{s:o,s:o,s:o,s:o,s:o},s:s?}", "enabled", 1, "reachable",
		                s->engine.reachable, "version", s->engine.version, "containers",
		                "running", u64(s->engine.running), "paused", u64(s->engine.paused),
		                "exited", u64(s->engine.exited), "created", u64(s->engine.created),
		                "other", u64(s->engine.other), "error",
		                s->engine.why[0] ? s->engine.why : NULL);
	else if (s->engine_known)
		eng = json_pack("{s:b}", "enabled", 0);
	json_t *rep = json_pack(
	    "{s:b,s:o,s:o,s:i,s:s?,s:o,s:o,s:o,s:o,s:o,s:o}", "enabled", s->reporting_enabled,
	    "last_attempt_at", iso_time(s->last_report_at), "last_success_at",
	    iso_time(s->last_report_ok_at), "last_status", s->last_report_status, "last_error",
	    s->last_report_error[0] ? s->last_report_error : NULL, "sent", u64(s->reports_sent),
	    "failed", u64(s->reports_failed), "spool_entries", u64(s->spool_entries), "spool_bytes",
	    u64(s->spool_bytes), "spool_dropped", u64(s->spool_dropped), "clock_skew_seconds",
	    s->clock_skew_known ? num(s->clock_skew_s) : json_null());
	/* limits.max_concurrent: slots held by running probes and open shells */
	json_t *conc = s->budget_known ? json_pack("{s:o,s:o}", "in_use", u64(s->budget_in_use),
	                                           "limit", u64(s->budget_limit))
	                               : json_null();
	return json_pack("{s:s,s:s,s:o,s:o,s:s,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "agent_id",
	                 agent_id, "version", version, "time", iso_time(s->time), "started_at",
	                 iso_time(s->started_at), "state", health_state_name(s->state), "reasons",
	                 reasons, "system", system_json(&s->sys), "tunnel", tunnel, "probe", probe,
	                 "containment", cont ? cont : json_null(), "concurrency",
	                 conc ? conc : json_null(), "engine", eng ? eng : json_null(), "reporting",
	                 rep, "log",
	                 json_pack("{s:o,s:o}", "file_write_failures",
	                           u64(s->log.file_write_failures), "lines_lost",
	                           u64(s->log.lines_lost)));
}
