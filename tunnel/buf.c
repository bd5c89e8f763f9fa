/* Bounded byte buffers for the tunnel: grow on demand up to a hard limit and
 * give memory back when they empty, so 1,000 idle streams cost almost nothing. */
#include <stdlib.h>
#include <string.h>

#include "tunnel/internal.h"

#define TBUF_MIN 4096

void tbuf_init(struct tbuf *b, size_t max)
{
	memset(b, 0, sizeof(*b));
	b->max = max;
}

void tbuf_free(struct tbuf *b)
{
	free(b->p);
	b->p = NULL;
	b->off = b->len = b->cap = 0;
}

uint8_t *tbuf_reserve(struct tbuf *b, size_t n)
{
	if (n > b->max || b->len > b->max - n)
		return NULL;
	if (b->off + b->len + n <= b->cap)
		return b->p + b->off + b->len;
	/* Compact first: cheaper than growing when most of the buffer was consumed. */
	if (b->off > 0 && b->len + n <= b->cap) {
		memmove(b->p, b->p + b->off, b->len);
		b->off = 0;
		return b->p + b->len;
	}
	size_t cap = b->cap ? b->cap : TBUF_MIN;
	while (cap < b->len + n)
		cap *= 2;
	if (cap > b->max)
		cap = b->max;
	uint8_t *p = malloc(cap);
	if (p == NULL)
		return NULL;
	if (b->len)
		memcpy(p, b->p + b->off, b->len);
	free(b->p);
	b->p = p;
	b->off = 0;
	b->cap = cap;
	return b->p + b->len;
}

void tbuf_commit(struct tbuf *b, size_t n)
{
	b->len += n;
}

int tbuf_append(struct tbuf *b, const void *data, size_t n)
{
	uint8_t *dst = tbuf_reserve(b, n);
	if (dst == NULL)
		return -1;
	memcpy(dst, data, n);
	b->len += n;
	return 0;
}

void tbuf_consume(struct tbuf *b, size_t n)
{
	if (n >= b->len) {
		/* Empty: release large buffers so idle streams stay small. */
		b->off = b->len = 0;
		if (!b->keep && b->cap > 64 * 1024) {
			free(b->p);
			b->p = NULL;
			b->cap = 0;
		}
		return;
	}
	b->off += n;
	b->len -= n;
}
