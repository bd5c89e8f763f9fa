/* Base64 and hex written out by hand: OpenSSL's EVP_DecodeBlock neither takes
 * the URL alphabet nor reports the real length with padding. */
#include "core/codec.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int b64_value(char c, int url)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == (url ? '-' : '+'))
		return 62;
	if (c == (url ? '_' : '/'))
		return 63;
	return -1;
}

size_t b64_decoded_max(size_t len)
{
	return len / 4 * 3 + 3;
}

long b64_decode(const char *in, size_t len, uint8_t *out, int url)
{
	while (len > 0 && in[len - 1] == '=')
		len--;
	if (len % 4 == 1)
		return -1;
	size_t o = 0;
	uint32_t acc = 0;
	int bits = 0;
	for (size_t i = 0; i < len; i++) {
		int v = b64_value(in[i], url);
		if (v < 0)
			return -1;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (uint8_t)(acc >> bits);
		}
	}
	/* leftover bits must be zero: one canonical encoding per byte string */
	if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
		return -1;
	return (long)o;
}

size_t b64_encoded_len(size_t len)
{
	return (len + 2) / 3 * 4;
}

size_t b64_encode(const uint8_t *in, size_t len, char *out, int url)
{
	const char *alpha = url ? b64_url : b64_std;
	size_t o = 0, i = 0;
	for (; i + 2 < len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		out[o++] = alpha[v >> 18];
		out[o++] = alpha[(v >> 12) & 63];
		out[o++] = alpha[(v >> 6) & 63];
		out[o++] = alpha[v & 63];
	}
	if (i < len) {
		uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);
		out[o++] = alpha[v >> 18];
		out[o++] = alpha[(v >> 12) & 63];
		if (i + 1 < len)
			out[o++] = alpha[(v >> 6) & 63];
		else if (!url)
			out[o++] = '=';
		if (!url)
			out[o++] = '=';
	}
	out[o] = '\0';
	return o;
}

void hex_encode(const uint8_t *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * len] = '\0';
}

static int hex_digit(char c)
{
	return c >= '0' && c <= '9'   ? c - '0'
	       : c >= 'a' && c <= 'f' ? c - 'a' + 10
	       : c >= 'A' && c <= 'F' ? c - 'A' + 10
	                              : -1;
}

long hex_decode(const char *in, size_t len, uint8_t *out, size_t cap)
{
	if (len % 2 != 0 || len / 2 > cap)
		return -1;
	for (size_t i = 0; i < len / 2; i++) {
		int hi = hex_digit(in[2 * i]), lo = hex_digit(in[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return (long)(len / 2);
}

void sha256_buf(const void *data, size_t len, uint8_t out[SHA256_LEN])
{
	unsigned int n = SHA256_LEN;
	EVP_Digest(data, len, out, &n, EVP_sha256(), NULL);
}

int sha256_file(const char *path, uint8_t out[SHA256_LEN], struct vm_err *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "open %s", path);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(ctx);
		close(fd);
		return vm_err_set(err, VM_ERR_INTERNAL, "sha256: OpenSSL init failed");
	}
	uint8_t buf[65536];
	ssize_t n;
	while ((n = read(fd, buf, sizeof(buf))) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int saved = errno;
			EVP_MD_CTX_free(ctx);
			close(fd);
			return vm_err_errno(err, VM_ERR_IO, saved, "read %s", path);
		}
		EVP_DigestUpdate(ctx, buf, (size_t)n);
	}
	close(fd);
	unsigned int len = SHA256_LEN;
	EVP_DigestFinal_ex(ctx, out, &len);
	EVP_MD_CTX_free(ctx);
	return 0;
}

/* --- UTF-8 ------------------------------------------------------------------------ */

size_t utf8_char_len(const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	if (n == 0)
		return 0;
	if (u[0] < 0x80)
		return 1;
	size_t len;
	uint32_t cp;
	if (u[0] >= 0xC2 && u[0] <= 0xDF) {
		len = 2;
		cp = u[0] & 0x1Fu;
	} else if (u[0] >= 0xE0 && u[0] <= 0xEF) {
		len = 3;
		cp = u[0] & 0x0Fu;
	} else if (u[0] >= 0xF0 && u[0] <= 0xF4) {
		len = 4;
		cp = u[0] & 0x07u;
	} else {
		return 0; /* continuation byte, C0/C1 overlong lead, or beyond U+10FFFF */
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((u[i] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (u[i] & 0x3Fu);
	}
	static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
	if (cp < min_cp[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return len;
}

bool utf8_valid(const char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		size_t l = utf8_char_len(s + i, n - i);
		if (l == 0)
			return false;
		i += l;
	}
	return true;
}

size_t utf8_cut(const char *s, size_t n)
{
	/* a character is at most 4 bytes: look back over at most 3 continuations */
	for (size_t back = 1; back <= 4 && back <= n; back++) {
		unsigned char c = (unsigned char)s[n - back];
		if ((c & 0xC0) == 0x80)
			continue;
		size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
		return need > back ? n - back : n;
	}
	return n;
}

static bool is_ctrl(const unsigned char *u, size_t clen)
{
	if (clen == 1)
		return (u[0] < 0x20 && u[0] != '\t') || u[0] == 0x7F;
	return clen == 2 && u[0] == 0xC2 && u[1] < 0xA0; /* U+0080..009F */
}

size_t utf8_escape(char *out, size_t cap, const char *in, size_t len, unsigned flags,
                   unsigned *result)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;
	unsigned res = 0;
	for (size_t i = 0; i < len;) {
		const unsigned char *u = (const unsigned char *)in + i;
		size_t clen = utf8_char_len(in + i, len - i);
		/* escape whole characters (a C1 control is two bytes): each byte as \xNN */
		size_t nesc = clen == 0                                     ? 1
		              : (flags & UTF8_ESC_CTRL) && is_ctrl(u, clen) ? clen
		                                                            : 0;
		bool bslash = nesc == 0 && u[0] == '\\' && (flags & UTF8_ESC_BACKSLASH);
		size_t need = nesc > 0 ? 4 * nesc : bslash ? 2 : clen;
		if (o + need >= cap) {
			res |= UTF8_CUT;
			break;
		}
		if (nesc > 0) {
			for (size_t k = 0; k < nesc; k++) {
				out[o++] = '\\';
				out[o++] = 'x';
				out[o++] = hex[u[k] >> 4];
				out[o++] = hex[u[k] & 0xF];
			}
			res |= UTF8_ESCAPED;
			i += nesc;
		} else if (bslash) {
			out[o++] = '\\';
			out[o++] = '\\';
			res |= UTF8_ESCAPED;
			i++;
		} else {
			memcpy(out + o, u, clen);
			o += clen;
			i += clen;
		}
	}
	if (cap > 0)
		out[o] = '\0';
	if (result != NULL)
		*result = res;
	return o;
}

/* --- URLs made safe to show ------------------------------------------------------- */

/* Length of "scheme://" at the start of url, 0 when there is none. */
static size_t scheme_len(const char *url)
{
	size_t i = 0;
	if (!((url[0] >= 'a' && url[0] <= 'z') || (url[0] >= 'A' && url[0] <= 'Z')))
		return 0;
	while (url[i] != '\0' &&
	       (isalnum((unsigned char)url[i]) || url[i] == '+' || url[i] == '-' || url[i] == '.'))
		i++;
	return strncmp(url + i, "://", 3) == 0 ? i + 3 : 0;
}

bool url_is_http(const char *u)
{
	size_t n = strlen(u);
	const char *host = strncmp(u, "https://", 8) == 0  ? u + 8
	                   : strncmp(u, "http://", 7) == 0 ? u + 7
	                                                   : NULL;
	if (host == NULL || n > URL_HTTP_MAX || strchr("/?#", *host) != NULL)
		return false;
	for (; *u; u++)
		if ((unsigned char)*u <= 0x20 || *u == 0x7f)
			return false;
	return true;
}

char *url_redact(const char *url, char *out, size_t cap)
{
	if (cap == 0)
		return out;
	out[0] = '\0';
	if (url == NULL)
		return out;
	size_t auth = scheme_len(url);
	size_t end = auth + strcspn(url + auth, "/?#");
	const char *at = NULL;
	for (const char *p = url + auth; p < url + end; p++)
		if (*p == '@')
			at = p;
	if (at == NULL) {
		snprintf(out, cap, "%s", url);
		return out;
	}
	const char *colon = memchr(url + auth, ':', (size_t)(at - (url + auth)));
	if (colon != NULL)
		snprintf(out, cap, "%.*s:***%s", (int)(colon - url), url, at);
	else
		snprintf(out, cap, "%.*s***%s", (int)auth, url, at);
	return out;
}

struct url_shown url_shown(const char *url)
{
	/* the query (and fragment) go too: a presigned URL carries its token there */
	char bare[URL_SHOWN_MAX];
	snprintf(bare, sizeof(bare), "%.*s", url != NULL ? (int)strcspn(url, "?#") : 0,
	         url != NULL ? url : "");
	struct url_shown u;
	url_redact(bare, u.s, sizeof(u.s));
	return u;
}

int url_query_escape(const char *s, char *out, size_t cap)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		bool plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		             (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_' ||
		             *p == '~';
		if (o + (plain ? 1 : 3) >= cap)
			return -1;
		if (plain) {
			out[o++] = (char)*p;
		} else {
			out[o++] = '%';
			out[o++] = hex[*p >> 4];
			out[o++] = hex[*p & 15];
		}
	}
	if (o >= cap)
		return -1;
	out[o] = '\0';
	return 0;
}
