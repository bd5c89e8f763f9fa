/* libFuzzer target: the runner's line parser on arbitrary bytes. What it
 * accepts is consistent (a valid id, an object step, a bounded key); what it
 * refuses names a path. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runner/runner.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct runner_cmd cmd;
	char path[RUNNER_PATH_MAX];
	struct vm_err err = {0};
	if (runner_line_parse((const char *)data, size, &cmd, path, sizeof(path), &err) == 0) {
		if (cmd.id == NULL || strlen(cmd.id) == 0 || strlen(cmd.id) > RUNNER_ID_MAX ||
		    !json_is_object(cmd.step) ||
		    (cmd.idempotency_key != NULL &&
		     (strlen(cmd.idempotency_key) == 0 ||
		      strlen(cmd.idempotency_key) > RUNNER_IDEM_MAX)) ||
		    (cmd.timeout != NULL && !json_is_string(cmd.timeout) &&
		     !json_is_integer(cmd.timeout)))
			abort();
	} else if (memchr(path, '\0', sizeof(path)) == NULL || path[0] == '\0' ||
	           err.msg[0] == '\0') {
		abort();
	} else if (cmd.id != NULL && strlen(cmd.id) > RUNNER_ID_MAX) {
		abort();
	}
	runner_cmd_free(&cmd);
	return 0;
}
