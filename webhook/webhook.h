/* Webhook: the agent's HTTP API on an embedded civetweb listener (loopback by
 * default), reached by the control plane through the tunnel. */
#ifndef VMA_WEBHOOK_WEBHOOK_H
#define VMA_WEBHOOK_WEBHOOK_H

#include "core/config.h"
#include "core/err.h"

struct wh_server;

/* The modules the API handlers call. Borrowed: they must outlive the server.
 * A NULL member means that part of the agent is not running; its routes
 * answer 503. */
struct probe_exec;
struct health_monitor;
struct tun;
struct cg_tree;
struct budget;
struct ctr_engine;
struct wh_deps {
	struct probe_exec *probe;
	struct health_monitor *health;
	struct tun *tunnel;
	char runtime_dir[PATH_MAX]; /* agent.runtime_dir (0700): a remote upgrade's request */
	struct cg_tree *cgroup; /* shell sessions' containment; NULL = process group */
	struct budget *budget;  /* limits.max_concurrent, a slot per open shell; NULL = none */
	struct ctr_engine *containers; /* /v1/containers; NULL answers 503 */
};

/* Starts the listener described by cfg->webhook. The server copies what it
 * needs from cfg. A busy port or unreadable TLS files are errors (VM_ERR_BUSY,
 * VM_ERR_IO) with the reason in err. */
struct wh_server *wh_start(const struct cfg *cfg, const struct wh_deps *deps, struct vm_err *err);

/* Starts or stops the unix listener the tunnel forwards to, so that it runs
 * exactly while cfg's tunnel uses it (piko.server_url set, piko.forward_addr
 * empty); wh_start already did so for its cfg. A reload calls it before
 * handing the tunnel settings that turn it on (a failure rejects the
 * reload), and after those that turn it off. Stopping ends that listener's
 * shells and SSE streams and waits for its other requests. NULL srv is fine. */
int wh_tunnel_listener_apply(struct wh_server *srv, const struct cfg *cfg, struct vm_err *err);
/* True when cfg's tunnel forwards to that listener. */
bool wh_tunnel_listener_wanted(const struct cfg *cfg);

/* Ends every shell session now (before the tunnel drains its streams: a
 * session would hold its stream for the whole grace). NULL is fine. */
void wh_end_sessions(struct wh_server *srv);

/* Stops accepting, waits for in-flight requests, frees. NULL is fine. */
void wh_stop(struct wh_server *srv);

/* True when the server's settings differ between a and b, key by key
 * (webhook.*, auth.*, agent.id, agent.tenant_id, agent.runtime_dir,
 * piko.max_streams): a reload must restart it. */
bool wh_listener_changed(const struct cfg *a, const struct cfg *b);

#endif
