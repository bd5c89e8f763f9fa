/* RFC 6455 pieces the tunnel needs as a client: frame header parse/encode,
 * masking, a streaming decoder for server frames, and the opening handshake's
 * key, accept check and response parser. No I/O here (see bridge.c, piko.c). */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "core/codec.h"
#include "tunnel/internal.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

int ws_frame_hdr_parse(const uint8_t *buf, size_t len, uint64_t max_len, struct ws_frame_hdr *h,
                       const char **why)
{
	if (len < 2)
		return 0;
	h->fin = (buf[0] & 0x80) != 0;
	h->opcode = buf[0] & 0x0F;
	h->masked = (buf[1] & 0x80) != 0;
	if ((buf[0] & 0x70) != 0)
		return *why = "reserved bits set (no extension was negotiated)", -1;
	bool control = (h->opcode & 0x8) != 0;
	if (h->opcode != WS_OP_CONT && h->opcode != WS_OP_TEXT && h->opcode != WS_OP_BINARY &&
	    h->opcode != WS_OP_CLOSE && h->opcode != WS_OP_PING && h->opcode != WS_OP_PONG)
		return *why = "unknown opcode", -1;
	uint64_t plen = buf[1] & 0x7F;
	size_t need = 2;
	if (plen == 126)
		need += 2;
	else if (plen == 127)
		need += 8;
	if (h->masked)
		need += 4;
	if (len < need)
		return 0;
	size_t o = 2;
	if (plen == 126) {
		plen = (uint64_t)buf[2] << 8 | buf[3];
		o = 4;
		if (plen < 126)
			return *why = "non-minimal length encoding", -1;
	} else if (plen == 127) {
		plen = 0;
		for (int i = 0; i < 8; i++)
			plen = plen << 8 | buf[2 + i];
		o = 10;
		if (plen >> 63)
			return *why = "length has the most significant bit set", -1;
		if (plen <= 0xFFFF)
			return *why = "non-minimal length encoding", -1;
	}
	if (control && (!h->fin || plen > WS_MAX_CONTROL))
		return *why = "control frame fragmented or longer than 125 bytes", -1;
	if (plen > max_len)
		return *why = "frame larger than the maximum frame size", -1;
	if (h->masked)
		memcpy(h->mask, buf + o, 4);
	else
		memset(h->mask, 0, 4);
	h->len = plen;
	return (int)need;
}

size_t ws_frame_hdr_encode(uint8_t out[WS_HDR_MAX], uint8_t opcode, bool fin, uint64_t len,
                           const uint8_t *mask)
{
	size_t o = 2;
	out[0] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0F));
	uint8_t m = mask ? 0x80 : 0;
	if (len < 126) {
		out[1] = (uint8_t)(m | len);
	} else if (len <= 0xFFFF) {
		out[1] = m | 126;
		out[2] = (uint8_t)(len >> 8);
		out[3] = (uint8_t)len;
		o = 4;
	} else {
		out[1] = m | 127;
		for (int i = 0; i < 8; i++)
			out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
		o = 10;
	}
	if (mask) {
		memcpy(out + o, mask, 4);
		o += 4;
	}
	return o;
}

void ws_mask_copy(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t mask[4],
                  size_t offset)
{
	size_t i = 0;
	/* Align to the mask phase, then XOR eight bytes at a time (the bulk path). */
	while (i < len && ((offset + i) & 3) != 0) {
		dst[i] = src[i] ^ mask[(offset + i) & 3];
		i++;
	}
	uint8_t m8[8] = {mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]};
	uint64_t w;
	memcpy(&w, m8, 8);
	for (; i + 8 <= len; i += 8) {
		uint64_t v;
		memcpy(&v, src + i, 8);
		v ^= w;
		memcpy(dst + i, &v, 8);
	}
	for (; i < len; i++)
		dst[i] = src[i] ^ mask[(offset + i) & 3];
}

void ws_rx_init(struct ws_rx *rx, uint64_t max_frame)
{
	memset(rx, 0, sizeof(*rx));
	rx->max_frame = max_frame;
}

static size_t rx_fail(struct ws_rx *rx, struct ws_event *ev, const char *why, size_t used)
{
	rx->failed = true;
	ev->type = WS_EV_ERROR;
	ev->why = why;
	return used;
}

/* A complete header was parsed: check it against the message state. */
static const char *rx_check_sequence(struct ws_rx *rx, const struct ws_frame_hdr *h)
{
	if (h->masked)
		return "server frames must not be masked";
	if (h->opcode == WS_OP_TEXT)
		return "text frames are not part of the Piko protocol";
	if (h->opcode == WS_OP_CONT && !rx->in_message)
		return "continuation frame without a message";
	if (h->opcode == WS_OP_BINARY && rx->in_message)
		return "new message inside a fragmented message";
	if (h->opcode == WS_OP_CONT || h->opcode == WS_OP_BINARY)
		rx->in_message = !h->fin;
	return NULL;
}

static void rx_control_event(struct ws_rx *rx, struct ws_event *ev)
{
	ev->data = rx->ctl;
	ev->len = rx->ctl_len;
	switch (rx->cur.opcode) {
	case WS_OP_PING:
		ev->type = WS_EV_PING;
		break;
	case WS_OP_PONG:
		ev->type = WS_EV_PONG;
		break;
	default:
		ev->type = WS_EV_CLOSE;
		ev->close_code = rx->ctl_len >= 2 ? (uint16_t)(rx->ctl[0] << 8 | rx->ctl[1]) : 1005;
		break;
	}
}

size_t ws_rx_feed(struct ws_rx *rx, const uint8_t *in, size_t len, struct ws_event *ev)
{
	memset(ev, 0, sizeof(*ev));
	if (rx->failed)
		return rx_fail(rx, ev, "decoder failed earlier", 0);
	size_t used = 0;
	if (!rx->in_frame) {
		/* Collect the header (at most 14 bytes) in rx->hdr. */
		size_t take = len < WS_HDR_MAX - rx->hdr_len ? len : WS_HDR_MAX - rx->hdr_len;
		memcpy(rx->hdr + rx->hdr_len, in, take);
		const char *why = NULL;
		int n =
		    ws_frame_hdr_parse(rx->hdr, rx->hdr_len + take, rx->max_frame, &rx->cur, &why);
		if (n < 0)
			return rx_fail(rx, ev, why, take);
		if (n == 0) {
			rx->hdr_len += take;
			return take;
		}
		used = (size_t)n - rx->hdr_len;
		rx->hdr_len = 0;
		if ((why = rx_check_sequence(rx, &rx->cur)) != NULL)
			return rx_fail(rx, ev, why, used);
		rx->in_frame = true;
		rx->remaining = rx->cur.len;
		rx->ctl_len = 0;
	}
	bool control = (rx->cur.opcode & 0x8) != 0;
	size_t avail = len - used;
	size_t take = rx->remaining < avail ? (size_t)rx->remaining : avail;
	if (!control) {
		if (take > 0) {
			ev->type = WS_EV_DATA;
			ev->data = in + used;
			ev->len = take;
		}
		rx->remaining -= take;
		if (rx->remaining == 0)
			rx->in_frame = false;
		return used + take;
	}
	memcpy(rx->ctl + rx->ctl_len, in + used, take);
	rx->ctl_len += take;
	rx->remaining -= take;
	if (rx->remaining == 0) {
		rx->in_frame = false;
		rx_control_event(rx, ev);
	}
	return used + take;
}

void ws_key_encode(const uint8_t raw[16], char out[25])
{
	b64_encode(raw, 16, out, 0);
}

void ws_accept_for_key(const char *key, char out[29])
{
	char cat[128];
	uint8_t sha[20];
	unsigned int n = 0;
	int len = snprintf(cat, sizeof(cat), "%s%s", key, WS_GUID);
	EVP_Digest(cat, (size_t)len, sha, &n, EVP_sha1(), NULL);
	b64_encode(sha, sizeof(sha), out, 0);
}

/* Finds header name (case-insensitive) in the head; copies its trimmed value. */
static bool find_header(const char *head, size_t len, const char *name, char *val, size_t cap)
{
	size_t nlen = strlen(name);
	const char *end = head + len;
	const char *line = memchr(head, '\n', len);
	while (line != NULL && line + 1 < end) {
		line++;
		const char *eol = memchr(line, '\n', (size_t)(end - line));
		if (eol == NULL)
			break;
		if ((size_t)(eol - line) > nlen && strncasecmp(line, name, nlen) == 0 &&
		    line[nlen] == ':') {
			const char *v = line + nlen + 1;
			while (v < eol && (*v == ' ' || *v == '\t'))
				v++;
			const char *ve = eol;
			while (ve > v && isspace((unsigned char)ve[-1]))
				ve--;
			size_t n = (size_t)(ve - v) < cap - 1 ? (size_t)(ve - v) : cap - 1;
			memcpy(val, v, n);
			val[n] = '\0';
			return true;
		}
		line = eol;
	}
	return false;
}

static bool has_token(const char *list, const char *token)
{
	size_t n = strlen(token);
	for (const char *p = list; *p;) {
		while (*p == ' ' || *p == ',' || *p == '\t')
			p++;
		size_t l = strcspn(p, ", \t");
		if (l == n && strncasecmp(p, token, n) == 0)
			return true;
		p += l;
	}
	return false;
}

long ws_handshake_parse(const char *buf, size_t len, const char *key, int *status,
                        struct vm_err *err)
{
	const char *end = NULL;
	for (size_t i = 3; i < len; i++)
		if (buf[i] == '\n' && buf[i - 1] == '\r' && buf[i - 2] == '\n' &&
		    buf[i - 3] == '\r') {
			end = buf + i + 1;
			break;
		}
	if (end == NULL)
		return 0;
	size_t hlen = (size_t)(end - buf);
	int code = 0;
	if (hlen < 12 || strncmp(buf, "HTTP/1.", 7) != 0 || buf[8] != ' ' ||
	    !isdigit((unsigned char)buf[9]) || !isdigit((unsigned char)buf[10]) ||
	    !isdigit((unsigned char)buf[11]))
		return vm_err_set(err, VM_ERR_INVALID, "not an HTTP response"), -1;
	code = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
	*status = code;
	if (code != 101)
		return (long)hlen;
	char val[256], want[29];
	if (!find_header(buf, hlen, "Upgrade", val, sizeof(val)) ||
	    strcasecmp(val, "websocket") != 0)
		return vm_err_set(err, VM_ERR_INVALID, "101 response without Upgrade: websocket"),
		       -1;
	if (!find_header(buf, hlen, "Connection", val, sizeof(val)) || !has_token(val, "upgrade"))
		return vm_err_set(err, VM_ERR_INVALID, "101 response without Connection: Upgrade"),
		       -1;
	ws_accept_for_key(key, want);
	if (!find_header(buf, hlen, "Sec-WebSocket-Accept", val, sizeof(val)) ||
	    strcmp(val, want) != 0)
		return vm_err_set(err, VM_ERR_INVALID,
		                  "Sec-WebSocket-Accept does not match our key"),
		       -1;
	return (long)hlen;
}
