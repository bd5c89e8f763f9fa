/* Error value helpers. */
#include "core/err.h"

#include "core/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int vm_err_set(struct vm_err *err, int code, const char *fmt, ...)
{
	if (err != NULL) {
		/* messages reach JSON answers: the appender never cuts inside a character */
		va_list ap;
		va_start(ap, fmt);
		(void)str_vappendf(err->msg, sizeof(err->msg), 0, fmt, ap);
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
		size_t o = str_vappendf(err->msg, sizeof(err->msg), 0, fmt, ap);
		va_end(ap);
		(void)str_appendf(err->msg, sizeof(err->msg), o, ": %s", strerror(errnum));
		err->code = code;
	}
	return -code;
}
