/* vm-agent version [--json]: what this binary is and what it was built with. */
#include <civetweb.h>
#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/utsname.h>
#include <yaml.h>

#include "cmd/cmd.h"
#include "core/err.h"

static int version_exec(const struct cmd_entry *self, int argc, char **argv);

const struct cmd_entry cmd_version_entry = {
    "version",
    "print version and build information",
    "Prints the version. --json adds the git commit, build time, OS, architecture\n"
    "and the versions of the libraries linked in.\n\n"
    "Flags:\n"
    "  --json    machine-readable output\n"
    "  -h, --help\n",
    "version [--json]",
    version_exec,
};

static int version_exec(const struct cmd_entry *self, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"json", no_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int json = 0, rc = -1, c;
	while ((c = cmd_getopt(self, argc, argv, ":h", opts, &rc)) != -1) {
		if (c == '?')
			return rc;
		json = c == 'j';
	}
	if (optind < argc)
		return cmd_usage_error(self, "unexpected argument '%s'", argv[optind]);

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
