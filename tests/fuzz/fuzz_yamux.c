/* libFuzzer target: a yamux client session fed arbitrary bytes from the
 * server, with the application consuming and writing as a bridge would.
 * Checks that it never crashes, never buffers beyond a stream's window. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tunnel/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t sent_bytes;

static int f_send(void *ctx, const uint8_t hdr[YMX_HDR_LEN], const uint8_t *payload, size_t len)
{
	(void)ctx, (void)hdr, (void)payload;
	sent_bytes += YMX_HDR_LEN + len;
	return 0;
}
static void f_open(void *ctx, struct ymx_stream *st)
{
	(void)ctx, (void)st;
}
static void f_data(void *ctx, struct ymx_stream *st)
{
	(void)ctx;
	if (st->rx.len > YMX_WINDOW)
		__builtin_trap();
}
static void f_reset(void *ctx, struct ymx_stream *st)
{
	(void)ctx, (void)st;
}

static const struct ymx_ops ops = {f_send, f_open, f_data, f_reset, NULL};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t step = (size_t)data[0] % 64 + 1;
	data++;
	size--;
	struct ymx_session s;
	ymx_session_init(&s, &ops, NULL, 4);
	static const uint8_t out[1024];
	for (size_t off = 0; off < size; off += step) {
		size_t n = size - off < step ? size - off : step;
		if (ymx_feed(&s, data + off, n) != 0)
			break;
		/* the application side: consume half of what arrived, answer a bit, close */
		for (struct ymx_stream *st = s.head; st != NULL; st = st->next) {
			if (ymx_stream_consume(&s, st, st->rx.len / 2 + 1) != 0)
				break;
			(void)ymx_stream_write(&s, st, out, (size_t)(data[off] % 2) * sizeof(out),
			                       512);
			if (data[off] == 0xFF)
				(void)ymx_stream_close(&s, st);
		}
	}
	ymx_session_free(&s);
	return 0;
}
