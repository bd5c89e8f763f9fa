/* Control-plane client: the agent's side of docs/control-plane-api.md, in one
 * place. Owns the credentials file (strict parser, atomic 0600 writes, version),
 * the authenticated call over core/http with the one retry policy, and each
 * endpoint the agent calls (register, deregister, events, health, Piko token). */
#ifndef VMA_CORE_CP_H
#define VMA_CORE_CP_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/http.h"
#include "core/secret.h"

/* One limit for every token the control plane hands out (agent credential,
 * Piko upstream token): longer is an error, never a silent cut. */
#define CP_TOKEN_MAX     8192
#define CP_ID_MAX        128
#define CP_CREDS_VERSION 1
#define CP_URL_MAX       1024

struct cp_opts {
	const char *url; /* agent.control_plane_url */
	const char *ca_file;
	const char *proxy;
	const char *proxy_credentials_file; /* NULL or "" = none */
	uint64_t timeout_ms;                /* whole call; 0 = 30 s */
	const atomic_bool *cancel;          /* borrowed; NULL = never */
};

/* credentials.json */
struct cp_creds {
	char agent_id[CP_ID_MAX];  /* printable, no spaces or '/' */
	char tenant_id[CP_ID_MAX]; /* "" = use agent.tenant_id */
	struct secret token;
	bool deregistered;
	char control_plane_url[CP_URL_MAX]; /* install's record; "" when absent */
};

/* Parses the file's bytes (untrusted: fuzzed). Unknown members are ignored,
 * duplicates refused, a token over CP_TOKEN_MAX refused; jansson's copy of
 * the token is wiped before it is freed. */
int cp_creds_parse(const char *text, size_t len, struct cp_creds *out, struct vm_err *err);
/* Reads path as a secret file (regular, no symlink, 0600 or stricter). */
int cp_creds_load(const char *path, struct cp_creds *out, struct vm_err *err);
/* Writes path atomically with mode 0600: version, agent_id, tenant_id, token,
 * deregistered when set, control_plane_url when set, and extra's other members
 * (borrowed; NULL = none). */
int cp_creds_write(const char *path, const struct cp_creds *c, json_t *extra, struct vm_err *err);
void cp_creds_clear(struct cp_creds *c);
/* Rewrites path (atomically, 0600) with "deregistered": true, keeping every
 * other member (uninstall without --purge). */
int cp_creds_mark_deregistered(const char *path, struct vm_err *err);

/* One call: Authorization: Bearer <bearer>, X-Agent-Id/X-Tenant-Id from who
 * (NULL = none, tenant_hdr used instead when set), Content-Type JSON, and
 * extra_headers (NULL-terminated, NULL = none). attempts > 1 retries what
 * http_should_retry allows with http_backoff_ms (1 s initial, 30 s max).
 * Returns like http_request; resp is always initialised. */
int cp_call(const struct cp_opts *o, const char *bearer, const struct cp_creds *who,
            const char *tenant_hdr, const char *method, const char *path, const char *body,
            size_t body_len, const char *const *extra_headers, unsigned attempts,
            struct http_resp *resp, struct vm_err *err);

/* "HTTP 401: <message of an {"error":{…}} answer>" */
void cp_describe(const struct http_resp *resp, char *out, size_t cap);

struct cp_registration {
	char agent_id[CP_ID_MAX];
	struct secret token; /* agent credential */
	char piko_endpoint[CP_ID_MAX];
	struct secret piko_token;
	char piko_url[512];   /* may be empty: keep the one given at install */
	char *jwt_keys_json;  /* the "jwt_public_keys" array, malloc'd */
	char jwt_issuer[512]; /* "iss" of those JWTs; may be empty */
};

/* POST /v1/agents/register with the install key (never retried: one-time key). */
int cp_register(const struct cp_opts *o, const char *install_key, const char *tenant_id,
                const char *agent_id, const char *version, struct cp_registration *out,
                struct vm_err *err);
void cp_registration_clear(struct cp_registration *reg);
/* DELETE /v1/agents/{id}: 200/204/404 are done. */
int cp_deregister(const struct cp_opts *o, const struct cp_creds *c, struct vm_err *err);
/* POST /v1/agents/{id}/events; body_json is an object. Retried (at-least-once). */
int cp_event(const struct cp_opts *o, const struct cp_creds *c, const char *body_json,
             struct vm_err *err);
/* POST /v1/agents/{id}/piko-token: a fresh Piko upstream token into out and
 * its exp (0 when the token carries none). VM_ERR_PERM on 401/403. */
int cp_piko_token(const struct cp_opts *o, const struct cp_creds *c, struct secret *out,
                  int64_t *exp, struct vm_err *err);

/* Makes jansson wipe every buffer it frees (json_set_alloc_funcs), so the
 * copies it makes of tokens while parsing and dumping never linger in freed
 * memory. Call once, first thing in main, before any jansson allocation. */
void cp_json_wipe_on_free(void);

/* The iat and exp claims of a JWT, read WITHOUT verifying it (the agent
 * only schedules renewals with them; Piko verifies). 0 when absent. Returns 0,
 * or -VM_ERR_INVALID when token is not a JWT with a JSON payload. */
int cp_token_times(const char *token, int64_t *iat, int64_t *exp);

#endif
