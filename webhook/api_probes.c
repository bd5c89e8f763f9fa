/* /v1/probes: submit, read, list, stream events (SSE) and cancel probes. The
 * executor (probe/probe.h) does the work; this file maps it to HTTP. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "probe/probe.h"
#include "webhook/internal.h"

#define LIST_DEFAULT    50
#define LIST_MAX        1000
#define SSE_BATCH       16
#define SSE_WAIT_MS     1000
#define SSE_KEEPALIVE_S 15
#define SSE_MAX_S       (8 * 86400) /* longer than any probe can run (timeout ≤ 7d) */

static struct probe_exec *exec_or_503(struct wh_req *req)
{
	struct probe_exec *ex = wh_deps_of(req)->probe;
	if (ex == NULL)
		wh_reply_error(req, 503, "unavailable", "the probe executor is not running");
	return ex;
}

/* Probe ids are generated here ("p-<hex>-<hex>"): anything else is unknown. */
static bool valid_id(const char *id)
{
	size_t n = strlen(id);
	if (n < 3 || n >= PROBE_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'z') ||
		      id[i] == '-'))
			return false;
	return true;
}

static void reply_invalid(struct wh_req *req, const char *code, const char *path, const char *msg)
{
	snprintf(req->err_code, sizeof(req->err_code), "%s", code);
	wh_reply_json(
	    req, 400,
	    json_pack("{s:{s:s,s:s,s:s}}", "error", "code", code, "message", msg, "path", path));
	req->status = 400;
}

static int admit_audited(void *ctx)
{
	return wh_audit_confirm(ctx);
}

void wh_api_probe_create(struct wh_req *req)
{
	struct probe_exec *ex = exec_or_503(req);
	if (ex == NULL)
		return;
	char *body;
	size_t len;
	if (wh_read_body(req, &body, &len) != 0)
		return;
	struct probe_submit_out out;
	struct vm_err err = {0};
	/* its "started" line is flushed while the accepted record is */
	struct probe_caller who = {req->claims.tenant, req->claims.sub, req->claims.scope,
	                           admit_audited, req};
	int rc = probe_submit(ex, body, len, &who, &out, &err);
	free(body);
	snprintf(req->probe_id, sizeof(req->probe_id), "%s", out.id);
	switch (rc) {
	case PROBE_CREATED:
	case PROBE_EXISTING:
		wh_reply_json(req, rc == PROBE_CREATED ? 202 : 200, out.record);
		return;
	case PROBE_E_INVALID:
		reply_invalid(req, "invalid_request", out.err_path, err.msg);
		return;
	case PROBE_E_TOO_LARGE:
		reply_invalid(req, "output_limit_exceeded", out.err_path, err.msg);
		return;
	case PROBE_E_CONFLICT:
		wh_reply_error(req, 409, "idempotency_conflict", "%s", err.msg);
		return;
	case PROBE_E_FORBIDDEN:
		snprintf(req->err_code, sizeof(req->err_code), "insufficient_scope");
		wh_reply_json(req, 403,
		              json_pack("{s:{s:s,s:s,s:s}}", "error", "code", "insufficient_scope",
		                        "message", err.msg, "path", out.err_path));
		req->status = 403;
		return;
	case PROBE_E_FULL:
		wh_reply_error_hdr(req, 429, "Retry-After: 1\r\n", "queue_full", "%s", err.msg);
		return;
	case PROBE_E_STOPPED:
		wh_reply_error(req, 503, "unavailable", "%s", err.msg);
		return;
	case PROBE_E_ADMIT:
		wh_reply_error(req, 500, "audit_unavailable",
		               "the audit log cannot be written; the probe was not run");
		return;
	case PROBE_E_PERSIST: /* a full disk, mostly: not a bug, and nothing was accepted */
		wh_reply_error(req, 507, "record_write_failed", "%s", err.msg);
		return;
	default:
		wh_reply_error(req, 500, "internal", "%s", err.msg);
		return;
	}
}

/* A finished record goes out as the file it is: O(chunk) memory and no
 * re-encoding, however large its output. Audited by the dispatcher (a read). */
static void send_record_file(struct wh_req *req, int fd, uint64_t size)
{
	enum { CHUNK = 64 * 1024 };
	char *buf = malloc(CHUNK);
	if (buf == NULL) {
		close(fd);
		wh_reply_error(req, 500, "internal", "out of memory");
		return;
	}
	req->status = 200;
	mg_printf(req->conn,
	          "HTTP/1.1 200 OK\r\n"
	          "Content-Type: application/json\r\n"
	          "Content-Length: %" PRIu64 "\r\n"
	          "Cache-Control: no-store\r\n"
	          "X-Content-Type-Options: nosniff\r\n\r\n",
	          size);
	/* the length is promised: a short file (cannot happen: records are replaced,
	 * never changed) ends the connection early rather than send other bytes */
	for (uint64_t sent = 0; sent < size;) {
		ssize_t n = read(fd, buf, size - sent < CHUNK ? (size_t)(size - sent) : CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0 || mg_write(req->conn, buf, (size_t)n) <= 0)
			break;
		sent += (uint64_t)n;
	}
	free(buf);
	close(fd);
}

void wh_api_probe_get(struct wh_req *req)
{
	struct probe_exec *ex = exec_or_503(req);
	if (ex == NULL)
		return;
	const char *id = req->params[0];
	uint64_t size = 0;
	int fd = valid_id(id) ? probe_record_fd(ex, id, &size) : -1;
	snprintf(req->probe_id, sizeof(req->probe_id), "%.63s", valid_id(id) ? id : "");
	if (fd >= 0) {
		send_record_file(req, fd, size);
		return;
	}
	json_t *rec = fd == -2 ? probe_get(ex, id) : NULL;
	if (rec == NULL) {
		wh_reply_error(req, 404, "not_found", "no probe with this id");
		return;
	}
	wh_reply_json(req, 200, rec);
}

void wh_api_probe_list(struct wh_req *req)
{
	struct probe_exec *ex = exec_or_503(req);
	if (ex == NULL)
		return;
	const char *qs = req->info->query_string;
	char state[32] = "", limit_s[16] = "";
	int limit = LIST_DEFAULT;
	if (qs != NULL) {
		size_t ql = strlen(qs);
		int sr = mg_get_var(qs, ql, "state", state, sizeof(state));
		if (sr == -2 || (sr >= 0 && state[0] != '\0' && !probe_state_valid(state))) {
			reply_invalid(req, "invalid_request", "state",
			              "state: expected queued, running, succeeded, failed, "
			              "canceled, timed_out or interrupted");
			return;
		}
		int lr = mg_get_var(qs, ql, "limit", limit_s, sizeof(limit_s));
		if (lr >= 0 || lr == -2) {
			char *end;
			long v = strtol(limit_s, &end, 10);
			if (lr == -2 || end == limit_s || *end != '\0' || v < 1 || v > LIST_MAX) {
				reply_invalid(req, "invalid_request", "limit",
				              "limit: expected an integer from 1 to 1000");
				return;
			}
			limit = (int)v;
		}
	}
	wh_reply_json(req, 200,
	              json_pack("{s:o}", "probes", probe_list(ex, state[0] ? state : NULL, limit)));
}

void wh_api_probe_cancel(struct wh_req *req)
{
	struct probe_exec *ex = exec_or_503(req);
	if (ex == NULL)
		return;
	const char *id = req->params[0];
	json_t *rec = NULL;
	enum probe_cancel_rc rc = valid_id(id) ? probe_cancel(ex, id, &rec) : PROBE_CANCEL_UNKNOWN;
	snprintf(req->probe_id, sizeof(req->probe_id), "%.63s", valid_id(id) ? id : "");
	if (rc == PROBE_CANCEL_UNKNOWN) {
		wh_reply_error(req, 404, "not_found", "no probe with this id");
	} else if (rc == PROBE_CANCEL_FINISHED) {
		wh_reply_error(req, 409, "already_finished", "the probe has already finished");
	} else if (rec == NULL) {
		wh_reply_error(req, 500, "internal", "the probe record is unreadable");
	} else {
		wh_reply_json(req, 202, rec);
	}
}

/* One SSE message as one HTTP chunk: "id: N\nevent: T\ndata: JSON\n\n". */
static int send_event(struct mg_connection *conn, uint64_t seq, const char *type, const char *data)
{
	size_t n = strlen(data) + strlen(type) + 64;
	char *buf = malloc(n);
	if (buf == NULL)
		return -1;
	int len = snprintf(buf, n, "id: %" PRIu64 "\nevent: %s\ndata: %s\n\n", seq, type, data);
	int rc = mg_send_chunk(conn, buf, (unsigned)len) > 0 ? 0 : -1;
	free(buf);
	return rc;
}

/* The `end` event carries the final record: from its file, chunk by chunk
 * (compact JSON has no newline, so it is one data line). -1: not on disk. */
static int send_end_from_file(struct wh_req *req, struct probe_exec *ex, const char *id,
                              uint64_t seq)
{
	uint64_t size = 0;
	int fd = probe_record_fd(ex, id, &size);
	if (fd < 0)
		return -1;
	enum { CHUNK = 64 * 1024 };
	char *buf = malloc(CHUNK);
	int rc = buf != NULL ? 0 : -1;
	if (rc == 0) {
		int n = snprintf(buf, CHUNK, "id: %" PRIu64 "\nevent: end\ndata: ", seq);
		rc = mg_send_chunk(req->conn, buf, (unsigned)n) > 0 ? 0 : -1;
	}
	for (uint64_t sent = 0; rc == 0 && sent < size;) {
		ssize_t n = read(fd, buf, size - sent < CHUNK ? (size_t)(size - sent) : CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0 || mg_send_chunk(req->conn, buf, (unsigned)n) <= 0)
			rc = -1;
		else
			sent += (uint64_t)n;
	}
	if (rc == 0)
		mg_send_chunk(req->conn, "\n\n", 2);
	free(buf);
	close(fd);
	return 0;
}

void wh_api_probe_events(struct wh_req *req)
{
	struct probe_exec *ex = exec_or_503(req);
	if (ex == NULL)
		return;
	const char *id = req->params[0];
	/* known? (without loading a record that may be as large as the limit) */
	uint64_t size;
	int fd = valid_id(id) ? probe_record_fd(ex, id, &size) : -1;
	if (fd >= 0)
		close(fd);
	if (fd == -1) {
		wh_reply_error(req, 404, "not_found", "no probe with this id");
		return;
	}
	snprintf(req->probe_id, sizeof(req->probe_id), "%.63s", id);
	/* each stream holds a webhook worker thread: keep most of them for the API */
	if (!probe_events_acquire(ex)) {
		wh_reply_error_hdr(req, 503, "Retry-After: 5\r\n", "too_many_streams",
		                   "at most %d event streams at a time", PROBE_MAX_STREAMS);
		return;
	}
	/* Chunked, so the connection stays reusable and proxies see message boundaries. */
	mg_printf(req->conn, "HTTP/1.1 200 OK\r\n"
	                     "Content-Type: text/event-stream\r\n"
	                     "Cache-Control: no-store\r\n"
	                     "X-Accel-Buffering: no\r\n"
	                     "Transfer-Encoding: chunked\r\n\r\n");
	req->status = 200;
	uint64_t seq = 0;
	struct probe_event evs[SSE_BATCH];
	bool done = false;
	int idle = 0;
	for (int waited = 0; !done && !wh_stopping(req) && waited < SSE_MAX_S;) {
		int n = probe_events_wait(ex, id, &seq, evs, SSE_BATCH, SSE_WAIT_MS);
		if (n < 0)
			break;
		if (n == 0) {
			waited++;
			/* a comment line keeps intermediaries from timing the stream out */
			if (++idle >= SSE_KEEPALIVE_S) {
				idle = 0;
				if (mg_send_chunk(req->conn, ": keepalive\n\n", 13) <= 0)
					break;
			}
			continue;
		}
		idle = 0;
		for (int i = 0; i < n; i++) {
			const char *data = evs[i].data != NULL ? evs[i].data : "{}";
			char *final = NULL;
			if (strcmp(evs[i].type, "end") == 0 &&
			    send_end_from_file(req, ex, id, evs[i].seq) == 0) {
				done = true;
				probe_event_free(&evs[i]);
				continue;
			}
			if (strcmp(evs[i].type, "end") == 0) {
				/* the end carries the whole record: whatever chunks a slow reader
				 * missed */
				json_t *r = probe_get(ex, id);
				final = r != NULL ? json_dumps(r, JSON_COMPACT) : NULL;
				json_decref(r);
				done = true;
			}
			if (send_event(req->conn, evs[i].seq, evs[i].type, final ? final : data) !=
			    0)
				done = true;
			free(final);
			probe_event_free(&evs[i]);
		}
	}
	mg_write(req->conn, "0\r\n\r\n", 5);
	probe_events_release(ex);
}
