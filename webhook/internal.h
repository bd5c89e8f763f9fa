/* Webhook internals shared by the routing core and the API handler files. */
#ifndef VMA_WEBHOOK_INTERNAL_H
#define VMA_WEBHOOK_INTERNAL_H

#include <civetweb.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "webhook/webhook.h"

#define WH_MAX_PARAMS 4

struct wh_server;
struct wh_route;

/* Who called, once wh_auth_check has accepted the token (for handlers and audit). */
struct wh_claims {
	bool verified;
	char sub[256];
	char jti[256];
	char tenant[256];
	char scope[1024]; /* the token's scope claim: routes check more than one (steps) */
};

struct wh_req {
	struct mg_connection *conn;
	const struct mg_request_info *info;
	struct wh_server *srv;
	char params[WH_MAX_PARAMS][128]; /* {name} segments of the route, in order */
	const struct wh_route *route;
	struct wh_claims claims;
	/* What was answered, for the audit line: set by every wh_reply_*; a handler
	 * that writes its own response (SSE) sets status itself. */
	int status;
	bool audited; /* the audit line is written (before the response goes out) */
	char err_code[48];
	char probe_id[64]; /* the probe a handler acted on, when any */
	/* the handler accepted a WebSocket upgrade: civetweb goes on to the
	 * handshake (the session's own audit line comes when it ends) */
	bool upgrade;
	json_t *shell; /* owned; the shell's part of the audit line (dispatch frees it) */
	uint64_t audit_seq; /* a WH_ROUTE_AUDIT_JOIN "started" line not yet confirmed durable */
};

typedef void (*wh_handler_fn)(struct wh_req *req);

enum wh_route_flags {
	/* a GET that starts something (the shell): audited "started" like a POST */
	WH_ROUTE_ACTS = 1u << 0,
	/* the "started" line is appended before the handler runs, and made
	 * durable by the handler (wh_audit_confirm) before anything it starts can
	 * run, while it flushes its own record: POST /v1/probes */
	WH_ROUTE_AUDIT_JOIN = 1u << 1,
};

struct wh_route {
	const char *method;
	const char *pattern; /* "/v1/probes/{id}": {x} matches one non-empty segment */
	wh_handler_fn fn;
	const char *scope; /* JWT scope the caller needs; "" = any valid token; NULL = no auth (livez only) */
	unsigned flags;    /* enum wh_route_flags */
};

/* Authorizes req for scope (auth.c). Returns 0 when allowed and fills
 * req->claims; otherwise it has already answered 401/403/503 and returns -1. */
int wh_auth_check(struct wh_req *req, const char *scope);

/* Token verification state: keys, issuer, replay cache (auth.c). */
struct wh_auth;
struct wh_auth *wh_auth_new(const struct cfg *cfg, struct vm_err *err);
void wh_auth_free(struct wh_auth *auth);
struct wh_auth *wh_auth_of(const struct wh_req *req);

/* Audit log of remote actions (audit.c): one JSON line per authenticated-route
 * request, written before the response goes out (streaming handlers: when
 * done); a state-changing request also gets a durable "started" line before it
 * runs (wh_audit_begin; WH_ROUTE_AUDIT_JOIN: wh_audit_confirm). */
#define WH_AUDIT_FIELD_MAX 256  /* bytes per field, NUL included (255 of text) */
#define WH_AUDIT_PATH_MAX  1024 /* the path's bound */
struct wh_audit;
struct wh_audit *wh_audit_open(const struct cfg *cfg, struct vm_err *err);
void wh_audit_close(struct wh_audit *audit);

/* One line's fields, borrowed. Every string may hold the caller's bytes (not
 * UTF-8, any length, NULL = ""): they are escaped and bounded, never refused. */
struct wh_audit_entry {
	const char *outcome; /* "started", "ok", "denied", "error", "interrupted" */
	int status;          /* 0 on a "started" line */
	const char *tenant, *sub, *jti, *route, *path, *error, *remote_addr, *forwarded_for;
	const char *probe_id; /* omitted when NULL or "" */
	json_t *shell;        /* borrowed; a shell session's summary, omitted when NULL */
};
/* The line as malloc'd JSON text without a newline; NULL only out of memory. */
char *wh_audit_format(const struct wh_audit_entry *e);
/* Appends one line, whole or not at all; durable = fdatasync before returning. */
int wh_audit_write(struct wh_audit *audit, const struct wh_audit_entry *e, bool durable,
                   struct vm_err *err);
/* The request's line; on failure logs loudly (the line's essentials go to the
 * main log) and returns -1: the answer goes out anyway. */
int wh_audit_request(struct wh_audit *audit, const struct wh_req *req);
/* Before a state-changing handler runs: writes its "started" line durably, or
 * answers 500 audit_unavailable and returns -1 (fail closed). Reads: 0.
 * WH_ROUTE_AUDIT_JOIN routes: only appended; the handler must call
 * wh_audit_confirm before what it starts can run. */
int wh_audit_begin(struct wh_req *req);
/* Returns once the request's "started" line is on disk (0), or logs that it
 * is not and returns -1: the handler must then not act, and answers 500
 * audit_unavailable. Thread-safe; 0 when nothing is pending. */
int wh_audit_confirm(struct wh_req *req);
/* One "interrupted" line (error agent_restarted) for each probe that start-up
 * found unfinished: every probe the agent recorded is in the audit log, even
 * one accepted on disk by a crash before its joined "started" line was. */
struct probe_exec;
void wh_audit_interrupted(struct wh_audit *audit, struct probe_exec *ex);
struct wh_audit *wh_audit_of(const struct wh_req *req);

/* Request guard (guard.c): whole-request deadlines for one listener's
 * workers. A slot follows one connection: attached when a worker takes it,
 * armed while a request (headers, then body) is being read, detached before
 * civetweb closes the socket. NULL guard or slot: every call does nothing. */
struct wh_guard;
struct wh_guard_slot;
struct wh_guard *wh_guard_new(size_t workers, uint64_t timeout_ms, bool shed, struct vm_err *err);
void wh_guard_free(struct wh_guard *g);
struct wh_guard_slot *wh_guard_attach(struct wh_guard *g, int fd);
void wh_guard_next_request(struct wh_guard *g, struct wh_guard_slot *s); /* keep-alive */
void wh_guard_headers_in(struct wh_guard *g, struct wh_guard_slot *s, bool body);
void wh_guard_body_in(struct wh_guard *g, struct wh_guard_slot *s);
bool wh_guard_reading(struct wh_guard *g, struct wh_guard_slot *s); /* body not all read */
bool wh_guard_was_cut(struct wh_guard *g, struct wh_guard_slot *s);
void wh_guard_detach(struct wh_guard *g, struct wh_guard_slot *s);

/* Per connection (civetweb's user connection data): the guard's slot, and
 * the shell session an accepted upgrade hands to the WebSocket handlers. */
struct wh_shell_session;
struct wh_conn {
	struct wh_guard_slot *slot;
	struct wh_shell_session *shell;
};

/* The socket of a connection (webhook/civetweb/civetweb_fd.c). */
int mg_vma_client_fd(const struct mg_connection *conn);

/* True once wh_stop began: handlers that stream (SSE) must return soon. */
bool wh_stopping(const struct wh_req *req);

/* This agent's capabilities (probe_capabilities of the config the server
 * started with); NULL when they could not be built. Borrowed. */
const json_t *wh_capabilities_of(const struct wh_req *req);

/* The modules handlers call (copied from wh_start's deps). */
const struct wh_deps *wh_deps_of(const struct wh_req *req);

/* Responses. Every response carries Content-Length and a JSON body. */
void wh_reply_json(struct wh_req *req, int status, json_t *body); /* steals body */
void wh_reply_error(struct wh_req *req, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Same with extra header lines ("Retry-After: 1\r\n"). */
void wh_reply_error_hdr(struct wh_req *req, int status, const char *extra_headers, const char *code,
                        const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* Any other body (Prometheus text, pre-rendered JSON); records status like the others. */
void wh_reply_raw(struct wh_req *req, int status, const char *content_type,
                  const char *extra_headers, const char *body, size_t len);

/* Reads the request body, bounded by webhook.max_body. On failure it has
 * already answered (413 too large, 400 unreadable, 503 out of memory) and returns -1; on success
 * *out is malloc'd and NUL-terminated. */
int wh_read_body(struct wh_req *req, char **out, size_t *len);

/* Shell control messages (shell_control.c): the text frames of a session. */
#define WH_SHELL_CTL_MAX  16384
#define WH_SHELL_DIM_MAX  1000
#define WH_SHELL_ARGV_MAX 64
#define WH_SHELL_ENV_MAX  32
#define WH_SHELL_NAME_MAX 64 /* user and term, NUL included */

/* A session's parameters, from the query or from a "start" message, validated
 * by the same rules (wh_shell_param_set). Strings are malloc'd. */
struct wh_shell_params {
	uint16_t cols, rows; /* 0: not given (an out-of-range size is ignored) */
	int argc;            /* 0: not given (the default shell) */
	char *argv[WH_SHELL_ARGV_MAX + 1];
	int nenv; /* -1: not given */
	char *env[WH_SHELL_ENV_MAX + 1]; /* "NAME=value" */
	char *user, *cwd, *term;         /* NULL: not given */
};
void wh_shell_params_init(struct wh_shell_params *p);
void wh_shell_params_free(struct wh_shell_params *p);
/* Sets one parameter (cols, rows, command, user, env, cwd, term) from its
 * JSON value: VM_ERR_INVALID naming it when the value is wrong, VM_ERR_NOMEM. */
int wh_shell_param_set(struct wh_shell_params *p, const char *name, const json_t *v,
                       struct vm_err *err);
/* Moves what src gives over dst (src is left empty). */
void wh_shell_params_merge(struct wh_shell_params *dst, struct wh_shell_params *src);

enum wh_shell_ctl_type {
	WH_SHELL_CTL_NONE = 0,
	WH_SHELL_CTL_RESIZE,
	WH_SHELL_CTL_SIGNAL,
	WH_SHELL_CTL_CLOSE,
	WH_SHELL_CTL_START, /* the parameters, as the first frame of a session */
};
struct wh_shell_ctl {
	enum wh_shell_ctl_type type;
	enum wh_shell_ctl_type asked; /* the type named, also when the message is refused */
	uint16_t cols, rows;           /* RESIZE: 1..WH_SHELL_DIM_MAX each */
	int signo;                     /* SIGNAL */
	struct wh_shell_params params; /* START; free with wh_shell_ctl_free */
};
/* Parses one message; VM_ERR_INVALID (and type NONE) for anything else. */
int wh_shell_control_parse(const char *data, size_t len, struct wh_shell_ctl *out,
                           struct vm_err *err);
void wh_shell_ctl_free(struct wh_shell_ctl *c);
/* "INT", "SIGINT", ... → the number; 0 when unknown or not one a client may send. */
int wh_shell_signal_of(const char *name);
/* "TERM" for SIGTERM; NULL for a signal the table does not name. */
const char *wh_shell_signal_name(int signo);

/* Shell sessions (api_shell.c): one per upgraded connection. */
struct wh_shells;
struct cg_tree;
/* deps->cgroup (containment) and deps->budget (limits.max_concurrent: a
 * slot per session) are borrowed; either may be NULL. */
struct wh_shells *wh_shells_new(const struct cfg *cfg, const struct wh_deps *deps,
                                struct vm_err *err);
void wh_shells_free(struct wh_shells *s);
/* Registers the WebSocket handlers of /v1/shell on a civetweb context. */
void wh_shells_register(struct mg_context *ctx);
struct wh_shells *wh_shells_of(const struct wh_req *req);
struct wh_conn *wh_conn_of(const struct mg_connection *conn);
/* A connection closes: a session it still holds (never upgraded) goes. */
void wh_shells_drop(struct wh_conn *c);
/* wh_stop: every session ends now (its shell is killed, its read ends);
 * with only, just the sessions of that listener. */
void wh_shells_stop_all(struct wh_shells *sh, const struct mg_context *only);

/* The route table (routes.c). */
extern const struct wh_route wh_routes[];
extern const size_t wh_route_count;

/* Handlers. */
void wh_api_livez(struct wh_req *req);
void wh_api_health(struct wh_req *req);
void wh_api_capabilities(struct wh_req *req);
void wh_api_inventory(struct wh_req *req);
void wh_api_metrics(struct wh_req *req);
void wh_api_upgrade(struct wh_req *req);
void wh_api_probe_create(struct wh_req *req);
void wh_api_probe_list(struct wh_req *req);
void wh_api_probe_get(struct wh_req *req);
void wh_api_probe_events(struct wh_req *req);
void wh_api_probe_cancel(struct wh_req *req);
void wh_api_containers_list(struct wh_req *req);
void wh_api_container_get(struct wh_req *req);
void wh_api_container_create(struct wh_req *req);
void wh_api_container_start(struct wh_req *req);
void wh_api_container_stop(struct wh_req *req);
void wh_api_container_restart(struct wh_req *req);
void wh_api_container_delete(struct wh_req *req);
void wh_api_container_logs(struct wh_req *req);
void wh_api_container_stats(struct wh_req *req);
void wh_api_image_pull(struct wh_req *req);
void wh_api_shell(struct wh_req *req);
void wh_api_shell_list(struct wh_req *req);
void wh_api_shell_recording(struct wh_req *req);

#endif
