/* Encodings and digests used across modules: base64 (standard and URL-safe,
 * padded or not), hex, SHA-256 of a buffer or a file, URLs made safe to show. */
#ifndef VMA_CORE_CODEC_H
#define VMA_CORE_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define SHA256_LEN 32

/* Decodes base64 (standard alphabet, or URL-safe when url is non-zero; padding
 * optional). out must hold at least b64_decoded_max(len) bytes. Returns the
 * decoded length, or -1 on invalid input. */
long b64_decode(const char *in, size_t len, uint8_t *out, int url);
size_t b64_decoded_max(size_t len);

/* Encodes to base64 (padded standard, or unpadded URL-safe when url is
 * non-zero). out must hold b64_encoded_len(len) + 1 bytes; NUL-terminated. */
size_t b64_encode(const uint8_t *in, size_t len, char *out, int url);
size_t b64_encoded_len(size_t len);

/* Lower-case hex; out must hold 2*len+1 bytes. */
void hex_encode(const uint8_t *in, size_t len, char *out);

/* URLs in output and logs. url_redact copies url to out (always
 * NUL-terminated, cut at cap-1) with the password of its userinfo replaced:
 * "http://user:pw@host/" -> "http://user:***@host/", a user alone (often a
 * token) -> "***@host". The userinfo is what precedes the last '@' of the
 * authority (after "scheme://", or from the start without a scheme, up to the
 * first '/', '?' or '#'), so '@' in a path or an IPv6 host is left alone and
 * percent-encoded bytes stay encoded. The password is never copied, not even
 * in part. Returns out. */
char *url_redact(const char *url, char *out, size_t cap);

/* url_redact into a value, for one-line use in a log call:
 * log_info("x", "to %s", url_shown(u).s) (the array lives until the end of
 * the full expression). */
#define URL_SHOWN_MAX 2048
struct url_shown {
	char s[URL_SHOWN_MAX];
};
struct url_shown url_shown(const char *url);

void sha256_buf(const void *data, size_t len, uint8_t out[SHA256_LEN]);
int sha256_file(const char *path, uint8_t out[SHA256_LEN], struct vm_err *err);

#endif
