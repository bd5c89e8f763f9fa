/* Health internals shared by the module's files, its unit tests and fuzz
 * targets. Nothing outside health/ and tests/ includes this. */
#ifndef VMA_HEALTH_INTERNAL_H
#define VMA_HEALTH_INTERNAL_H

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdatomic.h>
#include <sys/statvfs.h>

#include "core/cp.h"
#include "core/rand.h"
#include "core/log.h"
#include "core/secret.h"
#include "health/health.h"

#define HEALTH_MAX_FS        32
#define HEALTH_MAX_NET       16
#define HEALTH_MAX_REASONS   16
#define HEALTH_PROC_FILE_MAX (1024 * 1024)

struct health_fs {
	char mount[256];
	char fstype[32];
	char device[128];
	uint64_t size_bytes, avail_bytes, free_bytes;
	uint64_t inodes_total, inodes_free;
};

struct health_net {
	char iface[32];
	uint64_t rx_bytes, tx_bytes;
};

/* Raw CPU tick counters from /proc/stat: the percent needs two samples. */
struct health_cpu_ticks {
	uint64_t total, idle;
};

struct health_system {
	double cpu_percent; /* -1 until two samples exist */
	struct health_cpu_ticks ticks;
	uint64_t ncpu;
	double load1, load5, load15;
	uint64_t mem_total, mem_available, swap_total, swap_free;
	double uptime_s;
	uint64_t processes;
	size_t nfs;
	struct health_fs fs[HEALTH_MAX_FS];
	size_t nnet;
	struct health_net net[HEALTH_MAX_NET];
	uint64_t self_rss_bytes, self_fds, self_threads;
	double self_cpu_seconds;
	int64_t boot_time; /* unix seconds, from btime */
	uint32_t errors;   /* bit i: collector i failed this round */
};

/* Everything the checks and exporters see: one consistent copy. */
struct health_snapshot {
	int64_t time;       /* unix seconds of this check */
	int64_t started_at; /* agent start */
	struct health_system sys;
	struct health_tunnel_state tunnel;
	bool probe_enabled;
	uint64_t probe_queued, probe_running;
	uint64_t probe_write_failures, probe_quarantined;
	bool budget_known; /* false: no budget source */
	uint64_t budget_in_use, budget_limit;
	struct log_stats log;   /* lines the log file refused (sent to stderr) */
	bool containment_known; /* false: no containment source */
	struct health_containment containment;
	bool engine_known; /* false: no engine source */
	struct health_engine engine;
	/* reporter */
	bool reporting_enabled;
	int64_t last_report_at;    /* unix s of the last attempt; 0 = none */
	int64_t last_report_ok_at; /* last success; 0 = none */
	int last_report_status;    /* HTTP status, 0 = no answer */
	char last_report_error[160];
	int64_t cp_unreachable_since; /* 0 = reachable or unknown */
	bool clock_skew_known;
	double clock_skew_s; /* control plane time - local time */
	uint64_t reports_sent, reports_failed, spool_entries, spool_bytes, spool_dropped;
	/* checks */
	enum health_state state;
	size_t nreasons;
	char reasons[HEALTH_MAX_REASONS][160];
};

/* --- collectors (proc_linux.c) ------------------------------------------------------ */

struct health_proc_ctx {
	const char *proc_root; /* "/proc", or a fixture directory */
	/* statvfs, replaceable by tests; NULL = the real one */
	int (*statvfs_fn)(const char *path, struct statvfs *out);
	int self_pid; /* 0 = "self" */
};

/* Runs every collector; prev holds the previous CPU ticks (for cpu_percent). */
void health_collect(const struct health_proc_ctx *ctx, const struct health_cpu_ticks *prev,
                    struct health_system *out);

/* Parsers of /proc text, one per format (fuzzed). Each returns 0 or -1 on
 * malformed input; partial results are not used. */
int health_parse_stat(const char *text, struct health_cpu_ticks *ticks, uint64_t *ncpu,
                      int64_t *btime, uint64_t *procs_running);
int health_parse_loadavg(const char *text, double *l1, double *l5, double *l15);
int health_parse_meminfo(const char *text, struct health_system *out);
int health_parse_uptime(const char *text, double *uptime_s);
int health_parse_netdev(const char *text, struct health_net *out, size_t cap, size_t *n);
/* /proc/self/mounts: real filesystems only (pseudo ones skipped), mount
 * points unescaped (\040 → space). */
int health_parse_mounts(const char *text, struct health_fs *out, size_t cap, size_t *n);
int health_parse_self_status(const char *text, uint64_t *rss_bytes, uint64_t *threads);
bool health_fs_is_pseudo(const char *fstype);
/* Reads <proc_root>/rel (at most HEALTH_PROC_FILE_MAX bytes); caller frees. */
int health_read_proc(const struct health_proc_ctx *ctx, const char *rel, char **text);
/* Real filesystems from the mounts file with their statvfs sizes (at most cap). */
int health_collect_filesystems(const struct health_proc_ctx *ctx, struct health_fs *fs, size_t cap,
                               size_t *nfs);
double health_cpu_percent(const struct health_cpu_ticks *prev, const struct health_cpu_ticks *cur);

/* --- inventory (inventory.c: document, bounds, cache; inventory_linux.c: collectors) --- */

#define HEALTH_INV_STR_MAX 1024 /* each host string, after escaping, cut on a character */

struct health_os_release {
	char id[64], id_like[256], name[256], version[256], version_id[64], version_codename[64],
	    pretty_name[256];
};

/* os-release(5): KEY=value lines, values bare or quoted ("…" with \ escapes,
 * or '…'); unknown keys and bad lines are ignored. 0, or -1 when no known
 * key was found. */
int health_inv_parse_os_release(const char *text, struct health_os_release *out);

struct health_cpu_info {
	char model[256];
	uint64_t count; /* "processor" entries */
};

/* /proc/cpuinfo: the first model line ("model name", "Processor", "cpu
 * model", "uarch") and the processor count. 0, or -1 with no processor. */
int health_inv_parse_cpuinfo(const char *text, struct health_cpu_info *out);

struct health_pkg {
	char name[256], version[256], arch[64];
};

#define HEALTH_INV_LINE_SKIP 1 /* a line that is fine but not an entry */

/* One line of `dpkg-query -W -f='${Package}\t${Version}\t${Architecture}\t
 * ${db:Status-Abbrev}\n'`: installed packages (status "ii", "hi", "iU"…: the
 * second letter says installed) give 0, others HEALTH_INV_LINE_SKIP, bad
 * lines -1. */
int health_inv_parse_dpkg_line(const char *line, size_t len, struct health_pkg *out);

/* One line of `rpm -qa --queryformat '%{NAME}\t%{EPOCH}\t%{VERSION}-%{RELEASE}
 * \t%{ARCH}\n'`; an epoch other than "(none)" becomes "E:" before the version. */
int health_inv_parse_rpm_line(const char *line, size_t len, struct health_pkg *out);

struct health_sock {
	char addr[46]; /* INET6_ADDRSTRLEN */
	uint16_t port;
	uint8_t state; /* TCP_LISTEN = 0x0A; TCP_CLOSE = 0x07 for unconnected UDP */
	bool remote_any; /* remote address and port all zero */
	uint32_t uid;
	uint64_t inode;
};

/* One line of /proc/net/{tcp,udp} (v6 false) or {tcp6,udp6}. 0, the header
 * HEALTH_INV_LINE_SKIP, or -1. */
int health_inv_parse_net_line(const char *line, size_t len, bool v6, struct health_sock *out);

/* `systemctl list-units|list-unit-files --output=json`: an array of objects.
 * For each object with a string name_key, fn gets it and the string values
 * of k1 and k2 ("" when absent). Returns the objects seen, or -1 when the
 * text is not such an array. */
typedef void (*health_unit_fn)(void *ctx, const char *name, const char *v1, const char *v2);
int health_inv_parse_units_json(const char *text, size_t len, const char *name_key,
                                const char *k1, const char *k2, health_unit_fn fn, void *ctx);

/* The same tables without --output=json (`--no-legend --plain`): columns
 * split on blanks, a leading bullet ("●", "*") dropped; fn gets column 0 and
 * columns c1, c2 (-1 = none, ""). Returns the rows, or -1 when a row has too
 * few columns. */
int health_inv_parse_units_plain(const char *text, size_t len, int c1, int c2, health_unit_fn fn,
                                 void *ctx);

struct health_inv_ctx {
	struct health_proc_ctx proc; /* proc_root, statvfs */
	const char *etc_root;        /* "/etc", or a fixture directory */
	size_t max_items;            /* per list */
	const atomic_bool *cancel;   /* may be NULL: ends running tools */
};

/* Collects every section into a new document: sections that fail leave
 * their message under "errors", cut lists are named in "truncated". */
json_t *health_inventory_collect(const struct health_inv_ctx *ctx);

/* Dumps doc compactly within max_bytes, cutting the longest lists in half
 * (and naming them in "truncated") until it fits. 0, or -1 (no memory, or
 * nothing left to cut). */
int health_inventory_dump(json_t *doc, uint64_t max_bytes, char **text, size_t *len);

/* Adds section to the "truncated" array unless it is there already. */
void health_inv_name_truncated(json_t *truncated, const char *section);

/* A host string as JSON: clean UTF-8 as it is; anything else escaped whole
 * (\xNN, controls, backslashes doubled) as in the audit log; cut at
 * HEALTH_INV_STR_MAX on a character boundary. */
json_t *health_inv_str(const char *s, size_t len);

/* --- checks (checks.c) ----------------------------------------------------------------- */

struct health_thresholds {
	double disk_warn_percent, disk_critical_percent, memory_warn_percent;
	uint64_t tunnel_down_after_ms, cp_unreachable_after_ms, clock_skew_max_ms;
};

void health_thresholds_from_cfg(const struct cfg *cfg, struct health_thresholds *t);

/* Fills snap->state and snap->reasons from the table of checks. */
void health_evaluate(struct health_snapshot *snap, const struct health_thresholds *t);

/* --- exporters (prometheus.c, json.c) ------------------------------------------------ */

char *health_format_prometheus(const struct health_snapshot *s, const char *version);
json_t *health_snapshot_json(const struct health_snapshot *s, const char *agent_id,
                             const char *version);

/* --- spool (spool.c) ----------------------------------------------------------------- */

#define HEALTH_SPOOL_MAGIC "vmspool1"
#define HEALTH_ID_LEN      ID_LEN /* UUID text (core/rand.h) */

struct health_spool;

struct health_spool_limits {
	uint64_t max_entries;
	uint64_t max_bytes;
};

/* Opens (creating) dir, removes temp files a crash left behind, indexes the
 * entries in order. Corrupt entries are moved aside as *.corrupt and counted. */
struct health_spool *health_spool_open(const char *dir, const struct health_spool_limits *lim,
                                       struct vm_err *err);
void health_spool_close(struct health_spool *sp);
void health_spool_set_limits(struct health_spool *sp, const struct health_spool_limits *lim);

/* Appends one report (its id and JSON body), atomically and durably. Drops the
 * oldest entries first when the limits would be exceeded. */
int health_spool_push(struct health_spool *sp, const char *id, const char *body, size_t len,
                      struct vm_err *err);

/* The oldest entry: id and body (malloc'd, caller frees). An empty spool is
 * not an error: 0 with *body = NULL. */
int health_spool_peek(struct health_spool *sp, char id[HEALTH_ID_LEN + 1], char **body, size_t *len,
                      struct vm_err *err);

/* Removes the oldest entry (after it was delivered); VM_ERR_INVALID when empty. */
int health_spool_pop(struct health_spool *sp, struct vm_err *err);

void health_spool_stats(const struct health_spool *sp, uint64_t *entries, uint64_t *bytes,
                        uint64_t *dropped, uint64_t *corrupt);

/* One spool entry file: "vmspool1 <sha256 hex of body> <id>\n<body>". */
int health_spool_parse_entry(const char *data, size_t len, char id[HEALTH_ID_LEN + 1],
                             const char **body, size_t *body_len);
size_t health_spool_format_header(const char *id, const char *body, size_t len, char *out,
                                  size_t cap);

/* --- the monitor (monitor.c) and the reporter thread (reporter.c) --------------------- */

#include <pthread.h>
#include <stdatomic.h>

struct health_monitor {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	atomic_bool stop;
	bool have_monitor, have_reporter;
	pthread_t monitor_thr, reporter_thr;
	struct health_sources src;
	struct health_proc_ctx proc;
	char proc_root[PATH_MAX];
	/* settings, under mu */
	struct health_thresholds th;
	uint64_t check_interval_ms, report_interval_ms;
	struct health_spool_limits spool_lim;
	bool spool_lim_changed;
	/* the latest snapshot, under mu */
	struct health_snapshot cur;
	bool state_changed; /* wakes the reporter at once */
	/* reporter settings: ids and paths fixed at start; the endpoint, CA, proxy
	 * and credentials file follow reloads (under mu) */
	char agent_id[CFG_ID_MAX], tenant_id[CFG_ID_MAX];
	struct cp_conf cp;
	bool creds_reload; /* the reporter must re-read the credentials file */
	char last_report_path[PATH_MAX], spool_dir[PATH_MAX];
	struct health_spool *spool; /* reporter thread only */
	/* inventory: settings under mu; the cache under inv_mu, which a request
	 * holds while it collects, so concurrent requests share one collection */
	uint64_t inv_ttl_ms, inv_max_bytes;
	size_t inv_max_items;
	pthread_mutex_t inv_mu;
	char *inv_text;
	size_t inv_len;
	int64_t inv_at_ms; /* monotonic; 0 = nothing cached */
};

/* Takes inventory.* from cfg (caller holds mu, or is alone). */
void health_inventory_settings(struct health_monitor *m, const struct cfg *cfg);

/* Reporter thread body (reporter.c). */
void *health_reporter_main(void *arg);

/* Copies the latest snapshot under the lock. */
void health_snapshot_copy(struct health_monitor *m, struct health_snapshot *out);

/* Builds a report (trigger: "startup", "interval", "state_change") with a new
 * random id into id and a JSON body the caller frees. No randomness is an
 * error (VM_ERR_IO, id ""), never an id derived from the clock. */
int health_report_new(struct health_monitor *m, const char *trigger, char id[HEALTH_ID_LEN + 1],
                      char **body, size_t *len, struct vm_err *err);

#endif
