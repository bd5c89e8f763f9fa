/* minisign signatures (https://jedisct1.github.io/minisign/) verified with
 * OpenSSL only: Ed25519, prehashed ("ED", BLAKE2b-512) or legacy ("Ed"), key id
 * check, and the global signature over the trusted comment. The parsers are
 * pure functions over bytes (fuzzed by tests/fuzz/fuzz_minisign.c). */
#ifndef VMA_CORE_MINISIGN_H
#define VMA_CORE_MINISIGN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define MSIG_KEYID_LEN   8
#define MSIG_PK_LEN      32
#define MSIG_SIG_LEN     64
#define MSIG_COMMENT_MAX 1024

struct msig_pubkey {
	uint8_t keyid[MSIG_KEYID_LEN];
	uint8_t pk[MSIG_PK_LEN];
};

struct msig_sig {
	bool prehashed; /* "ED": signature over BLAKE2b-512(file); "Ed": over the file */
	uint8_t keyid[MSIG_KEYID_LEN];
	uint8_t sig[MSIG_SIG_LEN];
	char trusted_comment[MSIG_COMMENT_MAX]; /* text after "trusted comment: " */
	uint8_t global_sig[MSIG_SIG_LEN];
};

/* Parses a public key: either the whole .pub file ("untrusted comment: …"
 * line, then the base64 line) or just the base64 line. */
int msig_parse_pubkey(const char *text, size_t len, struct msig_pubkey *out, struct vm_err *err);

/* Parses a .minisig file (4 lines). Does not verify anything. */
int msig_parse_sig(const char *text, size_t len, struct msig_sig *out, struct vm_err *err);

/* Verifies sig over data with key: key id, file signature, global signature.
 * Returns 0 only when all three hold. */
int msig_verify_buf(const struct msig_pubkey *key, const struct msig_sig *sig, const void *data,
                    size_t len, struct vm_err *err);

/* Like msig_verify_buf over a file, trying each of nkeys keys whose key id
 * matches. The file is streamed when prehashed; legacy signatures read it whole
 * (at most max_legacy bytes). */
int msig_verify_file(const struct msig_pubkey *keys, size_t nkeys, const struct msig_sig *sig,
                     const char *path, size_t max_legacy, struct vm_err *err);

/* Key id as 16 upper-case hex digits, minisign's display order (little endian). */
void msig_keyid_hex(const uint8_t keyid[MSIG_KEYID_LEN], char out[17]);

#endif
