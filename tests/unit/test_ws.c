/* Unit tests for tunnel/ws.c: frame headers, masking, the streaming decoder
 * (fragments, control frames, errors) and the opening handshake. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tunnel/internal.h"

static void test_ws_frame_hdr_roundtrip_all_length_forms(void **state)
{
	(void)state;
	const uint64_t lens[] = {0, 1, 125, 126, 127, 65535, 65536, 1u << 20};
	const uint8_t mask[4] = {1, 2, 3, 4};
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		for (int m = 0; m < 2; m++) {
			uint8_t buf[WS_HDR_MAX];
			size_t n =
			    ws_frame_hdr_encode(buf, WS_OP_BINARY, true, lens[i], m ? mask : NULL);
			struct ws_frame_hdr h;
			const char *why = NULL;
			assert_int_equal(ws_frame_hdr_parse(buf, n, 1u << 20, &h, &why), (int)n);
			assert_int_equal(h.len, lens[i]);
			assert_true(h.fin);
			assert_int_equal(h.opcode, WS_OP_BINARY);
			assert_int_equal(h.masked, m);
			/* one byte short: needs more */
			assert_int_equal(ws_frame_hdr_parse(buf, n - 1, 1u << 20, &h, &why), 0);
		}
	}
}

static void expect_bad(const uint8_t *b, size_t n, const char *needle)
{
	struct ws_frame_hdr h;
	const char *why = NULL;
	assert_int_equal(ws_frame_hdr_parse(b, n, 1000, &h, &why), -1);
	assert_non_null(why);
	assert_non_null(strstr(why, needle));
}

static void test_ws_frame_hdr_rejects_malformed(void **state)
{
	(void)state;
	expect_bad((const uint8_t[]){0xC2, 0x00}, 2, "reserved");
	expect_bad((const uint8_t[]){0x83, 0x00}, 2, "opcode");
	expect_bad((const uint8_t[]){0x89, 126, 0, 200}, 4, "control");
	expect_bad((const uint8_t[]){0x09, 0x00}, 2, "control"); /* fragmented ping */
	expect_bad((const uint8_t[]){0x82, 126, 0, 10}, 4, "non-minimal");
	expect_bad((const uint8_t[]){0x82, 127, 0, 0, 0, 0, 0, 0, 0, 200}, 10, "non-minimal");
	expect_bad((const uint8_t[]){0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0}, 10, "significant");
	expect_bad((const uint8_t[]){0x82, 126, 0x10, 0}, 4, "maximum");
}

static void test_ws_mask_roundtrip_at_any_offset(void **state)
{
	(void)state;
	uint8_t data[100], orig[100];
	const uint8_t mask[4] = {0xAA, 0x55, 0x0F, 0xF0};
	for (size_t i = 0; i < sizeof(data); i++)
		orig[i] = data[i] = (uint8_t)(i * 13);
	/* in place: each 8-byte word is read before it is written back */
	ws_mask_copy(data, data, sizeof(data), mask, 0);
	for (size_t i = 0; i < sizeof(data); i++)
		assert_int_equal(data[i], orig[i] ^ mask[i & 3]);
	/* unmasking in two pieces with the right offset restores the data */
	ws_mask_copy(data, data, 37, mask, 0);
	ws_mask_copy(data + 37, data + 37, sizeof(data) - 37, mask, 37);
	assert_memory_equal(data, orig, sizeof(data));
}

/* Builds an unmasked server frame into out; returns its length. */
static size_t frame(uint8_t *out, uint8_t op, bool fin, const void *payload, size_t len)
{
	size_t n = ws_frame_hdr_encode(out, op, fin, len, NULL);
	memcpy(out + n, payload, len);
	return n + len;
}

struct collected {
	uint8_t data[4096];
	size_t len;
	int pings, pongs, closes, errors;
	uint16_t close_code;
};

static void feed_all(struct ws_rx *rx, const uint8_t *in, size_t len, size_t step,
                     struct collected *c)
{
	size_t off = 0;
	while (off < len) {
		size_t chunk = len - off < step ? len - off : step;
		size_t used = 0;
		while (used < chunk) {
			struct ws_event ev;
			size_t n = ws_rx_feed(rx, in + off + used, chunk - used, &ev);
			used += n;
			switch (ev.type) {
			case WS_EV_DATA:
				memcpy(c->data + c->len, ev.data, ev.len);
				c->len += ev.len;
				break;
			case WS_EV_PING:
				c->pings++;
				break;
			case WS_EV_PONG:
				c->pongs++;
				break;
			case WS_EV_CLOSE:
				c->closes++;
				c->close_code = ev.close_code;
				break;
			case WS_EV_ERROR:
				c->errors++;
				return;
			default:
				break;
			}
			if (n == 0 && ev.type == WS_EV_NONE)
				break;
		}
		off += chunk;
	}
}

static void test_ws_rx_fragments_with_interleaved_ping_any_split(void **state)
{
	(void)state;
	uint8_t wire[512];
	size_t n = 0;
	n += frame(wire + n, WS_OP_BINARY, false, "hello ", 6);
	n += frame(wire + n, WS_OP_PING, true, "p", 1);
	n += frame(wire + n, WS_OP_CONT, false, "yamux ", 6);
	n += frame(wire + n, WS_OP_CONT, true, "world", 5);
	n += frame(wire + n, WS_OP_BINARY, true, "!", 1);
	n += frame(wire + n, WS_OP_PONG, true, "", 0);
	n += frame(wire + n, WS_OP_CLOSE, true, "\x03\xe9", 2);
	for (size_t step = 1; step <= n; step++) {
		struct ws_rx rx;
		struct collected c = {0};
		ws_rx_init(&rx, WS_MAX_FRAME);
		feed_all(&rx, wire, n, step, &c);
		assert_int_equal(c.errors, 0);
		assert_int_equal(c.len, 18);
		assert_memory_equal(c.data, "hello yamux world!", 18);
		assert_int_equal(c.pings, 1);
		assert_int_equal(c.pongs, 1);
		assert_int_equal(c.closes, 1);
		assert_int_equal(c.close_code, 1001);
	}
}

static void expect_rx_error(const uint8_t *wire, size_t n)
{
	struct ws_rx rx;
	struct collected c = {0};
	ws_rx_init(&rx, 1000);
	feed_all(&rx, wire, n, n, &c);
	assert_int_equal(c.errors, 1);
	/* stays failed */
	struct ws_event ev;
	(void)ws_rx_feed(&rx, wire, n, &ev);
	assert_int_equal(ev.type, WS_EV_ERROR);
}

static void test_ws_rx_rejects_bad_sequences(void **state)
{
	(void)state;
	uint8_t wire[64];
	expect_rx_error(wire, frame(wire, WS_OP_CONT, true, "x", 1)); /* no message */
	expect_rx_error(wire, frame(wire, WS_OP_TEXT, true, "x", 1)); /* text */
	size_t n = frame(wire, WS_OP_BINARY, false, "a", 1);
	n += frame(wire + n, WS_OP_BINARY, true, "b", 1); /* nested */
	expect_rx_error(wire, n);
	const uint8_t masked[] = {0x82, 0x81, 1, 2, 3, 4, 'x' ^ 1};
	expect_rx_error(masked, sizeof(masked));
	const uint8_t big[] = {0x82, 126, 0x10, 0x00}; /* 4096 > 1000 */
	expect_rx_error(big, sizeof(big));
}

static void test_ws_accept_matches_rfc6455_example(void **state)
{
	(void)state;
	char out[29];
	ws_accept_for_key("dGhlIHNhbXBsZSBub25jZQ==", out);
	assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
	uint8_t raw[16] = {0};
	char key[25];
	ws_key_encode(raw, key);
	assert_int_equal(strlen(key), 24);
}

static void test_ws_handshake_parse_statuses_and_accept(void **state)
{
	(void)state;
	const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
	struct vm_err err = {0};
	int status = 0;
	const char *ok =
	    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
	    "Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
	    "\x82\x01x";
	size_t head = strlen(ok) - 3;
	assert_int_equal(ws_handshake_parse(ok, strlen(ok), key, &status, &err), (long)head);
	assert_int_equal(status, 101);
	assert_int_equal(ws_handshake_parse(ok, head - 1, key, &status, &err), 0);

	const char *bad = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
	                  "Connection: upgrade\r\nSec-WebSocket-Accept: AAAA\r\n\r\n";
	assert_int_equal(ws_handshake_parse(bad, strlen(bad), key, &status, &err), -1);
	assert_non_null(strstr(err.msg, "Accept"));

	const char *noup = "HTTP/1.1 101 OK\r\nConnection: Upgrade\r\n\r\n";
	assert_int_equal(ws_handshake_parse(noup, strlen(noup), key, &status, &err), -1);

	const char *denied = "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n";
	assert_int_equal(ws_handshake_parse(denied, strlen(denied), key, &status, &err),
	                 (long)strlen(denied));
	assert_int_equal(status, 401);

	const char *junk = "SSH-2.0-OpenSSH\r\n\r\n";
	assert_int_equal(ws_handshake_parse(junk, strlen(junk), key, &status, &err), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ws_frame_hdr_roundtrip_all_length_forms),
	    cmocka_unit_test(test_ws_frame_hdr_rejects_malformed),
	    cmocka_unit_test(test_ws_mask_roundtrip_at_any_offset),
	    cmocka_unit_test(test_ws_rx_fragments_with_interleaved_ping_any_split),
	    cmocka_unit_test(test_ws_rx_rejects_bad_sequences),
	    cmocka_unit_test(test_ws_accept_matches_rfc6455_example),
	    cmocka_unit_test(test_ws_handshake_parse_statuses_and_accept),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
