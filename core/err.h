/* Errors as values: a code and a human-readable reason in a caller-owned buffer. */
#ifndef VMA_CORE_ERR_H
#define VMA_CORE_ERR_H

#include <stddef.h>

/* Exit codes (sysexits style). Only cmd/ turns errors into these. */
enum vm_exit {
	VM_EXIT_OK = 0,
	VM_EXIT_RUNTIME = 1,
	VM_EXIT_NOT_RUNNING = 3,
	VM_EXIT_USAGE = 64,
	VM_EXIT_NOPERM = 77, /* e.g. status without access to the admin socket */
	VM_EXIT_CONFIG = 78,
};

/* Error codes: negative in return values, positive in struct vm_err. */
enum vm_errcode {
	VM_OK = 0,
	VM_ERR_INVALID = 1, /* bad input: config, flags, request */
	VM_ERR_IO = 2,      /* file or socket I/O */
	VM_ERR_NOMEM = 3,
	VM_ERR_NOTFOUND = 4,
	VM_ERR_BUSY = 5, /* resource in use (port, lock) */
	VM_ERR_PERM = 6,
	VM_ERR_INTERNAL = 7,
};

struct vm_err {
	int code;
	char msg[256];
};

/* Sets err (when not NULL) and returns -code, so `return vm_err_set(...)` works. */
int vm_err_set(struct vm_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Like vm_err_set, appending ": strerror(errnum)". */
int vm_err_errno(struct vm_err *err, int code, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
