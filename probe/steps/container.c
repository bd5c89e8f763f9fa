/* Steps "container.create|start|stop|restart|delete" and "image.pull": the
 * operations of containers/ as probe steps (idempotent: a result says
 * whether anything changed), pull progress as progress events. */
#include <stdio.h>
#include <string.h>

#include "containers/containers.h"
#include "core/time.h"
#include "probe/steps/steps.h"

#define STOP_TIMEOUT_MAX 3600

static int bad(const char *path, const char *field, char *epath, size_t ecap, struct vm_err *err,
               const char *why)
{
	snprintf(epath, ecap, "%s%s%s", path, field[0] ? "." : "", field);
	return vm_err_set(err, VM_ERR_INVALID, "%s: %s", epath, why);
}

static const char *type_of(const json_t *obj)
{
	const char *t = json_string_value(json_object_get(obj, "type"));
	return t != NULL ? t : "";
}

int probe_container_parse(STEP_PARSE_ARGS)
{
	const char *t = type_of(obj);
	/* every container step takes "check": true (a dry run, see check_only) */
	if (probe_field_bool(obj, "check", &st->check, path, epath, ecap, err) != 0)
		return -1;
	if (strcmp(t, "container.create") == 0) {
		static const char *const known[] = {"type", "name", "spec", "check", NULL};
		if (probe_fields_known(obj, known, path, epath, ecap, err) != 0)
			return -1;
		json_t *spec = json_object_get(obj, "spec");
		json_t *canon = NULL;
		bool replace, never;
		struct ctr_err ce = {0};
		if (spec == NULL)
			return bad(path, "spec", epath, ecap, err, "required: the container spec");
		if (ctr_spec_validate(spec, &canon, &replace, &never, &ce) != 0) {
			char f[160];
			snprintf(f, sizeof(f), "spec%s%s", strcmp(ce.path, "$") ? "." : "",
			         strcmp(ce.path, "$") ? ce.path : "");
			snprintf(epath, ecap, "%s.%s", path, f);
			const char *why = strstr(ce.msg, ": ");
			return vm_err_set(err, VM_ERR_INVALID, "%s: %s", epath,
			                  why != NULL ? why + 2 : ce.msg);
		}
		json_decref(canon);
		return 0;
	}
	if (strcmp(t, "image.pull") == 0) {
		static const char *const known[] = {"type", "name", "image", "check", NULL};
		const char *image = NULL;
		return probe_fields_known(obj, known, path, epath, ecap, err) != 0 ||
		               probe_field_str(obj, "image", true, 255, &image, path, epath, ecap,
		                               err) != 0
		           ? -1
		           : 0;
	}
	static const char *const known[] = {"type",  "name",    "container", "timeout",
	                                    "force", "volumes", "check",     NULL};
	const char *id = NULL;
	bool b;
	if (probe_fields_known(obj, known, path, epath, ecap, err) != 0 ||
	    probe_field_str(obj, "container", true, 128, &id, path, epath, ecap, err) != 0 ||
	    probe_field_bool(obj, "force", &b, path, epath, ecap, err) != 0 ||
	    probe_field_bool(obj, "volumes", &b, path, epath, ecap, err) != 0)
		return -1;
	json_t *to = json_object_get(obj, "timeout");
	if (to != NULL && (!json_is_integer(to) || json_integer_value(to) < 0 ||
	                   json_integer_value(to) > STOP_TIMEOUT_MAX))
		return bad(path, "timeout", epath, ecap, err, "seconds, 0..3600");
	bool del = strcmp(t, "container.delete") == 0;
	if (!del && (json_object_get(obj, "force") || json_object_get(obj, "volumes")))
		return bad(path, json_object_get(obj, "force") ? "force" : "volumes", epath, ecap,
		           err, "only for container.delete");
	return 0;
}

struct pull_events {
	const struct probe_step_ctx *ctx;
	int64_t last_ms;
};

/* Engine progress lines come many per second: one event a second at most.
 * Every line and idle tick checks the step's cancel flag and deadline: a pull
 * can take many minutes, and a canceled step must not wait for it. */
static int on_progress(void *pctx, const char *message, uint64_t cur, uint64_t total)
{
	struct pull_events *p = pctx;
	int64_t now = time_mono_ms();
	if ((p->ctx->cancel != NULL && atomic_load(p->ctx->cancel)) ||
	    (p->ctx->deadline_ms > 0 && now >= p->ctx->deadline_ms))
		return 1;
	if (message == NULL || now - p->last_ms < 1000)
		return 0;
	p->last_ms = now;
	struct probe_progress pr = {(int64_t)cur, (int64_t)total, "bytes", NULL};
	probe_step_event(p->ctx, "info", total > 0 ? &pr : NULL, "image pull: %.200s", message);
	return 0;
}

/* "check": true asks the engine what the step would change and changes
 * nothing: create compares name and spec; the others look at the state. */
static int check_only(const struct probe_step_ctx *ctx, const json_t *obj, const char *t,
                      json_t **out, struct ctr_err *ce)
{
	if (strcmp(t, "container.create") == 0)
		return ctr_create_check(ctx->containers, json_object_get(obj, "spec"), out, ce);
	if (strcmp(t, "image.pull") == 0) {
		*out = json_pack("{s:b, s:s}", "changed", 1, "would", "pull");
		return 200;
	}
	json_t *ins = NULL;
	int st = ctr_inspect(ctx->containers, json_string_value(json_object_get(obj, "container")),
	                     &ins, ce);
	if (st != 200)
		return st;
	bool running = json_is_true(json_object_get(json_object_get(ins, "State"), "Running"));
	json_decref(ins);
	bool changed = strcmp(t, "container.start") == 0  ? !running
	               : strcmp(t, "container.stop") == 0 ? running
	                                                  : true; /* restart, delete */
	*out = json_pack("{s:b, s:b}", "changed", changed, "running", running);
	return 200;
}

enum probe_step_status probe_container_run(STEP_RUN_ARGS)
{
	const json_t *obj = st->obj;
	const char *t = type_of(obj);
	if (ctx->containers == NULL) {
		json_object_set_new(result, "error_code", json_string("engine_unavailable"));
		json_object_set_new(result, "error", json_string("containers are not enabled"));
		return STEP_FAILED;
	}
	struct ctr_err ce = {0};
	json_t *out = NULL;
	int status;
	if (st->check) {
		json_object_set_new(result, "check", json_true());
		status = check_only(ctx, obj, t, &out, &ce);
		goto done;
	}
	struct pull_events pe = {ctx, 0};
	const char *id = json_string_value(json_object_get(obj, "container"));
	json_t *to = json_object_get(obj, "timeout");
	int timeout = to != NULL ? (int)json_integer_value(to) : -1;
	if (strcmp(t, "container.create") == 0) {
		struct ctr_who who = {.sub = ctx->sub, .probe_id = ctx->probe_id};
		status = ctr_create(ctx->containers, json_object_get(obj, "spec"), &who,
		                    on_progress, &pe, &out, &ce);
	} else if (strcmp(t, "image.pull") == 0) {
		status = ctr_pull(ctx->containers, json_string_value(json_object_get(obj, "image")),
		                  on_progress, &pe, &out, &ce);
	} else if (strcmp(t, "container.delete") == 0) {
		status =
		    ctr_delete(ctx->containers, id, json_is_true(json_object_get(obj, "force")),
		               json_is_true(json_object_get(obj, "volumes")), &out, &ce);
	} else {
		enum ctr_action a = strcmp(t, "container.start") == 0  ? CTR_START
		                    : strcmp(t, "container.stop") == 0 ? CTR_STOP
		                                                       : CTR_RESTART;
		status = ctr_act(ctx->containers, id, a, timeout, &out, &ce);
	}
done:
	if (status >= 200 && status < 300) {
		json_object_update(result, out);
		json_decref(out);
		return STEP_OK;
	}
	json_object_set_new(result, "error_code", json_string(ce.code));
	json_object_set_new(result, "error", json_string(ce.msg));
	if (status == 499)
		return ctx->cancel != NULL && atomic_load(ctx->cancel) ? STEP_CANCELED
		                                                       : STEP_TIMED_OUT;
	return STEP_FAILED;
}
