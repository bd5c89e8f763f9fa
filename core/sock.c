/* Unix listening sockets in a directory only the agent's user can enter. */
#include "core/sock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fs.h"

/* True when something accepts connections on path. */
static bool unix_alive(const char *path)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	bool alive = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	close(fd);
	return alive;
}

static int check_dir(int fd, const char *dir, struct vm_err *err)
{
	struct stat st;
	if (fstat(fd, &st) != 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "%s", dir);
	/* Listing it is harmless (the sockets are 0600); writing to it is not. */
	if (st.st_uid != geteuid() || (st.st_mode & 022) != 0)
		return vm_err_set(err, VM_ERR_PERM,
		                  "%s: must be owned by uid %u and writable by it alone, e.g. "
		                  "mode 0700 (it is uid %u, mode %04o): others could replace the "
		                  "agent's sockets",
		                  dir, (unsigned)geteuid(), (unsigned)st.st_uid,
		                  (unsigned)(st.st_mode & 07777));
	return 0;
}

int sock_unix_prepare(struct sock_unix *s, const char *dir, const char *name, struct vm_err *err)
{
	memset(s, 0, sizeof(*s));
	s->dirfd = -1;
	if (snprintf(s->path, sizeof(s->path), "%s/%s", dir, name) >= (int)sizeof(s->path) ||
	    snprintf(s->name, sizeof(s->name), "%s", name) >= (int)sizeof(s->name))
		return vm_err_set(err, VM_ERR_INVALID,
		                  "%s/%s: too long for a unix socket path (%zu bytes at most)", dir,
		                  name, sizeof(s->path) - 1);
	snprintf(s->dir, sizeof(s->dir), "%s", dir);
	int rc = fs_mkdir_p(dir, 0700, err);
	if (rc != 0)
		return rc;
	s->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (s->dirfd < 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "%s (a symlink is refused)", dir);
	rc = check_dir(s->dirfd, dir, err);
	if (rc != 0)
		goto fail;
	struct stat st;
	if (fstatat(s->dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
		if (errno == ENOENT)
			return 0;
		rc = vm_err_errno(err, VM_ERR_IO, errno, "%s", s->path);
		goto fail;
	}
	if (!S_ISSOCK(st.st_mode) || st.st_uid != geteuid()) {
		rc = vm_err_set(err, VM_ERR_PERM,
		                "%s exists and is not a socket of ours: refusing to replace it",
		                s->path);
		goto fail;
	}
	if (unix_alive(s->path)) {
		rc = vm_err_set(err, VM_ERR_BUSY, "%s is in use: is another vm-agent running?",
		                s->path);
		goto fail;
	}
	/* stale, from an agent that was killed */
	if (unlinkat(s->dirfd, name, 0) != 0 && errno != ENOENT) {
		rc = vm_err_errno(err, VM_ERR_IO, errno, "remove stale %s", s->path);
		goto fail;
	}
	return 0;
fail:
	sock_unix_close(s);
	return rc;
}

int sock_unix_seal(struct sock_unix *s, struct vm_err *err)
{
	struct stat d1, d2, st;
	/* bind went by path: the directory must still be the one we checked */
	if (fstat(s->dirfd, &d1) != 0 || stat(s->dir, &d2) != 0 || d1.st_dev != d2.st_dev ||
	    d1.st_ino != d2.st_ino)
		return vm_err_set(err, VM_ERR_PERM, "%s was replaced while binding %s", s->dir,
		                  s->name);
	if (fstatat(s->dirfd, s->name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISSOCK(st.st_mode) ||
	    st.st_uid != geteuid())
		return vm_err_set(err, VM_ERR_PERM, "%s is not the socket we bound", s->path);
	/* The 0700 directory keeps others out until the mode is set. */
	if (fchmodat(s->dirfd, s->name, 0600, 0) != 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "chmod %s", s->path);
	return 0;
}

void sock_unix_close(struct sock_unix *s)
{
	if (s->dirfd >= 0)
		close(s->dirfd);
	s->dirfd = -1;
}
