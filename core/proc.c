/* Process runner: posix_spawn (vfork-like: no page-table copy, no COW storm
 * in a busy multi-threaded agent), or vfork+exec when the child must do what
 * posix_spawn cannot (switch user or group, join a cgroup, PR_SET_PDEATHSIG;
 * the child then only makes async-signal-safe calls and raw syscalls), fork
 * only for the subreaper shim, one poll() loop over stdin/stdout/stderr and a pidfd, SIGTERM then
 * SIGKILL to the whole process group on deadline or cancel. */
#include "core/proc.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pthread.h>
#include <pty.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"

#define READ_CHUNK 16384
#define TICK_MS    50 /* cancel flag poll interval; the pidfd wakes us on exit */

int proc_resolve(const char *name, char *out, size_t cap, struct vm_err *err)
{
	if (name[0] == '\0')
		return vm_err_set(err, VM_ERR_INVALID, "empty command");
	if (strchr(name, '/') != NULL) {
		if ((size_t)snprintf(out, cap, "%s", name) >= cap)
			return vm_err_set(err, VM_ERR_INVALID, "command path too long");
		return 0;
	}
	const char *p = PROC_DEFAULT_PATH;
	while (*p != '\0') {
		size_t n = strcspn(p, ":");
		if ((size_t)snprintf(out, cap, "%.*s/%s", (int)n, p, name) < cap &&
		    access(out, X_OK) == 0)
			return 0;
		p += n;
		p += *p == ':';
	}
	return vm_err_set(err, VM_ERR_NOTFOUND, "%s: command not found in %s", name,
	                  PROC_DEFAULT_PATH);
}

static int parse_id(const char *s, unsigned *out)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v > 0x7fffffffUL)
		return -1;
	*out = (unsigned)v;
	return 0;
}

int proc_lookup_ids(const char *user, const char *group, uid_t *uid, gid_t *gid, bool *set,
                    struct vm_err *err)
{
	char buf[4096];
	*set = false;
	*uid = getuid();
	*gid = getgid();
	if (user[0] == '\0' && group[0] == '\0')
		return 0;
	unsigned id;
	if (user[0] != '\0') {
		struct passwd pw, *pp = NULL;
		if (getpwnam_r(user, &pw, buf, sizeof(buf), &pp) == 0 && pp != NULL) {
			*uid = pp->pw_uid;
			*gid = pp->pw_gid;
		} else if (parse_id(user, &id) == 0) {
			*uid = (uid_t)id;
		} else {
			return vm_err_set(err, VM_ERR_NOTFOUND, "no such user: %s", user);
		}
	}
	if (group[0] != '\0') {
		struct group gr, *gp = NULL;
		if (getgrnam_r(group, &gr, buf, sizeof(buf), &gp) == 0 && gp != NULL)
			*gid = gp->gr_gid;
		else if (parse_id(group, &id) == 0)
			*gid = (gid_t)id;
		else
			return vm_err_set(err, VM_ERR_NOTFOUND, "no such group: %s", group);
	}
	*set = true;
	return 0;
}

/* What to execute, once resolved: spec->path or argv[0] (looked up with
 * PROC_SEARCH_PATH), the environment (ours when spec->envp is NULL). */
struct target {
	const char *path;
	char *const *envp;
	pid_t parent; /* our pid, for PROC_DIE_WITH_PARENT */
	char buf[PATH_MAX];
};

static int target_resolve(const struct proc_spec *spec, struct target *t, struct vm_err *err)
{
	t->path = spec->path != NULL ? spec->path : spec->argv[0];
	t->envp = spec->envp != NULL ? spec->envp : environ;
	t->parent = getpid();
	if (t->path == NULL)
		return vm_err_set(err, VM_ERR_INVALID, "nothing to execute");
	if ((spec->flags & PROC_SEARCH_PATH) && strchr(t->path, '/') == NULL) {
		int rc = proc_resolve(t->path, t->buf, sizeof(t->buf), err);
		if (rc != 0)
			return rc;
		t->path = t->buf;
	}
	return 0;
}

/* --- the child ------------------------------------------------------------------------ */

static void child_fail(int fd, int what)
{
	int e = errno;
	int msg[2] = {what, e};
	ssize_t w = write(fd, msg, sizeof(msg));
	(void)w;
	_exit(127);
}

enum { STEP_SETUP = 1, STEP_CHDIR, STEP_IDS, STEP_EXEC, STEP_CGROUP };

/* The agent ignores SIGPIPE and blocks others; a child must start clean. */
static void child_signals_default(void)
{
	/* handlers first, then the mask: a vfork child must never run one of ours */
	struct sigaction dfl;
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	for (int s = 1; s < NSIG; s++)
		(void)sigaction(s, &dfl, NULL);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
}

static void close_from(unsigned fd)
{
	if (syscall(SYS_close_range, fd, ~0U, 0U) != 0)
		for (int i = (int)fd; i < 1024; i++)
			close(i);
}

/* Without cgroups: a subreaper between the agent and the program. Orphans of
 * the program's tree (setsid, daemons) are reparented here instead of to
 * init; when the program exits, or the control pipe closes (the agent wants
 * the tree dead, or the agent itself died), every one of them is killed and
 * reaped before the shim exits with the program's status. Returns only in
 * the program's child. Async-signal-safe calls only. */
/* The shim's program, for its signal handler (set in the forked shim only). */
static volatile sig_atomic_t shim_prog;

static void shim_forward(int sig)
{
	if (shim_prog > 0)
		(void)kill(-(pid_t)shim_prog, sig);
}

static void shim_run(int ctl_fd, int report_fd, bool session)
{
	(void)cg_set_subreaper();
	/* no signal may find the shim between fork and its handlers */
	sigset_t all, none;
	sigfillset(&all);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &all, NULL);
	pid_t prog = fork();
	if (prog < 0)
		child_fail(report_fd, STEP_SETUP);
	if (prog == 0) {
		/* a group of its own: `kill -9 0` in a step must not take the shim;
		 * a terminal's program leads a session (child_exec makes it one) */
		if (!session)
			setpgid(0, 0);
		return;
	}
	/* not for a session leader to be: a group now would make its setsid fail */
	if (!session)
		(void)setpgid(prog, prog);
	shim_prog = prog;
	/* the agent signals the shim's group; the program's group gets it */
	struct sigaction fw;
	memset(&fw, 0, sizeof(fw));
	fw.sa_handler = shim_forward;
	static const int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
	for (size_t i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++)
		(void)sigaction(forwarded[i], &fw, NULL);
	fw.sa_handler = SIG_IGN;
	(void)sigaction(SIGPIPE, &fw, NULL);
	sigprocmask(SIG_SETMASK, &none, NULL);
	/* keep only the control pipe: stdout, stderr and the report pipe must
	 * reach EOF in the agent when the program is done with them */
	if (dup2(ctl_fd, 0) < 0)
		_exit(127);
	close_from(1);
	int status = 0, st;
	bool done = false, hangup = false;
	/* woken by the program's exit (pidfd) or the agent; the tick only reaps
	 * orphans that exit meanwhile (and is the wait without pidfds) */
#ifdef SYS_pidfd_open
	int pfd = (int)syscall(SYS_pidfd_open, prog, 0);
#else
	int pfd = -1;
#endif
	while (!done && !hangup) {
		struct pollfd p[2] = {{0, POLLIN, 0}, {pfd, POLLIN, 0}};
		if (poll(p, pfd >= 0 ? 2 : 1, pfd >= 0 ? 1000 : TICK_MS) > 0 && p[0].revents != 0)
			hangup = true;
		pid_t w;
		while ((w = waitpid(-1, &st, WNOHANG)) > 0)
			if (w == prog)
				status = st, done = true;
	}
	/* bounded: each pass reaps at least one process or ends */
	for (int i = 0; i < 1000000; i++) {
		(void)cg_kill_own_children();
		pid_t w = waitpid(-1, &st, 0);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			break; /* ECHILD: nothing of the tree is left */
		if (w == prog && !done)
			status = st, done = true;
	}
	if (done && WIFEXITED(status))
		_exit(WEXITSTATUS(status));
	int sig = done && WIFSIGNALED(status) ? WTERMSIG(status) : SIGKILL;
	struct rlimit nocore = {0, 0};
	(void)setrlimit(RLIMIT_CORE, &nocore);
	struct sigaction dfl;
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	(void)sigaction(sig, &dfl, NULL);
	(void)kill(getpid(), sig);
	_exit(128 + sig);
}

/* A descriptor moved above the ones dup2 will write (0-4), close-on-exec. */
static int high_fd(int fd)
{
	return fd < 0 ? -1 : fcntl(fd, F_DUPFD_CLOEXEC, 10);
}

/* Between fork and exec: async-signal-safe calls only (other threads may hold
 * malloc or stdio locks in the parent). cg_fd: the step cgroup's cgroup.procs
 * (joined first, before anything can fork); ctl_fd: the shim's control pipe. */
static void child_exec(const struct proc_spec *spec, const struct target *t, int in_fd, int out_fd,
                       int err_fd, int report_fd, int cg_fd, int ctl_fd)
{
	bool pty = (spec->flags & PROC_PTY) != 0;
	/* a terminal's shell leads its own session (below, after the shim) */
	if (!pty || ctl_fd >= 0)
		setpgid(0, 0);
	if (spec->flags & PROC_DIE_WITH_PARENT) {
		/* and the parent must not have died already */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != t->parent)
			child_fail(report_fd, STEP_SETUP);
	}
	if (cg_fd >= 0 && write(cg_fd, "0", 1) != 1)
		child_fail(report_fd, STEP_CGROUP);
	child_signals_default();
	if (ctl_fd >= 0) {
		shim_run(ctl_fd, report_fd, pty);
		child_signals_default();
	}
	/* the terminal becomes the controlling one of a new session */
	if (pty && (setsid() < 0 || ioctl(in_fd, TIOCSCTTY, 0) != 0))
		child_fail(report_fd, STEP_SETUP);
	int f3 = spec->fd3 > 0 ? high_fd(spec->fd3) : -1;
	in_fd = high_fd(in_fd);
	out_fd = high_fd(out_fd);
	err_fd = high_fd(err_fd);
	int rep = high_fd(report_fd);
	int rep_at = f3 >= 0 ? 4 : 3;
	if (in_fd < 0 || out_fd < 0 || err_fd < 0 || rep < 0 || (spec->fd3 > 0 && f3 < 0) ||
	    dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0 ||
	    (f3 >= 0 && dup2(f3, 3) < 0) || dup2(rep, rep_at) < 0)
		child_fail(report_fd, STEP_SETUP);
	report_fd = rep_at;
	(void)fcntl(report_fd, F_SETFD, FD_CLOEXEC);
	/* Nothing of the agent's (sockets, state files) leaks into the step. */
	close_from((unsigned)rep_at + 1);
	if (spec->cwd != NULL && chdir(spec->cwd) != 0)
		child_fail(report_fd, STEP_CHDIR);
	/* raw syscalls: glibc's setuid() would signal the parent's threads (setxid
	 * broadcast), wrong in a vfork child that shares the parent's memory */
	if (spec->set_ids) {
		if (syscall(SYS_setgroups, 1, &spec->gid) != 0 && getuid() == 0)
			child_fail(report_fd, STEP_IDS);
		if (syscall(SYS_setgid, spec->gid) != 0 || syscall(SYS_setuid, spec->uid) != 0)
			child_fail(report_fd, STEP_IDS);
	}
	execve(t->path, spec->argv, t->envp);
	child_fail(report_fd, STEP_EXEC);
}

/* vfork: the child borrows our memory until it execs, so no page table of
 * the (large, multi-threaded) agent is copied; that copy and its teardown at
 * exec were most of a step's start-up cost. Every signal is blocked across
 * it so no handler of ours runs in the child; child_exec never returns. */
static pid_t vfork_exec(const struct proc_spec *spec, const struct target *t, int in_fd, int out_fd,
                        int err_fd, int report_fd, int cg_fd)
{
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pid_t pid = vfork();
	if (pid == 0)
		child_exec(spec, t, in_fd, out_fd, err_fd, report_fd, cg_fd, -1);
	int e = errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	errno = e;
	return pid;
}

/* Close every descriptor from low up in the spawned child. glibc has a file
 * action for it; musl (the static release build, docs/static-builds.md) has
 * not, so there one close action per descriptor open now (from /proc/self/fd,
 * or up to 1024 without /proc); musl's child ignores close errors. A
 * descriptor another thread opens meanwhile is O_CLOEXEC like all of ours. */
static int spawn_close_from(posix_spawn_file_actions_t *fa, int low)
{
#ifdef __GLIBC__
	return posix_spawn_file_actions_addclosefrom_np(fa, low);
#else
	DIR *d = opendir("/proc/self/fd");
	int rc = 0;
	if (d == NULL) {
		for (int fd = low; fd < 1024 && rc == 0; fd++)
			rc = posix_spawn_file_actions_addclose(fa, fd);
		return rc;
	}
	int self = dirfd(d);
	struct dirent *e;
	while (rc == 0 && (e = readdir(d)) != NULL) {
		char *end;
		long fd = strtol(e->d_name, &end, 10);
		if (*end == '\0' && end != e->d_name && fd >= low && fd <= INT_MAX && fd != self)
			rc = posix_spawn_file_actions_addclose(fa, (int)fd);
	}
	closedir(d);
	return rc;
#endif
}

/* Without an identity switch, glibc's posix_spawn does everything we need in
 * the child: own process group (or, detached, own session), clean signal
 * state, stdio, closing every other descriptor, chdir. It returns the exec
 * error itself. */
static int spawn_child(const struct proc_spec *spec, const struct target *t, int in_fd, int out_fd,
                       int err_fd, pid_t *pid, struct vm_err *err)
{
	bool detach = (spec->flags & PROC_DETACH) != 0;
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none, all;
	sigemptyset(&none);
	sigfillset(&all);
	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_init(&at);
	int rc = posix_spawn_file_actions_adddup2(&fa, in_fd, 0);
	rc = rc ? rc : posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
	rc = rc ? rc : posix_spawn_file_actions_adddup2(&fa, err_fd, 2);
	if (rc == 0 && spec->fd3 > 0)
		rc = posix_spawn_file_actions_adddup2(&fa, spec->fd3, 3);
	rc = rc ? rc : spawn_close_from(&fa, spec->fd3 > 0 ? 4 : 3);
	if (rc == 0 && spec->cwd != NULL)
		rc = posix_spawn_file_actions_addchdir_np(&fa, spec->cwd);
	short group = detach ? POSIX_SPAWN_SETSID : POSIX_SPAWN_SETPGROUP;
	rc = rc ? rc
	        : posix_spawnattr_setflags(
	              &at, (short)(group | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF));
	if (rc == 0 && !detach)
		rc = posix_spawnattr_setpgroup(&at, 0);
	rc = rc ? rc : posix_spawnattr_setsigmask(&at, &none);
	rc = rc ? rc : posix_spawnattr_setsigdefault(&at, &all);
	if (rc == 0)
		rc = posix_spawn(pid, t->path, &fa, &at, spec->argv, t->envp);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	if (rc == 0)
		return 0;
	struct stat st;
	if (spec->cwd != NULL && stat(spec->cwd, &st) != 0)
		return vm_err_errno(err, VM_ERR_NOTFOUND, rc, "chdir %s", spec->cwd);
	return vm_err_errno(err,
	                    rc == ENOENT                  ? VM_ERR_NOTFOUND
	                    : rc == EACCES || rc == EPERM ? VM_ERR_PERM
	                                                  : VM_ERR_IO,
	                    rc, "exec %s", t->path);
}

static void *reap_detached(void *arg)
{
	pid_t pid = (pid_t)(intptr_t)arg;
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
	return NULL;
}

/* PROC_DETACH: its own session (no controlling terminal, out of our process
 * group's signals), stdio on /dev/null, nothing else of ours. A detached
 * thread waits for it so that no zombie stays behind while we run on. */
static int spawn_detached(const struct proc_spec *spec, const struct target *t, pid_t *pid,
                          struct vm_err *err)
{
	if (spec->set_ids || spec->cgroup != NULL || spec->stdin_data != NULL || spec->fd3 > 0 ||
	    (spec->flags & PROC_DIE_WITH_PARENT))
		return vm_err_set(err, VM_ERR_INVALID,
		                  "a detached process takes no identity, cgroup, input or parent");
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null < 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "open /dev/null");
	int rc = spawn_child(spec, t, null, null, null, pid, err);
	close(null);
	if (rc != 0)
		return rc;
	pthread_t th;
	pthread_attr_t ta;
	if (pthread_attr_init(&ta) == 0) {
		pthread_attr_setdetachstate(&ta, PTHREAD_CREATE_DETACHED);
		/* without the thread it stays a zombie until we exit: nothing worse */
		(void)pthread_create(&th, &ta, reap_detached, (void *)(intptr_t)*pid);
		pthread_attr_destroy(&ta);
	}
	return 0;
}

/* --- the parent ----------------------------------------------------------------------- */

struct capture {
	struct buf b;   /* at most out_cap bytes; stays empty with output_only */
	size_t counted; /* bytes let through the cap */
	bool truncated;
};

static int capture_add(struct capture *c, const char *data, size_t n, size_t *kept, bool count_only)
{
	size_t room = c->b.max - c->counted;
	*kept = n < room ? n : room;
	if (*kept < n)
		c->truncated = true;
	c->counted += *kept;
	return *kept == 0 || count_only ? 0 : buf_append(&c->b, data, *kept);
}

static int pidfd_for(pid_t pid)
{
#ifdef SYS_pidfd_open
	return (int)syscall(SYS_pidfd_open, pid, 0);
#else
	(void)pid;
	return -1;
#endif
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

struct run {
	const struct proc_spec *spec;
	pid_t pid;
	int in_fd, out_fd, err_fd, pidfd;
	size_t in_off;
	struct capture cap[2];
	int status;
	bool reaped;
	int64_t term_at, kill_at; /* when SIGTERM was sent / SIGKILL is due; 0 = not yet */
	struct cg_step *step;     /* the run's cgroup, or NULL */
	int ctl_fd;               /* write end of the shim's control pipe, or -1 */
};

static void read_stream(struct run *r, int *fd, enum proc_stream which)
{
	char buf[READ_CHUNK];
	for (int i = 0; i < 16; i++) {
		ssize_t n = read(*fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			close_fd(fd);
			return;
		}
		if (r->spec->flags & PROC_PTY) {
			if (r->spec->on_output != NULL)
				r->spec->on_output(r->spec->ctx, which, buf, (size_t)n);
			return; /* one chunk per turn: cancel and stop stay polled */
		}
		size_t kept = 0;
		struct capture *c = &r->cap[which - 1];
		if (capture_add(c, buf, (size_t)n, &kept, r->spec->output_only) != 0)
			c->truncated = true; /* out of memory: keep draining, report truncation */
		if (kept > 0 && r->spec->on_output != NULL)
			r->spec->on_output(r->spec->ctx, which, buf, kept);
	}
}

static void write_stdin(struct run *r)
{
	const char *data = r->spec->stdin_data;
	while (r->in_off < r->spec->stdin_len) {
		ssize_t n = write(r->in_fd, data + r->in_off, r->spec->stdin_len - r->in_off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n < 0)
			break; /* EPIPE: the child does not read its input; not our error */
		r->in_off += (size_t)n;
	}
	close_fd(&r->in_fd);
}

static void try_reap(struct run *r)
{
	if (r->reaped)
		return;
	pid_t w = waitpid(r->pid, &r->status, WNOHANG);
	if (w == r->pid)
		r->reaped = true;
}

static void signal_group(struct run *r, int sig)
{
	/* The group outlives its leader while grandchildren run: signal it either way. */
	if (r->ctl_fd >= 0 && sig == SIGKILL) {
		/* the shim kills and reaps the whole tree; killing it would orphan it */
		close_fd(&r->ctl_fd);
		return;
	}
	(void)kill(-r->pid, sig);
	/* members that left the group (setsid, set -m) are still in the cgroup */
	if (r->step != NULL && sig == SIGKILL)
		cg_step_kill(r->step);
	else if (r->step != NULL)
		cg_step_signal(r->step, sig);
}

/* Deadline, cancel and the SIGTERM → SIGKILL escalation. */
static void enforce(struct run *r, struct proc_result *res, int64_t now)
{
	const struct proc_spec *s = r->spec;
	if (r->term_at == 0) {
		bool cancel = (s->cancel != NULL && atomic_load(s->cancel)) ||
		              (s->stop != NULL && s->stop(s->ctx));
		bool late = s->deadline_ms > 0 && now >= s->deadline_ms;
		if (!cancel && !late)
			return;
		res->canceled = cancel;
		res->timed_out = !cancel && late;
		signal_group(r, SIGTERM);
		r->term_at = now;
		r->kill_at = now + (int64_t)s->grace_ms;
	}
	if (r->kill_at != 0 && now >= r->kill_at) {
		signal_group(r, SIGKILL);
		r->kill_at = 0;
	}
}

static int poll_timeout(const struct run *r, int64_t now)
{
	int64_t t = r->pidfd >= 0 ? TICK_MS : 5;
	if (r->spec->deadline_ms > 0 && r->term_at == 0 && r->spec->deadline_ms - now < t)
		t = r->spec->deadline_ms - now;
	if (r->kill_at != 0 && r->kill_at - now < t)
		t = r->kill_at - now;
	return t < 0 ? 0 : (int)t;
}

static void loop(struct run *r, struct proc_result *res)
{
	/* After the leader exits, pipes held open by stray grandchildren must not
	 * keep us waiting: the rest of the group is killed and drained briefly. */
	int64_t drain_until = 0;
	for (;;) {
		int64_t now = time_mono_ms();
		enforce(r, res, now);
		if (r->reaped && drain_until == 0) {
			signal_group(r, SIGKILL);
			drain_until = now + 200;
		}
		if (r->reaped && ((r->out_fd < 0 && r->err_fd < 0) || now >= drain_until))
			return;
		struct pollfd pfd[4];
		int n = 0, iin = -1, iout = -1, ierr = -1, ipid = -1;
		if (r->in_fd >= 0)
			pfd[iin = n++] = (struct pollfd){r->in_fd, POLLOUT, 0};
		if (r->out_fd >= 0)
			pfd[iout = n++] = (struct pollfd){r->out_fd, POLLIN, 0};
		if (r->err_fd >= 0)
			pfd[ierr = n++] = (struct pollfd){r->err_fd, POLLIN, 0};
		if (r->pidfd >= 0 && !r->reaped)
			pfd[ipid = n++] = (struct pollfd){r->pidfd, POLLIN, 0};
		int pr = poll(pfd, (nfds_t)n, poll_timeout(r, now));
		if (pr < 0 && errno != EINTR)
			return;
		if (pr > 0) {
			if (iin >= 0 && pfd[iin].revents)
				write_stdin(r);
			if (iout >= 0 && pfd[iout].revents)
				read_stream(r, &r->out_fd, PROC_STDOUT);
			if (ierr >= 0 && pfd[ierr].revents)
				read_stream(r, &r->err_fd, PROC_STDERR);
		}
		if (r->pidfd < 0 || (ipid >= 0 && pr > 0 && pfd[ipid].revents) ||
		    (r->out_fd < 0 && r->err_fd < 0))
			try_reap(r);
	}
}

static int make_pipe(int fds[2])
{
	return pipe2(fds, O_CLOEXEC);
}

/* A terminal in the places of the pipes: the child's three ends are the
 * slave (in[0], out[1], errp[1]); we read and write the master (out[0]). */
static int open_pty(const struct proc_spec *spec, int out[2], int errp[2], int in[2])
{
	struct winsize ws = {.ws_row = spec->pty_rows ? spec->pty_rows : 24,
	                     .ws_col = spec->pty_cols ? spec->pty_cols : 80};
	int master, slave;
	if (openpty(&master, &slave, NULL, NULL, &ws) != 0)
		return -1;
	(void)fcntl(master, F_SETFD, FD_CLOEXEC);
	(void)fcntl(slave, F_SETFD, FD_CLOEXEC);
	out[0] = master;
	out[1] = slave;
	errp[1] = fcntl(slave, F_DUPFD_CLOEXEC, 0);
	in[0] = fcntl(slave, F_DUPFD_CLOEXEC, 0);
	return errp[1] < 0 || in[0] < 0 ? -1 : 0;
}

int proc_run(const struct proc_spec *spec, struct proc_result *res, struct vm_err *err)
{
	memset(res, 0, sizeof(*res));
	res->exit_code = -1;
	int in[2] = {-1, -1}, out[2] = {-1, -1}, errp[2] = {-1, -1}, rep[2] = {-1, -1};
	int rc = 0;
	struct run r;
	memset(&r, 0, sizeof(r));
	r.spec = spec;
	r.in_fd = r.out_fd = r.err_fd = r.pidfd = r.ctl_fd = -1;
	buf_init(&r.cap[0].b, spec->out_cap);
	buf_init(&r.cap[1].b, spec->out_cap);
	int64_t start = time_mono_ms();
	struct cg_step step = {.procs_fd = -1};
	int ctl[2] = {-1, -1};
	res->containment = "process-group";
	struct target t;
	if ((rc = target_resolve(spec, &t, err)) != 0)
		goto out;
	if (spec->flags & PROC_DETACH) {
		res->containment = "session";
		rc = spawn_detached(spec, &t, &res->pid, err);
		goto out;
	}
	if (spec->cgroup != NULL) {
		struct vm_err cerr = {0};
		if (spec->cgroup->mode != CG_NONE &&
		    cg_step_new(spec->cgroup, &spec->limits, &step, &cerr) == 0) {
			r.step = &step;
			res->containment = cg_mode_name(spec->cgroup->mode);
			res->limits_applied = step.applied;
			snprintf(res->limits_note, sizeof(res->limits_note), "%s", step.note);
		} else if (make_pipe(ctl) == 0) {
			res->containment = "subreaper";
			bool want = spec->limits.memory_max || spec->limits.cpu_max ||
			            spec->limits.pids_max;
			if (want)
				snprintf(res->limits_note, sizeof(res->limits_note),
				         "limits not applied: %.200s",
				         cerr.msg[0] ? cerr.msg : spec->cgroup->why);
		}
	}

	bool pty = (spec->flags & PROC_PTY) != 0;
	bool feed = (spec->flags & PROC_STDIN_STREAM) != 0;
	if (pty && (spec->stdin_data != NULL || spec->fd3 > 0)) {
		rc = vm_err_set(err, VM_ERR_INVALID, "a terminal takes no stdin data or fd 3");
		goto out;
	}
	if (feed && (pty || spec->stdin_data != NULL || spec->fd3 > 0)) {
		rc =
		    vm_err_set(err, VM_ERR_INVALID, "a fed stdin takes no stdin data, pty or fd 3");
		goto out;
	}
	if (pty) {
		rc = open_pty(spec, out, errp, in);
	} else if (spec->stdin_data != NULL || feed) {
		rc = make_pipe(in);
	} else {
		in[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
	}
	if (rc != 0 || in[0] < 0 || (!pty && make_pipe(out) != 0) ||
	    (!pty && make_pipe(errp) != 0) || make_pipe(rep) != 0) {
		rc = vm_err_errno(err, VM_ERR_IO, errno, pty ? "openpty" : "pipe");
		goto out;
	}
	pid_t pid;
	if (!pty && !spec->set_ids && r.step == NULL && ctl[0] < 0 &&
	    !(spec->flags & PROC_DIE_WITH_PARENT)) {
		rc = spawn_child(spec, &t, in[0], out[1], errp[1], &pid, err);
		if (rc != 0)
			goto out;
		close_fd(&rep[0]); /* posix_spawn reported exec errors itself */
		goto spawned;
	}
	/* the shim lives on after fork (it waits for the tree): a real fork */
	pid = ctl[0] < 0 ? vfork_exec(spec, &t, in[0], out[1], errp[1], rep[1], step.procs_fd)
	                 : fork();
	if (pid < 0) {
		rc = vm_err_errno(err, VM_ERR_IO, errno, "fork");
		goto out;
	}
	if (pid == 0)
		child_exec(spec, &t, in[0], out[1], errp[1], rep[1], step.procs_fd, ctl[0]);
spawned:
	/* Also from the parent: no window where the child is not yet its own group
	 * (a terminal's child makes its own session: a group now would forbid it) */
	if (!pty)
		(void)setpgid(pid, pid);
	r.pid = res->pid = pid;
	close_fd(&in[0]);
	close_fd(&out[1]);
	close_fd(&errp[1]);
	close_fd(&rep[1]);
	close_fd(&ctl[0]);
	r.ctl_fd = ctl[1];
	ctl[1] = -1;

	int report[2] = {0, 0};
	ssize_t got = 0;
	while (rep[0] >= 0 && (got = read(rep[0], report, sizeof(report))) < 0 && errno == EINTR)
		;
	if (got == (ssize_t)sizeof(report)) {
		/* exec did not happen: the child exits 127 at once */
		(void)waitpid(pid, NULL, 0);
		static const char *const what[] = {
		    "", "set up stdio", "chdir", "switch user/group", "exec", "join cgroup"};
		int code = report[1] == ENOENT                         ? VM_ERR_NOTFOUND
		           : report[1] == EACCES || report[1] == EPERM ? VM_ERR_PERM
		                                                       : VM_ERR_IO;
		rc = vm_err_errno(err, code, report[1], "%s %s",
		                  what[report[0] >= 1 && report[0] <= 5 ? report[0] : 0],
		                  report[0] == STEP_CHDIR    ? (spec->cwd ? spec->cwd : "")
		                  : report[0] == STEP_CGROUP ? step.path
		                                             : t.path);
		goto out;
	}
	r.in_fd = in[1];
	in[1] = -1;
	r.out_fd = out[0];
	out[0] = -1;
	r.err_fd = errp[0];
	errp[0] = -1;
	for (int *fd = &r.in_fd; fd <= &r.err_fd; fd++)
		if (*fd >= 0)
			(void)fcntl(*fd, F_SETFL, O_NONBLOCK);
	r.pidfd = pidfd_for(pid);
	if (feed) {
		/* the caller's from now on, blocking: the loop never polls it */
		(void)fcntl(r.in_fd, F_SETFL, 0);
		if (spec->on_start != NULL)
			spec->on_start(spec->ctx, r.in_fd, pid);
		else
			close(r.in_fd);
		r.in_fd = -1;
	}
	if (r.in_fd >= 0 && spec->stdin_len == 0)
		close_fd(&r.in_fd);
	if (pty && spec->on_start != NULL)
		spec->on_start(spec->ctx, r.out_fd, pid);
	loop(&r, res);
	if (!r.reaped) {
		/* poll failed: make sure nothing is left behind */
		signal_group(&r, SIGKILL);
		(void)waitpid(pid, &r.status, 0);
	}
	if (WIFEXITED(r.status)) {
		res->exit_code = WEXITSTATUS(r.status);
	} else if (WIFSIGNALED(r.status)) {
		res->term_signal = WTERMSIG(r.status);
	}
out:
	/* nothing the child started outlives the run: kill the cgroup, wait until
	 * empty, remove it (the shim has done the same before it exited) */
	cg_step_free(&step);
	close_fd(&r.ctl_fd);
	for (int i = 0; i < 2; i++) {
		close_fd(&ctl[i]);
		close_fd(&in[i]);
		close_fd(&out[i]);
		close_fd(&errp[i]);
		close_fd(&rep[i]);
	}
	close_fd(&r.in_fd);
	close_fd(&r.out_fd);
	close_fd(&r.err_fd);
	close_fd(&r.pidfd);
	/* NULL for a stream that said nothing; out of memory reads as truncated */
	res->out = r.cap[0].b.len ? buf_take(&r.cap[0].b, &res->out_len) : NULL;
	res->out_truncated = r.cap[0].truncated || (r.cap[0].b.len && res->out == NULL);
	res->err = r.cap[1].b.len ? buf_take(&r.cap[1].b, &res->err_len) : NULL;
	res->err_truncated = r.cap[1].truncated || (r.cap[1].b.len && res->err == NULL);
	if (spec->output_only) {
		res->out_len = r.cap[0].counted;
		res->err_len = r.cap[1].counted;
	}
	buf_free(&r.cap[0].b);
	buf_free(&r.cap[1].b);
	res->duration_ms = (uint64_t)(time_mono_ms() - start);
	return rc;
}

void proc_result_free(struct proc_result *res)
{
	free(res->out);
	free(res->err);
	res->out = res->err = NULL;
}

void proc_result_describe(const struct proc_result *res, char *out, size_t cap)
{
	if (res->timed_out)
		snprintf(out, cap, "did not finish in time (killed)");
	else if (res->canceled)
		snprintf(out, cap, "canceled");
	else if (res->term_signal != 0)
		snprintf(out, cap, "killed by signal %d (%s)", res->term_signal,
		         strsignal(res->term_signal));
	else
		snprintf(out, cap, "exit %d", res->exit_code);
}
