/* The crontab model (see crontab.h): parse into unmanaged lines and marked
 * blocks, validate schedules, variables and commands the way cron reads
 * them, render back. */
#include "probe/steps/crontab.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/buf.h"

int cron_name_check(const char *name, struct vm_err *err)
{
	size_t n = strlen(name);
	if (n == 0 || n > CRON_NAME_MAX)
		return vm_err_set(err, VM_ERR_INVALID, "must be 1-%d characters", CRON_NAME_MAX);
	if (name[0] == '-' || name[0] == '.')
		return vm_err_set(err, VM_ERR_INVALID, "must not start with '-' or '.'");
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)name[i]) && strchr("._-", name[i]) == NULL)
			return vm_err_set(err, VM_ERR_INVALID,
			                  "only letters, digits, '.', '_' and '-' are allowed");
	return 0;
}

/* --- schedules ------------------------------------------------------------- */

struct field {
	const char *what;
	int lo, hi;
	const char *const *names; /* names[i] is the value lo + i */
};

static const char *const months[] = {"jan", "feb", "mar", "apr", "may", "jun", "jul",
                                     "aug", "sep", "oct", "nov", "dec", NULL};
static const char *const days[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat", NULL};

static const struct field fields[5] = {
    {"minute", 0, 59, NULL},  {"hour", 0, 23, NULL},       {"day of month", 1, 31, NULL},
    {"month", 1, 12, months}, {"day of week", 0, 7, days},
};

static const char *const macros[] = {"@reboot", "@yearly",   "@annually", "@monthly", "@weekly",
                                     "@daily",  "@midnight", "@hourly",   NULL};

/* A number or name at s[0, n) of field f into *v. */
static int field_value(const struct field *f, const char *s, size_t n, int *v)
{
	if (n == 0)
		return -1;
	if (isdigit((unsigned char)s[0])) {
		if (n > 2)
			return -1;
		int x = 0;
		for (size_t i = 0; i < n; i++) {
			if (!isdigit((unsigned char)s[i]))
				return -1;
			x = x * 10 + (s[i] - '0');
		}
		if (x < f->lo || x > f->hi)
			return -1;
		*v = x;
		return 0;
	}
	if (f->names == NULL || n != 3)
		return -1;
	for (int i = 0; f->names[i] != NULL; i++)
		if (strncasecmp(s, f->names[i], 3) == 0) {
			*v = f->lo + i;
			return 0;
		}
	return -1;
}

/* One element of a comma list: "*", N, N-M, "*"/S or N-M/S. */
static int element_check(const struct field *f, const char *s, size_t n, struct vm_err *err)
{
	const char *slash = memchr(s, '/', n);
	size_t rn = slash ? (size_t)(slash - s) : n;
	bool range = false;
	if (rn == 1 && s[0] == '*') {
		range = true;
	} else {
		const char *dash = memchr(s, '-', rn);
		int a, b;
		if (dash == NULL) {
			if (field_value(f, s, rn, &a) != 0)
				goto bad;
		} else {
			if (field_value(f, s, (size_t)(dash - s), &a) != 0 ||
			    field_value(f, dash + 1, rn - (size_t)(dash - s) - 1, &b) != 0)
				goto bad;
			if (a > b)
				return vm_err_set(err, VM_ERR_INVALID,
				                  "%s: range %.*s runs backwards", f->what, (int)rn,
				                  s);
			range = true;
		}
	}
	if (slash != NULL) {
		size_t sn = n - rn - 1;
		if (!range)
			return vm_err_set(err, VM_ERR_INVALID,
			                  "%s: a step needs '*' or a range before it (%.*s)",
			                  f->what, (int)n, s);
		int step = 0;
		if (sn == 0 || sn > 2)
			goto bad;
		for (size_t i = 0; i < sn; i++) {
			if (!isdigit((unsigned char)slash[1 + i]))
				goto bad;
			step = step * 10 + (slash[1 + i] - '0');
		}
		if (step < 1 || step > f->hi)
			return vm_err_set(err, VM_ERR_INVALID, "%s: step must be 1-%d", f->what,
			                  f->hi);
	}
	return 0;
bad:
	return vm_err_set(err, VM_ERR_INVALID, "%s: '%.*s' is not %d-%d%s", f->what,
	                  (int)(n > 40 ? 40 : n), s, f->lo, f->hi, f->names ? " or a name" : "");
}

static int field_check(const struct field *f, const char *s, size_t n, struct vm_err *err)
{
	size_t i = 0;
	if (n == 0)
		return vm_err_set(err, VM_ERR_INVALID, "%s: empty", f->what);
	while (i <= n) {
		const char *comma = memchr(s + i, ',', n - i);
		size_t e = comma ? (size_t)(comma - s) : n;
		if (e == i)
			return vm_err_set(err, VM_ERR_INVALID, "%s: empty list element", f->what);
		if (element_check(f, s + i, e - i, err) != 0)
			return -1;
		i = e + 1;
	}
	return 0;
}

static bool blank(char c)
{
	return c == ' ' || c == '\t';
}

/* Checks the schedule at the start of s (a macro or five fields) into out;
 * *rest gets what follows it (the command of a job line). */
static int schedule_scan(const char *s, char *out, size_t cap, const char **rest,
                         struct vm_err *err)
{
	const char *p = s;
	while (blank(*p))
		p++;
	size_t o = 0;
	if (*p == '@') {
		size_t n = 0;
		while (p[n] != '\0' && !blank(p[n]))
			n++;
		for (int i = 0; macros[i] != NULL; i++)
			if (strlen(macros[i]) == n && strncmp(p, macros[i], n) == 0) {
				o = str_appendf(out, cap, 0, "%s", macros[i]);
				*rest = p + n;
				return o >= cap ? vm_err_set(err, VM_ERR_INVALID, "too long") : 0;
			}
		return vm_err_set(err, VM_ERR_INVALID,
		                  "'%.*s' is not one of @reboot @yearly @annually @monthly "
		                  "@weekly @daily @midnight @hourly",
		                  (int)(n > 40 ? 40 : n), p);
	}
	for (int f = 0; f < 5; f++) {
		while (blank(*p))
			p++;
		size_t n = 0;
		while (p[n] != '\0' && !blank(p[n]))
			n++;
		if (n == 0)
			return vm_err_set(err, VM_ERR_INVALID,
			                  "needs five fields (minute hour day month weekday) or an "
			                  "@-macro; %s is missing",
			                  fields[f].what);
		if (field_check(&fields[f], p, n, err) != 0)
			return -1;
		o = str_appendf(out, cap, o, "%s%.*s", f ? " " : "", (int)n, p);
		p += n;
	}
	*rest = p;
	return o >= cap ? vm_err_set(err, VM_ERR_INVALID, "longer than %d bytes", CRON_SCHED_MAX)
	                : 0;
}

int cron_schedule_check(const char *in, char *out, size_t cap, struct vm_err *err)
{
	if (strlen(in) > CRON_SCHED_MAX)
		return vm_err_set(err, VM_ERR_INVALID, "longer than %d bytes", CRON_SCHED_MAX);
	for (const char *c = in; *c; c++)
		if ((unsigned char)*c < 0x20 && *c != '\t')
			return vm_err_set(err, VM_ERR_INVALID, "holds a control character");
	const char *rest;
	if (schedule_scan(in, out, cap, &rest, err) != 0)
		return -1;
	while (blank(*rest))
		rest++;
	if (*rest != '\0')
		return vm_err_set(err, VM_ERR_INVALID, "more than five fields ('%.40s')", rest);
	return 0;
}

int cron_split_job(const char *line, char *sched, size_t cap, const char **command)
{
	struct vm_err err;
	const char *rest;
	if (schedule_scan(line, sched, cap, &rest, &err) != 0 || !blank(*rest))
		return -1;
	while (blank(*rest))
		rest++;
	if (*rest == '\0')
		return -1;
	*command = rest;
	return 0;
}

/* --- variables and commands ------------------------------------------------- */

static bool has_ctrl(const char *s, bool tab_ok)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if ((c < 0x20 && !(tab_ok && c == '\t')) || c == 0x7f)
			return true;
	}
	return false;
}

int cron_env_check(const char *name, const char *value, struct vm_err *err)
{
	size_t n = strlen(name);
	if (n == 0 || n > 64 || !(isalpha((unsigned char)name[0]) || name[0] == '_'))
		return vm_err_set(err, VM_ERR_INVALID,
		                  "a variable name is 1-64 of [A-Za-z0-9_], "
		                  "not starting with a digit");
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)name[i]) && name[i] != '_')
			return vm_err_set(err, VM_ERR_INVALID,
			                  "a variable name is 1-64 of [A-Za-z0-9_]");
	size_t vn = strlen(value);
	if (has_ctrl(value, false))
		return vm_err_set(err, VM_ERR_INVALID, "value holds a control character");
	if (vn > 0 && (blank(value[0]) || blank(value[vn - 1])))
		return vm_err_set(err, VM_ERR_INVALID,
		                  "value must not start or end with a blank (cron trims it)");
	if (n + 1 + vn > CRON_LINE_MAX)
		return vm_err_set(err, VM_ERR_INVALID, "longer than %d bytes", CRON_LINE_MAX);
	return 0;
}

int cron_command_check(const char *command, struct vm_err *err)
{
	if (command[0] == '\0' || blank(command[0]))
		return vm_err_set(err, VM_ERR_INVALID, "must not be empty or start with a blank");
	if (has_ctrl(command, true))
		return vm_err_set(err, VM_ERR_INVALID,
		                  "holds a newline or another control character");
	for (const char *c = command; *c; c++)
		if (c[0] == '\\' && (c[1] == '%' || c[1] == '\\'))
			return vm_err_set(err, VM_ERR_INVALID,
			                  "a backslash before '%%' or '\\' is read differently by "
			                  "cron implementations; put the command in a script");
	return 0;
}

/* --- parsing ----------------------------------------------------------------- */

static void job_free(struct cron_job *j)
{
	free(j->name);
	free(j->schedule);
	free(j->command);
	for (size_t i = 0; i < j->nenv; i++)
		free(j->env[i]);
	free(j->raw);
	memset(j, 0, sizeof(*j));
}

void cron_tab_free(struct cron_tab *tab)
{
	if (tab == NULL)
		return;
	for (size_t i = 0; i < tab->n; i++) {
		free(tab->items[i].line);
		job_free(&tab->items[i].job);
	}
	free(tab->items);
	memset(tab, 0, sizeof(*tab));
}

static struct cron_item *item_add(struct cron_tab *tab)
{
	if (tab->n == tab->cap) {
		size_t cap = tab->cap ? tab->cap * 2 : 16;
		struct cron_item *p = realloc(tab->items, cap * sizeof(*p));
		if (p == NULL)
			return NULL;
		tab->items = p;
		tab->cap = cap;
	}
	struct cron_item *it = &tab->items[tab->n++];
	memset(it, 0, sizeof(*it));
	return it;
}

static enum cron_kind classify(const char *line)
{
	const char *p = line;
	while (blank(*p))
		p++;
	if (*p == '\0' || (*p == '\r' && p[1] == '\0'))
		return CRON_BLANK;
	if (*p == '#')
		return CRON_COMMENT;
	char sched[CRON_SCHED_MAX + 1];
	const char *cmd;
	if (cron_split_job(line, sched, sizeof(sched), &cmd) == 0)
		return CRON_JOB;
	/* cron's own rule: NAME = value, blanks allowed around '=' */
	const char *q = p;
	while (*q && *q != '=' && !blank(*q))
		q++;
	while (blank(*q))
		q++;
	return q > p && *q == '=' ? CRON_ENV : CRON_OTHER;
}

/* The command as meant from its crontab form: "\%" is '%'; a bare '%' (cron
 * would cut the line there) or a backslash before a backslash is not ours. */
static char *command_unescape(const char *s)
{
	char *out = malloc(strlen(s) + 1);
	if (out == NULL)
		return NULL;
	size_t o = 0;
	for (; *s; s++) {
		if (s[0] == '\\' && s[1] == '%') {
			out[o++] = '%';
			s++;
		} else if (s[0] == '%' || (s[0] == '\\' && s[1] == '\\')) {
			free(out);
			return NULL;
		} else {
			out[o++] = *s;
		}
	}
	out[o] = '\0';
	return out;
}

/* Reads the lines of a block into job (valid when they are what cron_render
 * writes: NAME=value lines, then one job line). Only raw is set otherwise. */
static int block_read(struct cron_job *j, char **lines, size_t n)
{
	struct buf raw;
	buf_init(&raw, CRON_TEXT_MAX);
	for (size_t i = 0; i < n; i++)
		if (buf_printf(&raw, "%s\n", lines[i]) != 0) {
			buf_free(&raw);
			return -1;
		}
	j->raw = buf_take(&raw, NULL);
	if (j->raw == NULL)
		return -1;
	j->valid = false;
	if (n == 0 || n - 1 > CRON_ENV_MAX)
		return 0;
	struct vm_err err;
	for (size_t i = 0; i + 1 < n; i++) {
		char *eq = strchr(lines[i], '=');
		if (eq == NULL)
			goto invalid;
		*eq = '\0';
		int bad = cron_env_check(lines[i], eq + 1, &err);
		*eq = '=';
		if (bad || (j->env[j->nenv++] = strdup(lines[i])) == NULL)
			goto invalid;
	}
	char sched[CRON_SCHED_MAX + 1];
	const char *cmd;
	if (strlen(lines[n - 1]) > CRON_LINE_MAX ||
	    cron_split_job(lines[n - 1], sched, sizeof(sched), &cmd) != 0)
		goto invalid;
	j->command = command_unescape(cmd);
	j->schedule = strdup(sched);
	if (j->command == NULL || j->schedule == NULL || cron_command_check(j->command, &err) != 0)
		goto invalid;
	j->valid = true;
	return 0;
invalid:
	for (size_t i = 0; i < j->nenv; i++)
		free(j->env[i]);
	j->nenv = 0;
	free(j->command);
	free(j->schedule);
	j->command = j->schedule = NULL;
	return 0;
}

/* A marker line's name, or NULL when line is not a marker of this kind. */
static const char *marker(const char *line, const char *prefix)
{
	size_t n = strlen(prefix);
	return strncmp(line, prefix, n) == 0 ? line + n : NULL;
}

int cron_parse(const char *text, size_t len, struct cron_tab *tab, struct vm_err *err)
{
	memset(tab, 0, sizeof(*tab));
	if (len > CRON_TEXT_MAX)
		return vm_err_set(err, VM_ERR_INVALID, "the crontab is larger than %u bytes",
		                  CRON_TEXT_MAX);
	if (memchr(text, '\0', len) != NULL)
		return vm_err_set(err, VM_ERR_INVALID, "the crontab holds a NUL byte");
	char *copy = malloc(len + 1);
	if (copy == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	memcpy(copy, text, len);
	copy[len] = '\0';
	/* the lines, split in place */
	size_t nlines = 0, cap = 0;
	char **lines = NULL;
	int rc = 0;
	for (char *p = copy; *p != '\0';) {
		char *nl = strchr(p, '\n');
		if (nl != NULL)
			*nl = '\0';
		if (nlines == cap) {
			cap = cap ? cap * 2 : 64;
			char **q = realloc(lines, cap * sizeof(*q));
			if (q == NULL) {
				rc = vm_err_set(err, VM_ERR_NOMEM, "out of memory");
				goto out;
			}
			lines = q;
		}
		lines[nlines++] = p;
		if (nl == NULL)
			break;
		p = nl + 1;
	}
	for (size_t i = 0; i < nlines; i++) {
		const char *name = marker(lines[i], CRON_BEGIN);
		if (marker(lines[i], CRON_END) != NULL) {
			rc = vm_err_set(err, VM_ERR_INVALID,
			                "line %zu: an END marker without its BEGIN", i + 1);
			goto out;
		}
		if (name == NULL) {
			struct cron_item *it = item_add(tab);
			if (it == NULL || (it->line = strdup(lines[i])) == NULL) {
				rc = vm_err_set(err, VM_ERR_NOMEM, "out of memory");
				goto out;
			}
			it->line_no = i + 1;
			it->kind = classify(lines[i]);
			continue;
		}
		struct vm_err nerr;
		if (cron_name_check(name, &nerr) != 0) {
			rc = vm_err_set(err, VM_ERR_INVALID, "line %zu: marker name: %s", i + 1,
			                nerr.msg);
			goto out;
		}
		if (cron_find(tab, name) != NULL) {
			rc = vm_err_set(err, VM_ERR_INVALID, "line %zu: a second block named %s",
			                i + 1, name);
			goto out;
		}
		size_t end = i + 1;
		for (; end < nlines; end++) {
			const char *en = marker(lines[end], CRON_END);
			if (en != NULL && strcmp(en, name) == 0)
				break;
			if (marker(lines[end], CRON_BEGIN) != NULL || en != NULL) {
				rc =
				    vm_err_set(err, VM_ERR_INVALID,
				               "line %zu: a marker inside the block %s of line %zu",
				               end + 1, name, i + 1);
				goto out;
			}
		}
		if (end == nlines) {
			rc = vm_err_set(err, VM_ERR_INVALID,
			                "line %zu: the block %s has no END marker", i + 1, name);
			goto out;
		}
		struct cron_item *it = item_add(tab);
		if (it == NULL) {
			rc = vm_err_set(err, VM_ERR_NOMEM, "out of memory");
			goto out;
		}
		it->managed = true;
		it->line_no = i + 1;
		if ((it->job.name = strdup(name)) == NULL ||
		    block_read(&it->job, lines + i + 1, end - i - 1) != 0) {
			rc = vm_err_set(err, VM_ERR_NOMEM, "out of memory");
			goto out;
		}
		i = end;
	}
out:
	free(lines);
	free(copy);
	return rc;
}

/* --- editing and rendering ----------------------------------------------------- */

struct cron_job *cron_find(struct cron_tab *tab, const char *name)
{
	for (size_t i = 0; i < tab->n; i++)
		if (tab->items[i].managed && strcmp(tab->items[i].job.name, name) == 0)
			return &tab->items[i].job;
	return NULL;
}

/* The job line as the crontab holds it: "schedule command" with % as \%. */
static int job_line(struct buf *b, const struct cron_job *j)
{
	int bad = buf_printf(b, "%s ", j->schedule);
	for (const char *c = j->command; *c && !bad; c++)
		bad = *c == '%' ? buf_append(b, "\\%", 2) : buf_append(b, c, 1);
	return bad ? -1 : buf_append(b, "\n", 1);
}

static int block_render(struct buf *b, const struct cron_job *j)
{
	if (buf_printf(b, "%s%s\n", CRON_BEGIN, j->name) != 0)
		return -1;
	/* a block nobody changed keeps its bytes (a hand edit's tabs too) */
	if (j->raw != NULL || !j->valid) {
		if (buf_printf(b, "%s", j->raw ? j->raw : "") != 0)
			return -1;
	} else {
		for (size_t i = 0; i < j->nenv; i++)
			if (buf_printf(b, "%s\n", j->env[i]) != 0)
				return -1;
		if (job_line(b, j) != 0)
			return -1;
	}
	return buf_printf(b, "%s%s\n", CRON_END, j->name);
}

char *cron_render(const struct cron_tab *tab, size_t *len)
{
	struct buf b;
	buf_init(&b, CRON_TEXT_MAX);
	for (size_t i = 0; i < tab->n; i++) {
		const struct cron_item *it = &tab->items[i];
		int bad =
		    it->managed ? block_render(&b, &it->job) : buf_printf(&b, "%s\n", it->line);
		if (bad) {
			buf_free(&b);
			return NULL;
		}
	}
	return buf_take(&b, len);
}

static int job_copy(struct cron_job *dst, const struct cron_job *src)
{
	memset(dst, 0, sizeof(*dst));
	dst->valid = true;
	if ((dst->name = strdup(src->name)) == NULL ||
	    (dst->schedule = strdup(src->schedule)) == NULL ||
	    (dst->command = strdup(src->command)) == NULL)
		return -1;
	for (size_t i = 0; i < src->nenv && i < CRON_ENV_MAX; i++) {
		if ((dst->env[i] = strdup(src->env[i])) == NULL)
			return -1;
		dst->nenv++;
	}
	return 0;
}

int cron_set(struct cron_tab *tab, const struct cron_job *want, struct vm_err *err)
{
	struct buf line;
	buf_init(&line, CRON_TEXT_MAX);
	struct cron_job probe = *want;
	probe.valid = true;
	if (job_line(&line, &probe) != 0) {
		buf_free(&line);
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	}
	size_t n = line.len - 1;
	buf_free(&line);
	if (n > CRON_LINE_MAX)
		return vm_err_set(err, VM_ERR_INVALID,
		                  "the crontab line would be %zu bytes; cron reads at most %d", n,
		                  CRON_LINE_MAX);
	struct cron_job copy;
	if (job_copy(&copy, want) != 0) {
		job_free(&copy);
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	}
	struct cron_job *old = cron_find(tab, want->name);
	if (old != NULL) {
		job_free(old);
		*old = copy;
		return 0;
	}
	struct cron_item *it = item_add(tab);
	if (it == NULL) {
		job_free(&copy);
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	}
	it->managed = true;
	it->job = copy;
	return 0;
}

bool cron_remove(struct cron_tab *tab, const char *name)
{
	for (size_t i = 0; i < tab->n; i++) {
		struct cron_item *it = &tab->items[i];
		if (!it->managed || strcmp(it->job.name, name) != 0)
			continue;
		free(it->line);
		job_free(&it->job);
		memmove(it, it + 1, (tab->n - i - 1) * sizeof(*it));
		tab->n--;
		return true;
	}
	return false;
}
