/* The shell's control messages: the JSON text frames a client sends during a
 * session ({"type":"resize"|"signal"|"close"|"start", ...}), parsed into a
 * typed struct, and the session's parameters, which the query and a "start"
 * message give by the same rules. The one parser of both (fuzzed:
 * tests/fuzz/fuzz_shell_control.c). */
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "webhook/internal.h"

/* The one signal table of the shell: the names a session's end is reported
 * by, and (sendable) the ones a client may send ({"type":"signal"}). One
 * table for glibc and musl alike (musl has no sigabbrev_np). */
static const struct {
	const char *name;
	int signo;
	bool sendable;
} signals[] = {
    {"INT", SIGINT, true},     {"TERM", SIGTERM, true},  {"HUP", SIGHUP, true},
    {"QUIT", SIGQUIT, true},   {"KILL", SIGKILL, true},  {"TSTP", SIGTSTP, true},
    {"CONT", SIGCONT, true},   {"WINCH", SIGWINCH, true}, {"USR1", SIGUSR1, true},
    {"USR2", SIGUSR2, true},   {"ILL", SIGILL, false},   {"TRAP", SIGTRAP, false},
    {"ABRT", SIGABRT, false},  {"BUS", SIGBUS, false},   {"FPE", SIGFPE, false},
    {"SEGV", SIGSEGV, false},  {"PIPE", SIGPIPE, false}, {"ALRM", SIGALRM, false},
    {"XCPU", SIGXCPU, false},  {"XFSZ", SIGXFSZ, false}, {"SYS", SIGSYS, false},
};

int wh_shell_signal_of(const char *name)
{
	if (strncmp(name, "SIG", 3) == 0)
		name += 3;
	for (size_t i = 0; i < sizeof(signals) / sizeof(signals[0]); i++)
		if (signals[i].sendable && strcmp(signals[i].name, name) == 0)
			return signals[i].signo;
	return 0;
}

const char *wh_shell_signal_name(int signo)
{
	for (size_t i = 0; i < sizeof(signals) / sizeof(signals[0]); i++)
		if (signals[i].signo == signo)
			return signals[i].name;
	return NULL;
}

/* A terminal dimension: 1..WH_SHELL_DIM_MAX, else 0. */
static uint16_t dim_of(const json_t *v)
{
	if (!json_is_integer(v))
		return 0;
	json_int_t n = json_integer_value(v);
	return n >= 1 && n <= WH_SHELL_DIM_MAX ? (uint16_t)n : 0;
}

/* --- parameters --------------------------------------------------------------------------- */

void wh_shell_params_init(struct wh_shell_params *p)
{
	memset(p, 0, sizeof(*p));
	p->nenv = -1;
}

static void free_list(char **v, int *n)
{
	for (int i = 0; i < *n; i++) {
		free(v[i]);
		v[i] = NULL;
	}
	*n = 0;
}

void wh_shell_params_free(struct wh_shell_params *p)
{
	free_list(p->argv, &p->argc);
	if (p->nenv > 0)
		free_list(p->env, &p->nenv);
	free(p->user);
	free(p->cwd);
	free(p->term);
	wh_shell_params_init(p);
}

/* A JSON string without NUL bytes (strdup would cut it), of at most max bytes. */
static const char *plain_string(const json_t *v, size_t max)
{
	const char *s = json_string_value(v);
	if (s == NULL || strlen(s) != json_string_length(v) || strlen(s) > max)
		return NULL;
	return s;
}

static bool env_name_ok(const char *k)
{
	if (k[0] == '\0' || strlen(k) > 64 || (k[0] >= '0' && k[0] <= '9'))
		return false;
	for (const char *c = k; *c; c++)
		if (!((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') ||
		      (*c >= '0' && *c <= '9') || *c == '_'))
			return false;
	return true;
}

static int set_command(struct wh_shell_params *p, const json_t *v, struct vm_err *err)
{
	size_t i;
	json_t *it;
	if (!json_is_array(v) || json_array_size(v) < 1 || json_array_size(v) > WH_SHELL_ARGV_MAX)
		goto bad;
	json_array_foreach(v, i, it)
	{
		const char *a = plain_string(it, PATH_MAX);
		if (a == NULL || a[0] == '\0')
			goto bad;
	}
	free_list(p->argv, &p->argc);
	json_array_foreach(v, i, it)
	{
		if ((p->argv[p->argc] = strdup(json_string_value(it))) == NULL)
			return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
		p->argc++;
	}
	return 0;
bad:
	return vm_err_set(err, VM_ERR_INVALID, "command is a JSON array of 1..%d non-empty strings",
	                  WH_SHELL_ARGV_MAX);
}

static int set_env(struct wh_shell_params *p, const json_t *v, struct vm_err *err)
{
	const char *k;
	json_t *val;
	if (!json_is_object(v) || json_object_size(v) > WH_SHELL_ENV_MAX)
		goto bad;
	json_object_foreach((json_t *)v, k, val)
	{
		if (!env_name_ok(k) || plain_string(val, PATH_MAX) == NULL)
			goto bad;
	}
	if (p->nenv > 0)
		free_list(p->env, &p->nenv);
	p->nenv = 0;
	json_object_foreach((json_t *)v, k, val)
	{
		size_t n = strlen(k) + json_string_length(val) + 2;
		char *e = malloc(n);
		if (e == NULL)
			return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
		snprintf(e, n, "%s=%s", k, json_string_value(val));
		p->env[p->nenv++] = e;
	}
	return 0;
bad:
	return vm_err_set(err, VM_ERR_INVALID,
	                  "env is a JSON object of at most %d NAME: \"value\" pairs",
	                  WH_SHELL_ENV_MAX);
}

static int set_string(char **dst, const char *name, const json_t *v, size_t max,
                      struct vm_err *err)
{
	const char *s = plain_string(v, max);
	if (s == NULL || s[0] == '\0')
		return vm_err_set(err, VM_ERR_INVALID, "%s is a non-empty string of at most %zu bytes",
		                  name, max);
	char *c = strdup(s);
	if (c == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	free(*dst);
	*dst = c;
	return 0;
}

int wh_shell_param_set(struct wh_shell_params *p, const char *name, const json_t *v,
                       struct vm_err *err)
{
	if (strcmp(name, "cols") == 0) {
		p->cols = dim_of(v); /* invalid sizes are ignored, as in a resize */
		return 0;
	}
	if (strcmp(name, "rows") == 0) {
		p->rows = dim_of(v);
		return 0;
	}
	if (strcmp(name, "command") == 0)
		return set_command(p, v, err);
	if (strcmp(name, "env") == 0)
		return set_env(p, v, err);
	if (strcmp(name, "user") == 0)
		return set_string(&p->user, name, v, WH_SHELL_NAME_MAX - 1, err);
	if (strcmp(name, "term") == 0)
		return set_string(&p->term, name, v, WH_SHELL_NAME_MAX - 1, err);
	if (strcmp(name, "cwd") == 0)
		return set_string(&p->cwd, name, v, PATH_MAX - 1, err);
	return vm_err_set(err, VM_ERR_INVALID, "unknown parameter %.64s", name);
}

static void take_str(char **dst, char **src)
{
	if (*src == NULL)
		return;
	free(*dst);
	*dst = *src;
	*src = NULL;
}

void wh_shell_params_merge(struct wh_shell_params *dst, struct wh_shell_params *src)
{
	if (src->cols != 0)
		dst->cols = src->cols;
	if (src->rows != 0)
		dst->rows = src->rows;
	if (src->argc > 0) {
		free_list(dst->argv, &dst->argc);
		memcpy(dst->argv, src->argv, sizeof(dst->argv));
		dst->argc = src->argc;
		memset(src->argv, 0, sizeof(src->argv));
		src->argc = 0;
	}
	if (src->nenv >= 0) {
		if (dst->nenv > 0)
			free_list(dst->env, &dst->nenv);
		memcpy(dst->env, src->env, sizeof(dst->env));
		dst->nenv = src->nenv;
		memset(src->env, 0, sizeof(src->env));
		src->nenv = -1;
	}
	take_str(&dst->user, &src->user);
	take_str(&dst->cwd, &src->cwd);
	take_str(&dst->term, &src->term);
	wh_shell_params_free(src);
}

/* {"type":"start", "cols", "rows", "command", "user", "env", "cwd", "term"}:
 * every other key is an error. */
static int parse_start(json_t *root, struct wh_shell_params *p, struct vm_err *err)
{
	const char *k;
	json_t *v;
	json_object_foreach(root, k, v)
	{
		if (strcmp(k, "type") == 0)
			continue;
		if (wh_shell_param_set(p, k, v, err) != 0)
			return -1;
	}
	return 0;
}

/* --- messages ------------------------------------------------------------------------------ */

void wh_shell_ctl_free(struct wh_shell_ctl *c)
{
	wh_shell_params_free(&c->params);
}

int wh_shell_control_parse(const char *data, size_t len, struct wh_shell_ctl *out,
                           struct vm_err *err)
{
	memset(out, 0, sizeof(*out));
	wh_shell_params_init(&out->params);
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
		out->type = out->asked = WH_SHELL_CTL_RESIZE;
		out->cols = dim_of(json_object_get(root, "cols"));
		out->rows = dim_of(json_object_get(root, "rows"));
		if (out->cols == 0 || out->rows == 0)
			rc = vm_err_set(err, VM_ERR_INVALID, "resize: cols and rows are 1..%d",
			                WH_SHELL_DIM_MAX);
	} else if (strcmp(type, "signal") == 0) {
		out->type = out->asked = WH_SHELL_CTL_SIGNAL;
		const char *name = json_string_value(json_object_get(root, "name"));
		out->signo = name != NULL ? wh_shell_signal_of(name) : 0;
		if (out->signo == 0)
			rc = vm_err_set(err, VM_ERR_INVALID, "signal: unknown name");
	} else if (strcmp(type, "close") == 0) {
		out->type = out->asked = WH_SHELL_CTL_CLOSE;
	} else if (strcmp(type, "start") == 0) {
		out->type = out->asked = WH_SHELL_CTL_START;
		rc = parse_start(root, &out->params, err);
	} else {
		rc = vm_err_set(err, VM_ERR_INVALID, "unknown control message type");
	}
done:
	json_decref(root);
	if (rc != 0) {
		out->type = WH_SHELL_CTL_NONE;
		wh_shell_params_free(&out->params);
	}
	return rc;
}
