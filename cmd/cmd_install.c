/* vm-agent install: flags → lc_install; the report as text or JSON. */
#include <stddef.h>
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

struct install_args {
	struct lc_install_opts o;
	struct secret key;
	bool json;
};

#define IA(f) offsetof(struct install_args, f)
static const struct cmd_flag install_flags[] = {
    {"tenant-id", CMD_FLAG_STR, IA(o.tenant_id)},
    {"key", CMD_FLAG_KEY, IA(key)},
    {"key-file", CMD_FLAG_KEY_FILE, IA(key)},
    {"piko-url", CMD_FLAG_STR, IA(o.piko_url)},
    {"control-plane-url", CMD_FLAG_STR, IA(o.control_plane_url)},
    {"agent-id", CMD_FLAG_STR, IA(o.agent_id)},
    {"ca-file", CMD_FLAG_STR, IA(o.ca_file)},
    {"proxy", CMD_FLAG_STR, IA(o.proxy)},
    {"no-start", CMD_FLAG_BOOL, IA(o.no_start)},
    {"reregister", CMD_FLAG_BOOL, IA(o.reregister)},
    {"from-package", CMD_FLAG_BOOL, IA(o.from_package)},
    {"health-timeout", CMD_FLAG_SECONDS, IA(o.health_timeout_s)},
    {"root", CMD_FLAG_STR, IA(o.root)},
    {"json", CMD_FLAG_BOOL, IA(json)},
};

static int install_exec(const struct cmd_entry *self, int argc, char **argv)
{
	struct install_args a = {.o = {.version = vma_build_version}};
	int rc = cmd_parse_flags(self, argc, argv, install_flags,
	                         sizeof(install_flags) / sizeof(install_flags[0]), &a);
	if (rc >= 0)
		return rc;
	struct vm_err err = {0};
	a.o.install_key = a.key.value;
	struct lc_report *r = cmd_lc_begin(self, true);
	if (r == NULL) {
		secret_clear(&a.key);
		return VM_EXIT_RUNTIME;
	}
	rc = lc_install(&a.o, r, &err);
	secret_clear(&a.key);
	struct cmd_lc_exit how = {
	    .json = a.json, .http = true, .echo_error = true, .invalid_exit = VM_EXIT_USAGE};
	return cmd_lc_end(self, r, rc, &err, &how);
}
