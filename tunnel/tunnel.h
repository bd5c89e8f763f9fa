/* Tunnel: the agent's outbound connection to a Piko server (WebSocket + yamux)
 * and the bridge that serves each stream from the local webhook. One thread,
 * one poll() loop; this header is all the rest of the program uses. */
#ifndef VMA_TUNNEL_TUNNEL_H
#define VMA_TUNNEL_TUNNEL_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "core/config.h"
#include "core/err.h"
#include "core/secret.h"

struct tun;

/* Callbacks the tunnel may use; copied by tun_start. NULL members are fine. */
struct tun_hooks {
	/* Piko refused the token (401/403): ask for a fresh one now. Called on
	 * the tunnel thread, so it must only signal (the renewal runs elsewhere
	 * and comes back through tun_token_set). */
	void (*token_rejected)(void *ctx);
	void *ctx;
};

struct tun_stats {
	bool enabled; /* piko.server_url is set */
	bool connected;
	time_t since;        /* when the current state (connected or not) began */
	uint64_t reconnects; /* sessions established after the first one */
	uint32_t open_streams;
	uint64_t streams_total; /* streams accepted since start */
	uint64_t bytes_in;      /* WebSocket bytes received (after TLS) */
	uint64_t bytes_out;
	char last_error[256]; /* "" when none; never contains a token */
};

/* Starts the tunnel thread for cfg->piko (an empty piko.server_url gives an
 * idle tunnel that a reload can turn on). Returns NULL with err set on bad
 * settings; connection failures are not errors: the thread keeps retrying with
 * backoff. hooks may be NULL. The object lives until tun_stop, so pointers to it
 * (the webhook's deps) stay valid across reloads. */
struct tun *tun_start(const struct cfg *cfg, const struct tun_hooks *hooks, struct vm_err *err);

/* Lets the started tunnel connect: call it once the webhook it forwards to
 * listens, so that Piko is never offered a session whose first requests
 * would find no listener (502). Until then the thread waits. */
void tun_open(struct tun *t);

/* Applies new settings (SIGHUP): the current session drains like a stop
 * (GoAway, grace) and the tunnel reconnects with them. On bad settings returns
 * a negative code and keeps the old ones. */
int tun_reload(struct tun *t, const struct cfg *cfg, struct vm_err *err);

/* Graceful stop: GoAway, lets in-flight streams finish for up to grace_ms,
 * sends a close frame, joins the thread and frees. NULL is fine. */
void tun_stop(struct tun *t, uint64_t grace_ms);

/* Hands the tunnel a renewed Piko token (copied), from any thread but the
 * tunnel's: it is used for every later connect. When a session is up, a new
 * one is dialled with it first (this call blocks up to piko.connect_timeout),
 * then the old one drains (GoAway, in-flight streams finish), so requests are
 * never refused in between. A failed dial is returned and the old session
 * keeps serving until it ends on its own. Every tun_token_set must have
 * returned before tun_stop (the renewal thread stops first). */
int tun_token_set(struct tun *t, const struct secret *token, struct vm_err *err);

/* A consistent snapshot of the counters; safe from any thread. */
void tun_stats(struct tun *t, struct tun_stats *out);

/* True when the settings the tunnel uses differ between a and b (piko.*,
 * agent.tenant_id, agent.proxy_credentials_file, and the webhook address or
 * socket it forwards to), compared key by key: a reload must hand them to tun_reload. */
bool tun_config_changed(const struct cfg *a, const struct cfg *b);

#endif
