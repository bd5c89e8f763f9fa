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
	/* streamed into the record: memory stays O(chunk) whatever max_bytes is */
	uint64_t got = 0;
	bool truncated = false;
	uint8_t digest[SHA256_LEN];
	struct vm_err err = {0};
	int rc = probe_read_fd_b64(ctx, fd, st->max_bytes, result, "content_b64", &got, &truncated,
	                           digest, &err);
	close(fd);
	if (rc != 0) {
		char msg[PATH_MAX + 300];
		snprintf(msg, sizeof(msg), "%s: %s", st->path, err.msg);
		json_object_set_new(result, "error", json_string(msg));
		return STEP_FAILED;
	}
	char hex[2 * SHA256_LEN + 1];
	hex_encode(digest, sizeof(digest), hex);
	char mode[16];
	snprintf(mode, sizeof(mode), "%04o", (unsigned)(sb.st_mode & 07777));
	json_object_set_new(result, "size", json_integer((json_int_t)sb.st_size));
	json_object_set_new(result, "sha256", json_string(hex));
	json_object_set_new(result, "mode", json_string(mode));
	json_object_set_new(result, "truncated", json_boolean(truncated));
	set_owner(result, sb.st_uid, sb.st_gid);
	return STEP_OK;
}
