/* libFuzzer target: the agent credentials file parser (core/cp, the one
 * parser of credentials.json; health and lifecycle both read through it). */
#include <stddef.h>
#include <stdint.h>

#include "core/cp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cp_creds c;
	struct vm_err err;
	if (cp_creds_parse((const char *)data, size, &c, &err) == 0)
		cp_creds_clear(&c);
	return 0;
}
