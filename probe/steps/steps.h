/* The step types' entry points, listed in the table in probe/steps.c. */
#ifndef VMA_PROBE_STEPS_STEPS_H
#define VMA_PROBE_STEPS_STEPS_H

#include "probe/internal.h"

#define STEP_PARSE_ARGS                                                                     \
	json_t *obj, struct probe_step_req *st, const char *path, char *epath, size_t ecap, \
	    struct vm_err *err
#define STEP_RUN_ARGS \
	const struct probe_step_req *st, const struct probe_step_ctx *ctx, json_t *result

int probe_exec_parse(STEP_PARSE_ARGS);
enum probe_step_status probe_exec_run(STEP_RUN_ARGS);
int probe_script_parse(STEP_PARSE_ARGS);
enum probe_step_status probe_script_run(STEP_RUN_ARGS);
int probe_file_read_parse(STEP_PARSE_ARGS);
enum probe_step_status probe_file_read_run(STEP_RUN_ARGS);
int probe_file_write_parse(STEP_PARSE_ARGS);
enum probe_step_status probe_file_write_run(STEP_RUN_ARGS);

int probe_container_parse(STEP_PARSE_ARGS);
enum probe_step_status probe_container_run(STEP_RUN_ARGS);

/* env, cwd, stdin, user, group, timeout: shared by exec and script. */
int probe_proc_fields(STEP_PARSE_ARGS);

#endif
