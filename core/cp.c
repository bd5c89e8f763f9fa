/* Control-plane client (see cp.h): credentials.json, authenticated calls with
 * one retry policy, and the endpoints of docs/control-plane-api.md. Tokens
 * live in struct secret; every buffer that held one is wiped before it goes. */
#include "core/cp.h"

#include <errno.h>
#include <malloc.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>

#include "core/codec.h"
#include "core/fs.h"

extern const char vma_build_version[];

#define CP_DEFAULT_TIMEOUT_MS 30000
#define CP_MAX_BODY           (256 * 1024)
#define CP_RETRY_INITIAL_MS   1000
#define CP_RETRY_MAX_MS       30000

/* --- credentials.json ----------------------------------------------------------------- */

void cp_creds_clear(struct cp_creds *c)
{
	secret_clear(&c->token);
	explicit_bzero(c, sizeof(*c));
}

static bool printable_id(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f || *s == '/')
			return false;
	return true;
}

/* jansson keeps its own copy of every string: wipe a secret one before the
 * document is freed (json_string_value points into the node's buffer). */
static void wipe_json_string(json_t *s)
{
	const char *v = json_string_value(s);
	if (v != NULL)
		explicit_bzero((char *)v, json_string_length(s));
}

int cp_creds_parse(const char *text, size_t len, struct cp_creds *out, struct vm_err *err)
{
	memset(out, 0, sizeof(*out));
	json_error_t je;
	json_t *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
	if (doc == NULL)
		/* No je.text: it may quote the token. */
		return vm_err_set(err, VM_ERR_INVALID, "credentials: not valid JSON (line %d)",
		                  je.line);
	int rc = 0;
	json_t *ver = json_object_get(doc, "version");
	json_t *tokj = json_object_get(doc, "token");
	const char *aid = json_string_value(json_object_get(doc, "agent_id"));
	const char *tid = json_string_value(json_object_get(doc, "tenant_id"));
	const char *tok = json_string_value(tokj);
	size_t toklen = tok ? json_string_length(tokj) : 0;
	if (!json_is_object(doc)) {
		rc = vm_err_set(err, VM_ERR_INVALID, "credentials: expected a JSON object");
	} else if (ver != NULL &&
	           (!json_is_integer(ver) || json_integer_value(ver) != CP_CREDS_VERSION)) {
		rc = vm_err_set(err, VM_ERR_INVALID,
		                "credentials: unsupported version (expected %d)", CP_CREDS_VERSION);
	} else if (aid == NULL || aid[0] == '\0' || strlen(aid) >= sizeof(out->agent_id) ||
	           !printable_id(aid)) {
		rc = vm_err_set(err, VM_ERR_INVALID, "credentials: agent_id missing or invalid");
	} else if (tid != NULL && (strlen(tid) >= sizeof(out->tenant_id) || !printable_id(tid))) {
		rc = vm_err_set(err, VM_ERR_INVALID, "credentials: tenant_id invalid");
	} else if (tok == NULL || toklen == 0 || strlen(tok) != toklen ||
	           strpbrk(tok, "\r\n") != NULL) {
		rc = vm_err_set(err, VM_ERR_INVALID, "credentials: token missing or invalid");
	} else if (toklen > CP_TOKEN_MAX) {
		rc = vm_err_set(err, VM_ERR_INVALID,
		                "credentials: token is %zu bytes, more than the %d allowed", toklen,
		                CP_TOKEN_MAX);
	} else {
		snprintf(out->agent_id, sizeof(out->agent_id), "%s", aid);
		snprintf(out->tenant_id, sizeof(out->tenant_id), "%s", tid ? tid : "");
		out->deregistered = json_is_true(json_object_get(doc, "deregistered"));
		const char *u = json_string_value(json_object_get(doc, "control_plane_url"));
		if (u != NULL && strlen(u) < sizeof(out->control_plane_url))
			snprintf(out->control_plane_url, sizeof(out->control_plane_url), "%s", u);
		rc = secret_set(&out->token, tok, err);
	}
	wipe_json_string(tokj);
	json_decref(doc);
	return rc;
}

int cp_creds_load(const char *path, struct cp_creds *out, struct vm_err *err)
{
	memset(out, 0, sizeof(*out));
	struct secret raw = {0};
	int rc = secret_load_file(&raw, path, err);
	if (rc != 0)
		return rc;
	rc = cp_creds_parse(raw.value ? raw.value : "", raw.len, out, err);
	secret_clear(&raw);
	if (rc != 0) {
		char msg[sizeof(err->msg)];
		snprintf(msg, sizeof(msg), "%s", err->msg);
		vm_err_set(err, VM_ERR_INVALID, "%s: %s", path, msg);
	}
	return rc;
}

/* Dumps o to path (0600, atomic); the text, which holds the token, is wiped. */
static int write_doc(const char *path, json_t *o, struct vm_err *err)
{
	char *text = json_dumps(o, JSON_INDENT(2));
	if (text == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	int rc = fs_write_atomic(path, text, strlen(text), 0600, err);
	explicit_bzero(text, strlen(text));
	free(text);
	return rc;
}

int cp_creds_write(const char *path, const struct cp_creds *c, json_t *extra, struct vm_err *err)
{
	if (c->token.value == NULL || c->token.len > CP_TOKEN_MAX)
		return vm_err_set(err, VM_ERR_INVALID, "credentials: token missing or too long");
	json_t *o = json_object();
	json_t *tok = json_string(c->token.value);
	if (o == NULL || tok == NULL) {
		json_decref(o);
		json_decref(tok);
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	}
	if (extra != NULL)
		json_object_update(o, extra);
	json_object_set_new(o, "version", json_integer(CP_CREDS_VERSION));
	json_object_set_new(o, "agent_id", json_string(c->agent_id));
	json_object_set_new(o, "tenant_id", json_string(c->tenant_id));
	json_object_set_new(o, "token", json_incref(tok));
	if (c->deregistered)
		json_object_set_new(o, "deregistered", json_true());
	else
		json_object_del(o, "deregistered");
	if (c->control_plane_url[0] != '\0')
		json_object_set_new(o, "control_plane_url", json_string(c->control_plane_url));
	int rc = write_doc(path, o, err);
	wipe_json_string(tok);
	json_decref(tok);
	json_decref(o);
	return rc;
}

int cp_creds_mark_deregistered(const char *path, struct vm_err *err)
{
	struct cp_creds c;
	int rc = cp_creds_load(path, &c, err); /* the same rules as every reader */
	cp_creds_clear(&c);
	if (rc != 0)
		return rc;
	struct secret raw = {0};
	if ((rc = secret_load_file(&raw, path, err)) != 0)
		return rc;
	json_t *o = json_loadb(raw.value ? raw.value : "", raw.len, JSON_REJECT_DUPLICATES, NULL);
	secret_clear(&raw);
	if (!json_is_object(o)) {
		json_decref(o);
		return vm_err_set(err, VM_ERR_INVALID, "%s: changed while being read", path);
	}
	json_object_set_new(o, "deregistered", json_true());
	rc = write_doc(path, o, err);
	wipe_json_string(json_object_get(o, "token"));
	json_decref(o);
	return rc;
}

/* --- jansson's memory ------------------------------------------------------------------ */

/* Plain malloc, so that what jansson hands out (json_dumps) is still freed
 * with free() by its callers; jansson's own frees wipe the whole block first.
 * malloc_usable_size is glibc's (and ASan's): the Linux-specific part. */
static void *wiping_malloc(size_t n)
{
	return malloc(n);
}

static void wiping_free(void *p)
{
	if (p == NULL)
		return;
	explicit_bzero(p, malloc_usable_size(p));
	free(p);
}

void cp_json_wipe_on_free(void)
{
	json_set_alloc_funcs(wiping_malloc, wiping_free);
}

/* --- JWT times ------------------------------------------------------------------------ */

int cp_token_times(const char *token, int64_t *iat, int64_t *exp)
{
	*iat = *exp = 0;
	const char *p1 = token ? strchr(token, '.') : NULL;
	const char *p2 = p1 ? strchr(p1 + 1, '.') : NULL;
	if (p2 == NULL || p2 - p1 - 1 > CP_TOKEN_MAX)
		return -VM_ERR_INVALID;
	size_t n = (size_t)(p2 - p1 - 1);
	uint8_t *buf = malloc(b64_decoded_max(n) + 1);
	if (buf == NULL)
		return -VM_ERR_NOMEM;
	long len = b64_decode(p1 + 1, n, buf, 1);
	json_t *j = len > 0 ? json_loadb((const char *)buf, (size_t)len, 0, NULL) : NULL;
	free(buf);
	if (!json_is_object(j)) {
		json_decref(j);
		return -VM_ERR_INVALID;
	}
	json_t *e = json_object_get(j, "exp"), *i = json_object_get(j, "iat");
	*exp = json_is_number(e) ? (int64_t)json_number_value(e) : 0;
	*iat = json_is_number(i) ? (int64_t)json_number_value(i) : 0;
	json_decref(j);
	return 0;
}

/* --- calls ---------------------------------------------------------------------------- */

static int url_join(char *out, size_t cap, const char *base, const char *path)
{
	size_t n = strlen(base);
	while (n > 0 && base[n - 1] == '/')
		n--;
	int w = snprintf(out, cap, "%.*s%s", (int)n, base, path);
	return w < 0 || (size_t)w >= cap ? -1 : 0;
}

void cp_describe(const struct http_resp *resp, char *out, size_t cap)
{
	json_t *o = resp->body ? json_loadb(resp->body, resp->len, 0, NULL) : NULL;
	const char *msg =
	    json_string_value(json_object_get(json_object_get(o, "error"), "message"));
	snprintf(out, cap, "HTTP %ld%s%.200s", resp->status, msg ? ": " : "", msg ? msg : "");
	json_decref(o);
}

static int cp_sleep(void *ctx, uint64_t ms)
{
	const atomic_bool *cancel = ctx;
	/* Relative slices on CLOCK_MONOTONIC, so a cancel (shutdown) is seen
	 * within 100 ms and a wall-clock jump changes nothing. */
	while (ms > 0) {
		if (cancel != NULL && atomic_load(cancel))
			return 1;
		uint64_t slice = ms < 100 ? ms : 100;
		struct timespec ts = {0, (long)slice * 1000000L};
		while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR)
			;
		ms -= slice;
	}
	return cancel != NULL && atomic_load(cancel) ? 1 : 0;
}

int cp_call(const struct cp_opts *o, const char *bearer, const struct cp_creds *who,
            const char *tenant_hdr, const char *method, const char *path, const char *body,
            size_t body_len, const char *const *extra_headers, unsigned attempts,
            struct http_resp *resp, struct vm_err *err)
{
	memset(resp, 0, sizeof(*resp));
	resp->retry_after_s = -1;
	char url[2048];
	if (o->url == NULL || o->url[0] == '\0')
		return vm_err_set(err, VM_ERR_INVALID, "no control-plane URL");
	if (url_join(url, sizeof(url), o->url, path) != 0)
		return vm_err_set(err, VM_ERR_INVALID, "control-plane URL too long");
	size_t blen = bearer ? strlen(bearer) : 0;
	if (blen == 0 || blen > CP_TOKEN_MAX || strpbrk(bearer, "\r\n") != NULL)
		return vm_err_set(err, VM_ERR_INVALID, "no usable token for the control plane");
	size_t alen = blen + sizeof("Authorization: Bearer ");
	char *auth = malloc(alen);
	if (auth == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	snprintf(auth, alen, "Authorization: Bearer %s", bearer);
	char xid[CP_ID_MAX + 16], xten[CP_ID_MAX + 16], ua[64];
	const char *headers[16];
	size_t n = 0;
	headers[n++] = auth;
	headers[n++] = "Content-Type: application/json";
	snprintf(ua, sizeof(ua), "User-Agent: vm-agent/%s", vma_build_version);
	headers[n++] = ua;
	if (who != NULL) {
		snprintf(xid, sizeof(xid), "X-Agent-Id: %s", who->agent_id);
		headers[n++] = xid;
		if (who->tenant_id[0] != '\0')
			tenant_hdr = who->tenant_id;
	}
	if (tenant_hdr != NULL && tenant_hdr[0] != '\0') {
		snprintf(xten, sizeof(xten), "X-Tenant-Id: %s", tenant_hdr);
		headers[n++] = xten;
	}
	for (size_t i = 0; extra_headers != NULL && extra_headers[i] != NULL && n < 15; i++)
		headers[n++] = extra_headers[i];
	headers[n] = NULL;
	struct http_opts ho = {
	    .ca_file = o->ca_file,
	    .proxy = o->proxy,
	    .proxy_credentials_file = o->proxy_credentials_file,
	    .total_timeout_ms = o->timeout_ms ? o->timeout_ms : CP_DEFAULT_TIMEOUT_MS,
	    .max_body = CP_MAX_BODY,
	    .cancel = o->cancel,
	};
	if (ho.total_timeout_ms < HTTP_DEFAULT_CONNECT_MS)
		ho.connect_timeout_ms = ho.total_timeout_ms;
	struct http_retry rt = {
	    .max_attempts = attempts ? attempts : 1,
	    .initial_delay_ms = CP_RETRY_INITIAL_MS,
	    .max_delay_ms = CP_RETRY_MAX_MS,
	    .sleep_fn = cp_sleep,
	    .sleep_ctx = (void *)o->cancel,
	};
	int rc = http_request_retry(&ho, &rt, method, url, headers, body, body_len, resp, err);
	explicit_bzero(auth, alen);
	free(auth);
	return rc;
}

/* --- endpoints ------------------------------------------------------------------------ */

static void copy_str(json_t *o, const char *key, char *dst, size_t cap)
{
	const char *v = json_string_value(json_object_get(o, key));
	snprintf(dst, cap, "%s", v ? v : "");
}

/* A token member of an answer into a secret: bounded, never cut. */
static int take_token(json_t *s, const char *what, struct secret *out, struct vm_err *err)
{
	const char *v = json_string_value(s);
	if (v == NULL || v[0] == '\0')
		return 0;
	int rc = 0;
	if (json_string_length(s) > CP_TOKEN_MAX || strlen(v) != json_string_length(s) ||
	    strpbrk(v, "\r\n") != NULL)
		rc = vm_err_set(err, VM_ERR_INVALID, "%s is invalid or longer than %d bytes", what,
		                CP_TOKEN_MAX);
	else
		rc = secret_set(out, v, err);
	wipe_json_string(s);
	return rc;
}

/* Parses a 2xx body holding secrets; the body is wiped either way. */
static json_t *load_secret_body(struct http_resp *resp)
{
	json_t *o = resp->body ? json_loadb(resp->body, resp->len, 0, NULL) : NULL;
	if (resp->body != NULL)
		explicit_bzero(resp->body, resp->len);
	http_resp_free(resp);
	return o;
}

/* cp_call, then the status must be one of ok (0-terminated; NULL = any
 * 2xx): otherwise an
 * error "<what> refused: HTTP n: message" (VM_ERR_PERM for 401/403) and resp
 * is freed. On success resp holds the answer. */
static int call_checked(const struct cp_opts *o, const char *bearer, const struct cp_creds *who,
                        const char *tenant, const char *method, const char *path, const char *body,
                        unsigned attempts, const long *ok, const char *what, struct http_resp *resp,
                        struct vm_err *err)
{
	int rc = cp_call(o, bearer, who, tenant, method, path, body, body ? strlen(body) : 0, NULL,
	                 attempts, resp, err);
	if (rc != 0) {
		http_resp_free(resp);
		return rc;
	}
	if (ok == NULL && resp->status >= 200 && resp->status <= 299)
		return 0;
	for (; ok != NULL && *ok != 0; ok++)
		if (resp->status == *ok)
			return 0;
	char why[300];
	cp_describe(resp, why, sizeof(why));
	long st = resp->status;
	http_resp_free(resp);
	return vm_err_set(err, st == 401 || st == 403 ? VM_ERR_PERM : VM_ERR_IO, "%s refused: %s",
	                  what, why);
}

static const long ok_created[] = {200, 201, 0};

int cp_register(const struct cp_opts *o, const char *install_key, const char *tenant_id,
                const char *agent_id, const char *version, struct cp_registration *out,
                struct vm_err *err)
{
	memset(out, 0, sizeof(*out));
	struct utsname u;
	char host[256] = "", machine[65] = "";
	if (uname(&u) == 0) {
		snprintf(host, sizeof(host), "%s", u.nodename);
		snprintf(machine, sizeof(machine), "%s", u.machine);
	}
	json_t *req = json_pack("{s:s,s:s,s:s,s:s,s:s}", "tenant_id", tenant_id, "hostname", host,
	                        "version", version, "os", "linux", "arch", machine);
	if (req != NULL && agent_id != NULL && agent_id[0] != '\0')
		json_object_set_new(req, "agent_id", json_string(agent_id));
	char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
	json_decref(req);
	if (body == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	struct http_resp resp;
	/* One attempt: the install key is one-time (docs/control-plane-api.md). */
	int rc = call_checked(o, install_key, NULL, tenant_id, "POST", "/v1/agents/register", body,
	                      1, ok_created, "registration", &resp, err);
	free(body);
	if (rc != 0)
		return rc;
	json_t *doc = load_secret_body(&resp);
	json_t *creds = json_object_get(doc, "credentials"), *piko = json_object_get(doc, "piko");
	copy_str(doc, "agent_id", out->agent_id, sizeof(out->agent_id));
	copy_str(piko, "endpoint", out->piko_endpoint, sizeof(out->piko_endpoint));
	copy_str(piko, "server_url", out->piko_url, sizeof(out->piko_url));
	copy_str(doc, "jwt_issuer", out->jwt_issuer, sizeof(out->jwt_issuer));
	rc = take_token(json_object_get(creds, "token"), "credentials.token", &out->token, err);
	if (rc == 0)
		rc =
		    take_token(json_object_get(piko, "token"), "piko.token", &out->piko_token, err);
	json_t *keys = json_object_get(doc, "jwt_public_keys");
	out->jwt_keys_json = json_is_array(keys) ? json_dumps(keys, JSON_COMPACT) : NULL;
	json_decref(doc);
	if (rc == 0 && (out->agent_id[0] == '\0' || out->token.value == NULL))
		rc = vm_err_set(err, VM_ERR_IO,
		                "registration answer lacks agent_id or credentials.token");
	if (rc != 0)
		cp_registration_clear(out);
	return rc;
}

void cp_registration_clear(struct cp_registration *reg)
{
	free(reg->jwt_keys_json);
	secret_clear(&reg->token);
	secret_clear(&reg->piko_token);
	explicit_bzero(reg, sizeof(*reg));
}

int cp_deregister(const struct cp_opts *o, const struct cp_creds *c, struct vm_err *err)
{
	char path[CP_ID_MAX + 32];
	snprintf(path, sizeof(path), "/v1/agents/%s", c->agent_id);
	static const long done[] = {200, 204, 404, 0}; /* 404: already unknown */
	struct http_resp resp;
	int rc = call_checked(o, c->token.value, c, NULL, "DELETE", path, NULL, 3, done,
	                      "deregistration", &resp, err);
	http_resp_free(&resp);
	return rc;
}

int cp_event(const struct cp_opts *o, const struct cp_creds *c, const char *body_json,
             struct vm_err *err)
{
	char path[CP_ID_MAX + 32];
	snprintf(path, sizeof(path), "/v1/agents/%s/events", c->agent_id);
	struct http_resp resp;
	int rc = cp_call(o, c->token.value, c, NULL, "POST", path, body_json, strlen(body_json),
	                 NULL, 3, &resp, err);
	if (rc == 0 && (resp.status < 200 || resp.status > 299)) {
		char why[300];
		cp_describe(&resp, why, sizeof(why));
		rc = vm_err_set(err,
		                resp.status == 401 || resp.status == 403 ? VM_ERR_PERM : VM_ERR_IO,
		                "event refused: %s", why);
	}
	http_resp_free(&resp);
	return rc;
}

int cp_piko_token(const struct cp_opts *o, const struct cp_creds *c, struct secret *out,
                  int64_t *exp, struct vm_err *err)
{
	*exp = 0;
	char path[CP_ID_MAX + 32];
	snprintf(path, sizeof(path), "/v1/agents/%s/piko-token", c->agent_id);
	struct http_resp resp;
	/* One attempt here: the renewer owns the schedule and backs off itself. */
	int rc = call_checked(o, c->token.value, c, NULL, "POST", path, "{}", 1, ok_created,
	                      "Piko token renewal", &resp, err);
	if (rc != 0)
		return rc;
	json_t *doc = load_secret_body(&resp);
	struct secret tok = {0};
	rc = take_token(json_object_get(doc, "token"), "token", &tok, err);
	json_decref(doc);
	if (rc == 0 && tok.value == NULL)
		rc = vm_err_set(err, VM_ERR_IO, "Piko token renewal: the answer has no token");
	if (rc != 0) {
		secret_clear(&tok);
		return rc;
	}
	int64_t iat;
	(void)cp_token_times(tok.value, &iat, exp);
	secret_clear(out);
	*out = tok;
	return 0;
}
