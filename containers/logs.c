/* The Engine API's multiplexed log stream (a container without a TTY): one
 * pure frame parser, fuzzed (tests/fuzz/fuzz_ctr_logs.c). */
#include "containers/containers.h"

long ctr_log_frame_parse(const uint8_t *buf, size_t len, struct ctr_log_frame *f)
{
	if (len < 8)
		return 0;
	if (buf[0] > 3 || buf[1] != 0 || buf[2] != 0 || buf[3] != 0)
		return -1;
	uint32_t size = (uint32_t)buf[4] << 24 | (uint32_t)buf[5] << 16 | (uint32_t)buf[6] << 8 |
	                (uint32_t)buf[7];
	if (size > CTR_LOG_FRAME_MAX)
		return -1;
	if (len - 8 < size)
		return 0;
	f->stream = buf[0];
	f->data = buf + 8;
	f->len = size;
	return (long)(8 + size);
}
