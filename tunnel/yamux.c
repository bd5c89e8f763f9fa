/* yamux client session (hashicorp spec.md): the server opens every stream, we
 * ACK, carry data within 256 KiB windows both ways, answer and send pings, and
 * turn anything malformed into a GoAway(protocol error). Pure state machine:
 * bytes come in through ymx_feed, frames go out through ops->send. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tunnel/internal.h"

int ymx_hdr_decode(const uint8_t b[YMX_HDR_LEN], struct ymx_hdr *h, const char **why)
{
	h->version = b[0];
	h->type = b[1];
	h->flags = (uint16_t)(b[2] << 8 | b[3]);
	h->stream_id = (uint32_t)b[4] << 24 | (uint32_t)b[5] << 16 | (uint32_t)b[6] << 8 | b[7];
	h->length = (uint32_t)b[8] << 24 | (uint32_t)b[9] << 16 | (uint32_t)b[10] << 8 | b[11];
	if (h->version != 0)
		return *why = "unsupported protocol version", -1;
	if (h->type > YMX_T_GOAWAY)
		return *why = "unknown frame type", -1;
	return 0;
}

void ymx_hdr_encode(uint8_t b[YMX_HDR_LEN], const struct ymx_hdr *h)
{
	b[0] = h->version;
	b[1] = h->type;
	b[2] = (uint8_t)(h->flags >> 8);
	b[3] = (uint8_t)h->flags;
	for (int i = 0; i < 4; i++) {
		b[4 + i] = (uint8_t)(h->stream_id >> (24 - 8 * i));
		b[8 + i] = (uint8_t)(h->length >> (24 - 8 * i));
	}
}

void ymx_session_init(struct ymx_session *s, const struct ymx_ops *ops, void *ctx,
                      size_t max_streams)
{
	memset(s, 0, sizeof(*s));
	s->ops = ops;
	s->ctx = ctx;
	s->max_streams = max_streams;
}

static void stream_unlink(struct ymx_session *s, struct ymx_stream *st)
{
	struct ymx_stream **pp = &s->buckets[st->id % YMX_BUCKETS];
	while (*pp != NULL && *pp != st)
		pp = &(*pp)->hnext;
	if (*pp == st)
		*pp = st->hnext;
	if (st->prev)
		st->prev->next = st->next;
	else
		s->head = st->next;
	if (st->next)
		st->next->prev = st->prev;
	s->nstreams--;
}

void ymx_stream_free(struct ymx_session *s, struct ymx_stream *st)
{
	if (st == NULL)
		return;
	if (s->cur_stream == st)
		s->cur_stream = NULL; /* the rest of its payload is discarded */
	stream_unlink(s, st);
	s->rx_buffered -= st->rx.len;
	buf_free(&st->rx);
	free(st);
}

void ymx_session_free(struct ymx_session *s)
{
	while (s->head != NULL)
		ymx_stream_free(s, s->head);
}

static struct ymx_stream *stream_find(struct ymx_session *s, uint32_t id)
{
	struct ymx_stream *st = s->buckets[id % YMX_BUCKETS];
	while (st != NULL && st->id != id)
		st = st->hnext;
	return st;
}

static int send_hdr(struct ymx_session *s, uint8_t type, uint16_t flags, uint32_t id,
                    uint32_t length)
{
	uint8_t b[YMX_HDR_LEN];
	struct ymx_hdr h = {0, type, flags, id, length};
	ymx_hdr_encode(b, &h);
	return s->ops->send(s->ctx, b, NULL, 0) == 0 ? 0 : -1;
}

static int proto_error(struct ymx_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int proto_error(struct ymx_session *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s->err, sizeof(s->err), fmt, ap);
	va_end(ap);
	if (!s->failed)
		(void)send_hdr(s, YMX_T_GOAWAY, 0, 0, YMX_GOAWAY_PROTO);
	s->failed = true;
	return -1;
}

int ymx_ping(struct ymx_session *s, uint32_t id)
{
	s->ping_outstanding = true;
	s->ping_id = id;
	return send_hdr(s, YMX_T_PING, YMX_SYN, 0, id);
}

int ymx_go_away(struct ymx_session *s, uint32_t code)
{
	s->local_goaway = true;
	return send_hdr(s, YMX_T_GOAWAY, 0, 0, code);
}

/* A SYN from the server: accept it (ACK) or refuse it (RST). */
static int stream_accept(struct ymx_session *s, uint32_t id, struct ymx_stream **out)
{
	*out = NULL;
	if (id == 0 || (id & 1) != 0)
		return proto_error(s, "server opened stream %u (server streams have even IDs)", id);
	if (stream_find(s, id) != NULL)
		return proto_error(s, "duplicate stream %u", id);
	if (s->local_goaway || s->nstreams >= s->max_streams)
		return send_hdr(s, YMX_T_WINDOW, YMX_RST, id, 0);
	struct ymx_stream *st = calloc(1, sizeof(*st));
	if (st == NULL)
		return send_hdr(s, YMX_T_WINDOW, YMX_RST, id, 0);
	st->id = id;
	st->send_window = YMX_WINDOW;
	st->recv_window = YMX_WINDOW;
	buf_init(&st->rx, YMX_WINDOW);
	struct ymx_stream **b = &s->buckets[id % YMX_BUCKETS];
	st->hnext = *b;
	*b = st;
	st->next = s->head;
	if (s->head)
		s->head->prev = st;
	s->head = st;
	s->nstreams++;
	if (send_hdr(s, YMX_T_WINDOW, YMX_ACK, id, 0) != 0)
		return -1;
	*out = st;
	s->ops->on_open(s->ctx, st);
	return 0;
}

/* Flags on a data or window-update frame. Returns the stream to continue
 * with (NULL when gone) via *stp; -1 on error. */
static int stream_flags(struct ymx_session *s, const struct ymx_hdr *h, struct ymx_stream **stp)
{
	struct ymx_stream *st = *stp;
	if (h->flags & YMX_RST) {
		st->reset = true;
		s->ops->on_reset(s->ctx, st);
		ymx_stream_free(s, st);
		*stp = NULL;
		return 0;
	}
	if ((h->flags & YMX_FIN) && !st->remote_fin) {
		st->remote_fin = true;
		s->ops->on_data(s->ctx, st);
	}
	return 0;
}

static int handle_header(struct ymx_session *s, const struct ymx_hdr *h)
{
	s->cur_stream = NULL;
	s->remaining = 0;
	switch (h->type) {
	case YMX_T_PING:
		if (h->flags & YMX_SYN)
			return send_hdr(s, YMX_T_PING, YMX_ACK, 0, h->length);
		if ((h->flags & YMX_ACK) && s->ping_outstanding && h->length == s->ping_id)
			s->ping_outstanding = false;
		return 0;
	case YMX_T_GOAWAY:
		s->remote_goaway = true;
		s->remote_goaway_code = h->length;
		return 0;
	default:
		break;
	}
	if (h->stream_id == 0)
		return proto_error(s, "%s frame on stream 0",
		                   h->type == YMX_T_DATA ? "data" : "window");
	struct ymx_stream *st = NULL;
	if (h->flags & YMX_SYN) {
		if (stream_accept(s, h->stream_id, &st) != 0)
			return -1;
	} else {
		st = stream_find(s, h->stream_id);
	}
	if (st != NULL && stream_flags(s, h, &st) != 0)
		return -1;
	if (h->type == YMX_T_WINDOW) {
		if (st != NULL && h->length > 0) {
			if ((uint64_t)st->send_window + h->length > UINT32_MAX)
				return proto_error(s, "window update overflows stream %u", st->id);
			st->send_window += h->length;
			if (s->ops->on_window)
				s->ops->on_window(s->ctx, st);
		}
		return 0;
	}
	/* Data: the payload follows; unknown or reset streams are drained (we
	 * probably sent RST and the peer had data in flight). */
	if (st != NULL && h->length > st->recv_window)
		return proto_error(s, "stream %u sent %u bytes with %u left in its window", st->id,
		                   h->length, st->recv_window);
	if (st != NULL && (st->reset || (st->remote_fin && !(h->flags & YMX_FIN))))
		st = NULL;
	if (st != NULL)
		st->recv_window -= h->length;
	s->remaining = h->length;
	s->cur_stream = st;
	return 0;
}

int ymx_feed(struct ymx_session *s, const uint8_t *in, size_t len)
{
	if (s->failed)
		return -1;
	while (len > 0) {
		if (s->remaining > 0) {
			size_t take = len < s->remaining ? len : s->remaining;
			struct ymx_stream *st = s->cur_stream;
			if (st != NULL) {
				/* Cannot fail: the window check bounds rx by YMX_WINDOW. */
				if (buf_append(&st->rx, in, take) != 0)
					return proto_error(s, "stream %u receive buffer full",
					                   st->id);
				s->rx_buffered += take;
			}
			in += take;
			len -= take;
			s->remaining -= (uint32_t)take;
			if (st != NULL)
				s->ops->on_data(s->ctx, st);
			continue;
		}
		size_t take = YMX_HDR_LEN - s->hdr_len;
		if (take > len)
			take = len;
		memcpy(s->hdr + s->hdr_len, in, take);
		s->hdr_len += take;
		in += take;
		len -= take;
		if (s->hdr_len < YMX_HDR_LEN)
			break;
		s->hdr_len = 0;
		const char *why = NULL;
		if (ymx_hdr_decode(s->hdr, &s->cur, &why) != 0)
			return proto_error(s, "%s", why);
		if (handle_header(s, &s->cur) != 0)
			return s->failed ? -1 : proto_error(s, "cannot queue a frame");
	}
	return 0;
}

long ymx_stream_write(struct ymx_session *s, struct ymx_stream *st, const uint8_t *data, size_t len,
                      size_t max_frame)
{
	if (st->local_fin || st->reset)
		return -1;
	size_t n = len;
	if (n > st->send_window)
		n = st->send_window;
	if (n > max_frame)
		n = max_frame;
	if (n == 0)
		return 0;
	uint8_t b[YMX_HDR_LEN];
	struct ymx_hdr h = {0, YMX_T_DATA, 0, st->id, (uint32_t)n};
	ymx_hdr_encode(b, &h);
	if (s->ops->send(s->ctx, b, data, n) != 0)
		return -1;
	st->send_window -= (uint32_t)n;
	return (long)n;
}

int ymx_stream_consume(struct ymx_session *s, struct ymx_stream *st, size_t n)
{
	size_t before = st->rx.len;
	buf_consume(&st->rx, n);
	s->rx_buffered -= before - st->rx.len;
	if (st->reset || st->remote_fin)
		return 0;
	/* hashicorp's rule: top the window back up once half of it is free. The
	 * rest of a frame still arriving left the window at its header already
	 * but is not in rx yet: it must not be granted twice. */
	size_t in_flight = s->cur_stream == st ? s->remaining : 0;
	uint32_t delta = (uint32_t)(YMX_WINDOW - st->rx.len - in_flight) - st->recv_window;
	if (delta < YMX_WINDOW / 2)
		return 0;
	if (send_hdr(s, YMX_T_WINDOW, 0, st->id, delta) != 0)
		return -1;
	st->recv_window += delta;
	return 0;
}

int ymx_stream_close(struct ymx_session *s, struct ymx_stream *st)
{
	if (st->local_fin || st->reset)
		return 0;
	st->local_fin = true;
	return send_hdr(s, YMX_T_WINDOW, YMX_FIN, st->id, 0);
}

int ymx_stream_reset(struct ymx_session *s, struct ymx_stream *st)
{
	if (st->reset)
		return 0;
	st->reset = true;
	return send_hdr(s, YMX_T_WINDOW, YMX_RST, st->id, 0);
}
