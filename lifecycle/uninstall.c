/* vm-agent uninstall: stop and disable the service, deregister (best effort),
 * then remove exactly what the table below says for the flags given. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/fs.h"
#include "lifecycle/internal.h"

/* One removable item: a path in struct lc_paths (or a suffix of one) and when it goes. */
enum keep_rule { GO_ALWAYS, KEEP_DATA, KEEP_LOGS, ONLY_PURGE };

struct rm_row {
	const char *what;
	size_t off;
	const char *suffix; /* appended to the path, "" = the path itself */
	enum keep_rule rule;
};

static const struct rm_row rows[] = {
    {"unit", offsetof(struct lc_paths, unit), "", GO_ALWAYS},
    {"binary", offsetof(struct lc_paths, bin), "", GO_ALWAYS},
    {"binary.prev", offsetof(struct lc_paths, bin), ".prev", GO_ALWAYS},
    {"config", offsetof(struct lc_paths, config), "", GO_ALWAYS},
    {"config.bak", offsetof(struct lc_paths, config), ".bak", GO_ALWAYS},
    {"install record", offsetof(struct lc_paths, install_record), "", GO_ALWAYS},
    {"state", offsetof(struct lc_paths, state_dir), "", KEEP_DATA},
    {"logs", offsetof(struct lc_paths, log_dir), "", KEEP_LOGS},
    {"credentials", offsetof(struct lc_paths, credentials), "", ONLY_PURGE},
    {"piko token", offsetof(struct lc_paths, piko_token), "", ONLY_PURGE},
    {"config dir", offsetof(struct lc_paths, etc_dir), "", ONLY_PURGE},
    {"cache", offsetof(struct lc_paths, cache_dir), "", ONLY_PURGE},
};

static bool removes(const struct lc_uninstall_opts *o, enum keep_rule rule)
{
	switch (rule) {
	case GO_ALWAYS:
		return true;
	case KEEP_DATA:
		return !o->keep_data;
	case KEEP_LOGS:
		return !o->keep_logs;
	case ONLY_PURGE:
		return o->purge;
	}
	return false;
}

static void deregister(const struct lc_uninstall_opts *o, const struct lc_paths *p,
                       struct lc_report *r)
{
	struct cp_creds c;
	struct vm_err e = {0};
	if (cp_creds_load(p->credentials, &c, &e) != 0) {
		lc_report_add(r, "deregister", LC_SKIPPED, NULL, "no credentials: %s", e.msg);
		return;
	}
	if (c.deregistered) {
		lc_report_add(r, "deregister", LC_SKIPPED, NULL, "already deregistered");
		cp_creds_clear(&c);
		return;
	}
	/* the control-plane URL: from the config, else from the credentials file */
	char url[CP_URL_MAX] = "";
	struct cfg *eff = lc_config_effective(p->config, NULL);
	if (eff != NULL)
		snprintf(url, sizeof(url), "%s", eff->agent.control_plane_url);
	lc_config_free(eff);
	if (url[0] == '\0')
		snprintf(url, sizeof(url), "%s", c.control_plane_url);
	struct cp_opts cp = {.url = url, .ca_file = o->ca_file};
	if (cp_deregister(&cp, &c, &e) != 0) {
		lc_report_add(r, "deregister", LC_WARN,
		              "remove the agent in the control plane by hand",
		              "agent %s could not be deregistered (%s); it will show as offline",
		              c.agent_id, e.msg);
	} else {
		lc_report_add(r, "deregister", LC_CHANGED, NULL, "agent %s deregistered",
		              c.agent_id);
		if (!o->purge && cp_creds_mark_deregistered(p->credentials, &e) != 0)
			lc_report_add(r, "deregister", LC_WARN, NULL,
			              "could not record the deregistration in %s: %s",
			              lc_target_path(p, p->credentials), e.msg);
	}
	cp_creds_clear(&c);
}

int lc_uninstall(const struct lc_uninstall_opts *o, struct lc_report *r, struct vm_err *err)
{
	if (o->purge && (o->keep_data || o->keep_logs))
		return vm_err_set(err, VM_ERR_INVALID,
		                  "--purge removes everything: it cannot be "
		                  "combined with --keep-data or --keep-logs");
	struct lc_paths p;
	int rc = lc_paths_init(&p, o->root, NULL, err);
	if (rc != 0)
		return rc;
	struct vm_err e = {0};
	if (p.root[0] == '\0' && lc_svc_available(&p)) {
		if (lc_svc_stop(&p, &e) != 0)
			lc_report_add(r, "stop", LC_WARN, NULL, "%s", e.msg);
		else
			lc_report_add(r, "stop", LC_CHANGED, NULL, "service stopped");
	} else {
		lc_report_add(r, "stop", LC_SKIPPED, NULL, "%s",
		              p.root[0] ? "not stopping anything "
		                          "under --root"
		                        : "systemd is not running");
	}
	if (lc_svc_disable(&p, &e) != 0)
		lc_report_add(r, "disable", LC_WARN, NULL, "%s", e.msg);
	else
		lc_report_add(r, "disable", LC_CHANGED, NULL, "%s disabled", LC_UNIT_NAME);
	deregister(o, &p, r);

	int failed = 0;
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		char path[PATH_MAX];
		snprintf(path, sizeof(path), "%s%s", (const char *)&p + rows[i].off,
		         rows[i].suffix);
		const char *shown = lc_target_path(&p, path);
		if (!removes(o, rows[i].rule)) {
			if (lc_exists(path))
				lc_report_add(r, rows[i].what, LC_SKIPPED, NULL, "%s kept", shown);
			continue;
		}
		if (!lc_exists(path))
			continue;
		if (lc_remove_tree(path, &e) != 0) {
			lc_report_add(r, rows[i].what, LC_FAIL, NULL, "%s", e.msg);
			failed = 1;
		} else {
			lc_report_add(r, rows[i].what, LC_CHANGED, NULL, "%s removed", shown);
		}
	}
	if (p.root[0] == '\0' && lc_svc_available(&p))
		(void)lc_svc_reload_units(&p, NULL);
	snprintf(r->result, sizeof(r->result), "%s",
	         failed ? "uninstall incomplete: see FAIL "
	                  "lines"
	                : "vm-agent uninstalled");
	return failed ? vm_err_set(err, VM_ERR_IO, "some files could not be removed") : 0;
}
