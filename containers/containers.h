/* Containers: a Docker Engine API client over the engine's unix socket (Docker,
 * or Podman's compatible service), with tenant labels on what it creates, a
 * strict create spec, idempotent create, and the log-stream demultiplexer. */
#ifndef VMA_CONTAINERS_CONTAINERS_H
#define VMA_CONTAINERS_CONTAINERS_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "core/err.h"

/* The labels every container the agent creates carries. */
#define CTR_LABEL_TENANT  "io.vm-agent.tenant"
#define CTR_LABEL_CREATOR "io.vm-agent.creator"
#define CTR_LABEL_PROBE   "io.vm-agent.probe"
#define CTR_LABEL_SPEC    "io.vm-agent.spec" /* sha256 of the canonical spec */
#define CTR_LABEL_PREFIX  "io.vm-agent."     /* reserved: a spec may not set these */

/* The newest Engine API version we speak; the engine's own caps it. */
#define CTR_API_MAX_MAJOR 1
#define CTR_API_MAX_MINOR 41

/* A failed call: the HTTP status and stable code the API answers with, the
 * JSON path for a bad spec ("" when none) and a message. */
struct ctr_err {
	int status;
	char code[32];
	char path[128];
	char msg[256];
};

/* Who asks (labels of created containers). Borrowed strings; NULL = "". */
struct ctr_who {
	const char *sub;
	const char *probe_id;
};

struct ctr_engine;

/* Copies containers.*, agent.tenant_id from cfg. Never contacts the engine. */
struct ctr_engine *ctr_engine_new(const struct cfg *cfg, struct vm_err *err);
void ctr_engine_free(struct ctr_engine *e);

/* The engine as health sees it. */
struct ctr_engine_info {
	bool enabled;
	bool reachable;
	/* it answered at least once since the agent started: a host without an
	 * engine is no container host, one whose engine went away is degraded */
	bool seen;
	char version[64];     /* the engine's Version */
	char api_version[16]; /* negotiated, "1.41" */
	uint64_t running, paused, exited, created, other; /* containers we manage */
	char why[256];                                    /* when not reachable */
};
/* Pings the engine (bounded: a few seconds) and counts containers by state. */
void ctr_engine_info(struct ctr_engine *e, struct ctr_engine_info *out);

/* Progress of a long call (image pull): cur/total may be 0 when unknown;
 * message NULL is an idle tick (about once a second while the engine is
 * silent). A non-zero return stops the call (the step was canceled or ran out
 * of time): it fails with 499 "canceled". */
typedef int (*ctr_progress_fn)(void *ctx, const char *message, uint64_t cur, uint64_t total);

/* Every operation returns the HTTP status to answer with: 2xx with *out set
 * (owned by the caller), else err filled and *out NULL. */

/* GET /containers/json; label "k=v" or "k" and state may be NULL. */
int ctr_list(struct ctr_engine *e, bool all, const char *label, const char *state, json_t **out,
             struct ctr_err *err);
/* The engine's inspect object, after the tenant check. */
int ctr_inspect(struct ctr_engine *e, const char *id, json_t **out, struct ctr_err *err);
/* Creates from a spec (see ctr_spec_validate); pulls a missing image unless
 * the spec says "pull": "never". Same name and spec → 200 {"changed": false};
 * another spec → 409 conflict unless "replace": true. */
int ctr_create(struct ctr_engine *e, const json_t *spec, const struct ctr_who *who,
               ctr_progress_fn progress, void *pctx, json_t **out, struct ctr_err *err);
/* The same decision without acting (a step's "check": true): 200 with
 * {"changed": false} when the container exists with this spec, {"changed":
 * true, "would": "create"|"replace"} otherwise; the same 400/409 errors. */
int ctr_create_check(struct ctr_engine *e, const json_t *spec, json_t **out, struct ctr_err *err);

enum ctr_action { CTR_START, CTR_STOP, CTR_RESTART };
/* timeout_s: stop/restart grace, < 0 = the engine's default. {"changed": bool}. */
int ctr_act(struct ctr_engine *e, const char *id, enum ctr_action a, int timeout_s, json_t **out,
            struct ctr_err *err);
int ctr_delete(struct ctr_engine *e, const char *id, bool force, bool volumes, json_t **out,
               struct ctr_err *err);
/* One stats sample (stream=false). */
int ctr_stats(struct ctr_engine *e, const char *id, json_t **out, struct ctr_err *err);
int ctr_pull(struct ctr_engine *e, const char *image, ctr_progress_fn progress, void *pctx,
             json_t **out, struct ctr_err *err);

/* Logs. tail < 0 = all; since = unix seconds (0 = from the start). sink gets
 * each chunk of one stream ("stdout"/"stderr") and, with len 0, an idle tick
 * about once a second; a non-zero return ends the stream. With follow the call
 * returns when the container stops, the sink says so, or on error. */
struct ctr_log_opts {
	long tail;
	int64_t since;
	bool follow;
};
typedef int (*ctr_log_sink)(void *ctx, const char *stream, const char *data, size_t len);
int ctr_logs(struct ctr_engine *e, const char *id, const struct ctr_log_opts *o, ctr_log_sink sink,
             void *sctx, struct ctr_err *err);

/* --- pure parts (unit tested, fuzzed) -------------------------------------------- */

/* One frame of a multiplexed log stream (Tty false): an 8-byte header
 * {stream, 0, 0, 0, size (big-endian u32)} and size bytes. */
#define CTR_LOG_FRAME_MAX (1024 * 1024)
struct ctr_log_frame {
	int stream; /* 0 stdin, 1 stdout, 2 stderr, 3 system error (Podman) */
	const uint8_t *data;
	size_t len;
};
/* Parses the frame at the start of buf: > 0 = bytes the whole frame uses (f
 * filled, data points into buf), 0 = incomplete (need more bytes), -1 = not a
 * frame (unknown stream, non-zero padding, or size over CTR_LOG_FRAME_MAX). */
long ctr_log_frame_parse(const uint8_t *buf, size_t len, struct ctr_log_frame *f);

/* Validates a create spec strictly (unknown keys refused; err->path names
 * the field). *canon: the spec without "replace"/"pull", keys sorted, for the
 * idempotency hash; *replace and *pull_never from the spec. */
int ctr_spec_validate(const json_t *spec, json_t **canon, bool *replace, bool *pull_never,
                      struct ctr_err *err);
/* The engine's create body for a canonical spec, with our labels. */
json_t *ctr_spec_body(const json_t *canon, const char *tenant, const struct ctr_who *who);
/* sha256 hex (65 bytes) of the canonical spec. */
void ctr_spec_hash(const json_t *canon, char out[65]);

#endif
