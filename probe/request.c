/* The probe request parser: untrusted JSON → struct probe_request, with the
 * JSON path of the first bad field. Strict: unknown fields are errors, every
 * list and string is bounded. Step-specific fields are read by each step type. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/codec.h"
#include "core/config.h"
#include "probe/internal.h"

#define MAX_TIMEOUT_MS (7ULL * 86400 * 1000)

static int bad(char *epath, size_t ecap, const char *path, const char *field, struct vm_err *err,
               const char *why)
{
	if (field != NULL && field[0] != '\0')
		snprintf(epath, ecap, "%s%s%s", path, path[0] ? "." : "", field);
	else
		snprintf(epath, ecap, "%s", path);
	/* field names are the caller's: a cut one must not end inside a character */
	epath[utf8_cut(epath, strlen(epath))] = '\0';
	vm_err_set(err, VM_ERR_INVALID, "%s: %s", epath, why);
	return -1;
}

int probe_fields_known(json_t *obj, const char *const *known, const char *path, char *epath,
                       size_t ecap, struct vm_err *err)
{
	const char *key;
	json_t *v;
	json_object_foreach(obj, key, v)
	{
		const char *const *k = known;
		while (*k != NULL && strcmp(*k, key) != 0)
			k++;
		if (*k == NULL) {
			char name[80];
			snprintf(name, sizeof(name), "%.64s", key);
			return bad(epath, ecap, path, name, err, "unknown field");
		}
	}
	return 0;
}

int probe_field_str(json_t *obj, const char *name, bool required, size_t max, const char **out,
                    const char *path, char *epath, size_t ecap, struct vm_err *err)
{
	json_t *v = json_object_get(obj, name);
	*out = NULL;
	if (v == NULL || json_is_null(v)) {
		if (required)
			return bad(epath, ecap, path, name, err, "required");
		return 0;
	}
	if (!json_is_string(v))
		return bad(epath, ecap, path, name, err, "must be a string");
	size_t n = json_string_length(v);
	if (n > max) {
		char why[64];
		snprintf(why, sizeof(why), "too long (at most %zu bytes)", max);
		return bad(epath, ecap, path, name, err, why);
	}
	/* C strings end at the first NUL; a hidden one would change the meaning. */
	if (strlen(json_string_value(v)) != n)
		return bad(epath, ecap, path, name, err, "must not contain NUL characters");
	*out = json_string_value(v);
	return 0;
}

int probe_field_bool(json_t *obj, const char *name, bool *out, const char *path, char *epath,
                     size_t ecap, struct vm_err *err)
{
	json_t *v = json_object_get(obj, name);
	*out = false;
	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_boolean(v))
		return bad(epath, ecap, path, name, err, "must be true or false");
	*out = json_is_true(v);
	return 0;
}

int probe_field_duration(json_t *obj, const char *name, uint64_t *out, const char *path,
                         char *epath, size_t ecap, struct vm_err *err)
{
	json_t *v = json_object_get(obj, name);
	*out = 0;
	if (v == NULL || json_is_null(v))
		return 0;
	uint64_t ms = 0;
	if (json_is_integer(v) && json_integer_value(v) > 0 &&
	    (uint64_t)json_integer_value(v) <= MAX_TIMEOUT_MS / 1000)
		ms = (uint64_t)json_integer_value(v) * 1000;
	else if (!json_is_string(v) || cfg_parse_duration(json_string_value(v), &ms) != 0)
		ms = 0;
	if (ms == 0 || ms > MAX_TIMEOUT_MS)
		return bad(
		    epath, ecap, path, name, err,
		    "expected a duration like \"30s\", \"5m\" or seconds, between 1ms and 7d");
	*out = ms;
	return 0;
}

/* "limits": {"memory_max": "256MiB" | bytes, "cpu_max": percent of one CPU,
 * "pids_max": tasks}; each replaces its probe.* default for this probe. */
static int parse_limits(json_t *doc, struct cg_limits *lim, char *epath, size_t ecap,
                        struct vm_err *err)
{
	json_t *l = json_object_get(doc, "limits");
	if (l == NULL || json_is_null(l))
		return 0;
	if (!json_is_object(l))
		return bad(epath, ecap, "", "limits", err, "must be an object");
	static const char *const known[] = {"memory_max", "cpu_max", "pids_max", NULL};
	if (probe_fields_known(l, known, "limits", epath, ecap, err) != 0)
		return -1;
	json_t *v = json_object_get(l, "memory_max");
	uint64_t bytes = 0;
	if (v != NULL && !json_is_null(v)) {
		if (json_is_integer(v) && json_integer_value(v) > 0)
			bytes = (uint64_t)json_integer_value(v);
		else if (json_is_string(v) && cfg_parse_size(json_string_value(v), &bytes) != 0)
			bytes = 0;
		if (bytes < (1u << 20) || bytes > (1ULL << 40))
			return bad(
			    epath, ecap, "limits", "memory_max", err,
			    "expected a size like \"256MiB\" or bytes, between 1MiB and 1TiB");
		lim->memory_max = bytes;
	}
	static const struct {
		const char *name;
		json_int_t max;
	} ints[] = {{"cpu_max", 100000}, {"pids_max", 4194304}};
	for (size_t i = 0; i < 2; i++) {
		v = json_object_get(l, ints[i].name);
		if (v == NULL || json_is_null(v))
			continue;
		if (!json_is_integer(v) || json_integer_value(v) < 1 ||
		    json_integer_value(v) > ints[i].max) {
			char why[64];
			snprintf(why, sizeof(why), "expected an integer 1-%lld",
			         (long long)ints[i].max);
			return bad(epath, ecap, "limits", ints[i].name, err, why);
		}
		uint32_t n = (uint32_t)json_integer_value(v);
		if (i == 0)
			lim->cpu_max = n;
		else
			lim->pids_max = n;
	}
	return 0;
}

static void free_step(struct probe_step_req *st)
{
	free(st->envbuf);
	free(st->content);
	if (st->ext_free != NULL)
		st->ext_free(st->ext);
	st->envbuf = NULL;
	st->content = NULL;
	st->ext = NULL;
	st->ext_free = NULL;
}

void probe_request_free(struct probe_request *req)
{
	if (req == NULL)
		return;
	for (int i = 0; i < PROBE_MAX_STEPS; i++)
		free_step(&req->steps[i]);
	json_decref(req->doc);
	req->doc = NULL;
}

static int parse_step(json_t *obj, struct probe_step_req *st, const char *path, char *epath,
                      size_t ecap, struct vm_err *err)
{
	if (!json_is_object(obj))
		return bad(epath, ecap, path, NULL, err, "must be an object");
	const char *type;
	if (probe_field_str(obj, "type", true, 32, &type, path, epath, ecap, err) != 0)
		return -1;
	st->type = -1;
	for (size_t i = 0; i < probe_step_count; i++)
		if (strcmp(probe_steps[i].name, type) == 0)
			st->type = (int)i;
	if (st->type < 0) {
		/* the list comes from the table: a new type is named without an edit here */
		char why[512];
		size_t o = str_appendf(why, sizeof(why), 0, "unknown step type (");
		for (size_t i = 0; i < probe_step_count; i++)
			o = str_appendf(why, sizeof(why), o, "%s%s", i ? ", " : "", probe_steps[i].name);
		str_appendf(why, sizeof(why), o, ")");
		return bad(epath, ecap, path, "type", err, why);
	}
	if (probe_field_str(obj, "name", false, PROBE_NAME_MAX, &st->name, path, epath, ecap,
	                    err) != 0)
		return -1;
	st->mode = -1;
	st->obj = obj;
	return probe_steps[st->type].parse(obj, st, path, epath, ecap, err);
}

int probe_request_parse(const char *body, size_t len, struct probe_request *req, char *epath,
                        size_t ecap, struct vm_err *err)
{
	memset(req, 0, sizeof(*req));
	epath[0] = '\0';
	json_error_t jerr;
	req->doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (req->doc == NULL) {
		snprintf(epath, ecap, "$");
		return vm_err_set(err, VM_ERR_INVALID, "body is not valid JSON: %s at offset %d",
		                  jerr.text, jerr.position);
	}
	json_t *doc = req->doc;
	if (!json_is_object(doc))
		return bad(epath, ecap, "$", NULL, err, "must be a JSON object");
	static const char *const known[] = {"idempotency_key",   "timeout", "steps",
	                                    "continue_on_error", "limits",  NULL};
	if (probe_fields_known(doc, known, "", epath, ecap, err) != 0 ||
	    probe_field_str(doc, "idempotency_key", false, PROBE_IDEM_MAX, &req->idempotency_key,
	                    "", epath, ecap, err) != 0 ||
	    probe_field_duration(doc, "timeout", &req->timeout_ms, "", epath, ecap, err) != 0 ||
	    probe_field_bool(doc, "continue_on_error", &req->continue_on_error, "", epath, ecap,
	                     err) != 0 ||
	    parse_limits(doc, &req->limits, epath, ecap, err) != 0)
		return -1;
	if (req->idempotency_key != NULL && req->idempotency_key[0] == '\0')
		return bad(epath, ecap, "", "idempotency_key", err, "must not be empty");
	json_t *steps = json_object_get(doc, "steps");
	if (steps == NULL)
		return bad(epath, ecap, "", "steps", err, "required");
	if (!json_is_array(steps) || json_array_size(steps) == 0 ||
	    json_array_size(steps) > PROBE_MAX_STEPS) {
		char why[64];
		snprintf(why, sizeof(why), "must be a list of 1 to %d steps", PROBE_MAX_STEPS);
		return bad(epath, ecap, "", "steps", err, why);
	}
	size_t i;
	json_t *s;
	json_array_foreach(steps, i, s)
	{
		char path[32];
		snprintf(path, sizeof(path), "steps[%zu]", i);
		if (parse_step(s, &req->steps[i], path, epath, ecap, err) != 0)
			return -1;
		req->nsteps++;
	}
	/* Canonical form (sorted keys, compact) so formatting never causes a 409. */
	char *canon = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
	if (canon == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	sha256_buf(canon, strlen(canon), req->body_hash);
	free(canon);
	return 0;
}

uint64_t probe_output_budget(uint64_t output_cap)
{
	/* one process step at any configured cap must remain possible */
	uint64_t one = 4 * output_cap + PROBE_STEP_OVERHEAD;
	return one > PROBE_OUTPUT_BUDGET ? one : PROBE_OUTPUT_BUDGET;
}

size_t probe_record_max(uint64_t output_cap)
{
	return (size_t)(PROBE_RECORD_HEAD + probe_output_budget(output_cap));
}

int probe_request_check_output(const struct probe_request *req, uint64_t output_cap, char *epath,
                               size_t ecap, struct vm_err *err)
{
	uint64_t budget = probe_output_budget(output_cap), sum = 0;
	for (int i = 0; i < req->nsteps; i++) {
		const struct probe_step_req *st = &req->steps[i];
		sum += probe_steps[st->type].output_bound(st, output_cap);
		if (sum <= budget)
			continue;
		/* the field that decides the size, or the step (output_cap is config) */
		bool read = strcmp(probe_steps[st->type].name, "file.read") == 0;
		snprintf(epath, ecap, "steps[%d]%s", i, read ? ".max_bytes" : "");
		return vm_err_set(
		    err, VM_ERR_INVALID,
		    "%s: the steps up to here could produce %llu bytes of results, "
		    "more than the %llu a probe record may hold (with probe.output_cap "
		    "%llu per stream); split the probe or read less",
		    epath, (unsigned long long)sum, (unsigned long long)budget,
		    (unsigned long long)output_cap);
	}
	return 0;
}
