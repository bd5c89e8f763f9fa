/* libFuzzer target: the caller's bytes at the audit boundary. utf8_escape and
 * utf8_cut on arbitrary bytes, checked against an independent decoder (output
 * valid UTF-8, within cap, unescaping to an exact prefix of the input), and
 * wh_audit_format on fields cut from the input (always a valid JSON line). */
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "webhook/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Strict UTF-8 by code point arithmetic (not codec's table of leads). */
static bool strict_utf8(const uint8_t *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		uint32_t cp;
		size_t len;
		if (s[i] < 0x80) {
			i++;
			continue;
		} else if ((s[i] & 0xE0) == 0xC0) {
			len = 2, cp = s[i] & 0x1Fu;
		} else if ((s[i] & 0xF0) == 0xE0) {
			len = 3, cp = s[i] & 0x0Fu;
		} else if ((s[i] & 0xF8) == 0xF0) {
			len = 4, cp = s[i] & 0x07u;
		} else {
			return false;
		}
		if (i + len > n)
			return false;
		for (size_t k = 1; k < len; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				return false;
			cp = cp << 6 | (s[i + k] & 0x3Fu);
		}
		if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
		    (len == 4 && cp < 0x10000) || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			return false;
		i += len;
	}
	return true;
}

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Reverses UTF8_ESC_BACKSLASH escaping; the result must be a prefix of in. */
static void check_round_trip(const char *out, size_t olen, const uint8_t *in, size_t len)
{
	size_t j = 0;
	for (size_t i = 0; i < olen; j++) {
		uint8_t b;
		if (out[i] == '\\') {
			if (i + 1 < olen && out[i + 1] == '\\') {
				b = '\\';
				i += 2;
			} else {
				if (i + 3 >= olen || out[i + 1] != 'x' || hexval(out[i + 2]) < 0 ||
				    hexval(out[i + 3]) < 0)
					abort(); /* a lone or cut escape */
				b = (uint8_t)(hexval(out[i + 2]) << 4 | hexval(out[i + 3]));
				i += 4;
			}
		} else {
			b = (uint8_t)out[i++];
		}
		if (j >= len || in[j] != b)
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t cap = (size_t)data[0] + 1; /* 1..256 */
	const uint8_t *in = data + 1;
	size_t len = size - 1;
	char out[256 * 4 + 8];
	unsigned res = 0;
	for (unsigned flags = 0; flags < 4; flags++) {
		memset(out, 0x55, sizeof(out));
		size_t n = utf8_escape(out, cap, (const char *)in, len, flags, &res);
		if (n >= cap || out[n] != '\0')
			abort();
		/* a NUL byte is a control: escaped with UTF8_ESC_CTRL, kept without */
		if ((flags & UTF8_ESC_CTRL) && strlen(out) != n)
			abort();
		if (!strict_utf8((const uint8_t *)out, n))
			abort();
		if (!(res & UTF8_CUT) && (flags & UTF8_ESC_BACKSLASH) == 0 &&
		    !(res & UTF8_ESCAPED) && (n != len || memcmp(out, in, len) != 0))
			abort(); /* nothing escaped, nothing cut: the bytes themselves */
		if (flags & UTF8_ESC_BACKSLASH)
			check_round_trip(out, n, in, len);
		if ((flags & UTF8_ESC_CTRL) && memchr(out, '\n', n) != NULL)
			abort();
	}
	if (utf8_valid((const char *)in, len) != strict_utf8(in, len))
		abort();
	size_t c = utf8_cut((const char *)in, len);
	if (c > len || (strict_utf8(in, len) && !strict_utf8(in, c)))
		abort();

	/* an audit line from fields cut out of the input: always valid JSON */
	char *buf = malloc(len + 1);
	if (buf == NULL)
		return 0;
	memcpy(buf, in, len);
	buf[len] = '\0';
	size_t third = len / 3;
	char *f1 = buf, *f2 = buf + third, *f3 = buf + 2 * third;
	if (third > 0) {
		buf[third - 1] = '\0';
		buf[2 * third - 1] = '\0';
	}
	struct wh_audit_entry e = {
	    .outcome = "denied",
	    .status = 401,
	    .tenant = f1,
	    .sub = f2,
	    .jti = f3,
	    .route = "GET /v1/probes/{id}",
	    .path = f3,
	    .error = "",
	    .remote_addr = "127.0.0.1",
	    .forwarded_for = f1,
	    .probe_id = f2,
	};
	char *text = wh_audit_format(&e);
	if (text == NULL || !strict_utf8((const uint8_t *)text, strlen(text)))
		abort();
	json_error_t jerr;
	json_t *l = json_loads(text, 0, &jerr);
	if (l == NULL || json_string_value(json_object_get(l, "path")) == NULL)
		abort();
	json_decref(l);
	free(text);
	free(buf);
	return 0;
}
