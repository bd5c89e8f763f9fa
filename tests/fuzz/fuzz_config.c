/* libFuzzer target: the YAML configuration parser with arbitrary bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "core/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct cfg cfg;
	static char *const env[] = {NULL};
	struct vm_err err;
	if (cfg_load_buffer(&cfg, "fuzz.yaml", (const char *)data, size, env, &err) == 0) {
		char buf[65536];
		(void)cfg_dump(&cfg, buf, sizeof(buf));
	}
	return 0;
}
