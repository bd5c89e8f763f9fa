/* Error value helpers. */
#include "core/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int vm_err_set(struct vm_err *err, int code, const char *fmt, ...)
{
	if (err != NULL) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
		va_end(ap);
		err->code = code;
	}
	return -code;
}

int vm_err_errno(struct vm_err *err, int code, int errnum, const char *fmt, ...)
{
	if (err != NULL) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
		va_end(ap);
		if (n >= 0 && (size_t)n < sizeof(err->msg))
			snprintf(err->msg + n, sizeof(err->msg) - (size_t)n, ": %s",
			         strerror(errnum));
		err->code = code;
	}
	return -code;
}

void vm_err_clear(struct vm_err *err)
{
	if (err != NULL) {
		err->code = 0;
		err->msg[0] = '\0';
	}
}
