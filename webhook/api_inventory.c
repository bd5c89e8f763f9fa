/* GET /v1/inventory (scope inventory:read): what is on this host, collected
 * by health/ on demand and cached for inventory.cache_ttl.
 * GET /v1/capabilities (any valid token): what this agent can do. */
#include <stdlib.h>

#include "health/health.h"
#include "webhook/internal.h"

void wh_api_capabilities(struct wh_req *req)
{
	const json_t *caps = wh_capabilities_of(req);
	if (caps == NULL) {
		wh_reply_error(req, 503, "unavailable", "capabilities could not be built");
		return;
	}
	wh_reply_json(req, 200, json_deep_copy(caps));
}

void wh_api_inventory(struct wh_req *req)
{
	struct health_monitor *m = wh_deps_of(req)->health;
	if (m == NULL) {
		wh_reply_error(req, 503, "unavailable", "the health monitor is not running");
		return;
	}
	size_t len = 0;
	struct vm_err err = {0};
	char *text = health_inventory_json(m, &len, &err);
	if (text == NULL) {
		wh_reply_error(req, 503, "unavailable", "inventory: %s", err.msg);
		return;
	}
	wh_reply_raw(req, 200, "application/json", NULL, text, len);
	free(text);
}
