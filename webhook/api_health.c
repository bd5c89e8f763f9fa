/* GET /v1/health (scope health:read): the health snapshot as JSON.
 * GET /metrics (scope metrics:read): the same in Prometheus text format. */
#include <stdlib.h>
#include <string.h>

#include "health/health.h"
#include "webhook/internal.h"

static struct health_monitor *monitor_or_503(struct wh_req *req)
{
	struct health_monitor *m = wh_deps_of(req)->health;
	if (m == NULL)
		wh_reply_error(req, 503, "unavailable", "the health monitor is not running");
	return m;
}

void wh_api_health(struct wh_req *req)
{
	struct health_monitor *m = monitor_or_503(req);
	if (m == NULL)
		return;
	char *text = health_json(m);
	if (text == NULL) {
		wh_reply_error(req, 503, "unavailable", "out of memory");
		return;
	}
	size_t n = strlen(text);
	wh_reply_raw(req, 200, "application/json", NULL, text, n);
	free(text);
}

void wh_api_metrics(struct wh_req *req)
{
	struct health_monitor *m = monitor_or_503(req);
	if (m == NULL)
		return;
	char *text = health_prometheus(m);
	if (text == NULL) {
		wh_reply_error(req, 503, "unavailable", "out of memory");
		return;
	}
	wh_reply_raw(req, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, text,
	             strlen(text));
	free(text);
}
