/* civetweb setup, request dispatch through the route table, JSON errors and
 * request limits. Two listeners share the routes: TCP (loopback by default)
 * for local callers, and a unix socket only root reaches, where the tunnel
 * forwards, each with its own workers and request guard so that slow local
 * clients cannot starve the tunnel. The unix one runs only while the tunnel
 * forwards to it (piko.server_url set, no piko.forward_addr): a reload
 * starts and stops it. Handlers live in api_*.c. */
#include "webhook/webhook.h"

#include <civetweb.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/codec.h"
#include "core/log.h"
#include "core/sock.h"
#include "probe/probe.h"
#include "webhook/internal.h"

/* One civetweb context: its workers, and the guard that bounds their requests. */
struct wh_listener {
	struct wh_server *srv;
	struct mg_context *ctx;
	struct wh_guard *guard;
	atomic_bool stopping; /* this listener alone stops: its SSE handlers end */
};

struct wh_server {
	struct wh_listener tcp, tun;
	struct sock_unix sock; /* the tunnel's listener */
	struct wh_deps deps;
	struct wh_auth *auth;
	struct wh_audit *audit;
	struct wh_shells *shells;
	json_t *capabilities; /* GET /v1/capabilities */
	atomic_bool stopping; /* long-lived handlers (SSE) end when set */
	uint64_t max_body;
	char tls_cert_file[PATH_MAX];
	char tls_key_file[PATH_MAX];
};

static const char *status_text(int status)
{
	const char *t = mg_get_response_code_text(NULL, status);
	return t != NULL ? t : "";
}

static void send_raw(struct mg_connection *conn, int status, const char *content_type,
                     const char *extra_headers, const char *body, size_t len)
{
	mg_printf(conn,
	          "HTTP/1.1 %d %s\r\n"
	          "Content-Type: %s\r\n"
	          "Content-Length: %zu\r\n"
	          "Cache-Control: no-store\r\n"
	          "X-Content-Type-Options: nosniff\r\n"
	          "%s\r\n",
	          status, status_text(status), content_type, len,
	          extra_headers != NULL ? extra_headers : "");
	if (len > 0)
		mg_write(conn, body, len);
}

static void reply_json_headers(struct mg_connection *conn, int status, const char *extra,
                               json_t *body)
{
	char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
	if (text == NULL) {
		static const char oom[] =
		    "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}";
		send_raw(conn, 500, "application/json", extra, oom, sizeof(oom) - 1);
	} else {
		size_t n = strlen(text);
		text[n] = '\n'; /* a trailing newline is friendlier to curl users */
		send_raw(conn, status, "application/json", extra, text, n + 1);
		text[n] = '\0';
	}
	free(text);
	json_decref(body);
}

/* A remote action is audited before it is acknowledged: a crash right after
 * the answer cannot lose the line, and sequential calls are logged in order. */
static void audit_before_reply(struct wh_req *req)
{
	if (req->audited || req->route == NULL || req->route->scope == NULL)
		return;
	/* a joined "started" line the handler did not confirm (it answers
	 * without acting): on disk before the outcome line and the answer */
	(void)wh_audit_confirm(req);
	/* a lost line is logged loudly there; the action (if any) has its "started" line */
	(void)wh_audit_request(req->srv->audit, req);
	req->audited = true;
}

void wh_reply_raw(struct wh_req *req, int status, const char *content_type,
                  const char *extra_headers, const char *body, size_t len)
{
	req->status = status;
	audit_before_reply(req);
	send_raw(req->conn, status, content_type, extra_headers, body, len);
}

void wh_reply_json(struct wh_req *req, int status, json_t *body)
{
	if (body == NULL) { /* what reply_json_headers will answer, audited as such */
		status = 500;
		snprintf(req->err_code, sizeof(req->err_code), "internal");
	}
	req->status = status;
	audit_before_reply(req);
	reply_json_headers(req->conn, status, NULL, body);
}

static json_t *error_body(const char *code, const char *msg)
{
	return json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg);
}

static void reply_error_conn(struct mg_connection *conn, int status, const char *extra,
                             const char *code, const char *msg)
{
	/* messages may quote the caller's bytes (path, method, a claim): jansson
	 * takes valid UTF-8 only, and a cut message may end inside a character */
	char clean[1024];
	utf8_escape(clean, sizeof(clean), msg, strlen(msg), 0, NULL);
	reply_json_headers(conn, status, extra, error_body(code, clean));
}

static void reply_error_v(struct wh_req *req, int status, const char *extra, const char *code,
                          const char *fmt, va_list ap)
{
	char msg[512];
	if (vsnprintf(msg, sizeof(msg), fmt, ap) >= (int)sizeof(msg))
		msg[utf8_cut(msg, sizeof(msg) - 1)] = '\0';
	req->status = status;
	snprintf(req->err_code, sizeof(req->err_code), "%s", code);
	audit_before_reply(req);
	reply_error_conn(req->conn, status, extra, code, msg);
}

void wh_reply_error(struct wh_req *req, int status, const char *code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	reply_error_v(req, status, NULL, code, fmt, ap);
	va_end(ap);
}

void wh_reply_error_hdr(struct wh_req *req, int status, const char *extra_headers, const char *code,
                        const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	reply_error_v(req, status, extra_headers, code, fmt, ap);
	va_end(ap);
}

static struct wh_listener *listener_of(const struct mg_connection *conn)
{
	return mg_get_user_data(mg_get_context(conn));
}

struct wh_conn *wh_conn_of(const struct mg_connection *conn)
{
	return mg_get_user_connection_data(conn);
}

static struct wh_guard_slot *slot_of(const struct mg_connection *conn)
{
	struct wh_conn *c = wh_conn_of(conn);
	return c != NULL ? c->slot : NULL;
}

/* The body is left unread (or half read): answer, then close the connection
 * instead of letting civetweb drain what the client may drip for ever. */
#define CLOSE_HDR "Connection: close\r\n"

int wh_read_body(struct wh_req *req, char **out, size_t *len)
{
	uint64_t max = req->srv->max_body;
	long long declared = req->info->content_length;
	struct wh_guard *g = listener_of(req->conn)->guard;
	struct wh_guard_slot *slot = slot_of(req->conn);
	*out = NULL;
	if (declared > 0 && (uint64_t)declared > max) {
		mg_disable_connection_keep_alive(req->conn);
		wh_reply_error_hdr(req, 413, CLOSE_HDR, "body_too_large",
		                   "request body is %lld bytes; the limit is "
		                   "%llu (webhook.max_body)",
		                   declared, (unsigned long long)max);
		return -1;
	}
	struct buf b;
	buf_init(&b, (size_t)max + 1); /* one byte past max is how a larger body shows */
	for (;;) {
		size_t room = b.max - b.len < 65536 ? b.max - b.len : 65536;
		if (room == 0)
			break;
		uint8_t *dst = buf_reserve(&b, room);
		if (dst == NULL)
			goto oom;
		int r = mg_read(req->conn, dst, room);
		if (r <= 0) {
			/* end of body, or the guard ended the request at its deadline */
			if (r < 0 || (declared > 0 && (uint64_t)b.len < (uint64_t)declared))
				goto short_body;
			break;
		}
		buf_commit(&b, (size_t)r);
	}
	wh_guard_body_in(g, slot);
	if ((uint64_t)b.len > max) {
		buf_free(&b);
		mg_disable_connection_keep_alive(req->conn);
		wh_reply_error_hdr(req, 413, CLOSE_HDR, "body_too_large",
		                   "request body exceeds %llu bytes "
		                   "(webhook.max_body)",
		                   (unsigned long long)max);
		return -1;
	}
	if ((*out = buf_take(&b, len)) == NULL)
		goto oom;
	return 0;
short_body:
	buf_free(&b);
	wh_guard_body_in(g, slot);
	mg_disable_connection_keep_alive(req->conn);
	if (wh_guard_was_cut(g, slot))
		wh_reply_error_hdr(req, 408, CLOSE_HDR, "timeout",
		                   "the request body did not arrive within "
		                   "webhook.request_timeout");
	else
		wh_reply_error_hdr(req, 400, CLOSE_HDR, "bad_request",
		                   "could not read the request body");
	return -1;
oom:
	buf_free(&b);
	mg_disable_connection_keep_alive(req->conn);
	wh_reply_error_hdr(req, 503, CLOSE_HDR, "unavailable", "out of memory");
	return -1;
}

/* --- routing ---------------------------------------------------------------------------- */

/* Matches uri against pattern segment by segment, capturing {x} segments. */
static bool route_match(const char *pattern, const char *uri, struct wh_req *req)
{
	int np = 0;
	const char *p = pattern, *u = uri;
	while (*p != '\0' && *u != '\0') {
		if (*p == '{') {
			const char *pend = strchr(p, '}');
			size_t ulen = strcspn(u, "/");
			if (pend == NULL || ulen == 0 || ulen >= sizeof(req->params[0]) ||
			    np >= WH_MAX_PARAMS)
				return false;
			memcpy(req->params[np], u, ulen);
			req->params[np++][ulen] = '\0';
			p = pend + 1;
			u += ulen;
		} else if (*p++ != *u++) {
			return false;
		}
	}
	return *p == '\0' && *u == '\0';
}

/* A body the handler left unread (a refusal, a route that takes none) is not
 * drained after the answer: the connection is closed instead. */
static void close_if_unread(struct wh_listener *l, struct mg_connection *conn)
{
	if (wh_guard_reading(l->guard, slot_of(conn)))
		mg_disable_connection_keep_alive(conn);
}

static int dispatch(struct mg_connection *conn)
{
	struct wh_req req;
	memset(&req, 0, sizeof(req));
	req.conn = conn;
	req.info = mg_get_request_info(conn);
	struct wh_listener *l = listener_of(conn);
	req.srv = l->srv;
	const char *uri = req.info->local_uri != NULL ? req.info->local_uri : "";

	/* The headers are in; the request's deadline goes on while a body comes. */
	long long declared = req.info->content_length;
	bool body =
	    declared > 0 || (declared < 0 && mg_get_header(conn, "Transfer-Encoding") != NULL);
	wh_guard_headers_in(l->guard, slot_of(conn), body);

	/* Refuse an oversized body before routing: nothing needs to read it. */
	if (declared > 0 && (uint64_t)declared > req.srv->max_body) {
		mg_disable_connection_keep_alive(conn);
		wh_reply_error_hdr(&req, 413, CLOSE_HDR, "body_too_large",
		                   "request body is %lld bytes; the limit "
		                   "is %llu (webhook.max_body)",
		                   declared, (unsigned long long)req.srv->max_body);
		return 1;
	}
	char allow[128] = "";
	size_t alen = 0;
	for (size_t i = 0; i < wh_route_count; i++) {
		const struct wh_route *r = &wh_routes[i];
		if (!route_match(r->pattern, uri, &req))
			continue;
		if (strcmp(r->method, req.info->request_method) == 0) {
			req.route = r;
			if (r->scope == NULL) {
				r->fn(&req);
				close_if_unread(l, conn);
				return 1;
			}
			/* fail closed: nothing runs before its audit line is on disk */
			if (wh_auth_check(&req, r->scope) == 0 && wh_audit_begin(&req) == 0)
				r->fn(&req);
			/* handlers that stream (SSE) are audited when done; the rest
			 * that answered nothing yet, now */
			audit_before_reply(&req);
			json_decref(req.shell);
			close_if_unread(l, conn);
			/* 0: civetweb goes on to the WebSocket handshake (api_shell.c) */
			return req.upgrade ? 0 : 1;
		}
		alen = str_appendf(allow, sizeof(allow), alen, "%s%s", alen ? ", " : "", r->method);
	}
	if (alen > 0) {
		char hdr[160];
		snprintf(hdr, sizeof(hdr), "Allow: %s\r\n", allow);
		char msg[256];
		snprintf(msg, sizeof(msg), "method %s is not allowed on this path; allowed: %s",
		         req.info->request_method, allow);
		if (body) {
			mg_disable_connection_keep_alive(conn);
			snprintf(hdr, sizeof(hdr), "Allow: %s\r\n" CLOSE_HDR, allow);
		}
		reply_error_conn(conn, 405, hdr, "method_not_allowed", msg);
		return 1;
	}
	if (body)
		mg_disable_connection_keep_alive(conn);
	reply_error_conn(conn, 404, body ? CLOSE_HDR : NULL, "not_found", "no such endpoint");
	return 1;
}

/* civetweb's own error pages (malformed requests, header too large) as JSON. */
static int on_http_error(struct mg_connection *conn, int status, const char *msg)
{
	if (wh_guard_was_cut(listener_of(conn)->guard, slot_of(conn))) {
		status = 408; /* civetweb saw end-of-file where the guard cut the request */
		msg = "the request did not arrive within webhook.request_timeout";
	}
	const char *code = status == 413 || status == 431 ? "too_large"
	                   : status == 408                ? "timeout"
	                   : status >= 500                ? "internal"
	                                                  : "bad_request";
	reply_error_conn(conn, status, "Connection: close\r\n", code,
	                 msg ? msg : status_text(status));
	return 0;
}

/* A worker took a connection: its requests are guarded until it closes. */
static int on_init_connection(const struct mg_connection *conn, void **conn_data)
{
	struct wh_conn *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return 1; /* civetweb closes the connection */
	c->slot = wh_guard_attach(listener_of(conn)->guard, mg_vma_client_fd(conn));
	*conn_data = c;
	return 0;
}

/* Keep-alive: the next request's headers are awaited from now. */
static void on_end_request(const struct mg_connection *conn, int status)
{
	(void)status;
	wh_guard_next_request(listener_of(conn)->guard, slot_of(conn));
}

/* Called before civetweb closes the socket: the guard must not touch it after. */
static void on_connection_close(const struct mg_connection *conn)
{
	struct wh_conn *c = wh_conn_of(conn);
	wh_shells_drop(c);
	wh_guard_detach(listener_of(conn)->guard, slot_of(conn));
	free(c);
}

static int on_log_message(const struct mg_connection *conn, const char *message)
{
	(void)conn;
	log_warn("webhook", "civetweb: %s", message);
	return 1;
}

/* TLS: our own cert/key loading so the key may live in a separate 0600 file. */
static int on_init_ssl(void *ssl_ctx, void *user_data)
{
	struct wh_server *srv = ((struct wh_listener *)user_data)->srv;
	SSL_CTX *ctx = ssl_ctx;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	if (SSL_CTX_use_certificate_chain_file(ctx, srv->tls_cert_file) != 1) {
		log_error("webhook", "webhook.tls_cert_file %s: cannot load certificate: %s",
		          srv->tls_cert_file, ERR_reason_error_string(ERR_get_error()));
		return -1;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, srv->tls_key_file, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		log_error("webhook",
		          "webhook.tls_key_file %s: cannot load a key matching the "
		          "certificate: %s",
		          srv->tls_key_file, ERR_reason_error_string(ERR_get_error()));
		return -1;
	}
	return 1;
}

/* The server's settings, by key (keys and audit settings live in the server;
 * the tunnel's unix listener sits in the runtime dir, sized by max_streams:
 * restart it to apply them), compared value by value, never padding. */
static const char *const wh_keys[] = {
    "webhook.",         "auth.",  "agent.id", "agent.tenant_id", "agent.runtime_dir",
    "piko.max_streams", "shell.", NULL};

bool wh_listener_changed(const struct cfg *a, const struct cfg *b)
{
	return cfg_keys_differ(a, b, wh_keys);
}

static bool is_loopback(const char *addr)
{
	return strncmp(addr, "127.", 4) == 0 || strcmp(addr, "::1") == 0 ||
	       strcmp(addr, "localhost") == 0;
}

const json_t *wh_capabilities_of(const struct wh_req *req)
{
	return req->srv->capabilities;
}

const struct wh_deps *wh_deps_of(const struct wh_req *req)
{
	return &req->srv->deps;
}

bool wh_stopping(const struct wh_req *req)
{
	return atomic_load(&req->srv->stopping) || atomic_load(&listener_of(req->conn)->stopping);
}

struct wh_auth *wh_auth_of(const struct wh_req *req)
{
	return req->srv->auth;
}

struct wh_audit *wh_audit_of(const struct wh_req *req)
{
	return req->srv->audit;
}

/* Workers finish before the guards go (free_server): they still use them. */
static void wh_stop_listeners(struct wh_server *srv)
{
	if (srv->tun.ctx != NULL)
		mg_stop(srv->tun.ctx); /* also removes the socket file */
	if (srv->tcp.ctx != NULL)
		mg_stop(srv->tcp.ctx);
	srv->tun.ctx = srv->tcp.ctx = NULL;
}

/* The tunnel's listener alone (a reload turned the tunnel off): its shells
 * and SSE streams end, its other requests finish, then its workers go. */
static void stop_tunnel_listener(struct wh_server *srv)
{
	if (srv->tun.ctx != NULL) {
		atomic_store(&srv->tun.stopping, true);
		wh_shells_stop_all(srv->shells, srv->tun.ctx);
		mg_stop(srv->tun.ctx); /* also removes the socket file */
		srv->tun.ctx = NULL;
	}
	wh_guard_free(srv->tun.guard);
	srv->tun.guard = NULL;
	sock_unix_close(&srv->sock);
	atomic_store(&srv->tun.stopping, false);
}

struct wh_shells *wh_shells_of(const struct wh_req *req)
{
	return req->srv->shells;
}

static void free_server(struct wh_server *srv)
{
	wh_shells_free(srv->shells);
	wh_guard_free(srv->tcp.guard);
	wh_guard_free(srv->tun.guard);
	sock_unix_close(&srv->sock);
	wh_auth_free(srv->auth);
	wh_audit_close(srv->audit);
	json_decref(srv->capabilities);
	free(srv);
}

/* Starts one civetweb context on ports with n workers; ports names it in errors. */
static int start_listener(struct wh_listener *l, const struct cfg *cfg, const char *ports,
                          int nthreads, bool keep_alive, bool tcp, struct vm_err *err)
{
	char threads[16], timeout[32], backlog[16];
	snprintf(threads, sizeof(threads), "%d", nthreads);
	/* A full unix backlog refuses a connect at once (TCP would retry the SYN):
	 * room for every stream the tunnel may open. */
	snprintf(backlog, sizeof(backlog), "%d",
	         tcp || cfg->piko.max_streams < 200 ? 200 : cfg->piko.max_streams);
	/* a second later than the guard's: the guard ends a slow request first (408) */
	snprintf(timeout, sizeof(timeout), "%llu",
	         (unsigned long long)cfg->webhook.request_timeout_ms + 1000u);
	l->guard = wh_guard_new((size_t)nthreads, cfg->webhook.request_timeout_ms, tcp, err);
	if (l->guard == NULL)
		return -err->code;
	const char *options[] = {
	    "listening_ports",
	    ports,
	    "num_threads",
	    threads,
	    /* civetweb bounds each recv()/send() and the headers with this; the
	     * guard bounds the whole request (headers and body) */
	    "request_timeout_ms",
	    timeout,
	    "enable_keep_alive",
	    keep_alive ? "yes" : "no",
	    "keep_alive_timeout_ms",
	    "5000",
	    "max_request_size",
	    "65536", /* headers only; bodies are bounded in wh_read_body */
	    "listen_backlog",
	    backlog,
	    /* headers and body go out in separate writes: without this, Nagle and
	     * delayed ACKs add ~40 ms to every response */
	    tcp ? "tcp_nodelay" : NULL, /* last: NULL ends the list on the unix socket */
	    "1",
	    NULL,
	};
	struct mg_callbacks cb;
	memset(&cb, 0, sizeof(cb));
	cb.begin_request = dispatch;
	cb.http_error = on_http_error;
	cb.log_message = on_log_message;
	cb.init_connection = on_init_connection;
	cb.end_request = on_end_request;
	cb.connection_close = on_connection_close;
	if (tcp && cfg->webhook.tls_enabled)
		cb.init_ssl = on_init_ssl;

	struct mg_init_data init = {&cb, l, options};
	char etext[256] = "";
	unsigned ecode = 0;
	struct mg_error_data edata = {&ecode, etext, sizeof(etext)};
	l->ctx = mg_start2(&init, &edata);
	if (l->ctx == NULL) {
		bool busy = strstr(etext, "in use") != NULL || strstr(etext, "bind") != NULL;
		return vm_err_set(err, busy ? VM_ERR_BUSY : VM_ERR_IO,
		                  "webhook: cannot listen on %s: %s", ports,
		                  etext[0] ? etext : "civetweb failed to start");
	}
	wh_shells_register(l->ctx);
	return 0;
}

/* The tunnel's listener: a unix socket in agent.runtime_dir that only the
 * agent's user (root) can reach, with its own workers. */
static int start_tunnel_listener(struct wh_server *srv, const struct cfg *cfg, struct vm_err *err)
{
	int rc =
	    sock_unix_prepare(&srv->sock, cfg->agent.runtime_dir, CFG_WEBHOOK_SOCKET_NAME, err);
	if (rc != 0)
		return rc;
	/* Bound through the directory fd sock_unix_prepare checked (open until
	 * sock_unix_close, after mg_stop has removed the socket): the directory is
	 * not looked up by name again, and civetweb never sees the configured path,
	 * which it would misread (',' splits its port list; "<digit>s" or
	 * "<digit>r" anywhere in it mean an HTTPS or redirect port). */
	char ports[SOCK_UNIX_PATH_MAX + 2];
	int n =
	    snprintf(ports, sizeof(ports), "x/proc/self/fd/%d/%s", srv->sock.dirfd, srv->sock.name);
	if (n < 0 || (size_t)n >= SOCK_UNIX_PATH_MAX)
		return vm_err_set(err, VM_ERR_INVALID, "webhook: socket name %s is too long",
		                  srv->sock.name);
	rc = start_listener(&srv->tun, cfg, ports, cfg->webhook.tunnel_threads, false, false, err);
	if (rc == 0)
		rc = sock_unix_seal(&srv->sock, err);
	if (rc != 0)
		stop_tunnel_listener(srv);
	return rc;
}

/* Idle, its workers would only cost memory: the unix listener runs while the
 * tunnel forwards to it. */
bool wh_tunnel_listener_wanted(const struct cfg *cfg)
{
	return cfg->piko.server_url[0] != '\0' && cfg->piko.forward_addr[0] == '\0';
}

int wh_tunnel_listener_apply(struct wh_server *srv, const struct cfg *cfg, struct vm_err *err)
{
	if (srv == NULL)
		return 0;
	bool want = wh_tunnel_listener_wanted(cfg);
	if (want == (srv->tun.ctx != NULL))
		return 0;
	if (!want) {
		stop_tunnel_listener(srv);
		log_info("webhook", "the tunnel's listener %s stopped (the tunnel does not use it)",
		         srv->sock.path);
		return 0;
	}
	int rc = start_tunnel_listener(srv, cfg, err);
	if (rc == 0)
		log_info("webhook", "the tunnel's listener is %s", srv->sock.path);
	return rc;
}

struct wh_server *wh_start(const struct cfg *cfg, const struct wh_deps *deps, struct vm_err *err)
{
	struct wh_server *srv = calloc(1, sizeof(*srv));
	if (srv == NULL) {
		vm_err_set(err, VM_ERR_NOMEM, "out of memory");
		return NULL;
	}
	srv->sock.dirfd = -1;
	srv->tcp.srv = srv->tun.srv = srv;
	if (deps != NULL)
		srv->deps = *deps;
	srv->max_body = cfg->webhook.max_body;
	srv->auth = wh_auth_new(cfg, err);
	if (srv->auth == NULL)
		goto fail;
	srv->audit = wh_audit_open(cfg, err);
	if (srv->audit == NULL)
		goto fail;
	wh_audit_interrupted(srv->audit, srv->deps.probe);
	srv->shells = wh_shells_new(cfg, &srv->deps, err);
	if (srv->shells == NULL)
		goto fail;
	srv->capabilities = probe_capabilities(cfg);
	snprintf(srv->tls_cert_file, sizeof(srv->tls_cert_file), "%s", cfg->webhook.tls_cert_file);
	snprintf(srv->tls_key_file, sizeof(srv->tls_key_file), "%s", cfg->webhook.tls_key_file);

	const char *addr = cfg->webhook.listen_addr;
	char ports[128];
	snprintf(ports, sizeof(ports), strchr(addr, ':') ? "[%s]:%d%s" : "%s:%d%s", addr,
	         cfg->webhook.port, cfg->webhook.tls_enabled ? "s" : "");
	/* The tunnel's first: once the TCP port answers (what start-up checks
	 * wait for), tunnel streams find their listener too. */
	if (wh_tunnel_listener_wanted(cfg) && start_tunnel_listener(srv, cfg, err) != 0)
		goto fail;
	if (start_listener(&srv->tcp, cfg, ports, cfg->webhook.num_threads, true, true, err) != 0)
		goto fail;
	if (!is_loopback(addr))
		log_warn("webhook",
		         "listening on %s, which is not a loopback address: the API is "
		         "reachable from the network; it is meant to be reached through the tunnel",
		         addr);
	log_info("webhook", "listening on %s%s; the tunnel's listener is %s", ports,
	         cfg->webhook.tls_enabled ? " (TLS)" : "",
	         srv->tun.ctx != NULL ? srv->sock.path : "off (the tunnel does not use it)");
	return srv;
fail:
	wh_stop_listeners(srv);
	free_server(srv);
	return NULL;
}

void wh_end_sessions(struct wh_server *srv)
{
	if (srv != NULL)
		wh_shells_stop_all(srv->shells, NULL);
}

void wh_stop(struct wh_server *srv)
{
	if (srv == NULL)
		return;
	atomic_store(&srv->stopping, true);
	wh_shells_stop_all(srv->shells, NULL);
	wh_stop_listeners(srv);
	free_server(srv);
}
