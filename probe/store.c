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
#include <unistd.h>

#include "core/fs.h"
#include "core/log.h"
#include "probe/internal.h"

static int record_path(const char *dir, const char *id, char *out, size_t cap)
{
	return (size_t)snprintf(out, cap, "%s/%s.json", dir, id) < cap ? 0 : -1;
}

int probe_store_write(const char *dir, const char *id, const char *text, struct vm_err *err)
{
	char path[PATH_MAX];
	if (record_path(dir, id, path, sizeof(path)) != 0)
		return vm_err_set(err, VM_ERR_INVALID, "probe.work_dir too long");
	return fs_write_atomic(path, text, strlen(text), 0600, err);
}

json_t *probe_store_read(const char *dir, const char *id, size_t max)
{
	char path[PATH_MAX];
	if (record_path(dir, id, path, sizeof(path)) != 0)
		return NULL;
	char *data;
	size_t len;
	struct vm_err err;
	if (fs_read_file(path, max, &data, &len, &err) != 0)
		return NULL;
	json_error_t jerr;
	json_t *rec = json_loadb(data, len, 0, &jerr);
	free(data);
	if (rec != NULL && !json_is_object(rec)) {
		json_decref(rec);
		rec = NULL;
	}
	return rec;
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

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int probe_store_scan(const char *dir, int max, size_t record_max,
                     void (*fn)(void *ctx, const char *id, json_t *rec), void *ctx,
                     struct vm_err *err)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		return vm_err_errno(err, VM_ERR_IO, errno, "open %s", dir);
	char **names = NULL;
	size_t n = 0, cap = 0;
	int rc = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		size_t idlen;
		if (strstr(de->d_name, ".json.tmp") != NULL) {
			/* a write that never completed was never acknowledged */
			(void)unlinkat(dirfd(d), de->d_name, 0);
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
		if (i < first) {
			probe_store_remove(dir, names[i]);
			continue;
		}
		json_t *rec = probe_store_read(dir, names[i], record_max);
		if (rec == NULL) {
			log_warn("probe", "%s/%s.json is unreadable or not JSON; ignored", dir,
			         names[i]);
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
	const char *id, *text;
	int rc, fd;
	char tmp[PATH_MAX + 64];
	char msg[200];
	bool done;
	/* asynchronous writes: the item, its id and text are owned by the writer thread */
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

static void item_fail(struct commit_item *it, const char *what)
{
	it->rc = -1;
	snprintf(it->msg, sizeof(it->msg), "%s %.100s: %.60s", what, it->tmp, strerror(errno));
}

static void commit_batch(struct probe_committer *c, struct commit_item *batch)
{
	int n = 0;
	for (struct commit_item *it = batch; it != NULL; it = it->next, n++) {
		it->fd = -1;
		if ((size_t)snprintf(it->tmp, sizeof(it->tmp), "%s/%s.json.tmp-%d", c->dir, it->id,
		                     n) >= sizeof(it->tmp)) {
			errno = ENAMETOOLONG;
			item_fail(it, "create");
			continue;
		}
		it->fd = open(it->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (it->fd < 0) {
			item_fail(it, "create");
			continue;
		}
		size_t len = strlen(it->text), off = 0;
		while (off < len && it->rc == 0) {
			ssize_t w = write(it->fd, it->text + off, len - off);
			if (w < 0 && errno != EINTR)
				item_fail(it, "write");
			else if (w > 0)
				off += (size_t)w;
		}
	}
	for (struct commit_item *it = batch; it != NULL; it = it->next) {
		if (it->rc == 0 && fsync(it->fd) != 0)
			item_fail(it, "fsync");
		if (it->fd >= 0)
			close(it->fd);
		char final[PATH_MAX];
		if (it->rc == 0 && record_path(c->dir, it->id, final, sizeof(final)) == 0 &&
		    rename(it->tmp, final) != 0)
			item_fail(it, "rename");
		if (it->rc != 0)
			(void)unlink(it->tmp);
	}
	int dfd = open(c->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc = dfd >= 0 ? fsync(dfd) : -1;
	int e = errno;
	if (dfd >= 0)
		close(dfd);
	for (struct commit_item *it = batch; rc != 0 && it != NULL; it = it->next)
		if (it->rc == 0) {
			it->rc = -1;
			snprintf(it->msg, sizeof(it->msg), "fsync %.100s: %.60s", c->dir,
			         strerror(e));
		}
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
		commit_batch(c, batch);
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

int probe_committer_write(struct probe_committer *c, const char *id, const char *text,
                          struct vm_err *err)
{
	struct commit_item it;
	memset(&it, 0, sizeof(it));
	it.id = id;
	it.text = text;
	pthread_mutex_lock(&c->mu);
	if (c->stop) {
		pthread_mutex_unlock(&c->mu);
		return probe_store_write(c->dir, id, text, err);
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

int probe_committer_write_async(struct probe_committer *c, const char *id, char *text,
                                probe_commit_done_fn on_done, void *ctx)
{
	struct commit_item *it = calloc(1, sizeof(*it));
	if (it == NULL)
		return -1;
	snprintf(it->idbuf, sizeof(it->idbuf), "%s", id);
	it->id = it->idbuf;
	it->text = it->owned_text = text;
	it->on_done = on_done;
	it->ctx = ctx;
	pthread_mutex_lock(&c->mu);
	if (c->stop) {
		pthread_mutex_unlock(&c->mu);
		free(it);
		return -1;
	}
	if (c->tail != NULL)
		c->tail->next = it;
	else
		c->head = it;
	c->tail = it;
	pthread_cond_signal(&c->cv);
	pthread_mutex_unlock(&c->mu);
	return 0;
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
