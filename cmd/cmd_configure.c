/* vm-agent configure: --set/--unset (validated, atomic, .bak, reload),
 * --show (secrets redacted), --check [FILE]. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "core/err.h"
#include "lifecycle/lifecycle.h"

static int configure_exec(const struct cmd_entry *self, int argc, char **argv);

const struct cmd_entry cmd_configure_entry = {
    "configure",
    "change, show or check the configuration (then reload the agent)",
    "Edits /etc/vm-agent/config.yaml. The whole new file is validated before\n"
    "anything is written; it then replaces the old one atomically (the previous\n"
    "file is kept as config.yaml.bak) and the running agent is told to reload\n"
    "(its admin socket in agent.runtime_dir, else SIGHUP to the systemd MainPID\n"
    "or to the pid in <state_dir>/agent.pid; both as the file, the defaults and\n"
    "VM_AGENT_* variables say).\n"
    "The report says whether the agent took the new configuration.\n"
    "--set/--unset change only the lines of the keys they name: comments, key\n"
    "order and every other line are kept. A list key takes comma-separated\n"
    "entries and is written as a YAML sequence.\n\n"
    "Flags:\n"
    "  --set section.key=value   set a key (repeatable)\n"
    "  --unset section.key       remove a key: back to its default (repeatable)\n"
    "  --show                    print the effective configuration, secrets redacted\n"
    "  --check [FILE]            validate FILE (default: the installed file); exit 78\n"
    "                            when invalid\n"
    "  --config FILE             edit FILE instead of /etc/vm-agent/config.yaml\n"
    "  --no-reload               do not signal the running agent\n"
    "  --reload-timeout SECS     how long to wait for the agent's answer (default 10)\n"
    "  --root DIR                files under DIR\n"
    "  --json                    machine-readable report\n"
    "  -h, --help\n",
    "configure [--set K=V]… [--unset K]… | --show | --check [FILE]",
    configure_exec,
};

enum { O_SET = 256, O_UNSET, O_SHOW, O_CHECK, O_CONFIG, O_NORELOAD, O_RT, O_ROOT, O_JSON };

#define MAX_EDITS 64

static int configure_exec(const struct cmd_entry *self, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"set", required_argument, NULL, O_SET},
	    {"unset", required_argument, NULL, O_UNSET},
	    {"show", no_argument, NULL, O_SHOW},
	    {"check", optional_argument, NULL, O_CHECK},
	    {"config", required_argument, NULL, O_CONFIG},
	    {"no-reload", no_argument, NULL, O_NORELOAD},
	    {"reload-timeout", required_argument, NULL, O_RT},
	    {"root", required_argument, NULL, O_ROOT},
	    {"json", no_argument, NULL, O_JSON},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *set[MAX_EDITS], *unset[MAX_EDITS];
	struct lc_configure_opts o = {.set = set, .unset = unset};
	bool show = false, check = false, json = false;
	const char *check_file = NULL;
	int rc = -1, c;
	while ((c = cmd_getopt(self, argc, argv, ":h", opts, &rc)) != -1) {
		switch (c) {
		case '?':
			return rc;
		case O_SET:
			if (o.nset >= MAX_EDITS)
				return cmd_usage_error(self, "too many --set");
			set[o.nset++] = optarg;
			break;
		case O_UNSET:
			if (o.nunset >= MAX_EDITS)
				return cmd_usage_error(self, "too many --unset");
			unset[o.nunset++] = optarg;
			break;
		case O_SHOW:
			show = true;
			break;
		case O_CHECK:
			check = true;
			check_file = optarg;
			/* "--check FILE" as well as "--check=FILE" */
			if (check_file == NULL && optind < argc && argv[optind][0] != '-')
				check_file = argv[optind++];
			break;
		case O_CONFIG:
			o.config = optarg;
			break;
		case O_NORELOAD:
			o.no_reload = true;
			break;
		case O_RT:
			o.reload_timeout_s = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case O_ROOT:
			o.root = optarg;
			break;
		case O_JSON:
			json = true;
			break;
		}
	}
	if (optind < argc)
		return cmd_usage_error(self, "unexpected argument '%s'", argv[optind]);
	int modes = (show ? 1 : 0) + (check ? 1 : 0) + (o.nset + o.nunset > 0 ? 1 : 0);
	if (modes != 1)
		return cmd_usage_error(self, "give one of --set/--unset, --show or --check");

	struct vm_err err = {0};
	struct lc_paths p;
	if (lc_paths_init(&p, o.root, NULL, &err) != 0) {
		fprintf(stderr, "vm-agent configure: %s\n", err.msg);
		return VM_EXIT_USAGE;
	}
	const char *path = check_file ? check_file : o.config ? o.config : p.config;
	if (show || check) {
		rc = lc_config_check(path, show ? stdout : NULL, &err);
		if (json && check) {
			json_t *doc = json_pack("{s:b,s:s,s:s}", "ok", rc == 0, "file", path,
			                        "error", rc == 0 ? "" : err.msg);
			json_dumpf(doc, stdout, JSON_INDENT(2));
			putchar('\n');
			json_decref(doc);
		} else if (check && rc == 0) {
			printf("%s: OK\n", path);
		}
		if (rc != 0) {
			fprintf(stderr, "vm-agent configure: %s\n", err.msg);
			return err.code == VM_ERR_INVALID ? VM_EXIT_CONFIG : VM_EXIT_RUNTIME;
		}
		return VM_EXIT_OK;
	}
	struct lc_report *r = cmd_lc_begin(self, false);
	if (r == NULL)
		return VM_EXIT_RUNTIME;
	rc = lc_configure(&o, r, &err);
	/* a FAIL step with rc == 0: written, but the agent refused it */
	struct cmd_lc_exit how = {.json = json,
	                          .echo_error = true,
	                          .fail_step_is_error = true,
	                          .invalid_exit = VM_EXIT_CONFIG};
	return cmd_lc_end(self, r, rc, &err, &how);
}
