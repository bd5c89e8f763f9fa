/* One step run synchronously, outside the executor (no queue, no record): the
 * runner's front door to the same request parser, output budget, step table
 * and probe.allow policy the webhook's probes use. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/time.h"
#include "probe/internal.h"

int probe_request_validate(const char *body, size_t len, uint64_t output_cap, char *path,
                           size_t path_cap, struct vm_err *err)
{
	struct probe_request *req = calloc(1, sizeof(*req));
	if (req == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	int rc = PROBE_E_INVALID;
	if (probe_request_parse(body, len, req, path, path_cap, err) == 0)
		rc = probe_request_check_output(req, output_cap, path, path_cap, err) == 0
		         ? 0
		         : PROBE_E_TOO_LARGE;
	probe_request_free(req);
	free(req);
	return rc;
}

/* The request's paths name steps[0]; the runner's caller sent "step". */
static void step_path(char *path)
{
	static const char pre[] = "steps[0]";
	if (strncmp(path, pre, sizeof(pre) - 1) != 0)
		return;
	/* "steps[0]" -> "step": the path only gets shorter */
	memmove(path + 4, path + sizeof(pre) - 1, strlen(path + sizeof(pre) - 1) + 1);
}

struct one_ctx {
	const struct probe_run_opts *o;
};

static void one_output(void *c, int stream, const char *data, size_t len)
{
	const struct probe_run_opts *o = ((struct one_ctx *)c)->o;
	if (o->on_output != NULL)
		o->on_output(o->ctx, stream, data, len);
}

static void one_event(void *c, const char *level, const char *message,
                      const struct probe_progress *pr)
{
	const struct probe_run_opts *o = ((struct one_ctx *)c)->o;
	if (o->on_event != NULL)
		o->on_event(o->ctx, level, message, pr ? pr->current : -1, pr ? pr->total : -1,
		            pr ? pr->unit : NULL);
}

static const char *const status_names[] = {[STEP_OK] = "succeeded",
                                           [STEP_FAILED] = "failed",
                                           [STEP_TIMED_OUT] = "timed_out",
                                           [STEP_CANCELED] = "canceled"};

int probe_run_step(json_t *step, json_t *timeout, const struct probe_run_opts *o, json_t **result,
                   bool *ok, char *path, size_t path_cap, struct vm_err *err)
{
	*result = NULL;
	*ok = false;
	path[0] = '\0';
	/* the very document a probe would be: one parser for both front doors */
	json_t *doc = json_pack("{s:[O]}", "steps", step);
	if (doc != NULL && timeout != NULL)
		json_object_set(doc, "timeout", timeout);
	char *body = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
	json_decref(doc);
	struct probe_request *req = calloc(1, sizeof(*req));
	if (body == NULL || req == NULL) {
		free(body);
		free(req);
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	}
	int rc = PROBE_E_INVALID;
	if (probe_request_parse(body, strlen(body), req, path, path_cap, err) != 0)
		goto out;
	rc = PROBE_E_TOO_LARGE;
	if (probe_request_check_output(req, o->output_cap, path, path_cap, err) != 0)
		goto out;
	rc = 0;
	const struct probe_step_req *st = &req->steps[0];
	int64_t now = time_mono_ms();
	uint64_t t = req->timeout_ms ? req->timeout_ms : o->default_timeout_ms;
	if (st->timeout_ms && (t == 0 || st->timeout_ms < t))
		t = st->timeout_ms;
	int64_t deadline = t ? now + (int64_t)t : 0;
	if (o->deadline_ms > 0 && (deadline == 0 || o->deadline_ms < deadline))
		deadline = o->deadline_ms;
	struct one_ctx oc = {o};
	struct probe_step_ctx ctx = {
	    .work_dir = o->work_dir,
	    .output_cap = o->output_cap,
	    .grace_ms = o->grace_ms,
	    .allow = o->allow,
	    .deadline_ms = deadline,
	    .cancel = o->cancel,
	    .on_output = one_output,
	    .on_event = one_event,
	    .out_ctx = &oc,
	    .limits = req->limits,
	    .cgroup = o->cgroup,
	};
	json_t *res = json_object();
	int64_t t0 = time_mono_ms();
	enum probe_step_status ss = probe_steps[st->type].run(st, &ctx, res);
	json_object_set_new(res, "type", json_string(probe_steps[st->type].name));
	json_object_set_new(res, "duration_ms", json_integer(time_mono_ms() - t0));
	json_object_set_new(res, "status", json_string(status_names[ss]));
	*result = res;
	*ok = ss == STEP_OK;
out:
	if (rc != 0) {
		step_path(path);
		step_path(err->msg);
	}
	probe_request_free(req);
	free(req);
	free(body);
	return rc;
}
