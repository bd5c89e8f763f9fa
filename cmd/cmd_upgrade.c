/* vm-agent upgrade: flags → lc_upgrade (download, verify, self-test, swap,
 * health gate, rollback). */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "core/err.h"
#include "lifecycle/lifecycle.h"

struct upgrade_args {
	struct lc_upgrade_opts o;
	bool json;
	const char *request;
};

#define UA(f) offsetof(struct upgrade_args, f)
static const struct cmd_flag upgrade_flags[] = {
    {"version", 0, CMD_FLAG_STR, UA(o.version), "V", "version being installed (required)"},
    {"url", 0, CMD_FLAG_STR, UA(o.url), "URL", "http(s)://, file:// or absolute path (required)"},
    {"checksum", 0, CMD_FLAG_STR, UA(o.checksum), "sha256:HEX",
     "expected sha256 of the download (required)"},
    {"signature-url", 0, CMD_FLAG_STR, UA(o.signature_url), "URL",
     "minisign signature (default: URL.minisig)"},
    {"allow-downgrade", 0, CMD_FLAG_BOOL, UA(o.allow_downgrade), NULL,
     "accept a version older than the installed one"},
    {"self-test-timeout", 0, CMD_FLAG_SECONDS, UA(o.self_test_timeout_s), "SECS",
     "limit for each self-test run (default 10)"},
    {"health-timeout", 0, CMD_FLAG_SECONDS, UA(o.health_timeout_s), "SECS",
     "limit for the health gate (default: upgrade.health_timeout)"},
    {"ca-file", 0, CMD_FLAG_STR, UA(o.ca_file), "F", "CA bundle for the download"},
    {"proxy", 0, CMD_FLAG_STR, UA(o.proxy), "P", "HTTP(S) proxy"},
    {"root", 0, CMD_FLAG_STR, UA(o.root), "DIR", "files under DIR (nothing is restarted)"},
    {"json", 0, CMD_FLAG_BOOL, UA(json), NULL, "machine-readable report"},
    {"request", 0, CMD_FLAG_STR, UA(request), "FILE",
     "read version, URLs and checksum from FILE and remove it (how the agent starts an "
     "upgrade asked for by the API)"},
};

static int upgrade_run(const void *o, struct lc_report *r, struct vm_err *err)
{
	return lc_upgrade(o, r, err);
}

static int upgrade_exec(const struct cmd_entry *self, void *args)
{
	struct upgrade_args *a = args;
	a->o.current_version = vma_build_version;
	a->o.builtin_key = lc_builtin_upgrade_key;
	struct vm_err err = {0};
	struct lc_upgrade_request_buf *rq = NULL;
	if (a->request != NULL) {
		if (a->o.version != NULL || a->o.url != NULL || a->o.checksum != NULL ||
		    a->o.signature_url != NULL)
			return cmd_usage_error(self, "--request replaces --version, --url, "
			                             "--checksum and --signature-url");
		rq = calloc(1, sizeof(*rq));
		if (rq == NULL)
			return VM_EXIT_RUNTIME;
		if (lc_upgrade_request_load(a->request, rq, &err) != 0) {
			fprintf(stderr, "vm-agent upgrade: %s\n", err.msg);
			free(rq);
			return VM_EXIT_RUNTIME;
		}
		a->o.version = rq->version;
		a->o.url = rq->url;
		a->o.checksum = rq->checksum;
		a->o.signature_url = rq->signature_url[0] != '\0' ? rq->signature_url : NULL;
		a->o.allow_downgrade = a->o.allow_downgrade || rq->allow_downgrade;
	}
	if (a->o.version == NULL || a->o.url == NULL || a->o.checksum == NULL)
		return cmd_usage_error(self, "--version, --url and --checksum are required");
	struct cmd_lc_exit how = {.json = a->json, .http = true, .echo_error = true};
	int rc = cmd_lc_run(self, upgrade_run, &a->o, &how);
	if (rq != NULL)
		explicit_bzero(rq, sizeof(*rq));
	free(rq);
	return rc;
}

const struct cmd_entry cmd_upgrade_entry = {
    "upgrade",
    "replace the agent with a signed new version (rollback on failure)",
    "upgrade --version V --url URL --checksum sha256:HEX [--signature-url URL] [flags]",
    "Downloads the new binary next to the installed one, checks its sha256 and\n"
    "its minisign signature (mandatory: by the key compiled into this binary or\n"
    "one in upgrade.public_keys), refuses an older version unless\n"
    "--allow-downgrade, runs the new binary's self-test ('version --json' and\n"
    "'configure --check'), keeps the old binary as vm-agent.prev, swaps\n"
    "atomically, restarts the service and waits until it is healthy. On any\n"
    "failure the previous binary is restored and restarted. An upgrade that is\n"
    "killed half-way is undone at the agent's next start.\n",
    NULL,
    CMD_TABLE(upgrade_flags),
    sizeof(struct upgrade_args),
    upgrade_exec,
};
