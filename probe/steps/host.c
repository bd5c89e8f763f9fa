/* What every host step shares (declared in steps.h, "host steps"): the check
 * flag and result shape, text files read and replaced by the directory-fd
 * rule, a bounded unified diff, backups restored byte-identical, running a
 * host tool, and the name validators of the tools the steps drive. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/codec.h"
#include "core/fs.h"
#include "core/proc.h"
#include "core/time.h"
#include "probe/steps/steps.h"

#define DIFF_CONTEXT 3
/* the LCS table of a diff's changed middle; larger middles are shown as a
 * whole removal plus addition (still a correct diff, only not minimal) */
#define DIFF_CELLS_MAX (1u << 20)

int host_bad_field(const char *path, const char *field, char *epath, size_t ecap,
                   struct vm_err *err, const char *why)
{
	snprintf(epath, ecap, "%s.%s", path, field);
	return vm_err_set(err, VM_ERR_INVALID, "%s: %s", epath, why);
}

int host_parse_common(json_t *obj, struct probe_step_req *st, const char *const *known,
                      const char *path, char *epath, size_t ecap, struct vm_err *err)
{
	const char *key;
	json_t *v;
	json_object_foreach(obj, key, v)
	{
		if (strcmp(key, "type") == 0 || strcmp(key, "name") == 0 ||
		    strcmp(key, "check") == 0)
			continue;
		const char *const *k = known;
		while (k != NULL && *k != NULL && strcmp(*k, key) != 0)
			k++;
		if (k == NULL || *k == NULL) {
			char name[80];
			snprintf(name, sizeof(name), "%.64s", key);
			name[utf8_cut(name, strlen(name))] = '\0';
			return host_bad_field(path, name, epath, ecap, err, "unknown field");
		}
	}
	return probe_field_bool(obj, "check", &st->check, path, epath, ecap, err);
}

void host_result_init(json_t *result, const struct probe_step_req *st)
{
	json_object_set_new(result, "changed", json_false());
	json_object_set_new(result, "check", json_boolean(st->check));
	json_object_set_new(result, "changes", json_array());
}

json_t *host_change(json_t *result, const char *what, json_t *before, json_t *after)
{
	json_t *c = json_object();
	json_object_set_new(c, "what", json_string(what));
	json_object_set_new(c, "before", before != NULL ? before : json_null());
	json_object_set_new(c, "after", after != NULL ? after : json_null());
	json_t *list = json_object_get(result, "changes");
	if (!json_is_array(list)) {
		list = json_array();
		json_object_set_new(result, "changes", list);
	}
	json_array_append_new(list, c);
	json_object_set_new(result, "changed", json_true());
	return c;
}

static json_t *str_or_null(const char *s)
{
	return s != NULL ? json_string(s) : NULL;
}

json_t *host_change_str(json_t *result, const char *what, const char *before, const char *after)
{
	return host_change(result, what, str_or_null(before), str_or_null(after));
}

enum probe_step_status host_fail(json_t *result, const char *code, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	msg[utf8_cut(msg, strlen(msg))] = '\0';
	/* tools' messages are host bytes: never let invalid UTF-8 drop the field */
	probe_json_set_bytes(result, "error", msg, strlen(msg));
	json_object_set_new(result, "error_code", json_string(code));
	return STEP_FAILED;
}

/* --- diff ------------------------------------------------------------------------ */

struct line {
	const char *p;
	size_t len; /* without the newline */
	bool nl;    /* ends with '\n' */
};

static struct line *split_lines(const char *s, size_t len, size_t *n)
{
	size_t count = 0;
	for (size_t i = 0; i < len; i++)
		count += s[i] == '\n';
	count += len > 0 && s[len - 1] != '\n';
	struct line *l = calloc(count + 1, sizeof(*l));
	if (l == NULL)
		return NULL;
	size_t k = 0, start = 0;
	for (size_t i = 0; i <= len; i++) {
		if (i < len && s[i] != '\n')
			continue;
		if (i == len && start == len)
			break;
		l[k++] = (struct line){s + start, i - start, i < len};
		start = i + 1;
	}
	*n = k;
	return l;
}

static bool line_eq(const struct line *a, const struct line *b)
{
	return a->len == b->len && a->nl == b->nl && memcmp(a->p, b->p, a->len) == 0;
}

/* One edit: ' ' both, '-' only a (index ai), '+' only b (index bi). */
struct op {
	char kind;
	size_t ai, bi;
};

/* The edit script of a[0..n) and b[0..m): common prefix and suffix, and
 * between them an LCS when small enough. */
static struct op *edit_script(const struct line *a, size_t n, const struct line *b, size_t m,
                              size_t *nops)
{
	struct op *ops = malloc((n + m + 1) * sizeof(*ops));
	if (ops == NULL)
		return NULL;
	size_t pre = 0, suf = 0, k = 0;
	while (pre < n && pre < m && line_eq(&a[pre], &b[pre]))
		pre++;
	while (suf < n - pre && suf < m - pre && line_eq(&a[n - 1 - suf], &b[m - 1 - suf]))
		suf++;
	for (size_t i = 0; i < pre; i++)
		ops[k++] = (struct op){' ', i, i};
	size_t an = n - pre - suf, bn = m - pre - suf;
	const struct line *ma = a + pre, *mb = b + pre;
	/* lcs[i][j]: the LCS length of ma[i..] and mb[j..]; it never exceeds
	 * min(an, bn) <= sqrt(DIFF_CELLS_MAX), so 16 bits are enough */
	uint16_t *lcs = NULL;
	if (an > 0 && bn > 0 && (an + 1) * (bn + 1) <= DIFF_CELLS_MAX)
		lcs = calloc((an + 1) * (bn + 1), sizeof(*lcs));
	if (lcs != NULL) {
		size_t w = bn + 1;
		for (size_t i = an; i-- > 0;)
			for (size_t j = bn; j-- > 0;) {
				uint16_t d = lcs[(i + 1) * w + j], r = lcs[i * w + j + 1];
				lcs[i * w + j] = line_eq(&ma[i], &mb[j]) ? (uint16_t)(lcs[(i + 1) * w + j + 1] + 1)
				                                         : (d >= r ? d : r);
			}
		size_t i = 0, j = 0;
		while (i < an || j < bn) {
			if (i < an && j < bn && line_eq(&ma[i], &mb[j])) {
				ops[k++] = (struct op){' ', pre + i++, pre + j++};
			} else if (j >= bn || (i < an && lcs[(i + 1) * w + j] >= lcs[i * w + j + 1])) {
				ops[k++] = (struct op){'-', pre + i++, 0};
			} else {
				ops[k++] = (struct op){'+', 0, pre + j++};
			}
		}
		free(lcs);
	} else {
		for (size_t i = 0; i < an; i++)
			ops[k++] = (struct op){'-', pre + i, 0};
		for (size_t j = 0; j < bn; j++)
			ops[k++] = (struct op){'+', 0, pre + j};
	}
	for (size_t i = 0; i < suf; i++)
		ops[k++] = (struct op){' ', n - suf + i, m - suf + i};
	*nops = k;
	return ops;
}

static int put_line(struct buf *out, char kind, const struct line *l)
{
	if (buf_append(out, &kind, 1) != 0 || buf_append(out, l->p, l->len) != 0 ||
	    buf_append(out, "\n", 1) != 0)
		return -1;
	if (!l->nl && buf_printf(out, "\\ No newline at end of file\n") != 0)
		return -1;
	return 0;
}

/* Line numbers of a hunk's first op (ai or bi of the nearest op having one). */
static void hunk_starts(const struct op *ops, size_t from, size_t to, size_t *as, size_t *bs,
                        size_t *ac, size_t *bc)
{
	*ac = *bc = 0;
	bool ha = false, hb = false;
	size_t a0 = 0, b0 = 0;
	for (size_t i = from; i < to; i++) {
		if (ops[i].kind != '+') {
			if (!ha)
				a0 = ops[i].ai;
			ha = true;
			(*ac)++;
		}
		if (ops[i].kind != '-') {
			if (!hb)
				b0 = ops[i].bi;
			hb = true;
			(*bc)++;
		}
	}
	/* an empty side starts at the line before the hunk (0 = before the first) */
	if (!ha) {
		a0 = 0;
		for (size_t i = from; i-- > 0;)
			if (ops[i].kind != '+') {
				a0 = ops[i].ai + 1;
				break;
			}
	} else {
		a0++;
	}
	if (!hb) {
		b0 = 0;
		for (size_t i = from; i-- > 0;)
			if (ops[i].kind != '-') {
				b0 = ops[i].bi + 1;
				break;
			}
	} else {
		b0++;
	}
	*as = a0;
	*bs = b0;
}

/* Writes the whole diff into out (unbounded here; host_diff cuts it). */
static int diff_write(const struct line *a, const struct line *b, const struct op *ops, size_t n,
                      const char *label, struct buf *out)
{
	size_t i = 0;
	bool header = false;
	while (i < n) {
		while (i < n && ops[i].kind == ' ')
			i++;
		if (i == n)
			break;
		/* a hunk: from DIFF_CONTEXT before this change to DIFF_CONTEXT after
		 * the last change that is at most 2 * DIFF_CONTEXT equal lines away */
		size_t from = i >= DIFF_CONTEXT ? i - DIFF_CONTEXT : 0, end = i;
		for (;;) {
			while (end < n && ops[end].kind != ' ')
				end++;
			size_t eq = end;
			while (eq < n && ops[eq].kind == ' ')
				eq++;
			if (eq < n && eq - end <= 2 * DIFF_CONTEXT) {
				end = eq;
				continue;
			}
			break;
		}
		size_t to = end + DIFF_CONTEXT < n ? end + DIFF_CONTEXT : n;
		/* keep the trailing context to equal ops only */
		size_t t = end;
		while (t < to && ops[t].kind == ' ')
			t++;
		to = t;
		if (!header && buf_printf(out, "--- a/%s\n+++ b/%s\n", label, label) != 0)
			return -1;
		header = true;
		size_t as, bs, ac, bc;
		hunk_starts(ops, from, to, &as, &bs, &ac, &bc);
		if (buf_printf(out, "@@ -%zu,%zu +%zu,%zu @@\n", as, ac, bs, bc) != 0)
			return -1;
		for (size_t k = from; k < to; k++) {
			const struct line *l = ops[k].kind == '+' ? &b[ops[k].bi] : &a[ops[k].ai];
			if (put_line(out, ops[k].kind, l) != 0)
				return -1;
		}
		i = to;
	}
	return 0;
}

int host_diff(const char *a, size_t alen, const char *b, size_t blen, const char *label,
              size_t max, struct buf *out)
{
	buf_free(out);
	size_t n = 0, m = 0, nops = 0;
	struct line *la = split_lines(a != NULL ? a : "", a != NULL ? alen : 0, &n);
	struct line *lb = split_lines(b != NULL ? b : "", b != NULL ? blen : 0, &m);
	struct op *ops = la != NULL && lb != NULL ? edit_script(la, n, lb, m, &nops) : NULL;
	int rc = -1;
	if (ops == NULL)
		goto out;
	/* written whole into an unbounded buffer (a diff of two bounded texts is
	 * at most a few times their size), then cut at max */
	struct buf full;
	buf_init(&full, SIZE_MAX);
	if (diff_write(la, lb, ops, nops, label, &full) != 0) {
		buf_free(&full);
		goto out;
	}
	static const char cut[] = "\\ diff truncated\n";
	rc = 0;
	if (full.len == 0) {
		rc = 0; /* equal texts; an empty buf has no data pointer to pass on */
	} else if (full.len <= max) {
		rc = buf_append(out, buf_data(&full), full.len) == 0 ? 0 : -1;
	} else {
		size_t keep = max > sizeof(cut) ? max - (sizeof(cut) - 1) : 0;
		/* cut at a line end so the last line is whole */
		while (keep > 0 && buf_data(&full)[keep - 1] != '\n')
			keep--;
		rc = buf_append(out, buf_data(&full), keep) == 0 && buf_append(out, cut, sizeof(cut) - 1) == 0
		         ? 1
		         : -1;
	}
	buf_free(&full);
out:
	free(ops);
	free(la);
	free(lb);
	return rc;
}

/* --- files ---------------------------------------------------------------------- */

int host_file_read(const char *path, size_t max, struct host_file *out, struct vm_err *err)
{
	memset(out, 0, sizeof(*out));
	char leaf[FS_NAME_MAX];
	int dirfd = fs_open_parent(path, leaf, err);
	if (dirfd < 0) {
		/* a missing directory means a missing file */
		if (err->code == VM_ERR_NOTFOUND)
			return 0;
		return -1;
	}
	struct stat sb;
	int fd = fs_open_at(dirfd, leaf, &sb, err);
	close(dirfd);
	if (fd < 0)
		return err->code == VM_ERR_NOTFOUND ? 0 : -1;
	int rc = fs_read_fd(fd, path, max, &out->data, &out->len, err);
	close(fd);
	if (rc != 0)
		return -1;
	out->exists = true;
	out->mode = sb.st_mode & 07777;
	out->uid = sb.st_uid;
	out->gid = sb.st_gid;
	return 0;
}

void host_file_free(struct host_file *f)
{
	if (f == NULL)
		return;
	free(f->data);
	memset(f, 0, sizeof(*f));
}

int host_file_write(const char *path, const void *data, size_t len, mode_t mode, uid_t uid,
                    gid_t gid, struct vm_err *err)
{
	char leaf[FS_NAME_MAX];
	int dirfd = fs_open_parent(path, leaf, err);
	if (dirfd < 0)
		return -1;
	struct fs_write_opts o = {.mode = mode, .set_ids = true, .uid = uid, .gid = gid};
	int rc = fs_write_at(dirfd, leaf, data, len, &o, err);
	close(dirfd);
	return rc;
}

int host_file_remove(const char *path, struct vm_err *err)
{
	char leaf[FS_NAME_MAX];
	int dirfd = fs_open_parent(path, leaf, err);
	if (dirfd < 0)
		return err->code == VM_ERR_NOTFOUND ? 0 : -1;
	int rc = fs_remove_at(dirfd, leaf, err);
	close(dirfd);
	return rc;
}

static json_t *digest_of(const char *data, size_t len)
{
	uint8_t d[SHA256_LEN];
	char hex[2 * SHA256_LEN + 1];
	sha256_buf(data, len, d);
	hex_encode(d, sizeof(d), hex);
	return json_string(hex);
}

json_t *host_change_file(json_t *result, const char *path, const struct host_file *before,
                         const char *after, size_t after_len)
{
	bool had = before != NULL && before->exists;
	json_t *c = host_change(result, "file", had ? digest_of(before->data, before->len) : NULL,
	                        after != NULL ? digest_of(after, after_len) : NULL);
	json_object_set_new(c, "path", json_string(path));
	struct buf d;
	buf_init(&d, HOST_DIFF_MAX);
	const char *label = path[0] == '/' ? path + 1 : path;
	if (host_diff(had ? before->data : NULL, had ? before->len : 0, after, after_len, label,
	              HOST_DIFF_MAX, &d) >= 0)
		probe_json_set_bytes(c, "diff", d.len > 0 ? (const char *)buf_data(&d) : "", d.len);
	buf_free(&d);
	return c;
}

/* --- backups -------------------------------------------------------------------- */

int host_backup_take(struct host_backup *b, const char *path, size_t max, struct vm_err *err)
{
	memset(b, 0, sizeof(*b));
	if (strlen(path) >= sizeof(b->path))
		return vm_err_set(err, VM_ERR_INVALID, "%s: path too long", path);
	memcpy(b->path, path, strlen(path) + 1);
	return host_file_read(path, max, &b->f, err);
}

int host_backup_restore(const struct host_backup *b, struct vm_err *err)
{
	if (!b->f.exists)
		return host_file_remove(b->path, err);
	return host_file_write(b->path, b->f.data, b->f.len, b->f.mode, b->f.uid, b->f.gid, err);
}

void host_backup_free(struct host_backup *b)
{
	if (b != NULL)
		host_file_free(&b->f);
}

/* --- tools ---------------------------------------------------------------------- */

#define HOST_ENV_MAX 16
#define QUIET_MS     1500

/* The tool's output goes to the step's callback; quiet spells get a heartbeat. */
struct run_ctx {
	const struct probe_step_ctx *ctx;
	const struct host_cmd *c;
	int64_t start, last;
};

static void run_output(void *p, enum proc_stream stream, const char *data, size_t len)
{
	struct run_ctx *r = p;
	r->last = time_mono_ms();
	if (r->c->on_output != NULL)
		r->c->on_output(r->c->out_ctx, stream, data, len);
}

/* polled by proc_run every tick: never stops the run, only reports */
static bool run_tick(void *p)
{
	struct run_ctx *r = p;
	int64_t now = time_mono_ms();
	if (now - r->last >= QUIET_MS) {
		r->last = now;
		probe_step_event(r->ctx, "info", NULL, "%s: running (%lld s)",
		                 r->c->label != NULL ? r->c->label : r->c->argv[0],
		                 (long long)((now - r->start) / 1000));
	}
	return false;
}

bool host_wait(const struct probe_step_ctx *ctx, int64_t ms)
{
	int64_t end = time_mono_ms() + ms;
	for (;;) {
		if (ctx->cancel != NULL && atomic_load(ctx->cancel))
			return false;
		int64_t now = time_mono_ms();
		if (ctx->deadline_ms > 0 && now >= ctx->deadline_ms)
			return false;
		if (now >= end)
			return true;
		int64_t step = end - now < 50 ? end - now : 50;
		struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)step * 1000000L};
		nanosleep(&ts, NULL);
	}
}

int host_run(const struct probe_step_ctx *ctx, const struct host_cmd *c, struct proc_result *res,
             struct vm_err *err)
{
	const char *envp[HOST_ENV_MAX + 3] = {"PATH=" PROC_DEFAULT_PATH, "LC_ALL=C"};
	size_t ne = 2;
	for (size_t i = 0; c->env != NULL && c->env[i] != NULL; i++) {
		if (ne >= HOST_ENV_MAX + 2)
			return vm_err_set(err, VM_ERR_INTERNAL, "too many environment variables");
		envp[ne++] = c->env[i];
	}
	envp[ne] = NULL;
	struct run_ctx rc = {ctx, c, time_mono_ms(), time_mono_ms()};
	struct proc_spec spec = {
	    .argv = (char *const *)c->argv,
	    .envp = (char *const *)envp,
	    .flags = PROC_SEARCH_PATH | PROC_DIE_WITH_PARENT,
	    .cwd = "/",
	    .stdin_data = c->stdin_data,
	    .stdin_len = c->stdin_len,
	    .deadline_ms = ctx->deadline_ms,
	    .grace_ms = ctx->grace_ms,
	    .out_cap = c->out_cap != 0 ? c->out_cap : HOST_OUT_CAP,
	    .cancel = ctx->cancel,
	    .on_output = run_output,
	    .ctx = &rc,
	    .stop = run_tick,
	    .cgroup = ctx->cgroup,
	    .limits = ctx->limits,
	};
	return proc_run(&spec, res, err);
}

enum probe_step_status host_fail_proc(json_t *result, const char *code, const char *tool,
                                      const struct proc_result *res)
{
	char how[128];
	proc_result_describe(res, how, sizeof(how));
	if (res->timed_out || res->canceled) {
		host_fail(result, res->timed_out ? "timeout" : "canceled", "%s: %s", tool, how);
		return res->timed_out ? STEP_TIMED_OUT : STEP_CANCELED;
	}
	/* the last non-empty line of stderr (else stdout) says why */
	const char *s = res->err_len > 0 ? res->err : res->out;
	size_t len = res->err_len > 0 ? res->err_len : res->out_len;
	while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == '\r' || s[len - 1] == ' '))
		len--;
	size_t start = len;
	while (start > 0 && s[start - 1] != '\n')
		start--;
	return host_fail(result, code, "%s: %s%s%.*s", tool, how, len > start ? ": " : "",
	                 (int)(len - start > 512 ? 512 : len - start), s != NULL ? s + start : "");
}

const char *host_next_line(const char *data, size_t size, size_t *off, size_t *len)
{
	if (*off >= size)
		return NULL;
	const char *line = data + *off;
	const char *nl = memchr(line, '\n', size - *off);
	*len = nl != NULL ? (size_t)(nl - line) : size - *off;
	*off += *len + 1;
	return line;
}

/* --- names ---------------------------------------------------------------------- */

static bool is_lower(char c)
{
	return c >= 'a' && c <= 'z';
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool is_alnum(char c)
{
	return is_lower(c) || is_digit(c) || (c >= 'A' && c <= 'Z');
}

bool host_valid_pkg_name(const char *manager, const char *s)
{
	bool apt = manager == NULL || strcmp(manager, "apt") == 0;
	size_t n = s != NULL ? strlen(s) : 0;
	if (n < (apt ? 2u : 1u) || n > 128)
		return false;
	if (apt ? !(is_lower(s[0]) || is_digit(s[0])) : !is_alnum(s[0]))
		return false;
	for (size_t i = 1; i < n; i++) {
		char c = s[i];
		bool ok = apt ? is_lower(c) || is_digit(c) || c == '+' || c == '-' || c == '.'
		              : is_alnum(c) || c == '+' || c == '-' || c == '.' || c == '_';
		if (!ok)
			return false;
	}
	return true;
}

bool host_valid_pkg_version(const char *s)
{
	size_t n = s != NULL ? strlen(s) : 0;
	if (n == 0 || n > 128 || !is_digit(s[0]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!is_alnum(s[i]) && strchr(".+~:_-", s[i]) == NULL)
			return false;
	return true;
}

bool host_valid_unit_name(const char *s)
{
	static const char *const types[] = {
	    ".service", ".socket", ".target",    ".timer", ".mount", ".path",
	    ".slice",   ".scope",  ".automount", ".swap",  ".device", NULL};
	size_t n = s != NULL ? strlen(s) : 0;
	if (n == 0 || n > 255 || s[0] == '-' || s[0] == '.' || s[0] == '@')
		return false;
	int at = 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '@')
			at++;
		else if (!is_alnum(c) && strchr(":_.\\-", c) == NULL)
			return false;
	}
	if (at > 1)
		return false;
	const char *dot = strrchr(s, '.');
	if (dot == NULL)
		return true;
	for (const char *const *t = types; *t != NULL; t++)
		if (strcmp(dot, *t) == 0)
			return dot != s;
	return false;
}

bool host_valid_user_name(const char *s)
{
	size_t n = s != NULL ? strlen(s) : 0;
	if (n == 0 || n > 32 || !(is_lower(s[0]) || s[0] == '_'))
		return false;
	for (size_t i = 1; i < n; i++) {
		char c = s[i];
		if (c == '$' && i == n - 1)
			break;
		if (!is_lower(c) && !is_digit(c) && c != '_' && c != '-')
			return false;
	}
	return true;
}

bool host_valid_group_name(const char *s)
{
	return host_valid_user_name(s);
}
