/* File helpers with the durability rules the agent relies on. */
#include "core/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int write_all(int fd, const void *data, size_t len)
{
	const char *p = data;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
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

int fs_write_atomic(const char *path, const void *data, size_t len, mode_t mode, struct vm_err *err)
{
	char tmp[PATH_MAX];
	if (snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", path) >= (int)sizeof(tmp))
		return vm_err_set(err, VM_ERR_INVALID, "%s: path too long", path);
	int fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "create temp file for %s", path);
	int saved;
	const char *what;
	if (fchmod(fd, mode) != 0) {
		what = "chmod";
		goto fail;
	}
	if (write_all(fd, data, len) != 0) {
		what = "write";
		goto fail;
	}
	if (fsync(fd) != 0) {
		what = "fsync";
		goto fail;
	}
	if (close(fd) != 0) {
		fd = -1;
		what = "close";
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) != 0) {
		what = "rename";
		goto fail;
	}
	return fs_sync_parent(path, err);
fail:
	saved = errno;
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return vm_err_errno(err, VM_ERR_IO, saved, "%s %s", what, path);
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

int fs_read_file(const char *path, size_t max, char **out, size_t *len, struct vm_err *err)
{
	*out = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return vm_err_errno(err, errno == ENOENT ? VM_ERR_NOTFOUND : VM_ERR_IO, errno,
		                    "open %s", path);
	size_t cap = 4096, n = 0;
	char *buf = malloc(cap + 1);
	if (buf == NULL) {
		close(fd);
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory reading %s", path);
	}
	for (;;) {
		if (n == cap) {
			if (cap > max) {
				free(buf);
				close(fd);
				return vm_err_set(err, VM_ERR_INVALID, "%s: larger than %zu bytes",
				                  path, max);
			}
			cap *= 2;
			char *nb = realloc(buf, cap + 1);
			if (nb == NULL) {
				free(buf);
				close(fd);
				return vm_err_set(err, VM_ERR_NOMEM, "out of memory reading %s",
				                  path);
			}
			buf = nb;
		}
		ssize_t r = read(fd, buf + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int saved = errno;
			free(buf);
			close(fd);
			return vm_err_errno(err, VM_ERR_IO, saved, "read %s", path);
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	if (n > max) {
		free(buf);
		return vm_err_set(err, VM_ERR_INVALID, "%s: larger than %zu bytes", path, max);
	}
	buf[n] = '\0';
	*out = buf;
	if (len != NULL)
		*len = n;
	return 0;
}
