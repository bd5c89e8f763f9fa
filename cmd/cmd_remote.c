/* vm-agent remote --ssh [user@]host FILE|-: a probe-shaped request run on a
 * machine with no agent, through the system's OpenSSH client: upload this
 * binary to a private remote temp dir, check its sha256 there, run
 * `runner --stdio --self-delete`, stream the steps in, remove the dir.
 * Remote command strings are built from fixed tokens and values validated to
 * [A-Za-z0-9/._-] only: nothing user-controlled reaches the remote shell. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd/cmd.h"
#include "core/buf.h"
#include "core/codec.h"
#include "core/config.h"
#include "core/fs.h"
#include "core/proc.h"
#include "core/time.h"
#include "probe/probe.h"
#include "runner/runner.h"

#define REQUEST_MAX   (64u << 20)
#define BINARY_MAX    (512u << 20)
#define REPLY_MAX     (256u << 20) /* one line from the runner (a large file.read) */
#define SMALL_OUT     (64u << 10)
#define SSH_STEP_MS   (120 * 1000) /* mktemp, upload, sha256sum, rm */
#define REMOTE_BINARY "vm-agent"

struct remote_args {
	const char *ssh, *port, *identity, *known_hosts, *ttl, *expect_sha256, *request;
	struct cmd_list allow;
	bool json, insecure;
};

#define RA(f) offsetof(struct remote_args, f)
static const struct cmd_flag remote_flags[] = {
    {"ssh", 0, CMD_FLAG_STR, RA(ssh), "DEST", "[user@]host to run on (required)"},
    {"port", 0, CMD_FLAG_STR, RA(port), "PORT", "SSH port (1-65535)"},
    {"identity", 0, CMD_FLAG_STR, RA(identity), "F", "SSH private key (ssh -i)"},
    {"known-hosts", 0, CMD_FLAG_STR, RA(known_hosts), "F",
     "known_hosts file to check the host key"},
    {"ttl", 0, CMD_FLAG_STR, RA(ttl), "D", "the remote runner's lifetime (default 10m)"},
    {"allow", 0, CMD_FLAG_LIST, RA(allow), "PATH",
     "the remote runner's --allow: exact program paths\n(repeatable; none = anything)"},
    {"expect-sha256", 0, CMD_FLAG_STR, RA(expect_sha256), "HEX",
     "the sha256 the upload must have on the remote\nside (default: this binary's own)"},
    {"json", 0, CMD_FLAG_BOOL, RA(json), NULL, "print a JSON document at the end"},
    {"insecure-host-key", 0, CMD_FLAG_BOOL, RA(insecure), NULL,
     "accept any host key (StrictHostKeyChecking=no)"},
    {"request", 0, CMD_FLAG_OPERAND, RA(request), "FILE|-", "the request ({\"steps\":[…]})"},
};

/* Only these bytes may reach the remote command line. */
static bool safe_token(const char *s, size_t max)
{
	size_t n = strlen(s);
	return n > 0 && n <= max && s[0] != '-' &&
	       strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/._-") ==
	           n &&
	       strstr(s, "..") == NULL;
}

struct ssh {
	const char *argv[32];
	int argc; /* the options; target and command are added per call */
	const char *target;
};

static void ssh_init(struct ssh *s, const struct remote_args *a)
{
	s->argc = 0;
	const char **v = s->argv;
	v[s->argc++] = "ssh";
	v[s->argc++] = "-T";
	v[s->argc++] = "-o";
	v[s->argc++] = "BatchMode=yes";
	v[s->argc++] = "-o";
	v[s->argc++] = "ConnectTimeout=20";
	v[s->argc++] = "-o";
	v[s->argc++] = a->insecure ? "StrictHostKeyChecking=no" : "StrictHostKeyChecking=yes";
	if (a->port != NULL) {
		v[s->argc++] = "-p";
		v[s->argc++] = a->port;
	}
	if (a->identity != NULL) {
		v[s->argc++] = "-i";
		v[s->argc++] = a->identity;
		v[s->argc++] = "-o";
		v[s->argc++] = "IdentitiesOnly=yes";
	}
	s->target = a->ssh;
}

/* ssh OPTIONS [-o UserKnownHostsFile=F] -- TARGET COMMAND, through proc_run. */
static int ssh_run(const struct ssh *s, const char *kh_opt, const char *command,
                   struct proc_spec *spec, struct proc_result *res, struct vm_err *err)
{
	const char *argv[40];
	int n = 0;
	for (int i = 0; i < s->argc; i++)
		argv[n++] = s->argv[i];
	if (kh_opt != NULL) {
		argv[n++] = "-o";
		argv[n++] = kh_opt;
	}
	argv[n++] = "--";
	argv[n++] = s->target;
	argv[n++] = command;
	argv[n] = NULL;
	spec->argv = (char *const *)argv;
	spec->flags |= PROC_SEARCH_PATH | PROC_DIE_WITH_PARENT;
	return proc_run(spec, res, err);
}

/* A short remote command; its stdout (trimmed) into out. */
static int ssh_small(const struct ssh *s, const char *kh, const char *command, const void *in,
                     size_t in_len, char *out, size_t cap, struct vm_err *err)
{
	struct proc_spec spec = {
	    .stdin_data = in,
	    .stdin_len = in_len,
	    .deadline_ms = time_mono_ms() + SSH_STEP_MS,
	    .grace_ms = 2000,
	    .out_cap = SMALL_OUT,
	};
	struct proc_result res;
	if (ssh_run(s, kh, command, &spec, &res, err) != 0)
		return -1;
	int rc = 0;
	if (res.exit_code != 0 || res.term_signal != 0 || res.timed_out) {
		char how[128];
		proc_result_describe(&res, how, sizeof(how));
		size_t el = res.err_len;
		while (el > 0 && (res.err[el - 1] == '\n' || res.err[el - 1] == '\r'))
			el--;
		rc = vm_err_set(err, VM_ERR_IO, "ssh %s: %s: %.*s", command, how, (int)el,
		                res.err ? res.err : "");
	} else if (out != NULL) {
		size_t l = res.out_len;
		while (l > 0 && (res.out[l - 1] == '\n' || res.out[l - 1] == '\r'))
			l--;
		snprintf(out, cap, "%.*s", (int)l, res.out ? res.out : "");
	}
	proc_result_free(&res);
	return rc;
}

/* --- the conversation with the remote runner -------------------------------------- */

struct conv {
	const struct remote_args *a;
	json_t *steps; /* the request's, borrowed */
	json_t *timeout;
	bool continue_on_error;
	size_t next;     /* the next step to send */
	int in_fd;       /* the runner's stdin (ssh's), -1 once closed */
	struct buf line; /* a partial line from the runner */
	bool ready, failed_protocol, any_failed;
	size_t done;
	json_t *results; /* {id, type, ok, duration_ms, result|error} per step */
	json_t *exit_line;
	char why[256];
};

static void conv_close(struct conv *c)
{
	if (c->in_fd >= 0)
		close(c->in_fd);
	c->in_fd = -1;
}

static void conv_send_next(struct conv *c)
{
	if (c->in_fd < 0)
		return;
	if (c->next >= json_array_size(c->steps)) {
		conv_close(c); /* EOF: the runner ends, deletes itself */
		return;
	}
	char id[32];
	snprintf(id, sizeof(id), "s%zu", c->next);
	json_t *cmd = json_pack("{s:s,s:s,s:O}", "type", "command", "id", id, "step",
	                        json_array_get(c->steps, c->next));
	if (c->timeout != NULL)
		json_object_set(cmd, "timeout", c->timeout);
	c->next++;
	/* blocking is fine: between commands the runner only reads */
	if (runner_send(c->in_fd, cmd) != 0) {
		snprintf(c->why, sizeof(c->why), "cannot write to ssh: %s", strerror(errno));
		c->failed_protocol = true;
		conv_close(c);
	}
}

static void print_event(const struct conv *c, json_t *m)
{
	FILE *out = c->a->json ? stderr : stdout;
	const char *id = json_string_value(json_object_get(m, "id"));
	const char *stream = json_string_value(json_object_get(m, "stream"));
	const char *data = json_string_value(json_object_get(m, "data"));
	if (stream != NULL) {
		fprintf(out, "[%s] %s: %s%s", id ? id : "?", stream,
		        data ? data : "(binary output)",
		        data && data[0] && data[strlen(data) - 1] == '\n' ? "" : "\n");
	} else {
		json_t *p = json_object_get(m, "progress");
		fprintf(out, "[%s] %s: %s", id ? id : "?",
		        json_string_value(json_object_get(m, "level")) ?: "info",
		        json_string_value(json_object_get(m, "message")) ?: "");
		if (p != NULL)
			fprintf(out, " (%lld/%lld %s)",
			        (long long)json_integer_value(json_object_get(p, "current")),
			        (long long)json_integer_value(json_object_get(p, "total")),
			        json_string_value(json_object_get(p, "unit")) ?: "");
		fputc('\n', out);
	}
	fflush(out);
}

static void on_reply(struct conv *c, const char *text, size_t len)
{
	json_t *m = json_loadb(text, len, 0, NULL);
	const char *type = json_string_value(json_object_get(m, "type"));
	if (type == NULL) {
		snprintf(c->why, sizeof(c->why), "the runner sent a line that is not a message");
		c->failed_protocol = true;
	} else if (strcmp(type, "ready") == 0) {
		if (json_integer_value(json_object_get(m, "protocol")) != RUNNER_PROTOCOL) {
			snprintf(c->why, sizeof(c->why),
			         "the remote runner speaks another protocol");
			c->failed_protocol = true;
			conv_close(c);
		} else {
			c->ready = true;
			conv_send_next(c);
		}
	} else if (strcmp(type, "event") == 0) {
		print_event(c, m);
	} else if (strcmp(type, "done") == 0) {
		bool ok = json_is_true(json_object_get(m, "ok"));
		c->done++;
		c->any_failed = c->any_failed || !ok;
		json_t *r = json_deep_copy(m);
		json_object_del(r, "type");
		json_array_append_new(c->results, r);
		if (!c->a->json) {
			json_t *e = json_object_get(m, "error");
			json_t *res = json_object_get(m, "result");
			printf("[%s] done: %s in %lldms%s%s\n",
			       json_string_value(json_object_get(m, "id")) ?: "?",
			       ok ? "succeeded"
			          : json_string_value(json_object_get(res, "status")) ?: "failed",
			       (long long)json_integer_value(json_object_get(m, "duration_ms")),
			       e ? ": " : "", e ? json_string_value(json_object_get(e, "message")) : "");
			fflush(stdout);
		}
		if (!ok && !c->continue_on_error)
			conv_close(c);
		else
			conv_send_next(c);
	} else if (strcmp(type, "error") == 0) {
		json_t *e = json_object_get(m, "error");
		snprintf(c->why, sizeof(c->why), "the runner refused a command: %s",
		         json_string_value(json_object_get(e, "message")) ?: "?");
		c->failed_protocol = true;
		conv_close(c);
	} else if (strcmp(type, "exit") == 0) {
		json_decref(c->exit_line);
		c->exit_line = json_incref(m);
	}
	json_decref(m);
}

static void on_output(void *ctx, enum proc_stream stream, const char *data, size_t len)
{
	struct conv *c = ctx;
	if (stream == PROC_STDERR) {
		(void)fs_write_all(2, data, len); /* ssh's and the runner's diagnostics */
		return;
	}
	while (len > 0 && !c->failed_protocol) {
		const char *nl = memchr(data, '\n', len);
		size_t seg = nl ? (size_t)(nl - data) : len;
		if (buf_append(&c->line, data, seg) != 0) {
			snprintf(c->why, sizeof(c->why), "a line from the runner is too long");
			c->failed_protocol = true;
			conv_close(c);
			return;
		}
		if (nl == NULL)
			return;
		on_reply(c, (const char *)c->line.p + c->line.off, c->line.len);
		buf_consume(&c->line, c->line.len);
		data += seg + 1;
		len -= seg + 1;
	}
}

static void on_start(void *ctx, int fd, pid_t pid)
{
	(void)pid;
	((struct conv *)ctx)->in_fd = fd;
}

static bool conv_stop(void *ctx)
{
	return ((struct conv *)ctx)->failed_protocol;
}

/* --- the command ---------------------------------------------------------------------- */

static int read_request(const char *name, char **body, size_t *len, struct vm_err *err)
{
	if (strcmp(name, "-") == 0)
		return fs_read_fd(0, "stdin", REQUEST_MAX, body, len, err);
	return fs_read_file(name, REQUEST_MAX, body, len, err);
}

static int fail(const struct remote_args *a, const char *remote_dir, const char *code,
                const char *msg)
{
	if (a->json) {
		json_t *d =
		    json_pack("{s:b,s:{s:s,s:s}}", "ok", 0, "error", "code", code, "message", msg);
		if (remote_dir[0] != '\0')
			json_object_set_new(d, "remote_dir", json_string(remote_dir));
		char *t = json_dumps(d, JSON_INDENT(2));
		json_decref(d);
		if (t != NULL)
			puts(t);
		free(t);
	}
	fprintf(stderr, "vm-agent remote: %s\n", msg);
	return VM_EXIT_RUNTIME;
}

static int remote_exec(const struct cmd_entry *self, void *args)
{
	struct remote_args *a = args;
	if (a->ssh == NULL || a->request == NULL)
		return cmd_usage_error(self, "--ssh and a request FILE (or -) are required");
	/* no option smuggled in as a host, and a user@host ssh understands */
	const char *at = strchr(a->ssh, '@');
	const char *host = at ? at + 1 : a->ssh;
	if (!safe_token(host, 253) || strchr(host, '/') != NULL ||
	    (at != NULL && (at == a->ssh || (size_t)(at - a->ssh) > 64 ||
	                    strspn(a->ssh, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	                                   "0123456789._-") != (size_t)(at - a->ssh))))
		return cmd_usage_error(self, "--ssh: expected [user@]host, got '%s'", a->ssh);
	if (a->port != NULL && (a->port[0] == '\0' || strlen(a->port) > 5 ||
	                        strspn(a->port, "0123456789") != strlen(a->port) ||
	                        atoi(a->port) < 1 || atoi(a->port) > 65535))
		return cmd_usage_error(self, "--port: expected a port 1-65535, got '%s'", a->port);
	uint64_t ttl = 10 * 60 * 1000;
	if (a->ttl != NULL && (cfg_parse_duration(a->ttl, &ttl) != 0 || ttl < 1000))
		return cmd_usage_error(self, "--ttl: expected a duration like 30s or 10m");
	for (size_t i = 0; i < a->allow.n; i++)
		if (!safe_token(a->allow.v[i], 200) || a->allow.v[i][0] != '/')
			return cmd_usage_error(self,
			                       "--allow: an absolute path of [A-Za-z0-9/._-]");
	uint8_t want[SHA256_LEN];
	if (a->expect_sha256 != NULL &&
	    (strlen(a->expect_sha256) != 64 ||
	     hex_decode(a->expect_sha256, 64, want, sizeof(want)) != SHA256_LEN))
		return cmd_usage_error(self, "--expect-sha256: expected 64 hex digits");

	struct vm_err err = {0};
	char *body = NULL, *bin = NULL;
	size_t blen = 0, binlen = 0;
	json_t *doc = NULL;
	struct conv c = {.a = a, .in_fd = -1};
	buf_init(&c.line, REPLY_MAX);
	char remote_dir[256] = "", kh[PATH_MAX + 32];
	int exit_code = VM_EXIT_RUNTIME;
	if (read_request(a->request, &body, &blen, &err) != 0) {
		exit_code = fail(a, remote_dir, "request_unreadable", err.msg);
		goto out;
	}
	/* refused here, before anything touches the remote host */
	struct cfg *dflt = calloc(1, sizeof(*dflt));
	if (dflt == NULL)
		goto out;
	cfg_defaults(dflt);
	char path[128];
	int vrc =
	    probe_request_validate(body, blen, dflt->probe.output_cap, path, sizeof(path), &err);
	free(dflt);
	if (vrc != 0) {
		char msg[sizeof(path) + sizeof(err.msg) + 32];
		snprintf(msg, sizeof(msg), "invalid request at %s: %s", path, err.msg);
		exit_code = fail(a, remote_dir, "invalid_request", msg);
		goto out;
	}
	doc = json_loadb(body, blen, 0, NULL);
	if (json_object_get(doc, "limits") != NULL) {
		exit_code =
		    fail(a, remote_dir, "invalid_request",
		         "limits: not supported by the runner (no cgroups of ours remotely)");
		goto out;
	}
	c.steps = json_object_get(doc, "steps");
	c.timeout = json_object_get(doc, "timeout");
	c.continue_on_error = json_is_true(json_object_get(doc, "continue_on_error"));
	c.results = json_array();

	if (fs_read_file("/proc/self/exe", BINARY_MAX, &bin, &binlen, &err) != 0) {
		exit_code = fail(a, remote_dir, "binary_unreadable", err.msg);
		goto out;
	}
	if (a->expect_sha256 == NULL)
		sha256_buf(bin, binlen, want);
	char want_hex[2 * SHA256_LEN + 1];
	hex_encode(want, SHA256_LEN, want_hex);

	struct ssh s;
	ssh_init(&s, a);
	const char *kh_opt = NULL;
	if (a->insecure) {
		kh_opt = "UserKnownHostsFile=/dev/null";
	} else if (a->known_hosts != NULL) {
		snprintf(kh, sizeof(kh), "UserKnownHostsFile=%s", a->known_hosts);
		kh_opt = kh;
	}
	char got[SMALL_OUT];
	if (ssh_small(&s, kh_opt, "mktemp -d", NULL, 0, got, sizeof(got), &err) != 0) {
		exit_code = fail(a, remote_dir, "ssh_failed", err.msg);
		goto out;
	}
	if (got[0] != '/' || !safe_token(got, 200)) {
		exit_code = fail(a, remote_dir, "remote_tempdir",
		                 "mktemp -d on the remote host gave an odd path");
		goto out;
	}
	snprintf(remote_dir, sizeof(remote_dir), "%.200s", got);
	char cmdline[2048];
	snprintf(cmdline, sizeof(cmdline),
	         "cat > %s/" REMOTE_BINARY " && chmod 700 %s/" REMOTE_BINARY, remote_dir,
	         remote_dir);
	if (ssh_small(&s, kh_opt, cmdline, bin, binlen, NULL, 0, &err) != 0) {
		exit_code = fail(a, remote_dir, "upload_failed", err.msg);
		goto cleanup;
	}
	/* the bytes that will run are checked where they will run */
	snprintf(cmdline, sizeof(cmdline), "sha256sum %s/" REMOTE_BINARY, remote_dir);
	if (ssh_small(&s, kh_opt, cmdline, NULL, 0, got, sizeof(got), &err) != 0) {
		exit_code = fail(a, remote_dir, "verify_failed", err.msg);
		goto cleanup;
	}
	if (strlen(got) < 64 || strncasecmp(got, want_hex, 64) != 0) {
		char msg[256];
		snprintf(msg, sizeof(msg),
		         "the uploaded binary's sha256 is %.64s on the remote host, expected %s: "
		         "not run",
		         got, want_hex);
		exit_code = fail(a, remote_dir, "upload_corrupt", msg);
		goto cleanup;
	}
	struct buf rc_line;
	buf_init(&rc_line, 4096);
	buf_printf(&rc_line, "%s/" REMOTE_BINARY " runner --stdio --self-delete --ttl %llums",
	           remote_dir, (unsigned long long)ttl);
	for (size_t i = 0; i < a->allow.n; i++)
		buf_printf(&rc_line, " --allow %s", a->allow.v[i]);
	struct proc_spec spec = {
	    .flags = PROC_STDIN_STREAM,
	    .deadline_ms = time_mono_ms() + (int64_t)ttl + 30000,
	    .grace_ms = 2000,
	    .out_cap = SIZE_MAX / 4,
	    .output_only = true,
	    .on_output = on_output,
	    .on_start = on_start,
	    .stop = conv_stop,
	    .ctx = &c,
	};
	struct proc_result res;
	char *remote_cmd = buf_take(&rc_line, NULL);
	int prc = remote_cmd != NULL ? ssh_run(&s, kh_opt, remote_cmd, &spec, &res, &err)
	                             : vm_err_set(&err, VM_ERR_NOMEM, "out of memory");
	free(remote_cmd);
	conv_close(&c);
	if (prc != 0) {
		exit_code = fail(a, remote_dir, "ssh_failed", err.msg);
		goto cleanup;
	}
	char how[128];
	proc_result_describe(&res, how, sizeof(how));
	proc_result_free(&res);
	if (!c.ready && c.why[0] == '\0')
		snprintf(c.why, sizeof(c.why), "the remote runner did not start (ssh: %s)", how);
	else if (c.why[0] == '\0' && c.done < json_array_size(c.steps) && !c.any_failed)
		snprintf(c.why, sizeof(c.why), "the remote runner ended early (ssh: %s; %s)", how,
		         json_string_value(json_object_get(c.exit_line, "reason"))
		             ?: "no exit line");
	bool ok = c.why[0] == '\0' && !c.any_failed && c.done == json_array_size(c.steps);
	exit_code = ok ? VM_EXIT_OK : VM_EXIT_RUNTIME;
	if (a->json) {
		json_t *d = json_pack("{s:b,s:s,s:s,s:O}", "ok", ok, "host", a->ssh, "remote_dir",
		                      remote_dir, "steps", c.results);
		if (c.exit_line != NULL) {
			json_t *x = json_deep_copy(c.exit_line);
			json_object_del(x, "type");
			json_object_set_new(d, "runner_exit", x);
		}
		if (c.why[0] != '\0')
			json_object_set_new(
			    d, "error",
			    json_pack("{s:s,s:s}", "code", "runner_failed", "message", c.why));
		char *t = json_dumps(d, JSON_INDENT(2));
		json_decref(d);
		if (t != NULL)
			puts(t);
		free(t);
	} else if (c.why[0] != '\0') {
		fprintf(stderr, "vm-agent remote: %s\n", c.why);
	}
	if (json_is_false(json_object_get(c.exit_line, "self_delete")))
		fprintf(stderr, "vm-agent remote: the runner could not delete itself: %s\n",
		        json_string_value(json_object_get(c.exit_line, "self_delete_error"))
		            ?: "?");
cleanup:
	snprintf(cmdline, sizeof(cmdline), "rm -rf %s", remote_dir);
	if (remote_dir[0] != '\0' && ssh_small(&s, kh_opt, cmdline, NULL, 0, NULL, 0, &err) != 0) {
		fprintf(stderr, "vm-agent remote: could not remove %s: %s\n", remote_dir, err.msg);
		exit_code = VM_EXIT_RUNTIME;
	}
out:
	buf_free(&c.line);
	json_decref(c.results);
	json_decref(c.exit_line);
	json_decref(doc);
	free(body);
	free(bin);
	return exit_code;
}

const struct cmd_entry cmd_remote_entry = {
    "remote",
    "run a probe request on a machine without an agent, over SSH",
    "remote --ssh [USER@]HOST [--port PORT] [--identity F] [--known-hosts F] [--ttl D]\n"
    "       [--json] [--insecure-host-key] FILE|-",
    "Runs a probe request ({\"steps\":[…]}) on a remote machine through the system's\n"
    "ssh client: uploads this binary to a private temp dir there (mktemp -d),\n"
    "checks its sha256 on the remote side, runs `runner --stdio --self-delete`,\n"
    "sends the steps one at a time, prints events as they come, and removes the\n"
    "temp dir. Host keys are checked strictly unless --insecure-host-key.\n"
    "Only a static build runs on an arbitrary remote host (docs/runner.md).\n",
    "Exit status: 0 when every step succeeded, 1 otherwise, 64 on a usage error.\n",
    CMD_TABLE(remote_flags),
    sizeof(struct remote_args),
    remote_exec,
};
