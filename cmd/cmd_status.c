/* vm-agent status [--json]: asks the running agent over its admin socket;
 * when none runs, says so, shows what the state directory tells, exit 3. */
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cmd/cmd.h"
#include "core/admin.h"
#include "core/config.h"
#include "core/cp.h"
#include "core/secret.h"
#include "core/fs.h"
#include "core/time.h"
#include "health/health.h"

/* path: "a.b.c" through nested objects */
static json_t *get(json_t *o, const char *path)
{
	char buf[128];
	snprintf(buf, sizeof(buf), "%s", path);
	json_t *cur = o;
	for (char *save, *tok = strtok_r(buf, ".", &save); tok && cur;
	     tok = strtok_r(NULL, ".", &save))
		cur = json_object_get(cur, tok);
	return cur;
}

static const char *str(json_t *o, const char *path)
{
	json_t *v = get(o, path);
	return json_is_string(v) ? json_string_value(v) : NULL;
}

static long long num(json_t *o, const char *path)
{
	json_t *v = get(o, path);
	return json_is_integer(v) ? (long long)json_integer_value(v)
	       : json_is_real(v)  ? (long long)json_real_value(v)
	                          : 0;
}

static void human_duration(long long s, char *out, size_t cap)
{
	if (s >= 86400)
		snprintf(out, cap, "%lldd %lldh %lldm", s / 86400, s % 86400 / 3600, s % 3600 / 60);
	else if (s >= 3600)
		snprintf(out, cap, "%lldh %lldm %llds", s / 3600, s % 3600 / 60, s % 60);
	else if (s >= 60)
		snprintf(out, cap, "%lldm %llds", s / 60, s % 60);
	else
		snprintf(out, cap, "%llds", s);
}

static void print_running(json_t *r)
{
	char up[64];
	human_duration(num(r, "uptime_seconds"), up, sizeof(up));
	printf("vm-agent: running (pid %lld), version %s (%s)\n", num(r, "pid"),
	       str(r, "version") ? str(r, "version") : "?",
	       str(r, "commit") ? str(r, "commit") : "?");
	printf("  uptime:      %s (since %s)\n", up,
	       str(r, "started_at") ? str(r, "started_at") : "?");
	printf("  config:      %s\n", str(r, "config") ? str(r, "config") : "?");
	json_t *h = get(r, "health");
	if (h == NULL || json_is_null(h)) {
		printf("  health:      unknown (the health monitor is not running)\n");
		return;
	}
	printf("  health:      %s\n", str(h, "state") ? str(h, "state") : "?");
	size_t i;
	json_t *reason;
	json_array_foreach(get(h, "reasons"), i, reason)
	    printf("                 - %s\n", json_string_value(reason));
	if (!json_is_true(get(h, "tunnel.enabled")))
		printf("  tunnel:      off (piko.server_url is not set)\n");
	else
		printf("  tunnel:      %s (reconnects %lld%s%s)\n",
		       json_is_true(get(h, "tunnel.connected")) ? "connected" : "down",
		       num(h, "tunnel.reconnects"), str(h, "tunnel.changed_at") ? ", since " : "",
		       str(h, "tunnel.changed_at") ? str(h, "tunnel.changed_at") : "");
	if (!json_is_true(get(h, "probe.enabled")))
		printf("  probes:      not running\n");
	else
		printf("  probes:      %lld queued, %lld running\n", num(h, "probe.queued"),
		       num(h, "probe.running"));
	if (str(h, "containment.mode") != NULL)
		printf("  containment: %s%s%s\n", str(h, "containment.mode"),
		       str(h, "containment.limits_unavailable") ? ", limits unavailable: " : "",
		       str(h, "containment.limits_unavailable")
		           ? str(h, "containment.limits_unavailable")
		           : " (memory, cpu, pids limits)");
	if (!json_is_true(get(h, "reporting.enabled"))) {
		printf("  reports:     off (agent.control_plane_url is not set)\n");
		return;
	}
	const char *ok = str(h, "reporting.last_success_at");
	const char *at = str(h, "reporting.last_attempt_at");
	const char *e = str(h, "reporting.last_error");
	if (at == NULL)
		printf("  last report: none yet\n");
	else if (e == NULL)
		printf("  last report: %s, delivered (HTTP %lld)\n", at,
		       num(h, "reporting.last_status"));
	else
		printf("  last report: %s, failed: %s%s%s\n", at, e, ok ? "; last delivered " : "",
		       ok ? ok : "");
	printf("  spool:       %lld reports waiting (%lld bytes), %lld dropped\n",
	       num(h, "reporting.spool_entries"), num(h, "reporting.spool_bytes"),
	       num(h, "reporting.spool_dropped"));
}

/* When the Piko token expires (its exp claim, from piko.token or the token
 * file), never the token itself: "piko_token_expires_at" in doc. */
static void add_token_expiry(json_t *doc, const struct cfg *cfg)
{
	struct secret tok = {0};
	struct vm_err err;
	int64_t iat = 0, exp = 0;
	if (cfg->piko.token_file[0] != '\0') {
		if (secret_load_file(&tok, cfg->piko.token_file, &err) == 0)
			(void)cp_token_times(tok.value, &iat, &exp);
		secret_clear(&tok);
	} else if (cfg->piko.token[0] != '\0') {
		(void)cp_token_times(cfg->piko.token, &iat, &exp);
	}
	char when[TIME_RFC3339_MAX] = "";
	if (exp > 0)
		time_rfc3339(when, sizeof(when), (int64_t)exp * 1000, false);
	json_object_set_new(doc, "piko_token_expires_at",
	                    when[0] ? json_string(when) : json_null());
}

static void print_token_expiry(json_t *doc)
{
	const char *when = str(doc, "piko_token_expires_at");
	if (when != NULL)
		printf("  piko token:  expires %s\n", when);
}

/* What the files say when no agent answers. */
static json_t *offline_info(const struct cfg *cfg)
{
	char last[PATH_MAX], spool[PATH_MAX];
	health_paths(cfg->agent.state_dir, last, sizeof(last), spool, sizeof(spool));
	uint64_t entries = 0, bytes = 0;
	struct vm_err err = {0};
	json_t *spool_j = health_spool_usage(spool, &entries, &bytes, &err) == 0
	                      ? json_pack("{s:s,s:I,s:I}", "dir", spool, "entries",
	                                  (json_int_t)entries, "bytes", (json_int_t)bytes)
	                      : json_pack("{s:s,s:I,s:I}", "dir", spool, "entries", (json_int_t)0,
	                                  "bytes", (json_int_t)0);
	char *data = NULL;
	json_t *last_j = NULL;
	if (fs_read_file(last, 64 * 1024, &data, NULL, &err) == 0)
		last_j = json_loads(data, 0, NULL);
	free(data);
	return json_pack("{s:b,s:s,s:s,s:o,s:o}", "running", 0, "config", cfg->source, "state_dir",
	                 cfg->agent.state_dir, "spool", spool_j, "last_report",
	                 last_j ? last_j : json_null());
}

static void print_offline(json_t *o, const char *sock)
{
	printf("vm-agent: not running (no agent answers on %s)\n", sock);
	printf("  config:      %s\n", str(o, "config"));
	printf("  state dir:   %s\n", str(o, "state_dir"));
	printf("  spool:       %lld reports waiting (%lld bytes) in %s\n", num(o, "spool.entries"),
	       num(o, "spool.bytes"), str(o, "spool.dir"));
	json_t *lr = get(o, "last_report");
	if (!json_is_object(lr)) {
		printf("  last report: none recorded\n");
		return;
	}
	char when[TIME_RFC3339_MAX];
	time_rfc3339(when, sizeof(when), (int64_t)num(lr, "at") * 1000, false);
	printf("  last report: %s, %s%s%s (state %s)\n", when,
	       json_is_true(get(lr, "delivered")) ? "delivered" : "failed",
	       str(lr, "error") ? ": " : "", str(lr, "error") ? str(lr, "error") : "",
	       str(lr, "state") ? str(lr, "state") : "?");
}

static void print_json(json_t *doc)
{
	char *text = json_dumps(doc, JSON_INDENT(2));
	if (text != NULL)
		puts(text);
	free(text);
}

struct status_args {
	const char *config;
	bool json;
};

static const struct cmd_flag status_flags[] = {
    {"config", 'c', CMD_FLAG_STR, offsetof(struct status_args, config), "FILE",
     "configuration file that names the directories\n"
     "(default " CFG_SYSTEM_PATH " when present)"},
    {"json", 0, CMD_FLAG_BOOL, offsetof(struct status_args, json), NULL, "machine-readable output"},
};

static int status_exec(const struct cmd_entry *self, void *args)
{
	(void)self;
	const struct status_args *a = args;
	const char *config = a->config;
	bool json = a->json;
	int rc;
	if (config == NULL && access(CFG_SYSTEM_PATH, F_OK) == 0)
		config = CFG_SYSTEM_PATH;

	/* The system config is usually root-only: that is a permission problem,
	 * not a broken configuration. */
	if (config != NULL && access(config, R_OK) != 0 && errno == EACCES) {
		fprintf(stderr,
		        "vm-agent status: permission denied reading %s: run as root (or as "
		        "the agent's user)\n",
		        config);
		return VM_EXIT_NOPERM;
	}
	struct cfg *cfg = malloc(sizeof(*cfg));
	struct vm_err err = {0};
	if (cfg == NULL)
		return VM_EXIT_RUNTIME;
	if (cfg_load(cfg, config, NULL, &err) != 0) {
		fprintf(stderr, "vm-agent status: %s\n", err.msg);
		cfg_free(cfg);
		return VM_EXIT_CONFIG;
	}
	char sock[PATH_MAX];
	admin_socket_path(cfg->agent.runtime_dir, sock, sizeof(sock));
	char *reply = NULL;
	int exit_code = VM_EXIT_OK;
	rc = admin_call(sock, "{\"cmd\":\"status\"}", 5000, &reply, &err);
	if (rc == -VM_ERR_PERM) {
		fprintf(stderr, "vm-agent status: %s\n", err.msg);
		exit_code = VM_EXIT_NOPERM;
	} else if (rc == -VM_ERR_NOTFOUND) {
		json_t *o = offline_info(cfg);
		if (o != NULL)
			add_token_expiry(o, cfg);
		if (json)
			print_json(o);
		else if (o != NULL) {
			print_offline(o, sock);
			print_token_expiry(o);
		}
		json_decref(o);
		exit_code = VM_EXIT_NOT_RUNNING;
	} else if (rc != 0) {
		fprintf(stderr, "vm-agent status: %s\n", err.msg);
		exit_code = VM_EXIT_RUNTIME;
	} else {
		json_t *doc = json_loads(reply, 0, NULL);
		json_t *res = json_object_get(doc, "result");
		if (!json_is_true(json_object_get(doc, "ok")) || !json_is_object(res)) {
			const char *m = str(doc, "error.message");
			fprintf(stderr, "vm-agent status: the agent answered an error: %s\n",
			        m ? m : "malformed reply");
			exit_code = VM_EXIT_RUNTIME;
		} else if (json) {
			json_object_set_new(res, "running", json_true());
			add_token_expiry(res, cfg);
			print_json(res);
		} else {
			add_token_expiry(res, cfg);
			print_running(res);
			print_token_expiry(res);
		}
		json_decref(doc);
	}
	free(reply);
	cfg_free(cfg);
	return exit_code;
}

const struct cmd_entry cmd_status_entry = {
    "status",
    "show whether the agent runs, its health, tunnel and reports",
    "status [--json] [--config FILE]",
    "Asks the running agent (over the admin socket <agent.runtime_dir>/admin.sock)\n"
    "for its state: service, version, uptime, tunnel, health state and reasons,\n"
    "probe queue, last health report. When no agent runs, says so and shows what\n"
    "the state directory holds (spool, last report) and exits 3.\n",
    "Exit codes: 0 running, 3 not running, 77 no permission to ask the agent,\n"
    "78 configuration error.\n",
    CMD_TABLE(status_flags),
    sizeof(struct status_args),
    status_exec,
};
