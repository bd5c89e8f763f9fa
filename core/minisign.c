/* minisign verification with OpenSSL's Ed25519 and BLAKE2b-512. The two
 * parsers only look at bytes; every check that matters for trust is in
 * verify_common so the buffer and file paths cannot diverge. */
#include "core/minisign.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/codec.h"
#include "core/fs.h"

#define PUBKEY_RAW_LEN (2 + MSIG_KEYID_LEN + MSIG_PK_LEN)
#define SIG_RAW_LEN    (2 + MSIG_KEYID_LEN + MSIG_SIG_LEN)
#define BLAKE2B_LEN    64
#define LINE_MAX_LEN   2048

static const char untrusted_prefix[] = "untrusted comment: ";
static const char trusted_prefix[] = "trusted comment: ";

/* Splits text into lines (\n or \r\n) without copying; at most max lines. */
struct line {
	const char *p;
	size_t n;
};

static size_t split_lines(const char *text, size_t len, struct line *lines, size_t max)
{
	size_t count = 0, start = 0;
	for (size_t i = 0; i <= len && count < max + 1; i++) {
		if (i == len || text[i] == '\n') {
			size_t n = i - start;
			if (n > 0 && text[start + n - 1] == '\r')
				n--;
			if (i == len && n == 0)
				break; /* trailing newline: no empty last line */
			if (count < max)
				lines[count] = (struct line){text + start, n};
			count++;
			start = i + 1;
		}
	}
	return count;
}

static bool has_prefix(const struct line *l, const char *prefix)
{
	size_t n = strlen(prefix);
	return l->n >= n && memcmp(l->p, prefix, n) == 0;
}

static bool has_nul(const struct line *l)
{
	return memchr(l->p, '\0', l->n) != NULL;
}

/* Decodes one base64 line that must yield exactly want bytes. */
static int decode_exact(const struct line *l, uint8_t *out, size_t want)
{
	uint8_t buf[LINE_MAX_LEN / 4 * 3 + 3];
	if (l->n == 0 || l->n > LINE_MAX_LEN || has_nul(l))
		return -1;
	long n = b64_decode(l->p, l->n, buf, 0);
	if (n < 0 || (size_t)n != want)
		return -1;
	memcpy(out, buf, want);
	return 0;
}

int msig_parse_pubkey(const char *text, size_t len, struct msig_pubkey *out, struct vm_err *err)
{
	struct line lines[3];
	size_t n = split_lines(text, len, lines, 3);
	const struct line *b64 = NULL;
	if (n == 1 && !has_prefix(&lines[0], untrusted_prefix))
		b64 = &lines[0];
	else if (n == 2 && has_prefix(&lines[0], untrusted_prefix))
		b64 = &lines[1];
	if (b64 == NULL)
		return vm_err_set(
		    err, VM_ERR_INVALID,
		    "minisign public key: expected an "
		    "'untrusted comment:' line and a base64 line, or the base64 line alone");
	uint8_t raw[PUBKEY_RAW_LEN];
	if (decode_exact(b64, raw, sizeof(raw)) != 0)
		return vm_err_set(err, VM_ERR_INVALID,
		                  "minisign public key: not base64 of %d bytes", PUBKEY_RAW_LEN);
	if (raw[0] != 'E' || raw[1] != 'd')
		return vm_err_set(err, VM_ERR_INVALID,
		                  "minisign public key: unsupported algorithm "
		                  "(expected Ed25519, \"Ed\")");
	memcpy(out->keyid, raw + 2, MSIG_KEYID_LEN);
	memcpy(out->pk, raw + 2 + MSIG_KEYID_LEN, MSIG_PK_LEN);
	return 0;
}

int msig_parse_sig(const char *text, size_t len, struct msig_sig *out, struct vm_err *err)
{
	struct line l[5];
	memset(out, 0, sizeof(*out));
	if (split_lines(text, len, l, 5) != 4)
		return vm_err_set(err, VM_ERR_INVALID, "minisign signature: expected 4 lines");
	if (!has_prefix(&l[0], untrusted_prefix))
		return vm_err_set(err, VM_ERR_INVALID,
		                  "minisign signature: line 1 must start with "
		                  "'untrusted comment: '");
	uint8_t raw[SIG_RAW_LEN];
	if (decode_exact(&l[1], raw, sizeof(raw)) != 0)
		return vm_err_set(err, VM_ERR_INVALID,
		                  "minisign signature: line 2 is not base64 of "
		                  "%d bytes",
		                  SIG_RAW_LEN);
	if (raw[0] == 'E' && raw[1] == 'D')
		out->prehashed = true;
	else if (raw[0] == 'E' && raw[1] == 'd')
		out->prehashed = false;
	else
		return vm_err_set(err, VM_ERR_INVALID, "minisign signature: unsupported algorithm");
	memcpy(out->keyid, raw + 2, MSIG_KEYID_LEN);
	memcpy(out->sig, raw + 2 + MSIG_KEYID_LEN, MSIG_SIG_LEN);

	if (!has_prefix(&l[2], trusted_prefix) || has_nul(&l[2]))
		return vm_err_set(err, VM_ERR_INVALID,
		                  "minisign signature: line 3 must start with "
		                  "'trusted comment: '");
	size_t tlen = l[2].n - strlen(trusted_prefix);
	if (tlen >= sizeof(out->trusted_comment))
		return vm_err_set(err, VM_ERR_INVALID,
		                  "minisign signature: trusted comment too long");
	memcpy(out->trusted_comment, l[2].p + strlen(trusted_prefix), tlen);
	out->trusted_comment[tlen] = '\0';

	if (decode_exact(&l[3], out->global_sig, MSIG_SIG_LEN) != 0)
		return vm_err_set(err, VM_ERR_INVALID,
		                  "minisign signature: line 4 is not base64 of "
		                  "%d bytes",
		                  MSIG_SIG_LEN);
	return 0;
}

void msig_keyid_hex(const uint8_t keyid[MSIG_KEYID_LEN], char out[17])
{
	static const char hex[] = "0123456789ABCDEF";
	for (int i = 0; i < MSIG_KEYID_LEN; i++) {
		uint8_t b = keyid[MSIG_KEYID_LEN - 1 - i];
		out[2 * i] = hex[b >> 4];
		out[2 * i + 1] = hex[b & 15];
	}
	out[16] = '\0';
}

static bool ed25519_ok(const uint8_t pk[MSIG_PK_LEN], const uint8_t sig[MSIG_SIG_LEN],
                       const uint8_t *msg, size_t len)
{
	EVP_PKEY *key = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pk, MSIG_PK_LEN);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	bool ok = key != NULL && ctx != NULL &&
	          EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, key) == 1 &&
	          EVP_DigestVerify(ctx, sig, MSIG_SIG_LEN, msg, len) == 1;
	EVP_MD_CTX_free(ctx);
	EVP_PKEY_free(key);
	return ok;
}

/* msg is the file itself (legacy) or its BLAKE2b-512 (prehashed). */
static int verify_common(const struct msig_pubkey *key, const struct msig_sig *sig,
                         const uint8_t *msg, size_t len, struct vm_err *err)
{
	char want[17], got[17];
	if (memcmp(key->keyid, sig->keyid, MSIG_KEYID_LEN) != 0) {
		msig_keyid_hex(key->keyid, want);
		msig_keyid_hex(sig->keyid, got);
		return vm_err_set(err, VM_ERR_PERM, "signed by key %s, not by the trusted key %s",
		                  got, want);
	}
	if (!ed25519_ok(key->pk, sig->sig, msg, len))
		return vm_err_set(err, VM_ERR_PERM, "signature does not match the file");
	/* The global signature binds the trusted comment to this signature. */
	size_t tlen = strlen(sig->trusted_comment);
	uint8_t buf[MSIG_SIG_LEN + MSIG_COMMENT_MAX];
	memcpy(buf, sig->sig, MSIG_SIG_LEN);
	memcpy(buf + MSIG_SIG_LEN, sig->trusted_comment, tlen);
	if (!ed25519_ok(key->pk, sig->global_sig, buf, MSIG_SIG_LEN + tlen))
		return vm_err_set(err, VM_ERR_PERM,
		                  "trusted comment signature is invalid (the "
		                  "comment was altered)");
	return 0;
}

static int blake2b_buf(const void *data, size_t len, uint8_t out[BLAKE2B_LEN])
{
	unsigned int n = 0;
	return EVP_Digest(data, len, out, &n, EVP_blake2b512(), NULL) == 1 && n == BLAKE2B_LEN ? 0
	                                                                                       : -1;
}

int msig_verify_buf(const struct msig_pubkey *key, const struct msig_sig *sig, const void *data,
                    size_t len, struct vm_err *err)
{
	if (!sig->prehashed)
		return verify_common(key, sig, data, len, err);
	uint8_t h[BLAKE2B_LEN];
	if (blake2b_buf(data, len, h) != 0)
		return vm_err_set(err, VM_ERR_INTERNAL, "BLAKE2b-512 failed");
	return verify_common(key, sig, h, sizeof(h), err);
}

static int blake2b_file(const char *path, uint8_t out[BLAKE2B_LEN], struct vm_err *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "open %s", path);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int rc = 0;
	if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_blake2b512(), NULL) != 1) {
		rc = vm_err_set(err, VM_ERR_INTERNAL, "BLAKE2b-512 unavailable");
		goto out;
	}
	for (;;) {
		uint8_t buf[65536];
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = vm_err_errno(err, VM_ERR_IO, errno, "read %s", path);
			goto out;
		}
		if (n == 0)
			break;
		EVP_DigestUpdate(ctx, buf, (size_t)n);
	}
	unsigned int len = 0;
	if (EVP_DigestFinal_ex(ctx, out, &len) != 1 || len != BLAKE2B_LEN)
		rc = vm_err_set(err, VM_ERR_INTERNAL, "BLAKE2b-512 failed");
out:
	EVP_MD_CTX_free(ctx);
	close(fd);
	return rc;
}

int msig_verify_file(const struct msig_pubkey *keys, size_t nkeys, const struct msig_sig *sig,
                     const char *path, size_t max_legacy, struct vm_err *err)
{
	const struct msig_pubkey *key = NULL;
	for (size_t i = 0; i < nkeys && key == NULL; i++)
		if (memcmp(keys[i].keyid, sig->keyid, MSIG_KEYID_LEN) == 0)
			key = &keys[i];
	if (key == NULL) {
		char got[17];
		msig_keyid_hex(sig->keyid, got);
		return vm_err_set(err, VM_ERR_PERM,
		                  "signed by key %s, which is not one of the %zu "
		                  "trusted upgrade key(s)",
		                  got, nkeys);
	}
	if (sig->prehashed) {
		uint8_t h[BLAKE2B_LEN];
		int rc = blake2b_file(path, h, err);
		if (rc != 0)
			return rc;
		return verify_common(key, sig, h, sizeof(h), err);
	}
	char *data;
	size_t len;
	int rc = fs_read_file(path, max_legacy, &data, &len, err);
	if (rc != 0)
		return rc;
	rc = verify_common(key, sig, (const uint8_t *)data, len, err);
	free(data);
	return rc;
}
