/* vm-agent run: load the configuration, start the modules, and serve until
 * SIGTERM/SIGINT; SIGHUP reloads the configuration. Owns the one struct agent. */
#include <errno.h>
#include <pthread.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cmd/cmd.h"
#include "containers/containers.h"
#include "core/admin.h"
#include "core/budget.h"
#include "core/cgroup.h"
#include "core/config.h"
#include "core/fs.h"
#include "core/http.h"
#include "core/log.h"
#include "core/time.h"
#include "health/health.h"
#include "lifecycle/lifecycle.h"
#include "probe/probe.h"
#include "tunnel/tunnel.h"
#include "webhook/webhook.h"

struct agent {
	struct cfg *cfg;
	const char *config_path; /* NULL = built-in defaults */
	struct wh_server *webhook;
	struct wh_deps deps; /* filled as modules start; the webhook borrows them */
	struct health_monitor *health;
	struct admin_server *admin;
	/* SIGHUP (main thread) and the admin socket's reload/status (admin thread)
	 * both touch cfg and the listener: one at a time. */
	pthread_mutex_t mu;
	time_t started_at;
	struct cg_tree cgroup;      /* step containment; the executor borrows it */
	struct lc_renewer *renewer; /* Piko token renewal; feeds the tunnel */
	struct budget *budget;      /* limits.max_concurrent; probes and shells borrow it */
	/* Started while an upgrade held its lock (LC_RECOVER_BUSY): a thread
	 * watches for that upgrade dying unfinished; then the agent stops and
	 * re-executes itself, and the new start settles the journal. */
	pthread_t upgrade_watch;
	bool watching_upgrade;
	atomic_bool watch_stop;
	atomic_bool reexec;
	char watch_state_dir[PATH_MAX];
};

/* limits.max_concurrent, where 0 means the sum of both kinds' own caps. */
static int concurrency_limit(const struct cfg *cfg)
{
	if (cfg->limits.max_concurrent > 0)
		return cfg->limits.max_concurrent;
	return cfg->probe.max_concurrent + (cfg->shell.max_sessions > 0 ? cfg->shell.max_sessions : 0);
}

/* Before any thread: kills what a crashed predecessor's steps left running
 * (recorded in the state dir), may move the agent into its "agent/" leaf,
 * and says once what containment and which limits this host allows. */
/* A writer of ours killed between linking its complete temp and renaming it
 * over the file leaves the temp behind (the file itself is old or new). Before
 * anything of ours writes, the state tree and the config file's (and its
 * backup's) temps are swept. */
static void sweep_dead_temps(const struct cfg *cfg)
{
	int n = fs_sweep_dead_temps(cfg->agent.state_dir, 4);
	if (cfg->probe.work_dir[0] != '\0')
		n += fs_sweep_dead_temps(cfg->probe.work_dir, 3);
	n += fs_sweep_dead_temps_of(cfg->source);
	char bak[PATH_MAX + 8];
	snprintf(bak, sizeof(bak), "%s.bak", cfg->source);
	n += fs_sweep_dead_temps_of(bak);
	if (n > 0)
		log_info("agent", "removed %d temp file(s) left by writers killed mid-write", n);
	if ((n = lc_upgrade_sweep_requests(cfg->agent.runtime_dir)) > 0)
		log_info("upgrade", "removed %d request file(s) of upgrades killed before they read them",
		         n);
}

static void open_containment(struct agent *ag)
{
	int killed = 0;
	cg_open(&ag->cgroup, ag->cfg->probe.cgroup_root, "/proc/self/cgroup",
	        ag->cfg->agent.state_dir, &killed);
	if (ag->cgroup.mode == CG_NONE)
		log_warn("probe",
		         "step containment: no writable cgroup v2 (%s); a subreaper shim per step "
		         "kills what a step leaves behind, resource limits are unavailable",
		         ag->cgroup.why);
	else if (ag->cgroup.why[0] != '\0')
		log_warn("probe", "step containment: %s in %s; limits unavailable: %s",
		         cg_mode_name(ag->cgroup.mode), ag->cgroup.base, ag->cgroup.why);
	else
		log_info("probe", "step containment: %s in %s (memory, cpu, pids limits)",
		         cg_mode_name(ag->cgroup.mode), ag->cgroup.base);
}

static void apply_log_config(const struct cfg *cfg, struct vm_err *err, int *rc)
{
	struct log_opts lo = {
	    .level = (enum log_level)cfg->log.level,
	    .format = (enum log_format)cfg->log.format,
	    .file = cfg->log.file,
	    .max_size = cfg->log.max_size,
	    .max_files = cfg->log.max_files,
	};
	*rc = log_configure(&lo, err);
}

static int prepare_dirs(const struct cfg *cfg, struct vm_err *err)
{
	int rc = fs_mkdir_p(cfg->agent.state_dir, 0700, err);
	if (rc == 0)
		rc = fs_mkdir_p(cfg->probe.work_dir, 0700, err);
	if (rc == 0) /* before the webhook: a remote upgrade's request goes through it */
		rc = fs_mkdir_p(cfg->agent.runtime_dir, 0700, err);
	return rc;
}

/* The tunnel object lives as long as run, idle while piko.server_url is
 * empty: the webhook and health borrow its pointer, so a reload hands it new
 * settings instead of replacing it; it reconnects with them after a drain. */
static bool reload_tunnel(struct agent *ag, const struct cfg *next)
{
	struct vm_err err = {0};
	bool taken = true;
	if (tun_config_changed(ag->cfg, next) && tun_reload(ag->deps.tunnel, next, &err) != 0) {
		log_error("tunnel", "new tunnel settings rejected: %s; keeping the current ones",
		          err.msg);
		taken = false;
	}
	lc_renewer_reconfigure(ag->renewer, next);
	return taken;
}

/* lc_token_sink: a renewed Piko token goes to the tunnel (on the renewal
 * thread, which may block on the new session's dial; the tunnel's does not). */
static int token_to_tunnel(void *ctx, const struct secret *token, struct vm_err *err)
{
	struct agent *ag = ctx;
	return tun_token_set(ag->deps.tunnel, token, err);
}

/* health_sources adapters: what the monitor samples from other modules. */
static void tunnel_source(void *ctx, struct health_tunnel_state *out)
{
	const struct agent *ag = ctx;
	struct tun_stats st;
	tun_stats(ag->deps.tunnel, &st);
	out->enabled = st.enabled;
	out->connected = st.connected;
	out->changed_at = (int64_t)st.since;
	out->reconnects = st.reconnects;
}

static void probe_source(void *ctx, uint64_t *queued, uint64_t *running)
{
	const struct agent *ag = ctx;
	probe_queue_depth(ag->deps.probe, queued, running);
}

static void budget_source(void *ctx, uint64_t *in_use, uint64_t *limit)
{
	const struct agent *ag = ctx;
	int used, lim;
	budget_usage(ag->budget, &used, &lim);
	*in_use = (uint64_t)used;
	*limit = (uint64_t)lim;
}

/* Fixed at start (probe.cgroup_root needs a restart): a copy of cg_open's verdict. */
static void containment_source(void *ctx, struct health_containment *out)
{
	const struct agent *ag = ctx;
	snprintf(out->mode, sizeof(out->mode), "%s", cg_mode_name(ag->cgroup.mode));
	out->memory = (ag->cgroup.controllers & CG_MEMORY) != 0;
	out->cpu = (ag->cgroup.controllers & CG_CPU) != 0;
	out->pids = (ag->cgroup.controllers & CG_PIDS) != 0;
	snprintf(out->why, sizeof(out->why), "%s", ag->cgroup.why);
}

static void engine_source(void *ctx, struct health_engine *out)
{
	const struct agent *ag = ctx;
	struct ctr_engine_info in;
	ctr_engine_info(ag->deps.containers, &in);
	out->enabled = in.enabled;
	out->reachable = in.reachable;
	out->seen = in.seen;
	snprintf(out->version, sizeof(out->version), "%s", in.version);
	out->running = in.running;
	out->paused = in.paused;
	out->exited = in.exited;
	out->created = in.created;
	out->other = in.other;
	snprintf(out->why, sizeof(out->why), "%s", in.why);
}

static void probe_store_source(void *ctx, uint64_t *write_failures, uint64_t *quarantined)
{
	const struct agent *ag = ctx;
	probe_store_health(ag->deps.probe, write_failures, quarantined);
}

/* What a reload did, by key (comma-separated names): applied to the running
 * agent, or changed in the file but kept at the old value until a restart. */
struct reload_keys {
	char applied[4096];
	char restart[4096];
};

static void keys_append(char *list, size_t cap, const char *key)
{
	size_t n = strlen(list);
	if (n + strlen(key) + 2 < cap)
		snprintf(list + n, cap - n, "%s%s", n ? "," : "", key);
}

/* Sorts the changed keys by cfg_key_apply; a restart-only key keeps its
 * running value in next, so that ag->cfg stays what is actually in force. */
static void reload_sort_keys(const struct cfg *cur, struct cfg *next, struct reload_keys *k)
{
	for (size_t i = 0; i < cfg_key_count(); i++) {
		if (!cfg_key_differs(cur, next, i))
			continue;
		if (cfg_key_apply(i) == CFG_APPLY_LIVE) {
			keys_append(k->applied, sizeof(k->applied), cfg_key_name(i));
		} else {
			keys_append(k->restart, sizeof(k->restart), cfg_key_name(i));
			cfg_key_copy(next, cur, i);
		}
	}
}

static void reload_log_keys(const struct reload_keys *k)
{
	char list[4096];
	snprintf(list, sizeof(list), "%s", k->applied);
	for (char *save = NULL, *key = strtok_r(list, ",", &save); key != NULL;
	     key = strtok_r(NULL, ",", &save))
		log_info("config", "%s: applied", key);
	snprintf(list, sizeof(list), "%s", k->restart);
	for (char *save = NULL, *key = strtok_r(list, ",", &save); key != NULL;
	     key = strtok_r(NULL, ",", &save))
		log_warn("config", "%s: changed in the file, applies after a restart", key);
}

/* SIGHUP: validate the new file fully before touching anything. Returns 0
 * when the new configuration was taken, else -1 with the reason in err;
 * keys (may be NULL) says what was applied and what needs a restart. */
static int reload(struct agent *ag, struct vm_err *err, struct reload_keys *keys)
{
	struct reload_keys none;
	if (keys == NULL)
		keys = &none;
	memset(keys, 0, sizeof(*keys));
	struct cfg *next = malloc(sizeof(*next));
	if (next == NULL) {
		vm_err_set(err, VM_ERR_NOMEM, "out of memory");
		log_error("config",
		          "reload failed: out of memory; keeping the current configuration");
		return -1;
	}
	if (cfg_load(next, ag->config_path, NULL, err) != 0) {
		log_error("config", "reload rejected: %s; keeping the current configuration",
		          err->msg);
		cfg_free(next);
		return -1;
	}
	struct reload_keys k = {0};
	reload_sort_keys(ag->cfg, next, &k);
	int rc;
	apply_log_config(next, err, &rc);
	if (rc != 0) {
		log_error("config", "reload rejected: %s; keeping the current configuration",
		          err->msg);
		cfg_free(next);
		return -1;
	}
	if (wh_listener_changed(ag->cfg, next)) {
		wh_stop(ag->webhook);
		ag->webhook = wh_start(next, &ag->deps, err);
		if (ag->webhook == NULL) {
			log_error("config", "reload rejected: %s; restoring the previous listener",
			          err->msg);
			struct vm_err e2 = {0};
			ag->webhook = wh_start(ag->cfg, &ag->deps, &e2);
			apply_log_config(ag->cfg, &e2, &rc);
			if (ag->webhook == NULL)
				log_error("webhook", "previous listener could not be restored: %s",
				          e2.msg);
			cfg_free(next);
			return -1;
		}
	}
	/* The tunnel's listener (its workers run only while the tunnel uses it)
	 * comes before settings that turn the tunnel on, and goes after those
	 * that turn it off (the tunnel drains; the listener's requests finish). */
	bool tun_listener = wh_tunnel_listener_wanted(next);
	if (tun_listener && wh_tunnel_listener_apply(ag->webhook, next, err) != 0) {
		log_error("config", "reload rejected: %s; keeping the current configuration",
		          err->msg);
		struct vm_err e2 = {0};
		apply_log_config(ag->cfg, &e2, &rc);
		cfg_free(next);
		return -1;
	}
	/* a tunnel that kept its old settings may still forward to it */
	if (reload_tunnel(ag, next) && !tun_listener) /* stopping cannot fail */
		(void)wh_tunnel_listener_apply(ag->webhook, next, err);
	health_reconfigure(ag->health, next);
	probe_exec_reconfigure(ag->deps.probe, next);
	budget_set_limit(ag->budget, concurrency_limit(next));
	cfg_free(ag->cfg);
	ag->cfg = next;
	log_info("config", "configuration reloaded from %s", ag->cfg->source);
	reload_log_keys(&k);
	*keys = k;
	return 0;
}

/* --- admin socket commands (run on the admin thread) --------------------------------- */

static json_t *admin_reload(void *ctx, json_t *req, struct vm_err *err)
{
	(void)req;
	struct agent *ag = ctx;
	log_info("agent", "admin socket: reloading configuration");
	pthread_mutex_lock(&ag->mu);
	struct vm_err why = {0};
	struct reload_keys *k = malloc(sizeof(*k));
	int rc = reload(ag, &why, k);
	json_t *res = json_pack("{s:b,s:s,s:s?,s:s,s:s}", "reloaded", rc == 0, "config",
	                        ag->cfg->source, "error", rc == 0 ? NULL : why.msg, "applied",
	                        k ? k->applied : "", "restart_required", k ? k->restart : "");
	free(k);
	pthread_mutex_unlock(&ag->mu);
	if (res == NULL)
		vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	return res;
}

static json_t *admin_status(void *ctx, json_t *req, struct vm_err *err)
{
	(void)req;
	struct agent *ag = ctx;
	char started[TIME_RFC3339_MAX];
	time_rfc3339(started, sizeof(started), (int64_t)ag->started_at * 1000, false);
	char *health = ag->health != NULL ? health_json(ag->health) : NULL;
	json_t *hj = health != NULL ? json_loads(health, 0, NULL) : NULL;
	free(health);
	pthread_mutex_lock(&ag->mu);
	char listen[96];
	snprintf(listen, sizeof(listen), "%s:%d", ag->cfg->webhook.listen_addr,
	         ag->cfg->webhook.port);
	json_t *res =
	    json_pack("{s:s,s:I,s:s,s:s,s:s,s:I,s:s,s:{s:s},s:o}", "service", "running", "pid",
	              (json_int_t)getpid(), "version", vma_build_version, "commit",
	              vma_build_commit, "started_at", started, "uptime_seconds",
	              (json_int_t)(time(NULL) - ag->started_at), "config", ag->cfg->source,
	              "webhook", "listen", listen, "health", hj ? hj : json_null());
	pthread_mutex_unlock(&ag->mu);
	if (res == NULL)
		vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	return res;
}

/* The Prometheus text, for local scrapers and tests (no JWT needed locally). */
static json_t *admin_metrics(void *ctx, json_t *req, struct vm_err *err)
{
	(void)req;
	struct agent *ag = ctx;
	char *text = ag->health != NULL ? health_prometheus(ag->health) : NULL;
	if (text == NULL) {
		vm_err_set(err, VM_ERR_INTERNAL, "the health monitor is not running");
		return NULL;
	}
	json_t *res = json_pack("{s:s}", "text", text);
	free(text);
	return res;
}

static const struct admin_cmd admin_cmds[] = {
    {"status", admin_status},
    {"metrics", admin_metrics},
    {"reload", admin_reload},
};

/* The main thread only waits for signals; every module runs its own threads. */
static int serve(struct agent *ag, const sigset_t *sigs)
{
	for (;;) {
		int sig;
		if (sigwait(sigs, &sig) != 0)
			continue;
		if (sig == SIGHUP) {
			log_info("agent", "SIGHUP: reloading configuration");
			struct vm_err err = {0};
			pthread_mutex_lock(&ag->mu);
			struct reload_keys k;
			int ok = reload(ag, &err, &k) == 0;
			/* `vm-agent configure` reads the outcome when the admin socket is absent */
			lc_reload_status_write(ag->cfg->agent.state_dir, ag->config_path, ok,
			                       ok ? "reloaded" : err.msg, k.applied, k.restart);
			pthread_mutex_unlock(&ag->mu);
			continue;
		}
		if (atomic_load(&ag->reexec))
			log_info("agent", "shutting down to start again and settle the upgrade");
		else
			log_info("agent", "%s: shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
		return VM_EXIT_OK;
	}
}

/* Replaces this process (same pid, so the service sees no exit) with
 * `path run [--config F]`, in the same environment. Returns only on failure,
 * with errno set. Not a spawn: nothing is started beside us. */
static void exec_run(const char *path, const char *config_flag)
{
	char *args[] = {(char *)path, "run", config_flag ? "--config" : NULL, (char *)config_flag,
	                NULL};
	execv(path, args);
}

/* An upgrade killed before it was committed is undone here, before anything
 * starts; when the binary this process came from was replaced by the previous
 * one, run that instead, with the same --config. */
static enum lc_recover_result recover_upgrade(const struct cfg *cfg, const char *config_flag)
{
	char bin[PATH_MAX], msg[512];
	enum lc_recover_result rr =
	    lc_upgrade_recover(cfg->agent.state_dir, bin, sizeof(bin), msg, sizeof(msg));
	if (rr == LC_RECOVER_BUSY)
		log_info("upgrade", "%s: it confirms this binary or rolls it back; watching it", msg);
	if (rr == LC_RECOVER_NOTHING || rr == LC_RECOVER_BUSY)
		return rr;
	log_warn("upgrade", "%s", msg);
	if (rr != LC_RECOVER_ROLLED_BACK)
		return rr;
	log_warn("upgrade", "re-executing the restored binary %s", bin);
	log_shutdown();
	exec_run(bin, config_flag);
	log_error("upgrade", "cannot execute %s: %s; continuing with this binary", bin,
	          strerror(errno));
	return rr;
}

/* The upgrade that held its lock at our start restarted the service into this
 * binary and health-gates it; it then commits or rolls back. If it dies first
 * (its unit stopped, the OOM killer), nothing else would look at its journal
 * until the next start, and this unconfirmed binary would run on: so once the
 * journal is orphaned, stop (SIGTERM to ourselves, the orderly path) and
 * start again (reexec_self), whose recover_upgrade settles it. */
static void *watch_upgrade(void *arg)
{
	struct agent *ag = arg;
	while (!atomic_load(&ag->watch_stop)) {
		struct timespec ts = {0, 250 * 1000 * 1000L};
		nanosleep(&ts, NULL);
		enum lc_upgrade_state st = lc_upgrade_state(ag->watch_state_dir);
		if (st == LC_UPGRADE_NONE)
			return NULL; /* committed, or rolled back (which restarts us anyway) */
		if (st == LC_UPGRADE_ORPHANED) {
			log_warn("upgrade", "the upgrade that was running when this agent started ended "
			                    "without finishing (its journal is left); starting again "
			                    "to settle it");
			atomic_store(&ag->reexec, true);
			kill(getpid(), SIGTERM);
			return NULL;
		}
	}
	return NULL;
}

/* After the orderly stop: the image this process runs, again. */
static int reexec_self(const char *config_flag)
{
	exec_run("/proc/self/exe", config_flag);
	fprintf(stderr, "vm-agent: cannot execute /proc/self/exe again: %s\n", strerror(errno));
	return VM_EXIT_RUNTIME;
}

static const char *pick_config(const char *flag)
{
	if (flag != NULL)
		return flag;
	if (access(CFG_SYSTEM_PATH, F_OK) == 0)
		return CFG_SYSTEM_PATH;
	return NULL;
}

struct run_args {
	const char *config;
};

static const struct cmd_flag run_flags[] = {
    {"config", 'c', CMD_FLAG_STR, offsetof(struct run_args, config), "FILE",
     "configuration file (YAML)"},
};

static int run_exec(const struct cmd_entry *self, void *args)
{
	(void)self;
	const char *config_flag = ((const struct run_args *)args)->config;
	int rc;
	struct agent ag = {.config_path = pick_config(config_flag), .started_at = time(NULL)};
	pthread_mutex_init(&ag.mu, NULL);
	struct vm_err err = {0};
	ag.cfg = malloc(sizeof(*ag.cfg));
	if (ag.cfg == NULL)
		return VM_EXIT_RUNTIME;
	if (cfg_load(ag.cfg, ag.config_path, NULL, &err) != 0) {
		fprintf(stderr, "vm-agent: %s\n", err.msg);
		cfg_free(ag.cfg);
		return err.code == VM_ERR_INVALID || err.code == VM_ERR_NOTFOUND ? VM_EXIT_CONFIG
		                                                                 : VM_EXIT_RUNTIME;
	}
	apply_log_config(ag.cfg, &err, &rc);
	if (rc != 0) {
		fprintf(stderr, "vm-agent: %s\n", err.msg);
		cfg_free(ag.cfg);
		return VM_EXIT_CONFIG;
	}
	bool upgrade_busy = recover_upgrade(ag.cfg, config_flag) == LC_RECOVER_BUSY;
	log_info("agent", "vm-agent %s (%s) starting; configuration: %s", vma_build_version,
	         vma_build_commit, ag.cfg->source);

	/* Signals are handled synchronously by this thread; block them before any
	 * other thread exists so that every thread inherits the mask. */
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	/* Once, before any module thread exists: curl_easy_init would otherwise do
	 * it lazily, which is not thread-safe. */
	if (http_global_init(&err) != 0) {
		log_error("agent", "%s", err.msg);
		cfg_free(ag.cfg);
		return VM_EXIT_RUNTIME;
	}

	int exit_code = VM_EXIT_RUNTIME;
	if (prepare_dirs(ag.cfg, &err) != 0) {
		log_error("agent", "%s", err.msg);
		goto out;
	}
	/* One agent per state directory, and the pid file written before anything
	 * (a listener, a `status`) can see this agent. */
	if (lc_agent_claim(ag.cfg->agent.state_dir, 10000, &err) != 0) {
		log_error("agent", "%s", err.msg);
		goto out;
	}
	sweep_dead_temps(ag.cfg);
	/* The executor first: the webhook borrows it, and stops before it. */
	open_containment(&ag);
	ag.budget = budget_new(concurrency_limit(ag.cfg), &err);
	if (ag.budget == NULL) {
		log_error("agent", "%s", err.msg);
		goto out;
	}
	ag.deps.budget = ag.budget;
	ag.deps.probe = probe_exec_start(ag.cfg, &ag.cgroup, ag.budget, &err);
	ag.deps.cgroup = &ag.cgroup;
	if (ag.deps.probe == NULL) {
		log_error("agent", "%s", err.msg);
		goto out;
	}
	/* Always started (idle without piko.server_url) so its pointer, which the
	 * webhook and health borrow, never changes. */
	ag.renewer = lc_renewer_new(ag.cfg, &err);
	if (ag.renewer == NULL) {
		log_error("agent", "%s", err.msg);
		goto out;
	}
	/* The tunnel asks for a renewal after a 401; the renewer hands tokens back. */
	struct tun_hooks hooks = {.token_rejected = lc_renewer_kick, .ctx = ag.renewer};
	ag.deps.tunnel = tun_start(ag.cfg, &hooks, &err);
	if (ag.deps.tunnel == NULL) {
		log_error("agent", "%s", err.msg);
		goto out;
	}
	if (lc_renewer_run(ag.renewer, token_to_tunnel, &ag, &err) != 0)
		log_error("agent", "%s", err.msg);
	/* The engine client only holds settings: the engine may come and go. */
	ag.deps.containers = ctr_engine_new(ag.cfg, &err);
	if (ag.deps.containers == NULL)
		log_error("containers", "%s", err.msg);
	probe_exec_set_containers(ag.deps.probe, ag.deps.containers);
	/* Health is not essential to serving: without it /v1/health answers 503. */
	struct health_sources sources = {&ag,           tunnel_source,      probe_source,
	                                 probe_store_source, containment_source, budget_source,
	                                 engine_source};
	ag.health = health_start(ag.cfg, &sources, &err);
	if (ag.health == NULL)
		log_error("health", "health monitor not started: %s", err.msg);
	ag.deps.health = ag.health;
	snprintf(ag.deps.runtime_dir, sizeof(ag.deps.runtime_dir), "%s", ag.cfg->agent.runtime_dir);
	ag.webhook = wh_start(ag.cfg, &ag.deps, &err);
	if (ag.webhook == NULL) {
		log_error("agent", "%s", err.msg);
		health_stop(ag.health);      /* before the tunnel: it samples the tunnel */
		lc_renewer_stop(ag.renewer); /* before the tunnel: it feeds the tunnel */
		ag.renewer = NULL;
		tun_stop(ag.deps.tunnel, 0);
		goto out;
	}
	/* Only now may Piko route requests to us: the webhook listens. */
	tun_open(ag.deps.tunnel);
	/* Neither is the admin socket: `status` then reports the agent as absent. */
	ag.admin = admin_start(ag.cfg->agent.runtime_dir, admin_cmds,
	                       sizeof(admin_cmds) / sizeof(admin_cmds[0]), &ag, &err);
	if (ag.admin == NULL)
		log_error("agent", "admin socket not available: %s", err.msg);
	if (upgrade_busy) {
		snprintf(ag.watch_state_dir, sizeof(ag.watch_state_dir), "%s", ag.cfg->agent.state_dir);
		ag.watching_upgrade =
		    pthread_create(&ag.upgrade_watch, NULL, watch_upgrade, &ag) == 0;
		if (!ag.watching_upgrade)
			log_error("upgrade", "cannot watch the running upgrade: no thread");
	}
	exit_code = serve(&ag, &sigs);
	if (ag.watching_upgrade) {
		atomic_store(&ag.watch_stop, true);
		pthread_join(ag.upgrade_watch, NULL);
	}
	admin_stop(ag.admin);
	health_stop(ag.health);      /* before the tunnel and probes: it samples both */
	lc_renewer_stop(ag.renewer); /* before the tunnel: it feeds the tunnel */
	ag.renewer = NULL;
	/* GoAway first so no new request arrives, then let in-flight ones finish. */
	wh_end_sessions(ag.webhook);
	tun_stop(ag.deps.tunnel, ag.cfg->piko.stop_grace_ms);
	wh_stop(ag.webhook);
	log_info("agent", "stopped");
out:
	lc_renewer_stop(ag.renewer);    /* only set here when the tunnel never started */
	probe_exec_stop(ag.deps.probe); /* persists interrupted records; NULL is fine */
	budget_free(ag.budget);         /* after both of its users */
	ctr_engine_free(ag.deps.containers);
	cg_close(&ag.cgroup);
	http_global_cleanup();
	pthread_mutex_destroy(&ag.mu);
	cfg_free(ag.cfg);
	log_shutdown();
	if (atomic_load(&ag.reexec))
		return reexec_self(config_flag);
	return exit_code;
}

const struct cmd_entry cmd_run_entry = {
    "run",
    "run the agent in the foreground (what the systemd unit starts)",
    "run [--config FILE]",
    "Runs the agent until SIGTERM or SIGINT. SIGHUP reloads the configuration; a\n"
    "new configuration that does not validate is rejected and the old one kept.\n\n"
    "Without --config, uses " CFG_SYSTEM_PATH " when it exists, else\n"
    "built-in defaults that need no root: webhook on 127.0.0.1:9999, tunnel off,\n"
    "state under $XDG_STATE_HOME/vm-agent or ./.vm-agent.\n"
    "Environment variables VM_AGENT_<SECTION>_<KEY> override the file\n"
    "(e.g. VM_AGENT_WEBHOOK_PORT=9100).\n",
    NULL,
    CMD_TABLE(run_flags),
    sizeof(struct run_args),
    run_exec,
};
