/* Step "service": start, stop, restart, reload, enable, disable or read a
 * systemd unit through systemctl (argv only). Reports the active/sub state,
 * main PID and enablement before and after; start/stop/enable/disable do
 * nothing when the unit is already so (changed: false); reload of a unit
 * that cannot reload is an error, never a silent restart. Also the parser
 * of systemctl show. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "probe/steps/steps.h"

enum svc_action { SVC_START, SVC_STOP, SVC_RESTART, SVC_RELOAD, SVC_ENABLE, SVC_DISABLE, SVC_STATUS };

static const char *const action_names[] = {"start",  "stop",    "restart", "reload",
                                           "enable", "disable", "status",  NULL};

struct svc_args {
	char unit[264];
	enum svc_action action;
};

/* --- parser ---------------------------------------------------------------------- */

int svc_parse_show(const char *data, size_t len, struct svc_state *out)
{
	static const struct {
		const char *key;
		size_t off;
	} strs[] = {{"LoadState", offsetof(struct svc_state, load)},
	            {"ActiveState", offsetof(struct svc_state, active)},
	            {"SubState", offsetof(struct svc_state, sub)},
	            {"UnitFileState", offsetof(struct svc_state, unit_file)}};
	memset(out, 0, sizeof(*out));
	size_t i = 0, ll;
	const char *line;
	while ((line = host_next_line(data, len, &i, &ll)) != NULL) {
		if (ll == 0)
			continue;
		const char *eq = memchr(line, '=', ll);
		if (eq == NULL || eq == line)
			return -1;
		size_t kl = (size_t)(eq - line), vl = ll - kl - 1;
		const char *v = eq + 1;
		for (size_t k = 0; k < sizeof(strs) / sizeof(strs[0]); k++) {
			if (strlen(strs[k].key) != kl || memcmp(strs[k].key, line, kl) != 0)
				continue;
			char *dst = (char *)out + strs[k].off;
			if (vl >= sizeof(out->load) || memchr(v, '\0', vl) != NULL)
				return -1;
			memcpy(dst, v, vl);
			dst[vl] = '\0';
		}
		if (kl == 7 && memcmp(line, "MainPID", 7) == 0) {
			long pid = 0;
			if (vl == 0 || vl > 10)
				return -1;
			for (size_t k = 0; k < vl; k++) {
				if (v[k] < '0' || v[k] > '9')
					return -1;
				pid = pid * 10 + (v[k] - '0');
			}
			out->main_pid = pid;
		}
		if (kl == 9 && memcmp(line, "CanReload", 9) == 0)
			out->can_reload = vl == 3 && memcmp(v, "yes", 3) == 0;
	}
	return 0;
}

/* --- parse ----------------------------------------------------------------------- */

int probe_service_parse(STEP_PARSE_ARGS)
{
	static const char *const known[] = {"action", NULL};
	const char *name = NULL, *action = NULL;
	if (host_parse_common(obj, st, known, path, epath, ecap, err) != 0 ||
	    probe_field_str(obj, "name", true, PROBE_NAME_MAX, &name, path, epath, ecap, err) != 0 ||
	    probe_field_str(obj, "action", true, 16, &action, path, epath, ecap, err) != 0)
		return -1;
	if (!host_valid_unit_name(name))
		return host_bad_field(path, "name", epath, ecap, err,
		                      "not a systemd unit name (letters, digits, ':', '_', '.', "
		                      "'\\', '-', one '@'; a unit type suffix or none)");
	struct svc_args *a = calloc(1, sizeof(*a));
	if (a == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	st->ext = a;
	st->ext_free = free;
	int k = 0;
	while (action_names[k] != NULL && strcmp(action_names[k], action) != 0)
		k++;
	if (action_names[k] == NULL)
		return host_bad_field(path, "action", epath, ecap, err,
		                      "one of start, stop, restart, reload, enable, disable, status");
	a->action = (enum svc_action)k;
	/* no suffix means a service, as systemctl reads it */
	snprintf(a->unit, sizeof(a->unit), "%s%s", name, strchr(name, '.') ? "" : ".service");
	return 0;
}

/* --- run ------------------------------------------------------------------------- */

static int show(const struct probe_step_ctx *ctx, const char *unit, struct svc_state *s,
                json_t *result, enum probe_step_status *status)
{
	const char *argv[] = {"systemctl", "show", "--no-pager",
	                      "-p", "LoadState,ActiveState,SubState,MainPID,UnitFileState,CanReload",
	                      "--", unit, NULL};
	struct host_cmd c = {.argv = argv, .out_cap = 64 << 10};
	struct proc_result res = {0};
	struct vm_err err = {0};
	if (host_run(ctx, &c, &res, &err) != 0) {
		*status = host_fail(result, "systemctl_failed", "systemctl: %s", err.msg);
		return -1;
	}
	if (res.exit_code != 0) {
		*status = host_fail_proc(result, "systemctl_failed", "systemctl show", &res);
		proc_result_free(&res);
		return -1;
	}
	int rc = svc_parse_show(res.out != NULL ? res.out : "", res.out_len, s);
	proc_result_free(&res);
	if (rc != 0) {
		*status = host_fail(result, "systemctl_failed", "systemctl show: output not understood");
		return -1;
	}
	return 0;
}

static json_t *state_json(const struct svc_state *s)
{
	return json_pack("{s:s, s:s, s:I, s:s, s:b}", "active_state", s->active, "sub_state",
	                 s->sub, "main_pid", (json_int_t)s->main_pid, "enabled", s->unit_file,
	                 "can_reload", s->can_reload);
}

static bool is_active(const struct svc_state *s)
{
	return strcmp(s->active, "active") == 0 || strcmp(s->active, "reloading") == 0 ||
	       strcmp(s->active, "activating") == 0;
}

static bool is_stopped(const struct svc_state *s)
{
	return strcmp(s->active, "inactive") == 0 || strcmp(s->active, "failed") == 0;
}

enum probe_step_status probe_service_run(STEP_RUN_ARGS)
{
	const struct svc_args *a = st->ext;
	host_result_init(result, st);
	json_object_set_new(result, "unit", json_string(a->unit));
	json_object_set_new(result, "action", json_string(action_names[a->action]));
	enum probe_step_status status = STEP_OK;
	struct svc_state before, after;
	if (show(ctx, a->unit, &before, result, &status) != 0)
		return status;
	json_object_set_new(result, "before", state_json(&before));
	if (strcmp(before.load, "not-found") == 0)
		return host_fail(result, "not_found", "unit %s not found", a->unit);
	if (strcmp(before.load, "masked") == 0 && a->action != SVC_STATUS &&
	    a->action != SVC_STOP && a->action != SVC_DISABLE)
		return host_fail(result, "masked", "unit %s is masked", a->unit);

	const char *verb = NULL;
	switch (a->action) {
	case SVC_START:
		if (!is_active(&before)) {
			verb = "start";
			host_change_str(result, "active_state", before.active, "active");
		}
		break;
	case SVC_STOP:
		if (!is_stopped(&before)) {
			verb = "stop";
			host_change_str(result, "active_state", before.active, "inactive");
		}
		break;
	case SVC_RESTART:
		verb = "restart";
		/* an action, not a state: every restart is a change (main PID before/after) */
		host_change(result, "main_pid", json_integer((json_int_t)before.main_pid), NULL);
		break;
	case SVC_RELOAD:
		if (!before.can_reload)
			return host_fail(result, "cannot_reload",
			                 "%s cannot reload (CanReload=no: no ExecReload); nothing done, "
			                 "use restart",
			                 a->unit);
		if (!is_active(&before))
			return host_fail(result, "not_active",
			                 "%s is %s: only a running unit can reload", a->unit,
			                 before.active);
		verb = "reload";
		host_change_str(result, "reloaded", before.active, "active");
		break;
	case SVC_ENABLE:
		if (strcmp(before.unit_file, "enabled") == 0)
			break;
		if (strcmp(before.unit_file, "disabled") != 0)
			return host_fail(result, "cannot_enable",
			                 "%s cannot be enabled (unit file state \"%s\")", a->unit,
			                 before.unit_file);
		verb = "enable";
		host_change_str(result, "enabled", before.unit_file, "enabled");
		break;
	case SVC_DISABLE:
		if (strcmp(before.unit_file, "enabled") == 0) {
			verb = "disable";
			host_change_str(result, "enabled", before.unit_file, "disabled");
		}
		break;
	case SVC_STATUS:
		break;
	}
	if (verb == NULL || st->check) {
		json_object_set_new(result, "after", state_json(&before));
		return STEP_OK;
	}
	probe_step_event(ctx, "info", NULL, "systemctl %s %s", verb, a->unit);
	const char *argv[] = {"systemctl", "--no-ask-password", "--no-pager", verb, "--", a->unit,
	                      NULL};
	struct host_cmd c = {.argv = argv, .label = "systemctl"};
	struct proc_result res = {0};
	struct vm_err err = {0};
	if (host_run(ctx, &c, &res, &err) != 0)
		return host_fail(result, "systemctl_failed", "systemctl: %s", err.msg);
	if (res.exit_code != 0 || res.timed_out || res.canceled) {
		status = host_fail_proc(result, "systemctl_failed", "systemctl", &res);
		proc_result_free(&res);
		json_t *scratch = json_object();
		enum probe_step_status ignored;
		if (show(ctx, a->unit, &after, scratch, &ignored) == 0)
			json_object_set_new(result, "after", state_json(&after));
		json_decref(scratch);
		return status;
	}
	proc_result_free(&res);
	if (show(ctx, a->unit, &after, result, &status) != 0)
		return status;
	json_object_set_new(result, "after", state_json(&after));
	/* what actually happened replaces the expectation */
	json_t *changes = json_object_get(result, "changes");
	json_t *c0 = json_array_get(changes, 0);
	if (c0 != NULL && (a->action == SVC_START || a->action == SVC_STOP))
		json_object_set_new(c0, "after", json_string(after.active));
	if (c0 != NULL && (a->action == SVC_ENABLE || a->action == SVC_DISABLE))
		json_object_set_new(c0, "after", json_string(after.unit_file));
	if (c0 != NULL && a->action == SVC_RESTART) {
		json_object_set_new(c0, "before", json_integer((json_int_t)before.main_pid));
		json_object_set_new(c0, "after", json_integer((json_int_t)after.main_pid));
	}
	return STEP_OK;
}
