/* Logging: levels, text or JSON lines, stderr or a size-rotated file, and a
 * redaction pass so that tokens, keys and passwords never reach a log line. */
#ifndef VMA_CORE_LOG_H
#define VMA_CORE_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };
enum log_format { LOG_FORMAT_TEXT = 0, LOG_FORMAT_JSON };

struct log_opts {
	enum log_level level;
	enum log_format format;
	const char *file;  /* NULL or "" = stderr */
	uint64_t max_size; /* rotate when the file would exceed this many bytes */
	int max_files;     /* rotated files kept: file.1 … file.N */
};

/* (Re)configures the logger. Safe to call again (SIGHUP); on error the previous
 * settings stay in effect. Before the first call, logs go to stderr at info. */
int log_configure(const struct log_opts *opts, struct vm_err *err);

/* Closes the log file, back to stderr. */
void log_shutdown(void);

void log_msg(enum log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(mod, ...) log_msg(LOG_DEBUG, mod, __VA_ARGS__)
#define log_info(mod, ...)  log_msg(LOG_INFO, mod, __VA_ARGS__)
#define log_warn(mod, ...)  log_msg(LOG_WARN, mod, __VA_ARGS__)
#define log_error(mod, ...) log_msg(LOG_ERROR, mod, __VA_ARGS__)

/* Rewrites secrets in s (in place) as "[REDACTED]": bearer tokens, JWTs,
 * PEM private keys, and values of key=value / "key": "value" pairs whose
 * key names a secret (token, password, secret, key, authorization, credential).
 * Returns the new length. Exposed for tests and for other writers (audit).
 * Prose that names a secret should not look like a pair: write
 * "cannot read the token (%s)", not "token: %s", or the reason is redacted. */
size_t log_redact(char *s, size_t cap);

const char *log_level_name(enum log_level level);

/* Lines the log file refused (full disk, size limit, I/O error): each went to
 * stderr instead (journald under systemd); lost = stderr refused it too. */
struct log_stats {
	uint64_t file_write_failures;
	uint64_t lines_lost;
};
void log_get_stats(struct log_stats *out);

#endif
