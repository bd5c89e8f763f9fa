/* Error value helpers. */
#include "core/err.h"

#include "core/codec.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int vm_err_set(struct vm_err *err, int code, const char *fmt, ...)
{
	if (err != NULL) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
		va_end(ap);
		/* messages reach JSON answers: never cut one inside a character */
		if (n >= 0 && (size_t)n >= sizeof(err->msg))
			err->msg[utf8_cut(err->msg, sizeof(err->msg) - 1)] = '\0';
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
			n += snprintf(err->msg + n, sizeof(err->msg) - (size_t)n, ": %s",
			              strerror(errnum));
		if (n >= 0 && (size_t)n >= sizeof(err->msg))
			err->msg[utf8_cut(err->msg, sizeof(err->msg) - 1)] = '\0';
		err->code = code;
	}
	return -code;
}
