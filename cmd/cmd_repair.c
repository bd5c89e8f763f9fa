/* vm-agent repair: --diagnose prints the checklist; without it, fixes. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "core/err.h"
#include "core/http.h"
#include "core/secret.h"
#include "lifecycle/lifecycle.h"

static int repair_exec(const struct cmd_entry *self, int argc, char **argv);

const struct cmd_entry cmd_repair_entry = {
    "repair",
    "diagnose the installation and fix what can be fixed",
    "Checks, each with OK/WARN/FAIL and a fix hint: binary present and matching\n"
    "its recorded sha256, config valid, file permissions, directories, unit\n"
    "installed/enabled/active, disk space, DNS+TLS reachability of the control\n"
    "plane and Piko, clock skew, credentials accepted by the control plane.\n"
    "Without --diagnose it also fixes: rewrites the unit, enables it, resets\n"
    "permissions and directories, restores config.yaml.bak when the config is\n"
    "invalid, restarts the service, and registers again with --key when the\n"
    "credentials are invalid; it prints what it changed and what it could not.\n"
    "Exit status: 0 when everything is OK (or fixed), 1 otherwise.\n\n"
    "Flags:\n"
    "  --diagnose          check only, change nothing\n"
    "  --key K             install key, to re-register (or --key-file F)\n"
    "  --key-file F\n"
    "  --offline           skip the network checks\n"
    "  --root DIR          files under DIR\n"
    "  --json              machine-readable report\n"
    "  -h, --help\n",
    "repair [--diagnose] [--key K] [--offline] [--root DIR] [--json]",
    repair_exec,
};

struct repair_args {
	struct lc_repair_opts o;
	struct secret key;
	bool json;
};

#define RA(f) offsetof(struct repair_args, f)
static const struct cmd_flag repair_flags[] = {
    {"diagnose", CMD_FLAG_BOOL, RA(o.diagnose_only)},
    {"key", CMD_FLAG_KEY, RA(key)},
    {"key-file", CMD_FLAG_KEY_FILE, RA(key)},
    {"offline", CMD_FLAG_BOOL, RA(o.offline)},
    {"root", CMD_FLAG_STR, RA(o.root)},
    {"json", CMD_FLAG_BOOL, RA(json)},
};

static int repair_exec(const struct cmd_entry *self, int argc, char **argv)
{
	struct repair_args a = {.o = {.version = vma_build_version}};
	int rc = cmd_parse_flags(self, argc, argv, repair_flags,
	                         sizeof(repair_flags) / sizeof(repair_flags[0]), &a);
	if (rc >= 0)
		return rc;
	struct vm_err err = {0};
	a.o.install_key = a.key.value;
	struct lc_report *r = cmd_lc_begin(self, true);
	if (r == NULL) {
		secret_clear(&a.key);
		return VM_EXIT_RUNTIME;
	}
	rc = lc_repair(&a.o, r, &err);
	secret_clear(&a.key);
	/* the checklist itself says what failed */
	struct cmd_lc_exit how = {.json = a.json, .http = true};
	return cmd_lc_end(self, r, rc, &err, &how);
}
