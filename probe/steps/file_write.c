/* Step "file.write": replaces a file atomically (temp file in the same
 * directory, fsync, rename or link for create_only, fsync of the directory),
 * with mode/owner/group, an optional backup and an expected sha256. Reports
 * changed=false (and writes nothing) when content, mode and owner already match. */
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

#define WRITE_MAX (16u << 20)

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
		static const char hexd[] = "0123456789abcdef";
		bool ok = strlen(sha) == 64;
		for (size_t i = 0; ok && i < SHA256_LEN; i++) {
			const char *hi = strchr(hexd, sha[2 * i] | 0x20),
			           *lo = strchr(hexd, sha[2 * i + 1] | 0x20);
			ok = hi != NULL && lo != NULL && sha[2 * i] != 0 && sha[2 * i + 1] != 0;
			if (ok)
				st->sha256[i] = (uint8_t)((hi - hexd) << 4 | (lo - hexd));
		}
		if (!ok)
			return bad_field(path, "sha256", epath, ecap, err, "64 hex digits");
		st->has_sha256 = true;
	}
	return 0;
}

static enum probe_step_status fail_errno(json_t *result, int e, const char *what, const char *p)
{
	char msg[PATH_MAX + 128];
	snprintf(msg, sizeof(msg), "%s %s: %s", what, p, strerror(e));
	json_object_set_new(result, "error", json_string(msg));
	return STEP_FAILED;
}

static enum probe_step_status fail_msg(json_t *result, const char *msg)
{
	json_object_set_new(result, "error", json_string(msg));
	return STEP_FAILED;
}

/* True when path already holds exactly this content with this mode and owner. */
static bool unchanged(const char *path, const struct stat *sb, const uint8_t *data, size_t len,
                      mode_t mode, uid_t uid, gid_t gid)
{
	if ((size_t)sb->st_size != len || (sb->st_mode & 07777) != mode || sb->st_uid != uid ||
	    sb->st_gid != gid)
		return false;
	uint8_t a[SHA256_LEN], b[SHA256_LEN];
	struct vm_err err;
	if (sha256_file(path, a, &err) != 0)
		return false;
	sha256_buf(data, len, b);
	return memcmp(a, b, sizeof(a)) == 0;
}

static int write_temp(const char *path, const uint8_t *data, size_t len, mode_t mode, bool set_ids,
                      uid_t uid, gid_t gid, char *tmp, size_t cap)
{
	snprintf(tmp, cap, "%s.vma-tmp.XXXXXX", path);
	int fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t off = 0;
	int rc = 0;
	while (off < len && rc == 0) {
		ssize_t w = write(fd, data + off, len - off);
		if (w < 0 && errno != EINTR)
			rc = -1;
		else if (w > 0)
			off += (size_t)w;
	}
	if (rc == 0 && set_ids && fchown(fd, uid, gid) != 0)
		rc = -1;
	/* after chown: chown clears setuid bits */
	if (rc == 0 && fchmod(fd, mode) != 0)
		rc = -1;
	if (rc == 0 && fsync(fd) != 0)
		rc = -1;
	int e = errno;
	if (close(fd) != 0 && rc == 0) {
		rc = -1;
		e = errno;
	}
	if (rc != 0) {
		unlink(tmp);
		errno = e;
	}
	return rc;
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
	struct stat sb;
	bool exists = lstat(st->path, &sb) == 0;
	if (!exists && errno != ENOENT)
		return fail_errno(result, errno, "stat", st->path);
	if (exists && !S_ISREG(sb.st_mode))
		return fail_msg(result, "the path exists and is not a regular file");
	if (exists && st->create_only)
		return fail_msg(result, "the file exists and create_only is set; nothing written");
	/* Unspecified mode/owner: keep the existing file's, or 0644 and the agent's. */
	mode_t mode = st->mode >= 0 ? (mode_t)st->mode : exists ? sb.st_mode & 07777 : 0644;
	if (!set_ids && exists) {
		uid = sb.st_uid;
		gid = sb.st_gid;
		set_ids = uid != getuid() || gid != getgid();
	}
	if (exists && unchanged(st->path, &sb, st->content, st->content_len, mode, uid, gid))
		return STEP_OK;

	if (exists && st->backup) {
		char bak[PATH_MAX + 8], *old = NULL;
		size_t olen = 0;
		snprintf(bak, sizeof(bak), "%s.bak", st->path);
		if (fs_read_file(st->path, 1u << 30, &old, &olen, &err) != 0 ||
		    fs_write_atomic(bak, old, olen, sb.st_mode & 07777, &err) != 0) {
			free(old);
			return fail_msg(result, err.msg);
		}
		free(old);
		json_object_set_new(result, "backup", json_string(bak));
	}
	char tmp[PATH_MAX + 32];
	if (write_temp(st->path, st->content, st->content_len, mode, set_ids, uid, gid, tmp,
	               sizeof(tmp)) != 0)
		return fail_errno(result, errno, "write", st->path);
	/* create_only: link() fails atomically if someone created the file meanwhile */
	int rc = st->create_only ? link(tmp, st->path) : rename(tmp, st->path);
	int e = errno;
	if (st->create_only || rc != 0)
		unlink(tmp);
	if (rc != 0)
		return fail_errno(result, e, st->create_only ? "create" : "rename", st->path);
	if (fs_sync_parent(st->path, &err) != 0)
		return fail_msg(result, err.msg);
	char m[16];
	snprintf(m, sizeof(m), "%04o", (unsigned)mode);
	json_object_set_new(result, "mode", json_string(m));
	json_object_set_new(result, "changed", json_true());
	return STEP_OK;
}
