/* Unit tests for tunnel/yamux.c: the client session driven with hand-built
 * frames; what it sends is captured and decoded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tunnel/internal.h"

#define MAX_SENT 64

struct fake {
	struct ymx_hdr sent[MAX_SENT];
	size_t nsent;
	size_t payload_bytes;
	int opens, datas, resets, windows;
	struct ymx_stream *last_open;
	bool refuse_send;
};

static int f_send(void *ctx, const uint8_t hdr[YMX_HDR_LEN], const uint8_t *payload, size_t len)
{
	struct fake *f = ctx;
	(void)payload;
	if (f->refuse_send)
		return -1;
	const char *why;
	assert_int_equal(ymx_hdr_decode(hdr, &f->sent[f->nsent % MAX_SENT], &why), 0);
	f->nsent++;
	f->payload_bytes += len;
	return 0;
}
static void f_open(void *ctx, struct ymx_stream *st)
{
	struct fake *f = ctx;
	f->opens++;
	f->last_open = st;
}
static void f_data(void *ctx, struct ymx_stream *st)
{
	(void)st;
	((struct fake *)ctx)->datas++;
}
static void f_reset(void *ctx, struct ymx_stream *st)
{
	(void)st;
	((struct fake *)ctx)->resets++;
}
static void f_window(void *ctx, struct ymx_stream *st)
{
	(void)st;
	((struct fake *)ctx)->windows++;
}

static const struct ymx_ops fake_ops = {f_send, f_open, f_data, f_reset, f_window};

static const struct ymx_hdr *last(const struct fake *f)
{
	assert_true(f->nsent > 0);
	return &f->sent[(f->nsent - 1) % MAX_SENT];
}

static int feed_hdr(struct ymx_session *s, uint8_t type, uint16_t flags, uint32_t id, uint32_t len)
{
	uint8_t b[YMX_HDR_LEN];
	struct ymx_hdr h = {0, type, flags, id, len};
	ymx_hdr_encode(b, &h);
	return ymx_feed(s, b, sizeof(b));
}

static int feed_data(struct ymx_session *s, uint32_t id, uint16_t flags, size_t len)
{
	int rc = feed_hdr(s, YMX_T_DATA, flags, id, (uint32_t)len);
	uint8_t chunk[4096];
	memset(chunk, 'd', sizeof(chunk));
	while (rc == 0 && len > 0) {
		size_t n = len < sizeof(chunk) ? len : sizeof(chunk);
		rc = ymx_feed(s, chunk, n);
		len -= n;
	}
	return rc;
}

static void setup_session(struct ymx_session *s, struct fake *f, size_t max)
{
	memset(f, 0, sizeof(*f));
	ymx_session_init(s, &fake_ops, f, max);
}

static void test_yamux_hdr_roundtrip_and_rejects(void **state)
{
	(void)state;
	uint8_t b[YMX_HDR_LEN];
	struct ymx_hdr h = {0, YMX_T_WINDOW, YMX_SYN | YMX_FIN, 0x01020304, 0xA0B0C0D0}, g;
	const char *why = NULL;
	ymx_hdr_encode(b, &h);
	assert_int_equal(ymx_hdr_decode(b, &g, &why), 0);
	assert_memory_equal(&h, &g, sizeof(h));
	b[0] = 1;
	assert_int_equal(ymx_hdr_decode(b, &g, &why), -1);
	b[0] = 0;
	b[1] = 4;
	assert_int_equal(ymx_hdr_decode(b, &g, &why), -1);
}

static void test_yamux_server_syn_gets_ack_and_data_before_ack(void **state)
{
	(void)state;
	struct ymx_session s;
	struct fake f;
	setup_session(&s, &f, 8);
	/* SYN on a window update with delta 0, data right behind it in one buffer */
	uint8_t wire[2 * YMX_HDR_LEN + 5];
	struct ymx_hdr syn = {0, YMX_T_WINDOW, YMX_SYN, 2, 0}, data = {0, YMX_T_DATA, 0, 2, 5};
	ymx_hdr_encode(wire, &syn);
	ymx_hdr_encode(wire + YMX_HDR_LEN, &data);
	memcpy(wire + 2 * YMX_HDR_LEN, "GET /", 5);
	for (size_t i = 0; i < sizeof(wire); i++) /* byte by byte */
		assert_int_equal(ymx_feed(&s, wire + i, 1), 0);
	assert_int_equal(f.opens, 1);
	assert_int_equal(s.nstreams, 1);
	assert_int_equal(f.sent[0].type, YMX_T_WINDOW);
	assert_int_equal(f.sent[0].flags, YMX_ACK);
	assert_int_equal(f.sent[0].stream_id, 2);
	struct ymx_stream *st = f.last_open;
	assert_int_equal(st->rx.len, 5);
	assert_memory_equal(buf_data(&st->rx), "GET /", 5);
	assert_int_equal(st->recv_window, YMX_WINDOW - 5);
	ymx_session_free(&s);
}

static void test_yamux_odd_or_duplicate_stream_is_protocol_error(void **state)
{
	(void)state;
	struct ymx_session s;
	struct fake f;
	setup_session(&s, &f, 8);
	assert_int_equal(feed_hdr(&s, YMX_T_WINDOW, YMX_SYN, 3, 0), -1);
	assert_int_equal(last(&f)->type, YMX_T_GOAWAY);
	assert_int_equal(last(&f)->length, YMX_GOAWAY_PROTO);
	assert_non_null(strstr(s.err, "even"));
	/* a failed session refuses further input */
	assert_int_equal(feed_hdr(&s, YMX_T_PING, YMX_SYN, 0, 1), -1);
	ymx_session_free(&s);

	setup_session(&s, &f, 8);
	assert_int_equal(feed_hdr(&s, YMX_T_WINDOW, YMX_SYN, 2, 0), 0);
	assert_int_equal(feed_hdr(&s, YMX_T_WINDOW, YMX_SYN, 2, 0), -1);
	assert_non_null(strstr(s.err, "duplicate"));
	ymx_session_free(&s);
}

static void test_yamux_window_update_after_consume(void **state)
{
	(void)state;
	struct ymx_session s;
	struct fake f;
	setup_session(&s, &f, 8);
	assert_int_equal(feed_hdr(&s, YMX_T_WINDOW, YMX_SYN, 2, 0), 0);
	struct ymx_stream *st = f.last_open;
	assert_int_equal(feed_data(&s, 2, 0, 200 * 1024), 0);
	assert_int_equal(st->recv_window, 56 * 1024);
	assert_int_equal(s.rx_buffered, 200 * 1024);
	size_t before = f.nsent;
	/* less than half the window free again: no update yet */
	assert_int_equal(ymx_stream_consume(&s, st, 100 * 1024), 0);
	assert_int_equal(f.nsent, before);
	/* now 206 KiB free of which 56 KiB were already granted: grant 150 KiB */
	assert_int_equal(ymx_stream_consume(&s, st, 50 * 1024), 0);
	assert_int_equal(f.nsent, before + 1);
	assert_int_equal(last(&f)->type, YMX_T_WINDOW);
	assert_int_equal(last(&f)->flags, 0);
	assert_int_equal(last(&f)->length, 150 * 1024);
	assert_int_equal(st->recv_window, 206 * 1024);
	assert_int_equal(s.rx_buffered, 50 * 1024);
	ymx_stream_free(&s, st);
	assert_int_equal(s.rx_buffered, 0);
	ymx_session_free(&s);
}

/* A frame's payload arrives in pieces and the stream is drained between
 * them: the bytes still in flight were already taken from the window, so
 * the update must not hand them out again (the peer would then send more
 * than the buffer holds: found by TestFaultLargeTransfersBoundedMemory). */
static void test_yamux_window_update_counts_bytes_still_in_flight(void **state)
{
	(void)state;
	struct ymx_session s;
	struct fake f;
	setup_session(&s, &f, 8);
	assert_int_equal(feed_hdr(&s, YMX_T_WINDOW, YMX_SYN, 2, 0), 0);
	struct ymx_stream *st = f.last_open;
	/* one frame of the whole window; 200 KiB of it arrive, then all is read */
	assert_int_equal(feed_hdr(&s, YMX_T_DATA, 0, 2, YMX_WINDOW), 0);
	uint8_t chunk[4096];
	memset(chunk, 'd', sizeof(chunk));
	for (size_t got = 0; got < 200 * 1024; got += sizeof(chunk))
		assert_int_equal(ymx_feed(&s, chunk, sizeof(chunk)), 0);
	assert_int_equal(ymx_stream_consume(&s, st, 200 * 1024), 0);
	/* 56 KiB are still on their way: at most 200 KiB may be granted */
	assert_int_equal(last(&f)->type, YMX_T_WINDOW);
	assert_int_equal(last(&f)->length, 200 * 1024);
	/* the rest of the frame, then a full window's worth more: all fits */
	for (size_t got = 200 * 1024; got < YMX_WINDOW; got += sizeof(chunk))
		assert_int_equal(ymx_feed(&s, chunk, sizeof(chunk)), 0);
	assert_int_equal(feed_data(&s, 2, 0, st->recv_window), 0);
	assert_int_equal(s.rx_buffered, YMX_WINDOW);
	assert_int_equal(st->rx.len, YMX_WINDOW);
	ymx_session_free(&s);
}

static void test_yamux_receive_window_exceeded_is_protocol_error(void **state)
{
	(void)state;
	struct ymx_session s;
	struct fake f;
	setup_session(&s, &f, 8);
	assert_int_equal(feed_hdr(&s, YMX_T_WINDOW, YMX_SYN, 2, 0), 0);
	assert_int_equal(feed_data(&s, 2, 0, YMX_WINDOW), 0);
	assert_int_equal(feed_hdr(&s, YMX_T_DATA, 0, 2, 1), -1);
	assert_int_equal(last(&f)->type, YMX_T_GOAWAY);
	assert_non_null(strstr(s.err, "window"));
	ymx_session_free(&s);
}

static void test_yamux_send_respects_window(void **state)
{
	(void)state;
	struct ymx_session s;
	struct fake f;
	setup_session(&s, &f, 8);
	assert_int_equal(feed_hdr(&s, YMX_T_WINDOW, YMX_SYN, 2, 0), 0);
	struct ymx_stream *st = f.last_open;
	static uint8_t big[300 * 1024];
	size_t sent = 0;
	long n;
	while ((n = ymx_stream_write(&s, st, big, sizeof(big) - sent, 64 * 1024)) > 0)
		sent += (size_t)n;
	assert_int_equal(n, 0);
	assert_int_equal(sent, YMX_WINDOW);
	assert_int_equal(f.payload_bytes, YMX_WINDOW);
	assert_int_equal(last(&f)->length, 64 * 1024);
	assert_int_equal(feed_hdr(&s, YMX_T_WINDOW, 0, 2, 10), 0);
	assert_int_equal(f.windows, 1);
	assert_int_equal(ymx_stream_write(&s, st, big, 100, 64 * 1024), 10);
	/* a queue that cannot take the frame is an error, not a partial write */
	assert_int_equal(feed_hdr(&s, YMX_T_WINDOW, 0, 2, 10), 0);
	f.refuse_send = true;
	assert_int_equal(ymx_stream_write(&s, st, big, 100, 64 * 1024), -1);
	ymx_session_free(&s);
}

static void test_yamux_ping_answered_and_ours_acked(void **state)
{
	(void)state;
	struct ymx_session s;
	struct fake f;
	setup_session(&s, &f, 8);
	assert_int_equal(feed_hdr(&s, YMX_T_PING, YMX_SYN, 0, 42), 0);
	assert_int_equal(last(&f)->type, YMX_T_PING);
	assert_int_equal(last(&f)->flags, YMX_ACK);
	assert_int_equal(last(&f)->length, 42);
	assert_int_equal(ymx_ping(&s, 7), 0);
	assert_true(s.ping_outstanding);
	assert_int_equal(feed_hdr(&s, YMX_T_PING, YMX_ACK, 0, 6), 0);
	assert_true(s.ping_outstanding); /* not ours */
	assert_int_equal(feed_hdr(&s, YMX_T_PING, YMX_ACK, 0, 7), 0);
	assert_false(s.ping_outstanding);
	ymx_session_free(&s);
}

static void test_yamux_goaway_both_ways(void **state)
{
	(void)state;
	struct ymx_session s;
	struct fake f;
	setup_session(&s, &f, 8);
	assert_int_equal(feed_hdr(&s, YMX_T_GOAWAY, 0, 0, YMX_GOAWAY_NORMAL), 0);
	assert_true(s.remote_goaway);
	assert_int_equal(s.remote_goaway_code, 0);
	/* after our GoAway, new streams are refused with RST, not accepted */
	assert_int_equal(ymx_go_away(&s, YMX_GOAWAY_NORMAL), 0);
	assert_int_equal(last(&f)->type, YMX_T_GOAWAY);
	assert_int_equal(feed_hdr(&s, YMX_T_WINDOW, YMX_SYN, 2, 0), 0);
	assert_int_equal(f.opens, 0);
	assert_int_equal(last(&f)->flags, YMX_RST);
	assert_int_equal(last(&f)->stream_id, 2);
	ymx_session_free(&s);
}

static void test_yamux_rst_frees_stream_and_later_data_is_discarded(void **state)
{
	(void)state;
	struct ymx_session s;
	struct fake f;
	setup_session(&s, &f, 8);
	assert_int_equal(feed_hdr(&s, YMX_T_WINDOW, YMX_SYN, 2, 0), 0);
	assert_int_equal(feed_hdr(&s, YMX_T_WINDOW, YMX_RST, 2, 0), 0);
	assert_int_equal(f.resets, 1);
	assert_int_equal(s.nstreams, 0);
	/* data in flight for the gone stream is skipped; framing stays aligned */
	assert_int_equal(feed_data(&s, 2, 0, 1000), 0);
	assert_int_equal(feed_hdr(&s, YMX_T_PING, YMX_SYN, 0, 9), 0);
	assert_int_equal(last(&f)->type, YMX_T_PING);
	assert_int_equal(last(&f)->length, 9);
	ymx_session_free(&s);
}

static void test_yamux_stream_limit_resets_extra_streams(void **state)
{
	(void)state;
	struct ymx_session s;
	struct fake f;
	setup_session(&s, &f, 2);
	assert_int_equal(feed_hdr(&s, YMX_T_WINDOW, YMX_SYN, 2, 0), 0);
	assert_int_equal(feed_hdr(&s, YMX_T_WINDOW, YMX_SYN, 4, 0), 0);
	assert_int_equal(feed_hdr(&s, YMX_T_WINDOW, YMX_SYN, 6, 0), 0);
	assert_int_equal(f.opens, 2);
	assert_int_equal(last(&f)->flags, YMX_RST);
	assert_int_equal(last(&f)->stream_id, 6);
	assert_int_equal(feed_data(&s, 6, 0, 100), 0); /* discarded */
	ymx_session_free(&s);
}

static void test_yamux_fin_on_window_update_and_close(void **state)
{
	(void)state;
	struct ymx_session s;
	struct fake f;
	setup_session(&s, &f, 8);
	assert_int_equal(feed_hdr(&s, YMX_T_WINDOW, YMX_SYN, 2, 0), 0);
	struct ymx_stream *st = f.last_open;
	assert_int_equal(feed_hdr(&s, YMX_T_WINDOW, YMX_FIN, 2, 0), 0);
	assert_true(st->remote_fin);
	assert_int_equal(ymx_stream_close(&s, st), 0);
	assert_true(st->local_fin);
	assert_int_equal(last(&f)->flags, YMX_FIN);
	assert_int_equal(ymx_stream_write(&s, st, (const uint8_t *)"x", 1, 100), -1);
	ymx_stream_free(&s, st);
	assert_int_equal(s.nstreams, 0);
	ymx_session_free(&s);
}

static void test_yamux_stream_free_mid_payload_discards_rest(void **state)
{
	(void)state;
	struct ymx_session s;
	struct fake f;
	setup_session(&s, &f, 8);
	assert_int_equal(feed_hdr(&s, YMX_T_WINDOW, YMX_SYN, 2, 0), 0);
	assert_int_equal(feed_hdr(&s, YMX_T_DATA, 0, 2, 100), 0);
	assert_int_equal(ymx_feed(&s, (const uint8_t *)"abc", 3), 0);
	ymx_stream_free(&s, f.last_open);
	uint8_t rest[97] = {0};
	assert_int_equal(ymx_feed(&s, rest, sizeof(rest)), 0);
	assert_int_equal(feed_hdr(&s, YMX_T_PING, YMX_SYN, 0, 1), 0);
	assert_int_equal(last(&f)->type, YMX_T_PING);
	ymx_session_free(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_yamux_hdr_roundtrip_and_rejects),
	    cmocka_unit_test(test_yamux_server_syn_gets_ack_and_data_before_ack),
	    cmocka_unit_test(test_yamux_odd_or_duplicate_stream_is_protocol_error),
	    cmocka_unit_test(test_yamux_window_update_after_consume),
	    cmocka_unit_test(test_yamux_window_update_counts_bytes_still_in_flight),
	    cmocka_unit_test(test_yamux_receive_window_exceeded_is_protocol_error),
	    cmocka_unit_test(test_yamux_send_respects_window),
	    cmocka_unit_test(test_yamux_ping_answered_and_ours_acked),
	    cmocka_unit_test(test_yamux_goaway_both_ways),
	    cmocka_unit_test(test_yamux_rst_frees_stream_and_later_data_is_discarded),
	    cmocka_unit_test(test_yamux_stream_limit_resets_extra_streams),
	    cmocka_unit_test(test_yamux_fin_on_window_update_and_close),
	    cmocka_unit_test(test_yamux_stream_free_mid_payload_discards_rest),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
