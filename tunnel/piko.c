/* Piko upstream: the tunnel thread. Dials {server_url}/piko/v1/upstream/{endpoint}
 * as a WebSocket through libcurl (TLS, CA file, proxy, timeouts), sends the
 * Bearer token and tenant header, runs the session (bridge.c), and reconnects
 * with jittered exponential backoff. Owns struct tun and its counters. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "core/codec.h"
#include "core/cp.h"
#include "core/http.h"
#include "core/log.h"
#include "core/net.h"
#include "tunnel/internal.h"
#include "tunnel/tunnel.h"

#define HANDSHAKE_MAX 16384
/* A session that lasted this long resets the backoff to its initial delay. */
#define STABLE_MS 10000
/* Refresh a token this long before it expires (or a fifth of its life if shorter). */
#define REFRESH_MARGIN_S 60

/* What a reload may change; the thread swaps in a new copy between sessions. */
struct tun_settings {
	char server_url[CFG_STR_MAX]; /* the server dialled now; "" = tunnel off */
	/* piko.server_url then piko.fallback_urls: a dial that fails moves on to
	 * the next (server_url changes under set_lock, tun_token_set reads it) */
	char urls[CFG_LIST_MAX + 1][CFG_STR_MAX];
	int nurls, cur;
	char endpoint[CFG_ID_MAX];
	char tenant[CFG_ID_MAX];
	char token_file[PATH_MAX];
	struct secret cfg_token;
	char ca_file[PATH_MAX];
	bool insecure;
	char proxy_url[CFG_STR_MAX];
	char proxy_credentials_file[PATH_MAX];
	uint64_t connect_timeout_ms;
	struct cfg_reconnect reconnect;
	char forward_unix[108];
	char forward_host[64];
	int forward_port;
	size_t max_streams;
	uint64_t keepalive_ms, keepalive_timeout_ms, stop_grace_ms;
};

struct tun {
	pthread_t thread;
	int wake_fd;
	_Atomic bool stop;
	_Atomic bool reload; /* pending holds new settings */
	_Atomic bool open;   /* tun_open: the webhook listens, connecting may start */
	struct tun_hooks hooks;
	struct tun_settings *set;     /* the thread's; swapped under set_lock */
	struct tun_settings *pending; /* guarded by lock */
	struct bridge_opts bo;
	_Atomic bool token_new; /* tun_token_set was called: stop napping */

	pthread_mutex_t lock; /* guards stats, pending, handed and ready */
	struct tun_stats stats;
	struct secret handed; /* from tun_token_set, preferred when set */
	struct dial *ready;   /* a session dialled by tun_token_set, to take over */
	uint64_t ready_gen;   /* set_gen it was dialled with */
	/* Held while t->set is swapped (tunnel thread) or read by a dial made on
	 * another thread (tun_token_set), so that dial never sees freed settings. */
	pthread_mutex_t set_lock;
	uint64_t set_gen;
};

void tun_note_bytes(struct tun *t, uint64_t in, uint64_t out)
{
	pthread_mutex_lock(&t->lock);
	t->stats.bytes_in += in;
	t->stats.bytes_out += out;
	pthread_mutex_unlock(&t->lock);
}

void tun_note_streams(struct tun *t, uint32_t open, uint64_t accepted)
{
	pthread_mutex_lock(&t->lock);
	t->stats.open_streams = open;
	t->stats.streams_total += accepted;
	pthread_mutex_unlock(&t->lock);
}

void tun_note_error(struct tun *t, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&t->lock);
	snprintf(t->stats.last_error, sizeof(t->stats.last_error), "%s", msg);
	pthread_mutex_unlock(&t->lock);
}

static void set_connected(struct tun *t, bool up, bool count_reconnect)
{
	pthread_mutex_lock(&t->lock);
	t->stats.connected = up;
	t->stats.since = time(NULL);
	if (up && count_reconnect)
		t->stats.reconnects++;
	pthread_mutex_unlock(&t->lock);
}

void tun_stats(struct tun *t, struct tun_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (t == NULL)
		return;
	pthread_mutex_lock(&t->lock);
	*out = t->stats;
	pthread_mutex_unlock(&t->lock);
}

int64_t tun_jwt_exp(const char *token)
{
	int64_t iat, exp;
	return cp_token_times(token, &iat, &exp) == 0 ? exp : 0;
}

/* --- settings ------------------------------------------------------------------------ */

static int parse_forward(const struct cfg *cfg, struct tun_settings *bo, struct vm_err *err)
{
	const char *fa = cfg->piko.forward_addr;
	if (fa[0] == '\0') {
		/* The webhook's unix listener: tunnel traffic has its own workers. */
		cfg_webhook_socket_path(cfg, bo->forward_unix, sizeof(bo->forward_unix));
		const char *h = cfg->webhook.listen_addr;
		/* A wildcard listener is reachable on loopback. */
		if (strcmp(h, "0.0.0.0") == 0 || strcmp(h, "localhost") == 0)
			h = "127.0.0.1";
		else if (strcmp(h, "::") == 0 || strcmp(h, "[::]") == 0)
			h = "::1";
		size_t l = strlen(h);
		if (h[0] == '[' && l > 2 && h[l - 1] == ']')
			snprintf(bo->forward_host, sizeof(bo->forward_host), "%.*s", (int)(l - 2),
			         h + 1);
		else
			snprintf(bo->forward_host, sizeof(bo->forward_host), "%s", h);
		bo->forward_port = cfg->webhook.port;
		return 0;
	}
	/* the loader's rule (core/net), so what passed there connects here */
	int rc = net_parse_hostport(fa, bo->forward_host, sizeof(bo->forward_host),
	                            &bo->forward_port, err);
	if (rc != 0 && err != NULL) {
		char msg[sizeof(err->msg)];
		snprintf(msg, sizeof(msg), "%s", err->msg);
		vm_err_set(err, err->code, "piko.forward_addr: %s", msg);
	}
	return rc;
}

/* What the tunnel reads from the configuration, by key: compared value by
 * value (padding and bytes after a NUL would force needless reconnects). */
static const char *const tun_keys[] = {"piko.", "agent.tenant_id", "agent.proxy_credentials_file",
                                       NULL};
/* where it forwards to when piko.forward_addr is empty: the webhook's
 * address, or its unix socket in the runtime directory */
static const char *const tun_forward_keys[] = {"webhook.listen_addr", "webhook.port",
                                               "agent.runtime_dir", NULL};

bool tun_config_changed(const struct cfg *a, const struct cfg *b)
{
	return cfg_keys_differ(a, b, tun_keys) ||
	       (a->piko.forward_addr[0] == '\0' && cfg_keys_differ(a, b, tun_forward_keys));
}

/* --- dialing ------------------------------------------------------------------------- */

static int progress_cb(void *clientp, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
	(void)a, (void)b, (void)c, (void)d;
	struct tun *t = clientp;
	return atomic_load(&t->stop) ? 1 : 0; /* abort a slow connect on tun_stop */
}

/* Waits for fd to be ready for events until deadline (monotonic ms). */
static int wait_fd(struct tun *t, int fd, short events, uint64_t deadline)
{
	for (;;) {
		uint64_t now = tun_now_ms();
		if (now >= deadline)
			return -1;
		struct pollfd p[2] = {{.fd = fd, .events = events},
		                      {.fd = t->wake_fd, .events = POLLIN}};
		int r = poll(p, 2, (int)(deadline - now));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 || (p[1].revents & POLLIN))
			return -1;
		if (r > 0)
			return 0;
	}
}

/* The request line's path: the server URL's path (if any) + the upstream route. */
static int upstream_target(const struct tun_settings *set, char *host, size_t hcap, char *path,
                           size_t pcap, struct vm_err *err)
{
	CURLU *u = curl_url();
	char *h = NULL, *port = NULL, *p = NULL;
	int rc = 0;
	if (u == NULL || curl_url_set(u, CURLUPART_URL, set->server_url, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &h, 0) != CURLUE_OK) {
		rc = vm_err_set(err, VM_ERR_INVALID, "piko.server_url is not a valid URL");
		goto out;
	}
	(void)curl_url_get(u, CURLUPART_PORT, &port, 0);
	(void)curl_url_get(u, CURLUPART_PATH, &p, 0);
	snprintf(host, hcap, "%s%s%s", h, port ? ":" : "", port ? port : "");
	size_t pl = p ? strlen(p) : 0;
	while (pl > 0 && p[pl - 1] == '/')
		pl--;
	snprintf(path, pcap, "%.*s/piko/v1/upstream/%s", (int)pl, p ? p : "", set->endpoint);
out:
	curl_free(h);
	curl_free(port);
	curl_free(p);
	curl_url_cleanup(u);
	return rc;
}

static int send_all(struct tun *t, CURL *c, int fd, const char *buf, size_t len, uint64_t deadline,
                    struct vm_err *err)
{
	while (len > 0) {
		size_t n = 0;
		CURLcode rc = curl_easy_send(c, buf, len, &n);
		if (rc == CURLE_AGAIN) {
			if (wait_fd(t, fd, POLLOUT, deadline) != 0)
				return vm_err_set(err, VM_ERR_IO,
				                  "timed out sending the WebSocket handshake");
			continue;
		}
		if (rc != CURLE_OK)
			return vm_err_set(err, VM_ERR_IO, "sending the handshake: %s",
			                  curl_easy_strerror(rc));
		buf += n;
		len -= n;
	}
	return 0;
}

/* One connection: the curl handle and everything libcurl keeps a pointer to.
 * The error buffer lives here, not on a stack, because libcurl writes into it
 * on every failed curl_easy_recv/send for as long as the handle lives; only
 * dial_free ends both, in that order. */
struct dial {
	CURL *curl;
	char errbuf[CURL_ERROR_SIZE];
	int fd;
	int status; /* HTTP status of the upgrade response */
	char head[HANDSHAKE_MAX + 1];
	size_t head_len;  /* bytes read */
	size_t early_off; /* where the WebSocket stream starts in head */
};

static void dial_free(struct dial *d)
{
	if (d == NULL)
		return;
	curl_easy_cleanup(d->curl);
	free(d);
}

/* Header values go into the request verbatim: no CR/LF or other controls. */
static bool header_safe(const char *v)
{
	for (; v != NULL && *v; v++)
		if ((unsigned char)*v < 0x20 || *v == 0x7f)
			return false;
	return true;
}

static int dial(struct tun *t, const struct tun_settings *set, const struct secret *token,
                struct dial *d, struct vm_err *err)
{
	if (!header_safe(token->value))
		return vm_err_set(err, VM_ERR_INVALID,
		                  "the Piko token contains control characters");
	if (!header_safe(set->tenant))
		return vm_err_set(err, VM_ERR_INVALID,
		                  "agent.tenant_id contains control characters");
	char host[CFG_STR_MAX], path[CFG_STR_MAX + CFG_ID_MAX + 32];
	int rc = upstream_target(set, host, sizeof(host), path, sizeof(path), err);
	if (rc != 0)
		return rc;
	CURL *c = curl_easy_init();
	if (c == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "curl_easy_init failed");
	d->curl = c;
	curl_easy_setopt(c, CURLOPT_URL, set->server_url);
	curl_easy_setopt(c, CURLOPT_CONNECT_ONLY, 1L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, d->errbuf);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)set->connect_timeout_ms);
	curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, progress_cb);
	curl_easy_setopt(c, CURLOPT_XFERINFODATA, t); /* t outlives the thread's handles */
	/* Through a proxy, always tunnel (CONNECT), also for http:// servers. */
	curl_easy_setopt(c, CURLOPT_HTTPPROXYTUNNEL, 1L);
	if ((rc = http_proxy_apply(c, set->proxy_url, set->proxy_credentials_file, err)) != 0)
		return rc;
	const char *ca = http_ca_bundle(set->ca_file);
	if (ca != NULL)
		curl_easy_setopt(c, CURLOPT_CAINFO, ca);
	if (set->insecure) {
		curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	CURLcode cr = curl_easy_perform(c);
	if (cr != CURLE_OK)
		return vm_err_set(err, VM_ERR_IO, "%s",
		                  d->errbuf[0] ? d->errbuf : curl_easy_strerror(cr));
	curl_socket_t s = CURL_SOCKET_BAD;
	if (curl_easy_getinfo(c, CURLINFO_ACTIVESOCKET, &s) != CURLE_OK || s == CURL_SOCKET_BAD)
		return vm_err_set(err, VM_ERR_IO, "no socket after connecting");
	d->fd = (int)s;

	uint8_t raw[16];
	char key[25];
	if (rand_bytes(raw, sizeof(raw), err) != 0)
		return -VM_ERR_IO;
	ws_key_encode(raw, key);
	size_t reqcap = 2048 + (token->value ? token->len : 0);
	char *req = malloc(reqcap);
	if (req == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	int n = snprintf(
	    req, reqcap,
	    "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
	    "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
	    "User-Agent: vm-agent\r\n%s%s%s%s%s%s\r\n",
	    path, host, key, token->value ? "Authorization: Bearer " : "",
	    token->value ? token->value : "", token->value ? "\r\n" : "",
	    set->tenant[0] ? "x-piko-tenant-id: " : "", set->tenant, set->tenant[0] ? "\r\n" : "");
	uint64_t deadline = tun_now_ms() + set->connect_timeout_ms;
	rc = n > 0 && (size_t)n < reqcap ? send_all(t, c, d->fd, req, (size_t)n, deadline, err)
	                                 : vm_err_set(err, VM_ERR_INVALID, "handshake too long");
	explicit_bzero(req, reqcap);
	free(req);
	if (rc != 0)
		return rc;
	for (;;) {
		size_t got = 0;
		cr = curl_easy_recv(c, d->head + d->head_len, HANDSHAKE_MAX - d->head_len, &got);
		if (cr == CURLE_AGAIN) {
			if (wait_fd(t, d->fd, POLLIN, deadline) != 0)
				return vm_err_set(err, VM_ERR_IO,
				                  "timed out waiting for the handshake response");
			continue;
		}
		if (cr != CURLE_OK)
			return vm_err_set(err, VM_ERR_IO, "reading the handshake: %s",
			                  curl_easy_strerror(cr));
		if (got == 0)
			return vm_err_set(err, VM_ERR_IO,
			                  "server closed the connection during the handshake");
		d->head_len += got;
		long hl = ws_handshake_parse(d->head, d->head_len, key, &d->status, err);
		if (hl < 0)
			return -VM_ERR_INVALID;
		if (hl > 0) {
			d->early_off = (size_t)hl;
			break;
		}
		if (d->head_len >= HANDSHAKE_MAX)
			return vm_err_set(err, VM_ERR_INVALID, "handshake response too large");
	}
	if (d->status == 401 || d->status == 403)
		return vm_err_set(err, VM_ERR_PERM, "HTTP %d", d->status);
	if (d->status != 101)
		return vm_err_set(err, VM_ERR_IO,
		                  "server answered HTTP %d instead of 101 (check "
		                  "piko.server_url and piko.endpoint)",
		                  d->status);
	return 0;
}

/* --- the thread ---------------------------------------------------------------------- */

static int load_token(struct tun *t, struct secret *tok, struct vm_err *err)
{
	pthread_mutex_lock(&t->lock);
	int rc = t->handed.value != NULL ? secret_set(tok, t->handed.value, err) : 1;
	pthread_mutex_unlock(&t->lock);
	if (rc > 0 && t->set->token_file[0])
		rc = secret_load_file(tok, t->set->token_file, err);
	else if (rc > 0 && t->set->cfg_token.value != NULL)
		rc = secret_set(tok, t->set->cfg_token.value, err);
	else if (rc > 0)
		rc = 0;
	/* The one token limit: a longer one is an error, never cut. */
	if (rc == 0 && tok->len > CP_TOKEN_MAX) {
		rc = vm_err_set(err, VM_ERR_INVALID, "the Piko token is %zu bytes, more than %d",
		                tok->len, CP_TOKEN_MAX);
		secret_clear(tok);
	}
	return rc;
}

/* Resets the wake eventfd after a reload (a stop leaves it readable on purpose). */
static void wake_reset(struct tun *t)
{
	uint64_t v;
	if (!atomic_load(&t->stop) && read(t->wake_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_debug("tunnel", "wake: %s", strerror(errno));
}

/* Sleeps ms (interrupted by tun_stop). */
static void nap(struct tun *t, uint64_t ms)
{
	uint64_t deadline = tun_now_ms() + ms;
	while (!atomic_load(&t->stop)) {
		uint64_t now = tun_now_ms();
		if (now >= deadline)
			return;
		struct pollfd p = {.fd = t->wake_fd, .events = POLLIN};
		(void)poll(&p, 1, (int)(deadline - now > 1000 ? 1000 : deadline - now));
		if (atomic_load(&t->reload) || atomic_exchange(&t->token_new, false))
			return; /* new settings or a new token: reconnect now */
		wake_reset(t);
	}
}

/* The core backoff (http_backoff_ms: full jitter) with the piko.reconnect settings. */
static uint64_t reconnect_delay(const struct tun *t, unsigned failures)
{
	struct http_retry r = {.initial_delay_ms = t->set->reconnect.initial_delay_ms,
	                       .max_delay_ms = t->set->reconnect.max_delay_ms,
	                       .multiplier = t->set->reconnect.multiplier};
	return http_backoff_next_ms(&r, failures, -1);
}

/* When to reconnect for a fresh token, or 0 when the token has no exp or no
 * new token could come from anywhere. */
static uint64_t refresh_time(struct tun *t, int64_t exp)
{
	int64_t now = (int64_t)time(NULL);
	if (exp == 0)
		return 0;
	if (exp <= now) {
		log_warn("tunnel",
		         "the Piko token expired %" PRId64 " s ago; the server will refuse "
		         "it (refresh piko.token_file)",
		         now - exp);
		return 0;
	}
	if (t->set->token_file[0] == '\0')
		return 0; /* nothing can bring a newer token but tun_token_set */
	int64_t left = exp - now;
	int64_t margin = left / 5 < REFRESH_MARGIN_S ? left / 5 : REFRESH_MARGIN_S;
	return tun_now_ms() + (uint64_t)(left - margin) * 1000u;
}

static const char *end_reason(enum tun_end e)
{
	static const char *const names[] = {
	    [TUN_END_STOP] = "stopped",
	    [TUN_END_CLOSED] = "connection closed",
	    [TUN_END_GOAWAY] = "server sent GoAway",
	    [TUN_END_REFRESH] = "token refresh",
	    [TUN_END_ERROR] = "error",
	    [TUN_END_RELOAD] = "configuration reloaded",
	};
	return names[e];
}

static bool settings_take(struct tun *t);

/* The session tun_token_set dialled, if it was made with the current settings. */
static struct dial *ready_take(struct tun *t)
{
	pthread_mutex_lock(&t->lock);
	struct dial *d = t->ready;
	bool current = d != NULL && t->ready_gen == t->set_gen;
	t->ready = NULL;
	pthread_mutex_unlock(&t->lock);
	if (d != NULL && !current) {
		dial_free(d);
		d = NULL;
	}
	return d;
}

/* After a failed dial: the next server of the list (wrapping), if there is one. */
static void next_server(struct tun *t)
{
	if (t->set->nurls < 2)
		return;
	pthread_mutex_lock(&t->set_lock);
	struct tun_settings *s = t->set;
	s->cur = (s->cur + 1) % s->nurls;
	_Static_assert(sizeof(s->server_url) == sizeof(s->urls[0]), "same size");
	memcpy(s->server_url, s->urls[s->cur], sizeof(s->server_url));
	pthread_mutex_unlock(&t->set_lock);
	log_info("tunnel", "next Piko server: %s (%d of %d)", url_shown(s->server_url).s,
	         s->cur + 1, s->nurls);
}

static void *tun_main(void *arg)
{
	struct tun *t = arg;
	uint64_t delay = t->set->reconnect.initial_delay_ms;
	unsigned failures = 0; /* consecutive, for the backoff */
	bool ever_connected = false;
	int64_t refreshed_exp = 0; /* exp of the token we last reconnected to replace */
	while (!atomic_load(&t->stop)) {
		struct vm_err err = {0};
		struct secret tok = {0};
		uint64_t wait = 0;
		if (settings_take(t))
			failures = 0;
		delay = t->set->reconnect.initial_delay_ms;
		if (t->set->server_url[0] == '\0' || !atomic_load(&t->open)) {
			/* Off: sleep until a reload or stop. */
			struct pollfd p = {.fd = t->wake_fd, .events = POLLIN};
			(void)poll(&p, 1, -1);
			wake_reset(t);
			continue;
		}
		struct dial *d = ready_take(t);
		bool handover = d != NULL;
		if (load_token(t, &tok, &err) != 0) {
			dial_free(d);
			wait = reconnect_delay(t, ++failures);
			log_error("tunnel", "cannot read the Piko token (%s); retrying in %.1fs",
			          err.msg, (double)wait / 1000.0);
			tun_note_error(t, "cannot read the Piko token (%s)", err.msg);
			nap(t, wait);
			continue;
		}
		int rc = 0;
		if (d == NULL) {
			d = calloc(1, sizeof(*d));
			if (d == NULL) {
				secret_clear(&tok);
				nap(t, delay);
				continue;
			}
			d->fd = -1;
			rc = dial(t, t->set, &tok, d, &err);
		}
		if (rc == 0) {
			log_info("tunnel", "connected to %s as endpoint %s%s",
			         url_shown(t->set->server_url).s, t->set->endpoint,
			         handover ? " (renewed token; the previous session drained)" : "");
			set_connected(t, true, ever_connected);
			ever_connected = true;
			uint64_t started = tun_now_ms();
			/* The same token again after a refresh: nothing newer exists, so let
			 * the server end the session at exp rather than reconnecting in a loop.
			 * A renewed token (tun_token_set) is replaced before exp by a
			 * handover, so the session itself never ends for a refresh. */
			int64_t exp = tok.value ? tun_jwt_exp(tok.value) : 0;
			pthread_mutex_lock(&t->lock);
			bool renewed = t->handed.value != NULL;
			pthread_mutex_unlock(&t->lock);
			t->bo.refresh_at_ms =
			    !renewed && exp != refreshed_exp ? refresh_time(t, exp) : 0;
			secret_clear(&tok);
			enum tun_end end =
			    bridge_run(t, d->curl, d->fd, (uint8_t *)d->head + d->early_off,
			               d->head_len - d->early_off, &t->bo);
			set_connected(t, false, false);
			struct tun_stats st;
			tun_stats(t, &st);
			/* libcurl's own reason (e.g. "Connection reset by peer") says more
			 * than the CURLcode the bridge saw. */
			if (end == TUN_END_CLOSED && d->errbuf[0] != '\0' &&
			    st.last_error[0] != '\0') {
				tun_note_error(t, "%.120s (%.120s)", st.last_error, d->errbuf);
				tun_stats(t, &st);
			}
			dial_free(d);
			if (end == TUN_END_STOP)
				break;
			if (tun_now_ms() - started >= STABLE_MS)
				failures = 0;
			if (end == TUN_END_REFRESH || end == TUN_END_RELOAD) {
				if (end == TUN_END_REFRESH)
					refreshed_exp = exp;
				pthread_mutex_lock(&t->lock);
				bool next_ready = t->ready != NULL;
				pthread_mutex_unlock(&t->lock);
				if (next_ready)
					log_info("tunnel", "previous session drained; the session "
					                   "with the renewed token takes over");
				else
					log_info("tunnel", "disconnected (%s); reconnecting now",
					         end_reason(end));
				continue;
			}
			if (end == TUN_END_GOAWAY) {
				/* A server going away is normal (restart, rebalancing): come back
				 * soon, but not in a tight loop if it keeps doing it. */
				wait = reconnect_delay(t, 1);
				log_info("tunnel", "disconnected (%s); reconnecting in %.1fs",
				         end_reason(end), (double)wait / 1000.0);
				nap(t, wait);
				continue;
			}
			wait = reconnect_delay(t, ++failures);
			log_warn("tunnel", "disconnected: %s; reconnecting in %.1fs",
			         st.last_error[0] ? st.last_error : end_reason(end),
			         (double)wait / 1000.0);
			nap(t, wait);
			continue;
		}
		secret_clear(&tok);
		dial_free(d);
		if (atomic_load(&t->stop))
			break;
		if (rc == -VM_ERR_PERM) {
			/* A rejected token will not fix itself: ask for a fresh one now
			 * (tun_token_set ends the wait) and otherwise retry at the max delay. */
			if (t->hooks.token_rejected != NULL)
				t->hooks.token_rejected(t->hooks.ctx);
			wait = t->set->reconnect.max_delay_ms;
			log_error(
			    "tunnel",
			    "Piko rejected the agent's credentials (%s) for endpoint %s "
			    "at %s: check piko.token / piko.token_file (its piko.endpoints claim) "
			    "and agent.tenant_id; retrying in %.1fs or with a renewed token",
			    err.msg, t->set->endpoint, url_shown(t->set->server_url).s,
			    (double)wait / 1000.0);
			tun_note_error(t, "Piko rejected the agent's credentials (%s)", err.msg);
		} else {
			wait = reconnect_delay(t, ++failures);
			log_warn("tunnel", "cannot connect to %s: %s; retrying in %.1fs",
			         url_shown(t->set->server_url).s, err.msg, (double)wait / 1000.0);
			tun_note_error(t, "cannot connect: %s", err.msg);
			next_server(t);
		}
		nap(t, wait);
	}
	return NULL;
}

static void settings_free(struct tun_settings *ts)
{
	if (ts == NULL)
		return;
	secret_clear(&ts->cfg_token);
	free(ts);
}

static struct tun_settings *settings_new(const struct cfg *cfg, struct vm_err *err)
{
	struct tun_settings *ts = calloc(1, sizeof(*ts));
	if (ts == NULL) {
		vm_err_set(err, VM_ERR_NOMEM, "out of memory");
		return NULL;
	}
	if (parse_forward(cfg, ts, err) != 0 ||
	    (cfg->piko.token[0] && secret_set(&ts->cfg_token, cfg->piko.token, err) != 0)) {
		settings_free(ts);
		return NULL;
	}
	snprintf(ts->server_url, sizeof(ts->server_url), "%s", cfg->piko.server_url);
	if (cfg->piko.server_url[0] != '\0') {
		snprintf(ts->urls[ts->nurls++], CFG_STR_MAX, "%s", cfg->piko.server_url);
		for (int i = 0; i < cfg->piko.fallback_urls.count; i++)
			snprintf(ts->urls[ts->nurls++], CFG_STR_MAX, "%s",
			         cfg->piko.fallback_urls.items[i]);
	}
	snprintf(ts->endpoint, sizeof(ts->endpoint), "%s", cfg->piko.endpoint);
	snprintf(ts->tenant, sizeof(ts->tenant), "%s", cfg->agent.tenant_id);
	snprintf(ts->token_file, sizeof(ts->token_file), "%s", cfg->piko.token_file);
	snprintf(ts->ca_file, sizeof(ts->ca_file), "%s", cfg->piko.ca_file);
	snprintf(ts->proxy_url, sizeof(ts->proxy_url), "%s", cfg->piko.proxy_url);
	snprintf(ts->proxy_credentials_file, sizeof(ts->proxy_credentials_file), "%s",
	         cfg->agent.proxy_credentials_file);
	ts->insecure = cfg->piko.insecure_skip_verify;
	ts->connect_timeout_ms = cfg->piko.connect_timeout_ms;
	ts->reconnect = cfg->piko.reconnect;
	ts->max_streams = (size_t)cfg->piko.max_streams;
	ts->keepalive_ms = cfg->piko.keepalive_interval_ms;
	ts->keepalive_timeout_ms = cfg->piko.keepalive_timeout_ms;
	ts->stop_grace_ms = cfg->piko.stop_grace_ms;
	return ts;
}

/* Makes ts the thread's settings (on the tunnel thread, between sessions). */
static void settings_apply(struct tun *t, struct tun_settings *ts)
{
	pthread_mutex_lock(&t->set_lock);
	settings_free(t->set);
	t->set = ts;
	pthread_mutex_unlock(&t->set_lock);
	pthread_mutex_lock(&t->lock);
	t->set_gen++;
	t->stats.enabled = ts->server_url[0] != '\0';
	pthread_mutex_unlock(&t->lock);
	snprintf(t->bo.forward_unix, sizeof(t->bo.forward_unix), "%s", ts->forward_unix);
	snprintf(t->bo.forward_host, sizeof(t->bo.forward_host), "%s", ts->forward_host);
	t->bo.forward_port = ts->forward_port;
	t->bo.max_streams = ts->max_streams;
	t->bo.keepalive_ms = ts->keepalive_ms;
	t->bo.keepalive_timeout_ms = ts->keepalive_timeout_ms;
	if (!atomic_load(&t->stop))
		atomic_store(&t->bo.stop_grace_ms, ts->stop_grace_ms);
	if (ts->server_url[0] == '\0') {
		log_info("tunnel", "tunnel off: piko.server_url is not set");
		return;
	}
	if (ts->insecure)
		log_warn("tunnel",
		         "piko.insecure_skip_verify is set: the server's TLS certificate is "
		         "NOT verified; anyone on the path can impersonate the Piko server");
	for (int i = 0; i < ts->nurls; i++)
		if (strncmp(ts->urls[i], "http://", 7) == 0)
			log_warn("tunnel",
			         "%s uses plain http://: the token and all traffic are "
			         "unencrypted",
			         i == 0 ? "piko.server_url" : "a piko.fallback_urls entry");
	if (ts->forward_unix[0] != '\0')
		log_info("tunnel", "tunnel to %s, endpoint %s, forwarding to %s",
		         url_shown(ts->server_url).s, ts->endpoint, ts->forward_unix);
	else
		log_info("tunnel", "tunnel to %s, endpoint %s, forwarding to %s:%d",
		         url_shown(ts->server_url).s, ts->endpoint, ts->forward_host,
		         ts->forward_port);
	if (ts->nurls > 1)
		log_info("tunnel", "%d fallback Piko servers, tried in order when one cannot "
		                   "be reached", ts->nurls - 1);
}

/* Takes new settings from tun_reload, if any. */
static bool settings_take(struct tun *t)
{
	if (!atomic_exchange(&t->reload, false))
		return false;
	pthread_mutex_lock(&t->lock);
	struct tun_settings *ts = t->pending;
	t->pending = NULL;
	pthread_mutex_unlock(&t->lock);
	if (ts != NULL)
		settings_apply(t, ts);
	return ts != NULL;
}

static void wake(struct tun *t)
{
	uint64_t one = 1;
	if (write(t->wake_fd, &one, sizeof(one)) < 0)
		log_debug("tunnel", "wake: %s", strerror(errno));
}

void tun_open(struct tun *t)
{
	if (t == NULL || atomic_exchange(&t->open, true))
		return;
	wake(t);
}

struct tun *tun_start(const struct cfg *cfg, const struct tun_hooks *hooks, struct vm_err *err)
{
	struct tun *t = calloc(1, sizeof(*t));
	if (t == NULL) {
		vm_err_set(err, VM_ERR_NOMEM, "out of memory");
		return NULL;
	}
	t->wake_fd = -1;
	/* Before anything locks them (settings_apply does). */
	pthread_mutex_init(&t->lock, NULL);
	pthread_mutex_init(&t->set_lock, NULL);
	struct tun_settings *ts = settings_new(cfg, err);
	if (ts == NULL)
		goto fail;
	if (hooks != NULL)
		t->hooks = *hooks;
	t->bo.stop = &t->stop;
	t->bo.reload = &t->reload;
	settings_apply(t, ts);
	t->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (t->wake_fd < 0) {
		vm_err_errno(err, VM_ERR_IO, errno, "eventfd");
		goto fail;
	}
	t->bo.wake_fd = t->wake_fd;
	t->stats.since = time(NULL);
	int prc = pthread_create(&t->thread, NULL, tun_main, t);
	if (prc != 0) {
		vm_err_errno(err, VM_ERR_INTERNAL, prc, "cannot start the tunnel thread");
		goto fail;
	}
	return t;
fail:
	if (t->wake_fd >= 0)
		close(t->wake_fd);
	settings_free(t->set);
	pthread_mutex_destroy(&t->lock);
	pthread_mutex_destroy(&t->set_lock);
	free(t);
	return NULL;
}

int tun_reload(struct tun *t, const struct cfg *cfg, struct vm_err *err)
{
	struct tun_settings *ts = settings_new(cfg, err);
	if (ts == NULL)
		return -(err ? err->code : VM_ERR_INVALID);
	pthread_mutex_lock(&t->lock);
	settings_free(t->pending);
	t->pending = ts;
	pthread_mutex_unlock(&t->lock);
	atomic_store(&t->reload, true);
	wake(t);
	return 0;
}

int tun_token_set(struct tun *t, const struct secret *token, struct vm_err *err)
{
	if (token->value == NULL)
		return vm_err_set(err, VM_ERR_INVALID, "empty Piko token");
	pthread_mutex_lock(&t->lock);
	int rc = secret_set(&t->handed, token->value, err);
	bool up = t->stats.connected;
	pthread_mutex_unlock(&t->lock);
	if (rc != 0)
		return rc;
	atomic_store(&t->token_new, true);
	if (!up || atomic_load(&t->stop)) {
		wake(t); /* a nap after a refused token ends now */
		return 0;
	}
	/* Make before break: the new session exists (and the server routes new
	 * requests to it) before the current one sends GoAway. */
	struct dial *d = calloc(1, sizeof(*d));
	if (d == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	d->fd = -1;
	pthread_mutex_lock(&t->set_lock);
	pthread_mutex_lock(&t->lock);
	uint64_t gen = t->set_gen;
	pthread_mutex_unlock(&t->lock);
	rc = t->set->server_url[0] != '\0' ? dial(t, t->set, token, d, err)
	                                   : vm_err_set(err, VM_ERR_INVALID, "the tunnel is off");
	pthread_mutex_unlock(&t->set_lock);
	if (rc != 0) {
		dial_free(d);
		return rc;
	}
	pthread_mutex_lock(&t->lock);
	dial_free(t->ready);
	t->ready = d;
	t->ready_gen = gen;
	pthread_mutex_unlock(&t->lock);
	/* The reload flag makes the running session drain; tun_main then takes
	 * the ready one instead of dialling. */
	atomic_store(&t->reload, true);
	wake(t);
	return 0;
}

void tun_stop(struct tun *t, uint64_t grace_ms)
{
	if (t == NULL)
		return;
	atomic_store(&t->bo.stop_grace_ms, grace_ms);
	atomic_store(&t->stop, true);
	wake(t);
	pthread_join(t->thread, NULL);
	close(t->wake_fd);
	pthread_mutex_destroy(&t->lock);
	pthread_mutex_destroy(&t->set_lock);
	settings_free(t->set);
	settings_free(t->pending);
	secret_clear(&t->handed);
	dial_free(t->ready);
	free(t);
	log_info("tunnel", "tunnel stopped");
}
