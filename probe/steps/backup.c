/* Steps "backup.plan" and "backup.run": what a backup would copy (a walk over
 * directory fds, or rsync --dry-run against the destination) and the copy
 * itself with rsync, locally or over SSH (argv only; -e built from validated
 * fields and backup.* keys), with progress events from rsync's output. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/fs.h"
#include "core/proc.h"
#include "core/time.h"
#include "probe/steps/backup.h"
#include "probe/steps/steps.h"

#define MAX_SOURCES      64
#define MAX_IGNORE       64
#define MAX_FILES_LIMIT  50000 /* x FILE_ENTRY_BOUND fits a record */
#define MAX_FILES_DEF    1000
#define WALK_DEPTH_MAX   256
#define EVENT_EVERY_MS   1000                      /* progress while records arrive */
#define HEARTBEAT_MS     1500                      /* and without them: never 2 s apart */
#define STDERR_KEEP      2048                      /* the tail of rsync's stderr kept for errors */
#define FILE_ENTRY_BOUND (RSYNC_NAME_MAX * 2 + 96) /* one files[] entry in the record */

struct backup_params {
	const char *sources[MAX_SOURCES];
	int nsources;
	const char *ignore_raw[MAX_IGNORE];
	struct backup_glob ignore[MAX_IGNORE];
	int nignore;
	bool has_dest;
	const char *host, *user, *dest;
	int port;
	bool list_files;
	int max_files;
	int64_t bwlimit; /* KiB/s, 0 = none */
};

/* --- parameters --------------------------------------------------------------- */

static int bad(char *epath, size_t ecap, const char *path, const char *field, struct vm_err *err,
               const char *why)
{
	snprintf(epath, ecap, "%s.%s", path, field);
	return vm_err_set(err, VM_ERR_INVALID, "%s: %s", epath, why);
}

/* An optional integer field in [lo, hi]; *out keeps its default when absent. */
static int int_field(json_t *obj, const char *name, int64_t lo, int64_t hi, const char *why,
                     int64_t *out, const char *path, char *epath, size_t ecap, struct vm_err *err)
{
	json_t *v = json_object_get(obj, name);
	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
		return bad(epath, ecap, path, name, err, why);
	*out = (int64_t)json_integer_value(v);
	return 1;
}

/* Absolute, no NUL, CR or LF, no "." or ".." component, at most PATH_MAX-1. */
static const char *path_problem(const char *p, size_t len)
{
	if (len == 0 || p[0] != '/')
		return "must be an absolute path";
	if (len >= PATH_MAX)
		return "too long";
	if (strlen(p) != len || strpbrk(p, "\r\n") != NULL)
		return "must not contain NUL, CR or LF";
	for (const char *c = p; (c = strchr(c, '/')) != NULL; c++) {
		const char *e = c + 1;
		size_t n = strcspn(e, "/");
		if ((n == 1 && e[0] == '.') || (n == 2 && e[0] == '.' && e[1] == '.'))
			return "must not contain \".\" or \"..\" components";
	}
	return NULL;
}

/* A DNS name (RFC 1123 labels) or an IPv4/IPv6 literal; never starts with '-'. */
static bool valid_host(const char *h)
{
	unsigned char buf[16];
	if (inet_pton(AF_INET, h, buf) == 1 || inet_pton(AF_INET6, h, buf) == 1)
		return true;
	size_t n = strlen(h), label = 0;
	if (n == 0 || n > 253)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = h[i];
		if (c == '.') {
			if (label == 0 || h[i - 1] == '-')
				return false;
			label = 0;
			continue;
		}
		bool alnum =
		    (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
		if (!alnum && !(c == '-' && label > 0))
			return false;
		if (++label > 63)
			return false;
	}
	return label > 0 && h[n - 1] != '-';
}

/* useradd's default rule: [a-z_][a-z0-9_-]*[$]?, at most 32 bytes. */
static bool valid_user(const char *u)
{
	size_t n = strlen(u);
	if (n == 0 || n > 32 || !((u[0] >= 'a' && u[0] <= 'z') || u[0] == '_'))
		return false;
	for (size_t i = 1; i < n; i++) {
		char c = u[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
		          c == '-' || (c == '$' && i == n - 1);
		if (!ok)
			return false;
	}
	return true;
}

static int parse_paths(json_t *obj, struct backup_params *bp, const char *path, char *epath,
                       size_t ecap, struct vm_err *err)
{
	json_t *src = json_object_get(obj, "sources");
	if (src == NULL || !json_is_array(src) || json_array_size(src) == 0 ||
	    json_array_size(src) > MAX_SOURCES)
		return bad(epath, ecap, path, "sources", err,
		           "required: a list of 1 to 64 absolute paths");
	size_t i;
	json_t *v;
	json_array_foreach(src, i, v)
	{
		char f[32];
		snprintf(f, sizeof(f), "sources[%zu]", i);
		const char *why = json_is_string(v)
		                      ? path_problem(json_string_value(v), json_string_length(v))
		                      : "must be a string";
		if (why == NULL && strspn(json_string_value(v), "/") == json_string_length(v))
			why = "must name a directory or file below /";
		if (why != NULL)
			return bad(epath, ecap, path, f, err, why);
		bp->sources[bp->nsources++] = json_string_value(v);
	}
	json_t *ig = json_object_get(obj, "ignore");
	if (ig != NULL && !json_is_null(ig)) {
		if (!json_is_array(ig) || json_array_size(ig) > MAX_IGNORE)
			return bad(epath, ecap, path, "ignore", err,
			           "must be a list of at most 64 patterns");
		json_array_foreach(ig, i, v)
		{
			char f[32], why[160];
			snprintf(f, sizeof(f), "ignore[%zu]", i);
			if (!json_is_string(v) ||
			    strlen(json_string_value(v)) != json_string_length(v))
				return bad(epath, ecap, path, f, err,
				           "must be a string without NUL");
			if (backup_glob_parse(json_string_value(v), &bp->ignore[bp->nignore], why,
			                      sizeof(why)) != 0)
				return bad(epath, ecap, path, f, err, why);
			bp->ignore_raw[bp->nignore++] = json_string_value(v);
		}
	}
	return 0;
}

static int parse_dest(json_t *obj, struct backup_params *bp, const char *path, char *epath,
                      size_t ecap, struct vm_err *err)
{
	json_t *d = json_object_get(obj, "destination");
	if (d == NULL || json_is_null(d))
		return 0;
	char dp[48];
	snprintf(dp, sizeof(dp), "%s.destination", path);
	if (!json_is_object(d))
		return bad(epath, ecap, path, "destination", err,
		           "must be an object {host?, user?, port?, path}");
	static const char *const known[] = {"host", "user", "port", "path", NULL};
	const char *p;
	if (probe_fields_known(d, known, dp, epath, ecap, err) != 0 ||
	    probe_field_str(d, "path", true, PATH_MAX - 1, &p, dp, epath, ecap, err) != 0 ||
	    probe_field_str(d, "host", false, 253, &bp->host, dp, epath, ecap, err) != 0 ||
	    probe_field_str(d, "user", false, 32, &bp->user, dp, epath, ecap, err) != 0)
		return -1;
	const char *why = path_problem(p, strlen(p));
	if (why != NULL)
		return bad(epath, ecap, dp, "path", err, why);
	bp->dest = p;
	bp->has_dest = true;
	if (bp->host != NULL && !valid_host(bp->host))
		return bad(epath, ecap, dp, "host", err, "must be a host name or an IP address");
	if (bp->user != NULL && !valid_user(bp->user))
		return bad(epath, ecap, dp, "user", err,
		           "must be a user name ([a-z_][a-z0-9_-]*, at most 32 bytes)");
	if (bp->user != NULL && bp->host == NULL)
		return bad(epath, ecap, dp, "user", err, "needs a host");
	int64_t port = 22;
	int rc = int_field(d, "port", 1, 65535, "must be an integer 1-65535", &port, dp, epath,
	                   ecap, err);
	if (rc < 0)
		return -1;
	if (rc > 0 && bp->host == NULL)
		return bad(epath, ecap, dp, "port", err, "needs a host");
	bp->port = (int)port;
	return 0;
}

static int parse_common(json_t *obj, struct probe_step_req *st, bool need_dest, const char *path,
                        char *epath, size_t ecap, struct vm_err *err)
{
	static const char *const known[] = {"type",        "name",       "sources",   "ignore",
	                                    "destination", "list_files", "max_files", "bwlimit",
	                                    "timeout",     NULL};
	if (probe_fields_known(obj, known, path, epath, ecap, err) != 0)
		return -1;
	struct backup_params *bp = calloc(1, sizeof(*bp));
	if (bp == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	st->ext = bp;
	st->ext_free = free;
	if (parse_paths(obj, bp, path, epath, ecap, err) != 0 ||
	    parse_dest(obj, bp, path, epath, ecap, err) != 0 ||
	    probe_field_bool(obj, "list_files", &bp->list_files, path, epath, ecap, err) != 0 ||
	    probe_field_duration(obj, "timeout", &st->timeout_ms, path, epath, ecap, err) != 0)
		return -1;
	if (need_dest && !bp->has_dest)
		return bad(
		    epath, ecap, path, "destination", err,
		    "required: {path} for a local copy, {host, user?, port?, path} over SSH");
	int64_t max_files = MAX_FILES_DEF;
	if (int_field(obj, "max_files", 1, MAX_FILES_LIMIT, "must be an integer 1-50000",
	              &max_files, path, epath, ecap, err) < 0 ||
	    int_field(obj, "bwlimit", 1, 1000000000,
	              "must be an integer: KiB per second, 1-1000000000", &bp->bwlimit, path, epath,
	              ecap, err) < 0)
		return -1;
	bp->max_files = (int)max_files;
	return 0;
}

int probe_backup_plan_parse(STEP_PARSE_ARGS)
{
	return parse_common(obj, st, false, path, epath, ecap, err);
}

int probe_backup_run_parse(STEP_PARSE_ARGS)
{
	return parse_common(obj, st, true, path, epath, ecap, err);
}

uint64_t probe_backup_bound(const struct probe_step_req *st, uint64_t output_cap)
{
	(void)output_cap;
	const struct backup_params *bp = st->ext;
	uint64_t files = bp != NULL && bp->list_files ? (uint64_t)bp->max_files : 0;
	return files * FILE_ENTRY_BOUND + PROBE_STEP_OVERHEAD;
}

/* --- what a step reports ------------------------------------------------------ */

/* What a plan counts, from the walk or from rsync's item lines. */
struct tally {
	int64_t files, dirs, symlinks, other, bytes, modifies;
	json_t *list; /* NULL unless list_files */
	int max_files;
	bool truncated;
};

static void tally_entry(struct tally *t, char kind, int64_t size, const char *name, const char *op,
                        bool changes)
{
	switch (kind) {
	case 'f':
		t->files++;
		t->bytes += size;
		break;
	case 'd':
		t->dirs++;
		break;
	case 'L':
		t->symlinks++;
		break;
	default:
		t->other++;
	}
	t->modifies += changes;
	if (t->list == NULL)
		return;
	if ((int)json_array_size(t->list) >= t->max_files) {
		t->truncated = true;
		return;
	}
	static const char *const kinds[] = {"file", "dir", "symlink", "other"};
	const char *k = kinds[kind == 'f' ? 0 : kind == 'd' ? 1 : kind == 'L' ? 2 : 3];
	json_t *e = json_pack("{s:s,s:I}", "type", k, "size", (json_int_t)size);
	probe_json_set_bytes(e, "name", name, strlen(name));
	if (op != NULL)
		json_object_set_new(e, "op", json_string(op));
	json_array_append_new(t->list, e);
}

static void tally_result(const struct tally *t, json_t *result, const char *method)
{
	json_object_set_new(result, "method", json_string(method));
	json_object_set_new(result, "total_files", json_integer(t->files));
	json_object_set_new(result, "total_dirs", json_integer(t->dirs));
	json_object_set_new(result, "total_symlinks", json_integer(t->symlinks));
	json_object_set_new(result, "total_other", json_integer(t->other));
	json_object_set_new(result, "total_bytes", json_integer(t->bytes));
	json_object_set_new(result, "modifies", json_integer(t->modifies));
	if (t->list != NULL) {
		json_object_set(result, "files", t->list);
		json_object_set_new(result, "files_truncated", json_boolean(t->truncated));
	}
}

static enum probe_step_status fail(json_t *result, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static enum probe_step_status fail(json_t *result, const char *code, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_object_set_new(result, "ok", json_false());
	json_object_set_new(result, "error_code", json_string(code));
	probe_json_set_bytes(result, "error", msg, strlen(msg));
	return STEP_FAILED;
}

/* --- sources ------------------------------------------------------------------ */

/* A source without its trailing slashes, and whether it had one (rsync: copy
 * the directory's contents rather than the directory). */
static bool source_split(const char *src, char *out, size_t cap)
{
	size_t n = strlen(src);
	bool contents = n > 1 && src[n - 1] == '/';
	while (n > 1 && src[n - 1] == '/')
		n--;
	snprintf(out, cap, "%.*s", (int)n, src);
	return contents;
}

/* Opens the source's parent (no untrusted symlink on the way) and stats the
 * source in it without following it: a missing source or a symlink is the
 * plan's error, never a silent empty backup. Returns the parent fd or -1. */
static int source_open(const char *src, char leaf[FS_NAME_MAX], struct stat *sb, json_t *result,
                       enum probe_step_status *status)
{
	char clean[PATH_MAX];
	source_split(src, clean, sizeof(clean));
	struct vm_err err = {0};
	int dfd = fs_open_parent(clean, leaf, &err);
	if (dfd < 0) {
		*status = fail(result,
		               err.code == VM_ERR_NOTFOUND ? "source_not_found" : fs_err_name(&err),
		               "source %s: %s", src, err.msg);
		return -1;
	}
	if (fstatat(dfd, leaf, sb, AT_SYMLINK_NOFOLLOW) != 0) {
		int e = errno;
		close(dfd);
		*status = fail(result, e == ENOENT ? "source_not_found" : "io_error",
		               "source %s: %s", src, strerror(e));
		return -1;
	}
	if (!S_ISDIR(sb->st_mode) && !S_ISREG(sb->st_mode)) {
		close(dfd);
		*status = fail(result, S_ISLNK(sb->st_mode) ? "symlink_refused" : "invalid",
		               "source %s: must be a directory or a regular file%s", src,
		               S_ISLNK(sb->st_mode) ? ", not a symlink" : "");
		return -1;
	}
	return dfd;
}

static enum probe_step_status check_sources(const struct backup_params *bp, json_t *result)
{
	for (int i = 0; i < bp->nsources; i++) {
		char leaf[FS_NAME_MAX];
		struct stat sb;
		enum probe_step_status status = STEP_OK;
		int dfd = source_open(bp->sources[i], leaf, &sb, result, &status);
		if (dfd < 0)
			return status;
		close(dfd);
	}
	return STEP_OK;
}

/* --- the walker (a plan without destination) ---------------------------------- */

struct walk {
	const struct backup_params *bp;
	const struct probe_step_ctx *ctx;
	struct tally t;
	int64_t last_event;
	bool stopped;
	char name[PATH_MAX + 2];
};

/* rsync's way of printing a name in the C locale: unprintable bytes as \#ooo */
static void escape_name(const char *in, char *out, size_t cap)
{
	size_t o = 0;
	for (const unsigned char *p = (const unsigned char *)in; *p != '\0'; p++) {
		if (*p < 0x20 || *p >= 0x7f)
			o = str_appendf(out, cap, o, "\\#%03o", *p);
		else
			o = str_appendf(out, cap, o, "%c", *p);
	}
	if (o == 0 && cap > 0)
		out[0] = '\0';
}

static void walk_entry(struct walk *w, char kind, int64_t size, bool is_dir_name)
{
	char esc[RSYNC_NAME_MAX];
	escape_name(w->name, esc, sizeof(esc) - 1);
	if (is_dir_name)
		snprintf(esc + strlen(esc), sizeof(esc) - strlen(esc), "/");
	tally_entry(&w->t, kind, size, esc, NULL, true);
	int64_t now = time_mono_ms();
	if (now - w->last_event >= EVENT_EVERY_MS) {
		w->last_event = now;
		probe_step_event(w->ctx, "info",
		                 &(struct probe_progress){w->t.files, -1, "files", NULL},
		                 "planned %lld files, %lld bytes so far", (long long)w->t.files,
		                 (long long)w->t.bytes);
	}
}

static bool walk_stop(struct walk *w)
{
	if (w->stopped)
		return true;
	w->stopped = (w->ctx->cancel != NULL && atomic_load(w->ctx->cancel)) ||
	             (w->ctx->deadline_ms > 0 && time_mono_ms() >= w->ctx->deadline_ms);
	return w->stopped;
}

/* Walks the directory dfd (owned: closed here) whose rsync name is w->name
 * (len bytes; "" for a source's contents). Symlinks are counted, never followed. */
static void walk_dir(struct walk *w, int dfd, size_t len, int depth)
{
	DIR *d = fdopendir(dfd);
	if (d == NULL) {
		close(dfd);
		return;
	}
	struct dirent *de;
	while (!walk_stop(w) && (de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		struct stat sb;
		if (fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0)
			continue; /* vanished meanwhile */
		size_t n = (size_t)snprintf(w->name + len, sizeof(w->name) - len, "%s%s",
		                            len > 0 ? "/" : "", de->d_name);
		if (len + n >= sizeof(w->name))
			continue;
		bool is_dir = S_ISDIR(sb.st_mode);
		if (backup_glob_excluded(w->bp->ignore, w->bp->nignore, w->name, is_dir)) {
			w->name[len] = '\0';
			continue;
		}
		char kind = S_ISREG(sb.st_mode)   ? 'f'
		            : is_dir              ? 'd'
		            : S_ISLNK(sb.st_mode) ? 'L'
		                                  : 'D';
		walk_entry(w, kind, kind == 'f' ? (int64_t)sb.st_size : 0, is_dir);
		if (is_dir && depth < WALK_DEPTH_MAX) {
			int sub = openat(dirfd(d), de->d_name,
			                 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub >= 0)
				walk_dir(w, sub, len + n, depth + 1);
		}
		w->name[len] = '\0';
	}
	closedir(d);
}

static enum probe_step_status plan_walk(const struct backup_params *bp,
                                        const struct probe_step_ctx *ctx, json_t *result)
{
	struct walk *w = calloc(1, sizeof(*w));
	if (w == NULL)
		return fail(result, "io_error", "out of memory");
	w->bp = bp;
	w->ctx = ctx;
	w->last_event = time_mono_ms();
	w->t.max_files = bp->max_files;
	w->t.list = bp->list_files ? json_array() : NULL;
	enum probe_step_status status = STEP_OK;
	for (int i = 0; i < bp->nsources && status == STEP_OK; i++) {
		char leaf[FS_NAME_MAX], clean[PATH_MAX];
		struct stat sb;
		bool contents = source_split(bp->sources[i], clean, sizeof(clean));
		int pfd = source_open(bp->sources[i], leaf, &sb, result, &status);
		if (pfd < 0)
			break;
		bool is_dir = S_ISDIR(sb.st_mode);
		/* rsync names a source's contents from "./", the source itself by its name */
		snprintf(w->name, sizeof(w->name), "%s", contents && is_dir ? "." : leaf);
		if (contents && is_dir) {
			walk_entry(w, 'd', 0, true);
			w->name[0] = '\0';
		} else if (backup_glob_excluded(bp->ignore, bp->nignore, w->name, is_dir)) {
			close(pfd);
			continue;
		} else {
			walk_entry(w, is_dir ? 'd' : 'f', is_dir ? 0 : (int64_t)sb.st_size, is_dir);
		}
		if (is_dir) {
			int dfd =
			    openat(pfd, leaf, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (dfd < 0)
				status = fail(result, "io_error", "source %s: %s", bp->sources[i],
				              strerror(errno));
			else
				walk_dir(w, dfd, strlen(w->name), 0);
		}
		close(pfd);
	}
	if (status == STEP_OK && w->stopped) {
		bool canceled = ctx->cancel != NULL && atomic_load(ctx->cancel);
		fail(result, canceled ? "canceled" : "timeout", "the walk was %s after %lld files",
		     canceled ? "canceled" : "out of time", (long long)w->t.files);
		status = canceled ? STEP_CANCELED : STEP_TIMED_OUT;
	}
	if (status == STEP_OK || w->stopped) {
		tally_result(&w->t, result, "walk");
		if (status == STEP_OK)
			json_object_set_new(result, "ok", json_true());
	}
	json_decref(w->t.list);
	free(w);
	return status;
}

/* --- rsync -------------------------------------------------------------------- */

/* A path the -e string carries: rsync splits that string on spaces and quotes,
 * so only plain characters are allowed. */
static bool e_safe(const char *p)
{
	return p[0] == '/' && strspn(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	                                "0123456789/._+@-") == strlen(p);
}

struct rsync_argv {
	const char *argv[MAX_SOURCES + MAX_IGNORE + 32];
	int argc;
	char ssh[3 * PATH_MAX + 512];
	char timeout[48], bwlimit[48], dest[PATH_MAX + 300];
	char exclude[MAX_IGNORE][BACKUP_GLOB_MAX + 16];
};

static int build_argv(const struct backup_params *bp, const struct probe_step_ctx *ctx, bool plan,
                      const char *rsync, struct rsync_argv *a, json_t *result,
                      enum probe_step_status *status)
{
	const struct cfg_backup *cb = ctx->backup;
	const char **v = a->argv;
	int n = 0;
	v[n++] = rsync;
	/* -s: file names travel inside the protocol, never through the remote shell */
	v[n++] = "-a";
	v[n++] = "-s";
	v[n++] = "--numeric-ids";
	v[n++] = "--no-inc-recursive"; /* the whole list first: a true percent */
	v[n++] = "--mkpath";
	v[n++] = "--out-format=" RSYNC_OUT_FORMAT;
	v[n++] = "--stats";
	if (plan) {
		v[n++] = "--dry-run";
		v[n++] = "-ii"; /* unchanged items too: the plan counts everything */
	} else {
		v[n++] = "--info=progress2";
	}
	snprintf(a->timeout, sizeof(a->timeout), "--timeout=%llu",
	         (unsigned long long)((cb != NULL ? cb->io_timeout_ms : 300000) + 999) / 1000);
	v[n++] = a->timeout;
	if (bp->bwlimit > 0) {
		snprintf(a->bwlimit, sizeof(a->bwlimit), "--bwlimit=%lld", (long long)bp->bwlimit);
		v[n++] = a->bwlimit;
	}
	for (int i = 0; i < bp->nignore; i++) {
		snprintf(a->exclude[i], sizeof(a->exclude[i]), "--exclude=%s", bp->ignore_raw[i]);
		v[n++] = a->exclude[i];
	}
	if (bp->host != NULL) {
		if (cb == NULL || cb->ssh_identity[0] == '\0' || cb->known_hosts[0] == '\0') {
			*status = fail(result, "not_configured",
			               "backups over SSH need backup.ssh_identity and "
			               "backup.known_hosts in the agent's configuration");
			return -1;
		}
		if (!e_safe(cb->ssh_identity) || !e_safe(cb->known_hosts)) {
			*status =
			    fail(result, "not_configured",
			         "backup.ssh_identity and backup.known_hosts must be absolute "
			         "paths of letters, digits and /._+@-");
			return -1;
		}
		char ssh[PATH_MAX];
		struct vm_err err = {0};
		if (proc_resolve("ssh", ssh, sizeof(ssh), &err) != 0 || !e_safe(ssh)) {
			*status = fail(result, "ssh_missing", "ssh is not installed: %s", err.msg);
			return -1;
		}
		/* -F none: no ssh_config can add a ProxyCommand or another key */
		snprintf(
		    a->ssh, sizeof(a->ssh),
		    "%s -F none -o BatchMode=yes -o IdentitiesOnly=yes "
		    "-o StrictHostKeyChecking=yes -o GlobalKnownHostsFile=/dev/null "
		    "-o UserKnownHostsFile=%s -o ConnectTimeout=%llu -o ServerAliveInterval=15 "
		    "-o ServerAliveCountMax=3 -p %d -i %s",
		    ssh, cb->known_hosts, (unsigned long long)(cb->connect_timeout_ms + 999) / 1000,
		    bp->port, cb->ssh_identity);
		v[n++] = "-e";
		v[n++] = a->ssh;
		bool v6 = strchr(bp->host, ':') != NULL;
		snprintf(a->dest, sizeof(a->dest), "%s%s%s%s%s:%s/", bp->user ? bp->user : "",
		         bp->user ? "@" : "", v6 ? "[" : "", bp->host, v6 ? "]" : "", bp->dest);
	} else {
		snprintf(a->dest, sizeof(a->dest), "%s/", bp->dest);
	}
	v[n++] = "--";
	for (int i = 0; i < bp->nsources; i++)
		v[n++] = bp->sources[i];
	v[n++] = a->dest;
	v[n] = NULL;
	a->argc = n;
	return 0;
}

/* One rsync run's state, fed by its output on proc_run's thread. */
struct rsync_run {
	const struct probe_step_ctx *ctx;
	bool plan;
	struct rsync_reader reader;
	struct tally t;
	/* run */
	int64_t bytes, files_started;
	int percent;
	char file[RSYNC_NAME_MAX];
	const char *op;
	int64_t stat[RSYNC_STAT_COUNT];
	bool have_stat[RSYNC_STAT_COUNT];
	int64_t last_event;
	bool moved; /* something changed since the last event */
	char err[STDERR_KEEP];
	size_t err_len;
	bool err_cut;
};

static void send_progress(struct rsync_run *r)
{
	r->last_event = time_mono_ms();
	r->moved = false;
	if (r->plan) {
		probe_step_event(r->ctx, "info",
		                 &(struct probe_progress){r->t.files, -1, "files", NULL},
		                 "compared %lld files, %lld would change", (long long)r->t.files,
		                 (long long)r->t.modifies);
		return;
	}
	json_t *detail = json_pack("{s:s,s:i,s:I}", "op", r->op ? r->op : "", "percent", r->percent,
	                           "transferred_bytes", (json_int_t)r->bytes);
	probe_json_set_bytes(detail, "file", r->file, strlen(r->file));
	probe_step_event(r->ctx, "info", &(struct probe_progress){r->bytes, -1, "bytes", detail},
	                 "%s %s: %d%%, %lld bytes transferred", r->op ? r->op : "working",
	                 r->file[0] ? r->file : "-", r->percent, (long long)r->bytes);
	json_decref(detail);
}

static void on_record(void *ctx, const struct rsync_rec *rec)
{
	struct rsync_run *r = ctx;
	switch (rec->type) {
	case RSYNC_REC_ITEM:
		if (r->plan) {
			/* rsync prints directories with a trailing '/' */
			tally_entry(&r->t, rec->kind, rec->kind == 'f' ? rec->length : 0, rec->name,
			            rec->op, rec->changes);
		} else {
			snprintf(r->file, sizeof(r->file), "%s", rec->name);
			r->op = rec->op;
			r->files_started += rec->kind == 'f' && strcmp(rec->op, "copy") == 0;
		}
		r->moved = true;
		break;
	case RSYNC_REC_PROGRESS:
		r->moved = r->moved || rec->bytes != r->bytes;
		r->bytes = rec->bytes;
		r->percent = rec->percent;
		break;
	case RSYNC_REC_STAT:
		r->stat[rec->stat] = rec->value;
		r->have_stat[rec->stat] = true;
		break;
	default:
		break;
	}
	if (r->moved && time_mono_ms() - r->last_event >= EVENT_EVERY_MS)
		send_progress(r);
}

static void on_output(void *ctx, enum proc_stream stream, const char *data, size_t len)
{
	struct rsync_run *r = ctx;
	if (stream == PROC_STDOUT) {
		rsync_reader_feed(&r->reader, data, len);
		return;
	}
	/* stderr: keep the tail, where rsync says what went wrong */
	if (len >= sizeof(r->err)) {
		data += len - (sizeof(r->err) - 1);
		len = sizeof(r->err) - 1;
		r->err_len = 0;
		r->err_cut = true;
	}
	if (r->err_len + len >= sizeof(r->err)) {
		size_t drop = r->err_len + len - (sizeof(r->err) - 1);
		memmove(r->err, r->err + drop, r->err_len - drop);
		r->err_len -= drop;
		r->err_cut = true;
	}
	memcpy(r->err + r->err_len, data, len);
	r->err_len += len;
	r->err[r->err_len] = '\0';
}

/* Polled by proc_run every few ms: events never more than 2 s apart. */
static bool heartbeat(void *ctx)
{
	struct rsync_run *r = ctx;
	if (time_mono_ms() - r->last_event >= (r->moved ? EVENT_EVERY_MS : HEARTBEAT_MS))
		send_progress(r);
	return false;
}

/* The sentence ssh or rsync ended with: the last non-empty stderr line that
 * is not rsync's own summary ("rsync error: ... (code 23)"), else that one. */
static void last_line(const struct rsync_run *r, char *out, size_t cap)
{
	const char *best = NULL, *summary = NULL;
	size_t best_len = 0, summary_len = 0;
	for (size_t i = 0; i < r->err_len;) {
		size_t n = strcspn(r->err + i, "\r\n");
		if (n > 0 && strncmp(r->err + i, "rsync error:", 12) == 0) {
			summary = r->err + i;
			summary_len = n;
		} else if (n > 0) {
			best = r->err + i;
			best_len = n;
		}
		i += n + 1;
	}
	if (best == NULL) {
		best = summary;
		best_len = summary_len;
	}
	snprintf(out, cap, "%.*s", (int)best_len, best != NULL ? best : "");
}

/* ssh's exit (255) and a broken stream (12) said more precisely, with the
 * line of ssh's stderr that says it (rsync's own last line says less). */
static const char *ssh_code(const char *code, const struct rsync_run *r, char *why, size_t cap)
{
	static const struct {
		const char *needle, *code;
	} known[] = {
	    {"Host key verification failed", "host_key_rejected"},
	    {"REMOTE HOST IDENTIFICATION HAS CHANGED", "host_key_rejected"},
	    {"Permission denied", "auth_failed"},
	    {"Connection refused", "host_unreachable"},
	    {"timed out", "host_unreachable"},
	    {"No route to host", "host_unreachable"},
	    {"Could not resolve", "host_unreachable"},
	    {"Network is unreachable", "host_unreachable"},
	};
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
		const char *hit = strstr(r->err, known[i].needle);
		if (hit == NULL)
			continue;
		const char *start = hit;
		while (start > r->err && start[-1] != '\n')
			start--;
		snprintf(why, cap, "%.*s", (int)strcspn(start, "\r\n"), start);
		return known[i].code;
	}
	return code;
}

static enum probe_step_status run_rsync(const struct backup_params *bp,
                                        const struct probe_step_ctx *ctx, bool plan, json_t *result)
{
	char rsync[PATH_MAX];
	struct vm_err err = {0};
	if (proc_resolve("rsync", rsync, sizeof(rsync), &err) != 0)
		return fail(result, "rsync_missing", "rsync is not installed: %s", err.msg);
	struct rsync_argv *a = calloc(1, sizeof(*a));
	struct rsync_run *r = calloc(1, sizeof(*r));
	enum probe_step_status status = STEP_FAILED;
	if (a == NULL || r == NULL) {
		status = fail(result, "io_error", "out of memory");
		goto out;
	}
	if (build_argv(bp, ctx, plan, rsync, a, result, &status) != 0)
		goto out;
	r->ctx = ctx;
	r->plan = plan;
	r->t.max_files = bp->max_files;
	r->t.list = plan && bp->list_files ? json_array() : NULL;
	r->last_event = time_mono_ms();
	rsync_reader_init(&r->reader, on_record, r);
	/* C locale: names escaped as \#ooo, numbers as we parse them */
	static const char *const envp[] = {"PATH=" PROC_DEFAULT_PATH, "LC_ALL=C", NULL};
	struct proc_spec spec = {
	    .path = rsync,
	    .argv = (char *const *)a->argv,
	    .envp = (char *const *)envp,
	    .deadline_ms = ctx->deadline_ms,
	    .grace_ms = ctx->grace_ms,
	    .out_cap = SIZE_MAX,
	    .output_only = true,
	    .cancel = ctx->cancel,
	    .on_output = on_output,
	    .ctx = r,
	    .cgroup = ctx->cgroup,
	    .limits = ctx->limits,
	    .stop = heartbeat,
	};
	struct proc_result res;
	int64_t t0 = time_mono_ms();
	if (proc_run(&spec, &res, &err) != 0) {
		status = fail(result, "rsync_failed", "rsync could not start: %s", err.msg);
		goto out;
	}
	int64_t took = time_mono_ms() - t0;
	rsync_reader_finish(&r->reader);
	struct rsync_exit ex = rsync_exit_describe(res.exit_code);
	char why[512];
	last_line(r, why, sizeof(why));
	if (plan) {
		tally_result(&r->t, result, "rsync");
	} else {
		int64_t bytes = r->have_stat[RSYNC_STAT_TRANSFERRED]
		                    ? r->stat[RSYNC_STAT_TRANSFERRED]
		                    : r->bytes;
		int64_t files = r->have_stat[RSYNC_STAT_REG_TRANSFERRED]
		                    ? r->stat[RSYNC_STAT_REG_TRANSFERRED]
		                    : r->files_started;
		json_object_set_new(result, "transferred_bytes", json_integer(bytes));
		json_object_set_new(result, "files", json_integer(files));
		if (r->have_stat[RSYNC_STAT_FILES])
			json_object_set_new(result, "total_files",
			                    json_integer(r->stat[RSYNC_STAT_FILES]));
		json_object_set_new(result, "percent", json_integer(r->percent));
		if (r->file[0] != '\0')
			probe_json_set_bytes(result, "last_file", r->file, strlen(r->file));
		json_object_set_new(result, "rsync_ms", json_integer(took));
	}
	json_object_set_new(result, "exit_code", json_integer(res.exit_code));
	if (res.containment != NULL)
		json_object_set_new(result, "containment", json_string(res.containment));
	if (res.canceled || res.timed_out) {
		status = res.canceled ? STEP_CANCELED : STEP_TIMED_OUT;
		fail(result, res.canceled ? "canceled" : "timeout",
		     "%s after %lld bytes and %lld files (%d%%, at %s)",
		     res.canceled ? "canceled" : "out of time", (long long)r->bytes,
		     (long long)r->files_started, r->percent, r->file[0] ? r->file : "the start");
	} else if (res.exit_code == 0 || ex.warning) {
		status = STEP_OK;
		json_object_set_new(result, "ok", json_true());
		if (ex.warning) {
			char w[700];
			snprintf(w, sizeof(w), "%s: %s", ex.what, why);
			probe_json_set_bytes(result, "warning", w, strlen(w));
			json_object_set_new(result, "warning_code", json_string(ex.code));
			probe_step_event(ctx, "warn", NULL, "%s", w);
		}
	} else {
		const char *code = res.exit_code == 255 || res.exit_code == 12
		                       ? ssh_code(ex.code, r, why, sizeof(why))
		                       : ex.code;
		if (res.term_signal != 0)
			status = fail(result, "rsync_failed", "rsync was killed by signal %d",
			              res.term_signal);
		else
			status = fail(result, code, "rsync exit %d: %s%s%s", res.exit_code, ex.what,
			              why[0] ? ": " : "", why);
		probe_step_event(ctx, "error", NULL, "rsync exit %d: %s", res.exit_code, ex.what);
	}
	if (!plan && status == STEP_OK)
		send_progress(r); /* the last word: 100% and the final count */
	proc_result_free(&res);
out:
	if (r != NULL)
		json_decref(r->t.list);
	free(r);
	free(a);
	return status;
}

/* --- the steps ---------------------------------------------------------------- */

enum probe_step_status probe_backup_plan_run(STEP_RUN_ARGS)
{
	const struct backup_params *bp = st->ext;
	enum probe_step_status s = check_sources(bp, result);
	if (s != STEP_OK)
		return s;
	return bp->has_dest ? run_rsync(bp, ctx, true, result) : plan_walk(bp, ctx, result);
}

enum probe_step_status probe_backup_run_run(STEP_RUN_ARGS)
{
	const struct backup_params *bp = st->ext;
	enum probe_step_status s = check_sources(bp, result);
	if (s != STEP_OK)
		return s;
	return run_rsync(bp, ctx, false, result);
}
