/* vm-agent uninstall: stop, disable, deregister, remove per the flag table. */
#include <stdio.h>
#include <stdlib.h>

#include "cmd/cmd.h"
#include "core/err.h"
#include "core/http.h"
#include "lifecycle/lifecycle.h"

static int uninstall_exec(const struct cmd_entry *self, int argc, char **argv);

const struct cmd_entry cmd_uninstall_entry = {
    "uninstall",
    "stop, deregister and remove the agent",
    "Stops and disables the service, deregisters from the control plane (best\n"
    "effort: a warning when it cannot be reached), then removes files:\n\n" LC_UNINSTALL_TABLE "\n"
    "Flags:\n"
    "  --keep-data    keep /var/lib/vm-agent (probe records, spool)\n"
    "  --keep-logs    keep /var/log/vm-agent\n"
    "  --purge        remove everything, including credentials and caches\n"
    "  --ca-file F    CA bundle for the control plane\n"
    "  --root DIR     files under DIR\n"
    "  --json         machine-readable report\n"
    "  -h, --help\n",
    "uninstall [--keep-data] [--keep-logs] [--purge] [--root DIR] [--json]",
    uninstall_exec,
};

enum { O_DATA = 256, O_LOGS, O_PURGE, O_CA, O_ROOT, O_JSON };

static int uninstall_exec(const struct cmd_entry *self, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"keep-data", no_argument, NULL, O_DATA},  {"keep-logs", no_argument, NULL, O_LOGS},
	    {"purge", no_argument, NULL, O_PURGE},     {"ca-file", required_argument, NULL, O_CA},
	    {"root", required_argument, NULL, O_ROOT}, {"json", no_argument, NULL, O_JSON},
	    {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
	};
	struct lc_uninstall_opts o = {0};
	bool json = false;
	int rc = -1, c;
	while ((c = cmd_getopt(self, argc, argv, ":h", opts, &rc)) != -1) {
		switch (c) {
		case '?':
			return rc;
		case O_DATA:
			o.keep_data = true;
			break;
		case O_LOGS:
			o.keep_logs = true;
			break;
		case O_PURGE:
			o.purge = true;
			break;
		case O_CA:
			o.ca_file = optarg;
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
	if (o.purge && (o.keep_data || o.keep_logs))
		return cmd_usage_error(self, "--purge cannot be combined with --keep-data or "
		                             "--keep-logs");
	struct vm_err err = {0};
	struct lc_report *r = cmd_lc_begin(self, true);
	if (r == NULL)
		return VM_EXIT_RUNTIME;
	rc = lc_uninstall(&o, r, &err);
	struct cmd_lc_exit how = {.json = json, .http = true, .echo_error = true};
	return cmd_lc_end(self, r, rc, &err, &how);
}
