/* vm-agent configure: --set/--unset (validated, atomic, .bak, reload),
 * --show (secrets redacted), --check [FILE]. */
#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "core/err.h"
#include "lifecycle/lifecycle.h"

struct configure_args {
	struct cmd_list set, unset;
	bool show;
	const char *check; /* "" = the installed file */
	const char *config;
	bool no_reload;
	unsigned reload_timeout_s;
	const char *root;
	bool json;
};

#define CA(f) offsetof(struct configure_args, f)
static const struct cmd_flag configure_flags[] = {
    {"set", 0, CMD_FLAG_LIST, CA(set), "section.key=value", "set a key (repeatable)"},
    {"unset", 0, CMD_FLAG_LIST, CA(unset), "section.key",
     "remove a key: back to its default (repeatable)"},
    {"show", 0, CMD_FLAG_BOOL, CA(show), NULL,
     "print the effective configuration, secrets redacted"},
    {"check", 0, CMD_FLAG_OPT_STR, CA(check), "FILE",
     "validate FILE (default: the installed file); exit 78\nwhen invalid"},
    {"config", 0, CMD_FLAG_STR, CA(config), "FILE",
     "edit FILE instead of /etc/vm-agent/config.yaml"},
    {"no-reload", 0, CMD_FLAG_BOOL, CA(no_reload), NULL, "do not signal the running agent"},
    {"reload-timeout", 0, CMD_FLAG_SECONDS, CA(reload_timeout_s), "SECS",
     "how long to wait for the agent's answer (default 10)"},
    {"root", 0, CMD_FLAG_STR, CA(root), "DIR", "files under DIR"},
    {"json", 0, CMD_FLAG_BOOL, CA(json), NULL, "machine-readable report"},
};

/* --show and --check: the file is read, never written. */
static int configure_inspect(const struct configure_args *a, const char *path)
{
	struct vm_err err = {0};
	int rc = lc_config_check(a->root, path, a->show ? stdout : NULL, &err);
	if (a->json && a->check != NULL) {
		json_t *doc = json_pack("{s:b,s:s,s:s}", "ok", rc == 0, "file", path, "error",
		                        rc == 0 ? "" : err.msg);
		json_dumpf(doc, stdout, JSON_INDENT(2));
		putchar('\n');
		json_decref(doc);
	} else if (a->check != NULL && rc == 0) {
		printf("%s: OK\n", path);
	}
	if (rc != 0) {
		fprintf(stderr, "vm-agent configure: %s\n", err.msg);
		return err.code == VM_ERR_INVALID ? VM_EXIT_CONFIG : VM_EXIT_RUNTIME;
	}
	return VM_EXIT_OK;
}

static int configure_run(const void *o, struct lc_report *r, struct vm_err *err)
{
	return lc_configure(o, r, err);
}

static int configure_exec(const struct cmd_entry *self, void *args)
{
	const struct configure_args *a = args;
	bool check = a->check != NULL;
	int modes = (a->show ? 1 : 0) + (check ? 1 : 0) + (a->set.n + a->unset.n > 0 ? 1 : 0);
	if (modes != 1)
		return cmd_usage_error(self, "give one of --set/--unset, --show or --check");

	struct vm_err err = {0};
	struct lc_paths p;
	if (lc_paths_init(&p, a->root, NULL, &err) != 0) {
		fprintf(stderr, "vm-agent configure: %s\n", err.msg);
		return VM_EXIT_USAGE;
	}
	if (a->show || check) {
		const char *path = check && a->check[0] != '\0' ? a->check
		                   : a->config != NULL          ? a->config
		                                                : p.config;
		return configure_inspect(a, path);
	}
	struct lc_configure_opts o = {
	    .root = a->root,
	    .config = a->config,
	    .set = a->set.v,
	    .nset = a->set.n,
	    .unset = a->unset.v,
	    .nunset = a->unset.n,
	    .no_reload = a->no_reload,
	    .reload_timeout_s = a->reload_timeout_s,
	};
	/* a FAIL step with rc == 0: written, but the agent refused it */
	struct cmd_lc_exit how = {.json = a->json,
	                          .echo_error = true,
	                          .fail_step_is_error = true,
	                          .invalid_exit = VM_EXIT_CONFIG};
	return cmd_lc_run(self, configure_run, &o, &how);
}

const struct cmd_entry cmd_configure_entry = {
    "configure",
    "change, show or check the configuration (then reload the agent)",
    "configure [--set K=V]… [--unset K]… | --show | --check [FILE]",
    "Edits /etc/vm-agent/config.yaml. The whole new file is validated before\n"
    "anything is written; it then replaces the old one atomically (the previous\n"
    "file is kept as config.yaml.bak) and the running agent is told to reload\n"
    "(its admin socket in agent.runtime_dir, else SIGHUP to the systemd MainPID\n"
    "or to the pid in <state_dir>/agent.pid; both as the file, the defaults and\n"
    "VM_AGENT_* variables say).\n"
    "The report says whether the agent took the new configuration.\n"
    "--set/--unset change only the lines of the keys they name: comments, key\n"
    "order and every other line are kept. A list key takes comma-separated\n"
    "entries and is written as a YAML sequence.\n",
    NULL,
    CMD_TABLE(configure_flags),
    sizeof(struct configure_args),
    configure_exec,
};
