/* /v1/containers and /v1/images/pull: the container operations of
 * containers/ over REST; logs with follow as Server-Sent Events. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "containers/containers.h"
#include "core/time.h"
#include "webhook/internal.h"

#define LOGS_TAIL_DEFAULT 100
#define LOGS_TAIL_MAX     100000
#define LOGS_BODY_MAX     (4 * 1024 * 1024)  /* a non-follow answer's text */
#define LOGS_FOLLOW_MAX_MS (3600LL * 1000)   /* a follow stream's lifetime */
#define LOGS_KEEPALIVE_MS 15000

static struct ctr_engine *engine_or_503(struct wh_req *req)
{
	struct ctr_engine *e = wh_deps_of(req)->containers;
	if (e == NULL)
		wh_reply_error(req, 503, "engine_unavailable", "containers are not enabled");
	return e;
}

static void reply(struct wh_req *req, int status, json_t *out, const struct ctr_err *err)
{
	if (status >= 200 && status < 300) {
		wh_reply_json(req, status, out);
		return;
	}
	json_decref(out);
	if (err->path[0] != '\0') {
		snprintf(req->err_code, sizeof(req->err_code), "%s", err->code);
		wh_reply_json(req, err->status,
		              json_pack("{s:{s:s,s:s,s:s}}", "error", "code", err->code, "message",
		                        err->msg, "path", err->path));
		req->status = err->status;
		return;
	}
	wh_reply_error(req, err->status, err->code, "%s", err->msg);
}

static bool query(const struct wh_req *req, const char *name, char *out, size_t cap)
{
	const char *qs = req->info->query_string;
	out[0] = '\0';
	return qs != NULL && mg_get_var(qs, strlen(qs), name, out, cap) >= 0;
}

static bool query_bool(const struct wh_req *req, const char *name)
{
	char v[8];
	return query(req, name, v, sizeof(v)) && (strcmp(v, "true") == 0 || strcmp(v, "1") == 0);
}

/* A non-negative integer query parameter up to max; def when absent; -2 when bad. */
static long long query_int(const struct wh_req *req, const char *name, long long def,
                           long long max)
{
	char v[24];
	if (!query(req, name, v, sizeof(v)))
		return def;
	char *end;
	long long n = strtoll(v, &end, 10);
	return v[0] == '\0' || *end != '\0' || n < 0 || n > max ? -2 : n;
}

static void bad_query(struct wh_req *req, const char *name, const char *why)
{
	snprintf(req->err_code, sizeof(req->err_code), "invalid_request");
	char m[128];
	snprintf(m, sizeof(m), "%s: %s", name, why);
	wh_reply_json(req, 400,
	              json_pack("{s:{s:s,s:s,s:s}}", "error", "code", "invalid_request", "message",
	                        m, "path", name));
	req->status = 400;
}

void wh_api_containers_list(struct wh_req *req)
{
	struct ctr_engine *e = engine_or_503(req);
	if (e == NULL)
		return;
	char label[512], state[32];
	query(req, "label", label, sizeof(label));
	query(req, "state", state, sizeof(state));
	static const char *const states[] = {"",       "created", "restarting", "running",
	                                     "paused", "exited",  "dead"};
	bool ok = false;
	for (size_t i = 0; i < sizeof(states) / sizeof(states[0]) && !ok; i++)
		ok = strcmp(state, states[i]) == 0;
	if (!ok) {
		bad_query(req, "state", "created, restarting, running, paused, exited or dead");
		return;
	}
	struct ctr_err err = {0};
	json_t *out = NULL;
	int st = ctr_list(e, query_bool(req, "all"), label, state, &out, &err);
	reply(req, st, out, &err);
}

void wh_api_container_get(struct wh_req *req)
{
	struct ctr_engine *e = engine_or_503(req);
	if (e == NULL)
		return;
	struct ctr_err err = {0};
	json_t *out = NULL;
	int st = ctr_inspect(e, req->params[0], &out, &err);
	reply(req, st, out, &err);
}

void wh_api_container_stats(struct wh_req *req)
{
	struct ctr_engine *e = engine_or_503(req);
	if (e == NULL)
		return;
	struct ctr_err err = {0};
	json_t *out = NULL;
	int st = ctr_stats(e, req->params[0], &out, &err);
	reply(req, st, out, &err);
}

static json_t *read_json(struct wh_req *req)
{
	char *body = NULL;
	size_t len = 0;
	if (wh_read_body(req, &body, &len) != 0)
		return NULL;
	json_error_t je;
	json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
	free(body);
	if (j == NULL)
		bad_query(req, "$", "the body is not valid JSON");
	return j;
}

void wh_api_container_create(struct wh_req *req)
{
	struct ctr_engine *e = engine_or_503(req);
	if (e == NULL)
		return;
	json_t *spec = read_json(req);
	if (spec == NULL)
		return;
	struct ctr_who who = {.sub = req->claims.sub, .probe_id = ""};
	struct ctr_err err = {0};
	json_t *out = NULL;
	int st = ctr_create(e, spec, &who, NULL, NULL, &out, &err);
	json_decref(spec);
	reply(req, st, out, &err);
}

static void act(struct wh_req *req, enum ctr_action a)
{
	struct ctr_engine *e = engine_or_503(req);
	if (e == NULL)
		return;
	long long t = query_int(req, "timeout", -1, 3600);
	if (t == -2) {
		bad_query(req, "timeout", "seconds, 0..3600");
		return;
	}
	struct ctr_err err = {0};
	json_t *out = NULL;
	int st = ctr_act(e, req->params[0], a, (int)t, &out, &err);
	reply(req, st, out, &err);
}

void wh_api_container_start(struct wh_req *req)
{
	act(req, CTR_START);
}

void wh_api_container_stop(struct wh_req *req)
{
	act(req, CTR_STOP);
}

void wh_api_container_restart(struct wh_req *req)
{
	act(req, CTR_RESTART);
}

void wh_api_container_delete(struct wh_req *req)
{
	struct ctr_engine *e = engine_or_503(req);
	if (e == NULL)
		return;
	struct ctr_err err = {0};
	json_t *out = NULL;
	int st = ctr_delete(e, req->params[0], query_bool(req, "force"),
	                    query_bool(req, "volumes"), &out, &err);
	reply(req, st, out, &err);
}

void wh_api_image_pull(struct wh_req *req)
{
	struct ctr_engine *e = engine_or_503(req);
	if (e == NULL)
		return;
	json_t *j = read_json(req);
	if (j == NULL)
		return;
	const char *image = json_string_value(json_object_get(j, "image"));
	if (image == NULL || image[0] == '\0' || strlen(image) > 255 || json_object_size(j) != 1) {
		json_decref(j);
		bad_query(req, "image", "required (and the only field): an image reference");
		return;
	}
	struct ctr_err err = {0};
	json_t *out = NULL;
	int st = ctr_pull(e, image, NULL, NULL, &out, &err);
	json_decref(j);
	reply(req, st, out, &err);
}

/* --- logs ------------------------------------------------------------------------ */

/* Non-follow: the lines, in order, bounded. */
struct logs_collect {
	json_t *lines;
	size_t bytes;
	bool truncated;
};

static int collect(void *ctx, const char *stream, const char *data, size_t len)
{
	struct logs_collect *c = ctx;
	if (len == 0)
		return 0;
	if (c->bytes + len > LOGS_BODY_MAX) {
		c->truncated = true;
		return 1;
	}
	c->bytes += len;
	json_t *o = json_object();
	json_object_set_new(o, "stream", json_string(stream));
	/* text as-is when it is UTF-8; else the bytes are cut to what jansson takes */
	json_t *t = json_stringn(data, len);
	json_object_set_new(o, "text", t != NULL ? t : json_string("\xef\xbf\xbd"));
	json_array_append_new(c->lines, o);
	return 0;
}

/* Follow: each chunk is an SSE event; the stream ends when the container
 * stops (the engine closes it), the client goes, the agent stops, or after
 * LOGS_FOLLOW_MAX_MS. */
struct logs_sse {
	struct wh_req *req;
	int64_t end_ms, last_ms;
	uint64_t seq;
	bool gone;
};

static int sse_send(struct logs_sse *s, const char *type, json_t *data)
{
	char *text = json_dumps(data, JSON_COMPACT);
	json_decref(data);
	if (text == NULL)
		return 0;
	size_t n = strlen(text) + 96;
	char *buf = malloc(n);
	int rc = -1;
	if (buf != NULL) {
		int len = snprintf(buf, n, "id: %" PRIu64 "\nevent: %s\ndata: %s\n\n", ++s->seq, type,
		                   text);
		rc = mg_send_chunk(s->req->conn, buf, (unsigned)len) > 0 ? 0 : -1;
	}
	free(buf);
	free(text);
	s->last_ms = time_mono_ms();
	if (rc != 0)
		s->gone = true;
	return rc;
}

static int follow(void *ctx, const char *stream, const char *data, size_t len)
{
	struct logs_sse *s = ctx;
	int64_t now = time_mono_ms();
	if (wh_stopping(s->req) || now >= s->end_ms)
		return 1;
	if (len == 0) {
		if (now - s->last_ms < LOGS_KEEPALIVE_MS)
			return 0;
		s->last_ms = now;
		if (mg_send_chunk(s->req->conn, ": keepalive\n\n", 13) <= 0) {
			s->gone = true;
			return 1;
		}
		return 0;
	}
	json_t *t = json_stringn(data, len);
	json_t *o = json_pack("{s:s, s:o}", "stream", stream, "text",
	                      t != NULL ? t : json_string("\xef\xbf\xbd"));
	return sse_send(s, "log", o) != 0 ? 1 : 0;
}

void wh_api_container_logs(struct wh_req *req)
{
	struct ctr_engine *e = engine_or_503(req);
	if (e == NULL)
		return;
	long long tail = query_int(req, "tail", LOGS_TAIL_DEFAULT, LOGS_TAIL_MAX);
	long long since = query_int(req, "since", 0, INT64_MAX / 2);
	char tv[8];
	if (query(req, "tail", tv, sizeof(tv)) && strcmp(tv, "all") == 0)
		tail = -1;
	if (tail == -2) {
		bad_query(req, "tail", "a line count 0..100000 or \"all\"");
		return;
	}
	if (since == -2) {
		bad_query(req, "since", "unix seconds");
		return;
	}
	struct ctr_log_opts o = {.tail = (long)tail, .since = since, .follow = query_bool(req, "follow")};
	struct ctr_err err = {0};
	if (!o.follow) {
		struct logs_collect c = {.lines = json_array()};
		int st = ctr_logs(e, req->params[0], &o, collect, &c, &err);
		if (st == 200)
			reply(req, 200,
			      json_pack("{s:o, s:b}", "lines", c.lines, "truncated", c.truncated),
			      &err);
		else {
			json_decref(c.lines);
			reply(req, st, NULL, &err);
		}
		return;
	}
	/* the checks (exists, ours) before the stream's 200 */
	json_t *ins = NULL;
	int st = ctr_inspect(e, req->params[0], &ins, &err);
	json_decref(ins);
	if (st != 200) {
		reply(req, st, NULL, &err);
		return;
	}
	mg_printf(req->conn, "HTTP/1.1 200 OK\r\n"
	                     "Content-Type: text/event-stream\r\n"
	                     "Cache-Control: no-store\r\n"
	                     "X-Accel-Buffering: no\r\n"
	                     "Transfer-Encoding: chunked\r\n\r\n");
	req->status = 200;
	struct logs_sse s = {.req = req, .end_ms = time_mono_ms() + LOGS_FOLLOW_MAX_MS,
	                     .last_ms = time_mono_ms()};
	st = ctr_logs(e, req->params[0], &o, follow, &s, &err);
	if (!s.gone) {
		json_t *end = st == 200 ? json_pack("{s:s}", "reason", "ended")
		                        : json_pack("{s:{s:s, s:s}}", "error", "code", err.code,
		                                    "message", err.msg);
		sse_send(&s, "end", end);
		mg_write(req->conn, "0\r\n\r\n", 5);
	}
}
