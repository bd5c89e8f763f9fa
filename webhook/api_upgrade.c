/* POST /v1/upgrade (scope agent:upgrade): checks the request, starts the
 * upgrade as a separate process and answers 202 at once. The upgrade itself
 * (download, signature, self-test, swap, restart, rollback) is lifecycle's;
 * it reports its outcome to the control plane's events endpoint. */
#include <stdlib.h>
#include <string.h>

#include "lifecycle/lifecycle.h"
#include "webhook/internal.h"

void wh_api_upgrade(struct wh_req *req)
{
	char *body;
	size_t len;
	if (wh_read_body(req, &body, &len) != 0)
		return;
	json_error_t jerr;
	json_t *o = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	free(body);
	if (!json_is_object(o)) {
		json_decref(o);
		wh_reply_error(req, 400, "bad_request",
		               "expected a JSON object with version, url "
		               "and checksum");
		return;
	}
	json_t *down = json_object_get(o, "allow_downgrade");
	struct lc_upgrade_request rq = {
	    .version = json_string_value(json_object_get(o, "version")),
	    .url = json_string_value(json_object_get(o, "url")),
	    .checksum = json_string_value(json_object_get(o, "checksum")),
	    .signature_url = json_string_value(json_object_get(o, "signature_url")),
	    .allow_downgrade = json_is_true(down),
	    .runtime_dir = wh_deps_of(req)->runtime_dir,
	};
	if (down != NULL && !json_is_boolean(down)) {
		json_decref(o);
		wh_reply_error(req, 400, "bad_request", "allow_downgrade must be true or false");
		return;
	}
	struct vm_err err = {0};
	int rc = lc_upgrade_start_background(&rq, &err);
	if (rc != 0) {
		json_decref(o);
		if (err.code == VM_ERR_INVALID)
			wh_reply_error(req, 400, "bad_request", "%s", err.msg);
		else
			wh_reply_error(req, 503, "unavailable",
			               "the upgrade could not be started: %s", err.msg);
		return;
	}
	wh_reply_json(req, 202,
	              json_pack("{s:s,s:s,s:s}", "status", "accepted", "version", rq.version,
	                        "report",
	                        "the outcome is sent to the control "
	                        "plane as an upgrade event"));
	json_decref(o);
}
