/* The step table (adding a step type is adding a row and a file under steps/)
 * and what exec and script share: the process fields and running an argv under
 * the probe.allow policy. */
#include <errno.h>
#include <fnmatch.h>
#include <stdarg.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/codec.h"
#include "core/proc.h"
#include "probe/internal.h"
#include "probe/steps/steps.h"

/* Worst cases in the record: a process step's two streams at the cap,
 * JSON-escaped (at most 2x, see texty); a read's base64; the rest is small. */
static uint64_t bound_process(const struct probe_step_req *st, uint64_t output_cap)
{
	(void)st;
	return 2 * 2 * output_cap + PROBE_STEP_OVERHEAD;
}

static uint64_t bound_read(const struct probe_step_req *st, uint64_t output_cap)
{
	(void)output_cap;
	return (uint64_t)b64_encoded_len((size_t)st->max_bytes) + PROBE_STEP_OVERHEAD;
}

static uint64_t bound_small(const struct probe_step_req *st, uint64_t output_cap)
{
	(void)st;
	(void)output_cap;
	return PROBE_STEP_OVERHEAD;
}

/* A host step whose result carries a diff (cut at HOST_DIFF_MAX, JSON-escaped
 * at most 2x) beside small fields. */
static uint64_t bound_diff(const struct probe_step_req *st, uint64_t output_cap)
{
	(void)st;
	(void)output_cap;
	return 2 * (uint64_t)HOST_DIFF_MAX + PROBE_STEP_OVERHEAD;
}

/* cron.list: a crontab (at most 256 KiB) listed line by line, its text twice
 * (line and command) JSON-escaped, plus per-entry fields for 2048 entries. */
static uint64_t bound_listing(const struct probe_step_req *st, uint64_t output_cap)
{
	(void)st;
	(void)output_cap;
	return 4 * (256u << 10) + 2048 * 128 + PROBE_STEP_OVERHEAD;
}

const struct probe_step_type probe_steps[] = {
    {"exec", NULL, probe_exec_parse, probe_exec_run, bound_process, 1},
    {"script", NULL, probe_script_parse, probe_script_run, bound_process, 1},
    {"file.read", NULL, probe_file_read_parse, probe_file_read_run, bound_read, 1},
    {"file.write", NULL, probe_file_write_parse, probe_file_write_run, bound_small, 1},
    {"backup.plan", "backup:read", probe_backup_plan_parse, probe_backup_plan_run,
     probe_backup_bound, 1},
    {"backup.run", "backup:run", probe_backup_run_parse, probe_backup_run_run, probe_backup_bound,
     1},
    {"pkg.ensure", HOST_SCOPE_WRITE, probe_pkg_parse, probe_pkg_run, probe_pkg_bound, 1},
    {"service", HOST_SCOPE_WRITE, probe_service_parse, probe_service_run, bound_small, 1},
    {"user.ensure", HOST_SCOPE_WRITE, probe_user_parse, probe_user_run, bound_small, 1},
    {"group.ensure", HOST_SCOPE_WRITE, probe_group_parse, probe_group_run, bound_small, 1},
    {"sudoers.ensure", HOST_SCOPE_WRITE, probe_sudoers_parse, probe_sudoers_run, bound_small, 1},
    {"sshd.harden", HOST_SCOPE_WRITE, probe_sshd_parse, probe_sshd_run, bound_small, 1},
    {"cron.ensure", HOST_SCOPE_WRITE, probe_cron_ensure_parse, probe_cron_ensure_run, bound_diff,
     1},
    {"cron.list", HOST_SCOPE_READ, probe_cron_list_parse, probe_cron_list_run, bound_listing, 1},
    {"ssh_keys.sync", HOST_SCOPE_WRITE, probe_ssh_keys_parse, probe_ssh_keys_run, bound_diff, 1},
    {"container.create", "containers:write", probe_container_parse, probe_container_run,
     bound_small, 1},
    {"container.start", "containers:write", probe_container_parse, probe_container_run, bound_small,
     1},
    {"container.stop", "containers:write", probe_container_parse, probe_container_run, bound_small,
     1},
    {"container.restart", "containers:write", probe_container_parse, probe_container_run,
     bound_small, 1},
    {"container.delete", "containers:write", probe_container_parse, probe_container_run,
     bound_small, 1},
    {"image.pull", "containers:write", probe_container_parse, probe_container_run, bound_small, 1},
};
const size_t probe_step_count = sizeof(probe_steps) / sizeof(probe_steps[0]);

/* Control characters other than tab/CR/LF would be escaped as \uXXXX (6 bytes
 * each): such output is binary in all but name and goes as base64 (4/3), which
 * bounds a record at twice the captured bytes (quotes and backslashes). */
static bool texty(const char *data, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)data[i];
		if ((c < 0x20 && c != '\n' && c != '\r' && c != '\t') || c == 0x7f)
			return false;
	}
	return true;
}

void probe_json_set_bytes(json_t *obj, const char *name, const char *data, size_t len)
{
	json_t *s = data == NULL       ? json_string("")
	            : texty(data, len) ? json_stringn(data, len)
	                               : NULL;
	if (s != NULL) {
		json_object_set_new(obj, name, s);
		return;
	}
	/* not UTF-8 text: binary output goes as base64 under name_b64 */
	char key[64];
	snprintf(key, sizeof(key), "%s_b64", name);
	char *b = malloc(b64_encoded_len(len) + 1);
	if (b == NULL)
		return;
	b64_encode((const uint8_t *)data, len, b, 0);
	json_object_set_new(obj, key, json_string(b));
	free(b);
}

void probe_step_event(const struct probe_step_ctx *ctx, const char *level,
                      const struct probe_progress *progress, const char *fmt, ...)
{
	if (ctx == NULL || ctx->on_event == NULL)
		return;
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	ctx->on_event(ctx->out_ctx, level, msg, progress);
}

#define READ_CHUNK (48u << 10) /* a multiple of 3: base64 chunks need no padding */

int probe_read_fd_b64(const struct probe_step_ctx *ctx, int fd, uint64_t max, json_t *result,
                      const char *name, uint64_t *got, bool *truncated, uint8_t digest[SHA256_LEN],
                      struct vm_err *err)
{
	*got = 0;
	*truncated = false;
	char *buf = malloc(READ_CHUNK);
	/* without a sink (tests of a step alone) the content is kept in memory */
	char *mem = ctx->sink == NULL ? malloc((size_t)max + 1) : NULL;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int rc = 0;
	if (buf == NULL || (ctx->sink == NULL && mem == NULL) || md == NULL ||
	    EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
		rc = vm_err_set(err, VM_ERR_NOMEM, "out of memory");
		goto out;
	}
	if (ctx->sink != NULL && (rc = probe_sink_begin(ctx->sink, name, err)) != 0)
		goto out;
	/* the whole file is hashed; only max bytes of it are kept */
	for (;;) {
		/* hashing a huge file takes a while: a cancel or shutdown must not wait */
		if (ctx->cancel != NULL && atomic_load(ctx->cancel)) {
			rc = vm_err_set(err, VM_ERR_IO, "canceled while reading");
			goto out;
		}
		ssize_t n = read(fd, buf, READ_CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = vm_err_errno(err, VM_ERR_IO, errno, "read");
			goto out;
		}
		if (n == 0)
			break;
		EVP_DigestUpdate(md, buf, (size_t)n);
		size_t keep =
		    *got >= max ? 0 : (size_t)(max - *got < (uint64_t)n ? max - *got : (uint64_t)n);
		*truncated = *truncated || keep < (size_t)n;
		if (keep == 0)
			continue;
		if (mem != NULL)
			memcpy(mem + *got, buf, keep);
		else if ((rc = probe_sink_write_b64(ctx->sink, buf, keep, err)) != 0)
			goto out;
		*got += keep;
	}
	unsigned dlen = 0;
	EVP_DigestFinal_ex(md, digest, &dlen);
	if (ctx->sink != NULL) {
		rc = probe_sink_end(ctx->sink, err);
		goto out;
	}
	char *b64 = malloc(b64_encoded_len((size_t)*got) + 1);
	if (b64 == NULL) {
		rc = vm_err_set(err, VM_ERR_NOMEM, "out of memory");
		goto out;
	}
	b64_encode((const uint8_t *)mem, (size_t)*got, b64, 0);
	json_object_set_new(result, name, json_string(b64));
	free(b64);
out:
	EVP_MD_CTX_free(md);
	free(mem);
	free(buf);
	return rc;
}

static int env_fields(json_t *obj, struct probe_step_req *st, const char *path, char *epath,
                      size_t ecap, struct vm_err *err)
{
	json_t *env = json_object_get(obj, "env");
	if (env == NULL || json_is_null(env))
		return 0;
	char p[64];
	snprintf(p, sizeof(p), "%s.env", path);
	if (!json_is_object(env) || json_object_size(env) > PROBE_MAX_ENV) {
		snprintf(epath, ecap, "%s", p);
		return vm_err_set(err, VM_ERR_INVALID,
		                  "%s: must be an object of at most %d strings", p, PROBE_MAX_ENV);
	}
	size_t total = 0;
	const char *key;
	json_t *v;
	json_object_foreach(env, key, v)
	{
		const char *val;
		if (key[0] == '\0' || strchr(key, '=') != NULL || strlen(key) > 256) {
			snprintf(epath, ecap, "%s.%.64s", p, key);
			return vm_err_set(err, VM_ERR_INVALID, "%s: not a valid variable name",
			                  epath);
		}
		if (probe_field_str(env, key, true, PROBE_ARG_MAX, &val, p, epath, ecap, err) != 0)
			return -1;
		total += strlen(key) + strlen(val) + 2;
	}
	st->envbuf = malloc(total + 1);
	if (st->envbuf == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	size_t o = 0;
	json_object_foreach(env, key, v)
	{
		st->env[st->nenv++] = st->envbuf + o;
		o += (size_t)sprintf(st->envbuf + o, "%s=%s", key, json_string_value(v)) + 1;
	}
	return 0;
}

int probe_proc_fields(json_t *obj, struct probe_step_req *st, const char *path, char *epath,
                      size_t ecap, struct vm_err *err)
{
	const char *in = NULL;
	if (env_fields(obj, st, path, epath, ecap, err) != 0 ||
	    probe_field_str(obj, "cwd", false, PATH_MAX - 1, &st->cwd, path, epath, ecap, err) !=
	        0 ||
	    probe_field_str(obj, "stdin", false, 16u << 20, &in, path, epath, ecap, err) != 0 ||
	    probe_field_str(obj, "user", false, 64, &st->user, path, epath, ecap, err) != 0 ||
	    probe_field_str(obj, "group", false, 64, &st->group, path, epath, ecap, err) != 0 ||
	    probe_field_duration(obj, "timeout", &st->timeout_ms, path, epath, ecap, err) != 0)
		return -1;
	if (st->cwd != NULL && st->cwd[0] != '/') {
		snprintf(epath, ecap, "%s.cwd", path);
		return vm_err_set(err, VM_ERR_INVALID, "%s: must be an absolute path", epath);
	}
	if (in != NULL) {
		st->stdin_data = in;
		st->stdin_len = strlen(in);
	}
	return 0;
}

/* The policy: argv[0], resolved to a path, must match one pattern (fnmatch). */
static bool allowed(const struct cfg_strlist *allow, const char *path)
{
	if (allow == NULL || allow->count == 0)
		return true;
	for (int i = 0; i < allow->count; i++)
		if (fnmatch(allow->items[i], path, FNM_PATHNAME) == 0)
			return true;
	return false;
}

static void forward(void *p, enum proc_stream stream, const char *data, size_t len)
{
	const struct probe_step_ctx *ctx = p;
	if (ctx->on_output != NULL)
		ctx->on_output(ctx->out_ctx, (int)stream, data, len);
}

static enum probe_step_status refuse(json_t *result, int code, const char *why)
{
	json_object_set_new(result, "exit_code", json_integer(code));
	json_object_set_new(result, "error", json_string(why));
	return STEP_FAILED;
}

/* What contained the step and which limits held: never claims a limit that
 * was not written. */
static void set_containment(json_t *result, const struct proc_result *res,
                            const struct cg_limits *want)
{
	json_object_set_new(result, "containment",
	                    json_string(res->containment ? res->containment : "process-group"));
	if (!want->memory_max && !want->cpu_max && !want->pids_max)
		return;
	json_t *lim = json_object();
	if (res->limits_applied & CG_MEMORY)
		json_object_set_new(lim, "memory_max", json_integer((json_int_t)want->memory_max));
	if (res->limits_applied & CG_CPU)
		json_object_set_new(lim, "cpu_max", json_integer(want->cpu_max));
	if (res->limits_applied & CG_PIDS)
		json_object_set_new(lim, "pids_max", json_integer(want->pids_max));
	json_object_set_new(result, "limits", lim);
	if (res->limits_note[0] != '\0')
		json_object_set_new(result, "limits_unavailable", json_string(res->limits_note));
}

enum probe_step_status probe_run_argv(const struct probe_step_req *st, const char *const *argv,
                                      int fd3, const struct probe_step_ctx *ctx, json_t *result)
{
	char path[PATH_MAX];
	struct vm_err err = {0};
	if (proc_resolve(argv[0], path, sizeof(path), &err) != 0)
		return refuse(result, 127, err.msg);
	if (!allowed(ctx->allow, path)) {
		char why[PATH_MAX + 64];
		snprintf(why, sizeof(why), "denied by probe.allow: %s matches no allowed pattern",
		         path);
		return refuse(result, 126, why);
	}
	struct proc_spec spec = {
	    .path = path,
	    .argv = (char *const *)argv,
	    .cwd = st->cwd,
	    .stdin_data = st->stdin_data,
	    .stdin_len = st->stdin_len,
	    .deadline_ms = ctx->deadline_ms,
	    .grace_ms = ctx->grace_ms,
	    .out_cap = (size_t)ctx->output_cap,
	    .cancel = ctx->cancel,
	    .on_output = forward,
	    .ctx = (void *)ctx,
	    .cgroup = ctx->cgroup,
	    .limits = ctx->limits,
	    .fd3 = fd3,
	};
	if (proc_lookup_ids(st->user ? st->user : "", st->group ? st->group : "", &spec.uid,
	                    &spec.gid, &spec.set_ids, &err) != 0)
		return refuse(result, 126, err.msg);
	/* A clean environment: the agent's own (which may hold secrets) never leaks. */
	const char *envp[PROBE_MAX_ENV + 3];
	int n = 0;
	bool has_path = false;
	for (int i = 0; i < st->nenv; i++) {
		has_path = has_path || strncmp(st->env[i], "PATH=", 5) == 0;
		envp[n++] = st->env[i];
	}
	if (!has_path)
		envp[n++] = "PATH=" PROC_DEFAULT_PATH;
	envp[n] = NULL;
	spec.envp = (char *const *)envp;

	struct proc_result res;
	int rc = proc_run(&spec, &res, &err);
	enum probe_step_status status;
	if (rc != 0) {
		status = refuse(result, err.code == VM_ERR_NOTFOUND ? 127 : 126, err.msg);
	} else {
		json_object_set_new(result, "exit_code", json_integer(res.exit_code));
		if (res.term_signal != 0)
			json_object_set_new(result, "signal", json_integer(res.term_signal));
		status = res.canceled                                 ? STEP_CANCELED
		         : res.timed_out                              ? STEP_TIMED_OUT
		         : res.exit_code == 0 && res.term_signal == 0 ? STEP_OK
		                                                      : STEP_FAILED;
	}
	if (rc == 0)
		set_containment(result, &res, &ctx->limits);
	probe_json_set_bytes(result, "stdout", res.out, res.out_len);
	probe_json_set_bytes(result, "stderr", res.err, res.err_len);
	json_object_set_new(result, "stdout_truncated", json_boolean(res.out_truncated));
	json_object_set_new(result, "stderr_truncated", json_boolean(res.err_truncated));
	proc_result_free(&res);
	return status;
}
