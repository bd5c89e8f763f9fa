/* The webhook route table: adding an endpoint is adding a row. */
#include "webhook/internal.h"

const struct wh_route wh_routes[] = {
    {"GET", "/v1/livez", wh_api_livez, NULL, 0},
    {"GET", "/v1/health", wh_api_health, "health:read", 0},
    {"GET", "/v1/capabilities", wh_api_capabilities, "", 0},
    {"GET", "/v1/inventory", wh_api_inventory, "inventory:read", 0},
    {"GET", "/metrics", wh_api_metrics, "metrics:read", 0},
    {"POST", "/v1/upgrade", wh_api_upgrade, "agent:upgrade", 0},
    {"POST", "/v1/probes", wh_api_probe_create, "probe:run", WH_ROUTE_AUDIT_JOIN},
    {"GET", "/v1/probes", wh_api_probe_list, "probe:read", 0},
    {"GET", "/v1/probes/{id}", wh_api_probe_get, "probe:read", 0},
    {"DELETE", "/v1/probes/{id}", wh_api_probe_cancel, "probe:cancel", 0},
    {"GET", "/v1/probes/{id}/events", wh_api_probe_events, "probe:read", 0},
    {"GET", "/v1/containers", wh_api_containers_list, "containers:read", 0},
    {"POST", "/v1/containers", wh_api_container_create, "containers:write", 0},
    {"GET", "/v1/containers/{id}", wh_api_container_get, "containers:read", 0},
    {"DELETE", "/v1/containers/{id}", wh_api_container_delete, "containers:write", 0},
    {"POST", "/v1/containers/{id}/start", wh_api_container_start, "containers:write", 0},
    {"POST", "/v1/containers/{id}/stop", wh_api_container_stop, "containers:write", 0},
    {"POST", "/v1/containers/{id}/restart", wh_api_container_restart, "containers:write", 0},
    {"GET", "/v1/containers/{id}/logs", wh_api_container_logs, "containers:read", 0},
    {"GET", "/v1/containers/{id}/stats", wh_api_container_stats, "containers:read", 0},
    {"POST", "/v1/images/pull", wh_api_image_pull, "containers:write", 0},
    {"GET", "/v1/shell", wh_api_shell, "shell", WH_ROUTE_ACTS},
    {"GET", "/v1/shell/sessions", wh_api_shell_list, "shell:audit", 0},
    {"GET", "/v1/shell/sessions/{id}/recording", wh_api_shell_recording, "shell:audit", 0},
};
const size_t wh_route_count = sizeof(wh_routes) / sizeof(wh_routes[0]);
