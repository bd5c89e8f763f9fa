/* vm-agent install: register (once), write config and credentials, place the
 * binary, write and enable the unit, start and wait for health. Every step
 * checks what is already there, so running it again is safe. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/codec.h"
#include "core/config.h"
#include "core/fs.h"
#include "core/http.h"
#include "core/time.h"
#include "lifecycle/internal.h"

struct dir_row {
	size_t off; /* offset of the path in struct lc_paths */
	mode_t mode;
};

/* The directories install creates, with their modes (repair checks the same). */
static const struct dir_row dirs[] = {
    {offsetof(struct lc_paths, etc_dir), 0750},
    {offsetof(struct lc_paths, state_dir), 0700},
    {offsetof(struct lc_paths, log_dir), 0750},
    {offsetof(struct lc_paths, cache_dir), 0700},
};

int lc_install_dirs(const struct lc_paths *p, struct lc_report *r, bool fix, struct vm_err *err)
{
	int failed = 0;
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		const char *d = (const char *)p + dirs[i].off;
		struct stat st;
		bool ok = stat(d, &st) == 0 && S_ISDIR(st.st_mode) &&
		          (st.st_mode & 07777) == dirs[i].mode;
		if (ok) {
			lc_report_add(r, "dir", LC_OK, NULL, "%s (%04o)", lc_target_path(p, d),
			              (unsigned)dirs[i].mode);
			continue;
		}
		if (!fix) {
			lc_report_add(r, "dir", LC_FAIL, "run 'vm-agent repair'",
			              "%s missing or not mode %04o", lc_target_path(p, d),
			              (unsigned)dirs[i].mode);
			failed = 1;
			continue;
		}
		struct vm_err e = {0};
		if (lc_ensure_dir(d, dirs[i].mode, NULL, &e) != 0) {
			lc_report_add(r, "dir", LC_FAIL, NULL, "%s", e.msg);
			failed = 1;
			if (err)
				*err = e;
			continue;
		}
		lc_report_add(r, "dir", LC_CHANGED, NULL, "%s created or set to %04o",
		              lc_target_path(p, d), (unsigned)dirs[i].mode);
	}
	return failed ? -VM_ERR_IO : 0;
}

static void sanitize_endpoint(const char *in, char *out, size_t cap)
{
	size_t o = 0;
	for (; *in && o + 1 < cap; in++) {
		char c = *in;
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		          (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' || c == '~';
		out[o++] = ok ? c : '-';
	}
	out[o] = '\0';
}

int lc_write_credentials(const struct lc_paths *p, const struct cp_registration *reg,
                         const char *tenant_id, const char *cp_url, struct vm_err *err)
{
	char when[32];
	(void)time_rfc3339(when, sizeof(when), time_wall_ms(), false);
	json_t *keys = json_loads(reg->jwt_keys_json ? reg->jwt_keys_json : "[]", 0, NULL);
	json_t *extra = json_pack("{s:s,s:o}", "issued_at", when, "jwt_public_keys",
	                          keys ? keys : json_array());
	struct cp_creds c = {0};
	snprintf(c.agent_id, sizeof(c.agent_id), "%s", reg->agent_id);
	snprintf(c.tenant_id, sizeof(c.tenant_id), "%s", tenant_id);
	snprintf(c.control_plane_url, sizeof(c.control_plane_url), "%s", cp_url);
	c.token = reg->token; /* borrowed: not cleared here */
	int rc = extra != NULL ? cp_creds_write(p->credentials, &c, extra, err)
	                       : vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	json_decref(extra);
	if (rc == 0 && reg->piko_token.value != NULL)
		rc = fs_write_atomic(p->piko_token, reg->piko_token.value, reg->piko_token.len,
		                     0600, err);
	return rc;
}

/* Polls GET /v1/livez on the configured port until it answers 200. */
int lc_wait_healthy(const char *config_path, unsigned timeout_s, struct vm_err *err)
{
	struct cfg *c = malloc(sizeof(*c));
	if (c == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	int rc = cfg_load(c, config_path, NULL, err);
	char url[128];
	const char *host = c->webhook.listen_addr;
	if (strcmp(host, "0.0.0.0") == 0 || host[0] == '\0')
		host = "127.0.0.1";
	snprintf(url, sizeof(url),
	         strchr(host, ':') ? "%s://[%s]:%d/v1/livez" : "%s://%s:%d/v1/livez",
	         c->webhook.tls_enabled ? "https" : "http", host, c->webhook.port);
	free(c);
	if (rc != 0)
		return rc;
	int64_t deadline = time_mono_ms() + (int64_t)timeout_s * 1000;
	struct http_opts o = {.connect_timeout_ms = 1000, .total_timeout_ms = 2000};
	for (;;) {
		struct http_resp resp;
		struct vm_err e;
		int r = http_request(&o, "GET", url, NULL, NULL, 0, &resp, &e);
		long status = resp.status;
		http_resp_free(&resp);
		if (r == 0 && status == 200)
			return 0;
		if (time_mono_ms() >= deadline)
			return vm_err_set(err, VM_ERR_IO,
			                  "the agent did not answer %s within %us "
			                  "(last: %s); see 'journalctl -u vm-agent'",
			                  url, timeout_s, r == 0 ? "non-200 answer" : e.msg);
		struct timespec ts = {0, 250 * 1000000};
		nanosleep(&ts, NULL);
	}
}

/* What registration hands to the config besides the ids. */
struct reg_out {
	char piko_ep[CFG_ID_MAX];
	char piko_url[CFG_STR_MAX];
	char jwt_keys[CFG_LIST_MAX * 96]; /* comma-separated key files, "" = unchanged */
	char jwt_issuer[CFG_STR_MAX];
};

static bool safe_kid(const char *k)
{
	if (k == NULL || k[0] == '\0' || k[0] == '.' || strlen(k) > 64)
		return false;
	for (; *k; k++)
		if (!((*k >= 'a' && *k <= 'z') || (*k >= 'A' && *k <= 'Z') ||
		      (*k >= '0' && *k <= '9') || *k == '-' || *k == '_' || *k == '.'))
			return false;
	return true;
}

/* The webhook's JWT keys: one PEM file per key, /etc/vm-agent/keys/<kid>.pem
 * (the webhook takes the kid from the file name), listed in auth.jwt_keys. */
static int write_jwt_keys(const struct lc_paths *p, const char *keys_json, struct reg_out *ro,
                          struct lc_report *r, struct vm_err *err)
{
	json_t *keys = json_loads(keys_json ? keys_json : "[]", 0, NULL);
	size_t i, o = 0;
	json_t *k;
	char dir[PATH_MAX];
	lc_join(dir, sizeof(dir), p->root, LC_ETC_DIR "/keys");
	int rc = 0;
	json_array_foreach(keys, i, k)
	{
		const char *kid = json_string_value(json_object_get(k, "kid"));
		const char *pem = json_string_value(json_object_get(k, "pem"));
		if (!safe_kid(kid) || pem == NULL ||
		    strncmp(pem, "-----BEGIN PUBLIC KEY-----", 26) != 0 || i >= CFG_LIST_MAX) {
			lc_report_add(r, "jwt keys", LC_WARN, NULL,
			              "key %zu of the registration answer "
			              "skipped (needs a safe kid and a PEM public key)",
			              i);
			continue;
		}
		char path[PATH_MAX + 80];
		snprintf(path, sizeof(path), "%s/%s.pem", dir, kid);
		if ((rc = fs_mkdir_p(dir, 0755, err)) != 0 ||
		    (rc = fs_write_atomic(path, pem, strlen(pem), 0644, err)) != 0)
			break;
		o = str_appendf(ro->jwt_keys, sizeof(ro->jwt_keys), o, "%s%s", o ? "," : "",
		                lc_target_path(p, path));
	}
	json_decref(keys);
	return rc;
}

static int install_credentials(const struct lc_install_opts *o, const struct lc_paths *p,
                               const char *cp_url, struct lc_report *r, char *agent_id,
                               size_t id_cap, struct reg_out *ro, struct vm_err *err)
{
	struct cp_creds old;
	struct vm_err e;
	bool have = cp_creds_load(p->credentials, &old, &e) == 0;
	if (have && !old.deregistered && !o->reregister &&
	    strcmp(old.tenant_id, o->tenant_id) == 0) {
		snprintf(agent_id, id_cap, "%s", old.agent_id);
		lc_report_add(r, "register", LC_SKIPPED, NULL,
		              "already registered as %s (use "
		              "--reregister to register again)",
		              old.agent_id);
		cp_creds_clear(&old);
		return 0;
	}
	if (o->install_key == NULL || o->install_key[0] == '\0') {
		cp_creds_clear(&old);
		return vm_err_set(err, VM_ERR_INVALID,
		                  "--key (the one-time install key) is required "
		                  "to register this machine");
	}
	const char *want_id = o->agent_id ? o->agent_id : (have ? old.agent_id : NULL);
	struct cp_opts cp = {.url = cp_url, .ca_file = o->ca_file, .proxy = o->proxy};
	struct cp_registration reg;
	int rc = cp_register(&cp, o->install_key, o->tenant_id, want_id, o->version, &reg, err);
	cp_creds_clear(&old);
	if (rc != 0) {
		lc_report_add(r, "register", LC_FAIL,
		              "check --control-plane-url, --key and the network "
		              "('vm-agent repair --diagnose')",
		              "%s", err ? err->msg : "failed");
		return rc;
	}
	rc = lc_write_credentials(p, &reg, o->tenant_id, cp_url, err);
	if (rc == 0)
		rc = write_jwt_keys(p, reg.jwt_keys_json, ro, r, err);
	if (rc == 0) {
		snprintf(agent_id, id_cap, "%s", reg.agent_id);
		snprintf(ro->piko_ep, sizeof(ro->piko_ep), "%s", reg.piko_endpoint);
		if (reg.piko_url[0] != '\0')
			snprintf(ro->piko_url, sizeof(ro->piko_url), "%s", reg.piko_url);
		snprintf(ro->jwt_issuer, sizeof(ro->jwt_issuer), "%s",
		         reg.jwt_issuer[0] ? reg.jwt_issuer : cp_url);
		lc_report_add(r, "register", LC_CHANGED, NULL,
		              "registered as %s; credentials in %s "
		              "(0600)",
		              reg.agent_id, lc_target_path(p, p->credentials));
	}
	cp_registration_clear(&reg);
	return rc;
}

static int install_config(const struct lc_install_opts *o, const struct lc_paths *p,
                          const char *agent_id, const struct reg_out *ro, const char *cp_url,
                          struct lc_report *r, struct vm_err *err)
{
	const char *piko_ep = ro->piko_ep, *piko_url = ro->piko_url;
	struct cfg_doc *doc = NULL;
	int rc = cfg_doc_read(&doc, p->config, err);
	if (rc != 0) {
		lc_report_add(r, "config", LC_FAIL, "fix or remove the file, then re-run", "%s",
		              err ? err->msg : "unreadable");
		return rc;
	}
	char ep[CFG_ID_MAX];
	/* a re-run keeps the endpoint the file names */
	sanitize_endpoint(piko_ep[0]                          ? piko_ep
	                  : cfg_doc_has(doc, "piko.endpoint") ? cfg_doc_values(doc)->piko.endpoint
	                                                      : agent_id,
	                  ep, sizeof(ep));
	struct {
		const char *key, *value;
	} const rows[] = {
	    {"agent.id", agent_id},
	    {"agent.tenant_id", o->tenant_id},
	    {"agent.control_plane_url", cp_url},
	    {"agent.state_dir", LC_STATE_DIR},
	    {"agent.credentials_file", LC_CREDENTIALS},
	    {"piko.server_url", piko_url},
	    {"piko.endpoint", ep},
	    {"piko.token_file", lc_exists(p->piko_token) ? LC_PIKO_TOKEN : NULL},
	    {"piko.ca_file", o->ca_file},
	    {"piko.proxy_url", o->proxy},
	    {"agent.ca_file", o->ca_file},
	    {"agent.proxy_url", o->proxy},
	    {"log.file", LC_LOG_DIR "/agent.log"},
	    {"auth.jwt_keys", ro->jwt_keys},
	    {"auth.issuer", ro->jwt_keys[0] ? ro->jwt_issuer : NULL},
	};
	for (size_t i = 0; rc == 0 && i < sizeof(rows) / sizeof(rows[0]); i++)
		if (rows[i].value != NULL && rows[i].value[0] != '\0')
			rc = cfg_doc_set(doc, rows[i].key, rows[i].value, err);
	if (rc == 0 && cfg_doc_has(doc, "piko.token_file"))
		rc = cfg_doc_unset(doc, "piko.token", err); /* token_file wins; both is an error */
	bool same = rc == 0 && !cfg_doc_changed(doc) && lc_exists(p->config);
	if (rc == 0 && !same)
		rc = lc_config_write(p->config, doc, err);
	if (rc == 0)
		lc_report_add(r, "config", same ? LC_OK : LC_CHANGED, NULL, "%s%s",
		              lc_target_path(p, p->config), same ? " unchanged" : " written");
	else
		lc_report_add(r, "config", LC_FAIL, NULL, "%s", err ? err->msg : "failed");
	cfg_doc_free(doc);
	return rc;
}

static int install_binary(const struct lc_install_opts *o, const struct lc_paths *p,
                          struct lc_report *r, struct vm_err *err)
{
	const char *self = o->self_path ? o->self_path : "/proc/self/exe";
	struct lc_record rec = {0};
	snprintf(rec.bin, sizeof(rec.bin), "%s", lc_target_path(p, p->bin));
	snprintf(rec.version, sizeof(rec.version), "%s", o->version);
	rec.from_package = o->from_package;
	int rc;
	if (o->from_package) {
		/* dpkg placed it; nothing to copy */
		rc = lc_sha256_hex(p->bin, rec.sha256, err);
		if (rc == 0)
			lc_report_add(r, "binary", LC_OK, NULL, "%s (from the package)", rec.bin);
	} else {
		char have[65] = "", want[65];
		rc = lc_sha256_hex(self, want, err);
		if (rc == 0 && lc_exists(p->bin))
			(void)lc_sha256_hex(p->bin, have, NULL);
		if (rc == 0 && strcmp(have, want) == 0) {
			lc_report_add(r, "binary", LC_OK, NULL, "%s already this version", rec.bin);
		} else if (rc == 0) {
			char dir[PATH_MAX];
			snprintf(dir, sizeof(dir), "%s", p->bin);
			*strrchr(dir, '/') = '\0';
			rc = fs_mkdir_p(dir, 0755, err);
			if (rc == 0)
				rc = fs_copy_file(self, p->bin, 0755, 0, err);
			if (rc == 0)
				lc_report_add(r, "binary", LC_CHANGED, NULL,
				              "%s placed (version %s)", rec.bin, o->version);
		}
		memcpy(rec.sha256, want, sizeof(want));
	}
	if (rc == 0)
		rc = lc_record_write(p, &rec, err);
	if (rc != 0)
		lc_report_add(r, "binary", LC_FAIL, NULL, "%s", err ? err->msg : "failed");
	return rc;
}

static int install_unit(const struct lc_paths *p, struct lc_report *r, struct vm_err *err)
{
	bool changed = false;
	int rc = lc_svc_write_unit(p, lc_target_path(p, p->bin), &changed, err);
	if (rc != 0) {
		lc_report_add(r, "unit", LC_FAIL, NULL, "%s", err ? err->msg : "failed");
		return rc;
	}
	lc_report_add(r, "unit", changed ? LC_CHANGED : LC_OK, NULL, "%s%s",
	              lc_target_path(p, p->unit), changed ? " written" : " unchanged");
	bool was = lc_svc_is_enabled(p);
	rc = lc_svc_enable(p, err);
	if (rc != 0) {
		lc_report_add(r, "enable", LC_FAIL, NULL, "%s", err ? err->msg : "failed");
		return rc;
	}
	lc_report_add(r, "enable", was ? LC_OK : LC_CHANGED, NULL, "%s enabled%s", LC_UNIT_NAME,
	              p->root[0] ? " (offline, under --root)" : "");
	return 0;
}

static int install_start(const struct lc_install_opts *o, const struct lc_paths *p,
                         struct lc_report *r, struct vm_err *err)
{
	if (p->root[0] != '\0' || o->no_start) {
		lc_report_add(r, "start", LC_SKIPPED, NULL, "%s",
		              p->root[0] ? "not started under "
		                           "--root"
		                         : "not started (--no-start)");
		return 0;
	}
	int rc = lc_svc_restart(p, err);
	if (rc == 0)
		rc =
		    lc_wait_healthy(p->config, o->health_timeout_s ? o->health_timeout_s : 30, err);
	if (rc != 0) {
		lc_report_add(r, "start", LC_FAIL,
		              "'vm-agent repair --diagnose', 'journalctl -u "
		              "vm-agent'",
		              "%s", err ? err->msg : "failed");
		return rc;
	}
	lc_report_add(r, "start", LC_CHANGED, NULL, "running and answering /v1/livez");
	return 0;
}

int lc_install(const struct lc_install_opts *o, struct lc_report *r, struct vm_err *err)
{
	struct lc_paths p;
	int rc = lc_paths_init(&p, o->root, o->from_package ? LC_BIN_PACKAGE : LC_BIN_LOCAL, err);
	if (rc != 0)
		return rc;
	if (o->tenant_id == NULL || o->tenant_id[0] == '\0')
		return vm_err_set(err, VM_ERR_INVALID, "--tenant-id is required");
	/* A re-run may omit the URLs: take them from the existing config. */
	char cp_url[CFG_STR_MAX] = "";
	char agent_id[CFG_ID_MAX] = "";
	struct reg_out *ro = calloc(1, sizeof(*ro));
	if (ro == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	char *piko_url = ro->piko_url;
	const size_t piko_url_cap = sizeof(ro->piko_url);
	struct cfg *cur = lc_config_effective(p.config, NULL);
	if (cur != NULL) {
		snprintf(cp_url, sizeof(cp_url), "%s", cur->agent.control_plane_url);
		snprintf(piko_url, piko_url_cap, "%s", cur->piko.server_url);
		lc_config_free(cur);
	}
	if (o->control_plane_url)
		snprintf(cp_url, sizeof(cp_url), "%s", o->control_plane_url);
	if (o->piko_url)
		snprintf(piko_url, piko_url_cap, "%s", o->piko_url);
	if (!url_is_http(cp_url)) {
		rc = vm_err_set(err, VM_ERR_INVALID,
		                "--control-plane-url: expected an http(s):// "
		                "URL with a host");
		goto out;
	}
	if (!url_is_http(piko_url)) {
		rc = vm_err_set(err, VM_ERR_INVALID,
		                "--piko-url: expected an http(s):// URL with a "
		                "host");
		goto out;
	}
	if ((rc = lc_install_dirs(&p, r, true, err)) != 0)
		goto out;
	rc = install_credentials(o, &p, cp_url, r, agent_id, sizeof(agent_id), ro, err);
	if (rc != 0)
		goto out;
	lc_report_fact(r, "agent_id", agent_id);
	if ((rc = install_config(o, &p, agent_id, ro, cp_url, r, err)) != 0 ||
	    (rc = install_binary(o, &p, r, err)) != 0 || (rc = install_unit(&p, r, err)) != 0 ||
	    (rc = install_start(o, &p, r, err)) != 0)
		goto out;
	lc_report_fact(r, "version", o->version);
	snprintf(r->result, sizeof(r->result), "vm-agent %s installed as agent %s", o->version,
	         agent_id);
out:
	free(ro);
	return rc;
}
