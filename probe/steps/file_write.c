/* Step "file.write": replaces a file atomically through one opened directory
 * fd (fs_write_at: O_TMPFILE, fsync, link/rename in that fd, fsync of the
 * directory), with mode/owner/group, an optional backup (fs_backup_at) and an
 * expected sha256. Reports changed=false (and writes nothing) when content,
 * mode and owner already match. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/codec.h"
#include "core/fs.h"
#include "core/proc.h"
#include "probe/steps/steps.h"

#define WRITE_MAX  (16u << 20)
#define BACKUP_MAX (1ull << 30) /* a backup copies at most this much */

static int bad_field(const char *path, const char *field, char *epath, size_t ecap,
                     struct vm_err *err, const char *why)
{
	snprintf(epath, ecap, "%s.%s", path, field);
	return vm_err_set(err, VM_ERR_INVALID, "%s: %s", epath, why);
}

static int parse_mode(json_t *v, int *mode)
{
	if (json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) <= 07777) {
		*mode = (int)json_integer_value(v);
		return 0;
	}
	if (!json_is_string(v))
		return -1;
	const char *s = json_string_value(v);
	char *end;
	long m = strtol(s, &end, 8);
	if (s[0] == '\0' || *end != '\0' || m < 0 || m > 07777 || strlen(s) > 5)
		return -1;
	*mode = (int)m;
	return 0;
}

int probe_file_write_parse(STEP_PARSE_ARGS)
{
	static const char *const known[] = {"type",        "name",   "path",  "content_b64",
	                                    "mode",        "owner",  "group", "backup",
	                                    "create_only", "sha256", NULL};
	const char *b64 = NULL, *sha = NULL;
	if (probe_fields_known(obj, known, path, epath, ecap, err) != 0 ||
	    probe_field_str(obj, "path", true, PATH_MAX - 16, &st->path, path, epath, ecap, err) ||
	    probe_field_str(obj, "content_b64", true, WRITE_MAX / 3 * 4 + 4, &b64, path, epath,
	                    ecap, err) ||
	    probe_field_str(obj, "owner", false, 64, &st->owner, path, epath, ecap, err) ||
	    probe_field_str(obj, "group", false, 64, &st->group, path, epath, ecap, err) ||
	    probe_field_bool(obj, "backup", &st->backup, path, epath, ecap, err) ||
	    probe_field_bool(obj, "create_only", &st->create_only, path, epath, ecap, err) ||
	    probe_field_str(obj, "sha256", false, 64, &sha, path, epath, ecap, err))
		return -1;
	if (st->path[0] != '/' || st->path[strlen(st->path) - 1] == '/')
		return bad_field(path, "path", epath, ecap, err, "must be an absolute file path");
	json_t *mode = json_object_get(obj, "mode");
	if (mode != NULL && parse_mode(mode, &st->mode) != 0)
		return bad_field(path, "mode", epath, ecap, err, "an octal string like \"0644\"");
	st->content = malloc(b64_decoded_max(strlen(b64)) + 1);
	if (st->content == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	long n = b64_decode(b64, strlen(b64), st->content, 0);
	if (n < 0)
		return bad_field(path, "content_b64", epath, ecap, err, "not valid base64");
	st->content_len = (size_t)n;
	if (sha != NULL) {
		if (hex_decode(sha, strlen(sha), st->sha256, sizeof(st->sha256)) != SHA256_LEN)
			return bad_field(path, "sha256", epath, ecap, err, "64 hex digits");
		st->has_sha256 = true;
	}
	return 0;
}

static enum probe_step_status fail_msg(json_t *result, const char *msg)
{
	json_object_set_new(result, "error", json_string(msg));
	return STEP_FAILED;
}

/* The reason as a stable code beside the human message. */
static enum probe_step_status fail_err(json_t *result, const struct vm_err *err)
{
	json_object_set_new(result, "error_code", json_string(fs_err_name(err)));
	return fail_msg(result, err->msg);
}

/* True when the open file fd already holds exactly this content with this
 * mode and owner (compared through fd, never by path). */
static bool unchanged(int fd, const struct stat *sb, const uint8_t *data, size_t len, mode_t mode,
                      uid_t uid, gid_t gid)
{
	if ((size_t)sb->st_size != len || (sb->st_mode & 07777) != mode || sb->st_uid != uid ||
	    sb->st_gid != gid)
		return false;
	uint8_t buf[65536];
	size_t off = 0;
	while (off < len) {
		ssize_t n = pread(fd, buf, sizeof(buf), (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0 || (size_t)n > len - off || memcmp(buf, data + off, (size_t)n) != 0)
			return false;
		off += (size_t)n;
	}
	char extra;
	return pread(fd, &extra, 1, (off_t)len) == 0;
}

enum probe_step_status probe_file_write_run(STEP_RUN_ARGS)
{
	(void)ctx;
	uint8_t digest[SHA256_LEN];
	char hex[2 * SHA256_LEN + 1];
	sha256_buf(st->content, st->content_len, digest);
	hex_encode(digest, sizeof(digest), hex);
	json_object_set_new(result, "sha256", json_string(hex));
	json_object_set_new(result, "size", json_integer((json_int_t)st->content_len));
	json_object_set_new(result, "changed", json_false());
	if (st->has_sha256 && memcmp(digest, st->sha256, SHA256_LEN) != 0)
		return fail_msg(result,
		                "content does not match the expected sha256; nothing written");

	struct vm_err err = {0};
	uid_t uid;
	gid_t gid;
	bool set_ids;
	if (proc_lookup_ids(st->owner ? st->owner : "", st->group ? st->group : "", &uid, &gid,
	                    &set_ids, &err) != 0)
		return fail_msg(result, err.msg);
	/* one directory fd for the whole step: a swapped directory or symlink on
	 * the path cannot redirect any of what follows */
	char leaf[FS_NAME_MAX];
	int dirfd = fs_open_parent(st->path, leaf, &err);
	if (dirfd < 0)
		return fail_err(result, &err);
	enum probe_step_status ret = STEP_FAILED;
	struct stat sb;
	int fd = fs_open_at(dirfd, leaf, &sb, &err);
	bool exists = fd >= 0;
	if (!exists && err.code != VM_ERR_NOTFOUND) {
		if (err.code == FS_ERR_SYMLINK)
			vm_err_set(&err, FS_ERR_SYMLINK,
			           "%s is a symlink; refusing to write through it", st->path);
		ret = fail_err(result, &err);
		goto out;
	}
	if (exists && st->create_only) {
		vm_err_set(&err, VM_ERR_BUSY,
		           "the file exists and create_only is set; nothing written");
		ret = fail_err(result, &err);
		goto out;
	}
	/* Unspecified mode/owner: keep the existing file's, or 0644 and the agent's. */
	mode_t mode = st->mode >= 0 ? (mode_t)st->mode : exists ? sb.st_mode & 07777 : 0644;
	if (!set_ids && exists) {
		uid = sb.st_uid;
		gid = sb.st_gid;
		set_ids = uid != getuid() || gid != getgid();
	}
	/* a kept mode never carries setuid/setgid to a new owner (as chown(2) would) */
	if (st->mode < 0 && exists && (uid != sb.st_uid || gid != sb.st_gid))
		mode &= (mode_t) ~(S_ISUID | S_ISGID);
	if (exists && unchanged(fd, &sb, st->content, st->content_len, mode, uid, gid)) {
		ret = STEP_OK;
		goto out;
	}
	if (exists && st->backup) {
		char bak[FS_NAME_MAX + 8], shown[PATH_MAX + 8];
		snprintf(bak, sizeof(bak), "%s.bak", leaf);
		snprintf(shown, sizeof(shown), "%s.bak", st->path);
		/* from the fd already opened and checked, never the path again */
		if (fs_backup_at(dirfd, bak, fd, &sb, BACKUP_MAX, &err) != 0) {
			ret = fail_err(result, &err);
			goto out;
		}
		json_object_set_new(result, "backup", json_string(shown));
	}
	struct fs_write_opts o = {.mode = mode,
	                          .set_ids = set_ids,
	                          .uid = uid,
	                          .gid = gid,
	                          .create_only = st->create_only};
	if (fs_write_at(dirfd, leaf, st->content, st->content_len, &o, &err) != 0) {
		ret = fail_err(result, &err);
		goto out;
	}
	char m[16];
	snprintf(m, sizeof(m), "%04o", (unsigned)mode);
	json_object_set_new(result, "mode", json_string(m));
	json_object_set_new(result, "changed", json_true());
	ret = STEP_OK;
out:
	if (fd >= 0)
		close(fd);
	close(dirfd);
	return ret;
}
