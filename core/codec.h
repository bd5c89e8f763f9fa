/* Encodings and digests used across modules: base64 (standard and URL-safe,
 * padded or not), hex, SHA-256 of a buffer or a file, and UTF-8 checks, cuts
 * and escapes for the caller's bytes on their way into logs and JSON, and URLs
 * made safe to show. */
#ifndef VMA_CORE_CODEC_H
#define VMA_CORE_CODEC_H

#include <stdbool.h>
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
/* Decodes len hex digits (either case, nothing else, len even) into out
 * (cap bytes). Returns the byte count, or -1 on anything else. */
long hex_decode(const char *in, size_t len, uint8_t *out, size_t cap);

/* Percent-encodes s for a URL's query (RFC 3986 unreserved bytes stay).
 * Returns 0, or -1 when out (cap bytes, NUL included) is too small. */
int url_query_escape(const char *s, char *out, size_t cap);

/* UTF-8 (RFC 3629). A well-formed character has no overlong form, is no
 * surrogate (U+D800..DFFF) and is at most U+10FFFF; anything else is bytes. */

/* Length (1-4) of the well-formed character at s[0, n), or 0 when s does not
 * start with one (n == 0 included). */
size_t utf8_char_len(const char *s, size_t n);
bool utf8_valid(const char *s, size_t n);

/* n, less a trailing character that s[0, n) holds only part of: where to cut
 * a valid string at n bytes (or after a truncating snprintf) so that no
 * character is split. Reads s[0, n) only. */
size_t utf8_cut(const char *s, size_t n);

/* utf8_escape flags (in) and result bits (out). */
#define UTF8_ESC_CTRL      0x1u /* also escape C0 controls but tab, DEL and C1 (U+0080..9F) */
#define UTF8_ESC_BACKSLASH 0x2u /* "\" for a backslash: the output unescapes exactly */
#define UTF8_ESCAPED       0x1u /* at least one escape was written */
#define UTF8_CUT           0x2u /* in did not fit whole: out holds a prefix */

/* Writes in[0, len) into out (cap >= 1; always NUL-terminated) as valid UTF-8:
 * well-formed characters as they are, every other byte as "\xNN" (upper-case
 * hex), and with the flags above controls and backslashes escaped too. Stops
 * before the first character or escape that does not fit whole, so the output
 * is never cut inside either. Returns the output length; *result (may be
 * NULL) gets UTF8_ESCAPED / UTF8_CUT. */
size_t utf8_escape(char *out, size_t cap, const char *in, size_t len, unsigned flags,
                   unsigned *result);
/* The one check of an http(s) URL the agent will call: "http://" or
 * "https://" (lower case), a host, no byte <= 0x20 or DEL, at most
 * URL_HTTP_MAX bytes. libcurl parses the rest. */
#define URL_HTTP_MAX 2000
bool url_is_http(const char *u);

/* URLs in output and logs. url_redact copies url to out (always
 * NUL-terminated, cut at cap-1) with the password of its userinfo replaced:
 * "http://user:pw@host/" -> "http://user:***@host/", a user alone (often a
 * token) -> "***@host". The userinfo is what precedes the last '@' of the
 * authority (after "scheme://", or from the start without a scheme, up to the
 * first '/', '?' or '#'), so '@' in a path or an IPv6 host is left alone and
 * percent-encoded bytes stay encoded. The password is never copied, not even
 * in part. Returns out. */
char *url_redact(const char *url, char *out, size_t cap);

/* url_redact of url without its query and fragment (a presigned URL's token
 * is there) into a value, for one-line use in a log call:
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
