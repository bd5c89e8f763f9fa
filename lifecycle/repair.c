/* vm-agent repair: a table of checks, each able to say OK/WARN/FAIL with a
 * fix hint (--diagnose) and, without --diagnose, to fix what it can. */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "core/codec.h"
#include "core/config.h"
#include "core/cp.h"
#include "core/http.h"
#include "lifecycle/internal.h"

#define DISK_WARN_BYTES   (200ull * 1024 * 1024)
#define DISK_FAIL_BYTES   (20ull * 1024 * 1024)
#define CLOCK_SKEW_WARN_S 60

struct ctx {
	const struct lc_repair_opts *o;
	struct lc_paths p;
	struct lc_report *r;
	bool fix;
	bool restart_needed;
	struct cfg *cfg; /* the effective configuration (defaults when unreadable) */
	/* its files as this process reaches them (under --root), for the checks
	 * that use them: the control-plane client and the reach checks */
	char ca[PATH_MAX], piko_ca[PATH_MAX], proxy_creds[PATH_MAX];
	struct cp_opts cp;
};

/* --- checks ------------------------------------------------------------------------------------
 */

static void check_binary(struct ctx *c)
{
	struct lc_record rec;
	const char *shown = lc_target_path(&c->p, c->p.bin);
	if (!lc_exists(c->p.bin)) {
		lc_report_add(c->r, "binary", LC_FAIL, "re-run 'vm-agent install'", "%s missing",
		              shown);
		return;
	}
	char sha[65];
	if (lc_sha256_hex(c->p.bin, sha, NULL) != 0 || lc_record_read(&c->p, &rec, NULL) != 0) {
		lc_report_add(c->r, "binary", LC_WARN, "re-run 'vm-agent install' to record it",
		              "%s present, no install record to compare with", shown);
		return;
	}
	if (strcmp(sha, rec.sha256) != 0)
		lc_report_add(
		    c->r, "binary", LC_FAIL, "re-run 'vm-agent install' or 'vm-agent upgrade'",
		    "%s does not match its recorded sha256 (modified or corrupted)", shown);
	else
		lc_report_add(c->r, "binary", LC_OK, NULL, "%s %s, sha256 matches", shown,
		              rec.version);
}

static void check_config(struct ctx *c)
{
	struct vm_err e = {0};
	if (lc_config_check(c->p.root, c->p.config, NULL, &e) == 0) {
		lc_report_add(c->r, "config", LC_OK, NULL, "%s valid",
		              lc_target_path(&c->p, c->p.config));
		return;
	}
	char bak[PATH_MAX + 8];
	snprintf(bak, sizeof(bak), "%s.bak", c->p.config);
	bool bak_ok = lc_config_check(c->p.root, bak, NULL, NULL) == 0;
	if (c->fix && bak_ok && fs_copy_file(bak, c->p.config, 0640, 0, NULL) == 0) {
		lc_report_add(c->r, "config", LC_CHANGED, NULL, "invalid (%s); restored %s.bak",
		              e.msg, lc_target_path(&c->p, c->p.config));
		c->restart_needed = true;
		return;
	}
	lc_report_add(c->r, "config", LC_FAIL,
	              bak_ok ? "run 'vm-agent repair' to restore the .bak"
	                     : "fix the line named, check with 'vm-agent configure --check'",
	              "%s", e.msg);
}

struct perm_row {
	size_t off;
	mode_t mode; /* expected exact mode */
	const char *why;
};

static const struct perm_row perms[] = {
    {offsetof(struct lc_paths, credentials), 0600, "holds the agent credential"},
    {offsetof(struct lc_paths, piko_token), 0600, "holds the Piko token"},
    {offsetof(struct lc_paths, config), 0640, "configuration"},
    {offsetof(struct lc_paths, unit), 0644, "systemd unit"},
};

static void check_permissions(struct ctx *c)
{
	for (size_t i = 0; i < sizeof(perms) / sizeof(perms[0]); i++) {
		const char *path = (const char *)&c->p + perms[i].off;
		struct stat st;
		if (lstat(path, &st) != 0)
			continue; /* absence is reported by the file's own check */
		const char *shown = lc_target_path(&c->p, path);
		mode_t m = st.st_mode & 07777;
		if (S_ISREG(st.st_mode) && m == perms[i].mode) {
			lc_report_add(c->r, "permissions", LC_OK, NULL, "%s %04o", shown,
			              (unsigned)m);
			continue;
		}
		if (c->fix && S_ISREG(st.st_mode) && chmod(path, perms[i].mode) == 0) {
			lc_report_add(c->r, "permissions", LC_CHANGED, NULL, "%s %04o -> %04o (%s)",
			              shown, (unsigned)m, (unsigned)perms[i].mode, perms[i].why);
			continue;
		}
		lc_report_add(c->r, "permissions", LC_FAIL, "run 'vm-agent repair'",
		              "%s is %04o, "
		              "expected %04o (%s)",
		              shown, (unsigned)m, (unsigned)perms[i].mode, perms[i].why);
	}
}

static void check_dirs(struct ctx *c)
{
	(void)lc_install_dirs(&c->p, c->r, c->fix, NULL);
}

static void check_unit(struct ctx *c)
{
	char *want = lc_svc_render_unit(lc_target_path(&c->p, c->p.bin));
	char *have = NULL;
	size_t len = 0;
	FILE *f = fopen(c->p.unit, "r");
	if (f != NULL) {
		have = calloc(1, 1 << 16);
		if (have != NULL)
			len = fread(have, 1, (1 << 16) - 1, f);
		fclose(f);
	}
	bool same = want && have && len == strlen(want) && memcmp(want, have, len) == 0;
	const char *shown = lc_target_path(&c->p, c->p.unit);
	free(want);
	free(have);
	if (same) {
		lc_report_add(c->r, "unit", LC_OK, NULL, "%s as expected", shown);
	} else if (c->fix) {
		struct vm_err e = {0};
		if (lc_svc_write_unit(&c->p, lc_target_path(&c->p, c->p.bin), NULL, &e) == 0) {
			lc_report_add(c->r, "unit", LC_CHANGED, NULL, "%s rewritten", shown);
			c->restart_needed = true;
		} else {
			lc_report_add(c->r, "unit", LC_FAIL, NULL, "%s", e.msg);
		}
	} else {
		lc_report_add(c->r, "unit", LC_FAIL, "run 'vm-agent repair'", "%s %s", shown,
		              lc_exists(c->p.unit) ? "differs from the expected unit" : "missing");
	}
	if (lc_svc_is_enabled(&c->p)) {
		lc_report_add(c->r, "enabled", LC_OK, NULL, "%s enabled", LC_UNIT_NAME);
	} else if (c->fix) {
		struct vm_err e = {0};
		if (lc_svc_enable(&c->p, &e) == 0)
			lc_report_add(c->r, "enabled", LC_CHANGED, NULL, "%s enabled",
			              LC_UNIT_NAME);
		else
			lc_report_add(c->r, "enabled", LC_FAIL, NULL, "%s", e.msg);
	} else {
		lc_report_add(c->r, "enabled", LC_FAIL, "run 'vm-agent repair'",
		              "%s not enabled (will "
		              "not start at boot)",
		              LC_UNIT_NAME);
	}
}

static void check_active(struct ctx *c)
{
	if (!lc_svc_available(&c->p)) {
		lc_report_add(c->r, "active", LC_SKIPPED, NULL, "%s",
		              c->p.root[0] ? "not checked "
		                             "under --root"
		                           : "systemd is not running");
		return;
	}
	bool active = lc_svc_is_active(&c->p);
	if (active && !c->restart_needed) {
		lc_report_add(c->r, "active", LC_OK, NULL, "%s running", LC_UNIT_NAME);
		return;
	}
	if (!c->fix) {
		lc_report_add(c->r, "active", LC_FAIL,
		              "run 'vm-agent repair'; see 'journalctl -u "
		              "vm-agent'",
		              "%s not running", LC_UNIT_NAME);
		return;
	}
	struct vm_err e = {0};
	if (lc_svc_restart(&c->p, &e) == 0 && lc_wait_healthy(c->p.config, 30, &e) == 0)
		lc_report_add(c->r, "active", LC_CHANGED, NULL, "%s restarted and healthy",
		              LC_UNIT_NAME);
	else
		lc_report_add(c->r, "active", LC_FAIL, "see 'journalctl -u vm-agent'", "%s", e.msg);
}

static void check_disk(struct ctx *c)
{
	struct statvfs sv;
	const char *where =
	    lc_is_dir(c->p.state_dir) ? c->p.state_dir : (c->p.root[0] ? c->p.root : "/");
	if (statvfs(where, &sv) != 0) {
		lc_report_add(c->r, "disk", LC_WARN, NULL, "statvfs %s: %s", where,
		              strerror(errno));
		return;
	}
	unsigned long long avail = (unsigned long long)sv.f_bavail * sv.f_frsize;
	enum lc_status st = avail < DISK_FAIL_BYTES   ? LC_FAIL
	                    : avail < DISK_WARN_BYTES ? LC_WARN
	                                              : LC_OK;
	lc_report_add(c->r, "disk", st,
	              "free space on the filesystem of the state dir (upgrades "
	              "need about twice the binary)",
	              "%llu MiB free on %s", avail >> 20, lc_target_path(&c->p, where));
}

/* One GET: DNS + TCP + TLS, and the server's Date header for the clock. */
struct probe {
	time_t date;
};

static size_t on_header(char *buf, size_t size, size_t n, void *ud)
{
	struct probe *pr = ud;
	size_t len = size * n;
	if (len > 5 && strncasecmp(buf, "Date:", 5) == 0) {
		char tmp[128];
		snprintf(tmp, sizeof(tmp), "%.*s", (int)(len - 5), buf + 5);
		pr->date = curl_getdate(tmp, NULL);
	}
	return len;
}

static size_t discard(char *buf, size_t size, size_t n, void *ud)
{
	(void)buf, (void)ud;
	return size * n;
}

/* url with that section's ca_file and proxy_url (agent or piko). */
static void check_reach(struct ctx *c, const char *name, const char *url, const char *ca,
                        const char *proxy, bool clock)
{
	if (c->o->offline) {
		lc_report_add(c->r, name, LC_SKIPPED, NULL, "--offline");
		return;
	}
	if (url[0] == '\0') {
		lc_report_add(c->r, name, LC_WARN, "vm-agent configure --set …",
		              "no URL configured");
		return;
	}
	CURL *h = curl_easy_init();
	struct probe pr = {-1};
	if (h == NULL)
		return;
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &pr);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
	const char *bundle = http_ca_bundle(ca);
	if (bundle != NULL)
		curl_easy_setopt(h, CURLOPT_CAINFO, bundle);
	(void)http_proxy_apply(h, proxy, c->proxy_creds, NULL);
	CURLcode cc = curl_easy_perform(h);
	long status = 0;
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(h);
	if (cc != CURLE_OK) {
		lc_report_add(c->r, name, LC_FAIL,
		              cc == CURLE_COULDNT_RESOLVE_HOST
		                  ? "check DNS "
		                    "(/etc/resolv.conf)"
		                  : "check the firewall, the proxy and CA settings of "
		                    "this section",
		              "%s: %s", url_shown(url).s, curl_easy_strerror(cc));
		return;
	}
	if (status == 407) { /* the proxy answered, not the URL */
		lc_report_add(c->r, name, LC_FAIL,
		              "check agent.proxy_credentials_file and the proxy's user",
		              "%s: the proxy refused the credentials (HTTP 407)", url_shown(url).s);
		return;
	}
	lc_report_add(c->r, name, LC_OK, NULL,
	              "%s answers (HTTP %ld): DNS, connection and TLS "
	              "work",
	              url_shown(url).s, status);
	if (!clock)
		return;
	if (pr.date <= 0) {
		lc_report_add(c->r, "clock", LC_SKIPPED, NULL, "no Date header to compare with");
		return;
	}
	long skew = (long)(time(NULL) - pr.date);
	lc_report_add(c->r, "clock", labs(skew) > CLOCK_SKEW_WARN_S ? LC_WARN : LC_OK,
	              "enable time sync (systemd-timesyncd or chrony): tokens have short lifetimes",
	              "%+lds from the control plane's clock", skew);
}

/* An empty setting stays empty; a path too long for the root is left empty
 * too (it names no file this process could reach). */
static void host_path(const struct ctx *c, const char *target, char out[PATH_MAX])
{
	out[0] = '\0';
	if (target[0] != '\0' && lc_join(out, PATH_MAX, c->p.root, target) != 0)
		out[0] = '\0';
}

static void host_paths(struct ctx *c)
{
	const struct cfg *cfg = c->cfg;
	host_path(c, cfg->agent.ca_file, c->ca);
	host_path(c, cfg->piko.ca_file, c->piko_ca);
	host_path(c, cfg->agent.proxy_credentials_file, c->proxy_creds);
	c->cp = (struct cp_opts){.url = cfg->agent.control_plane_url,
	                         .ca_file = c->ca,
	                         .proxy = cfg->agent.proxy_url,
	                         .proxy_credentials_file = c->proxy_creds};
}

static int reregister(struct ctx *c, const char *agent_id, struct vm_err *err)
{
	const struct cfg *cfg = c->cfg;
	struct cp_registration reg;
	int rc = cp_register(&c->cp, c->o->install_key, cfg->agent.tenant_id, agent_id,
	                     c->o->version ? c->o->version : "", &reg, err);
	if (rc == 0)
		rc = lc_write_credentials(&c->p, &reg, cfg->agent.tenant_id, c->cp.url, err);
	cp_registration_clear(&reg);
	return rc;
}

static void check_credentials(struct ctx *c)
{
	struct cp_creds cr;
	struct vm_err e = {0};
	bool have = cp_creds_load(c->p.credentials, &cr, &e) == 0;
	char problem[300] = "";
	if (!have)
		snprintf(problem, sizeof(problem), "%s", e.msg);
	else if (cr.deregistered)
		snprintf(problem, sizeof(problem), "agent %s was deregistered", cr.agent_id);
	else if (!c->o->offline && c->cfg->agent.control_plane_url[0] != '\0') {
		/* a harmless event proves the credential (401 when revoked) */
		if (cp_event(&c->cp, &cr, "{\"type\":\"ping\",\"source\":\"repair\"}", &e) != 0)
			snprintf(problem, sizeof(problem),
			         "the control plane refused the credential: %s", e.msg);
	}
	char id[128];
	snprintf(id, sizeof(id), "%s", have ? cr.agent_id : c->cfg->agent.id);
	cp_creds_clear(&cr);
	if (problem[0] == '\0') {
		lc_report_add(c->r, "credentials", LC_OK, NULL, "agent %s%s", id,
		              c->o->offline ? " (not verified online)"
		                            : ", accepted by the control plane");
		return;
	}
	if (c->fix && c->o->install_key != NULL) {
		if (reregister(c, id[0] ? id : NULL, &e) == 0) {
			lc_report_add(c->r, "credentials", LC_CHANGED, NULL, "re-registered (%s)",
			              problem);
			c->restart_needed = true;
		} else {
			lc_report_add(c->r, "credentials", LC_FAIL, NULL,
			              "re-registration failed: %s", e.msg);
		}
		return;
	}
	lc_report_add(c->r, "credentials", LC_FAIL,
	              "run 'vm-agent repair --key <install key>' to "
	              "register again",
	              "%s", problem);
}

/* Order matters in fix mode: files first, the restart last. */
/* The Piko upstream token: when it expires; renewed from the control plane
 * when repairing (the running agent renews on its own schedule too). */
static void check_piko_token(struct ctx *c)
{
	const char *file = c->cfg->piko.token_file;
	if (c->cfg->piko.server_url[0] == '\0' || file[0] == '\0') {
		lc_report_add(c->r, "piko token", LC_SKIPPED, NULL, "no piko.token_file");
		return;
	}
	char path[PATH_MAX];
	if (lc_join(path, sizeof(path), c->p.root, file) != 0)
		return;
	struct secret tok = {0};
	struct vm_err e = {0};
	int64_t iat = 0, exp = 0;
	if (secret_load_file(&tok, path, &e) == 0)
		(void)cp_token_times(tok.value, &iat, &exp);
	secret_clear(&tok);
	if (exp == 0) {
		/* opaque or exp-less: it does not expire, nothing to renew */
		lc_report_add(c->r, "piko token", LC_OK, NULL, "%s carries no expiry",
		              lc_target_path(&c->p, path));
		return;
	}
	bool can_renew = !c->o->offline && c->cfg->agent.control_plane_url[0] != '\0';
	if (c->fix && can_renew) {
		if (lc_piko_token_fetch(&c->cp, c->p.credentials, path, &tok, &exp, &e) == 0) {
			secret_clear(&tok);
			char when[32] = "no expiry";
			time_t t = (time_t)exp;
			struct tm tm;
			if (exp > 0 && gmtime_r(&t, &tm) != NULL)
				strftime(when, sizeof(when), "expires %Y-%m-%dT%H:%M:%SZ", &tm);
			lc_report_add(c->r, "piko token", LC_CHANGED, NULL, "renewed (%s)", when);
			return;
		}
		lc_report_add(c->r, "piko token", exp > time(NULL) ? LC_WARN : LC_FAIL,
		              "check the credentials and agent.control_plane_url",
		              "renewal failed: %s", e.msg);
		return;
	}
	char when[32] = "?";
	time_t t = (time_t)exp;
	struct tm tm;
	if (gmtime_r(&t, &tm) != NULL)
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	lc_report_add(c->r, "piko token", exp > time(NULL) ? LC_OK : LC_FAIL,
	              "run 'vm-agent repair' online to renew it", "expires %s", when);
}

static void (*const checks[])(struct ctx *) = {
    check_binary, check_dirs, check_config,      check_permissions,
    check_unit,   check_disk, check_credentials, check_piko_token,
};

int lc_repair(const struct lc_repair_opts *o, struct lc_report *r, struct vm_err *err)
{
	struct ctx *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	c->o = o;
	c->r = r;
	c->fix = !o->diagnose_only;
	int rc = lc_paths_init(&c->p, o->root, NULL, err);
	if (rc != 0)
		goto out;
	if ((c->cfg = lc_config_effective(c->p.config, NULL)) == NULL) {
		rc = vm_err_set(err, VM_ERR_NOMEM, "out of memory");
		goto out;
	}
	host_paths(c);
	for (size_t i = 0; i < sizeof(checks) / sizeof(checks[0]); i++)
		checks[i](c);
	const struct cfg *cfg = c->cfg;
	check_reach(c, "control plane", cfg->agent.control_plane_url, c->ca, cfg->agent.proxy_url,
	            true);
	check_reach(c, "piko", cfg->piko.server_url, c->piko_ca, cfg->piko.proxy_url, false);
	check_active(c);
	enum lc_status worst = lc_report_worst(r);
	if (o->diagnose_only)
		snprintf(r->result, sizeof(r->result), "%s",
		         worst == LC_OK
		             ? "all checks OK"
		             : "problems found: run 'vm-agent repair' to fix what can be fixed");
	else
		snprintf(r->result, sizeof(r->result), "%s",
		         worst < LC_WARN ? "everything OK or "
		                           "fixed"
		                         : "some problems remain: see the lines above");
	if (o->diagnose_only ? worst != LC_OK : worst >= LC_FAIL)
		rc = vm_err_set(err, VM_ERR_INVALID, "%s", r->result);
out:
	cfg_free(c->cfg);
	free(c);
	return rc;
}
