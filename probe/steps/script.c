/* Step "script": a body written 0700 into probe.work_dir/scripts and run by an
 * interpreter (default /bin/sh) given as a path, then removed. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "core/codec.h"
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

static int write_script(const char *dir, const char *body, uid_t uid, bool chown_it, char *out,
                        size_t cap, struct vm_err *err)
{
	uint8_t rnd[8];
	char hex[17];
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		return vm_err_errno(err, VM_ERR_IO, errno, "getrandom");
	hex_encode(rnd, sizeof(rnd), hex);
	if ((size_t)snprintf(out, cap, "%s/scripts/step-%s", dir, hex) >= cap)
		return vm_err_set(err, VM_ERR_INVALID, "probe.work_dir too long");
	int fd = open(out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0700);
	if (fd < 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "create %s", out);
	size_t len = strlen(body), off = 0;
	int rc = 0;
	while (off < len && rc == 0) {
		ssize_t w = write(fd, body + off, len - off);
		if (w < 0 && errno != EINTR)
			rc = vm_err_errno(err, VM_ERR_IO, errno, "write %s", out);
		else if (w > 0)
			off += (size_t)w;
	}
	/* the step's user must be able to read its script */
	if (rc == 0 && chown_it && fchown(fd, uid, (gid_t)-1) != 0)
		rc = vm_err_errno(err, VM_ERR_PERM, errno, "chown %s", out);
	if (close(fd) != 0 && rc == 0)
		rc = vm_err_errno(err, VM_ERR_IO, errno, "close %s", out);
	if (rc != 0)
		unlink(out);
	return rc;
}

enum probe_step_status probe_script_run(STEP_RUN_ARGS)
{
	char file[PATH_MAX];
	struct vm_err err = {0};
	uid_t uid = 0;
	gid_t gid = 0;
	bool set = false;
	if (proc_lookup_ids(st->user ? st->user : "", st->group ? st->group : "", &uid, &gid, &set,
	                    &err) != 0 ||
	    write_script(ctx->work_dir, st->body, uid, set, file, sizeof(file), &err) != 0) {
		json_object_set_new(result, "exit_code", json_integer(126));
		json_object_set_new(result, "error", json_string(err.msg));
		return STEP_FAILED;
	}
	const char *argv[] = {st->interpreter ? st->interpreter : "/bin/sh", file, NULL};
	enum probe_step_status s = probe_run_argv(st, argv, ctx, result);
	unlink(file);
	return s;
}
