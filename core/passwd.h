/* The one reader of /etc/passwd and /etc/group lines (inventory, user.ensure,
 * group.ensure). Pure parsers of one line each: no NSS, no files; the caller
 * splits the text on '\n'. Fields are kept as the bytes found (they may be
 * invalid UTF-8: escape before they meet JSON) and are never cut: a field too
 * long for its array makes the line an error. */
#ifndef VMA_CORE_PASSWD_H
#define VMA_CORE_PASSWD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define PASSWD_NAME_MAX   256   /* user and group names */
#define PASSWD_FIELD_MAX  1024  /* gecos, home, shell */
#define GROUP_MEMBERS_MAX 16384 /* the raw member list "a,b,c" */

struct passwd_entry {
	char name[PASSWD_NAME_MAX];
	/* the password field is not kept: "x" or a hash, never wanted outside */
	uint32_t uid, gid;
	char gecos[PASSWD_FIELD_MAX];
	char home[PASSWD_FIELD_MAX];
	char shell[PASSWD_FIELD_MAX];
};

struct group_entry {
	char name[PASSWD_NAME_MAX];
	uint32_t gid;
	char members[GROUP_MEMBERS_MAX]; /* as in the file: comma-separated, may be "" */
	size_t nmembers;
};

/* Results of the line parsers. */
#define PASSWD_LINE_OK   0
#define PASSWD_LINE_SKIP 1 /* blank, "#" comment, or NIS compat ("+…", "-…") */

/* Parses one passwd(5) line "name:pw:uid:gid:gecos:home:shell" (line[0, len),
 * a trailing '\n' or '\r' allowed). Exactly 7 fields, a non-empty name
 * without NUL, decimal uid/gid below 2^32-1 (no sign, no spaces). Returns
 * PASSWD_LINE_OK, PASSWD_LINE_SKIP, or -1 (err, may be NULL, says why). */
int passwd_parse_line(const char *line, size_t len, struct passwd_entry *out, struct vm_err *err);

/* Parses one group(5) line "name:pw:gid:member,member". Same rules; the member
 * list is kept raw and counted (empty members, "a,,b", are an error). */
int group_parse_line(const char *line, size_t len, struct group_entry *out, struct vm_err *err);

/* True when user is one of g's members (exact, whole names). */
bool group_has_member(const struct group_entry *g, const char *user);

#endif
