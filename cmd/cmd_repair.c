/* vm-agent repair: --diagnose prints the checklist; without it, fixes. */
#include <stddef.h>

#include "cmd/cmd.h"
#include "core/err.h"
#include "core/secret.h"
#include "lifecycle/lifecycle.h"

struct repair_args {
	struct lc_repair_opts o;
	struct secret key;
	bool json;
};

#define RA(f) offsetof(struct repair_args, f)
static const struct cmd_flag repair_flags[] = {
    {"diagnose", 0, CMD_FLAG_BOOL, RA(o.diagnose_only), NULL, "check only, change nothing"},
    {"key", 0, CMD_FLAG_KEY, RA(key), "K", "install key, to re-register (or --key-file F)"},
    {"key-file", 0, CMD_FLAG_KEY_FILE, RA(key), "F", "read the install key from F"},
    {"offline", 0, CMD_FLAG_BOOL, RA(o.offline), NULL, "skip the network checks"},
    {"root", 0, CMD_FLAG_STR, RA(o.root), "DIR", "files under DIR"},
    {"json", 0, CMD_FLAG_BOOL, RA(json), NULL, "machine-readable report"},
};

static int repair_run(const void *o, struct lc_report *r, struct vm_err *err)
{
	return lc_repair(o, r, err);
}

static int repair_exec(const struct cmd_entry *self, void *args)
{
	struct repair_args *a = args;
	a->o.version = vma_build_version;
	a->o.install_key = a->key.value;
	/* the checklist itself says what failed */
	struct cmd_lc_exit how = {.json = a->json, .http = true};
	return cmd_lc_run(self, repair_run, &a->o, &how);
}

const struct cmd_entry cmd_repair_entry = {
    "repair",
    "diagnose the installation and fix what can be fixed",
    "repair [--diagnose] [--key K] [--offline] [--root DIR] [--json]",
    "Checks, each with OK/WARN/FAIL and a fix hint: binary present and matching\n"
    "its recorded sha256, config valid, file permissions, directories, unit\n"
    "installed/enabled/active, disk space, DNS+TLS reachability of the control\n"
    "plane and Piko, clock skew, credentials accepted by the control plane.\n"
    "Without --diagnose it also fixes: rewrites the unit, enables it, resets\n"
    "permissions and directories, restores config.yaml.bak when the config is\n"
    "invalid, restarts the service, and registers again with --key when the\n"
    "credentials are invalid; it prints what it changed and what it could not.\n"
    "Exit status: 0 when everything is OK (or fixed), 1 otherwise.\n",
    NULL,
    CMD_TABLE(repair_flags),
    sizeof(struct repair_args),
    repair_exec,
};
