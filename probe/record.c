/* Large probe output on disk and records written as streams: the spill file
 * (runs/<id>.spill) where big result fields go while a probe runs, and the
 * record image the writer thread copies into the final record chunk by chunk,
 * so memory never grows with output. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/codec.h"
#include "core/fs.h"
#include "core/log.h"
#include "probe/internal.h"

#define MAX_SPILLS (PROBE_MAX_STEPS * 4)
#define COPY_CHUNK (64u << 10)

struct spill_ref {
	int step;
	char field[32];
	off_t off;
	uint64_t len; /* bytes of JSON value text at off */
};

/* Large result fields of one probe, as JSON value texts in runs/<id>.spill. */
struct probe_sink {
	int fd;
	char path[PATH_MAX + 64];
	off_t end;
	int step;
	bool open;
	bool quoted; /* the open field is a streamed string */
	off_t field_start;
	char field[32];
	uint8_t carry[3];
	size_t ncarry;
	struct spill_ref refs[MAX_SPILLS];
	int nrefs;
};

struct probe_sink *probe_sink_new(const char *dir, const char *id)
{
	struct probe_sink *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return NULL;
	s->fd = -1;
	snprintf(s->path, sizeof(s->path), "%s/%s.spill", dir, id);
	return s;
}

void probe_sink_free(struct probe_sink *s)
{
	probe_sink_discard(s);
	free(s);
}

static int sink_put(struct probe_sink *s, const void *data, size_t len, struct vm_err *err)
{
	if (fs_write_all(s->fd, data, len) != 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "write %s", s->path);
	s->end += (off_t)len;
	return 0;
}

static int sink_open_field(struct probe_sink *s, const char *name, bool quoted, struct vm_err *err)
{
	if (s->open || s->nrefs == MAX_SPILLS || strlen(name) >= sizeof(s->field))
		return vm_err_set(err, VM_ERR_INTERNAL, "too many spilled fields");
	if (s->fd < 0) {
		s->fd = open(s->path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (s->fd < 0)
			return vm_err_errno(err, VM_ERR_IO, errno, "create %s", s->path);
	}
	snprintf(s->field, sizeof(s->field), "%s", name);
	s->field_start = s->end;
	s->ncarry = 0;
	s->open = true;
	s->quoted = quoted;
	return quoted ? sink_put(s, "\"", 1, err) : 0;
}

int probe_sink_begin(struct probe_sink *s, const char *name, struct vm_err *err)
{
	return sink_open_field(s, name, true, err);
}

int probe_sink_write_b64(struct probe_sink *s, const void *data, size_t len, struct vm_err *err)
{
	const uint8_t *p = data;
	char out[4 * (COPY_CHUNK / 3) + 8];
	while (len > 0) {
		if (s->ncarry > 0 || len < 3) {
			while (s->ncarry < 3 && len > 0) {
				s->carry[s->ncarry++] = *p++;
				len--;
			}
			if (s->ncarry < 3)
				break;
			b64_encode(s->carry, 3, out, 0);
			s->ncarry = 0;
			if (sink_put(s, out, 4, err) != 0)
				return -1;
			continue;
		}
		size_t n = len - len % 3;
		if (n > 3 * (COPY_CHUNK / 3))
			n = 3 * (COPY_CHUNK / 3);
		size_t w = b64_encode(p, n, out, 0);
		if (sink_put(s, out, w, err) != 0)
			return -1;
		p += n;
		len -= n;
	}
	return 0;
}

int probe_sink_end(struct probe_sink *s, struct vm_err *err)
{
	char out[8];
	if (s->ncarry > 0) {
		size_t w = b64_encode(s->carry, s->ncarry, out, 0);
		s->ncarry = 0;
		if (sink_put(s, out, w, err) != 0)
			return -1;
	}
	if (s->quoted && sink_put(s, "\"", 1, err) != 0)
		return -1;
	struct spill_ref *r = &s->refs[s->nrefs++];
	r->step = s->step;
	snprintf(r->field, sizeof(r->field), "%s", s->field);
	r->off = s->field_start;
	r->len = (uint64_t)(s->end - s->field_start);
	s->open = false;
	return 0;
}

void probe_sink_set_step(struct probe_sink *s, int step)
{
	if (s != NULL)
		s->step = step;
}

bool probe_sink_has(const struct probe_sink *s, int step)
{
	for (int k = 0; s != NULL && k < s->nrefs; k++)
		if (s->refs[k].step == step)
			return true;
	return false;
}

void probe_sink_discard(struct probe_sink *s)
{
	if (s == NULL || s->fd < 0)
		return;
	close(s->fd);
	(void)unlink(s->path);
	s->fd = -1;
}

/* A field a step left open (it failed mid-way) is dropped. */
void probe_sink_abort_open(struct probe_sink *s)
{
	if (s == NULL || !s->open)
		return;
	s->open = false;
	s->end = s->field_start;
	if (ftruncate(s->fd, s->end) != 0 || lseek(s->fd, s->end, SEEK_SET) < 0)
		log_warn("probe", "%s: cannot truncate: %s", s->path, strerror(errno));
}

/* Moves the result's large strings (process output) to the sink, so that a
 * probe holds O(chunk) in memory however many steps it has. */
void probe_sink_spill_large(struct probe_sink *s, json_t *result)
{
	const char *key;
	json_t *v;
	void *tmp;
	json_object_foreach_safe(result, tmp, key, v)
	{
		if (!json_is_string(v) || json_string_length(v) < PROBE_SPILL_MIN)
			continue;
		char *text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
		struct vm_err err = {0};
		if (text == NULL || sink_open_field(s, key, false, &err) != 0 ||
		    sink_put(s, text, strlen(text), &err) != 0 || probe_sink_end(s, &err) != 0) {
			probe_sink_abort_open(s);
			free(text);
			continue; /* stays in memory: correct, only larger */
		}
		free(text);
		json_object_del(result, key);
	}
}

/* A record as the writer streams it: the small parts dumped under the lock,
 * the spilled fields copied from the spill file chunk by chunk. */
struct probe_image {
	char *head; /* the record without "steps" */
	char *steps[PROBE_MAX_STEPS];
	int nsteps;
	const struct probe_sink *sink; /* borrowed; NULL = nothing spilled */
	bool with_spills;              /* false: mark spilled fields as not persisted */
};

void probe_image_free(struct probe_image *img)
{
	if (img == NULL)
		return;
	free(img->head);
	for (int i = 0; i < img->nsteps; i++)
		free(img->steps[i]);
	free(img);
}

/* Called with the lock held: rec must not change while it is dumped. */
struct probe_image *probe_image_new(json_t *rec, const struct probe_sink *sink, bool with_spills)
{
	struct probe_image *img = calloc(1, sizeof(*img));
	if (img == NULL)
		return NULL;
	img->sink = sink;
	img->with_spills = with_spills;
	json_t *steps = json_incref(json_object_get(rec, "steps"));
	json_object_del(rec, "steps");
	img->head = json_dumps(rec, JSON_COMPACT);
	json_object_set_new(rec, "steps", steps != NULL ? steps : json_array());
	bool ok = img->head != NULL && strlen(img->head) >= 2;
	size_t i;
	json_t *st;
	json_array_foreach(json_object_get(rec, "steps"), i, st)
	{
		if (i >= PROBE_MAX_STEPS)
			break;
		img->steps[img->nsteps] = json_dumps(st, JSON_COMPACT);
		ok = ok && img->steps[img->nsteps] != NULL && strlen(img->steps[img->nsteps]) >= 2;
		img->nsteps++;
	}
	if (!ok) {
		probe_image_free(img);
		return NULL;
	}
	return img;
}

static int put(int fd, const void *data, size_t len, struct vm_err *err)
{
	return probe_write_all(fd, data, len, err);
}

static int copy_range(int out, int in, off_t off, uint64_t len, char *buf, struct vm_err *err)
{
	while (len > 0) {
		size_t want = len < COPY_CHUNK ? (size_t)len : COPY_CHUNK;
		ssize_t n = pread(in, buf, want, off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return vm_err_errno(err, VM_ERR_IO, n < 0 ? errno : EIO,
			                    "read spilled output");
		if (put(out, buf, (size_t)n, err) != 0)
			return -1;
		off += n;
		len -= (uint64_t)n;
	}
	return 0;
}

/* probe_write_fn: {head…,"steps":[{step…,"spilled":…},…]} */
int probe_image_write(void *ctx, int fd, struct vm_err *err)
{
	const struct probe_image *img = ctx;
	char *buf = img->with_spills && img->sink != NULL ? malloc(COPY_CHUNK) : NULL;
	if (img->with_spills && img->sink != NULL && buf == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	bool has_head = strcmp(img->head, "{}") != 0;
	int rc = put(fd, img->head, strlen(img->head) - 1, err);
	if (rc == 0)
		rc = put(fd, has_head ? ",\"steps\":[" : "\"steps\":[", has_head ? 10 : 9, err);
	for (int i = 0; rc == 0 && i < img->nsteps; i++) {
		const char *t = img->steps[i];
		bool empty = strcmp(t, "{}") == 0, lost = false;
		rc = put(fd, i ? "," : "", i ? 1 : 0, err);
		if (rc == 0)
			rc = put(fd, t, strlen(t) - 1, err);
		for (int k = 0; rc == 0 && img->sink != NULL && k < img->sink->nrefs; k++) {
			const struct spill_ref *r = &img->sink->refs[k];
			if (r->step != i)
				continue;
			if (!img->with_spills) {
				lost = true;
				continue;
			}
			char name[48];
			int n =
			    snprintf(name, sizeof(name), "%s\"%s\":", empty ? "" : ",", r->field);
			empty = false;
			rc = put(fd, name, (size_t)n, err);
			if (rc == 0)
				rc = copy_range(fd, img->sink->fd, r->off, r->len, buf, err);
		}
		if (rc == 0 && lost)
			rc = put(fd,
			         empty ? "\"output_not_persisted\":true"
			               : ",\"output_not_persisted\":true",
			         empty ? 27 : 28, err);
		if (rc == 0)
			rc = put(fd, "}", 1, err);
	}
	if (rc == 0)
		rc = put(fd, "]}", 2, err);
	free(buf);
	return rc;
}
