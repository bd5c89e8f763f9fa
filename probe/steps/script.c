/* Step "script": a body run by an interpreter (default /bin/sh) given as a
 * path, which reads it from a memfd (see script_memfd). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/proc.h"
#include "probe/steps/steps.h"

#define SCRIPT_MAX (1u << 20)

int probe_script_parse(STEP_PARSE_ARGS)
{
	static const char *const known[] = {"type",  "name", "interpreter", "body",    "env", "cwd",
	                                    "stdin", "user", "group",       "timeout", NULL};
	if (probe_fields_known(obj, known, path, epath, ecap, err) != 0 ||
	    probe_field_str(obj, "interpreter", false, PATH_MAX - 1, &st->interpreter, path, epath,
	                    ecap, err) != 0 ||
	    probe_field_str(obj, "body", true, SCRIPT_MAX, &st->body, path, epath, ecap, err) != 0)
		return -1;
	if (st->interpreter != NULL && st->interpreter[0] == '\0') {
		snprintf(epath, ecap, "%s.interpreter", path);
		return vm_err_set(err, VM_ERR_INVALID, "%s: must not be empty", epath);
	}
	return probe_proc_fields(obj, st, path, epath, ecap, err);
}

/* The body lives in a sealed memfd passed as the interpreter's fd 3 and read
 * as /proc/self/fd/3: nothing on disk, readable by any step user (no 0700
 * directory in the way), never part of a command line or a shell string. */
static int script_memfd(const char *body, struct vm_err *err)
{
	int fd = memfd_create("vma-script", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "memfd_create");
	if (fs_write_all(fd, body, strlen(body)) != 0) {
		int e = errno;
		close(fd);
		return vm_err_errno(err, VM_ERR_IO, e, "write script");
	}
	/* the script cannot be rewritten under the interpreter (fd 3 is shared
	 * with everything the script starts) */
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) != 0 ||
	    lseek(fd, 0, SEEK_SET) != 0) {
		int e = errno;
		close(fd);
		return vm_err_errno(err, VM_ERR_IO, e, "seal script");
	}
	return fd;
}

enum probe_step_status probe_script_run(STEP_RUN_ARGS)
{
	struct vm_err err = {0};
	int fd = script_memfd(st->body, &err);
	if (fd < 0) {
		json_object_set_new(result, "exit_code", json_integer(126));
		json_object_set_new(result, "error", json_string(err.msg));
		return STEP_FAILED;
	}
	const char *argv[] = {st->interpreter ? st->interpreter : "/bin/sh", "/proc/self/fd/3",
	                      NULL};
	enum probe_step_status s = probe_run_argv(st, argv, fd, ctx, result);
	close(fd);
	return s;
}
