/* Lifecycle: install, configure, repair, upgrade (with rollback) and uninstall
 * of the agent on one machine. Everything can be applied under a root
 * directory (--root) for tests and image building; then the live system's
 * systemd is never touched. */
#ifndef VMA_LIFECYCLE_LIFECYCLE_H
#define VMA_LIFECYCLE_LIFECYCLE_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/err.h"

#define LC_UNIT_NAME "vm-agent.service"

/* Paths as the lifecycle code uses them: root-prefixed. */
struct lc_paths {
	char root[PATH_MAX]; /* "" = the live system */
	char etc_dir[PATH_MAX];
	char config[PATH_MAX];
	char credentials[PATH_MAX]; /* credentials.json, 0600 */
	char piko_token[PATH_MAX];  /* piko.token, 0600 */
	char bin[PATH_MAX];
	char unit[PATH_MAX];
	char unit_wants[PATH_MAX]; /* the multi-user.target.wants symlink */
	char state_dir[PATH_MAX];
	char log_dir[PATH_MAX];
	char cache_dir[PATH_MAX];
	char install_record[PATH_MAX]; /* state_dir/install.json */
	char journal[PATH_MAX];        /* state_dir/upgrade.journal */
	char pid_file[PATH_MAX];       /* state_dir/agent.pid */
	char reload_status[PATH_MAX];  /* state_dir/reload.json */
};

/* Fills p for root (NULL or "" = live system). The binary path is the one
 * recorded at install time when there is a record, else bin_default (NULL =
 * /usr/local/bin/vm-agent). */
int lc_paths_init(struct lc_paths *p, const char *root, const char *bin_default,
                  struct vm_err *err);

/* The path as the installed system sees it (root prefix removed). */
const char *lc_target_path(const struct lc_paths *p, const char *full);

/* --- reports: what a subcommand did or found, one line per step ----------------------- */

enum lc_status { LC_OK = 0, LC_CHANGED, LC_SKIPPED, LC_WARN, LC_FAIL };

struct lc_step {
	char name[48];
	enum lc_status status;
	char detail[400];
	char hint[240];
};

#define LC_REPORT_MAX 64

struct lc_report {
	const char *command;
	struct lc_step steps[LC_REPORT_MAX];
	size_t n;
	char result[400]; /* one-line outcome */
	/* a few named facts for --json (agent_id, version…) */
	char facts[8][2][256];
	size_t nfacts;
};

void lc_report_init(struct lc_report *r, const char *command);
void lc_report_add(struct lc_report *r, const char *name, enum lc_status st, const char *hint,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));
void lc_report_fact(struct lc_report *r, const char *key, const char *value);
/* Worst status of all steps. */
enum lc_status lc_report_worst(const struct lc_report *r);
/* Human text or one JSON document. */
void lc_report_print(const struct lc_report *r, FILE *out, bool json);

/* --- install ---------------------------------------------------------------------------------- */

struct lc_install_opts {
	const char *root;
	const char *tenant_id;
	const char *install_key; /* secret; only sent to the control plane */
	const char *piko_url;
	const char *control_plane_url;
	const char *agent_id; /* requested id; NULL = the control plane picks */
	const char *ca_file;
	const char *proxy;
	const char *self_path; /* the binary to place; NULL = /proc/self/exe */
	const char *version;   /* of this binary */
	bool from_package;     /* the binary is already in /usr/bin (dpkg put it there) */
	bool no_start;
	bool reregister; /* register again even with valid credentials */
	unsigned health_timeout_s;
};

int lc_install(const struct lc_install_opts *o, struct lc_report *r, struct vm_err *err);

/* --- configure -------------------------------------------------------------------------------- */

struct lc_configure_opts {
	const char *root;
	const char *config;     /* NULL = <root>/etc/vm-agent/config.yaml */
	const char *const *set; /* "section.key=value" */
	size_t nset;
	const char *const *unset; /* "section.key" */
	size_t nunset;
	bool no_reload;
	unsigned reload_timeout_s;
};

int lc_configure(const struct lc_configure_opts *o, struct lc_report *r, struct vm_err *err);

/* Validates a config file; on success writes the redacted effective config
 * to out (when not NULL). The file's paths are target paths: the files they
 * name are checked under root (NULL or "" for none), as --root means. */
int lc_config_check(const char *root, const char *path, FILE *out, struct vm_err *err);

/* The agent (cmd/cmd_run.c) records each reload's outcome here so that
 * `configure` can tell whether the agent took the new file, and which changed
 * keys it applied and which need a restart (comma-separated names, NULL = none). */
void lc_reload_status_write(const char *state_dir, const char *config_path, bool ok,
                            const char *message, const char *applied, const char *restart_required);
/* Makes this process the one agent of state_dir: takes an exclusive flock on
 * state_dir/agent.lock, held until the process exits (the descriptor is
 * close-on-exec and never closed), then writes state_dir/agent.pid (the pid
 * file configure falls back to). While another live agent holds the lock it
 * retries for up to wait_ms (a restart may overlap the old process's exit),
 * then fails with VM_ERR_BUSY naming that agent's pid. Call it before the
 * agent sweeps or writes its state. */
int lc_agent_claim(const char *state_dir, int wait_ms, struct vm_err *err);

/* --- Piko token renewal (lifecycle/renew.c) ------------------------------------------ */

struct cfg;
struct secret;
struct lc_renewer;

/* Receives each renewed token (borrowed for the call); may block. */
typedef int (*lc_token_sink)(void *ctx, const struct secret *token, struct vm_err *err);

/* Renews the Piko upstream token from the control plane at about 2/3 of its
 * lifetime (and at once after lc_renewer_kick), backing off on failures; writes
 * it to piko.token_file atomically (0600) and hands it to sink. Idle unless
 * agent.control_plane_url, agent.credentials_file and piko.server_url are set.
 * new creates it without a thread (kick is already safe); run starts it. */
struct lc_renewer *lc_renewer_new(const struct cfg *cfg, struct vm_err *err);
int lc_renewer_run(struct lc_renewer *r, lc_token_sink sink, void *ctx, struct vm_err *err);
/* Renew now (Piko refused the token). Any thread; only signals. */
void lc_renewer_kick(void *renewer);
/* New settings (SIGHUP); the schedule is recomputed from the token file. */
void lc_renewer_reconfigure(struct lc_renewer *r, const struct cfg *cfg);
/* Stops, joins and frees. NULL is fine. */
void lc_renewer_stop(struct lc_renewer *r);

/* --- repair ----------------------------------------------------------------------------------- */

struct lc_repair_opts {
	const char *root;
	bool diagnose_only;
	const char *install_key; /* to re-register when the credentials are invalid */
	const char *version;     /* of this binary */
	bool offline;            /* skip the network checks */
};

/* Returns 0 when everything is OK (diagnose) or was fixed (repair). */
int lc_repair(const struct lc_repair_opts *o, struct lc_report *r, struct vm_err *err);

/* --- upgrade ---------------------------------------------------------------------------------- */

struct lc_upgrade_opts {
	const char *root;
	const char *version;       /* the version being installed */
	const char *url;           /* http(s)://, file:// or a local path */
	const char *checksum;      /* "sha256:HEX" */
	const char *signature_url; /* NULL = url + ".minisig" */
	const char *current_version;
	const char *builtin_key; /* compiled-in minisign key (base64), may be "" */
	bool allow_downgrade;
	unsigned self_test_timeout_s; /* 0 = 10 */
	unsigned health_timeout_s;    /* 0 = 60 */
	const char *ca_file;
	const char *proxy;
};

/* Runs the whole upgrade; on any failure after the swap, the previous binary
 * is restored (and restarted). Returns 0 when the new version is installed and
 * healthy. */
int lc_upgrade(const struct lc_upgrade_opts *o, struct lc_report *r, struct vm_err *err);

/* An upgrade asked for remotely (POST /v1/upgrade). */
struct lc_upgrade_request {
	const char *version;
	const char *url;           /* http(s) only */
	const char *checksum;      /* sha256:HEX */
	const char *signature_url; /* NULL = url + ".minisig" */
	bool allow_downgrade;
	const char *runtime_dir; /* the agent's 0700 runtime dir: the request goes through it */
};

/* Checks the request and starts `vm-agent upgrade` as a separate process
 * (a transient systemd unit when systemd runs, so that the restart it
 * triggers does not kill it; else a detached session). Returns at once; the
 * upgrade reports its outcome to the control plane (events). */
int lc_upgrade_start_background(const struct lc_upgrade_request *rq, struct vm_err *err);

/* The request reaches that process as `upgrade --request FILE`, FILE a 0600
 * file <runtime_dir>/upgrade-request.*.json: never on its command line, which
 * every local user can read. */
#define LC_UPGRADE_REQUEST_PREFIX "upgrade-request."
struct lc_upgrade_request_buf {
	char version[64];
	char url[2048 + 1];
	char checksum[80];
	char signature_url[2048 + 1]; /* "" = url + ".minisig" */
	bool allow_downgrade;
};

/* Reads and removes FILE: a regular file (no symlink) of this euid, mode
 * 0600, in a directory private to this euid; the request is validated like
 * POST /v1/upgrade's. */
int lc_upgrade_request_load(const char *path, struct lc_upgrade_request_buf *out,
                            struct vm_err *err);

/* At start, before the webhook: removes the request files left in
 * runtime_dir by upgrades killed before they read theirs (each holds a URL
 * that may carry a token). Only this agent's webhook writes them, so none
 * is in flight then. Returns how many went. */
int lc_upgrade_sweep_requests(const char *runtime_dir);

enum lc_recover_result {
	LC_RECOVER_NOTHING = 0, /* no interrupted upgrade */
	LC_RECOVER_CLEANED,     /* interrupted before the swap: leftovers removed */
	LC_RECOVER_ROLLED_BACK, /* the binary was swapped but never confirmed: restored */
	LC_RECOVER_BUSY,        /* an upgrade is running right now (its lock is held) */
};

/* Finishes or undoes an interrupted upgrade described by the journal in
 * state_dir. Call early at start: when it returns LC_RECOVER_ROLLED_BACK the
 * file this process was started from has been replaced by the previous binary
 * and the caller should re-exec it. */
enum lc_recover_result lc_upgrade_recover(const char *state_dir, char *bin, size_t bin_cap,
                                          char *msg, size_t cap);

/* Whether an upgrade is pending in state_dir: none (no journal), running
 * (journal and upgrade.lock held), or orphaned (a journal nobody holds the
 * lock for: the upgrade died; lc_upgrade_recover settles it). An agent that
 * started while one was running (LC_RECOVER_BUSY) polls this, because the
 * upgrade may die after restarting it into a binary it never confirmed. */
enum lc_upgrade_state { LC_UPGRADE_NONE = 0, LC_UPGRADE_RUNNING, LC_UPGRADE_ORPHANED };
enum lc_upgrade_state lc_upgrade_state(const char *state_dir);

/* --- uninstall -------------------------------------------------------------------------------- */

struct lc_uninstall_opts {
	const char *root;
	bool keep_data;
	bool keep_logs;
	bool purge;
	const char *ca_file;
};

int lc_uninstall(const struct lc_uninstall_opts *o, struct lc_report *r, struct vm_err *err);

/* The minisign key compiled in (cmake -DVMA_UPGRADE_PUBKEY=…), "" when none. */
extern const char lc_builtin_upgrade_key[];

/* What uninstall removes for each flag (--help and docs/lifecycle.md). */
#define LC_UNINSTALL_TABLE                                                               \
	"  what                     default  --keep-data  --keep-logs  --purge\n"        \
	"  service unit (stopped,   removed  removed      removed      removed\n"        \
	"    disabled)\n"                                                                \
	"  binary, binary.prev      removed  removed      removed      removed\n"        \
	"  config.yaml (+ .bak)     removed  removed      removed      removed\n"        \
	"  /var/lib/vm-agent        removed  KEPT         removed      removed\n"        \
	"    (state, records, spool)\n"                                                  \
	"  /var/log/vm-agent        removed  removed      KEPT         removed\n"        \
	"  credentials.json,        KEPT     KEPT         KEPT         removed\n"        \
	"    piko.token, /etc/vm-agent\n"                                                \
	"  /var/cache/vm-agent      KEPT     KEPT         KEPT         removed\n"        \
	"\n  --purge cannot be combined with --keep-data or --keep-logs. Kept\n"         \
	"  credentials are marked \"deregistered\" after a successful deregistration:\n" \
	"  a later install registers again (same agent id) and needs --key.\n"

#endif
