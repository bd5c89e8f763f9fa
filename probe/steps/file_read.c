/* Step "file.read": up to max_bytes of a regular file as base64, with its size,
 * sha256 (of the whole file), mode and owner. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/codec.h"
#include "core/fs.h"
#include "probe/steps/steps.h"

#define READ_DEFAULT (1u << 20)
#define READ_MAX     (64u << 20)

int probe_file_read_parse(STEP_PARSE_ARGS)
{
	static const char *const known[] = {"type", "name", "path", "max_bytes", NULL};
	if (probe_fields_known(obj, known, path, epath, ecap, err) != 0 ||
	    probe_field_str(obj, "path", true, PATH_MAX - 1, &st->path, path, epath, ecap, err) !=
	        0)
		return -1;
	if (st->path[0] != '/') {
		snprintf(epath, ecap, "%s.path", path);
		return vm_err_set(err, VM_ERR_INVALID, "%s: must be an absolute path", epath);
	}
	json_t *mb = json_object_get(obj, "max_bytes");
	st->max_bytes = READ_DEFAULT;
	if (mb != NULL) {
		if (!json_is_integer(mb) || json_integer_value(mb) < 0 ||
		    json_integer_value(mb) > (json_int_t)READ_MAX) {
			snprintf(epath, ecap, "%s.max_bytes", path);
			return vm_err_set(err, VM_ERR_INVALID, "%s: an integer from 0 to %u", epath,
			                  READ_MAX);
		}
		st->max_bytes = (uint64_t)json_integer_value(mb);
	}
	return 0;
}

static enum probe_step_status failed(json_t *result, int errnum, const char *what, const char *path)
{
	char msg[PATH_MAX + 128];
	snprintf(msg, sizeof(msg), "%s %s: %s", what, path, strerror(errnum));
	json_object_set_new(result, "error", json_string(msg));
	return STEP_FAILED;
}

/* uid, gid and (when they resolve) owner and group names into result. */
static void set_owner(json_t *result, uid_t uid, gid_t gid)
{
	char buf[4096];
	struct passwd pw, *pp = NULL;
	struct group gr, *gp = NULL;
	json_object_set_new(result, "uid", json_integer(uid));
	json_object_set_new(result, "gid", json_integer(gid));
	if (getpwuid_r(uid, &pw, buf, sizeof(buf), &pp) == 0 && pp != NULL)
		json_object_set_new(result, "owner", json_string(pp->pw_name));
	if (getgrgid_r(gid, &gr, buf, sizeof(buf), &gp) == 0 && gp != NULL)
		json_object_set_new(result, "group", json_string(gp->gr_name));
}

enum probe_step_status probe_file_read_run(STEP_RUN_ARGS)
{
	(void)ctx;
	/* resolved once through directory fds (no untrusted symlink); only a
	 * regular file is opened: devices and FIFOs could block or never end */
	struct stat sb;
	struct vm_err oerr = {0};
	int fd = fs_open_read(st->path, &sb, &oerr);
	if (fd < 0) {
		json_object_set_new(result, "error_code", json_string(fs_err_name(&oerr)));
		json_object_set_new(result, "error", json_string(oerr.msg));
		return STEP_FAILED;
	}
	size_t want = (size_t)st->max_bytes;
	char *buf = malloc(want + 1);
	if (buf == NULL) {
		close(fd);
		return failed(result, ENOMEM, "read", st->path);
	}
	size_t got = 0;
	while (got < want) {
		ssize_t n = read(fd, buf + got, want - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = errno;
			free(buf);
			close(fd);
			return failed(result, e, "read", st->path);
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	/* truncated when the file holds more than we read */
	char extra;
	ssize_t more = read(fd, &extra, 1);
	bool truncated = more > 0;
	uint8_t digest[SHA256_LEN];
	struct vm_err err = {0};
	/* the whole file's digest through the fd already opened, not the path */
	char self[64];
	snprintf(self, sizeof(self), "/proc/self/fd/%d", fd);
	if (!truncated)
		sha256_buf(buf, got, digest);
	else if (sha256_file(self, digest, &err) != 0)
		memset(digest, 0, sizeof(digest));
	close(fd);
	char hex[2 * SHA256_LEN + 1];
	hex_encode(digest, sizeof(digest), hex);
	char *b64 = malloc(b64_encoded_len(got) + 1);
	if (b64 == NULL) {
		free(buf);
		return failed(result, ENOMEM, "encode", st->path);
	}
	b64_encode((const uint8_t *)buf, got, b64, 0);
	free(buf);
	char mode[16];
	snprintf(mode, sizeof(mode), "%04o", (unsigned)(sb.st_mode & 07777));
	json_object_set_new(result, "content_b64", json_string(b64));
	free(b64);
	json_object_set_new(result, "size", json_integer((json_int_t)sb.st_size));
	json_object_set_new(result, "sha256", json_string(hex));
	json_object_set_new(result, "mode", json_string(mode));
	json_object_set_new(result, "truncated", json_boolean(truncated));
	set_owner(result, sb.st_uid, sb.st_gid);
	return STEP_OK;
}
