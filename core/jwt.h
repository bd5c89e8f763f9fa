/* JSON Web Tokens (RFC 7519) signed by the control plane: a pure parser of the
 * untrusted compact form, signature verification with OpenSSL 3 for EdDSA
 * (Ed25519), ES256 and RS256 only, and the claim checks the agent relies on. */
#ifndef VMA_CORE_JWT_H
#define VMA_CORE_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define JWT_MAX_LEN   8192 /* longer tokens are refused before any decoding */
#define JWT_KID_MAX   128
#define JWT_CLAIM_MAX 256 /* iss, sub, aud entries, tenant_id, jti */
#define JWT_SCOPE_MAX 1024
#define JWT_MAX_AUD   4
#define JWT_SIG_MAX   512 /* RSA-4096 */
#define JWT_MAX_KEYS  16
#define JWT_SKEW_S    60 /* clock skew tolerated on exp, nbf and iat */

/* Only these are accepted. `none`, HS* and everything else is refused at parse
 * time, and each key is bound to one algorithm by its type (no confusion). */
enum jwt_alg { JWT_ALG_NONE = 0, JWT_ALG_EDDSA, JWT_ALG_ES256, JWT_ALG_RS256 };

/* Why a token was refused; jwt_* functions return the negated value. The
 * webhook maps the first group to 401 and the second to 403. */
enum jwt_reason {
	JWT_OK = 0,
	JWT_E_MALFORMED = 1, /* not three base64url parts of JSON objects, bad types */
	JWT_E_ALG,           /* algorithm not allowed */
	JWT_E_KID,           /* missing or unknown key id */
	JWT_E_SIGNATURE,
	JWT_E_EXPIRED,
	JWT_E_NOT_YET_VALID, /* nbf or iat in the future */
	JWT_E_LIFETIME,      /* exp - iat beyond the allowed maximum, or claim missing */
	JWT_E_ISSUER,
	JWT_E_JTI,      /* jti missing */
	JWT_E_AUDIENCE, /* from here: a valid token for something else (403) */
	JWT_E_TENANT,
};

/* A parsed, NOT yet verified token. Strings are NUL-terminated copies. */
struct jwt_token {
	enum jwt_alg alg;
	char kid[JWT_KID_MAX];
	char iss[JWT_CLAIM_MAX];
	char sub[JWT_CLAIM_MAX];
	char aud[JWT_MAX_AUD][JWT_CLAIM_MAX];
	int naud;
	char tenant_id[JWT_CLAIM_MAX];
	char jti[JWT_CLAIM_MAX];
	char scope[JWT_SCOPE_MAX];
	int64_t exp, nbf, iat;
	bool has_exp, has_nbf, has_iat;
	size_t signed_len; /* bytes of the input covered by the signature: "header.payload" */
	uint8_t sig[JWT_SIG_MAX];
	size_t sig_len;
};

/* Parses the compact serialization in s[0..len) (untrusted, not NUL-terminated).
 * Pure: no keys, no clock, no allocation that outlives the call. Returns 0 or
 * -JWT_E_MALFORMED / -JWT_E_ALG with the reason in err. */
int jwt_parse(const char *s, size_t len, struct jwt_token *out, struct vm_err *err);

/* Public keys by kid. */
struct jwt_keyset;
struct jwt_keyset *jwt_keyset_new(void);
void jwt_keyset_free(struct jwt_keyset *ks);

/* Adds a PEM public key (SubjectPublicKeyInfo) under kid. Its type decides the
 * one algorithm it verifies: Ed25519 → EdDSA, EC P-256 → ES256, RSA ≥ 2048
 * bits → RS256; other keys are refused. */
int jwt_keyset_add_pem(struct jwt_keyset *ks, const char *kid, const char *pem, size_t len,
                       struct vm_err *err);

/* Reads a PEM file; kid is the file's basename without its extension
 * ("/etc/vm-agent/keys/cp-2026-01.pem" → "cp-2026-01"). */
int jwt_keyset_add_file(struct jwt_keyset *ks, const char *path, struct vm_err *err);

size_t jwt_keyset_count(const struct jwt_keyset *ks);

/* Checks the signature of a token parsed from s with the key its kid names. */
int jwt_verify_signature(const struct jwt_keyset *ks, const struct jwt_token *tok, const char *s,
                         struct vm_err *err);

struct jwt_policy {
	const char *issuer;
	const char *audience; /* agent.id */
	const char *tenant;   /* agent.tenant_id */
	int64_t now;          /* seconds since the epoch */
	int64_t max_lifetime; /* seconds; exp - iat must not exceed it */
};

/* Time, issuer, jti, audience and tenant checks (in that order, so the 401
 * reasons win over the 403 ones). */
int jwt_check_claims(const struct jwt_token *tok, const struct jwt_policy *pol, struct vm_err *err);

/* True when the space-separated scope claim holds scope exactly. */
bool jwt_has_scope(const struct jwt_token *tok, const char *scope);
/* The same on a space-separated list (a verified token's scope kept for later
 * checks, e.g. the scope a step type needs); NULL holds nothing. */
bool jwt_scope_list_has(const char *list, const char *scope);

/* Short machine name of a reason ("expired", "bad_signature"…) for logs and audit. */
const char *jwt_reason_name(int reason);

#endif
