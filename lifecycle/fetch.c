/* Downloads for upgrades (binary, signature) over core/http with the
 * control-plane client's CA and proxy settings; file:// and paths are copied.
 * Control-plane calls themselves live in core/cp.c. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/codec.h"
#include "core/fs.h"
#include "core/http.h"
#include "lifecycle/internal.h"

#define CP_TIMEOUT_MS       30000
#define DOWNLOAD_TIMEOUT_MS (15 * 60 * 1000)

static void http_opts_of(const struct cp_opts *cp, struct http_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->ca_file = cp->ca_file;
	o->proxy = cp->proxy;
	o->proxy_credentials_file = cp->proxy_credentials_file;
	o->total_timeout_ms = CP_TIMEOUT_MS;
	o->user_agent = "vm-agent";
}

/* The cap is counted while copying: st_size means nothing for /proc files
 * (0) and may change under us. */
static int copy_local(const char *src, const char *path, size_t max, struct vm_err *err)
{
	return fs_copy_file(src, path, 0600, max, err);
}

int lc_fetch(const struct cp_opts *cp, const char *url, const char *path, size_t max,
             struct vm_err *err)
{
	if (strncmp(url, "file://", 7) == 0)
		return copy_local(url + 7, path, max, err);
	if (url[0] == '/')
		return copy_local(url, path, max, err);
	if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
		return vm_err_set(err, VM_ERR_INVALID,
		                  "%s: expected an http(s):// or file:// URL or "
		                  "an absolute path",
		                  url);
	struct http_opts o;
	http_opts_of(cp, &o);
	o.total_timeout_ms = DOWNLOAD_TIMEOUT_MS;
	o.max_body = max;
	o.download_path = path;
	o.follow_redirects = true;
	struct http_resp resp;
	int rc = http_request(&o, "GET", url, NULL, NULL, 0, &resp, err);
	if (rc == -VM_ERR_INVALID) /* over the cap: the transfer stopped there */
		rc = vm_err_set(err, VM_ERR_INVALID,
		                "download %s: larger than %zu bytes (stopped at the cap)",
		                url_shown(url).s, max);
	if (rc == 0 && resp.status != 200) {
		char why[300];
		cp_describe(&resp, why, sizeof(why));
		rc = vm_err_set(err, VM_ERR_IO, "download %s: %s", url_shown(url).s, why);
	}
	http_resp_free(&resp);
	return rc;
}
