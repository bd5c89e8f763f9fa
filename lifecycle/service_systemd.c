/* The service manager on Linux: systemd through systemctl. Under a --root the
 * unit is written and enabled offline (systemctl --root, or the symlink made
 * by hand when systemctl is missing) and the live system is never touched.
 * A Windows port adds service_windows.c with the same lc_svc_ functions. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/proc.h"
#include "lifecycle/internal.h"

/* installers/vm-agent.service, embedded at build time (unit_template.c). */
extern const char lc_unit_template[];

#define SYSTEMCTL_TIMEOUT_MS 60000
#define TOOL_OUTPUT_MAX      8192

/* systemctl and systemd-run: found in the default PATH, our environment,
 * killed (with what they started) at the deadline. Returns 0 when the tool
 * exited 0; otherwise err says "what: how it ended: its stderr". The output
 * is in res either way (the caller frees it). */
static int run_tool(const char *what, const char *const argv[], uint64_t timeout_ms,
                    struct proc_result *res, struct vm_err *err)
{
	struct proc_spec spec = {.argv = (char *const *)argv,
	                         .flags = PROC_SEARCH_PATH,
	                         .deadline_ms = proc_now_ms() + (int64_t)timeout_ms,
	                         .out_cap = TOOL_OUTPUT_MAX};
	int rc = proc_run(&spec, res, err);
	if (rc != 0 || (!res->timed_out && res->term_signal == 0 && res->exit_code == 0))
		return rc;
	char how[128];
	proc_result_describe(res, how, sizeof(how));
	size_t el = res->err_len;
	while (el > 0 && res->err[el - 1] == '\n')
		el--;
	return vm_err_set(err, VM_ERR_IO, "%s: %s%s%.*s", what, how, el ? ": " : "", (int)el,
	                  el ? res->err : "");
}

char *lc_svc_render_unit(const char *bin_target)
{
	static const char mark[] = "@BIN@";
	size_t n = strlen(lc_unit_template), blen = strlen(bin_target);
	char *out = malloc(n + 8 * blen + 1);
	if (out == NULL)
		return NULL;
	size_t o = 0;
	for (const char *p = lc_unit_template; *p;) {
		if (strncmp(p, mark, sizeof(mark) - 1) == 0) {
			memcpy(out + o, bin_target, blen);
			o += blen;
			p += sizeof(mark) - 1;
		} else {
			out[o++] = *p++;
		}
	}
	out[o] = '\0';
	return out;
}

int lc_svc_write_unit(const struct lc_paths *p, const char *bin_target, bool *changed,
                      struct vm_err *err)
{
	/* systemd would split an ExecStart path with spaces into arguments */
	if (strpbrk(bin_target, " \t\n\"'\\%$;") != NULL)
		return vm_err_set(err, VM_ERR_INVALID,
		                  "binary path %s has characters a unit "
		                  "file cannot carry safely",
		                  bin_target);
	char *text = lc_svc_render_unit(bin_target);
	if (text == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	char *old = NULL;
	size_t olen = 0;
	struct vm_err ignored;
	bool same = fs_read_file(p->unit, 1 << 20, &old, &olen, &ignored) == 0 &&
	            olen == strlen(text) && memcmp(old, text, olen) == 0;
	free(old);
	int rc = 0;
	if (!same) {
		char dir[PATH_MAX];
		lc_join(dir, sizeof(dir), p->root, LC_UNIT_DIR);
		rc = fs_mkdir_p(dir, 0755, err);
		if (rc == 0)
			rc = fs_write_atomic(p->unit, text, strlen(text), 0644, err);
	}
	if (changed)
		*changed = !same;
	free(text);
	return rc;
}

static int live_only(const struct lc_paths *p, const char *what, struct vm_err *err);

static int systemctl(const struct lc_paths *p, const char *const *args, struct vm_err *err)
{
	const char *argv[12];
	size_t n = 0;
	char rootflag[PATH_MAX + 8];
	argv[n++] = "systemctl";
	if (p->root[0] != '\0') {
		snprintf(rootflag, sizeof(rootflag), "--root=%s", p->root);
		argv[n++] = rootflag;
	}
	argv[n++] = "--quiet";
	for (; *args && n < 11; args++)
		argv[n++] = *args;
	argv[n] = NULL;
	char what[64];
	snprintf(what, sizeof(what), "systemctl %s", args[0] ? args[0] : "");
	struct proc_result res;
	int rc = run_tool(what, argv, SYSTEMCTL_TIMEOUT_MS, &res, err);
	proc_result_free(&res);
	return rc;
}

bool lc_svc_available(const struct lc_paths *p)
{
	return p->root[0] == '\0' && access("/run/systemd/system", F_OK) == 0;
}

int lc_svc_enable(const struct lc_paths *p, struct vm_err *err)
{
	if (p->root[0] == '\0') {
		if (!lc_svc_available(p))
			return vm_err_set(err, VM_ERR_NOTFOUND,
			                  "systemd is not running on this machine");
		const char *reload[] = {"daemon-reload", NULL};
		int rc = systemctl(p, reload, err);
		if (rc != 0)
			return rc;
		const char *enable[] = {"enable", LC_UNIT_NAME, NULL};
		return systemctl(p, enable, err);
	}
	const char *enable[] = {"enable", LC_UNIT_NAME, NULL};
	if (systemctl(p, enable, NULL) == 0 && lc_svc_is_enabled(p))
		return 0;
	/* No usable systemctl for this tree: the symlink is all "enable" does. */
	char dir[PATH_MAX];
	lc_join(dir, sizeof(dir), p->root, LC_UNIT_DIR "/multi-user.target.wants");
	int rc = fs_mkdir_p(dir, 0755, err);
	if (rc != 0)
		return rc;
	unlink(p->unit_wants);
	if (symlink(LC_UNIT_DIR "/" LC_UNIT_NAME, p->unit_wants) != 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "symlink %s", p->unit_wants);
	return 0;
}

int lc_svc_disable(const struct lc_paths *p, struct vm_err *err)
{
	const char *disable[] = {"disable", LC_UNIT_NAME, NULL};
	int rc = 0;
	if (p->root[0] == '\0' && lc_svc_available(p))
		rc = systemctl(p, disable, err);
	else if (p->root[0] != '\0')
		(void)systemctl(p, disable, NULL);
	if (unlink(p->unit_wants) != 0 && errno != ENOENT && rc == 0)
		rc = vm_err_errno(err, VM_ERR_IO, errno, "remove %s", p->unit_wants);
	return rc;
}

int lc_svc_reload_units(const struct lc_paths *p, struct vm_err *err)
{
	int rc = live_only(p, "reloading units for", err);
	if (rc != 0)
		return rc;
	const char *args[] = {"daemon-reload", NULL};
	return systemctl(p, args, err);
}

bool lc_svc_is_enabled(const struct lc_paths *p)
{
	return lc_exists(p->unit_wants);
}

static int live_only(const struct lc_paths *p, const char *what, struct vm_err *err)
{
	if (p->root[0] != '\0')
		return vm_err_set(err, VM_ERR_INVALID, "not %s the service under --root", what);
	if (!lc_svc_available(p))
		return vm_err_set(err, VM_ERR_NOTFOUND, "systemd is not running on this machine");
	return 0;
}

int lc_svc_restart(const struct lc_paths *p, struct vm_err *err)
{
	int rc = live_only(p, "restarting", err);
	if (rc != 0)
		return rc;
	/* a unit stopped by its start limit would refuse the restart */
	const char *reset[] = {"reset-failed", LC_UNIT_NAME, NULL};
	(void)systemctl(p, reset, NULL);
	const char *args[] = {"restart", LC_UNIT_NAME, NULL};
	return systemctl(p, args, err);
}

int lc_svc_stop(const struct lc_paths *p, struct vm_err *err)
{
	int rc = live_only(p, "stopping", err);
	if (rc != 0)
		return rc;
	const char *args[] = {"stop", LC_UNIT_NAME, NULL};
	return systemctl(p, args, err);
}

bool lc_svc_is_active(const struct lc_paths *p)
{
	if (live_only(p, "querying", NULL) != 0)
		return false;
	const char *args[] = {"is-active", LC_UNIT_NAME, NULL};
	return systemctl(p, args, NULL) == 0;
}

pid_t lc_svc_main_pid(const struct lc_paths *p)
{
	if (live_only(p, "querying", NULL) != 0)
		return 0;
	const char *argv[] = {"systemctl", "show", "-p", "MainPID", "--value", LC_UNIT_NAME, NULL};
	struct proc_result res;
	long pid = 0;
	if (run_tool("systemctl show", argv, SYSTEMCTL_TIMEOUT_MS, &res, NULL) == 0 &&
	    res.out != NULL)
		pid = strtol(res.out, NULL, 10);
	proc_result_free(&res);
	return pid > 0 ? (pid_t)pid : 0;
}

int lc_svc_spawn_detached(const char *const argv[], struct vm_err *err)
{
	struct lc_paths live;
	memset(&live, 0, sizeof(live));
	if (!lc_svc_available(&live)) {
		/* its own session, re-parented to init when we exit */
		struct proc_spec spec = {.argv = (char *const *)argv, .flags = PROC_DETACH};
		struct proc_result res;
		int rc = proc_run(&spec, &res, err);
		proc_result_free(&res);
		return rc;
	}
	/* A transient unit of its own: `systemctl restart vm-agent` (which the
	 * upgrade runs) kills everything in vm-agent.service's cgroup. */
	char unit[64];
	snprintf(unit, sizeof(unit), "--unit=vm-agent-upgrade-%ld", (long)time(NULL));
	const char *full[40] = {"systemd-run", "--quiet", "--collect", unit, "--"};
	size_t n = 5;
	for (size_t i = 0; argv[i] != NULL && n < 39; i++)
		full[n++] = argv[i];
	full[n] = NULL;
	struct proc_result res;
	int rc = run_tool("systemd-run", full, 30000, &res, err);
	proc_result_free(&res);
	return rc;
}
