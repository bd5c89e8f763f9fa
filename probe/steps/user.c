/* Step "user.ensure": a local account as asked (uid, primary gid, supplementary
 * groups, shell, home, system) through useradd/usermod/userdel argv, the state
 * read from /etc/passwd and /etc/group (core/passwd.h). Removal keeps the home
 * unless remove_home. Also what group.c shares: id and state fields, lookups. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/fs.h"
#include "core/passwd.h"
#include "probe/steps/steps.h"

#define PASSWD_FILE    "/etc/passwd"
#define GROUP_FILE     "/etc/group"
#define PATH_FIELD_MAX 255
#define GROUPS_JOINED  (HOST_GROUPS_MAX * 33 + 1)

struct user_req {
	bool present, has_uid, has_gid, system, remove_home;
	uint32_t uid, gid;
	const char *shell, *home;
	bool has_groups;
	const char *groups[HOST_GROUPS_MAX];
	int ngroups;
};

/* --- shared with group.c, sudoers.c, sshd.c ------------------------------------------ */

enum probe_step_status host_run_ok(const struct probe_step_ctx *ctx, const char *const *argv,
                                   const char *code, json_t *result)
{
	struct proc_result res = {0};
	struct vm_err err = {0};
	enum probe_step_status s = STEP_OK;
	if (host_run(ctx, &(struct host_cmd){.argv = argv}, &res, &err) != 0)
		s = host_fail(result, code, "%s: %s", argv[0], err.msg);
	else if (res.exit_code != 0)
		s = host_fail_proc(result, code, argv[0], &res);
	proc_result_free(&res);
	return s;
}

int host_field_id(json_t *obj, const char *name, uint32_t *out, bool *set, const char *path,
                  char *epath, size_t ecap, struct vm_err *err)
{
	json_t *v = json_object_get(obj, name);
	*set = false;
	if (v == NULL)
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < 1 ||
	    json_integer_value(v) > (json_int_t)HOST_ID_MAX)
		return host_bad_field(path, name, epath, ecap, err,
		                      "an integer 1-4294967294 (0 is root's)");
	*out = (uint32_t)json_integer_value(v);
	*set = true;
	return 0;
}

int host_field_state(json_t *obj, bool *present, const char *path, char *epath, size_t ecap,
                     struct vm_err *err)
{
	const char *s = NULL;
	if (probe_field_str(obj, "state", false, 16, &s, path, epath, ecap, err) != 0)
		return -1;
	*present = s == NULL || strcmp(s, "present") == 0;
	if (s != NULL && !*present && strcmp(s, "absent") != 0)
		return host_bad_field(path, "state", epath, ecap, err, "\"present\" or \"absent\"");
	return 0;
}

bool host_valid_passwd_path(const char *s)
{
	size_t n = s != NULL ? strlen(s) : 0;
	if (n == 0 || n > PATH_FIELD_MAX || s[0] != '/' || (n > 1 && s[n - 1] == '/'))
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c == 0x7f || c == ':' || (c == '/' && i + 1 < n && s[i + 1] == '/'))
			return false;
		/* a "." or ".." component */
		if (c == '/' && s[i + 1] == '.' &&
		    (s[i + 2] == '/' || s[i + 2] == '\0' ||
		     (s[i + 2] == '.' && (s[i + 3] == '/' || s[i + 3] == '\0'))))
			return false;
	}
	return true;
}

/* Calls fn for each well-formed line until it returns nonzero (that value). */
static int each_line(const char *text, size_t len, int (*fn)(void *ctx, const char *line, size_t n),
                     void *ctx)
{
	size_t off = 0, n;
	const char *line;
	while ((line = host_next_line(text, len, &off, &n)) != NULL) {
		int rc = fn(ctx, line, n);
		if (rc != 0)
			return rc;
	}
	return 0;
}

struct find_ctx {
	const char *name;
	void *out;
	const char *user; /* memberships */
	char *joined;
	size_t cap, o;
	const char *names[HOST_GROUPS_MAX * 4];
	size_t nnames;
};

static int find_pw(void *p, const char *line, size_t n)
{
	struct find_ctx *f = p;
	struct passwd_entry *e = f->out;
	return passwd_parse_line(line, n, e, NULL) == PASSWD_LINE_OK &&
	       strcmp(e->name, f->name) == 0;
}

static int find_gr(void *p, const char *line, size_t n)
{
	struct find_ctx *f = p;
	struct group_entry *e = f->out;
	return group_parse_line(line, n, e, NULL) == PASSWD_LINE_OK &&
	       strcmp(e->name, f->name) == 0;
}

int host_passwd_find(const char *text, size_t len, const char *name, struct passwd_entry *out)
{
	struct find_ctx f = {.name = name, .out = out};
	return each_line(text, len, find_pw, &f);
}

int host_group_find(const char *text, size_t len, const char *name, struct group_entry *out)
{
	struct find_ctx f = {.name = name, .out = out};
	return each_line(text, len, find_gr, &f);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int member_of(void *p, const char *line, size_t n)
{
	struct find_ctx *f = p;
	struct group_entry *e = f->out;
	if (group_parse_line(line, n, e, NULL) != PASSWD_LINE_OK || !group_has_member(e, f->user))
		return 0;
	if (f->nnames == sizeof(f->names) / sizeof(f->names[0]))
		return -1;
	char *copy = strdup(e->name);
	if (copy == NULL)
		return -1;
	f->names[f->nnames++] = copy;
	return 0;
}

int host_group_memberships(const char *text, size_t len, const char *user, char *out, size_t cap)
{
	struct group_entry *e = malloc(sizeof(*e));
	struct find_ctx f = {.user = user, .out = e};
	int rc = e != NULL ? each_line(text, len, member_of, &f) : -1;
	qsort(f.names, f.nnames, sizeof(f.names[0]), cmp_str);
	size_t o = 0;
	if (cap > 0)
		out[0] = '\0';
	for (size_t i = 0; i < f.nnames; i++) {
		o = str_appendf(out, cap, o, "%s%s", i > 0 ? "," : "", f.names[i]);
		free((void *)f.names[i]);
	}
	free(e);
	return rc != 0 || o >= cap ? -1 : 0;
}

/* --- user.ensure --------------------------------------------------------------------- */

static void user_req_free(void *p)
{
	free(p);
}

int probe_user_parse(STEP_PARSE_ARGS)
{
	static const char *const known[] = {"state", "uid",    "gid",         "groups", "shell",
	                                    "home",  "system", "remove_home", NULL};
	if (host_parse_common(obj, st, known, path, epath, ecap, err) != 0)
		return -1;
	struct user_req *q = calloc(1, sizeof(*q));
	if (q == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	st->ext = q;
	st->ext_free = user_req_free;
	if (st->name == NULL || !host_valid_user_name(st->name))
		return host_bad_field(
		    path, "name", epath, ecap, err,
		    "a user name by useradd's rule ([a-z_][a-z0-9_-]*$?, at most 32)");
	if (host_field_state(obj, &q->present, path, epath, ecap, err) != 0 ||
	    host_field_id(obj, "uid", &q->uid, &q->has_uid, path, epath, ecap, err) != 0 ||
	    host_field_id(obj, "gid", &q->gid, &q->has_gid, path, epath, ecap, err) != 0 ||
	    probe_field_str(obj, "shell", false, PATH_FIELD_MAX, &q->shell, path, epath, ecap,
	                    err) ||
	    probe_field_str(obj, "home", false, PATH_FIELD_MAX, &q->home, path, epath, ecap, err) ||
	    probe_field_bool(obj, "system", &q->system, path, epath, ecap, err) != 0 ||
	    probe_field_bool(obj, "remove_home", &q->remove_home, path, epath, ecap, err) != 0)
		return -1;
	if (q->shell != NULL && !host_valid_passwd_path(q->shell))
		return host_bad_field(path, "shell", epath, ecap, err,
		                      "an absolute path without ':' or control characters");
	if (q->home != NULL && !host_valid_passwd_path(q->home))
		return host_bad_field(path, "home", epath, ecap, err,
		                      "an absolute path without ':', '.' or '..' components or "
		                      "control characters");
	json_t *groups = json_object_get(obj, "groups");
	if (groups != NULL) {
		if (!json_is_array(groups) || json_array_size(groups) > HOST_GROUPS_MAX)
			return host_bad_field(path, "groups", epath, ecap, err,
			                      "an array of at most 64 group names");
		q->has_groups = true;
		size_t i;
		json_t *g;
		json_array_foreach(groups, i, g)
		{
			if (!json_is_string(g) || !host_valid_group_name(json_string_value(g))) {
				char f[32];
				snprintf(f, sizeof(f), "groups[%zu]", i);
				return host_bad_field(path, f, epath, ecap, err,
				                      "not a valid group name");
			}
			q->groups[q->ngroups++] = json_string_value(g);
		}
	}
	if (!q->present && (q->has_uid || q->has_gid || groups != NULL || q->shell != NULL ||
	                    q->home != NULL || q->system))
		return host_bad_field(path, "state", epath, ecap, err,
		                      "\"absent\" takes only name and remove_home");
	return 0;
}

/* The wanted supplementary groups as a sorted, deduplicated "a,b" list. */
static void wanted_groups(const struct user_req *q, char *out, size_t cap)
{
	const char *g[HOST_GROUPS_MAX];
	memcpy(g, q->groups, sizeof(g[0]) * (size_t)q->ngroups);
	qsort(g, (size_t)q->ngroups, sizeof(g[0]), cmp_str);
	size_t o = 0;
	out[0] = '\0';
	for (int i = 0; i < q->ngroups; i++)
		if (i == 0 || strcmp(g[i], g[i - 1]) != 0)
			o = str_appendf(out, cap, o, "%s%s", o > 0 ? "," : "", g[i]);
}

static json_t *user_json(const struct passwd_entry *e, const char *groups)
{
	json_t *o = json_object();
	json_object_set_new(o, "uid", json_integer(e->uid));
	json_object_set_new(o, "gid", json_integer(e->gid));
	probe_json_set_bytes(o, "home", e->home, strlen(e->home));
	probe_json_set_bytes(o, "shell", e->shell, strlen(e->shell));
	json_object_set_new(o, "groups", json_string(groups));
	return o;
}

/* A shell must exist and be executable: a typo would lock the account out. */
static bool shell_ok(const char *shell)
{
	return shell == NULL || faccessat(AT_FDCWD, shell, X_OK, AT_EACCESS) == 0;
}

static enum probe_step_status user_remove(const struct probe_step_req *st, const struct user_req *q,
                                          const struct probe_step_ctx *ctx, json_t *result,
                                          const struct passwd_entry *e, const char *groups)
{
	host_change(result, "user", user_json(e, groups), NULL);
	if (q->remove_home)
		host_change_str(result, "home", e->home, NULL);
	if (st->check)
		return STEP_OK;
	const char *keep[] = {"userdel", "--", st->name, NULL};
	const char *purge[] = {"userdel", "-r", "--", st->name, NULL};
	return host_run_ok(ctx, q->remove_home ? purge : keep, "tool_failed", result);
}

static enum probe_step_status user_add(const struct probe_step_req *st, const struct user_req *q,
                                       const struct probe_step_ctx *ctx, json_t *result,
                                       const char *want_groups)
{
	char uid[16], gid[16];
	const char *argv[24];
	int n = 0;
	argv[n++] = "useradd";
	if (q->has_uid) {
		snprintf(uid, sizeof(uid), "%u", q->uid);
		argv[n++] = "-u";
		argv[n++] = uid;
	}
	if (q->has_gid) {
		snprintf(gid, sizeof(gid), "%u", q->gid);
		argv[n++] = "-g";
		argv[n++] = gid;
	}
	if (q->ngroups > 0) {
		argv[n++] = "-G";
		argv[n++] = want_groups;
	}
	if (q->shell != NULL) {
		argv[n++] = "-s";
		argv[n++] = q->shell;
	}
	if (q->home != NULL) {
		argv[n++] = "-d";
		argv[n++] = q->home;
	}
	/* system accounts get no home directory unless one is named */
	argv[n++] = q->system ? "-r" : "-m";
	if (q->system && q->home != NULL)
		argv[n++] = "-m";
	argv[n++] = "--";
	argv[n++] = st->name;
	argv[n] = NULL;
	json_t *after = json_object();
	if (q->has_uid)
		json_object_set_new(after, "uid", json_integer(q->uid));
	if (q->has_gid)
		json_object_set_new(after, "gid", json_integer(q->gid));
	if (q->home != NULL)
		json_object_set_new(after, "home", json_string(q->home));
	if (q->shell != NULL)
		json_object_set_new(after, "shell", json_string(q->shell));
	json_object_set_new(after, "groups", json_string(want_groups));
	json_object_set_new(after, "system", json_boolean(q->system));
	host_change(result, "user", NULL, after);
	return st->check ? STEP_OK : host_run_ok(ctx, argv, "tool_failed", result);
}

static enum probe_step_status user_modify(const struct probe_step_req *st, const struct user_req *q,
                                          const struct probe_step_ctx *ctx, json_t *result,
                                          const struct passwd_entry *e, const char *groups,
                                          const char *want_groups)
{
	char uid[16], gid[16];
	const char *argv[24];
	int n = 0;
	argv[n++] = "usermod";
	if (q->has_uid && q->uid != e->uid) {
		snprintf(uid, sizeof(uid), "%u", q->uid);
		argv[n++] = "-u";
		argv[n++] = uid;
		host_change(result, "uid", json_integer(e->uid), json_integer(q->uid));
	}
	if (q->has_gid && q->gid != e->gid) {
		snprintf(gid, sizeof(gid), "%u", q->gid);
		argv[n++] = "-g";
		argv[n++] = gid;
		host_change(result, "gid", json_integer(e->gid), json_integer(q->gid));
	}
	if (q->has_groups && strcmp(groups, want_groups) != 0) {
		argv[n++] = "-G";
		argv[n++] = want_groups;
		host_change_str(result, "groups", groups, want_groups);
	}
	if (q->shell != NULL && strcmp(q->shell, e->shell) != 0) {
		argv[n++] = "-s";
		argv[n++] = q->shell;
		host_change(result, "shell", json_string(e->shell), json_string(q->shell));
	}
	/* the home field moves; the directory's contents stay where they are */
	if (q->home != NULL && strcmp(q->home, e->home) != 0) {
		argv[n++] = "-d";
		argv[n++] = q->home;
		host_change(result, "home", json_string(e->home), json_string(q->home));
	}
	if (n == 1 || st->check)
		return STEP_OK;
	argv[n++] = "--";
	argv[n++] = st->name;
	argv[n] = NULL;
	return host_run_ok(ctx, argv, "tool_failed", result);
}

/* The account as the tools left it, for the result's "after". */
static void report_after(const char *name, json_t *result)
{
	struct host_file pw = {0}, gr = {0};
	struct vm_err err = {0};
	struct passwd_entry *e = malloc(sizeof(*e));
	char groups[GROUPS_JOINED];
	if (e == NULL || host_file_read(PASSWD_FILE, HOST_TEXT_MAX, &pw, &err) != 0 ||
	    host_file_read(GROUP_FILE, HOST_TEXT_MAX, &gr, &err) != 0)
		goto out;
	if (!pw.exists || host_passwd_find(pw.data, pw.len, name, e) != 1)
		json_object_set_new(result, "after", json_null());
	else if (host_group_memberships(gr.data, gr.len, name, groups, sizeof(groups)) == 0)
		json_object_set_new(result, "after", user_json(e, groups));
out:
	free(e);
	host_file_free(&pw);
	host_file_free(&gr);
}

enum probe_step_status probe_user_run(STEP_RUN_ARGS)
{
	const struct user_req *q = st->ext;
	host_result_init(result, st);
	struct host_file pw = {0}, gr = {0};
	struct vm_err err = {0};
	struct passwd_entry *e = malloc(sizeof(*e));
	char groups[GROUPS_JOINED], want[GROUPS_JOINED];
	enum probe_step_status s = STEP_OK;
	if (e == NULL) {
		s = host_fail(result, "internal", "out of memory");
		goto out;
	}
	if (host_file_read(PASSWD_FILE, HOST_TEXT_MAX, &pw, &err) != 0 ||
	    host_file_read(GROUP_FILE, HOST_TEXT_MAX, &gr, &err) != 0) {
		s = host_fail(result, fs_err_name(&err), "%s", err.msg);
		goto out;
	}
	bool exists = pw.exists && host_passwd_find(pw.data, pw.len, st->name, e) == 1;
	if (host_group_memberships(gr.data, gr.len, st->name, groups, sizeof(groups)) != 0) {
		s = host_fail(result, "internal", "%s is a member of too many groups", st->name);
		goto out;
	}
	wanted_groups(q, want, sizeof(want));
	json_object_set_new(result, "before", exists ? user_json(e, groups) : json_null());
	if (!q->present) {
		if (exists)
			s = user_remove(st, q, ctx, result, e, groups);
		goto out;
	}
	if (!shell_ok(q->shell)) {
		s = host_fail(result, "bad_shell", "shell %s does not exist or is not executable",
		              q->shell);
		goto out;
	}
	s = exists ? user_modify(st, q, ctx, result, e, groups, want)
	           : user_add(st, q, ctx, result, want);
	if (s == STEP_OK && !st->check && json_is_true(json_object_get(result, "changed")))
		report_after(st->name, result);
out:
	if (s != STEP_OK)
		json_object_set_new(result, "changed", json_false());
	free(e);
	host_file_free(&pw);
	host_file_free(&gr);
	return s;
}
