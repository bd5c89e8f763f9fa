/* vm-agent install: flags → lc_install; the report as text or JSON. */
#include <stddef.h>

#include "cmd/cmd.h"
#include "core/err.h"
#include "core/secret.h"
#include "lifecycle/lifecycle.h"

struct install_args {
	struct lc_install_opts o;
	struct secret key;
	bool json;
};

#define IA(f) offsetof(struct install_args, f)
static const struct cmd_flag install_flags[] = {
    {"tenant-id", 0, CMD_FLAG_STR, IA(o.tenant_id), "T",
     "tenant this machine belongs to (required)"},
    {"key", 0, CMD_FLAG_KEY, IA(key), "K",
     "one-time install key (or --key-file F, safer: not in ps)"},
    {"key-file", 0, CMD_FLAG_KEY_FILE, IA(key), "F", "read the install key from F"},
    {"piko-url", 0, CMD_FLAG_STR, IA(o.piko_url), "U", "Piko server URL"},
    {"control-plane-url", 0, CMD_FLAG_STR, IA(o.control_plane_url), "C", "control-plane base URL"},
    {"agent-id", 0, CMD_FLAG_STR, IA(o.agent_id), "ID", "ask for this agent id"},
    {"ca-file", 0, CMD_FLAG_STR, IA(o.ca_file), "F", "CA bundle for the control plane and Piko"},
    {"proxy", 0, CMD_FLAG_STR, IA(o.proxy), "P", "HTTP(S) proxy URL"},
    {"no-start", 0, CMD_FLAG_BOOL, IA(o.no_start), NULL, "install and enable, but do not start"},
    {"reregister", 0, CMD_FLAG_BOOL, IA(o.reregister), NULL,
     "register again even with valid credentials"},
    {"from-package", 0, CMD_FLAG_BOOL, IA(o.from_package), NULL,
     "the binary is already in /usr/bin (Debian package)"},
    {"health-timeout", 0, CMD_FLAG_SECONDS, IA(o.health_timeout_s), "SECS",
     "how long to wait for the agent to answer (default 30)"},
    {"root", 0, CMD_FLAG_STR, IA(o.root), "DIR",
     "apply everything under DIR (image building, tests);\n"
     "nothing is started and the live systemd is untouched"},
    {"json", 0, CMD_FLAG_BOOL, IA(json), NULL, "machine-readable report"},
};

static int install_run(const void *o, struct lc_report *r, struct vm_err *err)
{
	return lc_install(o, r, err);
}

static int install_exec(const struct cmd_entry *self, void *args)
{
	struct install_args *a = args;
	a->o.version = vma_build_version;
	a->o.install_key = a->key.value;
	struct cmd_lc_exit how = {
	    .json = a->json, .http = true, .echo_error = true, .invalid_exit = VM_EXIT_USAGE};
	return cmd_lc_run(self, install_run, &a->o, &how);
}

const struct cmd_entry cmd_install_entry = {
    "install",
    "register this machine and install the agent as a systemd service",
    "install --tenant-id T --key K --piko-url U --control-plane-url C [flags]",
    "Registers with the control plane using the one-time install key, writes\n"
    "/etc/vm-agent/config.yaml and the credentials (0600), creates the state and\n"
    "log directories, places the binary in /usr/local/bin, writes and enables the\n"
    "systemd unit, starts it and waits until it answers. Safe to run again: an\n"
    "installed machine is not registered a second time (unless --reregister).\n"
    "The install key is only sent to the control plane, never written anywhere.\n",
    NULL,
    CMD_TABLE(install_flags),
    sizeof(struct install_args),
    install_exec,
};
