/* Secrets (tokens, keys, credentials) as a type: never formatted into logs,
 * zeroed on free, loaded only from files that others cannot read. */
#ifndef VMA_CORE_SECRET_H
#define VMA_CORE_SECRET_H

#include <stddef.h>

#include "core/err.h"

struct secret {
	char *value; /* NUL-terminated; NULL when empty */
	size_t len;
};

/* Copies value (trailing whitespace/newlines stripped). */
int secret_set(struct secret *s, const char *value, struct vm_err *err);

/* Reads a secret from path. The file must be a regular file not readable or
 * writable by group or others (0600 or stricter); otherwise VM_ERR_PERM with a
 * message naming the file and its mode. Trailing newlines are stripped. */
int secret_load_file(struct secret *s, const char *path, struct vm_err *err);

/* Zeroes and frees; the struct is empty afterwards. */
void secret_clear(struct secret *s);

#endif
