/* Steps "cron.ensure" and "cron.list": one marked block per managed entry in
 * a user's crontab (the model in crontab.c), read with `crontab -l -u USER`
 * and installed with `crontab -u USER -` from stdin: crontab(1) owns the
 * spool file, its locking and cron's reload; nothing goes through a shell. */
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/proc.h"
#include "probe/steps/crontab.h"
#include "probe/steps/steps.h"

#define CRON_LIST_MAX 2048 /* entries listed by cron.list; more: "truncated" */

struct cron_params {
	const char *user;
	bool absent;
	struct cron_job job; /* name, schedule and env owned here; command borrowed */
	char sched[CRON_SCHED_MAX + 1];
};

static void params_free(void *p)
{
	struct cron_params *cp = p;
	if (cp == NULL)
		return;
	for (size_t i = 0; i < cp->job.nenv; i++)
		free(cp->job.env[i]);
	free(cp);
}

static int user_field(json_t *obj, const char **user, const char *path, char *epath, size_t ecap,
                      struct vm_err *err)
{
	if (probe_field_str(obj, "user", true, 32, user, path, epath, ecap, err) != 0)
		return -1;
	if (!host_valid_user_name(*user))
		return host_bad_field(path, "user", epath, ecap, err,
		                      "not a user name ([a-z_][a-z0-9_-]*, at most 32)");
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int env_field(json_t *obj, struct cron_params *cp, const char *path, char *epath,
                     size_t ecap, struct vm_err *err)
{
	json_t *env = json_object_get(obj, "env");
	if (env == NULL || json_is_null(env))
		return 0;
	if (!json_is_object(env) || json_object_size(env) > CRON_ENV_MAX)
		return host_bad_field(path, "env", epath, ecap, err,
		                      "an object of at most 16 NAME: value strings");
	const char *key;
	json_t *v;
	json_object_foreach(env, key, v)
	{
		char p[96];
		snprintf(p, sizeof(p), "env.%.64s", key);
		struct vm_err why;
		if (!json_is_string(v))
			return host_bad_field(path, p, epath, ecap, err, "must be a string");
		if (cron_env_check(key, json_string_value(v), &why) != 0)
			return host_bad_field(path, p, epath, ecap, err, why.msg);
		char *nv = malloc(strlen(key) + json_string_length(v) + 2);
		if (nv == NULL)
			return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
		sprintf(nv, "%s=%s", key, json_string_value(v));
		cp->job.env[cp->job.nenv++] = nv;
	}
	/* one order whatever the caller's: the second run compares equal */
	qsort(cp->job.env, cp->job.nenv, sizeof(cp->job.env[0]), cmp_str);
	return 0;
}

int probe_cron_ensure_parse(STEP_PARSE_ARGS)
{
	static const char *const known[] = {"user", "schedule", "command", "env", "state", NULL};
	if (host_parse_common(obj, st, known, path, epath, ecap, err) != 0)
		return -1;
	struct cron_params *cp = calloc(1, sizeof(*cp));
	if (cp == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	st->ext = cp;
	st->ext_free = params_free;
	const char *name, *state = NULL, *sched = NULL;
	struct vm_err why;
	if (user_field(obj, &cp->user, path, epath, ecap, err) != 0 ||
	    probe_field_str(obj, "name", true, CRON_NAME_MAX, &name, path, epath, ecap, err) != 0 ||
	    probe_field_str(obj, "state", false, 16, &state, path, epath, ecap, err) != 0)
		return -1;
	if (cron_name_check(name, &why) != 0)
		return host_bad_field(path, "name", epath, ecap, err, why.msg);
	cp->job.name = (char *)name;
	if (state != NULL && strcmp(state, "present") != 0 && strcmp(state, "absent") != 0)
		return host_bad_field(path, "state", epath, ecap, err, "\"present\" or \"absent\"");
	cp->absent = state != NULL && strcmp(state, "absent") == 0;
	if (cp->absent) {
		/* nothing else means anything for a removal: refuse it rather than ignore it */
		static const char *const unused[] = {"schedule", "command", "env", NULL};
		for (int i = 0; unused[i] != NULL; i++)
			if (json_object_get(obj, unused[i]) != NULL)
				return host_bad_field(path, unused[i], epath, ecap, err,
				                      "not used with state \"absent\"");
		return 0;
	}
	const char *command;
	if (probe_field_str(obj, "schedule", true, CRON_SCHED_MAX, &sched, path, epath, ecap,
	                    err) != 0 ||
	    probe_field_str(obj, "command", true, CRON_LINE_MAX, &command, path, epath, ecap,
	                    err) != 0)
		return -1;
	if (cron_schedule_check(sched, cp->sched, sizeof(cp->sched), &why) != 0)
		return host_bad_field(path, "schedule", epath, ecap, err, why.msg);
	if (cron_command_check(command, &why) != 0)
		return host_bad_field(path, "command", epath, ecap, err, why.msg);
	cp->job.schedule = cp->sched;
	cp->job.command = (char *)command;
	cp->job.valid = true;
	if (env_field(obj, cp, path, epath, ecap, err) != 0)
		return -1;
	/* the line cron reads must fit: checked here so it is a 400, not a failed step */
	struct cron_tab tab = {0};
	int rc = cron_set(&tab, &cp->job, &why);
	cron_tab_free(&tab);
	return rc != 0 ? host_bad_field(path, "command", epath, ecap, err, why.msg) : 0;
}

struct cron_list_params {
	const char *user;
};

int probe_cron_list_parse(STEP_PARSE_ARGS)
{
	static const char *const known[] = {"user", NULL};
	if (host_parse_common(obj, st, known, path, epath, ecap, err) != 0)
		return -1;
	struct cron_list_params *lp = calloc(1, sizeof(*lp));
	if (lp == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	st->ext = lp;
	st->ext_free = free;
	return user_field(obj, &lp->user, path, epath, ecap, err);
}

/* The user's crontab text (empty when there is none) into *text. */
static enum probe_step_status crontab_read(const struct probe_step_ctx *ctx, const char *user,
                                           json_t *result, char **text, size_t *len)
{
	char buf[4096];
	struct passwd pw, *pp = NULL;
	if (getpwnam_r(user, &pw, buf, sizeof(buf), &pp) != 0 || pp == NULL)
		return host_fail(result, "no_such_user", "no user %s on this host", user);
	const char *argv[] = {"crontab", "-l", "-u", user, NULL};
	struct host_cmd c = {.argv = argv, .out_cap = CRON_TEXT_MAX + 1};
	struct proc_result res;
	struct vm_err err = {0};
	if (host_run(ctx, &c, &res, &err) != 0)
		return host_fail(result, "crontab_failed", "crontab -l: %s", err.msg);
	enum probe_step_status ret = STEP_OK;
	if (res.timed_out || res.canceled) {
		ret = host_fail_proc(result, "crontab_failed", "crontab -l", &res);
	} else if (res.exit_code == 0) {
		if (res.out_len > CRON_TEXT_MAX) {
			ret = host_fail(result, "crontab_too_large",
			                "the crontab of %s is larger than %u bytes; not changed",
			                user, CRON_TEXT_MAX);
		} else {
			*text = res.out ? res.out : strdup("");
			*len = res.out ? res.out_len : 0;
			res.out = NULL;
			if (*text == NULL)
				ret = host_fail(result, "internal", "out of memory");
		}
	} else if (res.err != NULL && strstr(res.err, "no crontab for") != NULL) {
		*text = strdup("");
		*len = 0;
		if (*text == NULL)
			ret = host_fail(result, "internal", "out of memory");
	} else {
		ret = host_fail_proc(result, "crontab_failed", "crontab -l", &res);
	}
	proc_result_free(&res);
	return ret;
}

static json_t *job_json(const struct cron_job *j)
{
	if (j == NULL)
		return NULL;
	json_t *o = json_object();
	if (!j->valid) {
		json_object_set_new(o, "valid", json_false());
		probe_json_set_bytes(o, "raw", j->raw ? j->raw : "", j->raw ? strlen(j->raw) : 0);
		return o;
	}
	json_object_set_new(o, "schedule", json_string(j->schedule));
	probe_json_set_bytes(o, "command", j->command, strlen(j->command));
	json_t *env = json_object();
	for (size_t i = 0; i < j->nenv; i++) {
		const char *eq = strchr(j->env[i], '=');
		char k[72];
		snprintf(k, sizeof(k), "%.*s", (int)(eq - j->env[i]), j->env[i]);
		/* a hand-edited block may hold any bytes */
		probe_json_set_bytes(env, k, eq + 1, strlen(eq + 1));
	}
	json_object_set_new(o, "env", env);
	return o;
}

static bool job_equal(const struct cron_job *a, const struct cron_job *b)
{
	if (!a->valid || !b->valid || strcmp(a->schedule, b->schedule) != 0 ||
	    strcmp(a->command, b->command) != 0 || a->nenv != b->nenv)
		return false;
	for (size_t i = 0; i < a->nenv; i++)
		if (strcmp(a->env[i], b->env[i]) != 0)
			return false;
	return true;
}

enum probe_step_status probe_cron_ensure_run(STEP_RUN_ARGS)
{
	const struct cron_params *cp = st->ext;
	host_result_init(result, st);
	json_object_set_new(result, "user", json_string(cp->user));
	json_object_set_new(result, "entry", json_string(cp->job.name));
	char *text = NULL;
	size_t len = 0;
	enum probe_step_status ret = crontab_read(ctx, cp->user, result, &text, &len);
	if (ret != STEP_OK)
		return ret;
	struct cron_tab tab;
	struct vm_err err = {0};
	char *next = NULL;
	struct buf diff;
	buf_init(&diff, HOST_DIFF_MAX + 256);
	if (cron_parse(text, len, &tab, &err) != 0) {
		ret = host_fail(result, "invalid_crontab",
		                "the crontab of %s cannot be edited safely: %s; fix it by hand",
		                cp->user, err.msg);
		goto out;
	}
	struct cron_job *old = cron_find(&tab, cp->job.name);
	const char *action = "none";
	json_t *before = job_json(old);
	if (cp->absent && old != NULL) {
		cron_remove(&tab, cp->job.name);
		action = "removed";
	} else if (!cp->absent && (old == NULL || !job_equal(old, &cp->job))) {
		action = old == NULL ? "created" : "updated";
		if (cron_set(&tab, &cp->job, &err) != 0) {
			json_decref(before);
			ret = host_fail(result, "invalid_request", "%s", err.msg);
			goto out;
		}
	}
	json_object_set_new(result, "action", json_string(action));
	if (strcmp(action, "none") == 0) {
		json_decref(before);
		goto out;
	}
	size_t nlen = 0;
	if ((next = cron_render(&tab, &nlen)) == NULL) {
		json_decref(before);
		ret = host_fail(result, "crontab_too_large",
		                "the new crontab would be larger than %u bytes; not changed",
		                CRON_TEXT_MAX);
		goto out;
	}
	json_t *ch = host_change(result, "cron", before,
	                         cp->absent ? NULL : job_json(cron_find(&tab, cp->job.name)));
	char label[128];
	snprintf(label, sizeof(label), "crontab/%s", cp->user);
	if (host_diff(text, len, next, nlen, label, HOST_DIFF_MAX, &diff) >= 0)
		probe_json_set_bytes(ch, "diff", (const char *)buf_data(&diff), diff.len);
	if (st->check)
		goto out;
	/* crontab(1) installs it: its own temp file, owner and mode, and cron's reload */
	const char *argv[] = {"crontab", "-u", cp->user, "-", NULL};
	struct host_cmd c = {.argv = argv, .stdin_data = next, .stdin_len = nlen};
	struct proc_result res;
	if (host_run(ctx, &c, &res, &err) != 0) {
		ret = host_fail(result, "crontab_failed", "crontab -u %s -: %s", cp->user, err.msg);
		goto out;
	}
	if (res.exit_code != 0 || res.term_signal != 0 || res.timed_out || res.canceled)
		ret = host_fail_proc(result, "crontab_failed", "crontab", &res);
	proc_result_free(&res);
out:
	buf_free(&diff);
	free(next);
	free(text);
	cron_tab_free(&tab);
	return ret;
}

static const char *const kind_names[] = {"blank", "comment", "env", "job", "other"};

enum probe_step_status probe_cron_list_run(STEP_RUN_ARGS)
{
	const struct cron_list_params *lp = st->ext;
	host_result_init(result, st);
	json_object_set_new(result, "user", json_string(lp->user));
	char *text = NULL;
	size_t len = 0;
	enum probe_step_status ret = crontab_read(ctx, lp->user, result, &text, &len);
	if (ret != STEP_OK)
		return ret;
	struct cron_tab tab;
	struct vm_err err = {0};
	if (cron_parse(text, len, &tab, &err) != 0) {
		ret = host_fail(result, "invalid_crontab", "the crontab of %s: %s", lp->user,
		                err.msg);
		goto out;
	}
	json_t *managed = json_array(), *unmanaged = json_array();
	size_t listed = 0;
	bool truncated = false;
	for (size_t i = 0; i < tab.n; i++) {
		const struct cron_item *it = &tab.items[i];
		if (!it->managed && it->kind == CRON_BLANK)
			continue;
		if (listed++ == CRON_LIST_MAX) {
			truncated = true;
			break;
		}
		json_t *o;
		if (it->managed) {
			o = job_json(&it->job);
			if (it->job.valid)
				json_object_set_new(o, "valid", json_true());
			json_object_set_new(o, "name", json_string(it->job.name));
			json_object_set_new(o, "line", json_integer((json_int_t)it->line_no));
			json_array_append_new(managed, o);
			continue;
		}
		o = json_object();
		json_object_set_new(o, "line", json_integer((json_int_t)it->line_no));
		json_object_set_new(o, "kind", json_string(kind_names[it->kind]));
		probe_json_set_bytes(o, "text", it->line, strlen(it->line));
		char sched[CRON_SCHED_MAX + 1];
		const char *cmd;
		if (it->kind == CRON_JOB &&
		    cron_split_job(it->line, sched, sizeof(sched), &cmd) == 0) {
			json_object_set_new(o, "schedule", json_string(sched));
			probe_json_set_bytes(o, "command", cmd, strlen(cmd));
		}
		json_array_append_new(unmanaged, o);
	}
	json_object_set_new(result, "managed", managed);
	json_object_set_new(result, "unmanaged", unmanaged);
	json_object_set_new(result, "truncated", json_boolean(truncated));
out:
	free(text);
	cron_tab_free(&tab);
	return ret;
}
