/* Control-plane calls made by the lifecycle commands (register, deregister,
 * events) and downloads, over core/http. The install key and the agent token
 * only ever go into an Authorization header, which is zeroed after use. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "core/codec.h"
#include "core/http.h"
#include "lifecycle/internal.h"

#define CP_TIMEOUT_MS       30000
#define CP_MAX_BODY         (256 * 1024)
#define DOWNLOAD_TIMEOUT_MS (15 * 60 * 1000)

static void http_opts_of(const struct lc_cp_opts *cp, struct http_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->ca_file = cp->ca_file;
	o->proxy = cp->proxy;
	o->proxy_credentials_file = cp->proxy_credentials_file;
	o->total_timeout_ms = CP_TIMEOUT_MS;
	o->max_body = CP_MAX_BODY;
	o->user_agent = "vm-agent";
}

static int url_join(char *out, size_t cap, const char *base, const char *path)
{
	size_t n = strlen(base);
	while (n > 0 && base[n - 1] == '/')
		n--;
	if (snprintf(out, cap, "%.*s%s", (int)n, base, path) >= (int)cap)
		return -1;
	return 0;
}

/* The message of an {"error":{…}} answer, or a short status line. */
static void describe_answer(const struct http_resp *resp, char *out, size_t cap)
{
	json_t *o = resp->body ? json_loadb(resp->body, resp->len, 0, NULL) : NULL;
	const char *msg =
	    json_string_value(json_object_get(json_object_get(o, "error"), "message"));
	snprintf(out, cap, "HTTP %ld%s%s", resp->status, msg ? ": " : "", msg ? msg : "");
	json_decref(o);
}

static int call(const struct lc_cp_opts *cp, const char *method, const char *path,
                const char *bearer, const char *agent_id, const char *tenant_id, const char *body,
                struct http_resp *resp, struct vm_err *err)
{
	char url[1024];
	if (cp->url == NULL || cp->url[0] == '\0')
		return vm_err_set(err, VM_ERR_INVALID, "no control-plane URL");
	if (url_join(url, sizeof(url), cp->url, path) != 0)
		return vm_err_set(err, VM_ERR_INVALID, "control-plane URL too long");
	char auth[8300], xid[200], xten[200];
	const char *headers[6];
	size_t n = 0;
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", bearer);
	headers[n++] = auth;
	headers[n++] = "Content-Type: application/json";
	if (agent_id != NULL) {
		snprintf(xid, sizeof(xid), "X-Agent-Id: %s", agent_id);
		headers[n++] = xid;
	}
	if (tenant_id != NULL) {
		snprintf(xten, sizeof(xten), "X-Tenant-Id: %s", tenant_id);
		headers[n++] = xten;
	}
	headers[n] = NULL;
	struct http_opts o;
	http_opts_of(cp, &o);
	int rc = http_request(&o, method, url, headers, body, body ? strlen(body) : 0, resp, err);
	explicit_bzero(auth, sizeof(auth));
	return rc;
}

static void copy_str(json_t *o, const char *key, char *dst, size_t cap)
{
	const char *v = json_string_value(json_object_get(o, key));
	snprintf(dst, cap, "%s", v ? v : "");
}

int lc_cp_register(const struct lc_cp_opts *cp, const char *install_key, const char *tenant_id,
                   const char *agent_id, const char *version, struct lc_registration *out,
                   struct vm_err *err)
{
	memset(out, 0, sizeof(*out));
	struct utsname u;
	char host[256] = "";
	if (uname(&u) == 0)
		snprintf(host, sizeof(host), "%s", u.nodename);
	json_t *req = json_pack("{s:s,s:s,s:s,s:s,s:s}", "tenant_id", tenant_id, "hostname", host,
	                        "version", version, "os", "linux", "arch", u.machine);
	if (req != NULL && agent_id != NULL && agent_id[0] != '\0')
		json_object_set_new(req, "agent_id", json_string(agent_id));
	char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
	json_decref(req);
	if (body == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	struct http_resp resp;
	int rc =
	    call(cp, "POST", "/v1/agents/register", install_key, NULL, tenant_id, body, &resp, err);
	free(body);
	if (rc != 0) {
		http_resp_free(&resp);
		return rc;
	}
	if (resp.status != 200 && resp.status != 201) {
		char why[300];
		describe_answer(&resp, why, sizeof(why));
		http_resp_free(&resp);
		return vm_err_set(
		    err, resp.status == 401 || resp.status == 403 ? VM_ERR_PERM : VM_ERR_IO,
		    "registration refused: %s", why);
	}
	json_t *o = json_loadb(resp.body ? resp.body : "", resp.len, 0, NULL);
	if (resp.body != NULL)
		explicit_bzero(resp.body, resp.len);
	http_resp_free(&resp);
	json_t *creds = json_object_get(o, "credentials"), *piko = json_object_get(o, "piko");
	copy_str(o, "agent_id", out->agent_id, sizeof(out->agent_id));
	copy_str(creds, "token", out->token, sizeof(out->token));
	copy_str(piko, "endpoint", out->piko_endpoint, sizeof(out->piko_endpoint));
	copy_str(piko, "token", out->piko_token, sizeof(out->piko_token));
	copy_str(piko, "server_url", out->piko_url, sizeof(out->piko_url));
	copy_str(o, "jwt_issuer", out->jwt_issuer, sizeof(out->jwt_issuer));
	json_t *keys = json_object_get(o, "jwt_public_keys");
	out->jwt_keys_json = json_is_array(keys) ? json_dumps(keys, JSON_COMPACT) : NULL;
	json_decref(o);
	if (out->agent_id[0] == '\0' || out->token[0] == '\0') {
		lc_registration_clear(out);
		return vm_err_set(err, VM_ERR_IO,
		                  "registration answer lacks agent_id or "
		                  "credentials.token");
	}
	return 0;
}

void lc_registration_clear(struct lc_registration *reg)
{
	free(reg->jwt_keys_json);
	explicit_bzero(reg, sizeof(*reg));
}

int lc_cp_deregister(const struct lc_cp_opts *cp, const struct lc_creds *c, struct vm_err *err)
{
	char path[256];
	snprintf(path, sizeof(path), "/v1/agents/%s", c->agent_id);
	struct http_resp resp;
	int rc = call(cp, "DELETE", path, c->token, c->agent_id, c->tenant_id, NULL, &resp, err);
	if (rc == 0 && resp.status != 200 && resp.status != 204 && resp.status != 404) {
		char why[300];
		describe_answer(&resp, why, sizeof(why));
		rc = vm_err_set(err, VM_ERR_IO, "deregistration refused: %s", why);
	}
	http_resp_free(&resp);
	return rc;
}

int lc_cp_event(const struct lc_cp_opts *cp, const struct lc_creds *c, const char *body_json,
                struct vm_err *err)
{
	char path[256];
	snprintf(path, sizeof(path), "/v1/agents/%s/events", c->agent_id);
	struct http_resp resp;
	int rc = call(cp, "POST", path, c->token, c->agent_id, c->tenant_id, body_json, &resp, err);
	if (rc == 0 && (resp.status < 200 || resp.status > 299)) {
		char why[300];
		describe_answer(&resp, why, sizeof(why));
		rc = vm_err_set(err, VM_ERR_IO, "event refused: %s", why);
	}
	http_resp_free(&resp);
	return rc;
}

/* The cap is counted while copying: st_size means nothing for /proc files
 * (0) and may change under us. */
static int copy_local(const char *src, const char *path, size_t max, struct vm_err *err)
{
	return fs_copy_file(src, path, 0600, max, err);
}

int lc_fetch(const struct lc_cp_opts *cp, const char *url, const char *path, size_t max,
             struct vm_err *err)
{
	if (strncmp(url, "file://", 7) == 0)
		return copy_local(url + 7, path, max, err);
	if (url[0] == '/')
		return copy_local(url, path, max, err);
	if (!url_is_http(url))
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
		describe_answer(&resp, why, sizeof(why));
		rc = vm_err_set(err, VM_ERR_IO, "download %s: %s", url_shown(url).s, why);
	}
	http_resp_free(&resp);
	return rc;
}
