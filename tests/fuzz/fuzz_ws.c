/* libFuzzer target: the WebSocket frame decoder (fed in chunks whose sizes
 * come from the input) and the handshake response parser. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "tunnel/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t step = (size_t)data[0] % 32 + 1;
	data++;
	size--;
	struct ws_rx rx;
	ws_rx_init(&rx, 4096);
	size_t off = 0, total = 0;
	while (off < size) {
		size_t chunk = size - off < step ? size - off : step;
		size_t used = 0;
		while (used < chunk) {
			struct ws_event ev;
			size_t n = ws_rx_feed(&rx, data + off + used, chunk - used, &ev);
			used += n;
			if (ev.type == WS_EV_DATA)
				total += ev.len;
			if (ev.type == WS_EV_ERROR)
				goto handshake;
			if (n == 0 && ev.type == WS_EV_NONE)
				break;
		}
		off += chunk;
	}
	if (total > size)
		__builtin_trap();
handshake:;
	struct vm_err err;
	int status = 0;
	long hl =
	    ws_handshake_parse((const char *)data, size, "dGhlIHNhbXBsZSBub25jZQ==", &status, &err);
	if (hl > (long)size)
		__builtin_trap();
	return 0;
}
