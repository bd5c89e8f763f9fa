/* Authorization of remote calls: a bearer JWT from the control plane, checked
 * for signature, issuer, audience (agent.id), tenant, time, scope, and replay
 * of its jti. Without configured keys every scoped route is refused. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/codec.h"
#include "core/jwt.h"
#include "core/log.h"
#include "webhook/internal.h"

/* Replay cache: jti digests with the time after which the token could not be
 * accepted anyway (exp + skew). Open addressing, no deletion; when the table
 * reaches its capacity it is rebuilt without the expired entries. If it is
 * still full, every entry belongs to a token that could still be replayed, so
 * forgetting any of them would reopen a replay window: we refuse new tokens
 * instead (503, Retry-After) until the oldest expire. Memory is fixed by
 * auth.replay_cache_size; size it above (peak requests/s × max token lifetime).
 * Across restarts the cache is not kept; tokens issued before the start are
 * refused instead (issued_before_start). */
struct replay_entry {
	uint8_t id[16]; /* first bytes of sha256(jti): fixed size, no attacker-sized keys */
	int64_t until;  /* 0 = empty slot */
};

struct replay_cache {
	struct replay_entry *slots;
	size_t nslots; /* power of two, at least twice the capacity */
	size_t count, capacity;
	int64_t next_expiry; /* earliest `until` seen by the last purge: no purge helps before it */
};

struct wh_auth {
	struct jwt_keyset *keys;
	char issuer[CFG_STR_MAX];
	char audience[CFG_ID_MAX];
	char tenant[CFG_ID_MAX];
	int64_t max_lifetime;
	int64_t started; /* the replay cache is empty before this: see wh_auth_check */
	pthread_mutex_t mu;
	struct replay_cache replay;
};

static size_t slot_of(const struct replay_cache *rc, const uint8_t id[16])
{
	uint64_t h;
	memcpy(&h, id, sizeof(h));
	return (size_t)(h & (rc->nslots - 1));
}

static struct replay_entry *replay_find(struct replay_cache *rc, const uint8_t id[16])
{
	for (size_t i = slot_of(rc, id), n = 0; n < rc->nslots;
	     i = (i + 1) & (rc->nslots - 1), n++) {
		struct replay_entry *e = &rc->slots[i];
		if (e->until == 0 || memcmp(e->id, id, 16) == 0)
			return e;
	}
	return NULL; /* unreachable: the table is never more than half full */
}

/* Drops expired entries by reinserting the live ones into a fresh table. */
static int replay_purge(struct replay_cache *rc, int64_t now)
{
	struct replay_entry *old = rc->slots;
	struct replay_entry *fresh = calloc(rc->nslots, sizeof(*fresh));
	if (fresh == NULL)
		return -1;
	rc->slots = fresh;
	rc->count = 0;
	rc->next_expiry = INT64_MAX;
	for (size_t i = 0; i < rc->nslots; i++) {
		if (old[i].until == 0 || old[i].until < now)
			continue;
		*replay_find(rc, old[i].id) = old[i];
		rc->count++;
		if (old[i].until < rc->next_expiry)
			rc->next_expiry = old[i].until;
	}
	free(old);
	return 0;
}

enum replay_result { REPLAY_NEW, REPLAY_SEEN, REPLAY_FULL };

static enum replay_result replay_insert(struct replay_cache *rc, const char *jti, int64_t until,
                                        int64_t now)
{
	uint8_t digest[SHA256_LEN];
	sha256_buf(jti, strlen(jti), digest);
	struct replay_entry *e = replay_find(rc, digest);
	if (e->until != 0 && e->until >= now)
		return REPLAY_SEEN;
	if (e->until != 0) { /* same jti, long expired: reuse the slot */
		e->until = until;
		return REPLAY_NEW;
	}
	if (rc->count >= rc->capacity) {
		/* a full table of live entries: rebuilding is useless until one expires */
		if (now < rc->next_expiry)
			return REPLAY_FULL;
		if (replay_purge(rc, now) != 0 || rc->count >= rc->capacity)
			return REPLAY_FULL;
		e = replay_find(rc, digest);
	}
	memcpy(e->id, digest, 16);
	e->until = until;
	rc->count++;
	if (until < rc->next_expiry || rc->count == 1)
		rc->next_expiry = until;
	return REPLAY_NEW;
}

struct wh_auth *wh_auth_new(const struct cfg *cfg, struct vm_err *err)
{
	struct wh_auth *a = calloc(1, sizeof(*a));
	if (a == NULL)
		goto oom;
	pthread_mutex_init(&a->mu, NULL);
	snprintf(a->issuer, sizeof(a->issuer), "%s", cfg->auth.issuer);
	snprintf(a->audience, sizeof(a->audience), "%s", cfg->agent.id);
	snprintf(a->tenant, sizeof(a->tenant), "%s", cfg->agent.tenant_id);
	a->max_lifetime = (int64_t)(cfg->auth.max_token_lifetime_ms / 1000);
	a->started = (int64_t)time(NULL);
	a->replay.capacity = (size_t)cfg->auth.replay_cache_size;
	a->replay.nslots = 16;
	while (a->replay.nslots < a->replay.capacity * 2)
		a->replay.nslots *= 2;
	a->replay.slots = calloc(a->replay.nslots, sizeof(struct replay_entry));
	a->keys = jwt_keyset_new();
	if (a->replay.slots == NULL || a->keys == NULL)
		goto oom;
	for (int i = 0; i < cfg->auth.jwt_keys.count; i++)
		if (jwt_keyset_add_file(a->keys, cfg->auth.jwt_keys.items[i], err) != 0)
			goto fail;
	if (cfg->auth.jwt_keys.count == 0)
		log_warn("auth",
		         "auth.jwt_keys is empty: every route except /v1/livez answers 401");
	else
		log_info("auth", "%d JWT key(s) loaded; issuer %s", cfg->auth.jwt_keys.count,
		         a->issuer);
	return a;
oom:
	vm_err_set(err, VM_ERR_NOMEM, "out of memory");
fail:
	wh_auth_free(a);
	return NULL;
}

void wh_auth_free(struct wh_auth *a)
{
	if (a == NULL)
		return;
	jwt_keyset_free(a->keys);
	free(a->replay.slots);
	pthread_mutex_destroy(&a->mu);
	free(a);
}

/* A refused request is answered before its body is read, and its connection
 * is closed rather than drained: a caller without a valid token must not hold
 * a worker by dripping a large body after the answer. */
#define CLOSE_HDR "Connection: close\r\n"

static void deny(struct wh_req *req, int status, const char *extra, const char *code,
                 const char *why)
{
	char hdr[320];
	snprintf(hdr, sizeof(hdr), "%s" CLOSE_HDR, extra != NULL ? extra : "");
	mg_disable_connection_keep_alive(req->conn);
	wh_reply_error_hdr(req, status, hdr, code, "%s", why);
}

/* RFC 6750: 401 answers carry a challenge; invalid_token vs a missing one. */
static void deny401(struct wh_req *req, const char *code, const char *why)
{
	char hdr[256];
	if (strcmp(code, "missing_token") == 0)
		snprintf(hdr, sizeof(hdr), "WWW-Authenticate: Bearer realm=\"vm-agent\"\r\n");
	else
		snprintf(hdr, sizeof(hdr),
		         "WWW-Authenticate: Bearer realm=\"vm-agent\", "
		         "error=\"invalid_token\", error_description=\"%s\"\r\n",
		         code);
	deny(req, 401, hdr, code, why);
}

/* The reason and the route, never the token. The path (URL-decoded) and a
 * token's kid are the caller's bytes: log_msg escapes controls and invalid
 * UTF-8 and bounds the line, cutting on a character boundary. A path here is
 * short anyway: a route's {segment} holds at most 127 bytes. */
static void log_denied(const struct wh_req *req, int status, const char *code, const char *why)
{
	/* "(401 code)" rather than "code:" so the redactor does not take the code for a key */
	log_warn("auth", "denied %s %s (%d %s): %s", req->info->request_method,
	         req->info->local_uri != NULL ? req->info->local_uri : "", status, code,
	         why != NULL ? why : "");
}

int wh_auth_check(struct wh_req *req, const char *scope)
{
	struct wh_auth *a = wh_auth_of(req);
	const char *hdr = mg_get_header(req->conn, "Authorization");
	if (hdr == NULL || strncasecmp(hdr, "Bearer ", 7) != 0) {
		log_denied(req, 401, "missing_token", "no bearer token");
		deny401(req, "missing_token", "a bearer token is required");
		return -1;
	}
	const char *tok_s = hdr + 7;
	while (*tok_s == ' ')
		tok_s++;
	size_t tok_len = strcspn(tok_s, " \t\r\n");
	struct vm_err err = {0};
	struct jwt_token *tok = malloc(sizeof(*tok));
	if (tok == NULL) {
		deny(req, 503, NULL, "unavailable", "out of memory");
		return -1;
	}
	int rc;
	if (jwt_keyset_count(a->keys) == 0) {
		vm_err_set(&err, VM_ERR_INVALID, "no keys configured (auth.jwt_keys)");
		rc = -JWT_E_KID;
	} else {
		rc = jwt_parse(tok_s, tok_len, tok, &err);
	}
	if (rc == 0)
		rc = jwt_verify_signature(a->keys, tok, tok_s, &err);
	if (rc == 0) {
		struct jwt_policy pol = {a->issuer, a->audience, a->tenant, (int64_t)time(NULL),
		                         a->max_lifetime};
		rc = jwt_check_claims(tok, &pol, &err);
	}
	if (rc == 0 || -rc >= JWT_E_AUDIENCE) {
		/* The signature held: who it was is worth auditing even when refused. */
		snprintf(req->claims.sub, sizeof(req->claims.sub), "%s", tok->sub);
		snprintf(req->claims.jti, sizeof(req->claims.jti), "%s", tok->jti);
		snprintf(req->claims.tenant, sizeof(req->claims.tenant), "%s", tok->tenant_id);
	}
	if (rc != 0) {
		const char *code = jwt_reason_name(rc);
		int status = -rc >= JWT_E_AUDIENCE ? 403 : 401;
		log_denied(req, status, code, err.msg);
		if (status == 401)
			deny401(req, code, err.msg);
		else
			deny(req, 403, NULL, code, err.msg);
		goto fail;
	}
	/* The replay cache lives in memory and starts empty (agent start, listener
	 * restart). A token issued before that could have been used already; refuse
	 * it rather than accept a possible replay. The control plane mints a fresh one. */
	if (tok->iat + JWT_SKEW_S < a->started) {
		log_denied(req, 401, "issued_before_start",
		           "token issued before the agent started");
		deny401(req, "issued_before_start",
		        "the token was issued before the agent (re)started; "
		        "use a new token");
		goto fail;
	}
	/* "" = any valid token of this agent and tenant (capabilities) */
	if (scope[0] != '\0' && !jwt_has_scope(tok, scope)) {
		char why[128];
		snprintf(why, sizeof(why), "the token lacks scope %s", scope);
		log_denied(req, 403, "insufficient_scope", why);
		deny(req, 403, NULL, "insufficient_scope", why);
		goto fail;
	}
	/* Last: a token refused for another reason does not burn its jti. */
	int64_t now = (int64_t)time(NULL);
	pthread_mutex_lock(&a->mu);
	enum replay_result rr = replay_insert(&a->replay, tok->jti, tok->exp + JWT_SKEW_S, now);
	pthread_mutex_unlock(&a->mu);
	if (rr == REPLAY_SEEN) {
		log_denied(req, 401, "replayed_jti", "this jti was already used");
		deny401(req, "replayed_jti", "this token was already used (jti)");
		goto fail;
	}
	if (rr == REPLAY_FULL) {
		log_denied(req, 503, "replay_cache_full", "auth.replay_cache_size live tokens");
		deny(req, 503, "Retry-After: 5\r\n", "replay_cache_full",
		     "too many live tokens to remember (auth.replay_cache_size); retry");
		goto fail;
	}
	req->claims.verified = true;
	snprintf(req->claims.scope, sizeof(req->claims.scope), "%s", tok->scope);
	free(tok);
	return 0;
fail:
	free(tok);
	return -1;
}
