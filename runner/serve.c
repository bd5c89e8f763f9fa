/* The runner's session: a bounded line reader on in_fd, one command at a
 * time through probe_run_step, event and done lines on out_fd, the
 * idempotency cache, and the TTL and idle limits. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/codec.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/time.h"
#include "probe/probe.h"
#include "runner/runner.h"

#define READ_CHUNK  (64u << 10)
#define EVENT_CHUNK 4096 /* output bytes per event line */

struct cached {
	char key[RUNNER_IDEM_MAX + 1];
	uint8_t hash[32];
	json_t *done;
	size_t size;
};

struct session {
	const struct runner_opts *o;
	int64_t end_ms; /* the TTL */
	struct cached cache[RUNNER_CACHE_MAX];
	int ncache;
	size_t cache_bytes;
	const char *cur_id; /* the command running now, for its events */
	bool out_failed;
};

const char *runner_end_name(enum runner_end why)
{
	static const char *const names[] = {"eof", "ttl", "idle", "signal", "output_closed"};
	return (size_t)why < sizeof(names) / sizeof(names[0]) ? names[why] : "unknown";
}

int runner_send(int fd, json_t *msg)
{
	char *text = msg != NULL ? json_dumps(msg, JSON_COMPACT) : NULL;
	json_decref(msg);
	if (text == NULL)
		return -1;
	size_t n = strlen(text);
	int rc = fs_write_all(fd, text, n) == 0 && fs_write_all(fd, "\n", 1) == 0 ? 0 : -1;
	free(text);
	return rc;
}

static void emit_line(struct session *s, json_t *msg)
{
	if (!s->out_failed && runner_send(s->o->out_fd, msg) != 0)
		s->out_failed = true;
	else if (s->out_failed)
		json_decref(msg);
}

static json_t *error_obj(const char *code, const char *message, const char *path)
{
	json_t *e = json_pack("{s:s,s:s}", "code", code, "message", message);
	if (path != NULL && path[0] != '\0')
		json_object_set_new(e, "path", json_string(path));
	return e;
}

/* A line that is not a command: the runner goes on. */
static void send_error(struct session *s, const char *id, const char *code, const char *message,
                       const char *path)
{
	json_t *m =
	    json_pack("{s:s,s:o}", "type", "error", "error", error_obj(code, message, path));
	if (id != NULL)
		json_object_set_new(m, "id", json_string(id));
	emit_line(s, m);
}

/* Text stays text; bytes that are not UTF-8 (or a chunk cut inside a
 * character) go as base64. */
static void set_data(json_t *ev, const char *data, size_t len)
{
	json_t *t = json_stringn(data, len);
	if (t != NULL) {
		json_object_set_new(ev, "data", t);
		return;
	}
	char *b = malloc(b64_encoded_len(len) + 1);
	if (b == NULL)
		return;
	b64_encode((const uint8_t *)data, len, b, 0);
	json_object_set_new(ev, "data_b64", json_string(b));
	free(b);
}

static void on_output(void *c, int stream, const char *data, size_t len)
{
	struct session *s = c;
	for (size_t off = 0; off < len; off += EVENT_CHUNK) {
		size_t n = len - off < EVENT_CHUNK ? len - off : EVENT_CHUNK;
		const char *name = stream == 1 ? "stdout" : "stderr";
		json_t *ev = json_pack("{s:s,s:s,s:s,s:s,s:s}", "type", "event", "id", s->cur_id,
		                       "level", "info", "message", name, "stream", name);
		set_data(ev, data + off, n);
		emit_line(s, ev);
	}
}

static void on_event(void *c, const char *level, const char *message, int64_t current,
                     int64_t total, const char *unit)
{
	struct session *s = c;
	json_t *ev = json_pack("{s:s,s:s,s:s}", "type", "event", "id", s->cur_id, "level", level);
	set_data(ev, message, strlen(message));
	/* the message is text by contract; a non-UTF-8 one was encoded above */
	json_t *d = json_object_get(ev, "data");
	if (d != NULL) {
		json_object_set(ev, "message", d);
		json_object_del(ev, "data");
	}
	if (current >= 0) {
		json_t *p = json_pack("{s:I}", "current", (json_int_t)current);
		if (total >= 0)
			json_object_set_new(p, "total", json_integer((json_int_t)total));
		if (unit != NULL)
			json_object_set_new(p, "unit", json_string(unit));
		json_object_set_new(ev, "progress", p);
	}
	emit_line(s, ev);
}

static struct cached *cache_find(struct session *s, const char *key)
{
	for (int i = 0; i < s->ncache; i++)
		if (strcmp(s->cache[i].key, key) == 0)
			return &s->cache[i];
	return NULL;
}

/* Bounded: the oldest entries go first when the count or the bytes are full. */
static void cache_put(struct session *s, const struct runner_cmd *cmd, json_t *done)
{
	char *text = json_dumps(done, JSON_COMPACT);
	size_t size = text ? strlen(text) : 0;
	free(text);
	if (text == NULL || size > RUNNER_CACHE_BYTES)
		return;
	while (s->ncache > 0 &&
	       (s->ncache == RUNNER_CACHE_MAX || s->cache_bytes + size > RUNNER_CACHE_BYTES)) {
		s->cache_bytes -= s->cache[0].size;
		json_decref(s->cache[0].done);
		memmove(&s->cache[0], &s->cache[1], (size_t)(s->ncache - 1) * sizeof(s->cache[0]));
		s->ncache--;
	}
	struct cached *c = &s->cache[s->ncache++];
	snprintf(c->key, sizeof(c->key), "%s", cmd->idempotency_key);
	memcpy(c->hash, cmd->hash, sizeof(c->hash));
	c->done = json_incref(done);
	c->size = size;
	s->cache_bytes += size;
}

static void run_command(struct session *s, const struct runner_cmd *cmd)
{
	const struct runner_opts *o = s->o;
	if (cmd->idempotency_key != NULL) {
		struct cached *c = cache_find(s, cmd->idempotency_key);
		if (c != NULL && memcmp(c->hash, cmd->hash, sizeof(c->hash)) != 0) {
			emit_line(
			    s, json_pack("{s:s,s:s,s:b,s:i,s:o}", "type", "done", "id", cmd->id,
			                 "ok", 0, "duration_ms", 0, "error",
			                 error_obj("idempotency_conflict",
			                           "idempotency_key was used in this session for "
			                           "a different command",
			                           "idempotency_key")));
			return;
		}
		if (c != NULL) {
			/* the cached outcome, under this command's id */
			json_t *d = json_deep_copy(c->done);
			json_object_set_new(d, "id", json_string(cmd->id));
			json_object_set_new(d, "replayed", json_true());
			emit_line(s, d);
			return;
		}
	}
	s->cur_id = cmd->id;
	int64_t t0 = time_mono_ms();
	json_t *st_type = json_object_get(cmd->step, "type");
	char startmsg[128];
	snprintf(startmsg, sizeof(startmsg), "running %.64s",
	         json_is_string(st_type) ? json_string_value(st_type) : "step");
	on_event(s, "info", startmsg, -1, -1, NULL);

	struct probe_run_opts ro = {
	    .work_dir = o->work_dir,
	    .output_cap = o->output_cap,
	    .grace_ms = o->grace_ms,
	    .default_timeout_ms = o->default_timeout_ms,
	    .allow = o->allow,
	    .deadline_ms = s->end_ms,
	    .cancel = o->stop,
	    .cgroup = o->cgroup,
	    .on_output = on_output,
	    .on_event = on_event,
	    .ctx = s,
	};
	json_t *result = NULL;
	bool ok = false;
	char path[RUNNER_PATH_MAX];
	struct vm_err err = {0};
	int rc =
	    probe_run_step(cmd->step, cmd->timeout, &ro, &result, &ok, path, sizeof(path), &err);
	json_t *done = json_pack("{s:s,s:s,s:b,s:I}", "type", "done", "id", cmd->id, "ok", ok,
	                         "duration_ms", (json_int_t)(time_mono_ms() - t0));
	if (rc == 0)
		json_object_set_new(done, "result", result);
	else
		json_object_set_new(
		    done, "error",
		    error_obj(rc == PROBE_E_TOO_LARGE ? "too_large" : "invalid_request", err.msg,
		              path));
	if (cmd->idempotency_key != NULL)
		cache_put(s, cmd, done);
	emit_line(s, done);
	s->cur_id = NULL;
}

static void handle_line(struct session *s, const char *line, size_t len)
{
	while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' '))
		len--;
	if (len == 0)
		return; /* blank lines are keep-alives */
	struct runner_cmd cmd;
	char path[RUNNER_PATH_MAX];
	struct vm_err err = {0};
	if (runner_line_parse(line, len, &cmd, path, sizeof(path), &err) != 0)
		send_error(s, cmd.id, strcmp(path, "$") == 0 ? "malformed_line" : "invalid_command",
		           err.msg, path);
	else
		run_command(s, &cmd);
	runner_cmd_free(&cmd);
}

/* The capabilities document (the same as GET /v1/capabilities) plus the
 * protocol's own fields; step_types as names, their schemas under step_schemas. */
static json_t *ready_line(const struct runner_opts *o)
{
	json_t *r = probe_capabilities(NULL);
	json_t *types = json_array();
	if (r == NULL || types == NULL) {
		json_decref(r);
		json_decref(types);
		return NULL;
	}
	size_t i;
	json_t *t;
	json_array_foreach(json_object_get(r, "step_types"), i, t)
		json_array_append(types, json_object_get(t, "type"));
	json_object_set(r, "step_schemas", json_object_get(r, "step_types"));
	json_object_set_new(r, "step_types", types);
	json_object_set(r, "arch", json_object_get(r, "architecture"));
	if (o->version != NULL)
		json_object_set_new(r, "version", json_string(o->version));
	json_object_set_new(r, "type", json_string("ready"));
	json_object_set_new(r, "protocol", json_integer(RUNNER_PROTOCOL));
	json_object_set_new(r, "pid", json_integer(getpid()));
	json_object_set_new(r, "ttl_ms", json_integer((json_int_t)o->ttl_ms));
	json_object_set_new(r, "line_max", json_integer((json_int_t)o->line_max));
	return r;
}

int runner_serve(const struct runner_opts *o, enum runner_end *why, struct vm_err *err)
{
	struct session *s = calloc(1, sizeof(*s));
	size_t max = o->line_max ? o->line_max : RUNNER_LINE_MAX;
	char *chunk = malloc(READ_CHUNK);
	char *line = NULL; /* grows up to max, never beyond */
	size_t len = 0, cap = 0;
	bool discarding = false;
	int rc = 0;
	if (s == NULL || chunk == NULL) {
		rc = vm_err_set(err, VM_ERR_NOMEM, "out of memory");
		goto out;
	}
	s->o = o;
	int64_t start = time_mono_ms();
	s->end_ms = start + (int64_t)o->ttl_ms;
	int64_t idle_end = start + (int64_t)o->idle_ms;
	emit_line(s, ready_line(o));
	for (;;) {
		if (s->out_failed) {
			*why = RUNNER_END_IO;
			break;
		}
		if (o->stop != NULL && atomic_load(o->stop)) {
			*why = RUNNER_END_SIGNAL;
			break;
		}
		int64_t now = time_mono_ms();
		if (now >= s->end_ms || now >= idle_end) {
			*why = now >= s->end_ms ? RUNNER_END_TTL : RUNNER_END_IDLE;
			break;
		}
		int64_t wait = (s->end_ms < idle_end ? s->end_ms : idle_end) - now;
		struct pollfd pfd = {o->in_fd, POLLIN, 0};
		/* wake now and then: a signal's flag is checked between polls */
		int pr = poll(&pfd, 1, (int)(wait < 200 ? wait : 200));
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr < 0) {
			rc = vm_err_errno(err, VM_ERR_IO, errno, "poll stdin");
			goto out;
		}
		if (pr == 0)
			continue;
		ssize_t n = read(o->in_fd, chunk, READ_CHUNK);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0) {
			/* a last line without its newline still counts */
			if (len > 0 && !discarding)
				handle_line(s, line, len);
			*why = RUNNER_END_EOF;
			break;
		}
		for (size_t pos = 0; pos < (size_t)n;) {
			char *nl = memchr(chunk + pos, '\n', (size_t)n - pos);
			size_t seg = nl ? (size_t)(nl - (chunk + pos)) : (size_t)n - pos;
			if (!discarding && len + seg > max) {
				/* refused without holding it: the rest is skipped up to its newline
				 */
				discarding = true;
				len = 0;
			}
			if (!discarding) {
				if (len + seg > cap) {
					size_t ncap = cap ? cap : READ_CHUNK;
					while (ncap < len + seg)
						ncap *= 2;
					ncap = ncap < max ? ncap : max;
					char *g = realloc(line, ncap);
					if (g == NULL) {
						rc = vm_err_set(err, VM_ERR_NOMEM, "out of memory");
						goto out;
					}
					line = g;
					cap = ncap;
				}
				memcpy(line + len, chunk + pos, seg);
				len += seg;
			}
			pos += seg;
			if (nl == NULL)
				break;
			pos++; /* the newline */
			if (discarding) {
				char msg[96];
				snprintf(msg, sizeof(msg), "line longer than %zu bytes, skipped",
				         max);
				send_error(s, NULL, "line_too_long", msg, "$");
				discarding = false;
			} else {
				handle_line(s, line, len);
			}
			len = 0;
			idle_end = time_mono_ms() + (int64_t)o->idle_ms;
			if (s->out_failed || (o->stop != NULL && atomic_load(o->stop)) ||
			    time_mono_ms() >= s->end_ms)
				break; /* the loop above says why */
		}
	}
out:
	if (s != NULL)
		for (int i = 0; i < s->ncache; i++)
			json_decref(s->cache[i].done);
	free(s);
	free(chunk);
	free(line);
	return rc;
}
