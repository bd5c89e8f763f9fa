/* Bounded byte buffers and the bounded text appender (see core/buf.h). */
#include "core/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"

#define BUF_MIN 4096
/* An emptied buffer larger than this is freed (unless keep). */
#define BUF_SHRINK (64 * 1024)

void buf_init(struct buf *b, size_t max)
{
	memset(b, 0, sizeof(*b));
	b->max = max;
}

void buf_free(struct buf *b)
{
	free(b->p);
	b->p = NULL;
	b->off = b->len = b->cap = 0;
}

uint8_t *buf_reserve(struct buf *b, size_t n)
{
	if (n > b->max || b->len > b->max - n)
		return NULL;
	if (b->p != NULL && b->off + b->len + n <= b->cap)
		return b->p + b->off + b->len;
	/* Compact first: cheaper than growing when most of the buffer was consumed. */
	if (b->off > 0 && b->len + n <= b->cap) {
		memmove(b->p, b->p + b->off, b->len);
		b->off = 0;
		b->p[b->len] = '\0';
		return b->p + b->len;
	}
	size_t cap = b->cap ? b->cap : BUF_MIN;
	while (cap < b->len + n)
		cap *= 2;
	if (cap > b->max)
		cap = b->max;
	/* one byte more than cap: the NUL that lets text callers use p as a string */
	uint8_t *p = malloc(cap + 1);
	if (p == NULL)
		return NULL;
	if (b->len)
		memcpy(p, b->p + b->off, b->len);
	p[b->len] = '\0';
	free(b->p);
	b->p = p;
	b->off = 0;
	b->cap = cap;
	return b->p + b->len;
}

void buf_commit(struct buf *b, size_t n)
{
	b->len += n;
	b->p[b->off + b->len] = '\0';
}

int buf_append(struct buf *b, const void *data, size_t n)
{
	uint8_t *dst = buf_reserve(b, n);
	if (dst == NULL)
		return -1;
	if (n > 0)
		memcpy(dst, data, n);
	buf_commit(b, n);
	return 0;
}

int buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
	va_list again;
	va_copy(again, ap);
	int n = vsnprintf(NULL, 0, fmt, ap);
	uint8_t *dst = n < 0 ? NULL : buf_reserve(b, (size_t)n);
	if (dst != NULL) {
		/* reserve left room for n bytes and the NUL after them */
		vsnprintf((char *)dst, (size_t)n + 1, fmt, again);
		buf_commit(b, (size_t)n);
	}
	va_end(again);
	return dst != NULL ? 0 : -1;
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int rc = buf_vprintf(b, fmt, ap);
	va_end(ap);
	return rc;
}

void buf_consume(struct buf *b, size_t n)
{
	if (n >= b->len) {
		/* Empty: release large buffers so idle streams stay small. */
		b->off = b->len = 0;
		if (!b->keep && b->cap > BUF_SHRINK) {
			free(b->p);
			b->p = NULL;
			b->cap = 0;
		} else if (b->p != NULL) {
			b->p[0] = '\0';
		}
		return;
	}
	b->off += n;
	b->len -= n;
}

char *buf_take(struct buf *b, size_t *len)
{
	char *s;
	if (b->p == NULL) {
		s = calloc(1, 1);
	} else {
		if (b->off > 0)
			memmove(b->p, b->p + b->off, b->len + 1);
		s = (char *)b->p;
	}
	if (len != NULL)
		*len = s != NULL ? b->len : 0;
	b->p = NULL;
	b->off = b->len = b->cap = 0;
	return s;
}

size_t str_vappendf(char *buf, size_t cap, size_t o, const char *fmt, va_list ap)
{
	if (cap == 0 || o >= cap)
		return cap;
	int n = vsnprintf(buf + o, cap - o, fmt, ap);
	if (n < 0) {
		buf[o] = '\0';
		return cap;
	}
	if ((size_t)n >= cap - o) {
		/* cut: never end inside a character */
		buf[utf8_cut(buf, cap - 1)] = '\0';
		return cap;
	}
	return o + (size_t)n;
}

size_t str_appendf(char *buf, size_t cap, size_t o, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	o = str_vappendf(buf, cap, o, fmt, ap);
	va_end(ap);
	return o;
}
