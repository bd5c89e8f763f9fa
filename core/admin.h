/* Admin socket: a unix stream socket <runtime_dir>/admin.sock (mode 0600 in a
 * 0700 directory) on which local tools (`vm-agent status`, `configure`) send
 * one line of JSON and get one line back. Commands are a table the agent
 * registers. Protocol:
 *   request:  {"cmd":"status", ...arguments}\n          (at most ADMIN_REQUEST_MAX bytes)
 *   reply:    {"ok":true,"result":{...}}\n
 *         or  {"ok":false,"error":{"code":"...","message":"..."}}\n
 * One request per connection, finished within ADMIN_DEADLINE_MS or dropped;
 * up to ADMIN_CONNS_DEFAULT at once, the excess is answered "busy" (admin_call
 * retries). Only root or the agent's own user may talk to it (checked with
 * SO_PEERCRED as well as the file mode). */
#ifndef VMA_CORE_ADMIN_H
#define VMA_CORE_ADMIN_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define ADMIN_REQUEST_MAX (64 * 1024)
#define ADMIN_REPLY_MAX   (1024 * 1024)
#define ADMIN_SOCKET_NAME "admin.sock"
/* Connections served at once; one more is answered ADMIN_REPLY_BUSY and closed. */
#define ADMIN_CONNS_DEFAULT 16
#define ADMIN_CONNS_LIMIT   64
/* Whole exchange (request in, reply out) per connection, from accept. */
#define ADMIN_DEADLINE_MS 3000
#define ADMIN_REPLY_BUSY \
	"{\"ok\":false,\"error\":{\"code\":\"busy\",\"message\":\"too many admin connections\"}}"

/* Server limits; 0 in a field = its default. */
struct admin_limits {
	size_t max_conns;    /* <= ADMIN_CONNS_LIMIT */
	int64_t deadline_ms; /* CLOCK_MONOTONIC, from accept to the last reply byte */
	size_t request_max;  /* <= ADMIN_REQUEST_MAX */
};

struct admin_server;

struct admin_cmd {
	const char *name;
	/* Returns the result object (new reference), or NULL with err set. request
	 * is the whole request object (borrowed). Runs on the admin thread. */
	json_t *(*fn)(void *ctx, json_t *request, struct vm_err *err);
};

/* "<runtime_dir>/admin.sock". */
void admin_socket_path(const char *runtime_dir, char *out, size_t cap);

/* Creates runtime_dir (0700), binds the socket (a stale one is replaced; a
 * live one means another agent runs: VM_ERR_BUSY) and starts the thread.
 * cmds (n rows) and ctx are borrowed and must outlive the server. */
struct admin_server *admin_start(const char *runtime_dir, const struct admin_cmd *cmds, size_t n,
                                 void *ctx, struct vm_err *err);

/* The same with limits (NULL = defaults); tests use short deadlines. */
struct admin_server *admin_start_with(const char *runtime_dir, const struct admin_cmd *cmds,
                                      size_t n, void *ctx, const struct admin_limits *lim,
                                      struct vm_err *err);

/* Stops the thread, removes the socket, frees. NULL is fine. */
void admin_stop(struct admin_server *srv);

/* Parses one request line: a JSON object with a string "cmd". On success
 * *req is a new reference and cmd holds the name. Fuzzed. */
int admin_parse_request(const char *line, size_t len, char *cmd, size_t cmd_cap, json_t **req,
                        struct vm_err *err);

/* Client: sends request (one JSON object, no newline) to the socket at path
 * and returns the reply line in *reply (malloc'd, NUL-terminated). Errors:
 * VM_ERR_NOTFOUND when no agent listens, VM_ERR_PERM when the socket is not
 * ours to use, VM_ERR_IO otherwise. timeout_ms bounds the whole exchange. */
int admin_call(const char *path, const char *request, int timeout_ms, char **reply,
               struct vm_err *err);

#endif
