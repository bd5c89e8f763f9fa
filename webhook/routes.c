/* The webhook route table: adding an endpoint is adding a row. */
#include "webhook/internal.h"

const struct wh_route wh_routes[] = {
	{"GET", "/v1/livez", wh_api_livez, NULL},
};
const size_t wh_route_count = sizeof(wh_routes) / sizeof(wh_routes[0]);
