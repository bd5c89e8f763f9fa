/* vm-agent repair: --diagnose prints the checklist; without it, fixes. */
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

enum { O_DIAG = 256, O_KEY, O_KEYFILE, O_OFFLINE, O_ROOT, O_JSON };

static int repair_exec(const struct cmd_entry *self, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"diagnose", no_argument, NULL, O_DIAG},
	    {"key", required_argument, NULL, O_KEY},
	    {"key-file", required_argument, NULL, O_KEYFILE},
	    {"offline", no_argument, NULL, O_OFFLINE},
	    {"root", required_argument, NULL, O_ROOT},
	    {"json", no_argument, NULL, O_JSON},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct lc_repair_opts o = {.version = vma_build_version};
	struct secret key = {0};
	struct vm_err err = {0};
	bool json = false;
	int rc = -1, c;
	while ((c = cmd_getopt(self, argc, argv, ":h", opts, &rc)) != -1) {
		switch (c) {
		case '?':
			secret_clear(&key);
			return rc;
		case O_DIAG:
			o.diagnose_only = true;
			break;
		case O_KEY:
		case O_KEYFILE:
			if ((rc = cmd_take_key(self, c == O_KEYFILE, optarg, &key)) != 0)
				return rc;
			break;
		case O_OFFLINE:
			o.offline = true;
			break;
		case O_ROOT:
			o.root = optarg;
			break;
		case O_JSON:
			json = true;
			break;
		}
	}
	if (optind < argc) {
		secret_clear(&key);
		return cmd_usage_error(self, "unexpected argument '%s'", argv[optind]);
	}
	o.install_key = key.value;
	struct lc_report *r = cmd_lc_begin(self, true);
	if (r == NULL) {
		secret_clear(&key);
		return VM_EXIT_RUNTIME;
	}
	rc = lc_repair(&o, r, &err);
	secret_clear(&key);
	/* the checklist itself says what failed */
	struct cmd_lc_exit how = {.json = json, .http = true};
	return cmd_lc_end(self, r, rc, &err, &how);
}
