/* Audit log: one JSON line per remote action on an authenticated route, appended
 * to auth.audit_file (0600) and rotated by size like the main log
 * (file → file.1 → … → file.N). Lines are built with jansson, so no field can
 * break out of its string; the token itself is never part of a line.
 * The caller's bytes are escaped and bounded here (never a reason to lose a
 * line), and a state-changing request is refused unless its "started" line is
 * on disk first (wh_audit_begin, or for WH_ROUTE_AUDIT_JOIN wh_audit_confirm
 * before the action can start): an action is never carried out unaudited. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/codec.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/time.h"
#include "probe/probe.h"
#include "webhook/internal.h"

struct wh_audit {
	pthread_mutex_t mu;
	int fd;
	int dfd; /* the directory holding it, opened once: rotation and re-creation
	          * happen in it, never by re-resolving the path */
	uint64_t size, max_size;
	int max_files;
	char path[PATH_MAX];
	char leaf[FS_NAME_MAX];
	/* Group commit of durable lines: lines appended (written), known on disk
	 * (synced), and up to which an fdatasync failed (failed). One thread
	 * syncs at a time, outside mu, for every line appended before it began;
	 * the others wait for it (syncing, synced_cv) instead of each queueing
	 * its own flush behind mu. */
	uint64_t written, synced, failed;
	int sync_errno;
	bool syncing;
	pthread_cond_t synced_cv;
};

/* Records the outcome of an fdatasync that covered the lines up to upto. */
static void sync_done_locked(struct wh_audit *a, uint64_t upto, int e)
{
	if (e == 0 && upto > a->synced)
		a->synced = upto;
	if (e != 0 && upto > a->failed) {
		a->failed = upto;
		a->sync_errno = e;
	}
}

static int sync_fd(int fd)
{
	/* EINVAL: a pipe or device, nothing to make durable */
	return fdatasync(fd) != 0 && errno != EINVAL ? errno : 0;
}

/* Before a->fd is replaced or closed: no fdatasync runs on it any more, and
 * every line appended to it is synced (or known failed). Under mu. */
static void drain_locked(struct wh_audit *a)
{
	while (a->syncing)
		pthread_cond_wait(&a->synced_cv, &a->mu);
	if (a->synced < a->written && a->failed < a->written && a->fd >= 0) {
		sync_done_locked(a, a->written, sync_fd(a->fd));
		pthread_cond_broadcast(&a->synced_cv);
	}
}

/* Returns once line `mine` is on disk: synced by this thread or by one whose
 * fdatasync began after the line was appended. Under mu (released meanwhile). */
static int sync_locked(struct wh_audit *a, uint64_t mine, struct vm_err *err)
{
	while (a->synced < mine && a->failed < mine) {
		if (a->syncing) {
			pthread_cond_wait(&a->synced_cv, &a->mu);
			continue;
		}
		a->syncing = true;
		uint64_t upto = a->written;
		int fd = a->fd; /* not closed meanwhile: drain_locked waits for us */
		pthread_mutex_unlock(&a->mu);
		int e = sync_fd(fd);
		pthread_mutex_lock(&a->mu);
		a->syncing = false;
		sync_done_locked(a, upto, e);
		pthread_cond_broadcast(&a->synced_cv);
	}
	if (a->failed >= mine)
		return vm_err_errno(err, VM_ERR_IO, a->sync_errno, "cannot sync %s", a->path);
	return 0;
}

/* Opens (creates) the file in a->dfd: never through a symlink (O_NOFOLLOW),
 * never a FIFO or device (O_NONBLOCK so a FIFO cannot hang the open, then
 * fstat), only a file of root or of us with one link; taken to 0600. */
static int open_file(struct wh_audit *a, struct vm_err *err)
{
	int fd = openat(a->dfd, a->leaf,
	                O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600);
	if (fd < 0)
		return vm_err_errno(err, errno == ELOOP ? VM_ERR_PERM : VM_ERR_IO, errno,
		                    "auth.audit_file %s%s", a->path,
		                    errno == ELOOP ? " is a symlink" : "");
	struct stat st;
	if (fstat(fd, &st) != 0) {
		int e = errno;
		close(fd);
		return vm_err_errno(err, VM_ERR_IO, e, "auth.audit_file %s", a->path);
	}
	const char *bad = !S_ISREG(st.st_mode)                         ? "not a regular file"
	                  : (st.st_uid != 0 && st.st_uid != geteuid()) ? "owned by another user"
	                  : st.st_nlink > 1                            ? "a file with other links"
	                                                               : NULL;
	if (bad == NULL && (st.st_mode & 07777) != 0600 && fchmod(fd, 0600) != 0)
		bad = "its mode cannot be set to 0600";
	if (bad != NULL) {
		close(fd);
		return vm_err_set(err, VM_ERR_PERM, "auth.audit_file %s: %s", a->path, bad);
	}
	if (fcntl(fd, F_SETFL, O_APPEND) != 0) { /* blocking again */
		int e = errno;
		close(fd);
		return vm_err_errno(err, VM_ERR_IO, e, "auth.audit_file %s", a->path);
	}
	a->fd = fd;
	a->size = (uint64_t)st.st_size;
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
	pthread_cond_init(&a->synced_cv, NULL);
	a->fd = a->dfd = -1;
	a->max_size = cfg->auth.audit_max_size;
	a->max_files = cfg->auth.audit_max_files;
	/* The built-in default is relative (./.vm-agent/audit.log, for `make run`):
	 * anchor it at the directory the agent started in, once. */
	char cwd[PATH_MAX] = "";
	if (cfg->auth.audit_file[0] != '/' && getcwd(cwd, sizeof(cwd)) == NULL) {
		vm_err_errno(err, VM_ERR_IO, errno, "auth.audit_file %s: getcwd",
		             cfg->auth.audit_file);
		goto fail;
	}
	size_t n = str_appendf(a->path, sizeof(a->path), 0, "%s%s%s", cwd, cwd[0] ? "/" : "",
	                       cfg->auth.audit_file);
	if (n >= sizeof(a->path)) {
		vm_err_set(err, VM_ERR_INVALID, "auth.audit_file %s: path too long",
		           cfg->auth.audit_file);
		goto fail;
	}
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", a->path);
	char *slash = strrchr(dir, '/');
	if (slash != NULL && slash != dir) {
		*slash = '\0';
		if (fs_mkdir_p(dir, 0700, err) != 0)
			goto fail;
	}
	a->dfd = fs_open_parent(a->path, a->leaf, err);
	if (a->dfd < 0)
		goto fail;
	if (open_file(a, err) != 0)
		goto fail;
	return a;
fail:
	if (a->dfd >= 0)
		close(a->dfd);
	pthread_mutex_destroy(&a->mu);
	pthread_cond_destroy(&a->synced_cv);
	free(a);
	return NULL;
}

void wh_audit_close(struct wh_audit *a)
{
	if (a == NULL)
		return;
	pthread_mutex_lock(&a->mu);
	drain_locked(a);
	pthread_mutex_unlock(&a->mu);
	if (a->fd >= 0)
		close(a->fd);
	if (a->dfd >= 0)
		close(a->dfd);
	pthread_mutex_destroy(&a->mu);
	pthread_cond_destroy(&a->synced_cv);
	free(a);
}

/* Shifts file.(N-1) → file.N … file → file.1 and reopens; with max_files 0 the
 * file is truncated instead. Errors keep writing to the current file. */
static void rotate(struct wh_audit *a)
{
	char from[FS_NAME_MAX + 16], to[FS_NAME_MAX + 16];
	drain_locked(a); /* the lines in the file that becomes file.1 stay durable */
	for (int i = a->max_files - 1; i >= 1; i--) {
		snprintf(from, sizeof(from), "%s.%d", a->leaf, i);
		snprintf(to, sizeof(to), "%s.%d", a->leaf, i + 1);
		(void)renameat(a->dfd, from, a->dfd, to);
	}
	if (a->max_files > 0) {
		snprintf(to, sizeof(to), "%s.1", a->leaf);
		if (renameat(a->dfd, a->leaf, a->dfd, to) != 0)
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

/* Adds name: value, escaped and bounded as documented in docs/webhook-api.md:
 * a clean value is kept byte for byte (cut on a character boundary); one that
 * needs an escape is escaped whole (backslashes doubled, so it unescapes
 * exactly) and its name goes to "escaped"; a cut one's name to "truncated". */
static int put_field(json_t *line, json_t *escaped, json_t *truncated, const char *name,
                     const char *value, size_t cap)
{
	char buf[WH_AUDIT_PATH_MAX];
	const char *v = value != NULL ? value : "";
	size_t len = strlen(v);
	unsigned res = 0;
	if (cap > sizeof(buf))
		cap = sizeof(buf);
	size_t n = utf8_escape(buf, cap, v, len, UTF8_ESC_CTRL, &res);
	if (res & UTF8_ESCAPED)
		n = utf8_escape(buf, cap, v, len, UTF8_ESC_CTRL | UTF8_ESC_BACKSLASH, &res);
	if (json_object_set_new(line, name, json_stringn(buf, n)) != 0)
		return -1;
	if ((res & UTF8_ESCAPED) && json_array_append_new(escaped, json_string(name)) != 0)
		return -1;
	if ((res & UTF8_CUT) && json_array_append_new(truncated, json_string(name)) != 0)
		return -1;
	return 0;
}

char *wh_audit_format(const struct wh_audit_entry *e)
{
	char ts[TIME_RFC3339_MAX];
	(void)time_rfc3339(ts, sizeof(ts), time_wall_ms(), true);
	json_t *line = json_object(), *esc = json_array(), *cut = json_array();
	char *text = NULL;
	if (line == NULL || esc == NULL || cut == NULL)
		goto done;
	const size_t F = WH_AUDIT_FIELD_MAX;
	if (json_object_set_new(line, "time", json_string(ts)) != 0 ||
	    put_field(line, esc, cut, "tenant", e->tenant, F) != 0 ||
	    put_field(line, esc, cut, "sub", e->sub, F) != 0 ||
	    put_field(line, esc, cut, "jti", e->jti, F) != 0 ||
	    put_field(line, esc, cut, "route", e->route, F) != 0 ||
	    put_field(line, esc, cut, "path", e->path, WH_AUDIT_PATH_MAX) != 0 ||
	    json_object_set_new(line, "outcome", json_string(e->outcome)) != 0 ||
	    json_object_set_new(line, "status", json_integer(e->status)) != 0 ||
	    put_field(line, esc, cut, "error", e->error, F) != 0 ||
	    put_field(line, esc, cut, "remote_addr", e->remote_addr, F) != 0 ||
	    put_field(line, esc, cut, "forwarded_for", e->forwarded_for, F) != 0)
		goto done;
	if (e->probe_id != NULL && e->probe_id[0] != '\0' &&
	    put_field(line, esc, cut, "probe_id", e->probe_id, F) != 0)
		goto done;
	if (e->shell != NULL && json_object_set(line, "shell", e->shell) != 0)
		goto done;
	if (json_array_size(esc) > 0 && json_object_set(line, "escaped", esc) != 0)
		goto done;
	if (json_array_size(cut) > 0 && json_object_set(line, "truncated", cut) != 0)
		goto done;
	text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
done:
	json_decref(line);
	json_decref(esc);
	json_decref(cut);
	return text;
}

/* Appends e; *seq = its number for audit_sync (0 when the append failed).
 * durable: returns once it is on disk. */
static int audit_put(struct wh_audit *a, const struct wh_audit_entry *e, bool durable,
                     uint64_t *seq, struct vm_err *err)
{
	*seq = 0;
	char *text = wh_audit_format(e);
	if (text == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "cannot encode the line (out of memory)");
	size_t n = strlen(text);
	text[n] = '\n'; /* json_dumps leaves room: the NUL becomes the newline */
	int rc = 0;
	pthread_mutex_lock(&a->mu);
	/* removed from under us (an outside rotation, an operator): lines written
	 * to an unlinked file are lost to everyone, so start a new one */
	struct stat st;
	if (fstat(a->fd, &st) == 0 && st.st_nlink == 0) {
		drain_locked(a);
		int old = a->fd;
		if (open_file(a, err) != 0) {
			a->fd = old;
			pthread_mutex_unlock(&a->mu);
			free(text);
			return -1;
		}
		close(old);
	}
	if (a->size > 0 && a->size + n + 1 > a->max_size)
		rotate(a);
	/* One write() per line with O_APPEND: lines never interleave. A short
	 * write (disk full mid-line) is taken back, so no torn line is left. */
	off_t before = lseek(a->fd, 0, SEEK_END);
	ssize_t w = write(a->fd, text, n + 1);
	if (w != (ssize_t)(n + 1)) {
		int e_no = w < 0 ? errno : ENOSPC;
		if (w > 0 && before >= 0 && ftruncate(a->fd, before) != 0)
			log_error("audit", "cannot take back a partial line in %s: %s", a->path,
			          strerror(errno));
		rc = vm_err_errno(err, VM_ERR_IO, e_no, "cannot append to %s", a->path);
	}
	if (before >= 0)
		a->size = (uint64_t)before + (rc == 0 ? n + 1 : 0);
	if (rc == 0) {
		uint64_t mine = *seq = ++a->written;
		if (durable)
			rc = sync_locked(a, mine, err); /* releases mu meanwhile: others append */
	}
	pthread_mutex_unlock(&a->mu);
	free(text);
	return rc;
}

int wh_audit_write(struct wh_audit *a, const struct wh_audit_entry *e, bool durable,
                   struct vm_err *err)
{
	uint64_t seq;
	return audit_put(a, e, durable, &seq, err);
}

static int audit_sync(struct wh_audit *a, uint64_t seq, struct vm_err *err)
{
	pthread_mutex_lock(&a->mu);
	int rc = sync_locked(a, seq, err);
	pthread_mutex_unlock(&a->mu);
	return rc;
}

static const char *outcome_of(const struct wh_req *req)
{
	if (req->status == 401 || req->status == 403)
		return "denied";
	/* 101: a WebSocket upgrade accepted (the shell's start line) */
	if (req->status == 101 || (req->status >= 200 && req->status < 400))
		return "ok";
	return "error";
}

static void entry_of(const struct wh_req *req, struct wh_audit_entry *e, char *route, size_t cap)
{
	snprintf(route, cap, "%s %s", req->route ? req->route->method : "",
	         req->route ? req->route->pattern : "");
	*e = (struct wh_audit_entry){
	    .outcome = outcome_of(req),
	    .status = req->status,
	    .tenant = req->claims.tenant,
	    .sub = req->claims.sub,
	    .jti = req->claims.jti,
	    .route = route,
	    .path = req->info->local_uri,
	    .error = req->err_code,
	    .remote_addr = req->info->remote_addr,
	    .forwarded_for = mg_get_header(req->conn, "X-Forwarded-For"),
	    .probe_id = req->probe_id,
	    .shell = req->shell,
	};
}

/* What is left when the line is not: the main log gets the essentials. */
static void log_lost(const struct wh_audit_entry *e, const char *why)
{
	log_error("audit", "audit line NOT written for %s (%s, status %d, sub %s, jti %s): %s",
	          e->route, e->outcome, e->status, e->sub, e->jti, why);
}

int wh_audit_request(struct wh_audit *a, const struct wh_req *req)
{
	if (a == NULL)
		return 0;
	char route[160];
	struct wh_audit_entry e;
	entry_of(req, &e, route, sizeof(route));
	struct vm_err err = {0};
	if (wh_audit_write(a, &e, false, &err) != 0) {
		log_lost(&e, err.msg);
		return -1;
	}
	return 0;
}

/* Reads leave things as they were; every other method runs or changes
 * something. Derived from the method so that a new route fails closed. */
static bool changes_state(const struct wh_route *r)
{
	return (r->flags & WH_ROUTE_ACTS) ||
	       (strcmp(r->method, "GET") != 0 && strcmp(r->method, "HEAD") != 0);
}

static void started_of(const struct wh_req *req, struct wh_audit_entry *e, char *route,
                       size_t cap)
{
	entry_of(req, e, route, cap);
	e->outcome = "started";
	e->status = 0;
}

/* The started line of req could not be made durable: say so loudly. */
static void log_refused(const struct wh_req *req, const char *why)
{
	char route[160];
	struct wh_audit_entry e;
	started_of(req, &e, route, sizeof(route));
	log_lost(&e, why);
	log_error("audit", "refused %s: its audit line cannot be written", route);
}

int wh_audit_begin(struct wh_req *req)
{
	struct wh_audit *a = wh_audit_of(req);
	if (a == NULL || req->route == NULL || !changes_state(req->route))
		return 0;
	char route[160];
	struct wh_audit_entry e;
	started_of(req, &e, route, sizeof(route));
	/* WH_ROUTE_AUDIT_JOIN: appended now, flushed by the handler
	 * (wh_audit_confirm) while its own record is flushed */
	bool join = (req->route->flags & WH_ROUTE_AUDIT_JOIN) != 0;
	struct vm_err err = {0};
	uint64_t seq;
	if (audit_put(a, &e, !join, &seq, &err) == 0) {
		req->audit_seq = join ? seq : 0;
		return 0;
	}
	log_refused(req, err.msg);
	wh_reply_error(req, 500, "audit_unavailable",
	               "the audit log cannot be written (%s); the request was not carried out",
	               err.msg);
	return -1;
}

int wh_audit_confirm(struct wh_req *req)
{
	struct wh_audit *a = wh_audit_of(req);
	if (a == NULL || req->audit_seq == 0)
		return 0;
	struct vm_err err = {0};
	int rc = audit_sync(a, req->audit_seq, &err);
	req->audit_seq = 0;
	if (rc == 0)
		return 0;
	log_refused(req, err.msg);
	return -1;
}

struct recovered_ctx {
	struct wh_audit *a;
	uint64_t last;
	int failed;
};

static void audit_recovered(void *c, const char *id)
{
	struct recovered_ctx *rc = c;
	struct wh_audit_entry e = {
	    .outcome = "interrupted",
	    .tenant = "",
	    .sub = "",
	    .jti = "",
	    .route = "POST /v1/probes",
	    .error = "agent_restarted",
	    .probe_id = id,
	};
	struct vm_err err = {0};
	uint64_t seq;
	if (audit_put(rc->a, &e, false, &seq, &err) == 0)
		rc->last = seq;
	else if (rc->failed++ == 0)
		log_lost(&e, err.msg);
}

void wh_audit_interrupted(struct wh_audit *a, struct probe_exec *ex)
{
	if (a == NULL || ex == NULL)
		return;
	struct recovered_ctx rc = {a, 0, 0};
	size_t lost = probe_exec_take_interrupted(ex, audit_recovered, &rc);
	struct vm_err err = {0};
	if (rc.last != 0 && audit_sync(a, rc.last, &err) != 0)
		log_error("audit", "the lines of probes interrupted by the restart are not on disk: %s",
		          err.msg);
	if (rc.failed > 0 || lost > 0)
		log_error("audit", "%d line(s) of probes interrupted by the restart NOT written, "
		          "%zu not kept",
		          rc.failed, lost);
}
