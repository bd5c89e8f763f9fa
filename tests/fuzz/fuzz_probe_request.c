/* libFuzzer target: the probe request parser on arbitrary bytes. Whatever it
 * accepts must be internally consistent (argv NULL-terminated, counts bounded). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "probe/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct probe_request req;
	char path[PROBE_ERR_PATH_MAX];
	struct vm_err err;
	if (probe_request_parse((const char *)data, size, &req, path, sizeof(path), &err) == 0) {
		if (req.nsteps < 1 || req.nsteps > PROBE_MAX_STEPS)
			abort();
		for (int i = 0; i < req.nsteps; i++) {
			const struct probe_step_req *s = &req.steps[i];
			if (s->type < 0 || (size_t)s->type >= probe_step_count ||
			    s->argc > PROBE_MAX_ARGV || s->argv[s->argc] != NULL ||
			    s->nenv > PROBE_MAX_ENV)
				abort();
			for (int j = 0; j < s->nenv; j++)
				if (strchr(s->env[j], '=') == NULL)
					abort();
		}
	} else if (memchr(path, '\0', sizeof(path)) == NULL) {
		abort();
	}
	probe_request_free(&req);
	return 0;
}
