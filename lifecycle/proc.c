/* Child processes for lifecycle work (systemctl, a new binary's self-test):
 * argv executed directly (never a shell), own process group, bounded output,
 * a hard timeout that kills the whole group. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/time.h"
#include "lifecycle/internal.h"

static void child(const char *const argv[], bool search, int out_w, int err_w, int exec_w,
                  pid_t parent)
{
	setpgid(0, 0);
	/* A killed `vm-agent upgrade` must not leave a hung self-test running
	 * forever: the child dies with us (and checks we did not die already). */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(127);
	int devnull = open("/dev/null", O_RDONLY);
	if (devnull >= 0)
		dup2(devnull, 0);
	dup2(out_w, 1);
	dup2(err_w, 2);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
	if (search)
		execvp(argv[0], (char *const *)argv);
	else
		execv(argv[0], (char *const *)argv);
	int e = errno;
	ssize_t w = write(exec_w, &e, sizeof(e));
	(void)w;
	_exit(127);
}

static void append(char *buf, size_t cap, size_t *len, const char *data, size_t n)
{
	if (*len + 1 >= cap)
		return;
	if (n > cap - 1 - *len)
		n = cap - 1 - *len;
	memcpy(buf + *len, data, n);
	*len += n;
	buf[*len] = '\0';
}

int lc_proc_run(const char *const argv[], bool search, uint64_t timeout_ms,
                struct lc_proc_result *res, struct vm_err *err)
{
	memset(res, 0, sizeof(*res));
	int outp[2], errp[2], execp[2];
	if (pipe2(outp, O_CLOEXEC) != 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "pipe");
	if (pipe2(errp, O_CLOEXEC) != 0) {
		close(outp[0]), close(outp[1]);
		return vm_err_errno(err, VM_ERR_IO, errno, "pipe");
	}
	if (pipe2(execp, O_CLOEXEC) != 0) {
		close(outp[0]), close(outp[1]), close(errp[0]), close(errp[1]);
		return vm_err_errno(err, VM_ERR_IO, errno, "pipe");
	}
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		close(outp[0]), close(outp[1]), close(errp[0]), close(errp[1]);
		close(execp[0]), close(execp[1]);
		return vm_err_errno(err, VM_ERR_IO, e, "fork");
	}
	if (pid == 0)
		child(argv, search, outp[1], errp[1], execp[1], parent);
	setpgid(pid, pid); /* also here: no race with the kill below */
	close(outp[1]), close(errp[1]), close(execp[1]);

	size_t olen = 0, elen = 0;
	uint64_t deadline = (uint64_t)time_mono_ms() + timeout_ms;
	struct pollfd fds[2] = {{outp[0], POLLIN, 0}, {errp[0], POLLIN, 0}};
	int open_fds = 2;
	while (open_fds > 0) {
		uint64_t now = (uint64_t)time_mono_ms();
		if (now >= deadline) {
			res->timed_out = 1;
			kill(-pid, SIGKILL);
			break;
		}
		int n = poll(fds, 2, (int)(deadline - now > 200 ? 200 : deadline - now));
		if (n < 0 && errno != EINTR)
			break;
		for (int i = 0; i < 2; i++) {
			if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			char buf[4096];
			ssize_t r = read(fds[i].fd, buf, sizeof(buf));
			if (r > 0) {
				if (i == 0)
					append(res->out, sizeof(res->out), &olen, buf, (size_t)r);
				else
					append(res->err, sizeof(res->err), &elen, buf, (size_t)r);
			} else if (r == 0 || errno != EINTR) {
				close(fds[i].fd);
				fds[i].fd = -1;
				open_fds--;
			}
		}
	}
	for (int i = 0; i < 2; i++)
		if (fds[i].fd >= 0)
			close(fds[i].fd);
	/* The output is closed (or we gave up); the process may still run. */
	int status = 0;
	for (;;) {
		pid_t w = waitpid(pid, &status, WNOHANG);
		if (w == pid)
			break;
		if (w < 0 && errno != EINTR)
			break;
		if ((uint64_t)time_mono_ms() >= deadline) {
			res->timed_out = 1;
			kill(-pid, SIGKILL);
			waitpid(pid, &status, 0);
			break;
		}
		struct timespec ts = {0, 10 * 1000000};
		nanosleep(&ts, NULL);
	}
	/* Anything left in the group (daemonised children) goes too. */
	kill(-pid, SIGKILL);
	int e = 0;
	if (read(execp[0], &e, sizeof(e)) == (ssize_t)sizeof(e)) {
		res->exec_failed = 1;
		res->exec_errno = e;
	}
	close(execp[0]);
	if (WIFEXITED(status)) {
		res->exited = 1;
		res->exit_code = WEXITSTATUS(status);
	} else if (WIFSIGNALED(status)) {
		res->signal = WTERMSIG(status);
	}
	return 0;
}

void lc_proc_describe(const struct lc_proc_result *res, char *out, size_t cap)
{
	if (res->exec_failed)
		snprintf(out, cap, "cannot execute: %s", strerror(res->exec_errno));
	else if (res->timed_out)
		snprintf(out, cap, "did not finish in time (killed)");
	else if (res->signal)
		snprintf(out, cap, "killed by signal %d (%s)", res->signal, strsignal(res->signal));
	else
		snprintf(out, cap, "exit %d", res->exit_code);
}
