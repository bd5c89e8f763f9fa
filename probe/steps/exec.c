/* Step "exec": an argv run directly (never through a shell). */
#include <stdio.h>
#include <string.h>

#include "probe/steps/steps.h"

int probe_exec_parse(STEP_PARSE_ARGS)
{
	static const char *const known[] = {"type",  "name", "argv",  "env",     "cwd",
	                                    "stdin", "user", "group", "timeout", NULL};
	if (probe_fields_known(obj, known, path, epath, ecap, err) != 0)
		return -1;
	json_t *argv = json_object_get(obj, "argv");
	char p[48];
	snprintf(p, sizeof(p), "%s.argv", path);
	if (argv == NULL || !json_is_array(argv) || json_array_size(argv) == 0 ||
	    json_array_size(argv) > PROBE_MAX_ARGV) {
		snprintf(epath, ecap, "%s", p);
		return vm_err_set(err, VM_ERR_INVALID, "%s: required: a list of 1 to %d strings", p,
		                  PROBE_MAX_ARGV);
	}
	size_t i;
	json_t *v;
	json_array_foreach(argv, i, v)
	{
		char ip[96];
		snprintf(ip, sizeof(ip), "%s[%zu]", p, i);
		if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v) ||
		    json_string_length(v) > PROBE_ARG_MAX ||
		    (i == 0 && json_string_length(v) == 0)) {
			snprintf(epath, ecap, "%s", ip);
			return vm_err_set(err, VM_ERR_INVALID,
			                  "%s: must be a %sstring without NUL of at "
			                  "most %d bytes",
			                  ip, i == 0 ? "non-empty " : "", PROBE_ARG_MAX);
		}
		st->argv[st->argc++] = json_string_value(v);
	}
	st->argv[st->argc] = NULL;
	return probe_proc_fields(obj, st, path, epath, ecap, err);
}

enum probe_step_status probe_exec_run(STEP_RUN_ARGS)
{
	return probe_run_argv(st, st->argv, 0, ctx, result);
}
