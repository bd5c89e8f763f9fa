/* Tunnel internals shared by ws.c (RFC 6455 framing), yamux.c (the session
 * state machine), piko.c (dial, auth, reconnect) and bridge.c (the poll loop).
 * The parsers and the yamux session do no I/O so tests and fuzzers drive them. */
#ifndef VMA_TUNNEL_INTERNAL_H
#define VMA_TUNNEL_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/rand.h"
#include "core/time.h"

/* --- WebSocket (ws.c) ------------------------------------------------------------ */

#define WS_HDR_MAX     14
#define WS_MAX_CONTROL 125
/* Piko's gorilla writer sends frames of a few KiB; anything above this is an attack. */
#define WS_MAX_FRAME (1u << 20)

enum ws_opcode {
	WS_OP_CONT = 0x0,
	WS_OP_TEXT = 0x1,
	WS_OP_BINARY = 0x2,
	WS_OP_CLOSE = 0x8,
	WS_OP_PING = 0x9,
	WS_OP_PONG = 0xA,
};

struct ws_frame_hdr {
	bool fin;
	uint8_t opcode;
	bool masked;
	uint8_t mask[4];
	uint64_t len;
};

/* Parses one frame header. Returns its size (> 0), 0 when buf holds too few
 * bytes, or -1 with *why set (reserved bits, unknown opcode, bad control frame,
 * non-minimal length, length above max_len). */
int ws_frame_hdr_parse(const uint8_t *buf, size_t len, uint64_t max_len, struct ws_frame_hdr *h,
                       const char **why);

/* Writes a frame header; mask NULL = unmasked. Returns its size (2..14). */
size_t ws_frame_hdr_encode(uint8_t out[WS_HDR_MAX], uint8_t opcode, bool fin, uint64_t len,
                           const uint8_t *mask);

/* Copies src to dst masking on the way (one pass over the bytes), as if src
 * started at byte `offset` of the payload; dst == src masks in place. */
void ws_mask_copy(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t mask[4],
                  size_t offset);

enum ws_ev_type { WS_EV_NONE, WS_EV_DATA, WS_EV_PING, WS_EV_PONG, WS_EV_CLOSE, WS_EV_ERROR };

struct ws_event {
	enum ws_ev_type type;
	const uint8_t *data; /* DATA: points into the input; PING/PONG/CLOSE: into rx */
	size_t len;
	uint16_t close_code; /* CLOSE: 1005 when the frame had no code */
	const char *why;     /* ERROR */
};

/* Streaming decoder for frames from a server: data payloads are passed through
 * without buffering (message boundaries mean nothing to yamux), control frames
 * are collected in a 125-byte buffer. */
struct ws_rx {
	uint8_t hdr[WS_HDR_MAX];
	size_t hdr_len;
	struct ws_frame_hdr cur;
	bool in_frame;
	uint64_t remaining;
	bool in_message; /* a fragmented data message is open */
	uint8_t ctl[WS_MAX_CONTROL];
	size_t ctl_len;
	uint64_t max_frame;
	bool failed;
};

void ws_rx_init(struct ws_rx *rx, uint64_t max_frame);
/* Consumes bytes of in and reports at most one event. Returns the number of
 * bytes consumed; call again with the rest until it returns 0 with WS_EV_NONE.
 * After WS_EV_ERROR the decoder stays failed. */
size_t ws_rx_feed(struct ws_rx *rx, const uint8_t *in, size_t len, struct ws_event *ev);

/* Sec-WebSocket-Key (24 chars) from 16 random bytes, and the Accept value
 * (28 chars) a server must answer for key. */
void ws_key_encode(const uint8_t raw[16], char out[25]);
void ws_accept_for_key(const char *key, char out[29]);

/* Parses an HTTP response head ("HTTP/1.1 101 ...\r\n...\r\n\r\n") in buf.
 * Returns the head's length when complete, 0 when more bytes are needed, or
 * -1 with err set. *status gets the code; for 101 the Upgrade, Connection and
 * Sec-WebSocket-Accept headers are checked against key. */
long ws_handshake_parse(const char *buf, size_t len, const char *key, int *status,
                        struct vm_err *err);

/* --- yamux (yamux.c), hashicorp spec --------------------------------------------- */

#define YMX_HDR_LEN 12
#define YMX_WINDOW  (256u * 1024u)
#define YMX_BUCKETS 512

enum ymx_type { YMX_T_DATA = 0, YMX_T_WINDOW = 1, YMX_T_PING = 2, YMX_T_GOAWAY = 3 };
enum ymx_flag { YMX_SYN = 1, YMX_ACK = 2, YMX_FIN = 4, YMX_RST = 8 };
enum ymx_goaway { YMX_GOAWAY_NORMAL = 0, YMX_GOAWAY_PROTO = 1, YMX_GOAWAY_INTERNAL = 2 };

struct ymx_hdr {
	uint8_t version;
	uint8_t type;
	uint16_t flags;
	uint32_t stream_id;
	uint32_t length;
};

/* Decodes 12 bytes. Returns 0, or -1 with *why (bad version or type). */
int ymx_hdr_decode(const uint8_t b[YMX_HDR_LEN], struct ymx_hdr *h, const char **why);
void ymx_hdr_encode(uint8_t b[YMX_HDR_LEN], const struct ymx_hdr *h);

struct ymx_stream {
	uint32_t id;
	uint32_t send_window; /* bytes we may still send */
	uint32_t recv_window; /* bytes the peer may still send */
	struct buf rx;        /* received, not yet consumed */
	bool remote_fin, local_fin, reset;
	void *user;
	struct ymx_stream *hnext, *prev, *next;
};

struct ymx_session;

struct ymx_ops {
	/* Queues one frame for the peer (all or nothing). Non-zero = cannot. */
	int (*send)(void *ctx, const uint8_t hdr[YMX_HDR_LEN], const uint8_t *payload, size_t len);
	/* A stream opened by the peer was accepted (ACK already queued). */
	void (*on_open)(void *ctx, struct ymx_stream *st);
	/* st->rx grew or the peer half-closed (st->remote_fin). */
	void (*on_data)(void *ctx, struct ymx_stream *st);
	/* The peer reset st; the session frees it right after this returns. */
	void (*on_reset)(void *ctx, struct ymx_stream *st);
	/* The send window of st grew. Optional. */
	void (*on_window)(void *ctx, struct ymx_stream *st);
};

struct ymx_session {
	const struct ymx_ops *ops;
	void *ctx;
	struct ymx_stream *buckets[YMX_BUCKETS];
	struct ymx_stream *head;
	size_t nstreams, max_streams;
	size_t rx_buffered; /* bytes in all streams' rx buffers */
	/* input state: a header being collected, then a data payload */
	uint8_t hdr[YMX_HDR_LEN];
	size_t hdr_len;
	struct ymx_hdr cur;
	uint32_t remaining;
	struct ymx_stream *cur_stream; /* NULL while discarding a payload */
	bool local_goaway, remote_goaway;
	uint32_t remote_goaway_code;
	bool ping_outstanding;
	uint32_t ping_id;
	bool failed;
	char err[160];
};

void ymx_session_init(struct ymx_session *s, const struct ymx_ops *ops, void *ctx,
                      size_t max_streams);
/* Frees every stream without sending anything. */
void ymx_session_free(struct ymx_session *s);

/* Feeds bytes from the peer. Returns 0, or -1 on a protocol error (a GoAway
 * with the protocol-error code has been queued; s->err says why). */
int ymx_feed(struct ymx_session *s, const uint8_t *in, size_t len);

int ymx_ping(struct ymx_session *s, uint32_t id);
int ymx_go_away(struct ymx_session *s, uint32_t code);

/* Sends up to len bytes within the send window; returns bytes queued (0 when
 * the window is closed) or -1 when the frame could not be queued. */
long ymx_stream_write(struct ymx_session *s, struct ymx_stream *st, const uint8_t *data, size_t len,
                      size_t max_frame);
/* The application took n bytes from st->rx: gives credit back to the peer. */
int ymx_stream_consume(struct ymx_session *s, struct ymx_stream *st, size_t n);
/* Half-close (FIN) and reset (RST). */
int ymx_stream_close(struct ymx_session *s, struct ymx_stream *st);
int ymx_stream_reset(struct ymx_session *s, struct ymx_stream *st);
/* Removes st from the session and frees it. Never call from inside ymx_feed. */
void ymx_stream_free(struct ymx_session *s, struct ymx_stream *st);

/* --- one connected session: the poll loop (bridge.c) ----------------------------- */

struct tun;
struct tun_conn;

enum tun_end {
	TUN_END_STOP,    /* tun_stop was called and the drain finished */
	TUN_END_CLOSED,  /* the server closed or dropped the connection */
	TUN_END_GOAWAY,  /* the server sent GoAway and our streams finished */
	TUN_END_REFRESH, /* the token is about to expire: reconnect with a new one */
	TUN_END_ERROR,   /* protocol or I/O error, see the tunnel's last error */
	TUN_END_RELOAD,  /* new settings: reconnect with them */
};

struct bridge_opts {
	int wake_fd; /* readable when tun_stop was called */
	const _Atomic bool *stop;
	_Atomic bool *reload;
	_Atomic uint64_t stop_grace_ms; /* tun_stop may change it */
	uint64_t keepalive_ms, keepalive_timeout_ms;
	uint64_t refresh_at_ms; /* monotonic ms when to reconnect for a token; 0 = never */
	size_t max_streams;
	/* Where each stream goes: the webhook's unix socket when set (its own
	 * workers, out of local users' reach), else forward_host:forward_port. */
	char forward_unix[108];
	char forward_host[64];
	int forward_port;
};

/* Runs the session on an established WebSocket (curl handle, socket, and
 * bytes already read past the handshake) until it ends. */
enum tun_end bridge_run(struct tun *t, void *curl, int fd, const uint8_t *early, size_t early_len,
                        const struct bridge_opts *o);

/* Callbacks into piko.c for counters and the last error. */
void tun_note_bytes(struct tun *t, uint64_t in, uint64_t out);
void tun_note_streams(struct tun *t, uint32_t open, uint64_t accepted);
void tun_note_error(struct tun *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Monotonic ms as the tunnel's unsigned deadlines count them. */
static inline uint64_t tun_now_ms(void)
{
	return (uint64_t)time_mono_ms();
}

/* JWT "exp" claim (seconds since the epoch) or 0 when absent/unparsable. */
int64_t tun_jwt_exp(const char *token);

#endif
