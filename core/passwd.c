/* passwd(5) and group(5) lines: split on ':' into exactly the expected
 * fields, numbers strict, nothing cut. */
#include <string.h>

#include "core/passwd.h"

#define MAX_FIELDS 8

/* Splits line[0, len) on ':' into at most MAX_FIELDS (start, length) pairs;
 * returns the count, or MAX_FIELDS + 1 when there are more. */
static size_t split(const char *line, size_t len, const char *start[], size_t flen[])
{
	size_t n = 0, from = 0;
	for (size_t i = 0; i <= len; i++) {
		if (i < len && line[i] != ':')
			continue;
		if (n == MAX_FIELDS)
			return MAX_FIELDS + 1;
		start[n] = line + from;
		flen[n] = i - from;
		n++;
		from = i + 1;
	}
	return n;
}

static int copy_field(char *dst, size_t cap, const char *src, size_t n, const char *what,
                      struct vm_err *err)
{
	if (n >= cap)
		return vm_err_set(err, VM_ERR_INVALID, "%s longer than %zu bytes", what, cap - 1);
	memcpy(dst, src, n);
	dst[n] = '\0';
	return 0;
}

static int parse_id(const char *s, size_t n, uint32_t *out, const char *what, struct vm_err *err)
{
	if (n == 0 || n > 10)
		return vm_err_set(err, VM_ERR_INVALID, "%s is not a decimal number", what);
	uint64_t v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return vm_err_set(err, VM_ERR_INVALID, "%s is not a decimal number", what);
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	/* (uid_t)-1 means "no id" to every system call: never a real account */
	if (v >= UINT32_MAX)
		return vm_err_set(err, VM_ERR_INVALID, "%s out of range", what);
	*out = (uint32_t)v;
	return 0;
}

/* Trims the line end, refuses NULs, and says whether the line is to be skipped. */
static int prepare(const char *line, size_t *len, struct vm_err *err)
{
	while (*len > 0 && (line[*len - 1] == '\n' || line[*len - 1] == '\r'))
		(*len)--;
	if (memchr(line, '\0', *len) != NULL)
		return vm_err_set(err, VM_ERR_INVALID, "NUL byte in line");
	size_t i = 0;
	while (i < *len && (line[i] == ' ' || line[i] == '\t'))
		i++;
	if (i == *len || line[i] == '#' || line[0] == '+' || line[0] == '-')
		return PASSWD_LINE_SKIP;
	return PASSWD_LINE_OK;
}

/* The common part of both formats: skip or split the line into exactly want
 * fields, the first a non-empty name copied into name. */
static int fields(const char *line, size_t len, size_t want, const char *f[MAX_FIELDS],
                  size_t fl[MAX_FIELDS], char *name, size_t name_cap, struct vm_err *err)
{
	int rc = prepare(line, &len, err);
	if (rc != PASSWD_LINE_OK)
		return rc < 0 ? -1 : rc;
	size_t n = split(line, len, f, fl);
	if (n != want)
		return vm_err_set(err, VM_ERR_INVALID, "expected %zu fields, found %s", want,
		                  n < want ? "fewer" : "more");
	if (fl[0] == 0)
		return vm_err_set(err, VM_ERR_INVALID, "empty name");
	return copy_field(name, name_cap, f[0], fl[0], "name", err) < 0 ? -1 : PASSWD_LINE_OK;
}

int passwd_parse_line(const char *line, size_t len, struct passwd_entry *out, struct vm_err *err)
{
	memset(out, 0, sizeof(*out));
	const char *f[MAX_FIELDS];
	size_t fl[MAX_FIELDS];
	int rc = fields(line, len, 7, f, fl, out->name, sizeof(out->name), err);
	if (rc != PASSWD_LINE_OK)
		return rc;
	if (parse_id(f[2], fl[2], &out->uid, "uid", err) < 0 ||
	    parse_id(f[3], fl[3], &out->gid, "gid", err) < 0 ||
	    copy_field(out->gecos, sizeof(out->gecos), f[4], fl[4], "gecos", err) < 0 ||
	    copy_field(out->home, sizeof(out->home), f[5], fl[5], "home", err) < 0 ||
	    copy_field(out->shell, sizeof(out->shell), f[6], fl[6], "shell", err) < 0)
		return -1;
	return PASSWD_LINE_OK;
}

int group_parse_line(const char *line, size_t len, struct group_entry *out, struct vm_err *err)
{
	memset(out, 0, sizeof(*out));
	const char *f[MAX_FIELDS];
	size_t fl[MAX_FIELDS];
	int rc = fields(line, len, 4, f, fl, out->name, sizeof(out->name), err);
	if (rc != PASSWD_LINE_OK)
		return rc;
	if (parse_id(f[2], fl[2], &out->gid, "gid", err) < 0 ||
	    copy_field(out->members, sizeof(out->members), f[3], fl[3], "member list", err) < 0)
		return -1;
	if (fl[3] == 0)
		return PASSWD_LINE_OK;
	/* every member a non-empty name: "a,,b" or a trailing comma is damage */
	size_t count = 0, from = 0;
	for (size_t i = 0; i <= fl[3]; i++) {
		if (i < fl[3] && out->members[i] != ',')
			continue;
		if (i == from)
			return vm_err_set(err, VM_ERR_INVALID, "empty name in member list");
		count++;
		from = i + 1;
	}
	out->nmembers = count;
	return PASSWD_LINE_OK;
}

bool group_has_member(const struct group_entry *g, const char *user)
{
	size_t ul = strlen(user);
	if (ul == 0)
		return false;
	const char *p = g->members;
	while (*p != '\0') {
		const char *c = strchr(p, ',');
		size_t l = c != NULL ? (size_t)(c - p) : strlen(p);
		if (l == ul && memcmp(p, user, ul) == 0)
			return true;
		if (c == NULL)
			break;
		p = c + 1;
	}
	return false;
}
