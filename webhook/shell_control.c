/* The shell's control messages: the JSON text frames a client sends during a
 * session ({"type":"resize"|"signal"|"close", ...}), parsed into a typed
 * struct. The one parser of that format (fuzzed: tests/fuzz/fuzz_shell_control.c). */
#include <jansson.h>
#include <signal.h>
#include <string.h>

#include "webhook/internal.h"

static const struct {
	const char *name;
	int signo;
} signals[] = {
    {"INT", SIGINT},   {"TERM", SIGTERM}, {"HUP", SIGHUP},     {"QUIT", SIGQUIT}, {"KILL", SIGKILL},
    {"TSTP", SIGTSTP}, {"CONT", SIGCONT}, {"WINCH", SIGWINCH}, {"USR1", SIGUSR1}, {"USR2", SIGUSR2},
};

int wh_shell_signal_of(const char *name)
{
	if (strncmp(name, "SIG", 3) == 0)
		name += 3;
	for (size_t i = 0; i < sizeof(signals) / sizeof(signals[0]); i++)
		if (strcmp(signals[i].name, name) == 0)
			return signals[i].signo;
	return 0;
}

/* A terminal dimension: 1..WH_SHELL_DIM_MAX, else 0. */
static uint16_t dim_of(const json_t *v)
{
	if (!json_is_integer(v))
		return 0;
	json_int_t n = json_integer_value(v);
	return n >= 1 && n <= WH_SHELL_DIM_MAX ? (uint16_t)n : 0;
}

int wh_shell_control_parse(const char *data, size_t len, struct wh_shell_ctl *out,
                           struct vm_err *err)
{
	memset(out, 0, sizeof(*out));
	if (len > WH_SHELL_CTL_MAX)
		return vm_err_set(err, VM_ERR_INVALID, "control message over %d bytes",
		                  WH_SHELL_CTL_MAX);
	json_error_t je;
	json_t *root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
	int rc = 0;
	if (!json_is_object(root)) {
		rc = vm_err_set(err, VM_ERR_INVALID, "a control message is a JSON object");
		goto done;
	}
	const char *type = json_string_value(json_object_get(root, "type"));
	if (type == NULL) {
		rc = vm_err_set(err, VM_ERR_INVALID, "\"type\" is missing");
	} else if (strcmp(type, "resize") == 0) {
		out->type = WH_SHELL_CTL_RESIZE;
		out->cols = dim_of(json_object_get(root, "cols"));
		out->rows = dim_of(json_object_get(root, "rows"));
		if (out->cols == 0 || out->rows == 0)
			rc = vm_err_set(err, VM_ERR_INVALID, "resize: cols and rows are 1..%d",
			                WH_SHELL_DIM_MAX);
	} else if (strcmp(type, "signal") == 0) {
		out->type = WH_SHELL_CTL_SIGNAL;
		const char *name = json_string_value(json_object_get(root, "name"));
		out->signo = name != NULL ? wh_shell_signal_of(name) : 0;
		if (out->signo == 0)
			rc = vm_err_set(err, VM_ERR_INVALID, "signal: unknown name");
	} else if (strcmp(type, "close") == 0) {
		out->type = WH_SHELL_CTL_CLOSE;
	} else {
		rc = vm_err_set(err, VM_ERR_INVALID, "unknown control message type");
	}
done:
	json_decref(root);
	if (rc != 0)
		out->type = WH_SHELL_CTL_NONE;
	return rc;
}
