/* libFuzzer target: the spool entry parser (files read back after a crash). */
#include <stddef.h>
#include <stdint.h>

#include "health/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char id[HEALTH_ID_LEN + 1];
	const char *body;
	size_t len;
	if (health_spool_parse_entry((const char *)data, size, id, &body, &len) == 0 &&
	    (body < (const char *)data || body + len != (const char *)data + size))
		__builtin_trap();
	return 0;
}
