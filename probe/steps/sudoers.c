/* Step "sudoers.ensure": one rule as a drop-in /etc/sudoers.d/<name> (0440
 * root:root), checked with `visudo -cf` on a private copy before it is
 * installed and with `visudo -c` after (the old bytes come back when sudo
 * would not accept the whole configuration). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/fs.h"
#include "probe/steps/steps.h"

#define SUDOERS_DIR     "/etc/sudoers.d"
#define SUDO_CMD_MAX    1024
#define SUDOERS_NAMEMAX 64

struct sudoers_req {
	bool present;
	struct host_sudo_rule rule;
};

bool host_valid_sudoers_name(const char *s)
{
	size_t n = s != NULL ? strlen(s) : 0;
	if (n == 0 || n > SUDOERS_NAMEMAX || s[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		          (c >= '0' && c <= '9') || c == '_' || c == '-';
		if (!ok)
			return false;
	}
	return true;
}

bool host_valid_sudo_command(const char *s)
{
	size_t n = s != NULL ? strlen(s) : 0;
	if (n == 0 || n > SUDO_CMD_MAX)
		return false;
	if (strcmp(s, "ALL") == 0)
		return true;
	if (s[0] != '/')
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c <= 0x20 || c >= 0x7f) {
			/* single spaces between words only */
			if (c != ' ' || i + 1 == n || s[i + 1] == ' ')
				return false;
			continue;
		}
		if (strchr(",:=\\#\"!", c) != NULL)
			return false;
	}
	return true;
}

int host_sudoers_render(const char *name, const struct host_sudo_rule *r, struct buf *out)
{
	buf_free(out);
	if (buf_printf(out,
	               "# Managed by vm-agent (sudoers.ensure %s): changes here are overwritten.\n",
	               name) != 0 ||
	    buf_printf(out, "%s%s ALL=(ALL:ALL) %s", r->group != NULL ? "%" : "",
	               r->group != NULL ? r->group : r->user, r->nopasswd ? "NOPASSWD: " : "") != 0)
		return -1;
	for (int i = 0; i < r->ncommands; i++)
		if (buf_printf(out, "%s%s", i > 0 ? ", " : "", r->commands[i]) != 0)
			return -1;
	return buf_append(out, "\n", 1);
}

static void sudoers_req_free(void *p)
{
	free(p);
}

int probe_sudoers_parse(STEP_PARSE_ARGS)
{
	static const char *const known[] = {"state", "user", "group", "commands", "nopasswd", NULL};
	if (host_parse_common(obj, st, known, path, epath, ecap, err) != 0)
		return -1;
	struct sudoers_req *q = calloc(1, sizeof(*q));
	if (q == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	st->ext = q;
	st->ext_free = sudoers_req_free;
	if (st->name == NULL || !host_valid_sudoers_name(st->name))
		return host_bad_field(
		    path, "name", epath, ecap, err,
		    "a drop-in name of [A-Za-z0-9_-], 1-64 characters (sudo ignores "
		    "names with '.' or '~')");
	struct host_sudo_rule *r = &q->rule;
	if (host_field_state(obj, &q->present, path, epath, ecap, err) != 0 ||
	    probe_field_str(obj, "user", false, 64, &r->user, path, epath, ecap, err) != 0 ||
	    probe_field_str(obj, "group", false, 64, &r->group, path, epath, ecap, err) != 0 ||
	    probe_field_bool(obj, "nopasswd", &r->nopasswd, path, epath, ecap, err) != 0)
		return -1;
	if (r->user != NULL && !host_valid_user_name(r->user))
		return host_bad_field(path, "user", epath, ecap, err, "not a valid user name");
	if (r->group != NULL && !host_valid_group_name(r->group))
		return host_bad_field(path, "group", epath, ecap, err, "not a valid group name");
	json_t *cmds = json_object_get(obj, "commands");
	if (!q->present) {
		if (r->user != NULL || r->group != NULL || cmds != NULL)
			return host_bad_field(path, "state", epath, ecap, err,
			                      "\"absent\" takes only the name");
		return 0;
	}
	if ((r->user == NULL) == (r->group == NULL))
		return host_bad_field(path, "user", epath, ecap, err,
		                      "exactly one of user or group");
	if (!json_is_array(cmds) || json_array_size(cmds) == 0 ||
	    json_array_size(cmds) > HOST_SUDO_CMDS_MAX)
		return host_bad_field(path, "commands", epath, ecap, err,
		                      "an array of 1-64 commands");
	size_t i;
	json_t *c;
	json_array_foreach(cmds, i, c)
	{
		if (!json_is_string(c) || !host_valid_sudo_command(json_string_value(c))) {
			char f[32];
			snprintf(f, sizeof(f), "commands[%zu]", i);
			return host_bad_field(
			    path, f, epath, ecap, err,
			    "\"ALL\" or an absolute path with arguments (no , : = \\ # "
			    "\" ! or control characters)");
		}
		r->commands[r->ncommands++] = json_string_value(c);
	}
	return 0;
}

/* visudo -c[f file]: STEP_OK when sudo accepts it, else the step's failure. */
static enum probe_step_status visudo(const struct probe_step_ctx *ctx, const char *file,
                                     json_t *result)
{
	const char *one[] = {"visudo", "-c", "-q", "-f", file, NULL};
	const char *all[] = {"visudo", "-c", "-q", NULL};
	return host_run_ok(ctx, file != NULL ? one : all, "visudo_rejected", result);
}

/* Checks text as a sudoers file of its own in the agent's private work dir. */
static enum probe_step_status check_copy(const struct probe_step_ctx *ctx, const char *name,
                                         const char *text, size_t len, json_t *result)
{
	char tmp[PATH_MAX];
	struct vm_err err = {0};
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s/sudoers-check-%s", ctx->work_dir, name) >=
	    sizeof(tmp))
		return host_fail(result, "internal", "work dir path too long");
	if (host_file_write(tmp, text, len, 0440, 0, 0, &err) != 0)
		return host_fail(result, fs_err_name(&err), "%s", err.msg);
	enum probe_step_status s = visudo(ctx, tmp, result);
	host_file_remove(tmp, &err);
	return s;
}

enum probe_step_status probe_sudoers_run(STEP_RUN_ARGS)
{
	const struct sudoers_req *q = st->ext;
	host_result_init(result, st);
	char path[PATH_MAX];
	snprintf(path, sizeof(path), SUDOERS_DIR "/%s", st->name);
	json_object_set_new(result, "path", json_string(path));
	struct host_file cur;
	struct vm_err err = {0};
	struct buf text;
	buf_init(&text, HOST_TEXT_MAX);
	struct host_backup bk = {0};
	enum probe_step_status s = STEP_OK;
	bool written = false;
	if (host_file_read(path, HOST_TEXT_MAX, &cur, &err) != 0)
		return host_fail(result, fs_err_name(&err), "%s", err.msg);
	if (!q->present) {
		if (cur.exists) {
			host_change_file(result, path, &cur, NULL, 0);
			if (!st->check && host_file_remove(path, &err) != 0)
				s = host_fail(result, fs_err_name(&err), "%s", err.msg);
		}
		goto out;
	}
	if (host_sudoers_render(st->name, &q->rule, &text) != 0) {
		s = host_fail(result, "internal", "out of memory");
		goto out;
	}
	bool same =
	    cur.exists && cur.len == text.len && memcmp(cur.data, buf_data(&text), text.len) == 0;
	if (same && cur.mode == 0440 && cur.uid == 0 && cur.gid == 0)
		goto out;
	if (!same)
		host_change_file(result, path, &cur, (const char *)buf_data(&text), text.len);
	else
		host_change(result, "mode",
		            json_sprintf("%04o %u:%u", (unsigned)cur.mode, (unsigned)cur.uid,
		                         (unsigned)cur.gid),
		            json_string("0440 0:0"));
	if (st->check)
		goto out;
	if ((s = check_copy(ctx, st->name, (const char *)buf_data(&text), text.len, result)) !=
	    STEP_OK)
		goto out;
	if (host_backup_take(&bk, path, HOST_TEXT_MAX, &err) != 0 ||
	    host_file_write(path, buf_data(&text), text.len, 0440, 0, 0, &err) != 0) {
		s = host_fail(result, fs_err_name(&err), "%s", err.msg);
		goto out;
	}
	written = true;
	/* the rule alone was fine; the whole configuration must still be */
	if ((s = visudo(ctx, NULL, result)) != STEP_OK) {
		if (host_backup_restore(&bk, &err) != 0)
			json_object_set_new(result, "restore_error", json_string(err.msg));
		else {
			written = false;
			json_object_set_new(result, "restored", json_true());
		}
	}
out:
	/* a refused rule changed nothing */
	if (s != STEP_OK && !written && q->present)
		json_object_set_new(result, "changed", json_false());
	host_backup_free(&bk);
	host_file_free(&cur);
	buf_free(&text);
	return s;
}
