/* vm-agent run: load the configuration, start the modules, and serve until
 * SIGTERM/SIGINT; SIGHUP reloads the configuration. Owns the one struct agent. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmd/cmd.h"
#include "core/config.h"
#include "core/fs.h"
#include "core/log.h"
#include "probe/probe.h"
#include "webhook/webhook.h"

static int run_exec(const struct cmd_entry *self, int argc, char **argv);

const struct cmd_entry cmd_run_entry = {
	"run", "run the agent in the foreground (what the systemd unit starts)",
	"Runs the agent until SIGTERM or SIGINT. SIGHUP reloads the configuration; a\n"
	"new configuration that does not validate is rejected and the old one kept.\n\n"
	"Without --config, uses " CFG_SYSTEM_PATH " when it exists, else\n"
	"built-in defaults that need no root: webhook on 127.0.0.1:9999, tunnel off,\n"
	"state under $XDG_STATE_HOME/vm-agent or ./.vm-agent.\n"
	"Environment variables VM_AGENT_<SECTION>_<KEY> override the file\n"
	"(e.g. VM_AGENT_WEBHOOK_PORT=9100).\n\n"
	"Flags:\n"
	"  -c, --config FILE   configuration file (YAML)\n"
	"  -h, --help\n",
	"run [--config FILE]", run_exec,
};

struct agent {
	struct cfg *cfg;
	const char *config_path; /* NULL = built-in defaults */
	struct wh_server *webhook;
	struct wh_deps deps; /* filled as modules start; the webhook borrows them */
};

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
	return rc;
}

/* SIGHUP: validate the new file fully before touching anything. */
static void reload(struct agent *ag)
{
	struct vm_err err = {0};
	struct cfg *next = malloc(sizeof(*next));
	if (next == NULL) {
		log_error("config", "reload failed: out of memory; keeping the current configuration");
		return;
	}
	if (cfg_load(next, ag->config_path, NULL, &err) != 0) {
		log_error("config", "reload rejected: %s; keeping the current configuration", err.msg);
		free(next);
		return;
	}
	int rc;
	apply_log_config(next, &err, &rc);
	if (rc != 0) {
		log_error("config", "reload rejected: %s; keeping the current configuration", err.msg);
		free(next);
		return;
	}
	if (wh_listener_changed(ag->cfg, next)) {
		wh_stop(ag->webhook);
		ag->webhook = wh_start(next, &ag->deps, &err);
		if (ag->webhook == NULL) {
			log_error("config", "reload rejected: %s; restoring the previous listener", err.msg);
			ag->webhook = wh_start(ag->cfg, &ag->deps, &err);
			apply_log_config(ag->cfg, &err, &rc);
			if (ag->webhook == NULL)
				log_error("webhook", "previous listener could not be restored: %s", err.msg);
			free(next);
			return;
		}
	}
	free(ag->cfg);
	ag->cfg = next;
	log_info("config", "configuration reloaded from %s", ag->cfg->source);
}

/* The main thread only waits for signals; every module runs its own threads. */
static int serve(struct agent *ag, const sigset_t *sigs)
{
	for (;;) {
		int sig;
		if (sigwait(sigs, &sig) != 0)
			continue;
		if (sig == SIGHUP) {
			log_info("agent", "SIGHUP: reloading configuration");
			reload(ag);
			continue;
		}
		log_info("agent", "%s: shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
		return VM_EXIT_OK;
	}
}

static const char *pick_config(const char *flag)
{
	if (flag != NULL)
		return flag;
	if (access(CFG_SYSTEM_PATH, F_OK) == 0)
		return CFG_SYSTEM_PATH;
	return NULL;
}

static int run_exec(const struct cmd_entry *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{"config", required_argument, NULL, 'c'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *config_flag = NULL;
	int rc = -1, c;
	while ((c = cmd_getopt(self, argc, argv, ":hc:", opts, &rc)) != -1) {
		if (c == '?')
			return rc;
		config_flag = optarg;
	}
	if (optind < argc)
		return cmd_usage_error(self, "unexpected argument '%s'", argv[optind]);

	struct agent ag = {.config_path = pick_config(config_flag)};
	struct vm_err err = {0};
	ag.cfg = malloc(sizeof(*ag.cfg));
	if (ag.cfg == NULL)
		return VM_EXIT_RUNTIME;
	if (cfg_load(ag.cfg, ag.config_path, NULL, &err) != 0) {
		fprintf(stderr, "vm-agent: %s\n", err.msg);
		free(ag.cfg);
		return err.code == VM_ERR_INVALID || err.code == VM_ERR_NOTFOUND ? VM_EXIT_CONFIG
		                                                                 : VM_EXIT_RUNTIME;
	}
	apply_log_config(ag.cfg, &err, &rc);
	if (rc != 0) {
		fprintf(stderr, "vm-agent: %s\n", err.msg);
		free(ag.cfg);
		return VM_EXIT_CONFIG;
	}
	log_info("agent", "vm-agent %s (%s) starting; configuration: %s", vma_build_version,
	         vma_build_commit, ag.cfg->source);
	if (ag.cfg->piko.server_url[0] == '\0')
		log_info("agent", "tunnel off: piko.server_url is not set");

	/* Signals are handled synchronously by this thread; block them before any
	 * other thread exists so that every thread inherits the mask. */
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	int exit_code = VM_EXIT_RUNTIME;
	if (prepare_dirs(ag.cfg, &err) != 0) {
		log_error("agent", "%s", err.msg);
		goto out;
	}
	/* The executor first: the webhook borrows it, and stops before it. */
	ag.deps.probe = probe_exec_start(ag.cfg, &err);
	if (ag.deps.probe == NULL) {
		log_error("agent", "%s", err.msg);
		goto out;
	}
	ag.webhook = wh_start(ag.cfg, &ag.deps, &err);
	if (ag.webhook == NULL) {
		log_error("agent", "%s", err.msg);
		goto out;
	}
	exit_code = serve(&ag, &sigs);
	wh_stop(ag.webhook);
	log_info("agent", "stopped");
out:
	probe_exec_stop(ag.deps.probe); /* persists interrupted records; NULL is fine */
	free(ag.cfg);
	log_shutdown();
	return exit_code;
}
