/* The webhook route table: adding an endpoint is adding a row. */
#include "webhook/internal.h"

const struct wh_route wh_routes[] = {
    {"GET", "/v1/livez", wh_api_livez, NULL},
    {"GET", "/v1/health", wh_api_health, "health:read"},
    {"GET", "/metrics", wh_api_metrics, "metrics:read"},
    {"POST", "/v1/upgrade", wh_api_upgrade, "agent:upgrade"},
    {"POST", "/v1/probes", wh_api_probe_create, "probe:run"},
    {"GET", "/v1/probes", wh_api_probe_list, "probe:read"},
    {"GET", "/v1/probes/{id}", wh_api_probe_get, "probe:read"},
    {"DELETE", "/v1/probes/{id}", wh_api_probe_cancel, "probe:cancel"},
    {"GET", "/v1/probes/{id}/events", wh_api_probe_events, "probe:read"},
};
const size_t wh_route_count = sizeof(wh_routes) / sizeof(wh_routes[0]);
