/* libFuzzer target: the admin socket request parser. */
#include <stddef.h>
#include <stdint.h>

#include "core/admin.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char cmd[64];
	json_t *req;
	struct vm_err err;
	if (admin_parse_request((const char *)data, size, cmd, sizeof(cmd), &req, &err) == 0)
		json_decref(req);
	return 0;
}
