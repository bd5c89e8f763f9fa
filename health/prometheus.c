/* Prometheus text exposition format 0.0.4: one table of scalar metrics plus
 * labelled families (filesystems, interfaces, state). Names follow the
 * conventions: base units (_bytes, _seconds), counters end in _total. */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/cgroup.h"
#include "health/internal.h"

#define PROM_MAX (1024 * 1024)

struct pbuf {
	struct buf b; /* at most PROM_MAX bytes */
	bool failed;
};

static void put(struct pbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct pbuf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (!b->failed && buf_vprintf(&b->b, fmt, ap) != 0)
		b->failed = true;
	va_end(ap);
}

/* Label values: backslash, double quote and newline are escaped. */
static void escape_label(const char *in, char *out, size_t cap)
{
	size_t o = 0;
	for (; *in && o + 3 < cap; in++) {
		if (*in == '\\' || *in == '"') {
			out[o++] = '\\';
			out[o++] = *in;
		} else if (*in == '\n') {
			out[o++] = '\\';
			out[o++] = 'n';
		} else {
			out[o++] = *in;
		}
	}
	out[o] = '\0';
}

static void family(struct pbuf *b, const char *name, const char *type, const char *help)
{
	put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void value(struct pbuf *b, double v)
{
	if (isnan(v))
		put(b, " NaN\n");
	else if (v == floor(v) && fabs(v) < 9.007199254740992e15)
		put(b, " %.0f\n", v);
	else
		put(b, " %.17g\n", v);
}

typedef double (*getter)(const struct health_snapshot *);

#define G(fnname, expr)                                       \
	static double fnname(const struct health_snapshot *s) \
	{                                                     \
		return (double)(expr);                        \
	}

G(g_start, s->started_at)
G(g_cpu, s->sys.cpu_percent < 0 ? NAN : s->sys.cpu_percent / 100.0)
G(g_ncpu, s->sys.ncpu)
G(g_load1, s->sys.load1)
G(g_load5, s->sys.load5)
G(g_load15, s->sys.load15)
G(g_memtotal, s->sys.mem_total)
G(g_memavail, s->sys.mem_available)
G(g_swaptotal, s->sys.swap_total)
G(g_swapfree, s->sys.swap_free)
G(g_uptime, s->sys.uptime_s)
G(g_boot, s->sys.boot_time)
G(g_procs, s->sys.processes)
G(g_rss, s->sys.self_rss_bytes)
G(g_fds, s->sys.self_fds)
G(g_threads, s->sys.self_threads)
G(g_tun_enabled, s->tunnel.enabled)
G(g_tun_up, s->tunnel.connected)
G(g_tun_reconn, s->tunnel.reconnects)
G(g_probe_q, s->probe_queued)
G(g_probe_run, s->probe_running)
G(g_budget_used, s->budget_known ? (double)s->budget_in_use : NAN)
G(g_budget_limit, s->budget_known ? (double)s->budget_limit : NAN)
G(g_sent, s->reports_sent)
G(g_failed, s->reports_failed)
G(g_spool_n, s->spool_entries)
G(g_spool_b, s->spool_bytes)
G(g_spool_drop, s->spool_dropped)
G(g_last_ok, s->last_report_ok_at)
G(g_skew, s->clock_skew_known ? s->clock_skew_s : NAN)
G(g_check_time, s->time)
G(g_log_fail, s->log.file_write_failures)
G(g_log_lost, s->log.lines_lost)
G(g_reasons, s->nreasons)

static const struct {
	const char *name, *type, *help;
	getter get;
} scalars[] = {
    {"vm_agent_start_time_seconds", "gauge", "Unix time the agent started.", g_start},
    {"vm_agent_health_check_timestamp_seconds", "gauge", "Unix time of the last health check.",
     g_check_time},
    {"vm_agent_health_reasons", "gauge", "Number of reasons behind the current state.", g_reasons},
    {"vm_agent_host_cpu_usage_ratio", "gauge",
     "Share of CPU time not idle since the previous check (0-1).", g_cpu},
    {"vm_agent_host_cpus", "gauge", "Number of CPUs.", g_ncpu},
    {"vm_agent_host_load1", "gauge", "1-minute load average.", g_load1},
    {"vm_agent_host_load5", "gauge", "5-minute load average.", g_load5},
    {"vm_agent_host_load15", "gauge", "15-minute load average.", g_load15},
    {"vm_agent_host_memory_total_bytes", "gauge", "Physical memory.", g_memtotal},
    {"vm_agent_host_memory_available_bytes", "gauge", "Memory available for new work.", g_memavail},
    {"vm_agent_host_swap_total_bytes", "gauge", "Swap space.", g_swaptotal},
    {"vm_agent_host_swap_free_bytes", "gauge", "Unused swap space.", g_swapfree},
    {"vm_agent_host_uptime_seconds", "gauge", "Time since boot.", g_uptime},
    {"vm_agent_host_boot_time_seconds", "gauge", "Unix time of the last boot.", g_boot},
    {"vm_agent_host_processes", "gauge", "Processes on the host.", g_procs},
    {"vm_agent_process_resident_memory_bytes", "gauge", "Resident memory of the agent.", g_rss},
    {"vm_agent_process_open_fds", "gauge", "Open file descriptors of the agent.", g_fds},
    {"vm_agent_process_threads", "gauge", "Threads of the agent.", g_threads},
    {"vm_agent_tunnel_enabled", "gauge", "1 when the Piko tunnel is configured.", g_tun_enabled},
    {"vm_agent_tunnel_connected", "gauge", "1 when the Piko tunnel is up.", g_tun_up},
    {"vm_agent_tunnel_reconnects_total", "counter", "Tunnel reconnections since start.",
     g_tun_reconn},
    {"vm_agent_probe_queue_depth", "gauge", "Probes waiting to run.", g_probe_q},
    {"vm_agent_probe_running", "gauge", "Probes running now.", g_probe_run},
    {"vm_agent_concurrency_in_use", "gauge",
     "Slots of limits.max_concurrent held (running probes and open shells).", g_budget_used},
    {"vm_agent_concurrency_limit", "gauge", "limits.max_concurrent in effect.", g_budget_limit},
    {"vm_agent_health_reports_sent_total", "counter", "Health reports the control plane accepted.",
     g_sent},
    {"vm_agent_health_reports_failed_total", "counter",
     "Health report deliveries that failed (each is retried from the spool).", g_failed},
    {"vm_agent_health_spool_entries", "gauge", "Reports waiting in the on-disk spool.", g_spool_n},
    {"vm_agent_health_spool_bytes", "gauge", "Size of the on-disk spool.", g_spool_b},
    {"vm_agent_health_spool_dropped_total", "counter",
     "Reports dropped: evicted from a full spool (oldest first) or not written (full disk).", g_spool_drop},
    {"vm_agent_health_last_report_success_timestamp_seconds", "gauge",
     "Unix time of the last delivered report (0 = none yet).", g_last_ok},
    {"vm_agent_log_file_write_failures_total", "counter",
     "Log lines the log file refused (full disk, I/O error); each went to stderr instead.",
     g_log_fail},
    {"vm_agent_log_lines_lost_total", "counter", "Log lines neither the log file nor stderr took.",
     g_log_lost},
    {"vm_agent_clock_skew_seconds", "gauge",
     "Control-plane clock minus local clock, from the last report answer.", g_skew},
};

static void fs_family(struct pbuf *b, const struct health_snapshot *s, const char *name,
                      const char *help, size_t field_off)
{
	family(b, name, "gauge", help);
	for (size_t i = 0; i < s->sys.nfs; i++) {
		const struct health_fs *f = &s->sys.fs[i];
		char mp[600], dev[400], ty[100];
		escape_label(f->mount, mp, sizeof(mp));
		escape_label(f->device, dev, sizeof(dev));
		escape_label(f->fstype, ty, sizeof(ty));
		put(b, "%s{mountpoint=\"%s\",device=\"%s\",fstype=\"%s\"}", name, mp, dev, ty);
		value(b, (double)*(const uint64_t *)(const void *)((const char *)f + field_off));
	}
}

static void net_family(struct pbuf *b, const struct health_snapshot *s, const char *name,
                       const char *help, bool rx)
{
	family(b, name, "counter", help);
	for (size_t i = 0; i < s->sys.nnet; i++) {
		char dev[100];
		escape_label(s->sys.net[i].iface, dev, sizeof(dev));
		put(b, "%s{device=\"%s\"}", name, dev);
		value(b, (double)(rx ? s->sys.net[i].rx_bytes : s->sys.net[i].tx_bytes));
	}
}

/* Containment as an enum gauge (1 for the current mode) and one gauge per
 * limit; the reason stays in /v1/health (free text is no label value). */
static void containment_families(struct pbuf *b, const struct health_snapshot *s)
{
	if (!s->containment_known)
		return;
	const char *const modes[] = {cg_mode_name(CG_LIMIT), cg_mode_name(CG_TRACK),
	                             cg_mode_name(CG_NONE)};
	family(b, "vm_agent_probe_containment", "gauge",
	       "1 for how probe steps are contained (cgroup-v2 with limits, cgroup-v2 without "
	       "controllers: kill only, none: subreaper fallback), 0 for the others.");
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
		put(b, "vm_agent_probe_containment{mode=\"%s\"} %d\n", modes[i],
		    strcmp(s->containment.mode, modes[i]) == 0);
	family(b, "vm_agent_probe_limit_available", "gauge",
	       "1 when per-step limits of this kind (memory, cpu, pids) can be applied.");
	const struct health_containment *c = &s->containment;
	put(b, "vm_agent_probe_limit_available{limit=\"memory\"} %d\n", c->memory);
	put(b, "vm_agent_probe_limit_available{limit=\"cpu\"} %d\n", c->cpu);
	put(b, "vm_agent_probe_limit_available{limit=\"pids\"} %d\n", c->pids);
}

/* The container engine: up, and our containers by state. */
static void engine_families(struct pbuf *b, const struct health_snapshot *s)
{
	if (!s->engine_known || !s->engine.enabled)
		return;
	const struct health_engine *e = &s->engine;
	family(b, "vm_agent_container_engine_up", "gauge",
	       "1 when the container engine answers on containers.socket.");
	put(b, "vm_agent_container_engine_up %d\n", e->reachable);
	family(b, "vm_agent_containers", "gauge",
	       "Containers this agent manages, by state (when the engine is up).");
	put(b, "vm_agent_containers{state=\"running\"} %" PRIu64 "\n", e->running);
	put(b, "vm_agent_containers{state=\"paused\"} %" PRIu64 "\n", e->paused);
	put(b, "vm_agent_containers{state=\"exited\"} %" PRIu64 "\n", e->exited);
	put(b, "vm_agent_containers{state=\"created\"} %" PRIu64 "\n", e->created);
	put(b, "vm_agent_containers{state=\"other\"} %" PRIu64 "\n", e->other);
}

char *health_format_prometheus(const struct health_snapshot *s, const char *version)
{
	struct pbuf b = {.failed = false};
	buf_init(&b.b, PROM_MAX);
	char ver[128];
	escape_label(version, ver, sizeof(ver));
	family(&b, "vm_agent_build_info", "gauge", "Always 1; the version is a label.");
	put(&b, "vm_agent_build_info{version=\"%s\"} 1\n", ver);
	family(&b, "vm_agent_health_state", "gauge",
	       "1 for the current health state (healthy, degraded, unhealthy), 0 for the others.");
	static const enum health_state states[] = {HEALTH_HEALTHY, HEALTH_DEGRADED,
	                                           HEALTH_UNHEALTHY};
	for (size_t i = 0; i < 3; i++)
		put(&b, "vm_agent_health_state{state=\"%s\"} %d\n", health_state_name(states[i]),
		    s->state == states[i]);
	for (size_t i = 0; i < sizeof(scalars) / sizeof(scalars[0]); i++) {
		family(&b, scalars[i].name, scalars[i].type, scalars[i].help);
		put(&b, "%s", scalars[i].name);
		value(&b, scalars[i].get(s));
	}
	containment_families(&b, s);
	engine_families(&b, s);
	fs_family(&b, s, "vm_agent_host_filesystem_size_bytes", "Filesystem size.",
	          offsetof(struct health_fs, size_bytes));
	fs_family(&b, s, "vm_agent_host_filesystem_avail_bytes",
	          "Filesystem space available to unprivileged users.",
	          offsetof(struct health_fs, avail_bytes));
	fs_family(&b, s, "vm_agent_host_filesystem_free_bytes", "Filesystem free space.",
	          offsetof(struct health_fs, free_bytes));
	fs_family(&b, s, "vm_agent_host_filesystem_files", "Filesystem inodes.",
	          offsetof(struct health_fs, inodes_total));
	fs_family(&b, s, "vm_agent_host_filesystem_files_free", "Filesystem free inodes.",
	          offsetof(struct health_fs, inodes_free));
	net_family(&b, s, "vm_agent_host_network_receive_bytes_total", "Bytes received.", true);
	net_family(&b, s, "vm_agent_host_network_transmit_bytes_total", "Bytes sent.", false);
	if (b.failed) {
		buf_free(&b.b);
		return NULL;
	}
	return buf_take(&b.b, NULL);
}
