/* libFuzzer target: the probe request parser on arbitrary bytes. Whatever it
 * accepts must be internally consistent (argv NULL-terminated, counts bounded,
 * output within the record limit). */
#include <stdbool.h>
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
		/* what the output check accepts always fits the record the store reads back */
		uint64_t sum = 0;
		for (int i = 0; i < req.nsteps; i++)
			sum += probe_steps[req.steps[i].type].output_bound(&req.steps[i], 1u << 20);
		bool ok = probe_request_check_output(&req, 1u << 20, path, sizeof(path), &err) == 0;
		if (ok && sum + PROBE_RECORD_HEAD > probe_record_max(1u << 20))
			abort();
		if (!ok &&
		    (sum <= probe_output_budget(1u << 20) || strncmp(path, "steps[", 6) != 0))
			abort();
	} else if (memchr(path, '\0', sizeof(path)) == NULL) {
		abort();
	}
	probe_request_free(&req);
	return 0;
}
