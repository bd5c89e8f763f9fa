/* vm-agent runner --stdio: the agentless runner (docs/runner.md). No config,
 * no state directory: a private scratch directory removed at exit, logs on
 * stderr only; --self-delete unlinks the binary at exit. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd/cmd.h"
#include "core/cgroup.h"
#include "core/config.h"
#include "core/fs.h"
#include "core/log.h"
#include "runner/runner.h"

struct runner_args {
	bool stdio;
	const char *ttl, *idle;
	bool self_delete;
	struct cmd_list allow;
	const char *line_max;
};

#define RA(f) offsetof(struct runner_args, f)
static const struct cmd_flag runner_flags[] = {
    {"stdio", 0, CMD_FLAG_BOOL, RA(stdio), NULL, "speak the line protocol on stdin/stdout"},
    {"ttl", 0, CMD_FLAG_STR, RA(ttl), "D",
     "lifetime (default 10m); a step still running\nat its end is stopped"},
    {"idle", 0, CMD_FLAG_STR, RA(idle), "D",
     "no command for this long ends the runner\n(default: the ttl)"},
    {"self-delete", 0, CMD_FLAG_BOOL, RA(self_delete), NULL, "unlink this binary at exit"},
    {"allow", 0, CMD_FLAG_LIST, RA(allow), "GLOB",
     "exec/script argv[0] must match one (repeatable,\nprobe.allow semantics); none = anything"},
    {"line-max", 0, CMD_FLAG_STR, RA(line_max), "SIZE", "longest input line (default 24MiB)"},
};

/* Set from the signal handler; the session polls it (lock-free atomic). */
static atomic_bool stop_flag;

static void on_signal(int sig)
{
	(void)sig;
	atomic_store(&stop_flag, true);
}

static int parse_dur(const struct cmd_entry *self, const char *name, const char *v, uint64_t dflt,
                     uint64_t *out)
{
	*out = dflt;
	if (v == NULL)
		return 0;
	if (cfg_parse_duration(v, out) != 0 || *out == 0)
		return cmd_usage_error(self, "--%s: expected a duration like 30s or 10m, got '%s'",
		                       name, v);
	return 0;
}

static int runner_exec(const struct cmd_entry *self, void *args)
{
	struct runner_args *a = args;
	if (!a->stdio)
		return cmd_usage_error(self, "--stdio is required (the only transport)");
	uint64_t ttl, idle, line_max = RUNNER_LINE_MAX;
	if (parse_dur(self, "ttl", a->ttl, 10 * 60 * 1000, &ttl) != 0 ||
	    parse_dur(self, "idle", a->idle, ttl, &idle) != 0)
		return VM_EXIT_USAGE;
	if (a->line_max != NULL && (cfg_parse_size(a->line_max, &line_max) != 0 ||
	                            line_max < 1024 || line_max > RUNNER_LINE_MAX))
		return cmd_usage_error(self, "--line-max: expected a size from 1KiB to 24MiB");
	struct cfg_strlist *allow = calloc(1, sizeof(*allow));
	if (allow == NULL)
		return VM_EXIT_RUNTIME;
	for (size_t i = 0; i < a->allow.n; i++) {
		if (i >= CFG_LIST_MAX || strlen(a->allow.v[i]) >= CFG_STR_MAX) {
			free(allow);
			return cmd_usage_error(self, "--allow: at most %d patterns of %d bytes",
			                       CFG_LIST_MAX, CFG_STR_MAX - 1);
		}
		snprintf(allow->items[allow->count++], CFG_STR_MAX, "%s", a->allow.v[i]);
	}
	/* the binary's path now: /proc/self/exe says "(deleted)" once unlinked */
	char self_path[PATH_MAX] = "";
	if (a->self_delete) {
		ssize_t n = readlink("/proc/self/exe", self_path, sizeof(self_path) - 1);
		self_path[n > 0 ? n : 0] = '\0';
	}
	struct sigaction sa = {0};
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN); /* a closed stdout is an error value, not a death */

	const char *tmp = getenv("TMPDIR");
	char scratch[PATH_MAX];
	snprintf(scratch, sizeof(scratch), "%s/vm-agent-runner.XXXXXX",
	         tmp != NULL && tmp[0] == '/' ? tmp : "/tmp");
	int exit_code = VM_EXIT_OK;
	if (mkdtemp(scratch) == NULL) { /* mode 0700 */
		log_error("runner", "scratch directory %s: %s", scratch, strerror(errno));
		scratch[0] = '\0';
		exit_code = VM_EXIT_RUNTIME;
	}
	struct cfg *dflt = calloc(1, sizeof(*dflt));
	if (dflt == NULL) {
		free(allow);
		return VM_EXIT_RUNTIME;
	}
	cfg_defaults(dflt);
	struct runner_opts o = {
	    .in_fd = 0,
	    .out_fd = 1,
	    .ttl_ms = ttl,
	    .idle_ms = idle,
	    .line_max = (size_t)line_max,
	    .work_dir = scratch,
	    .allow = allow,
	    .output_cap = dflt->probe.output_cap,
	    .grace_ms = dflt->probe.cancel_grace_ms,
	    .default_timeout_ms = dflt->probe.default_timeout_ms,
	    .stop = &stop_flag,
	    .version = vma_build_version,
	};
	/* The agent's containment rule, here too: whatever a step starts (a
	 * daemon, a setsid child) dies with it, so nothing outlives the runner
	 * on a host that never had the agent. Its record lives in the scratch dir. */
	struct cg_tree cg = {0};
	int killed = 0;
	if (scratch[0] != '\0') {
		cg_open(&cg, dflt->probe.cgroup_root, "/proc/self/cgroup", scratch, &killed);
		o.cgroup = &cg;
	}
	free(dflt);
	enum runner_end why = RUNNER_END_EOF;
	struct vm_err err = {0};
	if (scratch[0] != '\0' && runner_serve(&o, &why, &err) != 0) {
		log_error("runner", "%s", err.msg);
		exit_code = VM_EXIT_RUNTIME;
	}
	free(allow);
	if (o.cgroup != NULL)
		cg_close(&cg);
	json_t *bye = json_pack("{s:s,s:s}", "type", "exit", "reason", runner_end_name(why));
	if (scratch[0] != '\0' && fs_remove_tree(scratch, &err) != 0) {
		log_error("runner", "scratch directory %s: %s", scratch, err.msg);
		json_object_set_new(bye, "scratch_error", json_string(err.msg));
	}
	if (a->self_delete) {
		/* reported, not fatal: the steps' outcomes stand */
		if (self_path[0] == '\0' || unlink(self_path) != 0) {
			char msg[PATH_MAX + 64];
			snprintf(msg, sizeof(msg), "cannot remove %s: %s",
			         self_path[0] ? self_path : "the binary (path unknown)",
			         strerror(errno));
			json_object_set_new(bye, "self_delete", json_false());
			json_object_set_new(bye, "self_delete_error", json_string(msg));
			log_error("runner", "%s", msg);
		} else {
			json_object_set_new(bye, "self_delete", json_true());
		}
	}
	(void)runner_send(1, bye);
	return exit_code;
}

const struct cmd_entry cmd_runner_entry = {
    "runner",
    "run probe steps over a JSON line protocol on stdin/stdout",
    "runner --stdio [--ttl D] [--idle D] [--self-delete] [--allow GLOB]...",
    "The agentless runner (docs/runner.md): prints a ready line, then reads one\n"
    "JSON command per line and answers with event lines and a done line, one\n"
    "command at a time, with the probe step types, validation and policy.\n"
    "Ends at stdin EOF, at the ttl, after the idle limit or on SIGTERM; needs\n"
    "no config and no state directory and logs only to stderr.\n",
    "Exit status: 0 after a clean end, 1 when the session could not run.\n",
    CMD_TABLE(runner_flags),
    sizeof(struct runner_args),
    runner_exec,
};
