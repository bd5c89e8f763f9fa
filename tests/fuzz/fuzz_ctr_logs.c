/* libFuzzer target: the Engine API's multiplexed log stream, parsed frame by
 * frame as containers/engine.c does. Checks that a frame never points outside
 * its input and that progress is always made or the rest is incomplete. */
#include <stddef.h>
#include <stdint.h>

#include "containers/containers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0;
	while (off < size) {
		struct ctr_log_frame f;
		long n = ctr_log_frame_parse(data + off, size - off, &f);
		if (n <= 0)
			break;
		if ((size_t)n > size - off || f.data < data + off || f.data + f.len > data + size ||
		    f.stream < 0 || f.stream > 3 || f.len > CTR_LOG_FRAME_MAX)
			__builtin_trap();
		off += (size_t)n;
	}
	return 0;
}
