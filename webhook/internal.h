/* Webhook internals shared by the routing core and the API handler files. */
#ifndef VMA_WEBHOOK_INTERNAL_H
#define VMA_WEBHOOK_INTERNAL_H

#include <civetweb.h>
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "webhook/webhook.h"

#define WH_MAX_PARAMS 4

struct wh_server;

struct wh_req {
	struct mg_connection *conn;
	const struct mg_request_info *info;
	struct wh_server *srv;
	char params[WH_MAX_PARAMS][128]; /* {name} segments of the route, in order */
};

typedef void (*wh_handler_fn)(struct wh_req *req);

struct wh_route {
	const char *method;
	const char *pattern; /* "/v1/probes/{id}": {x} matches one non-empty segment */
	wh_handler_fn fn;
	const char *scope;   /* JWT scope the caller needs; NULL = no auth (livez only) */
};

/* Authorizes req for scope (auth.c). Returns 0 when allowed; otherwise it has
 * already answered 401/403 and returns -1. */
int wh_auth_check(struct wh_req *req, const char *scope);

/* The modules handlers call (copied from wh_start's deps). */
const struct wh_deps *wh_deps_of(const struct wh_req *req);

/* Responses. Every response carries Content-Length and a JSON body. */
void wh_reply_json(struct wh_req *req, int status, json_t *body); /* steals body */
void wh_reply_error(struct wh_req *req, int status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
void wh_reply_raw(struct mg_connection *conn, int status, const char *content_type,
                  const char *extra_headers, const char *body, size_t len);

/* Reads the request body, bounded by webhook.max_body. On failure it has
 * already answered (413/400) and returns -1; on success *out is malloc'd and
 * NUL-terminated. */
int wh_read_body(struct wh_req *req, char **out, size_t *len);

/* The route table (routes.c). */
extern const struct wh_route wh_routes[];
extern const size_t wh_route_count;

/* Handlers. */
void wh_api_livez(struct wh_req *req);
void wh_api_health(struct wh_req *req);
void wh_api_metrics(struct wh_req *req);
void wh_api_upgrade(struct wh_req *req);

#endif
