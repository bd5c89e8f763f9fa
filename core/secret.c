/* Secret handling. */
#include "core/secret.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fs.h"

#define SECRET_FILE_MAX 65536

void secret_clear(struct secret *s)
{
	if (s->value != NULL) {
		explicit_bzero(s->value, s->len);
		free(s->value);
	}
	s->value = NULL;
	s->len = 0;
}

static size_t trimmed_len(const char *v, size_t n)
{
	while (n > 0 &&
	       (v[n - 1] == '\n' || v[n - 1] == '\r' || v[n - 1] == ' ' || v[n - 1] == '\t'))
		n--;
	return n;
}

int secret_set(struct secret *s, const char *value, struct vm_err *err)
{
	size_t n = trimmed_len(value, strlen(value));
	char *copy = malloc(n + 1);
	if (copy == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	memcpy(copy, value, n);
	copy[n] = '\0';
	secret_clear(s);
	s->value = copy;
	s->len = n;
	return 0;
}

int secret_load_file(struct secret *s, const char *path, struct vm_err *err)
{
	struct stat st;
	int fd = fs_open_regular(path, O_NOFOLLOW, &st, err);
	if (fd < 0)
		return fd;
	if ((st.st_mode & 077) != 0) {
		close(fd);
		return vm_err_set(err, VM_ERR_PERM,
		                  "%s has mode %04o; secret files must not be "
		                  "accessible to group or others (chmod 600 %s)",
		                  path, (unsigned)(st.st_mode & 07777), path);
	}
	if (st.st_size > SECRET_FILE_MAX) {
		close(fd);
		return vm_err_set(err, VM_ERR_INVALID, "%s is larger than %d bytes", path,
		                  SECRET_FILE_MAX);
	}
	char *buf = malloc((size_t)st.st_size + 1);
	if (buf == NULL) {
		close(fd);
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	}
	size_t n = 0;
	while (n < (size_t)st.st_size) {
		ssize_t r = read(fd, buf + n, (size_t)st.st_size - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	n = trimmed_len(buf, n);
	buf[n] = '\0';
	secret_clear(s);
	s->value = buf;
	s->len = n;
	return 0;
}
