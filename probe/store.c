/* Run records on disk: one JSON file per probe under probe.work_dir/runs,
 * replaced atomically (fs_write_atomic) at each persisted transition. The file
 * names are the probe ids, which sort by creation time. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/log.h"
#include "probe/internal.h"

static int record_path(const char *dir, const char *id, char *out, size_t cap)
{
	return (size_t)snprintf(out, cap, "%s/%s.json", dir, id) < cap ? 0 : -1;
}

int probe_write_all(int fd, const void *data, size_t len, struct vm_err *err)
{
	if (fs_write_all(fd, data, len) != 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "write");
	return 0;
}

int probe_write_text(void *ctx, int fd, struct vm_err *err)
{
	const char *text = ctx;
	return probe_write_all(fd, text, strlen(text), err);
}

int probe_store_write(const char *dir, const char *id, const char *text, struct vm_err *err)
{
	return probe_store_write_stream(dir, id, probe_write_text, (void *)text, err);
}

/* Reads one record from an open file: bounded by max before parsing, and
 * parsed from the descriptor (jansson buffers), so no second copy of it. */
static json_t *read_record_fd(int fd, size_t max, struct vm_err *err)
{
	struct stat sb;
	if (fstat(fd, &sb) != 0) {
		vm_err_errno(err, VM_ERR_IO, errno, "stat");
		return NULL;
	}
	if (!S_ISREG(sb.st_mode)) {
		vm_err_set(err, VM_ERR_INVALID, "not a regular file");
		return NULL;
	}
	if ((uint64_t)sb.st_size > (uint64_t)max) {
		vm_err_set(err, VM_ERR_INVALID, "%lld bytes, more than the %zu a record may have",
		           (long long)sb.st_size, max);
		return NULL;
	}
	/* buffered: jansson's json_loadfd reads a byte per syscall (minutes for 85 MiB) */
	int dfd = dup(fd);
	FILE *f = dfd >= 0 ? fdopen(dfd, "r") : NULL;
	if (f == NULL) {
		if (dfd >= 0)
			close(dfd);
		vm_err_errno(err, VM_ERR_NOMEM, errno, "fdopen");
		return NULL;
	}
	json_error_t jerr;
	json_t *rec = json_loadf(f, 0, &jerr);
	fclose(f);
	if (rec == NULL) {
		vm_err_set(err, VM_ERR_INVALID, "not JSON: %.120s", jerr.text);
		return NULL;
	}
	if (!json_is_object(rec)) {
		json_decref(rec);
		vm_err_set(err, VM_ERR_INVALID, "not a JSON object");
		return NULL;
	}
	return rec;
}

json_t *probe_store_read(const char *dir, const char *id, size_t max)
{
	char path[PATH_MAX];
	if (record_path(dir, id, path, sizeof(path)) != 0)
		return NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return NULL;
	struct vm_err err;
	json_t *rec = read_record_fd(fd, max, &err);
	close(fd);
	return rec;
}

int probe_store_open(const char *dir, const char *id, size_t max, uint64_t *size)
{
	char path[PATH_MAX];
	if (record_path(dir, id, path, sizeof(path)) != 0)
		return -1;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct stat sb;
	if (fd < 0)
		return -1;
	if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || (uint64_t)sb.st_size > (uint64_t)max) {
		close(fd);
		return -1;
	}
	*size = (uint64_t)sb.st_size;
	return fd;
}

void probe_store_remove(const char *dir, const char *id)
{
	char path[PATH_MAX];
	if (record_path(dir, id, path, sizeof(path)) == 0)
		(void)unlink(path);
}

static bool is_record_name(const char *name, size_t *idlen)
{
	size_t n = strlen(name);
	if (n < 6 || n - 5 >= PROBE_ID_MAX || strcmp(name + n - 5, ".json") != 0)
		return false;
	for (size_t i = 0; i < n - 5; i++)
		if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'z') ||
		      name[i] == '-'))
			return false;
	*idlen = n - 5;
	return true;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Moves an unreadable record into quarantine/ (same filesystem, via the
 * store's directory fd): kept for a human, never retried, never in the way. */
static void quarantine(int dfd, const char *dir, const char *name, const char *why)
{
	if (mkdirat(dfd, PROBE_QUARANTINE_DIR, 0700) != 0 && errno != EEXIST) {
		log_error("probe", "%s/%s is unreadable (%s) and cannot be quarantined: mkdir: %s",
		          dir, name, why, strerror(errno));
		return;
	}
	int qfd =
	    openat(dfd, PROBE_QUARANTINE_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (qfd < 0 || renameat(dfd, name, qfd, name) != 0) {
		log_error("probe", "%s/%s is unreadable (%s) and cannot be quarantined: %s", dir,
		          name, why, strerror(errno));
		if (qfd >= 0)
			close(qfd);
		return;
	}
	(void)fsync(qfd);
	(void)fsync(dfd);
	close(qfd);
	log_warn("probe", "%s/%s is unreadable (%s): moved to %s/%s/", dir, name, why, dir,
	         PROBE_QUARANTINE_DIR);
}

int probe_store_scan(const char *dir, int max, size_t record_max,
                     void (*fn)(void *ctx, const char *id, json_t *rec), void *ctx,
                     int *quarantined, struct vm_err *err)
{
	*quarantined = 0;
	DIR *d = opendir(dir);
	if (d == NULL)
		return vm_err_errno(err, VM_ERR_IO, errno, "open %s", dir);
	int dfd = dirfd(d);
	char **names = NULL;
	size_t n = 0, cap = 0;
	int rc = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		size_t idlen;
		/* a write that never completed was never acknowledged; spilled output of
		 * a probe that never finished is not part of any record */
		if (strstr(de->d_name, ".json.tmp") != NULL || ends_with(de->d_name, ".spill")) {
			(void)unlinkat(dfd, de->d_name, 0);
			continue;
		}
		if (!is_record_name(de->d_name, &idlen))
			continue;
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 256;
			char **nn = realloc(names, ncap * sizeof(*nn));
			if (nn == NULL) {
				rc = vm_err_set(err, VM_ERR_NOMEM, "out of memory");
				goto out;
			}
			names = nn;
			cap = ncap;
		}
		names[n] = strndup(de->d_name, idlen);
		if (names[n] == NULL) {
			rc = vm_err_set(err, VM_ERR_NOMEM, "out of memory");
			goto out;
		}
		n++;
	}
	if (n > 0)
		qsort(names, n, sizeof(*names), cmp_names);
	/* Only the newest max are kept: older ones fall outside retention anyway. */
	size_t first = n > (size_t)max ? n - (size_t)max : 0;
	for (size_t i = 0; i < n; i++) {
		char file[PROBE_ID_MAX + 8];
		snprintf(file, sizeof(file), "%s.json", names[i]);
		if (i < first) {
			(void)unlinkat(dfd, file, 0);
			continue;
		}
		struct vm_err rerr = {0};
		int fd = openat(dfd, file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		json_t *rec = NULL;
		if (fd < 0)
			vm_err_errno(&rerr, VM_ERR_IO, errno, "open");
		else
			rec = read_record_fd(fd, record_max, &rerr);
		if (fd >= 0)
			close(fd);
		if (rec == NULL) {
			quarantine(dfd, dir, file, rerr.msg);
			(*quarantined)++;
			continue;
		}
		fn(ctx, names[i], rec);
		json_decref(rec);
	}
out:
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	closedir(d);
	return rc;
}

/* --- group commit ------------------------------------------------------------------------ */

/* Writers block until their record is durable, but one thread writes
 * everything that queued up meanwhile in a batch: all temp files, then their
 * fsyncs (the first one commits the journal for all), renames, and a single
 * fsync of the directory. Under load this turns 2 fsync round trips per record
 * into 2 per batch. */
struct commit_item {
	const char *id;
	probe_write_fn write_fn;
	void *wctx;
	int rc, fd;
	char tmp[PATH_MAX + 64];
	char msg[200];
	bool done;
	/* asynchronous writes: the item and its id are owned by the writer thread */
	probe_commit_done_fn on_done;
	void *ctx;
	char *owned_text;
	char idbuf[PROBE_ID_MAX];
	struct commit_item *next;
};

struct probe_committer {
	pthread_mutex_t mu;
	pthread_cond_t cv, done_cv;
	struct commit_item *head, *tail;
	bool stop;
	pthread_t thread;
	char dir[PATH_MAX];
};

static void item_fail(struct commit_item *it, const char *what, int e)
{
	it->rc = -1;
	snprintf(it->msg, sizeof(it->msg), "%s %.100s: %.60s", what, it->tmp, strerror(e));
}

static void commit_batch(const char *dir, struct commit_item *batch)
{
	int n = 0;
	for (struct commit_item *it = batch; it != NULL; it = it->next, n++) {
		it->fd = -1;
		if ((size_t)snprintf(it->tmp, sizeof(it->tmp), "%s/%s.json.tmp-%d", dir, it->id,
		                     n) >= sizeof(it->tmp)) {
			item_fail(it, "create", ENAMETOOLONG);
			continue;
		}
		it->fd = open(it->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (it->fd < 0) {
			item_fail(it, "create", errno);
			continue;
		}
		struct vm_err werr = {0};
		errno = 0;
		if (it->write_fn(it->wctx, it->fd, &werr) != 0) {
			it->rc = -1;
			snprintf(it->msg, sizeof(it->msg), "write %.100s: %.80s", it->tmp,
			         werr.msg);
		}
	}
	for (struct commit_item *it = batch; it != NULL; it = it->next) {
		if (it->rc == 0 && fsync(it->fd) != 0)
			item_fail(it, "fsync", errno);
		if (it->fd >= 0)
			close(it->fd);
		char final[PATH_MAX];
		if (it->rc == 0 && record_path(dir, it->id, final, sizeof(final)) == 0 &&
		    rename(it->tmp, final) != 0)
			item_fail(it, "rename", errno);
		if (it->rc != 0 && it->fd >= 0)
			(void)unlink(it->tmp);
	}
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc = dfd >= 0 ? fsync(dfd) : -1;
	int e = errno;
	if (dfd >= 0)
		close(dfd);
	for (struct commit_item *it = batch; rc != 0 && it != NULL; it = it->next)
		if (it->rc == 0) {
			it->rc = -1;
			snprintf(it->msg, sizeof(it->msg), "fsync %.100s: %.60s", dir, strerror(e));
		}
}

int probe_store_write_stream(const char *dir, const char *id, probe_write_fn fn, void *wctx,
                             struct vm_err *err)
{
	struct commit_item it;
	memset(&it, 0, sizeof(it));
	it.id = id;
	it.write_fn = fn;
	it.wctx = wctx;
	commit_batch(dir, &it);
	if (it.rc != 0)
		return vm_err_set(err, VM_ERR_IO, "%s", it.msg);
	return 0;
}

static void *committer_main(void *arg)
{
	struct probe_committer *c = arg;
	pthread_mutex_lock(&c->mu);
	for (;;) {
		while (c->head == NULL && !c->stop)
			pthread_cond_wait(&c->cv, &c->mu);
		if (c->head == NULL)
			break;
		struct commit_item *batch = c->head;
		c->head = c->tail = NULL;
		pthread_mutex_unlock(&c->mu);
		commit_batch(c->dir, batch);
		/* callbacks run without our lock: they take their own (the executor's) */
		for (struct commit_item *it = batch; it != NULL; it = it->next)
			if (it->on_done != NULL)
				it->on_done(it->ctx, it->rc, it->msg);
		pthread_mutex_lock(&c->mu);
		for (struct commit_item *it = batch, *next; it != NULL; it = next) {
			next = it->next; /* the writer may return (and its item vanish) once done */
			if (it->on_done != NULL) {
				free(it->owned_text);
				free(it);
			} else {
				it->done = true;
			}
		}
		pthread_cond_broadcast(&c->done_cv);
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

struct probe_committer *probe_committer_start(const char *dir, struct vm_err *err)
{
	struct probe_committer *c = calloc(1, sizeof(*c));
	if (c == NULL) {
		vm_err_set(err, VM_ERR_NOMEM, "out of memory");
		return NULL;
	}
	snprintf(c->dir, sizeof(c->dir), "%s", dir);
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cv, NULL);
	pthread_cond_init(&c->done_cv, NULL);
	if (pthread_create(&c->thread, NULL, committer_main, c) != 0) {
		vm_err_set(err, VM_ERR_NOMEM, "cannot start the record writer");
		pthread_mutex_destroy(&c->mu);
		pthread_cond_destroy(&c->cv);
		pthread_cond_destroy(&c->done_cv);
		free(c);
		return NULL;
	}
	return c;
}

int probe_committer_write_stream(struct probe_committer *c, const char *id, probe_write_fn fn,
                                 void *wctx, struct vm_err *err)
{
	struct commit_item it;
	memset(&it, 0, sizeof(it));
	it.id = id;
	it.write_fn = fn;
	it.wctx = wctx;
	pthread_mutex_lock(&c->mu);
	if (c->stop) {
		pthread_mutex_unlock(&c->mu);
		return probe_store_write_stream(c->dir, id, fn, wctx, err);
	}
	if (c->tail != NULL)
		c->tail->next = &it;
	else
		c->head = &it;
	c->tail = &it;
	pthread_cond_signal(&c->cv);
	while (!it.done)
		pthread_cond_wait(&c->done_cv, &c->mu);
	pthread_mutex_unlock(&c->mu);
	if (it.rc != 0)
		return vm_err_set(err, VM_ERR_IO, "%s", it.msg);
	return 0;
}

int probe_committer_write(struct probe_committer *c, const char *id, const char *text,
                          struct vm_err *err)
{
	return probe_committer_write_stream(c, id, probe_write_text, (void *)text, err);
}

static int enqueue_async(struct probe_committer *c, const char *id, probe_write_fn fn, void *wctx,
                         char *owned_text, probe_commit_done_fn on_done, void *ctx)
{
	struct commit_item *it = calloc(1, sizeof(*it));
	if (it == NULL)
		return -1;
	snprintf(it->idbuf, sizeof(it->idbuf), "%s", id);
	it->id = it->idbuf;
	it->write_fn = fn;
	it->wctx = wctx;
	it->on_done = on_done;
	it->ctx = ctx;
	pthread_mutex_lock(&c->mu);
	if (c->stop) {
		pthread_mutex_unlock(&c->mu);
		free(it);
		return -1;
	}
	it->owned_text = owned_text; /* taken only once queued */
	if (c->tail != NULL)
		c->tail->next = it;
	else
		c->head = it;
	c->tail = it;
	pthread_cond_signal(&c->cv);
	pthread_mutex_unlock(&c->mu);
	return 0;
}

int probe_committer_write_stream_async(struct probe_committer *c, const char *id, probe_write_fn fn,
                                       void *wctx, probe_commit_done_fn on_done, void *ctx)
{
	return enqueue_async(c, id, fn, wctx, NULL, on_done, ctx);
}

int probe_committer_write_async(struct probe_committer *c, const char *id, char *text,
                                probe_commit_done_fn on_done, void *ctx)
{
	return enqueue_async(c, id, probe_write_text, text, text, on_done, ctx);
}

void probe_committer_stop(struct probe_committer *c)
{
	if (c == NULL)
		return;
	pthread_mutex_lock(&c->mu);
	c->stop = true;
	pthread_cond_signal(&c->cv);
	pthread_mutex_unlock(&c->mu);
	pthread_join(c->thread, NULL);
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->cv);
	pthread_cond_destroy(&c->done_cv);
	free(c);
}
