/* Bounded buffers: a byte buffer that grows on demand up to a hard limit
 * (and gives memory back when it empties, so 1,000 idle tunnel streams cost
 * almost nothing), and a bounded appender for text in a caller's array.
 * Every grow-and-cap loop and every "o += snprintf(...)" goes through here. */
#ifndef VMA_CORE_BUF_H
#define VMA_CORE_BUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf {
	uint8_t *p;
	size_t off, len; /* live bytes are p[off .. off+len), followed by a NUL */
	size_t cap, max; /* cap grows on demand up to max */
	bool keep;       /* keep the allocation when empty (a hot queue) */
};

void buf_init(struct buf *b, size_t max);
/* Frees the memory; b can be used again (empty, same max). */
void buf_free(struct buf *b);
/* Makes room for n more bytes and returns where to write them, or NULL when
 * that would exceed max (or on allocation failure). Commit with buf_commit. */
uint8_t *buf_reserve(struct buf *b, size_t n);
void buf_commit(struct buf *b, size_t n);
/* Appends n bytes; -1 (nothing appended) when over max or out of memory. */
int buf_append(struct buf *b, const void *data, size_t n);
/* Appends printf output whole, or nothing and -1 (over max, out of memory). */
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
void buf_consume(struct buf *b, size_t n);
/* Hands the bytes over as a NUL-terminated string the caller frees (an empty
 * buffer gives "" too; NULL only when out of memory); *len (may be NULL)
 * gets their length. b is left empty. */
char *buf_take(struct buf *b, size_t *len);

/* The live bytes; "" for a buffer that never allocated (NULL + 0 is
 * undefined behaviour, and callers pass the result to memcmp and friends). */
static inline const uint8_t *buf_data(const struct buf *b)
{
	return b->p != NULL ? b->p + b->off : (const uint8_t *)"";
}

/* Appends printf output at buf[o] of a cap-byte array (kept NUL-terminated).
 * Returns the new length, or cap when the text did not fit whole: the array
 * then holds a prefix cut on a UTF-8 character boundary, and further calls
 * (o >= cap) write nothing. So calls chain without checks:
 *     o = str_appendf(s, cap, o, ...); ... ; if (o >= cap) -> it was cut */
size_t str_appendf(char *buf, size_t cap, size_t o, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
size_t str_vappendf(char *buf, size_t cap, size_t o, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));

#endif
