/* vm-agent version [--json]: what this binary is and what it was built with. */
#include <civetweb.h>
#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/utsname.h>
#include <yaml.h>

#include "cmd/cmd.h"
#include "core/err.h"

struct version_args {
	bool json;
};

static const struct cmd_flag version_flags[] = {
    {"json", 0, CMD_FLAG_BOOL, offsetof(struct version_args, json), NULL,
     "machine-readable output"},
};

static int version_exec(const struct cmd_entry *self, void *args)
{
	(void)self;
	bool json = ((const struct version_args *)args)->json;
	if (!json) {
		printf("vm-agent %s (%s)\n", vma_build_version, vma_build_commit);
		return VM_EXIT_OK;
	}
	struct utsname u;
	if (uname(&u) != 0)
		return VM_EXIT_RUNTIME;
	const curl_version_info_data *cv = curl_version_info(CURLVERSION_NOW);
	json_t *doc =
	    json_pack("{s:s,s:s,s:s,s:s,s:s,s:{s:s,s:s,s:s,s:s,s:s}}", "version", vma_build_version,
	              "commit", vma_build_commit, "build_time", vma_build_time, "os", u.sysname,
	              "arch", u.machine, "libraries", "libcurl", cv->version, "openssl",
	              OpenSSL_version(OPENSSL_VERSION), "libyaml", yaml_get_version_string(),
	              "jansson", jansson_version_str(), "civetweb", mg_version());
	char *text = doc ? json_dumps(doc, JSON_INDENT(2)) : NULL;
	json_decref(doc);
	if (text == NULL)
		return VM_EXIT_RUNTIME;
	puts(text);
	free(text);
	return VM_EXIT_OK;
}

const struct cmd_entry cmd_version_entry = {
    "version",
    "print version and build information",
    "version [--json]",
    "Prints the version. --json adds the git commit, build time, OS, architecture\n"
    "and the versions of the libraries linked in.\n",
    NULL,
    CMD_TABLE(version_flags),
    sizeof(struct version_args),
    version_exec,
};
