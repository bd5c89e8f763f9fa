/* Durable spool of undelivered health reports: one file per entry, named by a
 * growing sequence number, written with fs_write_atomic (temp file, fsync,
 * rename, fsync dir). A crash mid-write leaves at worst a temp file, which the
 * next open removes; older entries are never rewritten, so they cannot be
 * torn. Each file also carries a SHA-256 of its body so bit rot or a foreign
 * file is detected and set aside instead of being sent. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/codec.h"
#include "core/fs.h"
#include "health/internal.h"

#define ENTRY_SUFFIX ".rep"
#define ENTRY_MAX    (4 * 1024 * 1024)
#define HEADER_LEN   (sizeof(HEALTH_SPOOL_MAGIC) - 1 + 1 + 64 + 1 + HEALTH_ID_LEN + 1)
#define INDEX_MAX    1000000

struct spool_entry {
	uint64_t seq;
	uint64_t size;
};

struct health_spool {
	char dir[PATH_MAX];
	struct health_spool_limits lim;
	struct spool_entry *e; /* oldest first */
	size_t n, cap;
	uint64_t bytes, dropped, corrupt;
	uint64_t next_seq;
};

static bool is_id_char(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || c == '-';
}

size_t health_spool_format_header(const char *id, const char *body, size_t len, char *out,
                                  size_t cap)
{
	uint8_t sum[SHA256_LEN];
	char hex[2 * SHA256_LEN + 1];
	sha256_buf(body, len, sum);
	hex_encode(sum, sizeof(sum), hex);
	int n = snprintf(out, cap, "%s %s %.*s\n", HEALTH_SPOOL_MAGIC, hex, HEALTH_ID_LEN, id);
	return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

int health_spool_parse_entry(const char *data, size_t len, char id[HEALTH_ID_LEN + 1],
                             const char **body, size_t *body_len)
{
	const size_t ml = sizeof(HEALTH_SPOOL_MAGIC) - 1;
	if (len < HEADER_LEN || memcmp(data, HEALTH_SPOOL_MAGIC, ml) != 0 || data[ml] != ' ' ||
	    data[ml + 65] != ' ' || data[HEADER_LEN - 1] != '\n')
		return -1;
	const char *idp = data + ml + 66;
	uint8_t want[SHA256_LEN], sum[SHA256_LEN];
	if (hex_decode(data + ml + 1, 2 * SHA256_LEN, want, sizeof(want)) != SHA256_LEN)
		return -1;
	for (size_t i = 0; i < HEALTH_ID_LEN; i++)
		if (!is_id_char(idp[i]))
			return -1;
	const char *b = data + HEADER_LEN;
	size_t bl = len - HEADER_LEN;
	sha256_buf(b, bl, sum);
	if (memcmp(sum, want, sizeof(sum)) != 0)
		return -1;
	memcpy(id, idp, HEALTH_ID_LEN);
	id[HEALTH_ID_LEN] = '\0';
	*body = b;
	*body_len = bl;
	return 0;
}

static void entry_path(const struct health_spool *sp, uint64_t seq, char *out, size_t cap)
{
	snprintf(out, cap, "%.*s/%016" PRIx64 ENTRY_SUFFIX, PATH_MAX - 32, sp->dir, seq);
}

static int cmp_entry(const void *a, const void *b)
{
	uint64_t x = ((const struct spool_entry *)a)->seq, y = ((const struct spool_entry *)b)->seq;
	return x < y ? -1 : x > y;
}

static int index_add(struct health_spool *sp, uint64_t seq, uint64_t size)
{
	if (sp->n == sp->cap) {
		size_t ncap = sp->cap ? sp->cap * 2 : 64;
		struct spool_entry *ne = realloc(sp->e, ncap * sizeof(*ne));
		if (ne == NULL)
			return -1;
		sp->e = ne;
		sp->cap = ncap;
	}
	sp->e[sp->n++] = (struct spool_entry){seq, size};
	sp->bytes += size;
	return 0;
}

static void remove_oldest(struct health_spool *sp)
{
	char path[PATH_MAX];
	entry_path(sp, sp->e[0].seq, path, sizeof(path));
	unlink(path);
	sp->bytes -= sp->e[0].size;
	memmove(sp->e, sp->e + 1, (sp->n - 1) * sizeof(*sp->e));
	sp->n--;
}

/* Parses "<16 hex>.rep"; returns 0 and the sequence number, or -1. */
static int parse_name(const char *name, uint64_t *seq)
{
	uint8_t b[8];
	if (strlen(name) != 16 + strlen(ENTRY_SUFFIX) || strcmp(name + 16, ENTRY_SUFFIX) != 0 ||
	    hex_decode(name, 16, b, sizeof(b)) != 8)
		return -1;
	/* exactly the name entry_path writes (lower case), or the index would
	 * hold an entry no path reaches */
	char canon[17];
	hex_encode(b, sizeof(b), canon);
	if (memcmp(canon, name, 16) != 0)
		return -1;
	uint64_t v = 0;
	for (size_t i = 0; i < sizeof(b); i++)
		v = v << 8 | b[i];
	*seq = v;
	return 0;
}

static void enforce_limits(struct health_spool *sp, uint64_t incoming)
{
	while (sp->n > 0 && (sp->n + (incoming ? 1 : 0) > sp->lim.max_entries ||
	                     sp->bytes + incoming > sp->lim.max_bytes)) {
		remove_oldest(sp);
		sp->dropped++;
	}
}

struct health_spool *health_spool_open(const char *dir, const struct health_spool_limits *lim,
                                       struct vm_err *err)
{
	if (fs_mkdir_p(dir, 0700, err) != 0)
		return NULL;
	struct health_spool *sp = calloc(1, sizeof(*sp));
	if (sp == NULL) {
		vm_err_set(err, VM_ERR_NOMEM, "out of memory");
		return NULL;
	}
	snprintf(sp->dir, sizeof(sp->dir), "%s", dir);
	sp->lim = *lim;
	DIR *d = opendir(dir);
	if (d == NULL) {
		vm_err_errno(err, VM_ERR_IO, errno, "open spool %s", dir);
		free(sp);
		return NULL;
	}
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		char path[PATH_MAX];
		uint64_t seq;
		if (snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >= (int)sizeof(path))
			continue;
		if (strstr(de->d_name, ".tmp.") != NULL) {
			/* a write that a crash interrupted: never renamed, never acknowledged */
			unlink(path);
			continue;
		}
		if (parse_name(de->d_name, &seq) != 0)
			continue;
		struct stat st;
		if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
			continue;
		if (sp->n >= INDEX_MAX || index_add(sp, seq, (uint64_t)st.st_size) != 0)
			break;
	}
	closedir(d);
	if (sp->n > 1)
		qsort(sp->e, sp->n, sizeof(*sp->e), cmp_entry);
	sp->next_seq = sp->n ? sp->e[sp->n - 1].seq + 1 : 1;
	enforce_limits(sp, 0);
	return sp;
}

void health_spool_close(struct health_spool *sp)
{
	if (sp == NULL)
		return;
	free(sp->e);
	free(sp);
}

void health_spool_set_limits(struct health_spool *sp, const struct health_spool_limits *lim)
{
	sp->lim = *lim;
	enforce_limits(sp, 0);
}

int health_spool_push(struct health_spool *sp, const char *id, const char *body, size_t len,
                      struct vm_err *err)
{
	if (strlen(id) != HEALTH_ID_LEN)
		return vm_err_set(err, VM_ERR_INVALID, "spool: bad report id");
	size_t total = HEADER_LEN + len;
	if (total > sp->lim.max_bytes || total > ENTRY_MAX)
		return vm_err_set(err, VM_ERR_INVALID,
		                  "spool: report of %zu bytes exceeds the spool "
		                  "limit",
		                  total);
	char *buf = malloc(total);
	if (buf == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	if (health_spool_format_header(id, body, len, buf, HEADER_LEN + 1) != HEADER_LEN) {
		free(buf);
		return vm_err_set(err, VM_ERR_INTERNAL, "spool: header");
	}
	memcpy(buf + HEADER_LEN, body, len);
	enforce_limits(sp, total);
	char path[PATH_MAX];
	entry_path(sp, sp->next_seq, path, sizeof(path));
	int rc = fs_write_atomic(path, buf, total, 0600, err);
	free(buf);
	if (rc != 0) {
		sp->dropped++; /* not spooled (a full or failing disk): lost, and counted */
		return rc;
	}
	if (index_add(sp, sp->next_seq, total) != 0)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	sp->next_seq++;
	return 0;
}

int health_spool_peek(struct health_spool *sp, char id[HEALTH_ID_LEN + 1], char **body, size_t *len,
                      struct vm_err *err)
{
	*body = NULL;
	*len = 0;
	while (sp->n > 0) {
		char path[PATH_MAX];
		entry_path(sp, sp->e[0].seq, path, sizeof(path));
		char *data;
		size_t dlen;
		int rc = fs_read_file(path, ENTRY_MAX, &data, &dlen, err);
		const char *b;
		size_t bl;
		if (rc == 0 && health_spool_parse_entry(data, dlen, id, &b, &bl) == 0) {
			memmove(data, b, bl);
			data[bl] = '\0';
			*body = data;
			*len = bl;
			return 0;
		}
		if (rc == -VM_ERR_IO || rc == -VM_ERR_NOMEM)
			return rc; /* transient: keep the entry */
		free(data);
		/* Unreadable as an entry: keep it aside for inspection, skip it. */
		char aside[PATH_MAX + 16];
		snprintf(aside, sizeof(aside), "%s.corrupt", path);
		if (rename(path, aside) != 0)
			unlink(path);
		sp->bytes -= sp->e[0].size;
		memmove(sp->e, sp->e + 1, (sp->n - 1) * sizeof(*sp->e));
		sp->n--;
		sp->corrupt++;
	}
	return 0; /* empty: *body stays NULL */
}

int health_spool_pop(struct health_spool *sp, struct vm_err *err)
{
	if (sp->n == 0)
		return vm_err_set(err, VM_ERR_INVALID, "spool is empty: nothing to remove");
	remove_oldest(sp);
	/* The removal must be durable too, or a crash could resend it (harmless:
	 * ids de-duplicate) — so a failed dir fsync is not an error. */
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%.*s/x", PATH_MAX - 8, sp->dir);
	(void)fs_sync_parent(path, NULL);
	return 0;
}

void health_spool_stats(const struct health_spool *sp, uint64_t *entries, uint64_t *bytes,
                        uint64_t *dropped, uint64_t *corrupt)
{
	*entries = sp->n;
	*bytes = sp->bytes;
	*dropped = sp->dropped;
	*corrupt = sp->corrupt;
}

int health_spool_usage(const char *spool_dir, uint64_t *entries, uint64_t *bytes,
                       struct vm_err *err)
{
	*entries = *bytes = 0;
	DIR *d = opendir(spool_dir);
	if (d == NULL)
		return vm_err_errno(err, errno == ENOENT ? VM_ERR_NOTFOUND : VM_ERR_IO, errno, "%s",
		                    spool_dir);
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		uint64_t seq;
		char path[PATH_MAX];
		struct stat st;
		if (parse_name(de->d_name, &seq) != 0)
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", spool_dir, de->d_name) >=
		        (int)sizeof(path) ||
		    stat(path, &st) != 0)
			continue;
		(*entries)++;
		*bytes += (uint64_t)st.st_size;
	}
	closedir(d);
	return 0;
}
