/* The step types' entry points, listed in the table in probe/steps.c. */
#ifndef VMA_PROBE_STEPS_STEPS_H
#define VMA_PROBE_STEPS_STEPS_H

#include <limits.h>

#include "core/proc.h"
#include "probe/internal.h"

#define STEP_PARSE_ARGS                                                                     \
	json_t *obj, struct probe_step_req *st, const char *path, char *epath, size_t ecap, \
	    struct vm_err *err
#define STEP_RUN_ARGS \
	const struct probe_step_req *st, const struct probe_step_ctx *ctx, json_t *result

int probe_exec_parse(STEP_PARSE_ARGS);
enum probe_step_status probe_exec_run(STEP_RUN_ARGS);
int probe_script_parse(STEP_PARSE_ARGS);
enum probe_step_status probe_script_run(STEP_RUN_ARGS);
int probe_file_read_parse(STEP_PARSE_ARGS);
enum probe_step_status probe_file_read_run(STEP_RUN_ARGS);
int probe_file_write_parse(STEP_PARSE_ARGS);
enum probe_step_status probe_file_write_run(STEP_RUN_ARGS);
int probe_backup_plan_parse(STEP_PARSE_ARGS);
enum probe_step_status probe_backup_plan_run(STEP_RUN_ARGS);
int probe_backup_run_parse(STEP_PARSE_ARGS);
enum probe_step_status probe_backup_run_run(STEP_RUN_ARGS);
uint64_t probe_backup_bound(const struct probe_step_req *st, uint64_t output_cap);

int probe_cron_ensure_parse(STEP_PARSE_ARGS);
enum probe_step_status probe_cron_ensure_run(STEP_RUN_ARGS);
int probe_cron_list_parse(STEP_PARSE_ARGS);
enum probe_step_status probe_cron_list_run(STEP_RUN_ARGS);
int probe_ssh_keys_parse(STEP_PARSE_ARGS);
enum probe_step_status probe_ssh_keys_run(STEP_RUN_ARGS);

int probe_container_parse(STEP_PARSE_ARGS);
enum probe_step_status probe_container_run(STEP_RUN_ARGS);

/* env, cwd, stdin, user, group, timeout: shared by exec and script. */
int probe_proc_fields(STEP_PARSE_ARGS);

/* --- host steps (host.c) ------------------------------------------------------------
 * What every step that changes the host (pkg.ensure, service, user.ensure,
 * sudoers.ensure, sshd.harden, cron.ensure, ssh_keys.sync…) shares. How to
 * write one (probe/steps/pkg.c is a model):
 *   - parse: host_parse_common(obj, st, known, …) first (refuses unknown
 *     fields, reads "check" into st->check), then the type's own fields with
 *     probe_field_* and the host_valid_* validators (400 with the JSON path);
 *     keep the parsed parameters in st->ext (malloc'd) with st->ext_free.
 *     The request parser already took "name" as the step's label (64 bytes at
 *     most): a host step whose object has a name (unit, user, group) reads the
 *     same field again with probe_field_str(obj, "name", true, …).
 *   - run: host_result_init(result, st) first; read current state (files with
 *     host_file_read, never open(path)); for each difference call
 *     host_change*(…) — in check mode that is all, return STEP_OK without
 *     touching anything (host_result_init set "check": true); otherwise apply
 *     it (host_file_write: directory fd, atomic, owner and mode; tools with
 *     host_run: argv only, LC_ALL=C, the step's deadline, cancel and cgroup).
 *     Before a change that is validated afterwards (sshd -t, visudo -cf),
 *     host_backup_take the files and host_backup_restore them on failure.
 *     Fail with host_fail(result, "code", "fmt", …) (STEP_FAILED).
 *   - the second identical run must find nothing to change: changed stays false.
 *   - table row in probe/steps.c: {"x.ensure", HOST_SCOPE_WRITE, parse, run,
 *     bound_small}; read-only types use HOST_SCOPE_READ.
 * Result: {"changed": bool, "check": bool, "changes": [{"what", "before",
 * "after"[, "path", "diff"]}], …the type's own fields, "error", "error_code"}. */
#define HOST_SCOPE_WRITE "host:write"
#define HOST_SCOPE_READ  "host:read"
#define HOST_TEXT_MAX    (1u << 20) /* largest text file a host step reads or writes */
#define HOST_DIFF_MAX    (64u << 10) /* a diff in a result is cut here */
#define HOST_OUT_CAP     (256u << 10) /* a tool's stdout/stderr kept per stream */

/* Refuses members of obj not in known (NULL-terminated; "type", "name" and
 * "check" are always allowed) and reads "check" into st->check. */
int host_parse_common(json_t *obj, struct probe_step_req *st, const char *const *known,
                      const char *path, char *epath, size_t ecap, struct vm_err *err);
/* Writes "<path>.<field>" into epath and "<epath>: why" into err; returns -1. */
int host_bad_field(const char *path, const char *field, char *epath, size_t ecap,
                   struct vm_err *err, const char *why);

/* Sets "changed": false, "check": st->check and an empty "changes" array. */
void host_result_init(json_t *result, const struct probe_step_req *st);
/* Appends {"what", "before", "after"} (both taken, NULL = JSON null) to
 * "changes" and sets "changed": true. Returns the change object (borrowed) so
 * a step can add fields ("path", "diff"). */
json_t *host_change(json_t *result, const char *what, json_t *before, json_t *after);
json_t *host_change_str(json_t *result, const char *what, const char *before, const char *after);
/* Sets "error" (formatted) and "error_code" (a stable word); returns STEP_FAILED. */
enum probe_step_status host_fail(json_t *result, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A unified diff (3 lines of context, "--- a/label", "+++ b/label") of two
 * texts into out (cleared first). Bounded: the output stops at max bytes with
 * "\ diff truncated\n" and the function returns 1; 0 when whole; -1 when out
 * of memory. Equal texts give an empty diff. Pure. */
struct buf;
int host_diff(const char *a, size_t alen, const char *b, size_t blen, const char *label,
              size_t max, struct buf *out);

/* A text file's current state, read by the directory-fd rule (core/fs.h). */
struct host_file {
	bool exists;
	char *data; /* NUL-terminated; NULL when missing */
	size_t len;
	mode_t mode; /* permission bits */
	uid_t uid;
	gid_t gid;
};
/* A missing file is exists = false and returns 0; larger than max, a symlink
 * the rule refuses, or not a regular file: an error. */
int host_file_read(const char *path, size_t max, struct host_file *out, struct vm_err *err);
void host_file_free(struct host_file *f);
/* Replaces path atomically (fs_write_at in the parent's fd) with owner and mode. */
int host_file_write(const char *path, const void *data, size_t len, mode_t mode, uid_t uid,
                    gid_t gid, struct vm_err *err);
/* Removes path (a missing one is fine). */
int host_file_remove(const char *path, struct vm_err *err);
/* Records a file change: {"what": "file", "path", "before": sha256|null,
 * "after": sha256|null, "diff"} (after NULL: the file is removed). */
json_t *host_change_file(json_t *result, const char *path, const struct host_file *before,
                         const char *after, size_t after_len);

/* The previous bytes, owner and mode of a file (or that it did not exist),
 * to put back byte-identical when a validated change fails. */
struct host_backup {
	char path[PATH_MAX];
	struct host_file f;
};
int host_backup_take(struct host_backup *b, const char *path, size_t max, struct vm_err *err);
/* Writes the old bytes back (owner, mode) or removes a file that did not exist. */
int host_backup_restore(const struct host_backup *b, struct vm_err *err);
void host_backup_free(struct host_backup *b);

/* Runs a host tool: argv[0] looked up in PROC_DEFAULT_PATH, environment
 * PATH, LC_ALL=C plus env (NULL-terminated "K=V", may be NULL), the step's
 * deadline, cancel, grace and cgroup; out_cap 0 = HOST_OUT_CAP. Returns 0 when
 * the tool ran (check res->exit_code); free res with proc_result_free. */
struct host_cmd {
	const char *const *argv;
	const char *const *env;
	const char *stdin_data;
	size_t stdin_len;
	size_t out_cap;
	proc_output_fn on_output; /* may be NULL */
	void *out_ctx;
	/* A tool quiet (no output) for 1.5 s gets a "<argv[0]>: running (N s)"
	 * progress event, so a long step reports at least every 2 s; label
	 * replaces argv[0] there. */
	const char *label;
};
int host_run(const struct probe_step_ctx *ctx, const struct host_cmd *c, struct proc_result *res,
             struct vm_err *err);
/* Sleeps ms (or until the step's deadline): false when canceled or past the deadline. */
bool host_wait(const struct probe_step_ctx *ctx, int64_t ms);
/* "apt-get: exit 100: <last line of stderr>" as the step's error (code). */
enum probe_step_status host_fail_proc(json_t *result, const char *code, const char *tool,
                                      const struct proc_result *res);

/* Line by line through a tool's output: the next line at *off (its length
 * without the '\n' in *len), *off moved past it; NULL at the end. */
const char *host_next_line(const char *data, size_t size, size_t *off, size_t *len);

/* Names, by the rules of the tools that take them (pure, no I/O). None may
 * start with '-' (it would be read as an option). */
/* Debian policy 5.6.1 for apt ([a-z0-9][a-z0-9+.-]+); rpm/apk names also allow
 * upper case and '_'. manager NULL = apt. */
bool host_valid_pkg_name(const char *manager, const char *s);
/* [epoch:]upstream[-revision] characters ([A-Za-z0-9.+~:_-]), starting with a digit. */
bool host_valid_pkg_version(const char *s);
/* systemd unit names: [A-Za-z0-9:_.\\@-], at most 255, one '@' at most,
 * with a unit type suffix or none (then ".service" is meant). */
bool host_valid_unit_name(const char *s);
/* useradd/groupadd's rule: [a-z_][a-z0-9_-]*[$]?, at most 32 characters. */
bool host_valid_user_name(const char *s);
bool host_valid_group_name(const char *s);

/* --- pkg.ensure (pkg.c) and its tool-output parsers ----------------------------------- */
int probe_pkg_parse(STEP_PARSE_ARGS);
enum probe_step_status probe_pkg_run(STEP_RUN_ARGS);
uint64_t probe_pkg_bound(const struct probe_step_req *st, uint64_t output_cap);

#define PKG_MAX       64  /* names per step */
#define PKG_FIELD_MAX 160 /* a package name or version, with NUL */

/* One line of dpkg-query -W -f '${Package}\t${db:Status-Abbrev}\t${Version}\n'. */
struct pkg_info {
	char name[PKG_FIELD_MAX];
	char version[PKG_FIELD_MAX];
	bool installed; /* status i (installed), W or t (triggers pending) */
};
/* Parses that output into at most max entries: the count, or -1 on a
 * malformed line (a field too long, too few fields). Pure. */
int pkg_parse_dpkg_query(const char *data, size_t len, struct pkg_info *out, int max);

/* rpm -q --qf '%{NAME}\t%{EPOCH}\t%{VERSION}-%{RELEASE}\t%{ARCH}\n' NAMES…
 * (and dnf repoquery with the same fields): version "E:V-R" ("V-R" when the
 * epoch is "(none)" or 0); "package NAME is not installed" lines are
 * entries with installed false. The first line of a name wins (another
 * architecture or an install-only kernel repeats it). The count (at most
 * max), or -1 on any other line, a bad epoch or a field too long. Pure. */
int pkg_parse_rpm_query(const char *data, size_t len, struct pkg_info *out, int max);

/* zypper --no-color info NAMES… (LC_ALL=C): each package's "Name : N" and
 * its candidate's "Version : V" lines become an entry (installed true: the
 * name has a candidate); other lines ("package 'x' not found.") are skipped.
 * The count (at most max), or -1 on a Version without a Name before it or a
 * field too long. Pure. */
int pkg_parse_zypper_info(const char *data, size_t len, struct pkg_info *out, int max);

/* One line of apt's status fd (-o APT::Status-Fd): dlstatus:ID:PERCENT:MSG,
 * pmstatus|pmerror|pmconffile:PKG:PERCENT:MSG (PKG may hold ':'). */
enum apt_status_kind { APT_DLSTATUS = 1, APT_PMSTATUS, APT_PMERROR, APT_PMCONFFILE };
struct apt_status {
	enum apt_status_kind kind;
	char pkg[PKG_FIELD_MAX]; /* "" for dlstatus */
	double percent;          /* 0..100 */
	char msg[256];           /* cut */
};
/* 0, or -1 when the line is not a status line. Pure. */
int apt_status_parse(const char *line, size_t len, struct apt_status *out);

/* One action of apt-get -s: "Inst NAME [OLD] (NEW …)", "Remv NAME [OLD]",
 * "Purg NAME [OLD]" (other lines are ignored). */
struct apt_sim {
	char action; /* 'i' installed, 'u' upgraded (OLD present), 'r' removed */
	char name[PKG_FIELD_MAX];
	char old_version[PKG_FIELD_MAX], new_version[PKG_FIELD_MAX];
};
/* Fills at most max actions; returns how many lines were actions (may be
 * more than max), or -1 on a malformed action line. Pure. */
int apt_parse_sim(const char *data, size_t len, struct apt_sim *out, int max);

/* --- service (service.c) and systemctl show's parser ---------------------------------- */
int probe_service_parse(STEP_PARSE_ARGS);
enum probe_step_status probe_service_run(STEP_RUN_ARGS);

/* systemctl show -p LoadState,ActiveState,SubState,MainPID,UnitFileState,CanReload. */
struct svc_state {
	char load[32], active[32], sub[32], unit_file[32]; /* "" when absent */
	long main_pid;                                    /* 0 = none */
	bool can_reload;
};
/* Parses "Key=Value" lines (unknown keys ignored); -1 on a malformed line or
 * a value too long. Pure. */
int svc_parse_show(const char *data, size_t len, struct svc_state *out);

/* --- users, groups, sudoers, sshd (user.c, group.c, sudoers.c, sshd.c) ------------- */
int probe_user_parse(STEP_PARSE_ARGS);
enum probe_step_status probe_user_run(STEP_RUN_ARGS);
int probe_group_parse(STEP_PARSE_ARGS);
enum probe_step_status probe_group_run(STEP_RUN_ARGS);
int probe_sudoers_parse(STEP_PARSE_ARGS);
enum probe_step_status probe_sudoers_run(STEP_RUN_ARGS);
int probe_sshd_parse(STEP_PARSE_ARGS);
enum probe_step_status probe_sshd_run(STEP_RUN_ARGS);

#define HOST_GROUPS_MAX 64 /* supplementary groups of a user.ensure */
#define HOST_ID_MAX     4294967294u /* (uid_t)-1 means "no id" to the kernel */

/* Runs argv with host_run: STEP_OK when it exited 0, else the step's failure
 * with code (timeouts and cancels as such). */
enum probe_step_status host_run_ok(const struct probe_step_ctx *ctx, const char *const *argv,
                                   const char *code, json_t *result);
/* A uid or gid field: an integer 1..HOST_ID_MAX (0 is root's; an absent field
 * leaves *set false). */
int host_field_id(json_t *obj, const char *name, uint32_t *out, bool *set, const char *path,
                  char *epath, size_t ecap, struct vm_err *err);
/* "state": "present" (the default) or "absent". */
int host_field_state(json_t *obj, bool *present, const char *path, char *epath, size_t ecap,
                     struct vm_err *err);
/* An absolute path useradd can store in passwd(5): no ':', no control
 * characters, no "." or ".." component, no trailing '/', at most 255 bytes. */
bool host_valid_passwd_path(const char *s);

/* Finds name's line in a passwd(5) / group(5) text (core/passwd.h parses
 * each line; malformed lines are skipped). Returns 1 found, 0 not. */
struct passwd_entry;
struct group_entry;
int host_passwd_find(const char *text, size_t len, const char *name, struct passwd_entry *out);
int host_group_find(const char *text, size_t len, const char *name, struct group_entry *out);
/* The groups user is a listed member of, sorted and ","-joined into out
 * (cut = -1). */
int host_group_memberships(const char *text, size_t len, const char *user, char *out,
                           size_t cap);

/* sudoers.ensure: a drop-in /etc/sudoers.d/<name>. */
#define HOST_SUDO_CMDS_MAX 64
struct host_sudo_rule {
	const char *user, *group; /* exactly one */
	const char *commands[HOST_SUDO_CMDS_MAX];
	int ncommands;
	bool nopasswd;
};
/* A drop-in name sudo reads: [A-Za-z0-9_-], 1-64, not starting with '-'
 * (sudo skips names with '.' or ending in '~'). */
bool host_valid_sudoers_name(const char *s);
/* "ALL" or an absolute path, optionally followed by arguments separated by
 * single spaces; no characters sudoers would read as syntax (',', ':', '=',
 * '\\', '#', '"', '!') and no control characters. */
bool host_valid_sudo_command(const char *s);
/* The drop-in text: a comment line naming it, then one rule line. */
int host_sudoers_render(const char *name, const struct host_sudo_rule *r, struct buf *out);

/* sshd.harden. */
#define HOST_SSHD_LIST_MAX  64
#define HOST_SSHD_EXTRA_MAX 32
#define HOST_SSHD_DROPIN    "/etc/ssh/sshd_config.d/50-vm-agent.conf"
struct host_sshd_spec {
	int disable_password_auth, disable_root_login; /* -1 unset, 0, 1 */
	const char *allow_users[HOST_SSHD_LIST_MAX];
	int nallow_users;
	const char *allow_groups[HOST_SSHD_LIST_MAX];
	int nallow_groups;
	int port; /* 0 unset */
	struct {
		const char *key, *value;
	} extra[HOST_SSHD_EXTRA_MAX];
	int nextra;
};
/* An sshd_config keyword: a letter then letters or digits, at most 64; not
 * Include or Match (they change the file's structure). */
bool host_valid_sshd_keyword(const char *s);
/* One token: printable ASCII without whitespace, '#' or '"', 1-1024 bytes. */
bool host_valid_sshd_value(const char *s);
/* "Key value" lines in a fixed order (the managed keys, then extra sorted). */
int host_sshd_render(const struct host_sshd_spec *s, struct buf *out);
/* True when sshd_config's text includes file (an Include outside any Match
 * block whose glob, relative to /etc/ssh, matches it). */
bool host_sshd_includes(const char *conf, size_t len, const char *file);
/* sshd_config with body as a marked block at the top (first value wins in
 * sshd_config) and any earlier marked block removed; body NULL removes it.
 * The old block's body (may be empty) goes to old when not NULL. */
int host_sshd_inplace(const char *conf, size_t len, const char *body, size_t blen,
                      struct buf *out, struct buf *old);
/* The first value of keyword key (case-insensitive; "Key value" or
 * "Key=value") in a config text or `sshd -T` output, outside Match blocks,
 * into out; 1 found, 0 not. */
int host_sshd_value(const char *conf, size_t len, const char *key, char *out, size_t cap);

#endif
