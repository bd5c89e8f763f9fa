/* The backup steps' pure parts: rsync's stdout (--out-format items, progress2
 * updates, --stats lines) into records, the meaning of its exit status, and
 * ignore globs that mean the same to rsync's --exclude and to our walker. */
#include <fnmatch.h>
#include <stdio.h>
#include <string.h>

#include "probe/steps/backup.h"

/* --- ignore globs ------------------------------------------------------------- */

static int refuse(char *why, size_t cap, const char *msg)
{
	snprintf(why, cap, "%s", msg);
	return -1;
}

/* A class "[...]": letters, digits and ".-_" (ranges), '!' first to negate.
 * Returns the index of its ']' or -1. rsync's wildmatch and glibc's fnmatch
 * agree on these; ']' first, '^', POSIX classes and '/' are where they part. */
static long class_end(const char *p, size_t i)
{
	size_t j = i + 1;
	if (p[j] == '!')
		j++;
	size_t first = j;
	for (; p[j] != '\0' && p[j] != ']'; j++) {
		char c = p[j];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		          (c >= '0' && c <= '9') || c == '.' || c == '_' ||
		          (c == '-' && j > first && p[j + 1] != ']');
		if (!ok)
			return -1;
	}
	if (p[j] != ']' || j == first)
		return -1;
	return (long)j;
}

int backup_glob_parse(const char *pattern, struct backup_glob *out, char *why, size_t why_cap)
{
	memset(out, 0, sizeof(*out));
	size_t n = strlen(pattern);
	if (n == 0)
		return refuse(why, why_cap, "empty pattern");
	if (n >= BACKUP_GLOB_MAX)
		return refuse(why, why_cap, "pattern too long (at most 255 bytes)");
	/* --exclude takes "+ " and "- " as rule prefixes, and "!" clears the list */
	if (strcmp(pattern, "!") == 0 || strncmp(pattern, "+ ", 2) == 0 ||
	    strncmp(pattern, "- ", 2) == 0)
		return refuse(
		    why, why_cap,
		    "rsync filter-rule prefixes (\"+ \", \"- \", \"!\") are not accepted");
	if (strstr(pattern, "**") != NULL)
		return refuse(why, why_cap,
		              "\"**\" is not accepted (use one '*' per path component)");
	if (strstr(pattern, "//") != NULL || strcmp(pattern, "/") == 0)
		return refuse(why, why_cap, "empty path components are not accepted");
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)pattern[i];
		if (c < 0x20 || c == 0x7f)
			return refuse(why, why_cap, "control characters are not accepted");
		if (c == '\\')
			return refuse(why, why_cap, "backslashes are not accepted");
		if (c == ']')
			return refuse(why, why_cap, "']' outside a class is not accepted");
		if (c == '[') {
			long e = class_end(pattern, i);
			if (e < 0)
				return refuse(
				    why, why_cap,
				    "a class must be \"[...]\" of letters, digits and \".-_\", "
				    "negated with a leading '!'");
			i = (size_t)e;
		}
	}
	const char *p = pattern;
	if (*p == '/') {
		out->anchored = true;
		p++;
	}
	size_t len = strlen(p);
	if (len > 0 && p[len - 1] == '/') {
		out->dir_only = true;
		len--;
	}
	if (len == 0)
		return refuse(why, why_cap, "empty pattern");
	memcpy(out->pat, p, len);
	out->pat[len] = '\0';
	for (size_t i = 0; i < len; i++)
		out->slashes += out->pat[i] == '/';
	return 0;
}

static bool glob_matches(const struct backup_glob *g, const char *name, bool is_dir)
{
	if (g->dir_only && !is_dir)
		return false;
	const char *s = name;
	if (!g->anchored) {
		/* rsync: no slash → the last component; infix slashes → the last
		 * slashes+1 components (the whole name when it has fewer) */
		int want = g->slashes + 1, seen = 0;
		for (const char *q = name + strlen(name); q > name; q--)
			if (q[-1] == '/' && ++seen == want) {
				s = q;
				break;
			}
	}
	return fnmatch(g->pat, s, FNM_PATHNAME) == 0;
}

bool backup_glob_excluded(const struct backup_glob *g, int n, const char *name, bool is_dir)
{
	for (int i = 0; i < n; i++)
		if (glob_matches(&g[i], name, is_dir))
			return true;
	return false;
}

/* --- rsync output ------------------------------------------------------------- */

/* Digits with optional thousands commas ("3,000,004"); -1 when none or on overflow. */
static int64_t number(const char *s, size_t len, size_t *i)
{
	int64_t v = 0;
	size_t start = *i;
	/* a comma only between digits: "(xfr#2, to-chk=3/6)" ends the number at ',' */
	while (*i < len &&
	       ((s[*i] >= '0' && s[*i] <= '9') || (s[*i] == ',' && *i > start && *i + 1 < len &&
	                                           s[*i + 1] >= '0' && s[*i + 1] <= '9'))) {
		if (s[*i] != ',') {
			if (v > (INT64_MAX - 9) / 10)
				return -1;
			v = v * 10 + (s[*i] - '0');
		}
		(*i)++;
	}
	return *i > start ? v : -1;
}

static void skip_spaces(const char *s, size_t len, size_t *i)
{
	while (*i < len && s[*i] == ' ')
		(*i)++;
}

static bool starts(const char *s, size_t len, const char *prefix)
{
	size_t n = strlen(prefix);
	return len >= n && memcmp(s, prefix, n) == 0;
}

/* Finds needle in s[0..len) (s holds NULs maybe: no strstr). */
static long find(const char *s, size_t len, const char *needle)
{
	size_t n = strlen(needle);
	for (size_t i = 0; i + n <= len; i++)
		if (memcmp(s + i, needle, n) == 0)
			return (long)i;
	return -1;
}

static const char *item_op(const char *it, bool *changes)
{
	size_t n = strlen(it);
	*changes = false;
	for (size_t i = 2; i < n; i++)
		if (it[i] != '.' && it[i] != ' ')
			*changes = true;
	switch (it[0]) {
	case '<':
	case '>':
		*changes = true;
		return "copy";
	case 'c':
		*changes = true;
		return "create";
	case 'h':
		*changes = true;
		return "link";
	case '.':
		return *changes ? "attrs" : "unchanged";
	case '*':
		*changes = true;
		return strncmp(it, "*deleting", 9) == 0 ? "delete" : "message";
	default:
		return "message";
	}
}

static bool parse_item(const char *s, size_t len, struct rsync_rec *r)
{
	size_t i = 5; /* "VMA1|" */
	size_t k = 0;
	while (i < len && s[i] != '|') {
		if (k + 1 >= sizeof(r->itemize) || s[i] == '\0')
			return false;
		r->itemize[k++] = s[i++];
	}
	r->itemize[k] = '\0';
	if (k < 2 || i >= len)
		return false;
	i++;
	r->length = number(s, len, &i);
	if (r->length < 0 || i >= len || s[i] != '|')
		return false;
	i++;
	size_t n = len - i;
	if (n == 0 || memchr(s + i, '\0', n) != NULL)
		return false;
	r->name_cut = n >= sizeof(r->name);
	if (r->name_cut)
		n = sizeof(r->name) - 1;
	memcpy(r->name, s + i, n);
	r->name[n] = '\0';
	r->kind = strchr("fdLDS", r->itemize[1]) != NULL ? r->itemize[1] : 0;
	r->op = item_op(r->itemize, &r->changes);
	return true;
}

/* "     2,195,459  73%    1.95MB/s    0:00:00 (xfr#2, to-chk=3/6)" */
static bool parse_progress(const char *s, size_t len, struct rsync_rec *r)
{
	size_t i = 0;
	skip_spaces(s, len, &i);
	r->bytes = number(s, len, &i);
	if (r->bytes < 0 || i >= len || s[i] != ' ')
		return false;
	skip_spaces(s, len, &i);
	int64_t pct = number(s, len, &i);
	if (pct < 0 || pct > 100 || i >= len || s[i] != '%')
		return false;
	r->percent = (int)pct;
	r->xfr = r->to_chk = r->total = -1;
	long x = find(s, len, "(xfr#");
	if (x < 0)
		return true;
	i = (size_t)x + 5;
	r->xfr = number(s, len, &i);
	long c = find(s, len, "-chk=");
	if (c < 0)
		return true;
	i = (size_t)c + 5;
	r->to_chk = number(s, len, &i);
	if (i < len && s[i] == '/') {
		i++;
		r->total = number(s, len, &i);
	}
	return true;
}

static bool parse_stat(const char *s, size_t len, struct rsync_rec *r)
{
	static const struct {
		const char *prefix;
		enum rsync_stat stat;
	} stats[] = {
	    {"Number of files: ", RSYNC_STAT_FILES},
	    {"Number of regular files transferred: ", RSYNC_STAT_REG_TRANSFERRED},
	    {"Total file size: ", RSYNC_STAT_TOTAL_SIZE},
	    {"Total transferred file size: ", RSYNC_STAT_TRANSFERRED},
	};
	for (size_t k = 0; k < sizeof(stats) / sizeof(stats[0]); k++) {
		if (!starts(s, len, stats[k].prefix))
			continue;
		size_t i = strlen(stats[k].prefix);
		r->value = number(s, len, &i);
		if (r->value < 0)
			return false;
		r->stat = stats[k].stat;
		return true;
	}
	return false;
}

void rsync_parse_record(const char *s, size_t len, struct rsync_rec *r)
{
	memset(r, 0, sizeof(*r));
	size_t i = 0;
	skip_spaces(s, len, &i);
	if (i == len) {
		r->type = RSYNC_REC_EMPTY;
		return;
	}
	if (starts(s, len, "VMA1|") && parse_item(s, len, r)) {
		r->type = RSYNC_REC_ITEM;
		return;
	}
	memset(r, 0, sizeof(*r));
	if (s[i] >= '0' && s[i] <= '9' && parse_progress(s, len, r)) {
		r->type = RSYNC_REC_PROGRESS;
		return;
	}
	memset(r, 0, sizeof(*r));
	if (parse_stat(s, len, r)) {
		r->type = RSYNC_REC_STAT;
		return;
	}
	memset(r, 0, sizeof(*r));
	r->type = RSYNC_REC_OTHER;
}

void rsync_reader_init(struct rsync_reader *r, void (*fn)(void *, const struct rsync_rec *),
                       void *ctx)
{
	r->len = 0;
	r->skipping = false;
	r->overlong = 0;
	r->fn = fn;
	r->ctx = ctx;
}

static void emit(struct rsync_reader *r)
{
	if (!r->skipping) {
		rsync_parse_record(r->line, r->len, &r->rec);
		if (r->rec.type != RSYNC_REC_EMPTY && r->fn != NULL)
			r->fn(r->ctx, &r->rec);
	}
	r->len = 0;
	r->skipping = false;
}

void rsync_reader_feed(struct rsync_reader *r, const char *data, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		char c = data[i];
		if (c == '\n' || c == '\r') {
			emit(r);
			continue;
		}
		if (r->skipping)
			continue;
		if (r->len >= sizeof(r->line)) {
			r->skipping = true;
			r->overlong++;
			continue;
		}
		r->line[r->len++] = c;
	}
}

void rsync_reader_finish(struct rsync_reader *r)
{
	if (r->len > 0 || r->skipping)
		emit(r);
}

struct rsync_exit rsync_exit_describe(int status)
{
	static const struct {
		int status;
		struct rsync_exit e;
	} table[] = {
	    {0, {"ok", "completed", false}},
	    {1, {"rsync_usage", "rsync refused its arguments (syntax or usage error)", false}},
	    {2,
	     {"protocol_incompatible", "the two rsync versions cannot talk to each other", false}},
	    {3, {"file_selection", "errors selecting input/output files or directories", false}},
	    {4, {"unsupported", "an action the rsync at the other end does not support", false}},
	    {5, {"protocol_error", "error starting the client-server protocol", false}},
	    {10, {"connection_failed", "socket I/O error", false}},
	    {11, {"io_error", "file I/O error", false}},
	    {12,
	     {"connection_failed",
	      "the data stream broke (the SSH connection failed or the "
	      "remote rsync died)",
	      false}},
	    {13, {"rsync_failed", "errors with program diagnostics", false}},
	    {14, {"rsync_failed", "error in IPC code", false}},
	    {20, {"interrupted", "rsync received SIGUSR1 or SIGINT", false}},
	    {21, {"rsync_failed", "some error returned by waitpid()", false}},
	    {22, {"out_of_memory", "rsync could not allocate its buffers", false}},
	    {23,
	     {"partial_transfer",
	      "partial transfer: some files or attributes were not "
	      "transferred",
	      false}},
	    {24,
	     {"source_files_vanished",
	      "some source files vanished before they could be "
	      "transferred",
	      true}},
	    {25, {"max_delete", "the --max-delete limit stopped deletions", false}},
	    {30, {"timeout", "timeout in data send/receive (backup.io_timeout)", false}},
	    {35, {"timeout", "timeout waiting for the connection", false}},
	    {255, {"ssh_failed", "ssh failed (unreachable host, refused key or host key)", false}},
	};
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
		if (table[i].status == status)
			return table[i].e;
	return (struct rsync_exit){"rsync_failed", "rsync failed", false};
}
