/* GET /v1/livez: the process is up and serving. No auth, no detail. */
#include "webhook/internal.h"

void wh_api_livez(struct wh_req *req)
{
	wh_reply_json(req, 200, json_pack("{s:s}", "status", "ok"));
}
