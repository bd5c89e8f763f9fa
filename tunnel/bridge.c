/* The connected tunnel: one poll() loop over the WebSocket socket and one
 * non-blocking connection to the local webhook (its unix socket, or TCP when
 * piko.forward_addr says so) per yamux stream. Bytes
 * from the server go ws_rx -> yamux -> stream rx buffer -> local socket; bytes
 * from the webhook go local socket -> yamux data frame -> masked ws frame -> tx. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <curl/curl.h>

#include "core/log.h"
#include "tunnel/internal.h"

/* Stop reading new work while this much is queued for the server... */
#define TX_SOFT (512u * 1024u)
/* ...which bounds the queue: control replies to one read burst fit in the rest. */
#define TX_MAX (4u * 1024u * 1024u)
/* All streams together buffer at most this much from the server; above it the
 * WebSocket is not read until the webhook drains some (each stream is also
 * bounded by its 256 KiB window). */
#define RX_BUDGET      (16u * 1024u * 1024u)
#define RBUF_LEN       (64u * 1024u)
#define DATA_FRAME_MAX (64u * 1024u)
#define RECV_BURST     64
#define FLUSH_MS       1000

struct br_conn {
	int fd;
	struct ymx_stream *st; /* NULL once the stream is gone */
	bool connected;
	bool rd_eof;  /* the webhook closed its side: FIN sent */
	bool wr_shut; /* the server closed its side and we passed that on */
	bool wr_gone; /* the webhook stopped reading (answered early): drop the rest */
	bool dead;    /* reset or failed: clean up in the loop */
	struct br_conn *prev, *next;
};

struct bridge {
	struct tun *t;
	const struct bridge_opts *o;
	CURL *curl;
	int fd;
	struct ws_rx rx;
	struct buf tx;
	struct ymx_session ymx;
	struct br_conn *conns;
	size_t nconns;
	uint64_t mask_state;
	uint8_t *rbuf;
	bool rx_pending; /* stopped reading early: TLS may hold buffered bytes */
	bool ended;
	enum tun_end end;
	uint64_t bytes_in, bytes_out, accepted;
	uint32_t noted_open;
	uint64_t warn_ms;      /* last "cannot reach the webhook" line */
	unsigned warn_dropped; /* lines suppressed since */
	struct pollfd *pfd;
	struct br_conn **pconn;
	size_t pcap;
};

static void end_session(struct bridge *b, enum tun_end end, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void end_session(struct bridge *b, enum tun_end end, const char *fmt, ...)
{
	if (b->ended)
		return;
	b->ended = true;
	b->end = end;
	if (fmt != NULL) {
		char msg[256];
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		tun_note_error(b->t, "%s", msg);
	}
}

/* Masking keys only defeat cache poisoning by browser scripts; a fast PRNG
 * seeded from the system RNG is enough for a non-browser client. */
static void next_mask(struct bridge *b, uint8_t mask[4])
{
	uint64_t x = b->mask_state;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	b->mask_state = x;
	memcpy(mask, &x, 4);
}

/* Queues one masked frame whose payload is a followed by c. */
static int queue_frame(struct bridge *b, uint8_t opcode, const uint8_t *a, size_t alen,
                       const uint8_t *c, size_t clen)
{
	uint8_t hdr[WS_HDR_MAX], mask[4];
	next_mask(b, mask);
	size_t hlen = ws_frame_hdr_encode(hdr, opcode, true, alen + clen, mask);
	uint8_t *dst = buf_reserve(&b->tx, hlen + alen + clen);
	if (dst == NULL)
		return -1;
	memcpy(dst, hdr, hlen);
	ws_mask_copy(dst + hlen, a, alen, mask, 0);
	ws_mask_copy(dst + hlen + alen, c, clen, mask, alen);
	buf_commit(&b->tx, hlen + alen + clen);
	return 0;
}

static int ymx_send_cb(void *ctx, const uint8_t hdr[YMX_HDR_LEN], const uint8_t *payload,
                       size_t len)
{
	return queue_frame(ctx, WS_OP_BINARY, hdr, YMX_HDR_LEN, payload, len);
}

/* --- local connections --------------------------------------------------------------- */

static void conn_kill(struct bridge *b, struct br_conn *c, const char *why)
{
	if (c->dead)
		return;
	if (why != NULL)
		log_debug("tunnel", "stream %u: %s", c->st ? c->st->id : 0, why);
	c->dead = true;
	if (c->st != NULL)
		(void)ymx_stream_reset(&b->ymx, c->st);
}

/* Writes what the server sent to the webhook; passes on its half-close. */
static void conn_flush(struct bridge *b, struct br_conn *c)
{
	struct ymx_stream *st = c->st;
	if (c->dead || !c->connected || st == NULL)
		return;
	while (st->rx.len > 0) {
		ssize_t n = c->wr_gone ? (ssize_t)st->rx.len
		                       : send(c->fd, buf_data(&st->rx), st->rx.len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
			/* The webhook answered without reading the whole request (a
			 * 401 before the body) and closed: its answer is still to be
			 * read, so keep the stream and discard what it will not read. */
			c->wr_gone = true;
			continue;
		}
		if (n <= 0) {
			conn_kill(b, c, "write to the local webhook failed");
			return;
		}
		if (ymx_stream_consume(&b->ymx, st, (size_t)n) != 0) {
			end_session(b, TUN_END_ERROR, "send queue full");
			return;
		}
	}
	if (st->remote_fin && !c->wr_shut) {
		if (!c->wr_gone)
			shutdown(c->fd, SHUT_WR);
		c->wr_shut = true;
	}
}

/* Reads from the webhook into data frames while the window and queue allow. */
static void conn_read(struct bridge *b, struct br_conn *c)
{
	struct ymx_stream *st = c->st;
	while (!c->dead && st != NULL && !c->rd_eof && st->send_window > 0 && b->tx.len < TX_SOFT) {
		size_t want = st->send_window < RBUF_LEN ? st->send_window : RBUF_LEN;
		ssize_t n = recv(c->fd, b->rbuf, want, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		/* Our webhook's unix socket, closed with request bytes unread
		 * (an early answer), reports a reset after the answer: that answer
		 * is complete, end it with FIN. From a TCP origin a reset stays one. */
		if (n < 0 && (errno != ECONNRESET || b->o->forward_unix[0] == '\0')) {
			conn_kill(b, c, "read from the local webhook failed");
			return;
		}
		if (n <= 0) {
			c->rd_eof = true;
			if (ymx_stream_close(&b->ymx, st) != 0)
				end_session(b, TUN_END_ERROR, "send queue full");
			return;
		}
		/* want <= send_window, so every byte fits in one or more frames now. */
		for (size_t off = 0; off < (size_t)n;) {
			long w = ymx_stream_write(&b->ymx, st, b->rbuf + off, (size_t)n - off,
			                          DATA_FRAME_MAX);
			if (w <= 0) {
				end_session(b, TUN_END_ERROR, "send queue full");
				return;
			}
			off += (size_t)w;
		}
		if ((size_t)n < want)
			return; /* drained for now; poll will tell us about more */
	}
}

/* One line per second at most: a dead webhook must not flood the log. */
static void warn_unreachable(struct bridge *b, int e)
{
	uint64_t now = tun_now_ms();
	if (b->warn_ms != 0 && now - b->warn_ms < 1000) {
		b->warn_dropped++;
		return;
	}
	char where[160];
	if (b->o->forward_unix[0] != '\0')
		snprintf(where, sizeof(where), "%s", b->o->forward_unix);
	else
		snprintf(where, sizeof(where), "%s:%d", b->o->forward_host, b->o->forward_port);
	/* a unix listener's backlog is full: the kernel caps it at net.core.somaxconn */
	const char *hint = e == EAGAIN ? "; more streams at once than the webhook's backlog "
	                                 "(net.core.somaxconn)"
	                               : "";
	log_warn("tunnel",
	         "cannot reach the local webhook at %s: %s%s (stream reset; %u similar "
	         "lines suppressed)",
	         where, strerror(e), hint, b->warn_dropped);
	b->warn_ms = now;
	b->warn_dropped = 0;
}

static void conn_connected(struct bridge *b, struct br_conn *c)
{
	int soerr = 0;
	socklen_t sl = sizeof(soerr);
	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0) {
		warn_unreachable(b, soerr ? soerr : errno);
		conn_kill(b, c, NULL);
		return;
	}
	c->connected = true;
	conn_flush(b, c);
}

static int conn_open_socket(const struct bridge_opts *o)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
	struct sockaddr_un *un = (struct sockaddr_un *)&ss;
	if (o->forward_unix[0] != '\0') {
		/* No handshake, no Nagle or delayed ACKs, and a listener with its
		 * own workers that local users cannot reach. */
		un->sun_family = AF_UNIX;
		snprintf(un->sun_path, sizeof(un->sun_path), "%s", o->forward_unix);
		sl = sizeof(*un);
	} else if (inet_pton(AF_INET, o->forward_host, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16_t)o->forward_port);
		sl = sizeof(*in4);
	} else if (inet_pton(AF_INET6, o->forward_host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)o->forward_port);
		sl = sizeof(*in6);
	} else {
		errno = EINVAL;
		return -1;
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	int one = 1;
	if (ss.ss_family != AF_UNIX)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&ss, sl) != 0 && errno != EINPROGRESS) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static void on_open(void *ctx, struct ymx_stream *st)
{
	struct bridge *b = ctx;
	struct br_conn *c = calloc(1, sizeof(*c));
	if (c == NULL) {
		(void)ymx_stream_reset(&b->ymx, st);
		st->user = NULL;
		return;
	}
	c->st = st;
	st->user = c;
	c->next = b->conns;
	if (b->conns)
		b->conns->prev = c;
	b->conns = c;
	b->nconns++;
	b->accepted++;
	c->fd = conn_open_socket(b->o);
	if (c->fd < 0) {
		warn_unreachable(b, errno);
		conn_kill(b, c, NULL);
	}
}

static void on_data(void *ctx, struct ymx_stream *st)
{
	struct br_conn *c = st->user;
	if (c != NULL)
		conn_flush(ctx, c);
}

static void on_reset(void *ctx, struct ymx_stream *st)
{
	(void)ctx;
	struct br_conn *c = st->user;
	if (c != NULL) {
		c->st = NULL;
		c->dead = true;
	}
	st->user = NULL;
}

static const struct ymx_ops bridge_ymx_ops = {
    .send = ymx_send_cb,
    .on_open = on_open,
    .on_data = on_data,
    .on_reset = on_reset,
    .on_window = NULL,
};

static void conn_free(struct bridge *b, struct br_conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	if (c->st != NULL) {
		c->st->user = NULL;
		ymx_stream_free(&b->ymx, c->st);
	}
	if (c->prev)
		c->prev->next = c->next;
	else
		b->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	b->nconns--;
	free(c);
}

/* Frees connections that are finished both ways, or dead. */
static void conns_reap(struct bridge *b)
{
	struct br_conn *c = b->conns;
	while (c != NULL) {
		struct br_conn *next = c->next;
		bool done = c->rd_eof && c->wr_shut && c->st != NULL && c->st->rx.len == 0;
		if (c->dead || done)
			conn_free(b, c);
		c = next;
	}
}

/* --- the WebSocket side -------------------------------------------------------------- */

static void ws_process(struct bridge *b, const uint8_t *in, size_t len)
{
	while (len > 0 && !b->ended) {
		struct ws_event ev;
		size_t used = ws_rx_feed(&b->rx, in, len, &ev);
		in += used;
		len -= used;
		switch (ev.type) {
		case WS_EV_DATA:
			if (ymx_feed(&b->ymx, ev.data, ev.len) != 0)
				end_session(b, TUN_END_ERROR, "yamux protocol error: %s",
				            b->ymx.err);
			break;
		case WS_EV_PING:
			if (queue_frame(b, WS_OP_PONG, ev.data, ev.len, NULL, 0) != 0)
				end_session(b, TUN_END_ERROR, "send queue full");
			break;
		case WS_EV_CLOSE: {
			uint8_t code[2] = {0x03, 0xE8}; /* 1000 */
			(void)queue_frame(b, WS_OP_CLOSE, code, 2, NULL, 0);
			end_session(b, TUN_END_CLOSED, "server closed the WebSocket (code %u)",
			            ev.close_code);
			break;
		}
		case WS_EV_ERROR: {
			uint8_t code[2] = {0x03, 0xEA}; /* 1002 protocol error */
			(void)queue_frame(b, WS_OP_CLOSE, code, 2, NULL, 0);
			end_session(b, TUN_END_ERROR, "WebSocket protocol error: %s", ev.why);
			break;
		}
		default:
			break;
		}
		if (used == 0 && ev.type == WS_EV_NONE)
			break;
	}
}

/* Room to take more from the server: replies fit in the send queue and the
 * stream buffers are within budget. */
static bool can_read_ws(const struct bridge *b)
{
	return b->tx.len < TX_SOFT && b->ymx.rx_buffered < RX_BUDGET;
}

static void ws_read(struct bridge *b)
{
	b->rx_pending = false;
	for (int i = 0; i < RECV_BURST && !b->ended; i++) {
		if (!can_read_ws(b)) {
			b->rx_pending = true;
			return;
		}
		size_t n = 0;
		CURLcode rc = curl_easy_recv(b->curl, b->rbuf, RBUF_LEN, &n);
		if (rc == CURLE_AGAIN)
			return;
		if (rc != CURLE_OK) {
			end_session(b, TUN_END_CLOSED, "connection to the server lost: %s",
			            curl_easy_strerror(rc));
			return;
		}
		if (n == 0) {
			end_session(b, TUN_END_CLOSED, "server closed the connection");
			return;
		}
		b->bytes_in += n;
		ws_process(b, b->rbuf, n);
	}
	b->rx_pending = true; /* burst limit: come back without waiting for poll */
}

static int ws_write(struct bridge *b)
{
	while (b->tx.len > 0) {
		size_t n = 0;
		CURLcode rc = curl_easy_send(b->curl, buf_data(&b->tx), b->tx.len, &n);
		if (rc == CURLE_AGAIN)
			return 0;
		if (rc != CURLE_OK) {
			end_session(b, TUN_END_CLOSED, "connection to the server lost: %s",
			            curl_easy_strerror(rc));
			return -1;
		}
		b->bytes_out += n;
		buf_consume(&b->tx, n);
	}
	return 0;
}

/* Best effort: push out what is queued (GoAway, close frame) before closing. */
static void ws_flush_final(struct bridge *b)
{
	uint64_t deadline = tun_now_ms() + FLUSH_MS;
	while (b->tx.len > 0) {
		size_t n = 0;
		CURLcode rc = curl_easy_send(b->curl, buf_data(&b->tx), b->tx.len, &n);
		if (rc == CURLE_OK) {
			b->bytes_out += n;
			buf_consume(&b->tx, n);
			continue;
		}
		uint64_t now = tun_now_ms();
		if (rc != CURLE_AGAIN || now >= deadline)
			return;
		struct pollfd p = {.fd = b->fd, .events = POLLOUT};
		(void)poll(&p, 1, (int)(deadline - now));
	}
}

/* --- the loop ------------------------------------------------------------------------ */

static int pfd_reserve(struct bridge *b, size_t n)
{
	if (n <= b->pcap)
		return 0;
	size_t cap = b->pcap ? b->pcap : 64;
	while (cap < n)
		cap *= 2;
	struct pollfd *p = realloc(b->pfd, cap * sizeof(*p));
	if (p == NULL)
		return -1;
	b->pfd = p;
	struct br_conn **pc = realloc(b->pconn, cap * sizeof(*pc));
	if (pc == NULL)
		return -1;
	b->pconn = pc;
	b->pcap = cap;
	return 0;
}

static short conn_events(const struct bridge *b, const struct br_conn *c)
{
	if (c->dead || c->fd < 0 || c->st == NULL)
		return 0;
	if (!c->connected)
		return POLLOUT;
	short ev = 0;
	if (c->st->rx.len > 0)
		ev |= POLLOUT;
	if (!c->rd_eof && c->st->send_window > 0 && b->tx.len < TX_SOFT)
		ev |= POLLIN;
	return ev;
}

struct timers {
	uint64_t last_ping;
	uint32_t ping_id;
	uint64_t drain_deadline; /* 0 = not draining */
	enum tun_end drain_end;
};

static void start_drain(struct bridge *b, struct timers *tm, enum tun_end end, uint64_t now)
{
	if (tm->drain_deadline != 0)
		return;
	uint64_t grace = atomic_load(&b->o->stop_grace_ms);
	tm->drain_deadline = now + (grace ? grace : 1);
	tm->drain_end = end;
	if (!b->ymx.local_goaway && ymx_go_away(&b->ymx, YMX_GOAWAY_NORMAL) != 0)
		end_session(b, TUN_END_ERROR, "send queue full");
}

static int tick(struct bridge *b, struct timers *tm)
{
	uint64_t now = tun_now_ms();
	const struct bridge_opts *o = b->o;
	if (*o->stop)
		start_drain(b, tm, TUN_END_STOP, now);
	if (atomic_load(o->reload))
		start_drain(b, tm, TUN_END_RELOAD, now);
	if (o->refresh_at_ms != 0 && now >= o->refresh_at_ms)
		start_drain(b, tm, TUN_END_REFRESH, now);
	if (b->ymx.remote_goaway) {
		if (b->ymx.remote_goaway_code != YMX_GOAWAY_NORMAL) {
			end_session(b, TUN_END_ERROR, "server sent GoAway with error code %u",
			            b->ymx.remote_goaway_code);
			return 0;
		}
		start_drain(b, tm, TUN_END_GOAWAY, now);
	}
	if (tm->drain_deadline != 0 && (b->ymx.nstreams == 0 || now >= tm->drain_deadline)) {
		if (b->ymx.nstreams > 0)
			log_warn("tunnel", "%zu streams still open after the grace period; closing",
			         b->ymx.nstreams);
		uint8_t code[2] = {0x03, 0xE8};
		(void)queue_frame(b, WS_OP_CLOSE, code, 2, NULL, 0);
		end_session(b, tm->drain_end, NULL);
		return 0;
	}
	if (b->ymx.ping_outstanding) {
		if (now - tm->last_ping >= o->keepalive_timeout_ms) {
			end_session(b, TUN_END_ERROR,
			            "keepalive timeout: no ping answer from the "
			            "server within %llu ms",
			            (unsigned long long)o->keepalive_timeout_ms);
			return 0;
		}
	} else if (now - tm->last_ping >= o->keepalive_ms) {
		tm->last_ping = now;
		if (ymx_ping(&b->ymx, ++tm->ping_id) != 0)
			end_session(b, TUN_END_ERROR, "send queue full");
	}
	/* Sleep until the next timer, at most a second (the stop flag is also
	 * signalled through wake_fd). */
	uint64_t next = now + 1000;
	uint64_t ka =
	    tm->last_ping + (b->ymx.ping_outstanding ? o->keepalive_timeout_ms : o->keepalive_ms);
	if (ka < next)
		next = ka;
	if (tm->drain_deadline && tm->drain_deadline < next)
		next = tm->drain_deadline;
	if (o->refresh_at_ms && o->refresh_at_ms < next)
		next = o->refresh_at_ms;
	return next > now ? (int)(next - now) : 0;
}

static void note_counters(struct bridge *b)
{
	if (b->bytes_in || b->bytes_out) {
		tun_note_bytes(b->t, b->bytes_in, b->bytes_out);
		b->bytes_in = b->bytes_out = 0;
	}
	if (b->accepted || b->noted_open != b->ymx.nstreams) {
		b->noted_open = (uint32_t)b->ymx.nstreams;
		tun_note_streams(b->t, b->noted_open, b->accepted);
		b->accepted = 0;
	}
}

static void loop(struct bridge *b)
{
	struct timers tm = {.last_ping = tun_now_ms()};
	while (!b->ended) {
		int timeout = tick(b, &tm);
		if (b->ended)
			break;
		bool can_read = can_read_ws(b);
		if (b->rx_pending && can_read)
			timeout = 0;
		if (pfd_reserve(b, 2 + b->nconns) != 0) {
			end_session(b, TUN_END_ERROR, "out of memory");
			break;
		}
		size_t n = 0;
		/* Once a drain has started the wake fd stays readable: stop watching it. */
		b->pfd[n++] =
		    (struct pollfd){.fd = tm.drain_deadline ? -1 : b->o->wake_fd, .events = POLLIN};
		short wsev = (short)((can_read ? POLLIN : 0) | (b->tx.len > 0 ? POLLOUT : 0));
		b->pfd[n++] = (struct pollfd){.fd = b->fd, .events = wsev};
		for (struct br_conn *c = b->conns; c != NULL; c = c->next) {
			short ev = conn_events(b, c);
			if (ev == 0)
				continue;
			b->pconn[n] = c;
			b->pfd[n++] = (struct pollfd){.fd = c->fd, .events = ev};
		}
		int pr = poll(b->pfd, (nfds_t)n, timeout);
		if (pr < 0) {
			if (errno == EINTR)
				continue;
			end_session(b, TUN_END_ERROR, "poll: %s", strerror(errno));
			break;
		}
		if ((b->pfd[0].revents & POLLIN) && !atomic_load(b->o->stop)) {
			uint64_t v; /* a reload woke us; tick() sees the flag */
			if (read(b->o->wake_fd, &v, sizeof(v)) < 0)
				v = 0;
		}
		if (can_read_ws(b) &&
		    ((b->pfd[1].revents & (POLLIN | POLLERR | POLLHUP)) || b->rx_pending))
			ws_read(b);
		else if (b->pfd[1].revents & (POLLERR | POLLHUP))
			end_session(b, TUN_END_CLOSED, "connection to the server lost");
		for (size_t i = 2; i < n && !b->ended; i++) {
			struct br_conn *c = b->pconn[i];
			short re = b->pfd[i].revents;
			if (re == 0 || c->dead)
				continue;
			if (!c->connected) {
				conn_connected(b, c);
				continue;
			}
			if (re & (POLLOUT | POLLERR | POLLHUP))
				conn_flush(b, c);
			if (re & (POLLIN | POLLERR | POLLHUP))
				conn_read(b, c);
		}
		conns_reap(b);
		if (!b->ended)
			(void)ws_write(b);
		note_counters(b);
	}
}

enum tun_end bridge_run(struct tun *t, void *curl, int fd, const uint8_t *early, size_t early_len,
                        const struct bridge_opts *o)
{
	struct bridge *b = calloc(1, sizeof(*b));
	if (b == NULL) {
		tun_note_error(t, "out of memory");
		return TUN_END_ERROR;
	}
	b->t = t;
	b->o = o;
	b->curl = curl;
	b->fd = fd;
	ws_rx_init(&b->rx, WS_MAX_FRAME);
	buf_init(&b->tx, TX_MAX);
	b->tx.keep = true; /* refaulting fresh pages per burst costs more than the memory */
	ymx_session_init(&b->ymx, &bridge_ymx_ops, b, o->max_streams);
	if (rand_bytes(&b->mask_state, sizeof(b->mask_state), NULL) != 0 || b->mask_state == 0)
		b->mask_state = 0x9E3779B97F4A7C15ull ^ tun_now_ms();
	b->rbuf = malloc(RBUF_LEN);
	if (b->rbuf == NULL) {
		end_session(b, TUN_END_ERROR, "out of memory");
	} else {
		/* Bytes that arrived with the handshake response belong to the stream. */
		if (early_len > 0)
			ws_process(b, early, early_len);
		loop(b);
	}
	ws_flush_final(b);
	note_counters(b);
	enum tun_end end = b->end;
	while (b->conns != NULL)
		conn_free(b, b->conns);
	ymx_session_free(&b->ymx);
	tun_note_streams(t, 0, 0);
	buf_free(&b->tx);
	free(b->rbuf);
	free(b->pfd);
	free(b->pconn);
	free(b);
	return end;
}
