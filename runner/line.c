/* The runner's input parser: one command line from an untrusted peer into a
 * typed struct (the step itself is the probe parser's to validate). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "runner/runner.h"

static int bad(char *path, size_t cap, const char *field, struct vm_err *err, const char *why)
{
	snprintf(path, cap, "%s", field);
	return vm_err_set(err, VM_ERR_INVALID, "%s: %s", field, why);
}

static bool id_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > RUNNER_ID_MAX)
		return false;
	return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-") == n;
}

int runner_line_parse(const char *line, size_t len, struct runner_cmd *cmd, char *path, size_t cap,
                      struct vm_err *err)
{
	memset(cmd, 0, sizeof(*cmd));
	path[0] = '\0';
	json_error_t jerr;
	cmd->doc = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	if (cmd->doc == NULL) {
		snprintf(path, cap, "$");
		return vm_err_set(err, VM_ERR_INVALID, "not valid JSON: %s at offset %d", jerr.text,
		                  jerr.position);
	}
	json_t *doc = cmd->doc;
	if (!json_is_object(doc))
		return bad(path, cap, "$", err, "must be a JSON object");
	/* the id first, so that later errors can name the command they refuse */
	json_t *id = json_object_get(doc, "id");
	if (id == NULL)
		return bad(path, cap, "id", err, "required");
	if (!json_is_string(id) || !id_ok(json_string_value(id)))
		return bad(path, cap, "id", err, "must be 1-64 characters of A-Z a-z 0-9 . _ : -");
	cmd->id = json_string_value(id);
	const char *key;
	json_t *v;
	json_object_foreach(doc, key, v)
	{
		if (strcmp(key, "type") != 0 && strcmp(key, "id") != 0 &&
		    strcmp(key, "step") != 0 && strcmp(key, "timeout") != 0 &&
		    strcmp(key, "idempotency_key") != 0) {
			char f[80];
			snprintf(f, sizeof(f), "%.64s", key[0] ? key : "$");
			return bad(path, cap, f, err, "unknown field");
		}
	}
	json_t *type = json_object_get(doc, "type");
	if (type == NULL)
		return bad(path, cap, "type", err, "required");
	if (!json_is_string(type) || strcmp(json_string_value(type), "command") != 0)
		return bad(path, cap, "type", err, "must be \"command\"");
	cmd->step = json_object_get(doc, "step");
	if (cmd->step == NULL)
		return bad(path, cap, "step", err, "required");
	if (!json_is_object(cmd->step))
		return bad(path, cap, "step", err, "must be an object (a probe step)");
	cmd->timeout = json_object_get(doc, "timeout");
	if (cmd->timeout != NULL && json_is_null(cmd->timeout))
		cmd->timeout = NULL;
	if (cmd->timeout != NULL && !json_is_string(cmd->timeout) && !json_is_integer(cmd->timeout))
		return bad(path, cap, "timeout", err, "must be a duration (\"30s\") or seconds");
	json_t *k = json_object_get(doc, "idempotency_key");
	if (k != NULL && !json_is_null(k)) {
		if (!json_is_string(k) || json_string_length(k) == 0 ||
		    json_string_length(k) > RUNNER_IDEM_MAX)
			return bad(path, cap, "idempotency_key", err,
			           "must be a string of 1-128 bytes");
		cmd->idempotency_key = json_string_value(k);
	}
	/* what a reused key must match: the step and timeout, canonical */
	json_t *what = json_pack("{s:O,s:O}", "step", cmd->step, "timeout",
	                         cmd->timeout ? cmd->timeout : json_null());
	char *canon = what ? json_dumps(what, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(what);
	if (canon == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	sha256_buf(canon, strlen(canon), cmd->hash);
	free(canon);
	return 0;
}

void runner_cmd_free(struct runner_cmd *cmd)
{
	if (cmd == NULL)
		return;
	json_decref(cmd->doc);
	memset(cmd, 0, sizeof(*cmd));
}
