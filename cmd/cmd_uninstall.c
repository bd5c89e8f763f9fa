/* vm-agent uninstall: stop, disable, deregister, remove per the flag table. */
#include <stddef.h>

#include "cmd/cmd.h"
#include "core/err.h"
#include "lifecycle/lifecycle.h"

struct uninstall_args {
	struct lc_uninstall_opts o;
	bool json;
};

#define UA(f) offsetof(struct uninstall_args, f)
static const struct cmd_flag uninstall_flags[] = {
    {"keep-data", 0, CMD_FLAG_BOOL, UA(o.keep_data), NULL,
     "keep /var/lib/vm-agent (probe records, spool)"},
    {"keep-logs", 0, CMD_FLAG_BOOL, UA(o.keep_logs), NULL, "keep /var/log/vm-agent"},
    {"purge", 0, CMD_FLAG_BOOL, UA(o.purge), NULL,
     "remove everything, including credentials and caches"},
    {"ca-file", 0, CMD_FLAG_STR, UA(o.ca_file), "F", "CA bundle for the control plane"},
    {"root", 0, CMD_FLAG_STR, UA(o.root), "DIR", "files under DIR"},
    {"json", 0, CMD_FLAG_BOOL, UA(json), NULL, "machine-readable report"},
};

static int uninstall_run(const void *o, struct lc_report *r, struct vm_err *err)
{
	return lc_uninstall(o, r, err);
}

static int uninstall_exec(const struct cmd_entry *self, void *args)
{
	struct uninstall_args *a = args;
	if (a->o.purge && (a->o.keep_data || a->o.keep_logs))
		return cmd_usage_error(self, "--purge cannot be combined with --keep-data or "
		                             "--keep-logs");
	struct cmd_lc_exit how = {.json = a->json, .http = true, .echo_error = true};
	return cmd_lc_run(self, uninstall_run, &a->o, &how);
}

const struct cmd_entry cmd_uninstall_entry = {
    "uninstall",
    "stop, deregister and remove the agent",
    "uninstall [--keep-data] [--keep-logs] [--purge] [--root DIR] [--json]",
    "Stops and disables the service, deregisters from the control plane (best\n"
    "effort: a warning when it cannot be reached), then removes files:\n\n" LC_UNINSTALL_TABLE,
    NULL,
    CMD_TABLE(uninstall_flags),
    sizeof(struct uninstall_args),
    uninstall_exec,
};
