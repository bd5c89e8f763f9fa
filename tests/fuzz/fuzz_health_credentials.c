/* libFuzzer target: the agent credentials file parser. */
#include <stddef.h>
#include <stdint.h>

#include "health/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct health_credentials c;
	struct vm_err err;
	if (health_parse_credentials((const char *)data, size, &c, &err) == 0)
		health_credentials_clear(&c);
	return 0;
}
