/* vm-agent upgrade: flags → lc_upgrade (download, verify, self-test, swap,
 * health gate, rollback). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "core/err.h"
#include "core/http.h"
#include "lifecycle/lifecycle.h"

static int upgrade_exec(const struct cmd_entry *self, int argc, char **argv);

const struct cmd_entry cmd_upgrade_entry = {
    "upgrade",
    "replace the agent with a signed new version (rollback on failure)",
    "Downloads the new binary next to the installed one, checks its sha256 and\n"
    "its minisign signature (mandatory: by the key compiled into this binary or\n"
    "one in upgrade.public_keys), refuses an older version unless\n"
    "--allow-downgrade, runs the new binary's self-test ('version --json' and\n"
    "'configure --check'), keeps the old binary as vm-agent.prev, swaps\n"
    "atomically, restarts the service and waits until it is healthy. On any\n"
    "failure the previous binary is restored and restarted. An upgrade that is\n"
    "killed half-way is undone at the agent's next start.\n\n"
    "Flags:\n"
    "  --version V              version being installed (required)\n"
    "  --url URL                http(s)://, file:// or absolute path (required)\n"
    "  --checksum sha256:HEX    expected sha256 of the download (required)\n"
    "  --signature-url URL      minisign signature (default: URL.minisig)\n"
    "  --allow-downgrade        accept a version older than the installed one\n"
    "  --self-test-timeout S    limit for each self-test run (default 10)\n"
    "  --health-timeout S       limit for the health gate (default: upgrade.health_timeout)\n"
    "  --ca-file F              CA bundle for the download\n"
    "  --proxy P                HTTP(S) proxy\n"
    "  --root DIR               files under DIR (nothing is restarted)\n"
    "  --json                   machine-readable report\n"
    "  -h, --help\n",
    "upgrade --version V --url URL --checksum sha256:HEX [--signature-url URL] [flags]",
    upgrade_exec,
};

enum { O_VERSION = 256, O_URL, O_SUM, O_SIG, O_DOWN, O_STT, O_HT, O_CA, O_PROXY, O_ROOT, O_JSON };

static int upgrade_exec(const struct cmd_entry *self, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"version", required_argument, NULL, O_VERSION},
	    {"url", required_argument, NULL, O_URL},
	    {"checksum", required_argument, NULL, O_SUM},
	    {"signature-url", required_argument, NULL, O_SIG},
	    {"allow-downgrade", no_argument, NULL, O_DOWN},
	    {"self-test-timeout", required_argument, NULL, O_STT},
	    {"health-timeout", required_argument, NULL, O_HT},
	    {"ca-file", required_argument, NULL, O_CA},
	    {"proxy", required_argument, NULL, O_PROXY},
	    {"root", required_argument, NULL, O_ROOT},
	    {"json", no_argument, NULL, O_JSON},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct lc_upgrade_opts o = {.current_version = vma_build_version,
	                            .builtin_key = lc_builtin_upgrade_key};
	bool json = false;
	int rc = -1, c;
	while ((c = cmd_getopt(self, argc, argv, ":h", opts, &rc)) != -1) {
		switch (c) {
		case '?':
			return rc;
		case O_VERSION:
			o.version = optarg;
			break;
		case O_URL:
			o.url = optarg;
			break;
		case O_SUM:
			o.checksum = optarg;
			break;
		case O_SIG:
			o.signature_url = optarg;
			break;
		case O_DOWN:
			o.allow_downgrade = true;
			break;
		case O_STT:
			o.self_test_timeout_s = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case O_HT:
			o.health_timeout_s = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case O_CA:
			o.ca_file = optarg;
			break;
		case O_PROXY:
			o.proxy = optarg;
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
	if (o.version == NULL || o.url == NULL || o.checksum == NULL)
		return cmd_usage_error(self, "--version, --url and --checksum are required");
	struct vm_err err = {0};
	struct lc_report *r = cmd_lc_begin(self, true);
	if (r == NULL)
		return VM_EXIT_RUNTIME;
	rc = lc_upgrade(&o, r, &err);
	struct cmd_lc_exit how = {.json = json, .http = true, .echo_error = true};
	return cmd_lc_end(self, r, rc, &err, &how);
}
