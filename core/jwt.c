/* JWT parsing (pure, fuzzed), signature verification through OpenSSL's EVP
 * interface, and claim checks. Keys are bound to one algorithm by their type so
 * that a header can never choose how its own signature is checked. */
#include "core/jwt.h"

#include <jansson.h>
#include <math.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "core/fs.h"

#define PEM_MAX (64 * 1024)

static const struct {
	const char *name;
	enum jwt_alg alg;
	size_t sig_min, sig_max;
} alg_table[] = {
    {"EdDSA", JWT_ALG_EDDSA, 64, 64},
    {"ES256", JWT_ALG_ES256, 64, 64},
    {"RS256", JWT_ALG_RS256, 256, JWT_SIG_MAX},
};

static const char *const reason_names[] = {
    [JWT_OK] = "ok",
    [JWT_E_MALFORMED] = "malformed",
    [JWT_E_ALG] = "alg_not_allowed",
    [JWT_E_KID] = "unknown_kid",
    [JWT_E_SIGNATURE] = "bad_signature",
    [JWT_E_EXPIRED] = "expired",
    [JWT_E_NOT_YET_VALID] = "not_yet_valid",
    [JWT_E_LIFETIME] = "lifetime_too_long",
    [JWT_E_ISSUER] = "wrong_issuer",
    [JWT_E_JTI] = "missing_jti",
    [JWT_E_AUDIENCE] = "wrong_audience",
    [JWT_E_TENANT] = "wrong_tenant",
};

const char *jwt_reason_name(int reason)
{
	if (reason < 0)
		reason = -reason;
	if (reason >= (int)(sizeof(reason_names) / sizeof(reason_names[0])))
		return "unknown";
	return reason_names[reason];
}

static int fail(struct vm_err *err, enum jwt_reason r, const char *fmt, const char *arg)
{
	vm_err_set(err, r >= JWT_E_AUDIENCE ? VM_ERR_PERM : VM_ERR_INVALID, fmt, arg);
	return -(int)r;
}

/* --- parsing ------------------------------------------------------------------------ */

static bool is_b64url(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_';
}

/* Decodes one base64url part into a fresh JSON object. */
static json_t *decode_part(const char *s, size_t len)
{
	uint8_t buf[JWT_MAX_LEN];
	if (len == 0 || b64_decoded_max(len) > sizeof(buf))
		return NULL;
	long n = b64_decode(s, len, buf, 1);
	if (n <= 0)
		return NULL;
	json_error_t jerr;
	json_t *j = json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
	if (j != NULL && !json_is_object(j)) {
		json_decref(j);
		return NULL;
	}
	return j;
}

/* Copies an optional string member; -1 when present with the wrong type or too long. */
static int get_str(json_t *obj, const char *name, char *out, size_t cap)
{
	json_t *v = json_object_get(obj, name);
	out[0] = '\0';
	if (v == NULL)
		return 0;
	if (!json_is_string(v) || json_string_length(v) >= cap ||
	    strlen(json_string_value(v)) != json_string_length(v))
		return -1;
	memcpy(out, json_string_value(v), json_string_length(v) + 1);
	return 0;
}

/* NumericDate: an integer (or a number with a fraction, truncated) in a sane range. */
static int get_time(json_t *obj, const char *name, int64_t *out, bool *has)
{
	json_t *v = json_object_get(obj, name);
	*has = false;
	if (v == NULL)
		return 0;
	double d;
	if (json_is_integer(v))
		d = (double)json_integer_value(v);
	else if (json_is_real(v))
		d = json_real_value(v);
	else
		return -1;
	if (!isfinite(d) || d < 0 || d > 253402300799.0) /* year 9999 */
		return -1;
	*out = (int64_t)d;
	*has = true;
	return 0;
}

static int parse_header(json_t *h, struct jwt_token *out, struct vm_err *err)
{
	char alg[32];
	if (get_str(h, "alg", alg, sizeof(alg)) != 0 || alg[0] == '\0')
		return fail(err, JWT_E_MALFORMED, "header: alg missing or not a string%s", "");
	out->alg = JWT_ALG_NONE;
	for (size_t i = 0; i < sizeof(alg_table) / sizeof(alg_table[0]); i++)
		if (strcmp(alg, alg_table[i].name) == 0)
			out->alg = alg_table[i].alg;
	if (out->alg == JWT_ALG_NONE)
		return fail(err, JWT_E_ALG,
		            "algorithm %s is not allowed (EdDSA, ES256, RS256 only)", alg);
	char typ[32];
	if (get_str(h, "typ", typ, sizeof(typ)) != 0 ||
	    (typ[0] != '\0' && strcasecmp(typ, "JWT") != 0))
		return fail(err, JWT_E_MALFORMED, "header: typ must be JWT%s", "");
	/* We understand no extension, so any critical one makes the token unusable. */
	if (json_object_get(h, "crit") != NULL)
		return fail(err, JWT_E_MALFORMED, "header: crit extensions are not supported%s",
		            "");
	if (get_str(h, "kid", out->kid, sizeof(out->kid)) != 0 || out->kid[0] == '\0')
		return fail(err, JWT_E_KID, "header: kid missing, not a string or too long%s", "");
	return 0;
}

static int parse_payload(json_t *p, struct jwt_token *out, struct vm_err *err)
{
	static const struct {
		const char *name;
		size_t off, cap;
	} strs[] = {
	    {"iss", offsetof(struct jwt_token, iss), JWT_CLAIM_MAX},
	    {"sub", offsetof(struct jwt_token, sub), JWT_CLAIM_MAX},
	    {"tenant_id", offsetof(struct jwt_token, tenant_id), JWT_CLAIM_MAX},
	    {"jti", offsetof(struct jwt_token, jti), JWT_CLAIM_MAX},
	    {"scope", offsetof(struct jwt_token, scope), JWT_SCOPE_MAX},
	};
	for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
		if (get_str(p, strs[i].name, (char *)out + strs[i].off, strs[i].cap) != 0)
			return fail(err, JWT_E_MALFORMED, "claim %s: not a string or too long",
			            strs[i].name);
	if (get_time(p, "exp", &out->exp, &out->has_exp) != 0 ||
	    get_time(p, "nbf", &out->nbf, &out->has_nbf) != 0 ||
	    get_time(p, "iat", &out->iat, &out->has_iat) != 0)
		return fail(err, JWT_E_MALFORMED, "claims exp/nbf/iat must be numeric dates%s", "");

	json_t *aud = json_object_get(p, "aud");
	if (aud == NULL)
		return 0;
	if (json_is_string(aud)) {
		if (get_str(p, "aud", out->aud[0], sizeof(out->aud[0])) != 0)
			return fail(err, JWT_E_MALFORMED, "claim aud: too long%s", "");
		out->naud = 1;
		return 0;
	}
	if (!json_is_array(aud) || json_array_size(aud) > JWT_MAX_AUD)
		return fail(err, JWT_E_MALFORMED,
		            "claim aud: a string or a short array of strings%s", "");
	size_t i;
	json_t *v;
	json_array_foreach(aud, i, v)
	{
		if (!json_is_string(v) || json_string_length(v) >= JWT_CLAIM_MAX ||
		    strlen(json_string_value(v)) != json_string_length(v))
			return fail(err, JWT_E_MALFORMED,
			            "claim aud: entries must be short strings%s", "");
		memcpy(out->aud[i], json_string_value(v), json_string_length(v) + 1);
		out->naud++;
	}
	return 0;
}

int jwt_parse(const char *s, size_t len, struct jwt_token *out, struct vm_err *err)
{
	memset(out, 0, sizeof(*out));
	if (len == 0 || len > JWT_MAX_LEN)
		return fail(err, JWT_E_MALFORMED, "token is empty or longer than the limit%s", "");
	size_t dots[2], nd = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '.') {
			if (nd == 2)
				return fail(err, JWT_E_MALFORMED,
				            "token has more than three parts%s", "");
			dots[nd++] = i;
		} else if (!is_b64url(s[i])) {
			return fail(err, JWT_E_MALFORMED,
			            "token has characters outside base64url%s", "");
		}
	}
	if (nd != 2)
		return fail(err, JWT_E_MALFORMED, "token does not have three parts%s", "");

	json_t *h = decode_part(s, dots[0]);
	if (h == NULL)
		return fail(err, JWT_E_MALFORMED, "header is not base64url JSON object%s", "");
	int rc = parse_header(h, out, err);
	json_decref(h);
	if (rc != 0)
		return rc;

	json_t *p = decode_part(s + dots[0] + 1, dots[1] - dots[0] - 1);
	if (p == NULL)
		return fail(err, JWT_E_MALFORMED, "payload is not a base64url JSON object%s", "");
	rc = parse_payload(p, out, err);
	json_decref(p);
	if (rc != 0)
		return rc;

	const char *sig = s + dots[1] + 1;
	size_t slen = len - dots[1] - 1;
	if (slen == 0 || b64_decoded_max(slen) > sizeof(out->sig) + 2)
		return fail(err, JWT_E_SIGNATURE, "signature missing or too long%s", "");
	uint8_t tmp[JWT_SIG_MAX + 3];
	long n = b64_decode(sig, slen, tmp, 1);
	if (n <= 0 || (size_t)n > sizeof(out->sig))
		return fail(err, JWT_E_SIGNATURE, "signature is not base64url%s", "");
	for (size_t i = 0; i < sizeof(alg_table) / sizeof(alg_table[0]); i++)
		if (alg_table[i].alg == out->alg &&
		    ((size_t)n < alg_table[i].sig_min || (size_t)n > alg_table[i].sig_max))
			return fail(err, JWT_E_SIGNATURE, "signature has the wrong length for %s",
			            alg_table[i].name);
	memcpy(out->sig, tmp, (size_t)n);
	out->sig_len = (size_t)n;
	out->signed_len = dots[1];
	return 0;
}

/* --- keys ------------------------------------------------------------------------------ */

struct jwt_key {
	char kid[JWT_KID_MAX];
	enum jwt_alg alg;
	EVP_PKEY *pkey;
};

struct jwt_keyset {
	struct jwt_key keys[JWT_MAX_KEYS];
	size_t n;
};

struct jwt_keyset *jwt_keyset_new(void)
{
	return calloc(1, sizeof(struct jwt_keyset));
}

void jwt_keyset_free(struct jwt_keyset *ks)
{
	if (ks == NULL)
		return;
	for (size_t i = 0; i < ks->n; i++)
		EVP_PKEY_free(ks->keys[i].pkey);
	free(ks);
}

size_t jwt_keyset_count(const struct jwt_keyset *ks)
{
	return ks != NULL ? ks->n : 0;
}

static enum jwt_alg alg_for_key(EVP_PKEY *pkey)
{
	if (EVP_PKEY_is_a(pkey, "ED25519"))
		return JWT_ALG_EDDSA;
	if (EVP_PKEY_is_a(pkey, "EC")) {
		char group[64];
		size_t glen = 0;
		if (EVP_PKEY_get_group_name(pkey, group, sizeof(group), &glen) == 1 &&
		    strcmp(group, "prime256v1") == 0)
			return JWT_ALG_ES256;
		return JWT_ALG_NONE;
	}
	if (EVP_PKEY_is_a(pkey, "RSA") && EVP_PKEY_get_bits(pkey) >= 2048)
		return JWT_ALG_RS256;
	return JWT_ALG_NONE;
}

int jwt_keyset_add_pem(struct jwt_keyset *ks, const char *kid, const char *pem, size_t len,
                       struct vm_err *err)
{
	if (kid[0] == '\0' || strlen(kid) >= JWT_KID_MAX)
		return vm_err_set(err, VM_ERR_INVALID, "key id is empty or too long");
	if (ks->n >= JWT_MAX_KEYS)
		return vm_err_set(err, VM_ERR_INVALID, "more than %d keys", JWT_MAX_KEYS);
	for (size_t i = 0; i < ks->n; i++)
		if (strcmp(ks->keys[i].kid, kid) == 0)
			return vm_err_set(err, VM_ERR_INVALID, "key id %s appears twice", kid);
	if (len > INT32_MAX)
		return vm_err_set(err, VM_ERR_INVALID, "key %s: too large", kid);
	BIO *bio = BIO_new_mem_buf(pem, (int)len);
	EVP_PKEY *pkey = bio != NULL ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
	BIO_free(bio);
	if (pkey == NULL)
		return vm_err_set(err, VM_ERR_INVALID,
		                  "key %s: not a PEM public key "
		                  "(-----BEGIN PUBLIC KEY-----)",
		                  kid);
	enum jwt_alg alg = alg_for_key(pkey);
	if (alg == JWT_ALG_NONE) {
		EVP_PKEY_free(pkey);
		return vm_err_set(err, VM_ERR_INVALID,
		                  "key %s: unsupported key type (Ed25519, "
		                  "EC P-256 or RSA of at least 2048 bits)",
		                  kid);
	}
	struct jwt_key *k = &ks->keys[ks->n++];
	snprintf(k->kid, sizeof(k->kid), "%s", kid);
	k->alg = alg;
	k->pkey = pkey;
	return 0;
}

int jwt_keyset_add_file(struct jwt_keyset *ks, const char *path, struct vm_err *err)
{
	const char *base = strrchr(path, '/');
	base = base != NULL ? base + 1 : path;
	char kid[JWT_KID_MAX];
	size_t n = strcspn(base, ".");
	if (n == 0 || n >= sizeof(kid))
		return vm_err_set(err, VM_ERR_INVALID,
		                  "%s: cannot derive a key id from the file name", path);
	memcpy(kid, base, n);
	kid[n] = '\0';
	char *pem;
	size_t len;
	int rc = fs_read_file(path, PEM_MAX, &pem, &len, err);
	if (rc != 0)
		return rc;
	rc = jwt_keyset_add_pem(ks, kid, pem, len, err);
	free(pem);
	if (rc != 0) {
		char msg[sizeof(err->msg)];
		snprintf(msg, sizeof(msg), "%s", err->msg);
		return vm_err_set(err, VM_ERR_INVALID, "%s: %s", path, msg);
	}
	return 0;
}

/* --- signatures --------------------------------------------------------------------- */

/* JOSE carries ECDSA as r||s (32 bytes each); OpenSSL wants DER. */
static int es256_to_der(const uint8_t *rs, uint8_t *der, size_t cap, size_t *der_len)
{
	ECDSA_SIG *sig = ECDSA_SIG_new();
	BIGNUM *r = BN_bin2bn(rs, 32, NULL), *s = BN_bin2bn(rs + 32, 32, NULL);
	int rc = -1;
	if (sig == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(sig, r, s) != 1)
		goto out;
	r = s = NULL; /* owned by sig now */
	int n = i2d_ECDSA_SIG(sig, NULL);
	if (n <= 0 || (size_t)n > cap)
		goto out;
	unsigned char *p = der;
	*der_len = (size_t)i2d_ECDSA_SIG(sig, &p);
	rc = 0;
out:
	BN_free(r);
	BN_free(s);
	ECDSA_SIG_free(sig);
	return rc;
}

int jwt_verify_signature(const struct jwt_keyset *ks, const struct jwt_token *tok, const char *s,
                         struct vm_err *err)
{
	const struct jwt_key *k = NULL;
	for (size_t i = 0; ks != NULL && i < ks->n; i++)
		if (strcmp(ks->keys[i].kid, tok->kid) == 0)
			k = &ks->keys[i];
	if (k == NULL)
		return fail(err, JWT_E_KID, "no key with id %s", tok->kid);
	if (k->alg != tok->alg)
		return fail(err, JWT_E_ALG, "key %s does not verify the token's algorithm", k->kid);

	const uint8_t *sig = tok->sig;
	size_t sig_len = tok->sig_len;
	uint8_t der[80];
	if (tok->alg == JWT_ALG_ES256) {
		if (es256_to_der(tok->sig, der, sizeof(der), &sig_len) != 0)
			return fail(err, JWT_E_SIGNATURE, "bad ES256 signature encoding%s", "");
		sig = der;
	}
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	if (ctx == NULL)
		return fail(err, JWT_E_SIGNATURE, "out of memory%s", "");
	/* Ed25519 hashes internally: OpenSSL wants no digest for it. */
	const EVP_MD *md = tok->alg == JWT_ALG_EDDSA ? NULL : EVP_sha256();
	int ok =
	    EVP_DigestVerifyInit(ctx, NULL, md, NULL, k->pkey) == 1 &&
	    EVP_DigestVerify(ctx, sig, sig_len, (const unsigned char *)s, tok->signed_len) == 1;
	EVP_MD_CTX_free(ctx);
	if (!ok)
		return fail(err, JWT_E_SIGNATURE, "signature does not verify with key %s", k->kid);
	return 0;
}

/* --- claims ---------------------------------------------------------------------------- */

int jwt_check_claims(const struct jwt_token *tok, const struct jwt_policy *pol, struct vm_err *err)
{
	if (!tok->has_exp || !tok->has_iat)
		return fail(err, JWT_E_LIFETIME, "exp and iat are required%s", "");
	if (pol->now > tok->exp + JWT_SKEW_S)
		return fail(err, JWT_E_EXPIRED, "token expired%s", "");
	if (tok->has_nbf && pol->now + JWT_SKEW_S < tok->nbf)
		return fail(err, JWT_E_NOT_YET_VALID, "token not valid yet (nbf)%s", "");
	if (pol->now + JWT_SKEW_S < tok->iat)
		return fail(err, JWT_E_NOT_YET_VALID, "token issued in the future (iat)%s", "");
	if (tok->exp < tok->iat || tok->exp - tok->iat > pol->max_lifetime)
		return fail(err, JWT_E_LIFETIME, "token lifetime exceeds auth.max_token_lifetime%s",
		            "");
	if (strcmp(tok->iss, pol->issuer) != 0)
		return fail(err, JWT_E_ISSUER, "issuer is not %s", pol->issuer);
	if (tok->jti[0] == '\0')
		return fail(err, JWT_E_JTI, "jti is required%s", "");
	bool aud_ok = false;
	for (int i = 0; i < tok->naud; i++)
		aud_ok = aud_ok || strcmp(tok->aud[i], pol->audience) == 0;
	if (!aud_ok)
		return fail(err, JWT_E_AUDIENCE, "token audience is not this agent (%s)",
		            pol->audience);
	if (strcmp(tok->tenant_id, pol->tenant) != 0)
		return fail(err, JWT_E_TENANT, "token is for another tenant than %s", pol->tenant);
	return 0;
}

bool jwt_has_scope(const struct jwt_token *tok, const char *scope)
{
	return jwt_scope_list_has(tok->scope, scope);
}

bool jwt_scope_list_has(const char *list, const char *scope)
{
	size_t n = strlen(scope);
	if (list == NULL)
		return false;
	for (const char *p = list; *p != '\0';) {
		size_t w = strcspn(p, " ");
		if (w == n && strncmp(p, scope, n) == 0)
			return true;
		p += w;
		p += strspn(p, " ");
	}
	return false;
}
