/* vm-agent uninstall: stop, disable, deregister, remove per the flag table. */
#include <stddef.h>
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

struct uninstall_args {
	struct lc_uninstall_opts o;
	bool json;
};

#define UA(f) offsetof(struct uninstall_args, f)
static const struct cmd_flag uninstall_flags[] = {
    {"keep-data", CMD_FLAG_BOOL, UA(o.keep_data)},
    {"keep-logs", CMD_FLAG_BOOL, UA(o.keep_logs)},
    {"purge", CMD_FLAG_BOOL, UA(o.purge)},
    {"ca-file", CMD_FLAG_STR, UA(o.ca_file)},
    {"root", CMD_FLAG_STR, UA(o.root)},
    {"json", CMD_FLAG_BOOL, UA(json)},
};

static int uninstall_exec(const struct cmd_entry *self, int argc, char **argv)
{
	struct uninstall_args a = {0};
	int rc = cmd_parse_flags(self, argc, argv, uninstall_flags,
	                         sizeof(uninstall_flags) / sizeof(uninstall_flags[0]), &a);
	if (rc >= 0)
		return rc;
	if (a.o.purge && (a.o.keep_data || a.o.keep_logs))
		return cmd_usage_error(self, "--purge cannot be combined with --keep-data or "
		                             "--keep-logs");
	struct vm_err err = {0};
	struct lc_report *r = cmd_lc_begin(self, true);
	if (r == NULL)
		return VM_EXIT_RUNTIME;
	rc = lc_uninstall(&a.o, r, &err);
	struct cmd_lc_exit how = {.json = a.json, .http = true, .echo_error = true};
	return cmd_lc_end(self, r, rc, &err, &how);
}
