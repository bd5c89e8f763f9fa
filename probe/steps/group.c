/* Step "group.ensure": a local group as asked (gid, system) through
 * groupadd/groupmod/groupdel argv, the state read from /etc/group. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fs.h"
#include "core/passwd.h"
#include "probe/steps/steps.h"

#define GROUP_FILE "/etc/group"

struct group_req {
	bool present, has_gid, system;
	uint32_t gid;
};

static void group_req_free(void *p)
{
	free(p);
}

int probe_group_parse(STEP_PARSE_ARGS)
{
	static const char *const known[] = {"state", "gid", "system", NULL};
	if (host_parse_common(obj, st, known, path, epath, ecap, err) != 0)
		return -1;
	struct group_req *q = calloc(1, sizeof(*q));
	if (q == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	st->ext = q;
	st->ext_free = group_req_free;
	if (st->name == NULL || !host_valid_group_name(st->name))
		return host_bad_field(
		    path, "name", epath, ecap, err,
		    "a group name by groupadd's rule ([a-z_][a-z0-9_-]*$?, at most "
		    "32)");
	if (host_field_state(obj, &q->present, path, epath, ecap, err) != 0 ||
	    host_field_id(obj, "gid", &q->gid, &q->has_gid, path, epath, ecap, err) != 0 ||
	    probe_field_bool(obj, "system", &q->system, path, epath, ecap, err) != 0)
		return -1;
	if (!q->present && (q->has_gid || q->system))
		return host_bad_field(path, "state", epath, ecap, err,
		                      "\"absent\" takes only the name");
	return 0;
}

static json_t *group_json(const struct group_entry *e)
{
	json_t *o = json_object();
	json_object_set_new(o, "gid", json_integer(e->gid));
	return o;
}

enum probe_step_status probe_group_run(STEP_RUN_ARGS)
{
	const struct group_req *q = st->ext;
	host_result_init(result, st);
	struct host_file gr = {0};
	struct vm_err err = {0};
	struct group_entry *e = malloc(sizeof(*e));
	enum probe_step_status s = STEP_OK;
	char gid[16];
	snprintf(gid, sizeof(gid), "%u", q->gid);
	if (e == NULL) {
		s = host_fail(result, "internal", "out of memory");
		goto out;
	}
	if (host_file_read(GROUP_FILE, HOST_TEXT_MAX, &gr, &err) != 0) {
		s = host_fail(result, fs_err_name(&err), "%s", err.msg);
		goto out;
	}
	bool exists = gr.exists && host_group_find(gr.data, gr.len, st->name, e) == 1;
	json_object_set_new(result, "before", exists ? group_json(e) : json_null());
	if (!q->present) {
		if (!exists)
			goto out;
		host_change(result, "group", group_json(e), NULL);
		const char *argv[] = {"groupdel", "--", st->name, NULL};
		if (!st->check)
			s = host_run_ok(ctx, argv, "tool_failed", result);
	} else if (!exists) {
		json_t *after = json_object();
		if (q->has_gid)
			json_object_set_new(after, "gid", json_integer(q->gid));
		json_object_set_new(after, "system", json_boolean(q->system));
		host_change(result, "group", NULL, after);
		const char *argv[8];
		int n = 0;
		argv[n++] = "groupadd";
		if (q->has_gid) {
			argv[n++] = "-g";
			argv[n++] = gid;
		}
		if (q->system)
			argv[n++] = "-r";
		argv[n++] = "--";
		argv[n++] = st->name;
		argv[n] = NULL;
		if (!st->check)
			s = host_run_ok(ctx, argv, "tool_failed", result);
	} else if (q->has_gid && q->gid != e->gid) {
		host_change(result, "gid", json_integer(e->gid), json_integer(q->gid));
		const char *argv[] = {"groupmod", "-g", gid, "--", st->name, NULL};
		if (!st->check)
			s = host_run_ok(ctx, argv, "tool_failed", result);
	}
	if (s == STEP_OK && !st->check && json_is_true(json_object_get(result, "changed"))) {
		host_file_free(&gr);
		bool now = host_file_read(GROUP_FILE, HOST_TEXT_MAX, &gr, &err) == 0 && gr.exists &&
		           host_group_find(gr.data, gr.len, st->name, e) == 1;
		json_object_set_new(result, "after", now ? group_json(e) : json_null());
	}
out:
	if (s != STEP_OK)
		json_object_set_new(result, "changed", json_false());
	free(e);
	host_file_free(&gr);
	return s;
}
