/* Health: collectors (/proc, filesystems, the agent itself), threshold checks
 * (healthy | degraded | unhealthy with reasons), the Prometheus exposition,
 * and the reporter that delivers reports to the control plane through an
 * on-disk spool. One thread; readers get copies under a lock. */
#ifndef VMA_HEALTH_HEALTH_H
#define VMA_HEALTH_HEALTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "core/err.h"

struct health_monitor;

/* Values other modules own, asked for at every check. Every callback may be
 * NULL (that module is not running); they must be quick and non-blocking. */
struct health_tunnel_state {
	bool enabled;
	bool connected;
	int64_t changed_at;  /* unix seconds of the last connect/disconnect; 0 = unknown */
	uint64_t reconnects; /* since start */
};

/* How probe steps are contained on this host (core/cgroup, found at start). */
struct health_containment {
	char mode[40]; /* cg_mode_name(): "cgroup-v2", "cgroup-v2 (no controllers)", "none" */
	bool memory, cpu, pids; /* per-step limits available */
	char why[256];          /* why cgroups or some limits are unavailable; "" = all there */
};

/* The container engine (containers/): reachable, version, our containers by state. */
struct health_engine {
	bool enabled; /* containers.enabled: false = not checked */
	bool reachable;
	bool seen; /* answered once since start: only then is "unreachable" a problem */
	char version[64];
	uint64_t running, paused, exited, created, other;
	char why[256]; /* why it is unreachable */
};

struct health_sources {
	void *ctx;
	void (*tunnel)(void *ctx, struct health_tunnel_state *out);
	/* Probes waiting in the queue and running now. */
	void (*probe_queue)(void *ctx, uint64_t *queued, uint64_t *running);
	/* Probe records that could not be written, and unreadable ones quarantined. */
	void (*probe_store)(void *ctx, uint64_t *write_failures, uint64_t *quarantined);
	/* Step containment and the limits it allows (GET /v1/health, status, /metrics). */
	void (*containment)(void *ctx, struct health_containment *out);
	/* Slots of limits.max_concurrent held now (running probes, open shells) and the limit. */
	void (*budget)(void *ctx, uint64_t *in_use, uint64_t *limit);
	/* The container engine; NULL = no containers module. */
	void (*engine)(void *ctx, struct health_engine *out);
};

enum health_state { HEALTH_HEALTHY = 0, HEALTH_DEGRADED = 1, HEALTH_UNHEALTHY = 2 };

const char *health_state_name(enum health_state s);

/* Starts the monitor thread (first check at once) and the reporter (when
 * agent.control_plane_url is set). Copies what it needs from cfg. sources is
 * copied; its ctx is borrowed and must outlive the monitor. */
struct health_monitor *health_start(const struct cfg *cfg, const struct health_sources *sources,
                                    struct vm_err *err);

/* Stops both threads (an in-flight report is cancelled; its entry stays in
 * the spool) and frees. NULL is fine. */
void health_stop(struct health_monitor *m);

/* Takes new thresholds and intervals after a reload (paths stay). */
void health_reconfigure(struct health_monitor *m, const struct cfg *cfg);

/* The latest snapshot as JSON text (GET /v1/health, status). Caller frees.
 * NULL on out-of-memory. */
char *health_json(struct health_monitor *m);

/* The latest snapshot in Prometheus text exposition format 0.0.4. Caller frees. */
char *health_prometheus(struct health_monitor *m);

/* The host inventory (GET /v1/inventory) as compact JSON text the caller
 * frees, *len its length: collected on demand, then served from a cache for
 * inventory.cache_ttl; lists capped at inventory.max_items and the document
 * at inventory.max_bytes (cut lists named in "truncated"); sections that
 * failed carry their reason in "errors". Concurrent callers share one
 * collection. NULL (err says why) only when no document could be built. */
char *health_inventory_json(struct health_monitor *m, size_t *len, struct vm_err *err);

/* The package manager that owns the OS, by os-release's ID, then the
 * families ID_LIKE lists: "apt", "dnf" (also yum's hosts), "zypper", "apk",
 * or NULL when none is known. _of is the pure mapping; the other reads
 * etc_root/os-release ("/etc" on a host). Not "which binary exists": a
 * Debian host with dnf installed is still apt's. */
const char *health_os_pkg_manager_of(const char *id, const char *id_like);
const char *health_os_pkg_manager(const char *etc_root);

/* Files the reporter leaves under state_dir, for `status` when the agent is
 * not running: "<state_dir>/health/last_report.json" and the spool directory. */
void health_paths(const char *state_dir, char *last_report, size_t lr_cap, char *spool_dir,
                  size_t sd_cap);

/* Entries and bytes in a spool directory (status without the agent). */
int health_spool_usage(const char *spool_dir, uint64_t *entries, uint64_t *bytes,
                       struct vm_err *err);

#endif
