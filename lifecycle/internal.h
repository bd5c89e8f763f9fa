/* Lifecycle internals shared by install/configure/repair/upgrade/uninstall:
 * file helpers, config.yaml through core, the
 * service manager (systemd today) and downloads (control-plane calls: core/cp). */
#ifndef VMA_LIFECYCLE_INTERNAL_H
#define VMA_LIFECYCLE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/config.h"
#include "core/cp.h"
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

/* The credentials file and every control-plane call: core/cp.h (cp_creds_*,
 * cp_register, cp_deregister, cp_event, cp_piko_token). */

/* --- config.yaml (read and edited by core/config.c; lifecycle/configure.c) ------------------ */

/* The effective configuration, as the agent would run with it: the file (a
 * missing one counts as empty), the defaults and this process's environment.
 * When that does not load, err says why and the result holds what the file
 * says over the defaults (or only the defaults). malloc'd; NULL when out of
 * memory. Its paths are target paths: under --root, join them (lc_join). */
struct cfg *lc_config_effective(const char *path, struct vm_err *err);
void lc_config_free(struct cfg *c);
/* Validates the edited file with the loader, keeps the previous one as
 * path.bak and replaces it atomically (0640). */
int lc_config_write(const char *path, const struct cfg_doc *doc, struct vm_err *err);

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
int lc_svc_reload_units(const struct lc_paths *p, struct vm_err *err); /* daemon-reload */
int lc_svc_restart(const struct lc_paths *p, struct vm_err *err);
int lc_svc_stop(const struct lc_paths *p, struct vm_err *err);
bool lc_svc_is_active(const struct lc_paths *p);
/* Main pid of the running service, 0 when not running or unknown. */
pid_t lc_svc_main_pid(const struct lc_paths *p);
bool lc_svc_available(const struct lc_paths *p);
/* Starts argv (argv[0] an absolute path) so that it outlives the service:
 * systemd-run on a systemd machine, else a detached session. Does not wait. */
int lc_svc_spawn_detached(const char *const argv[], struct vm_err *err);

/* --- downloads (lifecycle/fetch.c) ------------------------------------------------------------ */

/* Downloads url to path (max bytes) with the control-plane client's CA and
 * proxy settings (cp->url unused). file:// and plain paths are copied. */
int lc_fetch(const struct cp_opts *cp, const char *url, const char *path, size_t max,
             struct vm_err *err);

/* --- Piko token (renew.c) ------------------------------------------------------------------- */

/* One renewal: the credentials from creds_path, POST .../piko-token, the token
 * written to token_path (atomic, 0600; NULL or "" = not written) and left in
 * out (cleared on failure); *exp is its exp claim (0 = none). */
int lc_piko_token_fetch(const struct cp_opts *o, const char *creds_path, const char *token_path,
                        struct secret *out, int64_t *exp, struct vm_err *err);

/* --- shared steps (install.c) ---------------------------------------------------------------- */

/* Checks (fix = false) or creates/fixes (fix = true) the agent's directories. */
int lc_install_dirs(const struct lc_paths *p, struct lc_report *r, bool fix, struct vm_err *err);
/* Writes credentials.json and piko.token (0600) from a registration. */
int lc_write_credentials(const struct lc_paths *p, const struct cp_registration *reg,
                         const char *tenant_id, const char *cp_url, struct vm_err *err);
/* Polls GET /v1/livez on the port config_path names until 200 or timeout. */
int lc_wait_healthy(const char *config_path, unsigned timeout_s, struct vm_err *err);

/* --- version strings ------------------------------------------------------------------------ */

/* Compares "1.2.3" style versions numerically (a "-pre" suffix sorts before
 * the release). Returns <0, 0, >0; -2 on unparseable input via *ok = false. */
int lc_version_cmp(const char *a, const char *b, bool *ok);

#endif
