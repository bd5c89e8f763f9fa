/* Child processes without a shell: fork+exec into a new process group, with
 * stdin, a clean environment, cwd, user/group, a deadline, cancellation and
 * bounded capture of stdout/stderr. The group never outlives proc_run; with
 * a cgroup tree nothing the child starts does (setsid or not): each run gets
 * its own cgroup (or, without cgroups, a subreaper shim). */
#ifndef VMA_CORE_PROC_H
#define VMA_CORE_PROC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/cgroup.h"
#include "core/err.h"
#include "core/time.h"

#define PROC_DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

enum proc_stream { PROC_STDOUT = 1, PROC_STDERR = 2 };

/* Called from proc_run's thread for each piece of captured output (only the
 * bytes kept under the cap). */
typedef void (*proc_output_fn)(void *ctx, enum proc_stream stream, const char *data, size_t len);

struct proc_spec {
	const char *path;       /* absolute path to execute (see proc_resolve) */
	char *const *argv;      /* NULL-terminated; argv[0] is passed as is */
	char *const *envp;      /* NULL-terminated; the child gets only this */
	const char *cwd;        /* NULL = inherit */
	const void *stdin_data; /* NULL = /dev/null */
	size_t stdin_len;
	bool set_ids; /* switch to uid/gid before exec */
	uid_t uid;
	gid_t gid;
	int64_t deadline_ms;       /* monotonic ms (time_mono_ms); 0 = none */
	uint64_t grace_ms;         /* SIGTERM → SIGKILL delay on timeout/cancel */
	size_t out_cap;            /* bytes kept per stream; the rest is drained */
	const atomic_bool *cancel; /* may be NULL; polled while the child runs */
	proc_output_fn on_output;  /* may be NULL */
	void *ctx;
	/* Containment (borrowed for the call). NULL: the process group only.
	 * CG_TRACK/CG_LIMIT: a step cgroup with limits; CG_NONE: a subreaper shim
	 * between us and the child reaps and kills every orphan of the tree. */
	struct cg_tree *cgroup;
	struct cg_limits limits;
	int fd3; /* > 0: given to the child as fd 3 (a script memfd); 0 = none */
};

struct proc_result {
	int exit_code;   /* -1 when killed by a signal */
	int term_signal; /* 0 when it exited */
	bool timed_out, canceled;
	char *out, *err; /* malloc'd, NUL-terminated, at most out_cap bytes */
	size_t out_len, err_len;
	bool out_truncated, err_truncated;
	uint64_t duration_ms;
	const char *containment; /* "cgroup-v2", "cgroup-v2 (no controllers)", "subreaper",
	                            "process-group" */
	unsigned limits_applied; /* CG_* */
	char limits_note[384];   /* requested limits not applied, and why; "" = none */
};

/* Runs spec to completion. Returns 0 when the child ran (whatever its exit
 * status), or an error when it could not be started: VM_ERR_NOTFOUND (exec
 * failed with ENOENT), VM_ERR_PERM (EACCES, setuid), VM_ERR_IO, VM_ERR_NOMEM. */
int proc_run(const struct proc_spec *spec, struct proc_result *res, struct vm_err *err);

void proc_result_free(struct proc_result *res);

/* Resolves a command name to an absolute path: a name with a '/' is used as
 * is, otherwise each directory of PROC_DEFAULT_PATH is tried. */
int proc_resolve(const char *name, char *out, size_t cap, struct vm_err *err);

/* Resolves user and group names (or numeric ids). An empty user keeps the
 * agent's ids (*set = false); a user without a group uses the user's group. */
int proc_lookup_ids(const char *user, const char *group, uid_t *uid, gid_t *gid, bool *set,
                    struct vm_err *err);

#endif
