/* Audit log: one JSON line per remote action on an authenticated route, appended
 * to auth.audit_file (0600) and rotated by size like the main log
 * (file → file.1 → … → file.N). Lines are built with jansson, so no field can
 * break out of its string; the token itself is never part of a line. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/log.h"
#include "webhook/internal.h"

struct wh_audit {
	pthread_mutex_t mu;
	int fd;
	uint64_t size, max_size;
	int max_files;
	char path[PATH_MAX];
};

static int open_file(struct wh_audit *a, struct vm_err *err)
{
	a->fd = open(a->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (a->fd < 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "auth.audit_file %s", a->path);
	struct stat st;
	a->size = fstat(a->fd, &st) == 0 ? (uint64_t)st.st_size : 0;
	return 0;
}

struct wh_audit *wh_audit_open(const struct cfg *cfg, struct vm_err *err)
{
	struct wh_audit *a = calloc(1, sizeof(*a));
	if (a == NULL) {
		vm_err_set(err, VM_ERR_NOMEM, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&a->mu, NULL);
	a->max_size = cfg->auth.audit_max_size;
	a->max_files = cfg->auth.audit_max_files;
	snprintf(a->path, sizeof(a->path), "%s", cfg->auth.audit_file);
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", a->path);
	char *slash = strrchr(dir, '/');
	if (slash != NULL && slash != dir) {
		*slash = '\0';
		if (fs_mkdir_p(dir, 0700, err) != 0)
			goto fail;
	}
	if (open_file(a, err) != 0)
		goto fail;
	return a;
fail:
	pthread_mutex_destroy(&a->mu);
	free(a);
	return NULL;
}

void wh_audit_close(struct wh_audit *a)
{
	if (a == NULL)
		return;
	if (a->fd >= 0)
		close(a->fd);
	pthread_mutex_destroy(&a->mu);
	free(a);
}

/* Shifts file.(N-1) → file.N … file → file.1 and reopens; with max_files 0 the
 * file is truncated instead. Errors keep writing to the current file. */
static void rotate(struct wh_audit *a)
{
	char from[PATH_MAX + 16], to[PATH_MAX + 16];
	for (int i = a->max_files - 1; i >= 1; i--) {
		snprintf(from, sizeof(from), "%s.%d", a->path, i);
		snprintf(to, sizeof(to), "%s.%d", a->path, i + 1);
		(void)rename(from, to);
	}
	if (a->max_files > 0) {
		snprintf(to, sizeof(to), "%s.1", a->path);
		if (rename(a->path, to) != 0)
			return;
	} else if (ftruncate(a->fd, 0) != 0) {
		return;
	}
	struct vm_err err = {0};
	int old = a->fd;
	if (open_file(a, &err) != 0) {
		log_error("audit", "%s", err.msg);
		a->fd = old;
		return;
	}
	close(old);
}

static void now_rfc3339(char *out, size_t cap)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	struct tm tm;
	gmtime_r(&tv.tv_sec, &tm);
	snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
	         tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000) % 1000);
}

static const char *outcome_of(const struct wh_req *req)
{
	if (req->status == 401 || req->status == 403)
		return "denied";
	if (req->status >= 200 && req->status < 400)
		return "ok";
	return "error";
}

void wh_audit_request(struct wh_audit *a, const struct wh_req *req)
{
	if (a == NULL)
		return;
	char ts[48];
	now_rfc3339(ts, sizeof(ts));
	char route[160];
	snprintf(route, sizeof(route), "%s %s", req->route ? req->route->method : "",
	         req->route ? req->route->pattern : "");
	const char *xff = mg_get_header(req->conn, "X-Forwarded-For");
	char fwd[256] = "";
	if (xff != NULL)
		snprintf(fwd, sizeof(fwd), "%s", xff);
	json_t *line =
	    json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:i,s:s,s:s,s:s}", "time", ts, "tenant",
	              req->claims.tenant, "sub", req->claims.sub, "jti", req->claims.jti, "route",
	              route, "path", req->info->local_uri ? req->info->local_uri : "", "outcome",
	              outcome_of(req), "status", req->status, "error", req->err_code, "remote_addr",
	              req->info->remote_addr, "forwarded_for", fwd);
	if (line != NULL && req->probe_id[0] != '\0')
		json_object_set_new(line, "probe_id", json_string(req->probe_id));
	char *text = line != NULL ? json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	json_decref(line);
	if (text == NULL) {
		log_error("audit", "out of memory: an audit line for %s was lost", route);
		return;
	}
	size_t n = strlen(text);
	pthread_mutex_lock(&a->mu);
	if (a->size > 0 && a->size + n + 1 > a->max_size)
		rotate(a);
	/* One write() per line with O_APPEND: lines never interleave. */
	text[n] = '\n';
	ssize_t w = write(a->fd, text, n + 1);
	if (w > 0)
		a->size += (uint64_t)w;
	pthread_mutex_unlock(&a->mu);
	if (w != (ssize_t)(n + 1))
		log_error("audit", "cannot append to %s: %s", a->path, strerror(errno));
	free(text);
}
