/* File helpers with the durability rules the agent relies on, and the one
 * owner of "reach a caller's file through an opened directory fd". */
#include "core/fs.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/rand.h"
#include "core/time.h"

/* Symlinks followed in one resolution, like the kernel's MAXSYMLINKS. */
#define FS_LINKS_MAX 40
/* An unlocked temp file older than this is a dead writer's, never a live one
 * between its create and its flock. */
#define FS_TMP_STALE_SEC 60
/* Directory entries looked at when sweeping dead temp files. */
#define FS_SWEEP_MAX 65536

struct fill {
	const void *data;
	size_t len;
	int srcfd;
	uint64_t max;
	const char *what;
	bool own; /* the agent's own file: older versions' temps are swept too */
};

/* The one replace sequence (below), also behind fs_write_atomic. */
static int replace_at(int dirfd, const char *leaf, const struct fill *f,
                      const struct fs_write_opts *o, struct vm_err *err);

int fs_write_all(int fd, const void *data, size_t len)
{
	const char *p = data;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0) {
			/* no progress and no error (a full device, a FUSE file): retrying spins */
			errno = EIO;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int fs_sync_parent(const char *path, struct vm_err *err)
{
	char dir[PATH_MAX];
	if (snprintf(dir, sizeof(dir), "%s", path) >= (int)sizeof(dir))
		return vm_err_set(err, VM_ERR_INVALID, "%s: path too long", path);
	char *slash = strrchr(dir, '/');
	if (slash == NULL)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "open %s", dir);
	int rc = fsync(fd);
	int saved = errno;
	close(fd);
	if (rc != 0)
		return vm_err_errno(err, VM_ERR_IO, saved, "fsync %s", dir);
	return 0;
}

/* Opens the directory of one of the agent's own paths (trusted: resolved
 * normally, /var/run -> /run) and points *leaf at its last component. */
static int open_own_parent(const char *path, const char **leaf, struct vm_err *err)
{
	char dir[PATH_MAX];
	if (snprintf(dir, sizeof(dir), "%s", path) >= (int)sizeof(dir))
		return vm_err_set(err, VM_ERR_INVALID, "%s: path too long", path);
	char *slash = strrchr(dir, '/');
	*leaf = path;
	if (slash == NULL) {
		snprintf(dir, sizeof(dir), ".");
	} else {
		*leaf = path + (slash - dir) + 1;
		slash[slash == dir ? 1 : 0] = '\0';
	}
	if ((*leaf)[0] == '\0')
		return vm_err_set(err, VM_ERR_INVALID, "%s: not a file path", path);
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return vm_err_errno(err, errno == ENOENT ? VM_ERR_NOTFOUND : VM_ERR_IO, errno,
		                    "open the directory of %s", path);
	return dfd;
}

/* Prefixes err's message with path unless it already names it. */
static void name_path(const char *path, struct vm_err *err)
{
	if (err == NULL || strstr(err->msg, path) != NULL)
		return;
	char msg[sizeof(err->msg)];
	snprintf(msg, sizeof(msg), "%s", err->msg);
	vm_err_set(err, err->code, "%s: %s", path, msg);
}

int fs_write_atomic(const char *path, const void *data, size_t len, mode_t mode, struct vm_err *err)
{
	const char *leaf;
	int dfd = open_own_parent(path, &leaf, err);
	if (dfd < 0)
		return dfd;
	struct fs_write_opts o = {.mode = mode};
	struct fill f = {.data = data, .len = len, .srcfd = -1, .own = true};
	int rc = replace_at(dfd, leaf, &f, &o, err);
	close(dfd);
	if (rc != 0)
		name_path(path, err);
	return rc;
}

int fs_mkdir_p(const char *path, mode_t mode, struct vm_err *err)
{
	char buf[PATH_MAX];
	if (path[0] == '\0')
		return vm_err_set(err, VM_ERR_INVALID, "empty directory path");
	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return vm_err_set(err, VM_ERR_INVALID, "%s: path too long", path);
	for (char *p = buf + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char c = *p;
		*p = '\0';
		if (mkdir(buf, mode) != 0 && errno != EEXIST)
			return vm_err_errno(err, VM_ERR_IO, errno, "mkdir %s", buf);
		*p = c;
		if (c == '\0')
			break;
	}
	struct stat st;
	if (stat(path, &st) != 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "stat %s", path);
	if (!S_ISDIR(st.st_mode))
		return vm_err_set(err, VM_ERR_INVALID, "%s exists and is not a directory", path);
	return 0;
}

int fs_read_fd(int fd, const char *path, size_t max, char **out, size_t *len, struct vm_err *err)
{
	*out = NULL;
	struct buf b;
	/* one byte past max is how a larger file shows */
	buf_init(&b, max < SIZE_MAX ? max + 1 : max);
	int rc = 0;
	for (;;) {
		/* small files stay small: 4 KiB first, then doubling up to 64 KiB reads */
		size_t room = b.len < 4096 ? 4096 : b.len < 65536 ? b.len : 65536;
		if (room > b.max - b.len)
			room = b.max - b.len;
		uint8_t *dst = room > 0 ? buf_reserve(&b, room) : NULL;
		if (dst == NULL) {
			rc = room > 0
			         ? vm_err_set(err, VM_ERR_NOMEM, "out of memory reading %s", path)
			         : vm_err_set(err, VM_ERR_INVALID, "%s: larger than %zu bytes",
			                      path, max);
			break;
		}
		ssize_t r = read(fd, dst, room);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = vm_err_errno(err, VM_ERR_IO, errno, "read %s", path);
			break;
		}
		if (r == 0)
			break;
		buf_commit(&b, (size_t)r);
	}
	if (rc == 0 && b.len > max)
		rc = vm_err_set(err, VM_ERR_INVALID, "%s: larger than %zu bytes", path, max);
	if (rc == 0 && (*out = buf_take(&b, len)) == NULL)
		rc = vm_err_set(err, VM_ERR_NOMEM, "out of memory reading %s", path);
	buf_free(&b);
	return rc;
}

int fs_read_file(const char *path, size_t max, char **out, size_t *len, struct vm_err *err)
{
	*out = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return vm_err_errno(err, errno == ENOENT ? VM_ERR_NOTFOUND : VM_ERR_IO, errno,
		                    "open %s", path);
	int rc = fs_read_fd(fd, path, max, out, len, err);
	close(fd);
	return rc;
}

/* --- Caller paths: one opened directory fd, never re-resolved by path --- */

const char *fs_err_name(const struct vm_err *err)
{
	switch (err->code) {
	case FS_ERR_SYMLINK:
		return "symlink_refused";
	case VM_ERR_NOTFOUND:
		return "not_found";
	case VM_ERR_BUSY:
		return "exists";
	case VM_ERR_INVALID:
		return "invalid";
	default:
		return "io_error";
	}
}

/* Only root (or the agent) could have placed a symlink in this directory. */
static bool dir_trusted(int dirfd)
{
	struct stat st;
	return fstat(dirfd, &st) == 0 && S_ISDIR(st.st_mode) &&
	       (st.st_uid == 0 || st.st_uid == geteuid()) &&
	       (st.st_mode & (S_IWGRP | S_IWOTH)) == 0;
}

static int errno_code(int e)
{
	return e == ENOENT ? VM_ERR_NOTFOUND : e == ELOOP ? FS_ERR_SYMLINK : VM_ERR_IO;
}

/* Opens name in dirfd as a regular file for reading; a symlink returns
 * -FS_ERR_SYMLINK with *is_link set (the walker may follow it). The O_PATH
 * open and fstat come first so no device or FIFO is ever opened for real. */
static int open_regular(int dirfd, const char *name, struct stat *sb, bool *is_link,
                        struct vm_err *err)
{
	*is_link = false;
	int pfd = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (pfd < 0)
		return vm_err_errno(err, errno_code(errno), errno, "open %s", name);
	struct stat pst;
	int rc = fstat(pfd, &pst);
	int e = errno;
	close(pfd);
	if (rc != 0)
		return vm_err_errno(err, VM_ERR_IO, e, "stat %s", name);
	if (S_ISLNK(pst.st_mode)) {
		*is_link = true;
		return vm_err_set(err, FS_ERR_SYMLINK, "%s is a symlink; refused", name);
	}
	if (!S_ISREG(pst.st_mode))
		return vm_err_set(err, VM_ERR_INVALID, "%s exists and is not a regular file", name);
	int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return vm_err_errno(err, errno_code(errno), errno, "open %s", name);
	/* the name may have been swapped between the two opens: same inode only */
	if (fstat(fd, sb) != 0 || sb->st_dev != pst.st_dev || sb->st_ino != pst.st_ino) {
		close(fd);
		return vm_err_set(err, VM_ERR_IO, "%s changed while it was opened", name);
	}
	return fd;
}

/* Resolves path (absolute: from "/", else from start) one component at a
 * time. A symlink is followed only in a trusted directory, by walking its
 * text with the same rule. want_file: the last component must be a regular
 * file, returned open for reading; else a directory, returned O_RDONLY. */
static int walk(int start, const char *path, bool want_file, struct stat *sb, struct vm_err *err)
{
	char rest[PATH_MAX], tmp[PATH_MAX], name[FS_NAME_MAX];
	if (snprintf(rest, sizeof(rest), "%s", path) >= (int)sizeof(rest))
		return vm_err_set(err, VM_ERR_INVALID, "%s: path too long", path);
	int cur = rest[0] == '/' ? open("/", O_PATH | O_DIRECTORY | O_CLOEXEC)
	                         : openat(start, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (cur < 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "open the root of %s", path);
	int links = 0, rc;
	const char *p = rest;
	for (;;) {
		while (*p == '/')
			p++;
		if (*p == '\0')
			break;
		const char *end = strchrnul(p, '/');
		size_t n = (size_t)(end - p);
		if (n >= FS_NAME_MAX) {
			rc = vm_err_set(err, VM_ERR_INVALID, "%s: a component is too long", path);
			goto fail;
		}
		memcpy(name, p, n);
		name[n] = '\0';
		while (*end == '/')
			end++;
		bool last = *end == '\0';
		int fd = openat(cur, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		struct stat st;
		if (fd < 0 || fstat(fd, &st) != 0) {
			rc = vm_err_errno(err, errno_code(errno), errno, "open %s (at %s)", path,
			                  name);
			if (fd >= 0)
				close(fd);
			goto fail;
		}
		if (S_ISLNK(st.st_mode)) {
			ssize_t tl = -1;
			if (dir_trusted(cur) && ++links <= FS_LINKS_MAX)
				tl = readlinkat(fd, "", tmp, sizeof(tmp) - 1);
			close(fd);
			if (tl < 0) {
				rc = vm_err_set(
				    err, FS_ERR_SYMLINK,
				    "%s: the symlink %s is in a directory other users can "
				    "write (or too many links); refused",
				    path, name);
				goto fail;
			}
			tmp[tl] = '\0';
			/* continue with the link's text, then what followed it */
			if (snprintf(tmp + tl, sizeof(tmp) - (size_t)tl, "%s%s", last ? "" : "/",
			             end) >= (int)(sizeof(tmp) - (size_t)tl)) {
				rc = vm_err_set(err, VM_ERR_INVALID, "%s: path too long", path);
				goto fail;
			}
			memcpy(rest, tmp, strlen(tmp) + 1);
			p = rest;
			if (rest[0] == '/') {
				close(cur);
				cur = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
				if (cur < 0)
					return vm_err_errno(err, VM_ERR_IO, errno, "open /");
			}
			continue;
		}
		if (last && want_file) {
			close(fd);
			bool is_link;
			rc = open_regular(cur, name, sb, &is_link, err);
			close(cur);
			return rc;
		}
		if (!S_ISDIR(st.st_mode)) {
			close(fd);
			rc = vm_err_set(err, VM_ERR_INVALID, "%s: %s is not a directory", path,
			                name);
			goto fail;
		}
		close(cur);
		cur = fd;
		p = end;
	}
	if (want_file) {
		rc = vm_err_set(err, VM_ERR_INVALID, "%s is not a regular file", path);
		goto fail;
	}
	/* O_PATH cannot be fsynced: reopen the same directory for real */
	rc = openat(cur, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rc < 0)
		rc = vm_err_errno(err, VM_ERR_IO, errno, "open %s", path);
fail:
	close(cur);
	return rc;
}

int fs_walk_dir(const char *dir, struct vm_err *err)
{
	return walk(AT_FDCWD, dir, false, NULL, err);
}

/* Splits an absolute file path into its directory and last component. */
static int split(const char *path, char *dir, size_t cap, char leaf[FS_NAME_MAX],
                 struct vm_err *err)
{
	if (path[0] != '/')
		return vm_err_set(err, VM_ERR_INVALID, "%s: not an absolute path", path);
	if (snprintf(dir, cap, "%s", path) >= (int)cap)
		return vm_err_set(err, VM_ERR_INVALID, "%s: path too long", path);
	char *slash = strrchr(dir, '/');
	const char *l = slash + 1;
	if (*l == '\0' || strcmp(l, ".") == 0 || strcmp(l, "..") == 0 || strlen(l) >= FS_NAME_MAX)
		return vm_err_set(err, VM_ERR_INVALID, "%s: not a file path", path);
	memcpy(leaf, l, strlen(l) + 1);
	slash[slash == dir ? 1 : 0] = '\0';
	return 0;
}

/* openat2 without following any symlink; -1 with errno when unusable. */
static int open_no_symlinks(const char *path, uint64_t flags)
{
	struct open_how how = {.flags = flags | O_CLOEXEC,
	                       .resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS};
	return (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof(how));
}

int fs_open_parent(const char *path, char leaf[FS_NAME_MAX], struct vm_err *err)
{
	char dir[PATH_MAX];
	int rc = split(path, dir, sizeof(dir), leaf, err);
	if (rc != 0)
		return rc;
	int fd = open_no_symlinks(dir, O_RDONLY | O_DIRECTORY);
	if (fd >= 0)
		return fd;
	/* a symlink on the way (ELOOP), or no openat2 (old kernel, seccomp) */
	if (errno == ELOOP || errno == ENOSYS || errno == EPERM || errno == E2BIG ||
	    errno == EINVAL)
		return walk(AT_FDCWD, dir, false, NULL, err);
	return vm_err_errno(err, errno_code(errno), errno, "open the directory of %s", path);
}

int fs_open_at(int dirfd, const char *leaf, struct stat *sb, struct vm_err *err)
{
	bool is_link;
	return open_regular(dirfd, leaf, sb, &is_link, err);
}

int fs_open_read(const char *path, struct stat *sb, struct vm_err *err)
{
	char leaf[FS_NAME_MAX];
	int dfd = fs_open_parent(path, leaf, err);
	if (dfd < 0)
		return dfd;
	bool is_link;
	int fd = open_regular(dfd, leaf, sb, &is_link, err);
	if (fd < 0 && is_link)
		fd = walk(dfd, leaf, true, sb, err);
	close(dfd);
	if (fd < 0)
		name_path(path, err);
	return fd;
}

/* A temp file in a directory: unnamed (O_TMPFILE) when the filesystem has it. */
struct tmpf {
	int fd;
	bool named;
	char name[FS_NAME_MAX];
};

/* A fresh random temp name for leaf; -1 (errno set) without randomness: a
 * guessable name in a directory other users write to is an invitation. */
static int tmp_name(const char *leaf, char name[FS_NAME_MAX])
{
	static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
	unsigned char r[6];
	if (rand_bytes(r, sizeof(r), NULL) != 0) {
		errno = EAGAIN;
		return -1;
	}
	char sfx[sizeof(r) + 1];
	for (size_t i = 0; i < sizeof(r); i++)
		sfx[i] = abc[r[i] % (sizeof(abc) - 1)];
	sfx[sizeof(r)] = '\0';
	snprintf(name, FS_NAME_MAX, "%.200s.vma.tmp.%s", leaf, sfx);
	return 0;
}

/* Whether name is a temp of leaf: "leaf.vma.tmp.XXXXXX" (tmp_name), or with
 * legacy the "leaf.tmp.XXXXXX" of older versions' copies (mkstemp). */
static bool tmp_of(const char *name, const char *leaf, bool legacy)
{
	size_t ll = strlen(leaf), vl = ll < 200 ? ll : 200; /* tmp_name's %.200s */
	size_t pl = 0;
	if (strncmp(name, leaf, vl) == 0 && strncmp(name + vl, ".vma.tmp.", 9) == 0)
		pl = vl + 9;
	else if (legacy && strncmp(name, leaf, ll) == 0 && strncmp(name + ll, ".tmp.", 5) == 0)
		pl = ll + 5;
	const char *rest = name;
	if (pl == 0 || strlen(rest + pl) != 6)
		return false;
	for (const char *c = rest + pl; *c; c++)
		if (!isalnum((unsigned char)*c))
			return false;
	return true;
}

/* Removes the temp files of leaf a killed writer left in dirfd (named
 * fallback, or killed between link and rename): our name pattern, a regular
 * file with one link, not flocked by a live writer, not fresh. With legacy
 * (the agent's own files only: in a caller's directory such a name may be
 * the customer's) also older versions' temps, which were never flocked:
 * there staleness alone says the writer is gone. */
static void tmp_sweep(int dirfd, const char *leaf, bool legacy)
{
	int dup = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = dup < 0 ? NULL : fdopendir(dup);
	if (d == NULL) {
		if (dup >= 0)
			close(dup);
		return;
	}
	/* wall clock: compared with file timestamps, not used to wait */
	time_t now = time(NULL);
	struct dirent *e;
	for (int n = 0; n < FS_SWEEP_MAX && (e = readdir(d)) != NULL; n++) {
		if (!tmp_of(e->d_name, leaf, legacy))
			continue;
		struct stat st;
		if (fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
		    !S_ISREG(st.st_mode) || st.st_nlink != 1 ||
		    now - st.st_mtime < FS_TMP_STALE_SEC)
			continue;
		int fd = openat(dirfd, e->d_name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
		if (fd < 0)
			continue;
		if (flock(fd, LOCK_EX | LOCK_NB) == 0)
			(void)unlinkat(dirfd, e->d_name, 0);
		close(fd);
	}
	closedir(d);
}

/* Our temp name for any leaf: "<leaf>.vma.tmp.XXXXXX". */
static bool tmp_any(const char *name)
{
	const char *m = strstr(name, ".vma.tmp.");
	if (m == NULL || m == name || strlen(m + 9) != 6)
		return false;
	for (const char *c = m + 9; *c; c++)
		if (!isalnum((unsigned char)*c))
			return false;
	return true;
}

/* leaf NULL: any of our temps; else only leaf's */
static int sweep_tree(int dirfd, int depth, const char *leaf)
{
	int dup = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = dup < 0 ? NULL : fdopendir(dup);
	if (d == NULL) {
		if (dup >= 0)
			close(dup);
		return 0;
	}
	int removed = 0;
	struct dirent *e;
	for (int n = 0; n < FS_SWEEP_MAX && (e = readdir(d)) != NULL; n++) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		struct stat st;
		if (fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
			continue;
		if (S_ISDIR(st.st_mode) && depth > 0) {
			int sub = openat(dirfd, e->d_name,
			                 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub >= 0) {
				removed += sweep_tree(sub, depth - 1, leaf);
				close(sub);
			}
			continue;
		}
		if (!S_ISREG(st.st_mode) || st.st_nlink != 1 ||
		    !(leaf == NULL ? tmp_any(e->d_name) : tmp_of(e->d_name, leaf, false)))
			continue;
		int fd = openat(dirfd, e->d_name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
		if (fd < 0)
			continue;
		/* flocked by its writer from creation on: free means the writer is dead */
		if (flock(fd, LOCK_EX | LOCK_NB) == 0 && unlinkat(dirfd, e->d_name, 0) == 0)
			removed++;
		close(fd);
	}
	closedir(d);
	return removed;
}

int fs_sweep_dead_temps(const char *dir, int depth)
{
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0)
		return 0;
	int n = sweep_tree(dfd, depth, NULL);
	close(dfd);
	return n;
}

int fs_sweep_dead_temps_of(const char *path)
{
	const char *slash = strrchr(path, '/');
	if (path[0] != '/' || slash == NULL || slash[1] == '\0')
		return 0;
	char dir[PATH_MAX];
	if ((size_t)(slash - path) >= sizeof(dir))
		return 0;
	snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
	int dfd = open(dir[0] != '\0' ? dir : "/", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0)
		return 0;
	int n = sweep_tree(dfd, 0, slash + 1);
	close(dfd);
	return n;
}

static int tmp_open(int dirfd, const char *leaf, struct tmpf *t, struct vm_err *err)
{
	t->named = false;
	t->name[0] = '\0';
	/* every temp is flocked while its writer lives: tmp_sweep tells dead ones */
	t->fd = openat(dirfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (t->fd >= 0) {
		(void)flock(t->fd, LOCK_EX | LOCK_NB);
		return 0;
	}
	if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)
		return vm_err_errno(err, VM_ERR_IO, errno, "create a temp file for %s", leaf);
	/* no O_TMPFILE here (NFS, old overlayfs): a named temp, removed on failure */
	for (int i = 0; i < 100; i++) {
		if (tmp_name(leaf, t->name) != 0)
			break;
		t->fd = openat(dirfd, t->name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
		               0600);
		if (t->fd >= 0) {
			(void)flock(t->fd, LOCK_EX | LOCK_NB);
			t->named = true;
			return 0;
		}
		if (errno != EEXIST)
			break;
	}
	return vm_err_errno(err, VM_ERR_IO, errno, "create a temp file for %s", leaf);
}

static void tmp_abort(int dirfd, struct tmpf *t)
{
	if (t->fd >= 0)
		close(t->fd);
	t->fd = -1;
	if (t->named)
		unlinkat(dirfd, t->name, 0);
}

/* Gives the unnamed temp file a name in dirfd. */
static int link_tmpfile(int fd, int dirfd, const char *name)
{
	if (linkat(fd, "", dirfd, name, AT_EMPTY_PATH) == 0)
		return 0;
	/* AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH: the /proc link does the same */
	if (errno != ENOENT && errno != EPERM)
		return -1;
	char proc[64];
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	return linkat(AT_FDCWD, proc, dirfd, name, AT_SYMLINK_FOLLOW);
}

/* Puts the complete temp file in place as dirfd/leaf and fsyncs dirfd. */
static int tmp_commit(int dirfd, struct tmpf *t, const char *leaf, bool create_only,
                      struct vm_err *err)
{
	const char *what = create_only ? "create" : "rename";
	int rc = 0;
	if (!t->named && create_only) {
		/* linkat fails atomically if someone created the file meanwhile */
		rc = link_tmpfile(t->fd, dirfd, leaf);
	} else if (!t->named) {
		/* no "link over": link under a temp name, rename it over leaf */
		for (int i = 0; i < 100; i++) {
			if ((rc = tmp_name(leaf, t->name)) != 0)
				break;
			if ((rc = link_tmpfile(t->fd, dirfd, t->name)) == 0 || errno != EEXIST)
				break;
		}
		t->named = rc == 0;
		what = rc == 0 ? "rename" : "link";
		if (rc == 0)
			rc = renameat(dirfd, t->name, dirfd, leaf);
	} else if (create_only) {
		rc = linkat(dirfd, t->name, dirfd, leaf, 0);
	} else {
		rc = renameat(dirfd, t->name, dirfd, leaf);
	}
	int e = errno;
	close(t->fd);
	t->fd = -1;
	/* after a rename the temp name is gone; in every other case remove it */
	if (t->named && (create_only || rc != 0))
		unlinkat(dirfd, t->name, 0);
	if (rc != 0)
		return vm_err_errno(err, e == EEXIST ? VM_ERR_BUSY : VM_ERR_IO, e, "%s %s", what,
		                    leaf);
	if (fsync(dirfd) != 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "fsync the directory of %s", leaf);
	return 0;
}

/* Owner, then mode (chown clears setuid), then fsync: the temp is complete. */
static int tmp_finish(struct tmpf *t, const struct fs_write_opts *o, const char *leaf,
                      struct vm_err *err)
{
	if (o->set_ids && fchown(t->fd, o->uid, o->gid) != 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "chown %s", leaf);
	if (fchmod(t->fd, o->mode) != 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "chmod %s", leaf);
	if (fsync(t->fd) != 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "fsync %s", leaf);
	return 0;
}

/* Copies srcfd from offset 0 into the temp file in whole 64 KiB reads (some
 * /proc files refuse odd-sized ones), stopping before more than max bytes
 * are written. what names the source in messages. */
static int copy_into(struct tmpf *t, int srcfd, uint64_t max, const char *what, struct vm_err *err)
{
	char buf[65536];
	for (off_t off = 0;;) {
		ssize_t n = pread(srcfd, buf, sizeof(buf), off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return vm_err_errno(err, VM_ERR_IO, errno, "read %s", what);
		if (n == 0)
			return 0;
		if ((uint64_t)off + (uint64_t)n > max)
			return vm_err_set(err, VM_ERR_INVALID,
			                  "%s is larger than %llu bytes (copy stopped at the cap)",
			                  what, (unsigned long long)max);
		if (fs_write_all(t->fd, buf, (size_t)n) != 0)
			return vm_err_errno(err, VM_ERR_IO, errno, "write a copy of %s", what);
		off += n;
	}
}

/* What goes into the temp file: bytes in memory (srcfd < 0) or a copy of
 * the open file srcfd, at most max bytes. */

/* The one sequence every atomic replace follows: sweep dead temps, create,
 * fill, owner/mode/fsync, put in place, fsync the directory. */
static int replace_at(int dirfd, const char *leaf, const struct fill *f,
                      const struct fs_write_opts *o, struct vm_err *err)
{
	struct tmpf t;
	tmp_sweep(dirfd, leaf, f->own);
	int rc = tmp_open(dirfd, leaf, &t, err);
	if (rc != 0)
		return rc;
	if (f->srcfd >= 0)
		rc = copy_into(&t, f->srcfd, f->max, f->what, err);
	else if (fs_write_all(t.fd, f->data, f->len) != 0)
		rc = vm_err_errno(err, VM_ERR_IO, errno, "write %s", leaf);
	if (rc == 0)
		rc = tmp_finish(&t, o, leaf, err);
	if (rc != 0) {
		tmp_abort(dirfd, &t);
		return rc;
	}
	return tmp_commit(dirfd, &t, leaf, o->create_only, err);
}

int fs_write_at(int dirfd, const char *leaf, const void *data, size_t len,
                const struct fs_write_opts *o, struct vm_err *err)
{
	struct fill f = {.data = data, .len = len, .srcfd = -1};
	return replace_at(dirfd, leaf, &f, o, err);
}

int fs_backup_at(int dirfd, const char *name, int srcfd, const struct stat *sb, uint64_t max,
                 struct vm_err *err)
{
	char what[FS_NAME_MAX + 16];
	snprintf(what, sizeof(what), "the original of %s", name);
	/* the original's owner and permissions, never its setuid/setgid/sticky */
	struct fs_write_opts o = {.mode = sb->st_mode & 0777,
	                          .set_ids = sb->st_uid != geteuid() || sb->st_gid != getegid(),
	                          .uid = sb->st_uid,
	                          .gid = sb->st_gid};
	struct fill f = {.srcfd = srcfd, .max = max, .what = what};
	return replace_at(dirfd, name, &f, &o, err);
}

int fs_lock_open(const char *dir, const char *name, int wait_ms, struct vm_err *err)
{
	char path[PATH_MAX];
	if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path))
		return vm_err_set(err, VM_ERR_INVALID, "%s/%s: path too long", dir, name);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return vm_err_errno(err, errno_code(errno), errno, "open %s", path);
	int64_t until = time_mono_ms() + wait_ms;
	while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		int e = errno;
		if (e == EINTR)
			continue;
		if (e != EWOULDBLOCK || time_mono_ms() >= until) {
			close(fd);
			if (e != EWOULDBLOCK)
				return vm_err_errno(err, VM_ERR_IO, e, "lock %s", path);
			return vm_err_set(err, VM_ERR_BUSY, "%s is locked by another process", path);
		}
		struct timespec nap = {0, 50 * 1000 * 1000};
		nanosleep(&nap, NULL);
	}
	return fd;
}

int fs_lock_holder(int fd, pid_t *pid)
{
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
	*pid = 0;
	if (fcntl(fd, F_GETLK, &fl) != 0)
		return -1;
	if (fl.l_type == F_UNLCK)
		return 0;
	*pid = fl.l_pid;
	return 1;
}

int fs_remove_at(int dirfd, const char *leaf, struct vm_err *err)
{
	if (unlinkat(dirfd, leaf, 0) != 0 && errno != ENOENT)
		return vm_err_errno(err, errno_code(errno), errno, "remove %s", leaf);
	if (fsync(dirfd) != 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "fsync the directory of %s", leaf);
	return 0;
}

int fs_set_owner_mode(int fd, bool set_ids, uid_t uid, gid_t gid, mode_t mode, struct vm_err *err)
{
	/* owner first: chown clears setuid/setgid bits set before it */
	if (set_ids && fchown(fd, uid, gid) != 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "chown");
	if (fchmod(fd, mode) != 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "chmod");
	return 0;
}

int fs_open_dir_at(int dirfd, const char *name, bool create, mode_t mode, bool set_ids, uid_t uid,
                   gid_t gid, bool *created, struct stat *sb, struct vm_err *err)
{
	*created = false;
	for (int tries = 0; tries < 2; tries++) {
		int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd >= 0) {
			if (fstat(fd, sb) != 0) {
				close(fd);
				return vm_err_errno(err, VM_ERR_IO, errno, "stat %s", name);
			}
			if (*created && fs_set_owner_mode(fd, set_ids, uid, gid, mode, err) != 0) {
				close(fd);
				return -err->code;
			}
			if (*created)
				fstat(fd, sb);
			return fd;
		}
		int e = errno;
		struct stat lst;
		if (e != ENOENT) {
			/* O_NOFOLLOW|O_DIRECTORY on a symlink: ELOOP or ENOTDIR */
			if (fstatat(dirfd, name, &lst, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(lst.st_mode))
				return vm_err_set(err, FS_ERR_SYMLINK, "%s is a symlink; refused", name);
			if (e == ENOTDIR)
				return vm_err_set(err, VM_ERR_INVALID, "%s is not a directory", name);
			return vm_err_errno(err, errno_code(e), e, "open %s", name);
		}
		if (!create)
			return vm_err_set(err, VM_ERR_NOTFOUND, "%s does not exist", name);
		/* made 0700: nobody else can use it before its owner and mode are set */
		if (mkdirat(dirfd, name, 0700) == 0)
			*created = true;
		else if (errno != EEXIST)
			return vm_err_errno(err, VM_ERR_IO, errno, "mkdir %s", name);
	}
	return vm_err_set(err, VM_ERR_IO, "%s changed while it was created", name);
}

int fs_open_regular(const char *path, int flags, struct stat *sb, struct vm_err *err)
{
	/* O_NONBLOCK: a FIFO must not hang the open; the fd is checked, not the path */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY | flags);
	if (fd < 0)
		return vm_err_errno(err, errno == ENOENT ? VM_ERR_NOTFOUND : VM_ERR_IO, errno,
		                    "cannot open %s", path);
	if (fstat(fd, sb) != 0 || !S_ISREG(sb->st_mode)) {
		close(fd);
		return vm_err_set(err, VM_ERR_INVALID, "%s is not a regular file", path);
	}
	return fd;
}

int fs_copy_file(const char *src, const char *dst, mode_t mode, uint64_t max, struct vm_err *err)
{
	struct stat st;
	int in = fs_open_regular(src, 0, &st, err);
	if (in < 0)
		return in;
	const char *leaf;
	int dfd = open_own_parent(dst, &leaf, err);
	if (dfd < 0) {
		close(in);
		return dfd;
	}
	struct fs_write_opts o = {.mode = mode};
	struct fill f = {.srcfd = in, .max = max ? max : UINT64_MAX, .what = src, .own = true};
	int rc = replace_at(dfd, leaf, &f, &o, err);
	close(dfd);
	close(in);
	if (rc != 0)
		name_path(dst, err);
	return rc;
}

/* Empties the directory dfd (consumed), depth-bounded. */
static int remove_children(int dfd, int depth, struct vm_err *err)
{
	DIR *d = fdopendir(dfd);
	if (d == NULL) {
		close(dfd);
		return vm_err_errno(err, VM_ERR_IO, errno, "opendir");
	}
	int rc = 0;
	struct dirent *e;
	while (rc == 0 && (e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if (unlinkat(dirfd(d), e->d_name, 0) == 0 || errno == ENOENT)
			continue;
		if (errno != EISDIR && errno != EPERM) {
			rc = vm_err_errno(err, VM_ERR_IO, errno, "remove %s", e->d_name);
			break;
		}
		if (depth >= 64) {
			rc = vm_err_set(err, VM_ERR_INVALID, "directory tree too deep");
			break;
		}
		int sub =
		    openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sub < 0) {
			rc = vm_err_errno(err, VM_ERR_IO, errno, "open %s", e->d_name);
			break;
		}
		rc = remove_children(sub, depth + 1, err);
		if (rc == 0 && unlinkat(dirfd(d), e->d_name, AT_REMOVEDIR) != 0 && errno != ENOENT)
			rc = vm_err_errno(err, VM_ERR_IO, errno, "remove %s", e->d_name);
	}
	closedir(d);
	return rc;
}

int fs_remove_tree(const char *path, struct vm_err *err)
{
	int dfd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0)
		return errno == ENOENT ? 0 : vm_err_errno(err, VM_ERR_IO, errno, "open %s", path);
	if (remove_children(dfd, 0, err) != 0)
		return -1;
	if (rmdir(path) != 0 && errno != ENOENT)
		return vm_err_errno(err, VM_ERR_IO, errno, "remove %s", path);
	return 0;
}
