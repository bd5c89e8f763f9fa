/* Child processes without a shell, the program's one spawner: a new process
 * group, stdin, a clean environment, cwd, user/group, a deadline,
 * cancellation and bounded capture of stdout/stderr. The group never
 * outlives proc_run; with a cgroup tree nothing the child starts does
 * (setsid or not): each run gets its own cgroup (or, without cgroups, a
 * subreaper shim). Flags add PATH search, dying with the caller, and a
 * detached start for what must outlive us. */
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

enum proc_flags {
	/* path (or argv[0] when path is NULL) without a '/' is looked up in
	 * PROC_DEFAULT_PATH, never in $PATH or the working directory */
	PROC_SEARCH_PATH = 1u << 0,
	/* the child gets SIGKILL when the thread that started it dies
	 * (PR_SET_PDEATHSIG): a killed caller leaves no hung child behind */
	PROC_DIE_WITH_PARENT = 1u << 1,
	/* start and return at once (res->pid): own session, stdio on /dev/null,
	 * no deadline, no capture; reaped by a thread of ours when it ends, and
	 * it outlives us. Not with set_ids, cgroup, stdin, fd3 or
	 * PROC_DIE_WITH_PARENT. */
	PROC_DETACH = 1u << 2,
	/* stdin, stdout and stderr are a new terminal (pty_cols x pty_rows); the
	 * child leads a new session with it as its controlling terminal. Every
	 * byte read from the master goes to on_output (PROC_STDOUT, nothing is
	 * captured; a blocking on_output stops the reading: backpressure);
	 * on_start gets the master once the child runs. Not with stdin or fd3. */
	PROC_PTY = 1u << 3,
	/* stdin is a pipe the caller feeds: on_start gets its write end (the
	 * caller's to write, blocking, and to close: closing is the child's
	 * EOF) once the child runs. For a conversation with the child, e.g.
	 * the next request written from on_output. Not with stdin, PTY or fd3. */
	PROC_STDIN_STREAM = 1u << 4,
};

struct proc_spec {
	const char *path;       /* what to execute (see PROC_SEARCH_PATH); NULL = argv[0] */
	char *const *argv;      /* NULL-terminated; argv[0] is passed as is */
	char *const *envp;      /* NULL-terminated; the child gets only this; NULL = ours */
	unsigned flags;         /* enum proc_flags */
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
	/* The callback is the only destination: nothing is kept in proc_result
	 * (out/err stay NULL; the lengths and truncation flags still count what
	 * out_cap let through), so memory is one read chunk whatever the cap. */
	bool output_only;
	/* Containment (borrowed for the call). NULL: the process group only.
	 * CG_TRACK/CG_LIMIT: a step cgroup with limits; CG_NONE: a subreaper shim
	 * between us and the child reaps and kills every orphan of the tree. */
	struct cg_tree *cgroup;
	struct cg_limits limits;
	int fd3; /* > 0: given to the child as fd 3 (a script memfd); 0 = none */
	/* PROC_PTY: the terminal's size, and the master (borrowed until proc_run
	 * returns: input, resize, signals) with the child's pid once it runs;
	 * PROC_STDIN_STREAM: the stdin pipe's write end (owned by the caller) */
	uint16_t pty_cols, pty_rows;
	void (*on_start)(void *ctx, int master_fd, pid_t pid);
	/* May be NULL; polled with cancel: true ends the run as canceled. */
	bool (*stop)(void *ctx);
};

struct proc_result {
	pid_t pid;       /* the child's (once started) */
	int exit_code;   /* -1 when killed by a signal */
	int term_signal; /* 0 when it exited */
	bool timed_out, canceled;
	char *out, *err; /* malloc'd, NUL-terminated, at most out_cap bytes; NULL with
	                    output_only */
	size_t out_len, err_len;
	bool out_truncated, err_truncated;
	uint64_t duration_ms;
	const char *containment; /* "cgroup-v2", "cgroup-v2 (no controllers)", "subreaper",
	                            "process-group", "session" (PROC_DETACH) */
	unsigned limits_applied; /* CG_* */
	char limits_note[384];   /* requested limits not applied, and why; "" = none */
};

/* Runs spec to completion. Returns 0 when the child ran (whatever its exit
 * status), or an error when it could not be started: VM_ERR_NOTFOUND (exec
 * failed with ENOENT), VM_ERR_PERM (EACCES, setuid), VM_ERR_IO, VM_ERR_NOMEM. */
int proc_run(const struct proc_spec *spec, struct proc_result *res, struct vm_err *err);

void proc_result_free(struct proc_result *res);

/* How it ended, in words: "exit 1", "killed by signal 11 (Segmentation
 * fault)", "did not finish in time (killed)", "canceled". */
void proc_result_describe(const struct proc_result *res, char *out, size_t cap);

/* Resolves a command name to an absolute path: a name with a '/' is used as
 * is, otherwise each directory of PROC_DEFAULT_PATH is tried. */
int proc_resolve(const char *name, char *out, size_t cap, struct vm_err *err);

/* Resolves user and group names (or numeric ids). An empty user keeps the
 * agent's ids (*set = false); a user without a group uses the user's group. */
int proc_lookup_ids(const char *user, const char *group, uid_t *uid, gid_t *gid, bool *set,
                    struct vm_err *err);

#endif
