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
	/* Fetches a fresh Piko token before the current one expires (lifecycle
	 * fills this in). Called on the tunnel thread; must not block for long.
	 * Returns 0 and fills token, or a negative code with the reason in err.
	 * When NULL, the tunnel re-reads piko.token_file instead. */
	int (*token_refresh)(void *ctx, struct secret *token, struct vm_err *err);
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

/* Applies new settings (SIGHUP): the current session drains like a stop
 * (GoAway, grace) and the tunnel reconnects with them. On bad settings returns
 * a negative code and keeps the old ones. */
int tun_reload(struct tun *t, const struct cfg *cfg, struct vm_err *err);

/* Graceful stop: GoAway, lets in-flight streams finish for up to grace_ms,
 * sends a close frame, joins the thread and frees. NULL is fine. */
void tun_stop(struct tun *t, uint64_t grace_ms);

/* A consistent snapshot of the counters; safe from any thread. */
void tun_stats(struct tun *t, struct tun_stats *out);

/* True when the settings the tunnel uses differ between a and b (piko.*,
 * agent.tenant_id, agent.proxy_credentials_file, and the webhook address or
 * socket it forwards to), compared key by key: a reload must hand them to tun_reload. */
bool tun_config_changed(const struct cfg *a, const struct cfg *b);

#endif
