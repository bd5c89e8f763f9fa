/* Lifecycle internals shared by install/configure/repair/upgrade/uninstall:
 * child processes with timeouts, file helpers, the flat config editor, the
 * service manager (systemd today) and control-plane calls. */
#ifndef VMA_LIFECYCLE_INTERNAL_H
#define VMA_LIFECYCLE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/err.h"
#include "core/fs.h" /* fs_copy_file, fs_write_atomic: every file lifecycle writes */
#include "lifecycle/lifecycle.h"

/* Target paths (as the installed system sees them). */
#define LC_ETC_DIR     "/etc/vm-agent"
#define LC_CONFIG      "/etc/vm-agent/config.yaml"
#define LC_CREDENTIALS "/etc/vm-agent/credentials.json"
#define LC_PIKO_TOKEN  "/etc/vm-agent/piko.token"
#define LC_BIN_LOCAL   "/usr/local/bin/vm-agent"
#define LC_BIN_PACKAGE "/usr/bin/vm-agent"
#define LC_UNIT_DIR    "/etc/systemd/system"
#define LC_STATE_DIR   "/var/lib/vm-agent"
#define LC_LOG_DIR     "/var/log/vm-agent"
#define LC_CACHE_DIR   "/var/cache/vm-agent"

/* --- child processes (lifecycle/proc.c) ---------------------------------------------------- */

struct lc_proc_result {
	int exited;      /* 1 when it exited normally */
	int exit_code;   /* when exited */
	int signal;      /* when killed by a signal */
	int timed_out;   /* killed by us after the timeout */
	int exec_failed; /* execve itself failed (errno in exec_errno) */
	int exec_errno;
	char out[8192]; /* stdout, truncated, NUL-terminated */
	char err[2048]; /* stderr, truncated */
};

/* Runs argv[0] (a path, no shell, no PATH search unless search is true) in its
 * own process group with stdin from /dev/null; kills the group after
 * timeout_ms. Returns 0 when the process ran (see res), negative on fork/pipe
 * errors. */
int lc_proc_run(const char *const argv[], bool search, uint64_t timeout_ms,
                struct lc_proc_result *res, struct vm_err *err);

/* One line describing how it ended: "exit 1", "killed by signal 11", … */
void lc_proc_describe(const struct lc_proc_result *res, char *out, size_t cap);

/* --- files (lifecycle/util.c) -------------------------------------------------------------- */

/* Removes a file or a whole tree; a missing path is fine. */
int lc_remove_tree(const char *path, struct vm_err *err);
bool lc_exists(const char *path);
bool lc_is_dir(const char *path);
int lc_sha256_hex(const char *path, char out[65], struct vm_err *err);
/* Ensures dir exists with exactly mode (creating parents 0755). */
int lc_ensure_dir(const char *dir, mode_t mode, bool *changed, struct vm_err *err);
/* Joins root and a target path. */
int lc_join(char *out, size_t cap, const char *root, const char *target);

/* The install record (state_dir/install.json). */
struct lc_record {
	char bin[PATH_MAX]; /* target path of the binary */
	char sha256[65];
	char version[64];
	bool from_package;
};
int lc_record_read(const struct lc_paths *p, struct lc_record *rec, struct vm_err *err);
int lc_record_write(const struct lc_paths *p, const struct lc_record *rec, struct vm_err *err);

/* Credentials file (JSON, 0600). */
struct lc_creds {
	char agent_id[128];
	char tenant_id[128];
	char token[4096]; /* secret */
	bool deregistered;
};
int lc_creds_read(const char *path, struct lc_creds *c, struct vm_err *err);
void lc_creds_clear(struct lc_creds *c);

/* --- flat config editing (lifecycle/cfgedit.c) ---------------------------------------------- */

#define LC_CFG_MAX_PAIRS 128

struct lc_cfg_pair {
	char key[96];
	char value[8192];
};

struct lc_cfg_doc {
	struct lc_cfg_pair *pairs;
	size_t n;
};

/* Reads path (missing = empty document) into dotted key/value pairs. */
int lc_cfg_read(const char *path, struct lc_cfg_doc *doc, struct vm_err *err);
int lc_cfg_parse(const char *name, const char *data, size_t len, struct lc_cfg_doc *doc,
                 struct vm_err *err);
/* Sets (adds or replaces) or removes a key. The key must be in the config table. */
int lc_cfg_set(struct lc_cfg_doc *doc, const char *key, const char *value, struct vm_err *err);
int lc_cfg_unset(struct lc_cfg_doc *doc, const char *key, struct vm_err *err);
const char *lc_cfg_get(const struct lc_cfg_doc *doc, const char *key);
/* Renders YAML (sections in the table's order, values double-quoted). malloc'd. */
char *lc_cfg_render(const struct lc_cfg_doc *doc);
void lc_cfg_free(struct lc_cfg_doc *doc);
/* Validates the rendered text with the real loader (no environment). */
int lc_cfg_validate_text(const char *name, const char *text, struct vm_err *err);
/* Renders, validates, backs up the old file (path.bak) and replaces atomically. */
int lc_cfg_write(const char *path, const struct lc_cfg_doc *doc, struct vm_err *err);

/* --- service manager (lifecycle/service_systemd.c; a Windows port adds a file) -------------- */

/* Writes the unit file for the binary at bin_target. Sets *changed when the
 * content differs from what was there. */
int lc_svc_write_unit(const struct lc_paths *p, const char *bin_target, bool *changed,
                      struct vm_err *err);
/* The unit text lc_svc_write_unit would write (malloc'd). */
char *lc_svc_render_unit(const char *bin_target);
int lc_svc_enable(const struct lc_paths *p, struct vm_err *err);
int lc_svc_disable(const struct lc_paths *p, struct vm_err *err);
bool lc_svc_is_enabled(const struct lc_paths *p);
/* Live-system only (fail with VM_ERR_INVALID under a root). */
int lc_svc_restart(const struct lc_paths *p, struct vm_err *err);
int lc_svc_stop(const struct lc_paths *p, struct vm_err *err);
bool lc_svc_is_active(const struct lc_paths *p);
/* Main pid of the running service, 0 when not running or unknown. */
pid_t lc_svc_main_pid(const struct lc_paths *p);
bool lc_svc_available(const struct lc_paths *p);
/* Starts argv (argv[0] an absolute path) so that it outlives the service:
 * systemd-run on a systemd machine, else a detached session. Does not wait. */
int lc_svc_spawn_detached(const char *const argv[], struct vm_err *err);

/* --- control plane (lifecycle/cp.c) ----------------------------------------------------------- */

struct lc_cp_opts {
	const char *url; /* agent.control_plane_url */
	const char *ca_file;
	const char *proxy;
	const char *proxy_credentials_file; /* agent.proxy_credentials_file; NULL = none */
};

struct lc_registration {
	char agent_id[128];
	char token[4096]; /* agent credential */
	char piko_endpoint[128];
	char piko_token[8192];
	char piko_url[512];   /* may be empty: keep the one given at install */
	char *jwt_keys_json;  /* the "jwt_public_keys" array, malloc'd */
	char jwt_issuer[512]; /* "iss" of those JWTs; may be empty */
};

int lc_cp_register(const struct lc_cp_opts *cp, const char *install_key, const char *tenant_id,
                   const char *agent_id, const char *version, struct lc_registration *out,
                   struct vm_err *err);
void lc_registration_clear(struct lc_registration *reg);
int lc_cp_deregister(const struct lc_cp_opts *cp, const struct lc_creds *c, struct vm_err *err);
/* POST /v1/agents/{id}/events with {type, …fields}; body_json is an object. */
int lc_cp_event(const struct lc_cp_opts *cp, const struct lc_creds *c, const char *body_json,
                struct vm_err *err);
/* Downloads url to path (max bytes). file:// and plain paths are copied. */
int lc_fetch(const struct lc_cp_opts *cp, const char *url, const char *path, size_t max,
             struct vm_err *err);

/* --- shared steps (install.c) ---------------------------------------------------------------- */

/* Checks (fix = false) or creates/fixes (fix = true) the agent's directories. */
int lc_install_dirs(const struct lc_paths *p, struct lc_report *r, bool fix, struct vm_err *err);
/* Writes credentials.json and piko.token (0600) from a registration. */
int lc_write_credentials(const struct lc_paths *p, const struct lc_registration *reg,
                         const char *tenant_id, const char *cp_url, struct vm_err *err);
/* Polls GET /v1/livez on the port config_path names until 200 or timeout. */
int lc_wait_healthy(const char *config_path, unsigned timeout_s, struct vm_err *err);

/* --- version strings ------------------------------------------------------------------------ */

/* Compares "1.2.3" style versions numerically (a "-pre" suffix sorts before
 * the release). Returns <0, 0, >0; -2 on unparseable input via *ok = false. */
int lc_version_cmp(const char *a, const char *b, bool *ok);

#endif
