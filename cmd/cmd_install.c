/* vm-agent install: flags → lc_install; the report as text or JSON. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "core/err.h"
#include "core/http.h"
#include "core/secret.h"
#include "lifecycle/lifecycle.h"

static int install_exec(const struct cmd_entry *self, int argc, char **argv);

const struct cmd_entry cmd_install_entry = {
    "install",
    "register this machine and install the agent as a systemd service",
    "Registers with the control plane using the one-time install key, writes\n"
    "/etc/vm-agent/config.yaml and the credentials (0600), creates the state and\n"
    "log directories, places the binary in /usr/local/bin, writes and enables the\n"
    "systemd unit, starts it and waits until it answers. Safe to run again: an\n"
    "installed machine is not registered a second time (unless --reregister).\n"
    "The install key is only sent to the control plane, never written anywhere.\n\n"
    "Flags:\n"
    "  --tenant-id T            tenant this machine belongs to (required)\n"
    "  --key K                  one-time install key (or --key-file F, safer: not in ps)\n"
    "  --key-file F             read the install key from F\n"
    "  --piko-url U             Piko server URL\n"
    "  --control-plane-url C    control-plane base URL\n"
    "  --agent-id ID            ask for this agent id\n"
    "  --ca-file F              CA bundle for the control plane and Piko\n"
    "  --proxy P                HTTP(S) proxy URL\n"
    "  --no-start               install and enable, but do not start\n"
    "  --reregister             register again even with valid credentials\n"
    "  --from-package           the binary is already in /usr/bin (Debian package)\n"
    "  --health-timeout SECS    how long to wait for the agent to answer (default 30)\n"
    "  --root DIR               apply everything under DIR (image building, tests);\n"
    "                           nothing is started and the live systemd is untouched\n"
    "  --json                   machine-readable report\n"
    "  -h, --help\n",
    "install --tenant-id T --key K --piko-url U --control-plane-url C [flags]",
    install_exec,
};

enum {
	O_TENANT = 256,
	O_KEY,
	O_KEYFILE,
	O_PIKO,
	O_CP,
	O_AGENT,
	O_CA,
	O_PROXY,
	O_NOSTART,
	O_REREG,
	O_PKG,
	O_HT,
	O_ROOT,
	O_JSON
};

static int install_exec(const struct cmd_entry *self, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"tenant-id", required_argument, NULL, O_TENANT},
	    {"key", required_argument, NULL, O_KEY},
	    {"key-file", required_argument, NULL, O_KEYFILE},
	    {"piko-url", required_argument, NULL, O_PIKO},
	    {"control-plane-url", required_argument, NULL, O_CP},
	    {"agent-id", required_argument, NULL, O_AGENT},
	    {"ca-file", required_argument, NULL, O_CA},
	    {"proxy", required_argument, NULL, O_PROXY},
	    {"no-start", no_argument, NULL, O_NOSTART},
	    {"reregister", no_argument, NULL, O_REREG},
	    {"from-package", no_argument, NULL, O_PKG},
	    {"health-timeout", required_argument, NULL, O_HT},
	    {"root", required_argument, NULL, O_ROOT},
	    {"json", no_argument, NULL, O_JSON},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct lc_install_opts o = {.version = vma_build_version};
	struct secret key = {0};
	struct vm_err err = {0};
	bool json = false;
	int rc = -1, c;
	while ((c = cmd_getopt(self, argc, argv, ":h", opts, &rc)) != -1) {
		switch (c) {
		case '?':
			secret_clear(&key);
			return rc;
		case O_TENANT:
			o.tenant_id = optarg;
			break;
		case O_KEY:
		case O_KEYFILE:
			if ((rc = cmd_take_key(self, c == O_KEYFILE, optarg, &key)) != 0)
				return rc;
			break;
		case O_PIKO:
			o.piko_url = optarg;
			break;
		case O_CP:
			o.control_plane_url = optarg;
			break;
		case O_AGENT:
			o.agent_id = optarg;
			break;
		case O_CA:
			o.ca_file = optarg;
			break;
		case O_PROXY:
			o.proxy = optarg;
			break;
		case O_NOSTART:
			o.no_start = true;
			break;
		case O_REREG:
			o.reregister = true;
			break;
		case O_PKG:
			o.from_package = true;
			break;
		case O_HT:
			o.health_timeout_s = (unsigned)strtoul(optarg, NULL, 10);
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
	rc = lc_install(&o, r, &err);
	secret_clear(&key);
	struct cmd_lc_exit how = {
	    .json = json, .http = true, .echo_error = true, .invalid_exit = VM_EXIT_USAGE};
	return cmd_lc_end(self, r, rc, &err, &how);
}
