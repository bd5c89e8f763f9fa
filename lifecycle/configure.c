/* vm-agent configure: edit keys, validate the whole file before writing it
 * (atomic replace, previous file kept as .bak), then make the running agent
 * reload (SIGHUP) and report whether it took the new file. */
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/admin.h"
#include "core/config.h"
#include "core/fs.h"
#include "core/http.h"
#include "core/time.h"
#include "lifecycle/internal.h"

int lc_config_check(const char *root, const char *path, FILE *out, struct vm_err *err)
{
	static char *const no_env[] = {NULL};
	struct cfg *c = malloc(sizeof(*c));
	if (c == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	int rc = cfg_load(c, path, no_env, err);
	/* --check also proves the proxy credentials file usable (mode, owner, form) */
	struct vm_err e = {0};
	char pc[PATH_MAX];
	if (rc == 0 && out == NULL && c->agent.proxy_credentials_file[0] != '\0' &&
	    (lc_join(pc, sizeof(pc), root ? root : "", c->agent.proxy_credentials_file) != 0 ||
	     http_proxy_credentials_check(pc, &e) != 0))
		rc = vm_err_set(err, VM_ERR_INVALID, "agent.proxy_credentials_file: %s",
		                e.msg[0] ? e.msg : "path too long");
	if (rc == 0 && out != NULL) {
		char *buf = malloc(256 * 1024);
		if (buf != NULL && cfg_dump(c, buf, 256 * 1024) == 0)
			fputs(buf, out);
		free(buf);
	}
	cfg_free(c);
	return rc;
}

struct cfg *lc_config_effective(const char *path, struct vm_err *err)
{
	struct cfg *c = malloc(sizeof(*c));
	if (c == NULL) {
		vm_err_set(err, VM_ERR_NOMEM, "out of memory");
		return NULL;
	}
	struct vm_err e = {0};
	int rc = cfg_load(c, path, NULL, &e);
	if (rc != 0 && e.code == VM_ERR_NOTFOUND)
		rc = cfg_load_buffer(c, path, "", 0, NULL, &e);
	if (rc == 0)
		return c;
	if (err != NULL)
		*err = e;
	struct cfg_doc *doc = NULL;
	if (cfg_doc_read(&doc, path, NULL) == 0)
		*c = *cfg_doc_values(doc);
	else
		cfg_defaults(c);
	cfg_doc_free(doc);
	return c;
}

int lc_config_write(const char *path, const struct cfg_doc *doc, struct vm_err *err)
{
	int rc = cfg_doc_validate(doc, err);
	if (rc == 0 && lc_exists(path)) {
		char bak[PATH_MAX + 8];
		snprintf(bak, sizeof(bak), "%s.bak", path);
		rc = fs_copy_file(path, bak, 0600, 0, err);
	}
	return rc != 0 ? rc : cfg_doc_save(doc, path, 0640, err);
}

/* A target path from the configuration, under --root when it is absolute. */
static void target_dir(const struct lc_paths *p, const char *dir, char *out, size_t cap)
{
	if (dir[0] == '/')
		lc_join(out, cap, p->root, dir);
	else
		snprintf(out, cap, "%s", dir);
}

static double now_real(void)
{
	return (double)time_wall_ms() / 1000.0; /* compared across processes: the wall clock */
}

void lc_reload_status_write(const char *state_dir, const char *config_path, bool ok,
                            const char *message, const char *applied, const char *restart_required)
{
	char path[PATH_MAX], sha[65] = "";
	if (snprintf(path, sizeof(path), "%s/reload.json", state_dir) >= (int)sizeof(path))
		return;
	if (config_path != NULL)
		(void)lc_sha256_hex(config_path, sha, NULL);
	json_t *o = json_pack("{s:f,s:b,s:s,s:s,s:I,s:s,s:s}", "time", now_real(), "ok", ok,
	                      "message", message ? message : "", "config_sha256", sha, "pid",
	                      (json_int_t)getpid(), "applied", applied ? applied : "",
	                      "restart_required", restart_required ? restart_required : "");
	char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (text != NULL)
		(void)fs_write_atomic(path, text, strlen(text), 0600, NULL);
	free(text);
}

/* The pid the pid file names, or 0 (absent, unreadable, not a number). */
static long pid_file_pid(const char *state_dir)
{
	char path[PATH_MAX + 16], *text = NULL;
	size_t len;
	snprintf(path, sizeof(path), "%s/agent.pid", state_dir);
	if (fs_read_file(path, 64, &text, &len, NULL) != 0)
		return 0;
	long pid = strtol(text, NULL, 10);
	free(text);
	return pid > 0 ? pid : 0;
}

int lc_agent_claim(const char *state_dir, int wait_ms, struct vm_err *err)
{
	int fd = fs_lock_open(state_dir, "agent.lock", wait_ms, err);
	if (fd == -VM_ERR_BUSY) {
		long other = pid_file_pid(state_dir);
		if (other == 0)
			return vm_err_set(err, VM_ERR_BUSY,
			                  "another vm-agent runs with the state directory %s "
			                  "(it holds %s/agent.lock); stop it first",
			                  state_dir, state_dir);
		return vm_err_set(err, VM_ERR_BUSY,
		                  "another vm-agent (pid %ld) runs with the state directory %s "
		                  "(it holds %s/agent.lock); stop it first",
		                  other, state_dir, state_dir);
	}
	if (fd < 0)
		return fd;
	/* fd is never closed: the lock lasts as long as this process (and no step
	 * process inherits it: close-on-exec) */
	char path[PATH_MAX], text[32];
	if (snprintf(path, sizeof(path), "%s/agent.pid", state_dir) >= (int)sizeof(path))
		return vm_err_set(err, VM_ERR_INVALID, "state directory path too long: %s", state_dir);
	int n = snprintf(text, sizeof(text), "%ld\n", (long)getpid());
	return fs_write_atomic(path, text, (size_t)n, 0644, err);
}

/* True when pid is a running "vm-agent … run" (a stale pid file must not
 * make us signal some other process). */
static bool is_agent_process(pid_t pid)
{
	char path[64], buf[4096];
	snprintf(path, sizeof(path), "/proc/%ld/cmdline", (long)pid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return false;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	bool agent = strstr(buf, "vm-agent") != NULL;
	bool run = false;
	for (size_t i = 0; i < n; i += strlen(buf + i) + 1)
		run |= strcmp(buf + i, "run") == 0;
	return agent && run;
}

static pid_t find_agent(const struct lc_paths *p, const char *state_dir, char *how, size_t cap)
{
	pid_t pid = lc_svc_main_pid(p);
	if (pid > 0) {
		snprintf(how, cap, "systemd MainPID");
		return pid;
	}
	pid = (pid_t)pid_file_pid(state_dir);
	if (pid <= 0 || !is_agent_process(pid))
		return 0;
	snprintf(how, cap, "pid file %s/agent.pid", state_dir);
	return pid;
}

/* Waits for the agent's reload.json entry written after `since` for pid. */
/* Changed keys as the agent reported them (comma-separated names). */
struct reload_keys {
	char applied[4096];
	char restart[4096];
};

static void keys_from_json(json_t *o, struct reload_keys *k)
{
	const char *a = json_string_value(json_object_get(o, "applied"));
	const char *r = json_string_value(json_object_get(o, "restart_required"));
	snprintf(k->applied, sizeof(k->applied), "%s", a ? a : "");
	snprintf(k->restart, sizeof(k->restart), "%s", r ? r : "");
}

/* The reload step says what was applied; a WARN step names every key that the
 * running agent keeps at its old value until it is restarted. */
static void report_reloaded(struct lc_report *r, const char *who, const struct reload_keys *k)
{
	lc_report_add(r, "reload", LC_CHANGED, NULL, "%s reloaded the new configuration%s%s", who,
	              k->applied[0] ? "; applied: " : "", k->applied);
	if (k->restart[0] != '\0')
		lc_report_add(
		    r, "restart", LC_WARN, "restart the agent (systemctl restart vm-agent)",
		    "needs a restart to apply (the running agent keeps the old values): %s",
		    k->restart);
}

static int wait_reload(const char *state_dir, pid_t pid, double since, unsigned timeout_s, bool *ok,
                       char *msg, size_t cap, struct reload_keys *k)
{
	char path[PATH_MAX + 16];
	snprintf(path, sizeof(path), "%s/reload.json", state_dir);
	int64_t deadline = time_mono_ms() + (int64_t)timeout_s * 1000;
	while (time_mono_ms() < deadline) {
		json_t *o = json_load_file(path, 0, NULL);
		double t = json_number_value(json_object_get(o, "time"));
		json_int_t who = json_integer_value(json_object_get(o, "pid"));
		if (o != NULL && t >= since && who == pid) {
			*ok = json_is_true(json_object_get(o, "ok"));
			const char *m = json_string_value(json_object_get(o, "message"));
			snprintf(msg, cap, "%s", m ? m : "");
			keys_from_json(o, k);
			json_decref(o);
			return 0;
		}
		json_decref(o);
		struct timespec ts = {0, 50 * 1000000};
		nanosleep(&ts, NULL);
	}
	return -1;
}

/* The admin socket's "reload" answers with the outcome directly. Returns -1
 * when no agent listens there (the caller falls back to SIGHUP). */
static int reload_admin(const struct lc_configure_opts *o, const struct lc_paths *p,
                        const struct cfg *eff, struct lc_report *r)
{
	char dir[PATH_MAX], sock[PATH_MAX + 32];
	target_dir(p, eff->agent.runtime_dir, dir, sizeof(dir));
	admin_socket_path(dir, sock, sizeof(sock));
	if (!lc_exists(sock))
		return -1;
	char *reply = NULL;
	struct vm_err e = {0};
	int tmo = (int)(o->reload_timeout_s ? o->reload_timeout_s : 10) * 1000;
	if (admin_call(sock, "{\"cmd\":\"reload\"}", tmo, &reply, &e) != 0) {
		free(reply);
		if (e.code == VM_ERR_NOTFOUND)
			return -1; /* a stale socket: nobody listens */
		lc_report_add(r, "reload", LC_WARN, "check the agent's log", "admin socket %s: %s",
		              sock, e.msg);
		return 0;
	}
	json_t *j = json_loads(reply, 0, NULL);
	free(reply);
	json_t *res = json_object_get(j, "result");
	if (!json_is_true(json_object_get(j, "ok")) || res == NULL)
		lc_report_add(r, "reload", LC_WARN, "check the agent's log",
		              "admin socket refused "
		              "the reload command");
	else if (json_is_true(json_object_get(res, "reloaded"))) {
		struct reload_keys *k = calloc(1, sizeof(*k));
		if (k != NULL)
			keys_from_json(res, k);
		report_reloaded(r, "the running agent (admin socket)",
		                k ? k : &(struct reload_keys){{0}, {0}});
		free(k);
	} else
		lc_report_add(r, "reload", LC_FAIL,
		              "fix the file; the agent keeps its previous "
		              "configuration",
		              "the running agent rejected it: %s",
		              json_string_value(json_object_get(res, "error"))
		                  ? json_string_value(json_object_get(res, "error"))
		                  : "no reason given");
	json_decref(j);
	return 0;
}

/* The running agent is found where the effective configuration (file,
 * defaults, environment) puts its admin socket and state directory. */
static void reload_agent(const struct lc_configure_opts *o, const struct lc_paths *p,
                         const char *path, struct lc_report *r)
{
	struct vm_err e = {0};
	struct cfg *eff = lc_config_effective(path, &e);
	if (eff == NULL || e.code != 0) {
		lc_report_add(r, "reload", LC_WARN, "check the environment's VM_AGENT_* variables",
		              "the running agent cannot be located: %s",
		              eff ? e.msg : "out of memory");
		cfg_free(eff);
		return;
	}
	if (reload_admin(o, p, eff, r) == 0) {
		cfg_free(eff);
		return;
	}
	char state_dir[PATH_MAX];
	target_dir(p, eff->agent.state_dir, state_dir, sizeof(state_dir));
	cfg_free(eff);
	char how[PATH_MAX + 32];
	pid_t pid = find_agent(p, state_dir, how, sizeof(how));
	if (pid <= 0) {
		lc_report_add(r, "reload", LC_SKIPPED, NULL,
		              "no running agent found (systemd or %s/"
		              "agent.pid): the new file applies at the next start",
		              state_dir);
		return;
	}
	double since = now_real() - 0.001;
	if (kill(pid, SIGHUP) != 0) {
		lc_report_add(r, "reload", LC_FAIL, NULL, "SIGHUP to pid %ld (%s): %s", (long)pid,
		              how, strerror(errno));
		return;
	}
	bool ok = false;
	char msg[300] = "", who[64];
	struct reload_keys *k = calloc(1, sizeof(*k));
	if (k == NULL) {
		lc_report_add(r, "reload", LC_FAIL, NULL, "out of memory");
		return;
	}
	snprintf(who, sizeof(who), "agent pid %ld", (long)pid);
	if (wait_reload(state_dir, pid, since, o->reload_timeout_s ? o->reload_timeout_s : 10, &ok,
	                msg, sizeof(msg), k) != 0)
		lc_report_add(r, "reload", LC_WARN, "check the agent's log",
		              "sent SIGHUP to pid %ld "
		              "(%s) but it did not report a reload in time",
		              (long)pid, how);
	else if (ok)
		report_reloaded(r, who, k);
	else
		lc_report_add(r, "reload", LC_FAIL,
		              "fix the file; the agent keeps its previous "
		              "configuration",
		              "agent pid %ld rejected it: %s", (long)pid, msg);
	free(k);
}

int lc_configure(const struct lc_configure_opts *o, struct lc_report *r, struct vm_err *err)
{
	struct lc_paths p;
	int rc = lc_paths_init(&p, o->root, NULL, err);
	if (rc != 0)
		return rc;
	const char *path = o->config ? o->config : p.config;
	struct cfg_doc *doc = NULL;
	if ((rc = cfg_doc_read(&doc, path, err)) != 0)
		return rc;
	for (size_t i = 0; rc == 0 && i < o->nset; i++) {
		const char *eq = strchr(o->set[i], '=');
		char key[128];
		if (eq == NULL || eq == o->set[i] || (size_t)(eq - o->set[i]) >= sizeof(key)) {
			rc = vm_err_set(err, VM_ERR_INVALID, "--set %s: expected section.key=value",
			                o->set[i]);
			break;
		}
		snprintf(key, sizeof(key), "%.*s", (int)(eq - o->set[i]), o->set[i]);
		rc = cfg_doc_set(doc, key, eq + 1, err);
		if (rc == 0)
			lc_report_add(r, "set", LC_CHANGED, NULL, "%s",
			              key); /* value may be secret */
	}
	for (size_t i = 0; rc == 0 && i < o->nunset; i++) {
		rc = cfg_doc_unset(doc, o->unset[i], err);
		if (rc == 0)
			lc_report_add(r, "unset", LC_CHANGED, NULL, "%s", o->unset[i]);
	}
	if (rc == 0 && (rc = cfg_doc_validate(doc, err)) != 0)
		lc_report_add(r, "validate", LC_FAIL, NULL, "%s (nothing written)", err->msg);
	bool same = rc == 0 && !cfg_doc_changed(doc) && lc_exists(path);
	if (rc == 0 && same) {
		lc_report_add(r, "write", LC_OK, NULL, "%s unchanged", lc_target_path(&p, path));
	} else if (rc == 0) {
		rc = lc_config_write(path, doc, err);
		if (rc == 0)
			lc_report_add(r, "write", LC_CHANGED, NULL,
			              "%s written (previous in %s.bak)", lc_target_path(&p, path),
			              lc_target_path(&p, path));
	}
	cfg_doc_free(doc);
	if (rc == 0 && !same && !o->no_reload)
		reload_agent(o, &p, path, r);
	if (rc == 0)
		snprintf(r->result, sizeof(r->result), "%s",
		         same ? "configuration unchanged" : "configuration updated");
	return rc;
}
