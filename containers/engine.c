/* The engine client: requests over the unix socket (core/http), the API
 * version from /_ping and /version, error mapping to stable codes, the tenant
 * check, and the container operations. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "containers/containers.h"
#include "core/buf.h"
#include "core/codec.h"
#include "core/http.h"

#define ENGINE_CONNECT_MS 3000
#define ENGINE_CALL_MS    60000
#define ENGINE_PULL_MS    (30 * 60 * 1000)
#define ENGINE_MAX_BODY   (8 * 1024 * 1024)
#define ENGINE_ID_MAX     128

struct ctr_engine {
	bool enabled;
	bool manage_unlabeled;
	char socket[PATH_MAX];
	char tenant[CFG_ID_MAX];
	pthread_mutex_t mu;
	char api[16]; /* "v1.41"; "" until negotiated (again after a failure) */
	bool seen;    /* negotiated once: the engine exists on this host */
};

static int fail(struct ctr_err *err, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(struct ctr_err *err, int status, const char *code, const char *fmt, ...)
{
	err->status = status;
	snprintf(err->code, sizeof(err->code), "%s", code);
	err->path[0] = '\0';
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	return status;
}

struct ctr_engine *ctr_engine_new(const struct cfg *cfg, struct vm_err *err)
{
	struct ctr_engine *e = calloc(1, sizeof(*e));
	if (e == NULL) {
		vm_err_set(err, VM_ERR_NOMEM, "out of memory");
		return NULL;
	}
	e->enabled = cfg->containers.enabled;
	e->manage_unlabeled = cfg->containers.manage_unlabeled;
	snprintf(e->socket, sizeof(e->socket), "%s", cfg->containers.socket);
	snprintf(e->tenant, sizeof(e->tenant), "%s", cfg->agent.tenant_id);
	pthread_mutex_init(&e->mu, NULL);
	return e;
}

void ctr_engine_free(struct ctr_engine *e)
{
	if (e == NULL)
		return;
	pthread_mutex_destroy(&e->mu);
	free(e);
}

/* The engine's {"message": ...}, cut to fit. */
static void engine_message(const struct http_resp *r, char *out, size_t cap)
{
	json_t *j = r->body != NULL ? json_loadb(r->body, r->len, 0, NULL) : NULL;
	const char *m = json_string_value(json_object_get(j, "message"));
	snprintf(out, cap, "%.200s", m != NULL ? m : "the engine refused the request");
	json_decref(j);
}

struct call {
	const char *method;
	const char *path; /* after the version prefix, with its query */
	const json_t *body;
	uint64_t timeout_ms;
	int (*on_body)(void *ctx, const char *data, size_t len);
	void *body_ctx;
	bool unversioned;
};

static int raw_call(struct ctr_engine *e, const struct call *c, const char *api,
                    struct http_resp *resp, struct ctr_err *err)
{
	memset(resp, 0, sizeof(*resp));
	char url[2048];
	int n = snprintf(url, sizeof(url), "http://localhost%s%s%s", c->unversioned ? "" : "/",
	                 c->unversioned ? "" : api, c->path);
	if (n < 0 || (size_t)n >= sizeof(url))
		return fail(err, 400, "invalid_request", "request too long");
	char *text = c->body != NULL ? json_dumps(c->body, JSON_COMPACT) : NULL;
	static const char *const json_hdr[] = {"Content-Type: application/json", NULL};
	struct http_opts o = {
	    .connect_timeout_ms = ENGINE_CONNECT_MS,
	    .total_timeout_ms = c->timeout_ms ? c->timeout_ms : ENGINE_CALL_MS,
	    .max_body = ENGINE_MAX_BODY,
	    .proxy = "", /* never through a proxy: it is a local socket */
	    .unix_socket = e->socket,
	    .on_body = c->on_body,
	    .body_ctx = c->body_ctx,
	};
	struct vm_err verr = {0};
	int rc = http_request(&o, c->method, url, text != NULL ? json_hdr : NULL, text,
	                      text != NULL ? strlen(text) : 0, resp, &verr);
	free(text);
	if (rc != 0 && resp->status == 0) {
		pthread_mutex_lock(&e->mu);
		e->api[0] = '\0'; /* negotiate again when it is back */
		pthread_mutex_unlock(&e->mu);
		return fail(err, 503, "engine_unavailable", "the container engine at %s: %s",
		            e->socket, verr.msg);
	}
	if (rc != 0)
		return fail(err, 502, "engine_error", "%s", verr.msg);
	return 0;
}

/* "1.41" → major, minor; 0 on success. */
static int parse_version(const char *s, int *major, int *minor)
{
	return s != NULL && sscanf(s, "%d.%d", major, minor) == 2 ? 0 : -1;
}

/* The API prefix to use, from /_ping (reachable) and /version (ApiVersion). */
static int negotiate(struct ctr_engine *e, char *api, size_t cap, struct ctr_err *err)
{
	if (!e->enabled)
		return fail(err, 503, "engine_unavailable", "containers.enabled is false");
	pthread_mutex_lock(&e->mu);
	snprintf(api, cap, "%s", e->api);
	pthread_mutex_unlock(&e->mu);
	if (api[0] != '\0')
		return 0;
	struct http_resp r;
	struct call ping = {.method = "GET",
	                    .path = "/_ping",
	                    .unversioned = true,
	                    .timeout_ms = ENGINE_CONNECT_MS};
	int rc = raw_call(e, &ping, "", &r, err);
	long st = r.status;
	http_resp_free(&r);
	if (rc != 0)
		return rc;
	if (st != 200)
		return fail(err, 503, "engine_unavailable", "the engine's /_ping answered %ld", st);
	struct call ver = {.method = "GET",
	                   .path = "/version",
	                   .unversioned = true,
	                   .timeout_ms = ENGINE_CONNECT_MS};
	if ((rc = raw_call(e, &ver, "", &r, err)) != 0)
		return rc;
	json_t *j = r.status == 200 ? json_loadb(r.body, r.len, 0, NULL) : NULL;
	http_resp_free(&r);
	int maj = 0, min = 0;
	if (parse_version(json_string_value(json_object_get(j, "ApiVersion")), &maj, &min) != 0) {
		json_decref(j);
		return fail(err, 503, "engine_unavailable",
		            "the engine's /version has no ApiVersion");
	}
	json_decref(j);
	if (maj > CTR_API_MAX_MAJOR || (maj == CTR_API_MAX_MAJOR && min > CTR_API_MAX_MINOR)) {
		maj = CTR_API_MAX_MAJOR;
		min = CTR_API_MAX_MINOR;
	}
	if (maj < 1 || (maj == 1 && min < 24))
		return fail(err, 503, "engine_unavailable", "engine API %d.%d is older than 1.24",
		            maj, min);
	snprintf(api, cap, "v%d.%d", maj, min);
	pthread_mutex_lock(&e->mu);
	snprintf(e->api, sizeof(e->api), "%s", api);
	e->seen = true;
	pthread_mutex_unlock(&e->mu);
	return 0;
}

/* One versioned call: 0 with resp (any status), else an err status. */
static int call(struct ctr_engine *e, const struct call *c, struct http_resp *resp,
                struct ctr_err *err)
{
	memset(resp, 0, sizeof(*resp));
	char api[16];
	int rc = negotiate(e, api, sizeof(api), err);
	return rc != 0 ? rc : raw_call(e, c, api, resp, err);
}

/* A non-2xx answer about a container → our code. */
static int container_error(const struct http_resp *r, const char *id, struct ctr_err *err)
{
	char m[256];
	engine_message(r, m, sizeof(m));
	if (r->status == 404)
		return fail(err, 404, "not_found", "no container %s", id);
	if (r->status == 409)
		return fail(err, 409, "conflict", "%s", m);
	if (r->status >= 400 && r->status < 500)
		return fail(err, 400, "engine_rejected", "%s", m);
	return fail(err, 502, "engine_error", "%s", m);
}

static bool valid_id(const char *id)
{
	size_t n = strlen(id);
	if (n == 0 || n > ENGINE_ID_MAX || id[0] == '.' || id[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = id[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '.' || c == '-'))
			return false;
	}
	return true;
}

/* Ours to touch: labelled with our tenant, or unlabeled when allowed. Another
 * tenant's container is never ours. */
static bool managed(const struct ctr_engine *e, const json_t *labels)
{
	const char *t = json_string_value(json_object_get(labels, CTR_LABEL_TENANT));
	if (t != NULL)
		return strcmp(t, e->tenant) == 0;
	return e->manage_unlabeled;
}

/* Inspects id and checks it is ours: 200 with *out, else an err status. */
static int inspect_managed(struct ctr_engine *e, const char *id, json_t **out, struct ctr_err *err)
{
	*out = NULL;
	if (!valid_id(id))
		return fail(err, 404, "not_found", "no container %.128s", id);
	char path[256];
	snprintf(path, sizeof(path), "/containers/%s/json", id);
	struct call c = {.method = "GET", .path = path};
	struct http_resp r;
	int rc = call(e, &c, &r, err);
	if (rc != 0)
		return rc;
	if (r.status != 200) {
		rc = container_error(&r, id, err);
		http_resp_free(&r);
		return rc;
	}
	json_t *j = json_loadb(r.body, r.len, 0, NULL);
	http_resp_free(&r);
	if (!json_is_object(j)) {
		json_decref(j);
		return fail(err, 502, "engine_error", "the engine's inspect is not JSON");
	}
	if (!managed(e, json_object_get(json_object_get(j, "Config"), "Labels"))) {
		json_decref(j);
		return fail(err, 403, "foreign_container",
		            "container %s is not managed by this agent (no tenant label of ours)",
		            id);
	}
	*out = j;
	return 200;
}

int ctr_inspect(struct ctr_engine *e, const char *id, json_t **out, struct ctr_err *err)
{
	return inspect_managed(e, id, out, err);
}

/* The full id of a container of ours (checked like inspect): 200, else an err status. */
static int managed_id(struct ctr_engine *e, const char *id, char cid[ENGINE_ID_MAX + 1],
                      struct ctr_err *err)
{
	json_t *ins;
	int rc = inspect_managed(e, id, &ins, err);
	if (rc != 200)
		return rc;
	const char *full = json_string_value(json_object_get(ins, "Id"));
	if (full == NULL || strlen(full) > ENGINE_ID_MAX)
		rc = fail(err, 502, "engine_error", "the engine's inspect has no usable Id");
	else
		snprintf(cid, ENGINE_ID_MAX + 1, "%s", full);
	json_decref(ins);
	return rc;
}

static json_t *summary(const json_t *c)
{
	json_t *names = json_object_get(c, "Names");
	const char *name = json_string_value(json_array_get(names, 0));
	if (name != NULL && name[0] == '/')
		name++;
	return json_pack("{s:O?, s:s?, s:O?, s:O?, s:O?, s:O?, s:O?, s:O?}", "id",
	                 json_object_get(c, "Id"), "name", name, "image",
	                 json_object_get(c, "Image"), "state", json_object_get(c, "State"),
	                 "status", json_object_get(c, "Status"), "created",
	                 json_object_get(c, "Created"), "labels", json_object_get(c, "Labels"),
	                 "ports", json_object_get(c, "Ports"));
}

int ctr_list(struct ctr_engine *e, bool all, const char *label, const char *state, json_t **out,
             struct ctr_err *err)
{
	*out = NULL;
	json_t *f = json_object(), *labels = json_array();
	char tl[CFG_ID_MAX + 64];
	if (!e->manage_unlabeled) {
		snprintf(tl, sizeof(tl), "%s=%s", CTR_LABEL_TENANT, e->tenant);
		json_array_append_new(labels, json_string(tl));
	}
	if (label != NULL && label[0] != '\0')
		json_array_append_new(labels, json_string(label));
	if (json_array_size(labels) > 0)
		json_object_set(f, "label", labels);
	json_decref(labels);
	if (state != NULL && state[0] != '\0')
		json_object_set_new(f, "status", json_pack("[s]", state));
	char *ftext = json_dumps(f, JSON_COMPACT);
	json_decref(f);
	char fq[1536], path[1800];
	if (ftext == NULL || url_query_escape(ftext, fq, sizeof(fq)) != 0) {
		free(ftext);
		return fail(err, 400, "invalid_request", "filters too long");
	}
	free(ftext);
	snprintf(path, sizeof(path), "/containers/json?all=%s&filters=%s", all ? "true" : "false",
	         fq);
	struct call c = {.method = "GET", .path = path};
	struct http_resp r;
	int rc = call(e, &c, &r, err);
	if (rc != 0)
		return rc;
	if (r.status != 200) {
		rc = container_error(&r, "", err);
		http_resp_free(&r);
		return rc;
	}
	json_t *j = json_loadb(r.body, r.len, 0, NULL);
	http_resp_free(&r);
	if (!json_is_array(j)) {
		json_decref(j);
		return fail(err, 502, "engine_error", "the engine's list is not a JSON array");
	}
	json_t *list = json_array();
	size_t i;
	json_t *it;
	json_array_foreach(j, i, it)
	{
		/* the engine filtered; check again (an unlabeled one with manage_unlabeled
		 * false never passes, another tenant's never) */
		if (managed(e, json_object_get(it, "Labels")))
			json_array_append_new(list, summary(it));
	}
	json_decref(j);
	*out = json_pack("{s:o}", "containers", list);
	return 200;
}

static json_t *changed(bool yes, const char *id)
{
	return json_pack("{s:b, s:s}", "changed", yes, "id", id);
}

int ctr_act(struct ctr_engine *e, const char *id, enum ctr_action a, int timeout_s, json_t **out,
            struct ctr_err *err)
{
	char cid[ENGINE_ID_MAX + 1];
	int rc = managed_id(e, id, cid, err);
	if (rc != 200)
		return rc;
	static const char *const verbs[] = {"start", "stop", "restart"};
	char path[256], t[32] = "";
	if (a != CTR_START && timeout_s >= 0)
		snprintf(t, sizeof(t), "?t=%d", timeout_s);
	snprintf(path, sizeof(path), "/containers/%s/%s%s", cid, verbs[a], t);
	struct call c = {.method = "POST",
	                 .path = path,
	                 .timeout_ms =
	                     ENGINE_CALL_MS + (timeout_s > 0 ? (uint64_t)timeout_s : 10) * 1000};
	struct http_resp r;
	if ((rc = call(e, &c, &r, err)) != 0)
		return rc;
	long st = r.status;
	if (st == 204 || st == 304) {
		*out = changed(st == 204, cid);
		rc = 200;
	} else {
		rc = container_error(&r, id, err);
	}
	http_resp_free(&r);
	return rc;
}

int ctr_delete(struct ctr_engine *e, const char *id, bool force, bool volumes, json_t **out,
               struct ctr_err *err)
{
	char cid[ENGINE_ID_MAX + 1];
	int rc = managed_id(e, id, cid, err);
	if (rc != 200)
		return rc;
	char path[256];
	snprintf(path, sizeof(path), "/containers/%s?force=%s&v=%s", cid, force ? "true" : "false",
	         volumes ? "true" : "false");
	struct call c = {.method = "DELETE", .path = path};
	struct http_resp r;
	if ((rc = call(e, &c, &r, err)) != 0)
		return rc;
	if (r.status == 204 || r.status == 200) {
		*out = changed(true, cid);
		rc = 200;
	} else {
		rc = container_error(&r, id, err);
	}
	http_resp_free(&r);
	return rc;
}

int ctr_stats(struct ctr_engine *e, const char *id, json_t **out, struct ctr_err *err)
{
	char cid[ENGINE_ID_MAX + 1];
	int rc = managed_id(e, id, cid, err);
	if (rc != 200)
		return rc;
	char path[256];
	snprintf(path, sizeof(path), "/containers/%s/stats?stream=false", cid);
	struct call c = {.method = "GET", .path = path};
	struct http_resp r;
	if ((rc = call(e, &c, &r, err)) != 0)
		return rc;
	if (r.status == 200) {
		*out = json_loadb(r.body, r.len, 0, NULL);
		rc = *out != NULL ? 200 : fail(err, 502, "engine_error", "stats are not JSON");
	} else {
		rc = container_error(&r, id, err);
	}
	http_resp_free(&r);
	return rc;
}

/* --- image pull: a stream of JSON lines ------------------------------------------ */

struct pull_sink {
	struct buf line;
	ctr_progress_fn progress;
	void *pctx;
	char error[256]; /* the stream's {"error": ...}, when any */
	int64_t last_ms;
	bool stopped; /* the progress callback asked to stop */
};

static void pull_line(struct pull_sink *p, const char *text, size_t len)
{
	json_t *j = json_loadb(text, len, 0, NULL);
	const char *e = json_string_value(json_object_get(j, "error"));
	if (e != NULL)
		snprintf(p->error, sizeof(p->error), "%.200s", e);
	const char *s = json_string_value(json_object_get(j, "status"));
	json_t *d = json_object_get(j, "progressDetail");
	if (s != NULL && p->progress != NULL) {
		json_int_t cur = json_integer_value(json_object_get(d, "current"));
		json_int_t tot = json_integer_value(json_object_get(d, "total"));
		if (p->progress(p->pctx, s, cur > 0 ? (uint64_t)cur : 0,
		                tot > 0 ? (uint64_t)tot : 0))
			p->stopped = true;
	}
	json_decref(j);
}

static int pull_body(void *ctx, const char *data, size_t len)
{
	struct pull_sink *p = ctx;
	if (len == 0) {
		if (p->progress != NULL && p->progress(p->pctx, NULL, 0, 0))
			p->stopped = true;
		return p->stopped;
	}
	for (size_t i = 0; i < len && !p->stopped; i++) {
		if (data[i] != '\n') {
			if (buf_append(&p->line, &data[i], 1) != 0)
				buf_consume(&p->line, p->line.len); /* an absurd line: dropped */
			continue;
		}
		pull_line(p, (const char *)buf_data(&p->line), p->line.len);
		buf_consume(&p->line, p->line.len);
	}
	return p->stopped;
}

int ctr_pull(struct ctr_engine *e, const char *image, ctr_progress_fn progress, void *pctx,
             json_t **out, struct ctr_err *err)
{
	*out = NULL;
	char q[1024], path[1100];
	if (url_query_escape(image, q, sizeof(q)) != 0)
		return fail(err, 400, "invalid_request", "image reference too long");
	snprintf(path, sizeof(path), "/images/create?fromImage=%s", q);
	struct pull_sink p = {.progress = progress, .pctx = pctx};
	buf_init(&p.line, 64 * 1024);
	struct call c = {.method = "POST",
	                 .path = path,
	                 .timeout_ms = ENGINE_PULL_MS,
	                 .on_body = pull_body,
	                 .body_ctx = &p};
	struct http_resp r;
	int rc = call(e, &c, &r, err);
	if (rc == 0 && p.line.len > 0)
		pull_line(&p, (const char *)buf_data(&p.line), p.line.len);
	buf_free(&p.line);
	if (rc == 0 && p.stopped) {
		http_resp_free(&r);
		return fail(err, 499, "canceled",
		            "the pull of %s was stopped (canceled or timed out)", image);
	}
	if (rc != 0)
		return rc;
	if (r.status == 200 && p.error[0] == '\0') {
		*out = json_pack("{s:b, s:s}", "pulled", 1, "image", image);
		rc = 200;
	} else {
		char m[256];
		if (p.error[0] != '\0')
			snprintf(m, sizeof(m), "%s", p.error);
		else
			engine_message(&r, m, sizeof(m));
		rc = r.status >= 500 && p.error[0] == '\0'
		         ? fail(err, 502, "engine_error", "%s", m)
		         : fail(err, 404, "image_not_found", "%s", m);
	}
	http_resp_free(&r);
	return rc;
}

/* --- create ---------------------------------------------------------------------- */

static int create_once(struct ctr_engine *e, const char *name, const json_t *body, json_t **out,
                       struct ctr_err *err)
{
	char path[256];
	snprintf(path, sizeof(path), "/containers/create?name=%s", name);
	struct call c = {.method = "POST", .path = path, .body = body};
	struct http_resp r;
	int rc = call(e, &c, &r, err);
	if (rc != 0)
		return rc;
	char m[256];
	if (r.status == 201) {
		json_t *j = json_loadb(r.body, r.len, 0, NULL);
		*out = json_pack("{s:b, s:O?, s:s}", "changed", 1, "id", json_object_get(j, "Id"),
		                 "name", name);
		json_decref(j);
		rc = 201;
	} else if (r.status == 404) {
		engine_message(&r, m, sizeof(m));
		rc = fail(err, 404, "image_not_found", "%s", m);
	} else if (r.status == 409) {
		engine_message(&r, m, sizeof(m));
		rc = fail(err, 409, "name_conflict", "%s", m);
	} else {
		rc = container_error(&r, name, err);
	}
	http_resp_free(&r);
	return rc;
}

static int create_impl(struct ctr_engine *e, const json_t *spec, const struct ctr_who *who,
                       ctr_progress_fn progress, void *pctx, bool check, json_t **out,
                       struct ctr_err *err)
{
	*out = NULL;
	json_t *canon = NULL, *body = NULL, *ins = NULL;
	bool replace = false, pull_never = false;
	if (ctr_spec_validate(spec, &canon, &replace, &pull_never, err) != 0)
		return err->status;
	const char *name = json_string_value(json_object_get(canon, "name"));
	char hash[65];
	ctr_spec_hash(canon, hash);
	int rc = inspect_managed(e, name, &ins, err);
	if (rc == 403) {
		rc = fail(err, 409, "name_conflict",
		          "the name %s is taken by a container this agent does not manage", name);
		goto out;
	}
	if (rc == 200) {
		json_t *labels = json_object_get(json_object_get(ins, "Config"), "Labels");
		const char *had = json_string_value(json_object_get(labels, CTR_LABEL_SPEC));
		const char *id = json_string_value(json_object_get(ins, "Id"));
		if (had != NULL && strcmp(had, hash) == 0) {
			*out = json_pack("{s:b, s:s?, s:s}", "changed", 0, "id", id, "name", name);
			rc = 200;
			goto out;
		}
		if (!replace) {
			rc = fail(err, 409, "conflict",
			          "container %s exists with another spec (set \"replace\": true)",
			          name);
			goto out;
		}
		if (check) {
			*out = json_pack("{s:b, s:s, s:s?, s:s}", "changed", 1, "would", "replace",
			                 "id", id, "name", name);
			rc = 200;
			goto out;
		}
		json_t *gone = NULL;
		rc = ctr_delete(e, name, true, false, &gone, err);
		json_decref(gone);
		if (rc != 200)
			goto out;
	} else if (rc != 404) {
		goto out;
	} else if (check) {
		*out = json_pack("{s:b, s:s, s:s}", "changed", 1, "would", "create", "name", name);
		rc = 200;
		goto out;
	}
	body = ctr_spec_body(canon, e->tenant, who);
	rc = create_once(e, name, body, out, err);
	if (rc == 404 && strcmp(err->code, "image_not_found") == 0 && !pull_never) {
		json_t *pulled = NULL;
		rc = ctr_pull(e, json_string_value(json_object_get(canon, "image")), progress, pctx,
		              &pulled, err);
		json_decref(pulled);
		if (rc == 200)
			rc = create_once(e, name, body, out, err);
	}
out:
	json_decref(ins);
	json_decref(body);
	json_decref(canon);
	return rc;
}

int ctr_create(struct ctr_engine *e, const json_t *spec, const struct ctr_who *who,
               ctr_progress_fn progress, void *pctx, json_t **out, struct ctr_err *err)
{
	return create_impl(e, spec, who, progress, pctx, false, out, err);
}

int ctr_create_check(struct ctr_engine *e, const json_t *spec, json_t **out, struct ctr_err *err)
{
	return create_impl(e, spec, NULL, NULL, NULL, true, out, err);
}

/* --- logs ------------------------------------------------------------------------ */

struct log_sink {
	bool tty;
	struct buf pending; /* a partial frame */
	ctr_log_sink sink;
	void *sctx;
	bool bad; /* a malformed frame ended the stream */
};

static int log_body(void *ctx, const char *data, size_t len)
{
	struct log_sink *l = ctx;
	if (len == 0)
		return l->sink(l->sctx, "stdout", NULL, 0);
	if (l->tty)
		return l->sink(l->sctx, "stdout", data, len);
	if (buf_append(&l->pending, data, len) != 0) {
		l->bad = true;
		return 1;
	}
	for (;;) {
		struct ctr_log_frame f;
		long n = ctr_log_frame_parse(buf_data(&l->pending), l->pending.len, &f);
		if (n == 0)
			return 0;
		if (n < 0) {
			l->bad = true;
			return 1;
		}
		int stop = f.stream == 0 || f.len == 0 ? 0
		                                       : l->sink(l->sctx,
		                                                 f.stream == 2   ? "stderr"
		                                                 : f.stream == 3 ? "system"
		                                                                 : "stdout",
		                                                 (const char *)f.data, f.len);
		buf_consume(&l->pending, (size_t)n);
		if (stop)
			return 1;
	}
}

int ctr_logs(struct ctr_engine *e, const char *id, const struct ctr_log_opts *o, ctr_log_sink sink,
             void *sctx, struct ctr_err *err)
{
	json_t *ins;
	int rc = inspect_managed(e, id, &ins, err);
	if (rc != 200)
		return rc;
	struct log_sink l = {
	    .tty = json_is_true(json_object_get(json_object_get(ins, "Config"), "Tty")),
	    .sink = sink,
	    .sctx = sctx,
	};
	char path[384], tail[32];
	if (o->tail < 0)
		snprintf(tail, sizeof(tail), "all");
	else
		snprintf(tail, sizeof(tail), "%ld", o->tail);
	snprintf(path, sizeof(path),
	         "/containers/%s/logs?stdout=true&stderr=true&follow=%s&tail=%s&since=%lld",
	         json_string_value(json_object_get(ins, "Id")), o->follow ? "true" : "false", tail,
	         (long long)o->since);
	json_decref(ins);
	buf_init(&l.pending, CTR_LOG_FRAME_MAX + 8);
	struct call c = {.method = "GET",
	                 .path = path,
	                 .timeout_ms = o->follow ? 24ULL * 3600 * 1000 : ENGINE_CALL_MS,
	                 .on_body = log_body,
	                 .body_ctx = &l};
	struct http_resp r;
	rc = call(e, &c, &r, err);
	buf_free(&l.pending);
	if (rc != 0)
		return rc;
	if (r.status == 200 && !l.bad)
		rc = 200;
	else if (l.bad)
		rc = fail(err, 502, "engine_error", "the engine's log stream is malformed");
	else
		rc = container_error(&r, id, err);
	http_resp_free(&r);
	return rc;
}

/* --- health ---------------------------------------------------------------------- */

void ctr_engine_info(struct ctr_engine *e, struct ctr_engine_info *out)
{
	memset(out, 0, sizeof(*out));
	out->enabled = e != NULL && e->enabled;
	if (!out->enabled)
		return;
	pthread_mutex_lock(&e->mu);
	out->seen = e->seen;
	pthread_mutex_unlock(&e->mu);
	struct ctr_err err = {0};
	struct http_resp r;
	struct call ver = {.method = "GET",
	                   .path = "/version",
	                   .unversioned = true,
	                   .timeout_ms = ENGINE_CONNECT_MS};
	if (raw_call(e, &ver, "", &r, &err) != 0) {
		snprintf(out->why, sizeof(out->why), "%s", err.msg);
		return;
	}
	json_t *j = json_loadb(r.body, r.len, 0, NULL);
	http_resp_free(&r);
	snprintf(out->version, sizeof(out->version), "%s",
	         json_string_value(json_object_get(j, "Version")) != NULL
	             ? json_string_value(json_object_get(j, "Version"))
	             : "");
	json_decref(j);
	json_t *list = NULL;
	if (ctr_list(e, true, NULL, NULL, &list, &err) != 200) {
		snprintf(out->why, sizeof(out->why), "%s", err.msg);
		return;
	}
	out->reachable = out->seen = true;
	pthread_mutex_lock(&e->mu);
	snprintf(out->api_version, sizeof(out->api_version), "%s", e->api[0] ? e->api + 1 : "");
	pthread_mutex_unlock(&e->mu);
	size_t i;
	json_t *c;
	json_array_foreach(json_object_get(list, "containers"), i, c)
	{
		const char *s = json_string_value(json_object_get(c, "state"));
		s = s != NULL ? s : "";
		if (strcmp(s, "running") == 0)
			out->running++;
		else if (strcmp(s, "paused") == 0)
			out->paused++;
		else if (strcmp(s, "exited") == 0)
			out->exited++;
		else if (strcmp(s, "created") == 0 || strcmp(s, "configured") == 0)
			out->created++;
		else
			out->other++;
	}
	json_decref(list);
}
