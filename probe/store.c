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
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/log.h"
#include "core/time.h"
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
	return probe_committer_read(NULL, dir, id, max); /* no committer: the file */
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
 * everything that queued up meanwhile in a batch. Durability comes from one
 * append-only journal (dir/journal): each record of the batch is written to
 * its temp file and copied into the journal, the journal gets ONE fdatasync
 * for the whole batch, and only then are the temp files renamed over the
 * records (no fsync each: until a checkpoint, the journal is the durable
 * copy). So a batch costs one flush however many records it holds, also on
 * filesystems where every fsync is a flush of its own (ext4 without a
 * journal). Records larger than JOURNAL_ENTRY_MAX are written as before
 * (fsync each, then the directory). A checkpoint (journal past
 * JOURNAL_CHECKPOINT, and at stop) fsyncs the records renamed since the last
 * one and empties the journal; probe_store_recover replays it after a crash. */
#define JOURNAL_NAME         "journal"
#define JOURNAL_MAGIC        0x4a414d56u /* "VMAJ" */
#define JOURNAL_ENTRY_MAX    (1u << 20)
#define JOURNAL_CHECKPOINT   (4u << 20)
#define JOURNAL_PREZERO      (8u << 20) /* overwriting written blocks: fdatasync is one flush */
#define JOURNAL_COPY_CHUNK   65536
#define CHECKPOINT_FSYNC_MAX 64 /* records fsynced one by one at a checkpoint */
#define MAT_QUIET_MS         20 /* the materializer waits for a pause of the writer this long */

/* An entry: this header, the id (idlen bytes), the record (len bytes). sum is
 * FNV-1a over the header (sum = 0), id and record: a torn tail fails it. */
struct jhdr {
	uint32_t magic, idlen;
	uint64_t gen; /* of the journal since it was last emptied: older entries end it */
	uint64_t len;
	int64_t ts_ns; /* CLOCK_REALTIME_COARSE after the temp file was written */
	uint64_t sum;
};

/* A record written since the last checkpoint: renamed into place, or (log)
 * only in the journal at off/len, its file to be written by the checkpoint. */
struct jdirty {
	char id[PROBE_ID_MAX];
	bool log;
	bool settled; /* a finished probe's record: the materializer may write its file */
	uint64_t off, len;
	size_t seq;
};

struct journal {
	int fd;      /* -1: no journal, every record is written the direct way */
	int scratch; /* memfd: journal-only records are serialised here */
	uint64_t off, gen;
	struct jdirty *dirty; /* records written since the last checkpoint */
	size_t ndirty, cap;
	pthread_mutex_t mu; /* dirty: the writer thread, and probe_committer_forget */
	bool overflow;      /* an id did not fit in dirty: the checkpoint syncs the filesystem */
	/* the materializer thread: files of settled journal-only records, written
	 * off the writer thread between checkpoints (not synced: the checkpoint does) */
	pthread_cond_t mat_cv; /* with mu: settled records to write, or stop */
	size_t mat_next;       /* dirty entries before it were looked at */
	uint64_t batches;      /* committed by the writer: the materializer waits for a pause */
	bool mat_stop, mat_running;
	pthread_t mat_thread;
	char dir[PATH_MAX];
};

static uint64_t fnv(uint64_t h, const void *data, size_t n)
{
	const unsigned char *p = data;
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h;
}

#define FNV_INIT 0xcbf29ce484222325ull

struct commit_item {
	const char *id;
	probe_write_fn write_fn;
	void *wctx;
	int rc, fd;
	bool journaled; /* in the journal: renamed after the batch's one fdatasync */
	bool log;       /* journal only: no record file until the checkpoint */
	bool settled;   /* log, and the record of a finished probe (no later write expected) */
	bool prepared;  /* tmp and fd already written by the caller (probe_store_prepare) */
	uint64_t joff, jlen;
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
	struct journal j;
	char dir[PATH_MAX];
};

static void item_fail(struct commit_item *it, const char *what, int e)
{
	it->rc = -1;
	snprintf(it->msg, sizeof(it->msg), "%s %.100s: %.60s", what, it->tmp, strerror(e));
}

static int pwrite_all(int fd, const void *data, size_t len, uint64_t off)
{
	const char *p = data;
	while (len > 0) {
		ssize_t w = pwrite(fd, p, len, (off_t)off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? -errno : -EIO;
		p += w;
		len -= (size_t)w;
		off += (uint64_t)w;
	}
	return 0;
}

/* Copies the written temp file (len bytes, from the page cache) into the
 * journal at j->off; advances j->off only once the whole entry is there, so
 * a failed entry is overwritten by the next one. */
static int journal_append(struct journal *j, const char *id, int src, uint64_t len,
                          uint64_t *data_off)
{
	static _Thread_local char buf[JOURNAL_COPY_CHUNK];
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME_COARSE, &ts);
	struct jhdr h = {JOURNAL_MAGIC,
	                 (uint32_t)strlen(id),
	                 j->gen,
	                 len,
	                 (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec,
	                 0};
	uint64_t sum = fnv(FNV_INIT, &h, sizeof(h));
	sum = fnv(sum, id, h.idlen);
	uint64_t at = j->off + sizeof(h);
	int rc = pwrite_all(j->fd, id, h.idlen, at);
	at += h.idlen;
	*data_off = at;
	for (uint64_t done = 0; rc == 0 && done < len;) {
		size_t want = len - done < sizeof(buf) ? (size_t)(len - done) : sizeof(buf);
		ssize_t n = pread(src, buf, want, (off_t)done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		sum = fnv(sum, buf, (size_t)n);
		rc = pwrite_all(j->fd, buf, (size_t)n, at);
		at += (uint64_t)n;
		done += (uint64_t)n;
	}
	h.sum = sum;
	if (rc == 0)
		rc = pwrite_all(j->fd, &h, sizeof(h), j->off);
	if (rc == 0)
		j->off = at;
	return rc;
}

static void journal_mark_dirty(struct journal *j, const char *id, bool log, bool settled,
                               uint64_t off, uint64_t len)
{
	pthread_mutex_lock(&j->mu);
	if (j->ndirty == j->cap) {
		size_t ncap = j->cap ? j->cap * 2 : 256;
		void *nd = realloc(j->dirty, ncap * sizeof(*j->dirty));
		if (nd == NULL) {
			j->overflow = true;
			pthread_mutex_unlock(&j->mu);
			return;
		}
		j->dirty = nd;
		j->cap = ncap;
	}
	struct jdirty *d = &j->dirty[j->ndirty];
	snprintf(d->id, sizeof(d->id), "%s", id);
	d->log = log;
	d->settled = settled;
	d->off = off;
	d->len = len;
	d->seq = j->ndirty++;
	pthread_mutex_unlock(&j->mu);
}

/* id's record file was just written the direct way: its older journal-only
 * entries must neither be served (GET) nor written over it (checkpoint). */
static void journal_forget(struct journal *j, const char *id)
{
	pthread_mutex_lock(&j->mu);
	for (size_t i = 0; i < j->ndirty; i++)
		if (strcmp(j->dirty[i].id, id) == 0)
			j->dirty[i].log = false; /* the file is newer: the checkpoint fsyncs it */
	pthread_mutex_unlock(&j->mu);
}

/* Empties the journal: a zero first header ends it. The file keeps its
 * (pre-zeroed) blocks, so later appends stay overwrites. */
static int journal_empty(int fd)
{
	static const struct jhdr zero;
	return pwrite_all(fd, &zero, sizeof(zero), 0) == 0 && fdatasync(fd) == 0 ? 0 : -1;
}

static uint64_t new_gen(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_dirty(const void *a, const void *b)
{
	const struct jdirty *x = a, *y = b;
	int c = strcmp(x->id, y->id);
	return c != 0 ? c : x->seq < y->seq ? -1 : x->seq > y->seq;
}

struct span {
	const char *p;
	size_t n;
};

static int write_span(void *ctx, int fd, struct vm_err *err)
{
	const struct span *s = ctx;
	return probe_write_all(fd, s->p, s->n, err);
}

/* Writes the record file of a journal-only record from its journal copy
 * (temp file and rename through dfd); not synced: the checkpoint makes it
 * durable with the others before it empties the journal. */
static int materialize(const struct journal *j, int dfd, const struct jdirty *d)
{
	char tmp[PROBE_ID_MAX + 16], leaf[PROBE_ID_MAX + 8];
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.json.tmp-c", d->id) >= sizeof(tmp) ||
	    (size_t)snprintf(leaf, sizeof(leaf), "%s.json", d->id) >= sizeof(leaf))
		return -1;
	char *buf = malloc(d->len ? d->len : 1);
	int rc =
	    buf != NULL && pread(j->fd, buf, d->len, (off_t)d->off) == (ssize_t)d->len ? 0 : -1;
	int fd = rc == 0 ? openat(dfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
	                          0600)
	                 : -1;
	if (fd < 0 || fs_write_all(fd, buf, d->len) != 0)
		rc = -1;
	if (fd >= 0 && close(fd) != 0)
		rc = -1;
	if (rc == 0 && renameat(dfd, tmp, dfd, leaf) != 0)
		rc = -1;
	if (rc != 0 && fd >= 0)
		(void)unlinkat(dfd, tmp, 0);
	free(buf);
	return rc;
}

/* Makes every record renamed since the last checkpoint durable on its own
 * (writeback started for all first, so the fsyncs mostly wait together),
 * then empties the journal. On any failure the journal stays: it is still
 * the durable copy. */
static void journal_checkpoint(struct journal *j, const char *dir)
{
	if (j->fd < 0 || j->off == 0)
		return;
	pthread_mutex_lock(&j->mu);
	qsort(j->dirty, j->ndirty, sizeof(*j->dirty), cmp_dirty);
	bool ok = true;
	/* thousands of records: one syncfs (one flush) instead of an fsync, and
	 * on a filesystem without a journal a flush, per file; the writer waits */
	bool one_sync = j->overflow || j->ndirty > CHECKPOINT_FSYNC_MAX;
	/* the records are reached through the runs directory's fd, never re-resolved */
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0)
		ok = false;
	for (int pass = 0; dfd >= 0 && pass < 2; pass++) {
		for (size_t i = 0; i < j->ndirty; i++) {
			char leaf[PROBE_ID_MAX + 8];
			/* the newest write of each record counts */
			if ((i + 1 < j->ndirty &&
			     strcmp(j->dirty[i].id, j->dirty[i + 1].id) == 0) ||
			    (size_t)snprintf(leaf, sizeof(leaf), "%s.json", j->dirty[i].id) >=
			        sizeof(leaf))
				continue;
			if (pass == 0 && j->dirty[i].log && materialize(j, dfd, &j->dirty[i]) != 0) {
				ok = false;
				continue;
			}
			if (one_sync)
				continue;
			int fd = openat(dfd, leaf, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
			if (fd < 0)
				continue; /* removed by retention meanwhile */
			if (pass == 0)
				(void)sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
			else if (fsync(fd) != 0)
				ok = false;
			close(fd);
		}
	}
	if (dfd >= 0 && (fsync(dfd) != 0 || (one_sync && syncfs(dfd) != 0)))
		ok = false;
	if (dfd >= 0)
		close(dfd);
	j->mat_next = 0; /* sorted (or emptied): look again from the start */
	if (!ok || journal_empty(j->fd) != 0) {
		pthread_mutex_unlock(&j->mu);
		log_warn("probe", "journal checkpoint in %s failed; the journal is kept", dir);
		return;
	}
	j->gen++;
	j->off = 0;
	j->ndirty = 0;
	j->overflow = false;
	pthread_mutex_unlock(&j->mu);
}

/* Zeroes the journal up to JOURNAL_PREZERO once, so appends within are
 * overwrites of allocated blocks: fdatasync is then one flush, and a full
 * disk cannot refuse them. Only where space is plentiful; false (and the
 * space back) otherwise: a small disk keeps one fsync per record, so a full
 * one is reported at the write it refuses. */
static bool journal_prezero(int fd, uint64_t size)
{
	static const char zeros[JOURNAL_COPY_CHUNK];
	struct statvfs vs;
	if (size >= JOURNAL_PREZERO)
		return true;
	if (fstatvfs(fd, &vs) != 0 ||
	    (uint64_t)vs.f_bavail * vs.f_frsize < 16 * (uint64_t)JOURNAL_PREZERO)
		return false;
	for (uint64_t o = size; o < JOURNAL_PREZERO; o += sizeof(zeros))
		if (pwrite_all(fd, zeros, sizeof(zeros), o) != 0) {
			(void)ftruncate(fd, (off_t)size);
			return false;
		}
	return fsync(fd) == 0;
}

/* The next settled journal-only record whose file is not written yet, with no
 * newer write of its id; its index, or -1. With j->mu held. */
static long mat_pick_locked(struct journal *j)
{
	for (; j->mat_next < j->ndirty; j->mat_next++) {
		const struct jdirty *d = &j->dirty[j->mat_next];
		if (!d->log || !d->settled)
			continue;
		bool newer = false;
		for (size_t k = j->mat_next + 1; k < j->ndirty && !newer; k++)
			newer = strcmp(j->dirty[k].id, d->id) == 0;
		if (!newer)
			return (long)j->mat_next++;
	}
	return -1;
}

/* Writes the files of finished probes' journal-only records as they come, so
 * the checkpoint has few left to create (a file each, while the writer waits).
 * The temp file is written without the lock; the rename happens under it,
 * only if the entry is still the newest, still journal-only and no checkpoint
 * ran meanwhile (then readers find the file the moment the entry says so, and
 * a forgotten or rewritten record is never replaced by this older copy). */
static void *materializer_main(void *arg)
{
	struct journal *j = arg;
	/* behind the workers and their steps: what it does not write, the checkpoint does */
	(void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10);
	int dfd = open(j->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	char *buf = NULL;
	size_t cap = 0;
	pthread_mutex_lock(&j->mu);
	uint64_t seen = j->batches;
	while (dfd >= 0 && !j->mat_stop) {
		/* A burst of probes: creating files costs CPU the probes' steps and
		 * the API use (about 0.5 ms each on ext4 without a journal), so wait
		 * for a pause of the writer, unless the journal is half way to its
		 * checkpoint (which would create the rest while the writer waits). */
		if (j->batches != seen && j->off <= JOURNAL_CHECKPOINT / 2) {
			seen = j->batches;
			struct timespec until = time_deadline(MAT_QUIET_MS);
			(void)pthread_cond_timedwait(&j->mat_cv, &j->mu, &until);
			continue;
		}
		long i = mat_pick_locked(j);
		if (i < 0) {
			pthread_cond_wait(&j->mat_cv, &j->mu);
			continue;
		}
		struct jdirty d = j->dirty[i];
		uint64_t gen = j->gen;
		if (d.len > cap) {
			char *nb = realloc(buf, d.len);
			if (nb == NULL)
				continue; /* the checkpoint writes it */
			buf = nb;
			cap = d.len;
		}
		bool got = pread(j->fd, buf, d.len, (off_t)d.off) == (ssize_t)d.len;
		pthread_mutex_unlock(&j->mu);
		char tmp[PROBE_ID_MAX + 16], leaf[PROBE_ID_MAX + 8];
		snprintf(tmp, sizeof(tmp), "%s.json.tmp-m", d.id);
		snprintf(leaf, sizeof(leaf), "%s.json", d.id);
		int fd = got ? openat(dfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
		                      0600)
		             : -1;
		bool ok = fd >= 0 && fs_write_all(fd, buf, d.len) == 0;
		if (fd >= 0 && close(fd) != 0)
			ok = false;
		pthread_mutex_lock(&j->mu);
		bool still = ok && j->gen == gen && (size_t)i < j->ndirty &&
		             strcmp(j->dirty[i].id, d.id) == 0 && j->dirty[i].log &&
		             j->dirty[i].off == d.off;
		for (size_t k = (size_t)i + 1; still && k < j->ndirty; k++)
			still = strcmp(j->dirty[k].id, d.id) != 0;
		if (still && renameat(dfd, tmp, dfd, leaf) == 0) {
			/* a renamed record now: the checkpoint only syncs it */
			for (size_t k = 0; k <= (size_t)i; k++)
				if (strcmp(j->dirty[k].id, d.id) == 0)
					j->dirty[k].log = false;
		} else if (fd >= 0) {
			(void)unlinkat(dfd, tmp, 0);
		}
	}
	pthread_mutex_unlock(&j->mu);
	free(buf);
	if (dfd >= 0)
		close(dfd);
	return NULL;
}

static void materializer_start(struct journal *j)
{
	if (time_cond_init(&j->mat_cv) != 0)
		pthread_cond_init(&j->mat_cv, NULL);
	j->mat_running = j->fd >= 0 && pthread_create(&j->mat_thread, NULL, materializer_main, j) == 0;
}

static void materializer_stop(struct journal *j)
{
	if (j->mat_running) {
		pthread_mutex_lock(&j->mu);
		j->mat_stop = true;
		pthread_cond_signal(&j->mat_cv);
		pthread_mutex_unlock(&j->mu);
		pthread_join(j->mat_thread, NULL);
		j->mat_running = false;
	}
	pthread_cond_destroy(&j->mat_cv);
}

/* Opens (creating, durably) dir/journal for appending; without it, j->fd is
 * -1 and every record is written the direct way. */
static void journal_open(struct journal *j, const char *dir)
{
	memset(j, 0, sizeof(*j));
	pthread_mutex_init(&j->mu, NULL);
	snprintf(j->dir, sizeof(j->dir), "%s", dir);
	struct stat sb;
	j->fd = -1;
	j->scratch = memfd_create("vma-record", MFD_CLOEXEC);
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	int fd = dfd < 0 ? -1
	                 : openat(dfd, JOURNAL_NAME, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0 || dfd < 0 || fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || fsync(fd) != 0 ||
	    fsync(dfd) != 0) {
		log_warn("probe", "no record journal in %s (%s): one fsync per record", dir,
		         strerror(errno));
		if (fd >= 0)
			close(fd);
	} else {
		j->fd = fd;
		j->off = 0;
		j->gen = new_gen(); /* what an earlier run left there (replayed) never counts */
		if (!journal_prezero(fd, (uint64_t)sb.st_size) || journal_empty(fd) != 0) {
			close(fd);
			j->fd = -1;
			(void)unlinkat(dfd, JOURNAL_NAME, 0);
		}
	}
	if (dfd >= 0)
		close(dfd);
}

static void journal_close(struct journal *j, const char *dir)
{
	materializer_stop(j);
	journal_checkpoint(j, dir);
	if (j->fd >= 0)
		close(j->fd);
	if (j->scratch >= 0)
		close(j->scratch);
	j->fd = j->scratch = -1;
	free(j->dirty);
	j->dirty = NULL;
	j->ndirty = j->cap = 0;
	pthread_mutex_destroy(&j->mu);
}

/* A journal-only record: serialised into the scratch memfd and copied into
 * the journal (no temp file, no rename); 0, or -1 to write it the usual way
 * (too large for an entry, or the journal refused it). */
static int log_item(struct journal *j, struct commit_item *it)
{
	struct vm_err werr = {0};
	struct stat sb;
	if (ftruncate(j->scratch, 0) != 0 || lseek(j->scratch, 0, SEEK_SET) != 0 ||
	    it->write_fn(it->wctx, j->scratch, &werr) != 0 || fstat(j->scratch, &sb) != 0 ||
	    (uint64_t)sb.st_size > JOURNAL_ENTRY_MAX)
		return -1;
	it->jlen = (uint64_t)sb.st_size;
	return journal_append(j, it->id, j->scratch, it->jlen, &it->joff) == 0 ? 0 : -1;
}

static void commit_batch(const char *dir, struct commit_item *batch, struct journal *j)
{
	int n = 0;
	bool journaled = false, direct = false;
	uint64_t start = j != NULL ? j->off : 0;
	for (struct commit_item *it = batch; it != NULL; it = it->next, n++) {
		if (it->prepared)
			goto written;
		it->fd = -1;
		it->tmp[0] = '\0';
		if (it->log && j != NULL && j->fd >= 0 && j->scratch >= 0 && log_item(j, it) == 0) {
			it->journaled = journaled = true;
			continue;
		}
		it->log = false;
		if ((size_t)snprintf(it->tmp, sizeof(it->tmp), "%s/%s.json.tmp-%d", dir, it->id,
		                     n) >= sizeof(it->tmp)) {
			item_fail(it, "create", ENAMETOOLONG);
			continue;
		}
		/* read back into the journal: O_RDWR */
		it->fd = open(it->tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
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
			continue;
		}
	written:;
		struct stat sb;
		if (j == NULL || j->fd < 0 || fstat(it->fd, &sb) != 0 ||
		    (uint64_t)sb.st_size > JOURNAL_ENTRY_MAX) {
			direct = true;
			continue;
		}
		int e = journal_append(j, it->id, it->fd, (uint64_t)sb.st_size, &it->joff);
		if (e != 0) {
			item_fail(it, "journal", -e);
			continue;
		}
		it->journaled = journaled = true;
	}
	int jerr = journaled && fdatasync(j->fd) != 0 ? errno : 0;
	if (jerr != 0)
		j->off = start; /* none of this batch counts; the next one overwrites it */
	for (struct commit_item *it = batch; it != NULL; it = it->next) {
		if (it->rc == 0 && it->journaled && jerr != 0)
			item_fail(it, "fdatasync journal", jerr);
		if (it->log) {
			if (it->rc == 0)
				journal_mark_dirty(j, it->id, true, it->settled, it->joff, it->jlen);
			continue;
		}
		if (it->rc == 0 && !it->journaled && fsync(it->fd) != 0)
			item_fail(it, "fsync", errno);
		if (it->fd >= 0)
			close(it->fd);
		char final[PATH_MAX];
		if (it->rc == 0 && record_path(dir, it->id, final, sizeof(final)) == 0 &&
		    rename(it->tmp, final) != 0)
			item_fail(it, "rename", errno);
		if (it->rc != 0 && it->fd >= 0)
			(void)unlink(it->tmp);
		if (it->rc == 0 && it->journaled)
			journal_mark_dirty(j, it->id, false, false, 0, 0);
		else if (it->rc == 0 && j != NULL)
			journal_forget(j, it->id); /* written the direct way (too large) */
	}
	if (!direct)
		return; /* journaled renames need no directory fsync: a replay redoes them */
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc = dfd >= 0 ? fsync(dfd) : -1;
	int e = errno;
	if (dfd >= 0)
		close(dfd);
	for (struct commit_item *it = batch; rc != 0 && it != NULL; it = it->next)
		if (it->rc == 0 && !it->journaled) {
			it->rc = -1;
			snprintf(it->msg, sizeof(it->msg), "fsync %.100s: %.60s", dir, strerror(e));
		}
}

/* --- recovery ------------------------------------------------------------------------------ */

struct jentry {
	char id[PROBE_ID_MAX];
	uint64_t off, len; /* of the record bytes */
	int64_t ts_ns;
	size_t seq;
};

static int cmp_jentry(const void *a, const void *b)
{
	const struct jentry *x = a, *y = b;
	int c = strcmp(x->id, y->id);
	return c != 0 ? c : x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* The record on disk is newer than the journal's copy: written later the
 * direct way (a failure record), or renamed after the entry and intact. */
static bool record_supersedes(const char *dir, const char *id, int64_t ts_ns)
{
	char path[PATH_MAX];
	struct stat sb;
	if (record_path(dir, id, path, sizeof(path)) != 0 || stat(path, &sb) != 0)
		return false;
	int64_t mt = (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec;
	if (mt < ts_ns)
		return false;
	json_t *rec = probe_store_read(dir, id, SIZE_MAX);
	json_decref(rec);
	return rec != NULL;
}

/* Reads the valid prefix of the journal (stops at the first torn or foreign
 * entry); returns the entries in *out. */
static size_t journal_entries(int fd, uint64_t size, struct jentry **out, char **bufp)
{
	size_t n = 0, cap = 0;
	struct jentry *es = NULL;
	char *buf = malloc(JOURNAL_ENTRY_MAX);
	uint64_t off = 0, gen = 0;
	while (buf != NULL && off + sizeof(struct jhdr) <= size) {
		struct jhdr h;
		if (pread(fd, &h, sizeof(h), (off_t)off) != (ssize_t)sizeof(h) ||
		    h.magic != JOURNAL_MAGIC || h.idlen == 0 || h.idlen >= PROBE_ID_MAX ||
		    h.len > JOURNAL_ENTRY_MAX || off + sizeof(h) + h.idlen + h.len > size ||
		    (off > 0 && h.gen != gen))
			break;
		gen = h.gen;
		struct jentry e = {
		    .off = off + sizeof(h) + h.idlen, .len = h.len, .ts_ns = h.ts_ns, .seq = n};
		uint64_t want = h.sum;
		h.sum = 0;
		if (pread(fd, e.id, h.idlen, (off_t)(off + sizeof(h))) != (ssize_t)h.idlen ||
		    pread(fd, buf, h.len, (off_t)e.off) != (ssize_t)h.len)
			break;
		e.id[h.idlen] = '\0';
		uint64_t sum = fnv(fnv(fnv(FNV_INIT, &h, sizeof(h)), e.id, h.idlen), buf, h.len);
		size_t idlen;
		char name[PROBE_ID_MAX + 8];
		snprintf(name, sizeof(name), "%s.json", e.id);
		if (sum != want || !is_record_name(name, &idlen))
			break;
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 256;
			struct jentry *ne = realloc(es, ncap * sizeof(*ne));
			if (ne == NULL)
				break;
			es = ne;
			cap = ncap;
		}
		es[n++] = e;
		off = e.off + h.len;
	}
	*out = es;
	*bufp = buf;
	return n;
}

int probe_store_recover(const char *dir, int *replayed, struct vm_err *err)
{
	*replayed = 0;
	char path[PATH_MAX];
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, JOURNAL_NAME) >= sizeof(path))
		return vm_err_set(err, VM_ERR_INVALID, "path too long");
	int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return errno == ENOENT ? 0 : vm_err_errno(err, VM_ERR_IO, errno, "open %s", path);
	struct stat sb;
	if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
		close(fd);
		return vm_err_set(err, VM_ERR_IO, "%s is not a regular file", path);
	}
	struct jentry *es = NULL;
	char *buf = NULL;
	size_t n = journal_entries(fd, (uint64_t)sb.st_size, &es, &buf);
	if (n > 0)
		qsort(es, n, sizeof(*es), cmp_jentry);
	int rc = 0;
	for (size_t i = 0; i < n && rc == 0; i++) {
		/* only the newest entry of each id counts */
		if (i + 1 < n && strcmp(es[i].id, es[i + 1].id) == 0)
			continue;
		if (record_supersedes(dir, es[i].id, es[i].ts_ns))
			continue;
		if (pread(fd, buf, es[i].len, (off_t)es[i].off) != (ssize_t)es[i].len) {
			rc = vm_err_errno(err, VM_ERR_IO, errno, "read %s", path);
			break;
		}
		struct span span = {buf, (size_t)es[i].len};
		rc = probe_store_write_stream(dir, es[i].id, write_span, &span, err);
		*replayed += rc == 0;
	}
	/* replayed records are durable on their own now: the journal starts empty */
	if (rc == 0 && journal_empty(fd) != 0)
		rc = vm_err_errno(err, VM_ERR_IO, errno, "truncate %s", path);
	free(es);
	free(buf);
	close(fd);
	return rc;
}

int probe_store_write_stream(const char *dir, const char *id, probe_write_fn fn, void *wctx,
                             struct vm_err *err)
{
	struct commit_item it;
	memset(&it, 0, sizeof(it));
	it.id = id;
	it.write_fn = fn;
	it.wctx = wctx;
	commit_batch(dir, &it, NULL);
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
		commit_batch(c->dir, batch, &c->j);
		if (c->j.off > JOURNAL_CHECKPOINT)
			journal_checkpoint(&c->j, c->dir);
		if (c->j.mat_running) {
			pthread_mutex_lock(&c->j.mu);
			c->j.batches++;
			pthread_cond_signal(&c->j.mat_cv);
			pthread_mutex_unlock(&c->j.mu);
		}
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
	journal_open(&c->j, dir);
	materializer_start(&c->j);
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cv, NULL);
	pthread_cond_init(&c->done_cv, NULL);
	if (pthread_create(&c->thread, NULL, committer_main, c) != 0) {
		vm_err_set(err, VM_ERR_NOMEM, "cannot start the record writer");
		pthread_mutex_destroy(&c->mu);
		pthread_cond_destroy(&c->cv);
		pthread_cond_destroy(&c->done_cv);
		journal_close(&c->j, dir);
		free(c);
		return NULL;
	}
	return c;
}

static int committer_write(struct probe_committer *c, const char *id, probe_write_fn fn, void *wctx,
                           bool log, struct probe_meanwhile *mw, struct vm_err *err)
{
	struct commit_item it;
	memset(&it, 0, sizeof(it));
	it.id = id;
	it.write_fn = fn;
	it.wctx = wctx;
	it.log = log;
	pthread_mutex_lock(&c->mu);
	if (c->stop) {
		pthread_mutex_unlock(&c->mu);
		if (mw != NULL)
			mw->rc = mw->fn(mw->ctx);
		return probe_store_write_stream(c->dir, id, fn, wctx, err);
	}
	if (c->tail != NULL)
		c->tail->next = &it;
	else
		c->head = &it;
	c->tail = &it;
	pthread_cond_signal(&c->cv);
	if (mw != NULL) { /* while the writer flushes: `it` stays ours until done */
		pthread_mutex_unlock(&c->mu);
		mw->rc = mw->fn(mw->ctx);
		pthread_mutex_lock(&c->mu);
	}
	while (!it.done)
		pthread_cond_wait(&c->done_cv, &c->mu);
	pthread_mutex_unlock(&c->mu);
	if (it.rc != 0)
		return vm_err_set(err, VM_ERR_IO, "%s", it.msg);
	return 0;
}

int probe_committer_write_stream(struct probe_committer *c, const char *id, probe_write_fn fn,
                                 void *wctx, struct vm_err *err)
{
	return committer_write(c, id, fn, wctx, false, NULL, err);
}

int probe_committer_log_stream(struct probe_committer *c, const char *id, probe_write_fn fn,
                               void *wctx, struct vm_err *err)
{
	return committer_write(c, id, fn, wctx, true, NULL, err);
}

int probe_committer_log(struct probe_committer *c, const char *id, const char *text,
                        struct vm_err *err)
{
	return committer_write(c, id, probe_write_text, (void *)text, true, NULL, err);
}

int probe_committer_log_meanwhile(struct probe_committer *c, const char *id, const char *text,
                                  struct probe_meanwhile *mw, struct vm_err *err)
{
	return committer_write(c, id, probe_write_text, (void *)text, true, mw, err);
}

int probe_committer_write(struct probe_committer *c, const char *id, const char *text,
                          struct vm_err *err)
{
	return probe_committer_write_stream(c, id, probe_write_text, (void *)text, err);
}

static int enqueue_async(struct probe_committer *c, const char *id, probe_write_fn fn, void *wctx,
                         char *owned_text, probe_commit_done_fn on_done, void *ctx,
                         struct probe_prepared *prep, bool log, bool settled)
{
	struct commit_item *it = calloc(1, sizeof(*it));
	if (it == NULL)
		return -1;
	it->log = log;
	it->settled = log && settled;
	snprintf(it->idbuf, sizeof(it->idbuf), "%s", id);
	it->id = it->idbuf;
	it->write_fn = fn;
	it->wctx = wctx;
	it->on_done = on_done;
	it->ctx = ctx;
	if (prep != NULL) {
		snprintf(it->tmp, sizeof(it->tmp), "%s", prep->tmp);
		it->fd = prep->fd;
		it->prepared = true;
	}
	pthread_mutex_lock(&c->mu);
	if (c->stop) {
		pthread_mutex_unlock(&c->mu);
		free(it);
		return -1;
	}
	it->owned_text = owned_text; /* taken only once queued */
	if (prep != NULL)
		prep->fd = -1; /* the writer's now */
	if (c->tail != NULL)
		c->tail->next = it;
	else
		c->head = it;
	c->tail = it;
	pthread_cond_signal(&c->cv);
	pthread_mutex_unlock(&c->mu);
	return 0;
}

int probe_store_prepare(const char *dir, const char *id, probe_write_fn fn, void *wctx,
                        struct probe_prepared *out, struct vm_err *err)
{
	out->fd = -1;
	if ((size_t)snprintf(out->tmp, sizeof(out->tmp), "%s/%s.json.tmp-p", dir, id) >=
	    sizeof(out->tmp))
		return vm_err_set(err, VM_ERR_INVALID, "path too long");
	out->fd = open(out->tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (out->fd < 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "create %s", out->tmp);
	if (fn(wctx, out->fd, err) != 0) {
		probe_prepared_discard(out);
		return -err->code;
	}
	return 0;
}

void probe_prepared_discard(struct probe_prepared *p)
{
	if (p->fd < 0)
		return;
	close(p->fd);
	(void)unlink(p->tmp);
	p->fd = -1;
}

int probe_committer_write_prepared_async(struct probe_committer *c, const char *id,
                                         struct probe_prepared *prep, probe_commit_done_fn on_done,
                                         void *ctx)
{
	return enqueue_async(c, id, NULL, NULL, NULL, on_done, ctx, prep, false, false);
}

int probe_committer_write_stream_async(struct probe_committer *c, const char *id, probe_write_fn fn,
                                       void *wctx, probe_commit_done_fn on_done, void *ctx)
{
	return enqueue_async(c, id, fn, wctx, NULL, on_done, ctx, NULL, false, false);
}

int probe_committer_write_async(struct probe_committer *c, const char *id, char *text,
                                probe_commit_done_fn on_done, void *ctx)
{
	return enqueue_async(c, id, probe_write_text, text, text, on_done, ctx, NULL, false, false);
}

int probe_committer_log_stream_async(struct probe_committer *c, const char *id, probe_write_fn fn,
                                     void *wctx, bool settled, probe_commit_done_fn on_done,
                                     void *ctx)
{
	return enqueue_async(c, id, fn, wctx, NULL, on_done, ctx, NULL, true, settled);
}

bool probe_committer_journaled(const struct probe_committer *c)
{
	return c != NULL && c->j.fd >= 0 && c->j.scratch >= 0;
}

/* The newest write of id since the checkpoint, when it is journal-only: its
 * bytes copied into a memfd (the journal stays the writer's). -1: none (the
 * record file is the current one), -2: it could not be copied. Called with
 * j->mu held, so a checkpoint cannot empty the journal meanwhile. */
static int journal_copy_locked(const struct journal *j, const char *id, size_t max,
                               uint64_t *size)
{
	const struct jdirty *d = NULL;
	for (size_t i = j->ndirty; i-- > 0;)
		if (strcmp(j->dirty[i].id, id) == 0) {
			d = &j->dirty[i];
			break;
		}
	if (d == NULL || !d->log)
		return -1;
	if (d->len > (uint64_t)max)
		return -2;
	static _Thread_local char buf[JOURNAL_COPY_CHUNK];
	int fd = memfd_create("vma-record", MFD_CLOEXEC);
	for (uint64_t done = 0; fd >= 0 && done < d->len;) {
		size_t want = d->len - done < sizeof(buf) ? (size_t)(d->len - done) : sizeof(buf);
		ssize_t n = pread(j->fd, buf, want, (off_t)(d->off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0 || pwrite_all(fd, buf, (size_t)n, done) != 0) {
			close(fd);
			return -2;
		}
		done += (uint64_t)n;
	}
	if (fd < 0)
		return -2;
	*size = d->len;
	return fd;
}

int probe_committer_open(struct probe_committer *c, const char *dir, const char *id, size_t max,
                         uint64_t *size)
{
	if (c != NULL && c->j.fd >= 0) {
		pthread_mutex_lock(&c->j.mu);
		int fd = journal_copy_locked(&c->j, id, max, size);
		pthread_mutex_unlock(&c->j.mu);
		if (fd != -1)
			return fd < 0 ? -1 : fd;
	}
	return probe_store_open(dir, id, max, size);
}

json_t *probe_committer_read(struct probe_committer *c, const char *dir, const char *id,
                             size_t max)
{
	uint64_t size;
	int fd = probe_committer_open(c, dir, id, max, &size);
	if (fd < 0)
		return NULL;
	struct vm_err err;
	json_t *rec = read_record_fd(fd, max, &err);
	close(fd);
	return rec;
}

void probe_committer_forget(struct probe_committer *c, const char *id)
{
	if (c != NULL)
		journal_forget(&c->j, id);
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
	journal_close(&c->j, c->dir); /* a clean stop leaves no journal to replay */
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->cv);
	pthread_cond_destroy(&c->done_cv);
	free(c);
}
