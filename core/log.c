/* Logger. One process-wide sink guarded by a mutex: logging is the one piece of
 * state every module shares, like OpenBSD's log.c. */
#include "core/log.h"

#include "core/buf.h"
#include "core/codec.h"
#include "core/time.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 4096

static const char *const level_names[] = {"debug", "info", "warn", "error"};
/* syslog priorities understood by journald as a "<N>" line prefix */
static const int level_syslog[] = {7, 6, 4, 3};

static struct {
	pthread_mutex_t lock;
	/* read before the lock by every log_msg (the cheap filter), set by a
	 * reload on another thread */
	atomic_int level;
	enum log_format format;
	int fd; /* -1 = stderr */
	char path[PATH_MAX];
	uint64_t size; /* current file size */
	uint64_t max_size;
	int max_files;
	bool failing; /* the file refuses lines: they go to stderr */
	uint64_t file_write_failures, lines_lost;
} g_log = {PTHREAD_MUTEX_INITIALIZER, LOG_INFO, LOG_FORMAT_TEXT, -1, "", 0, 0, 0, false, 0, 0};

const char *log_level_name(enum log_level level)
{
	return (unsigned)level < 4 ? level_names[level] : "info";
}

static int open_log_file(const char *path, uint64_t *size)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	if (fd < 0)
		return -1;
	struct stat st;
	*size = fstat(fd, &st) == 0 ? (uint64_t)st.st_size : 0;
	return fd;
}

int log_configure(const struct log_opts *opts, struct vm_err *err)
{
	int fd = -1;
	uint64_t size = 0;
	bool to_file = opts->file != NULL && opts->file[0] != '\0';
	if (to_file && strlen(opts->file) >= sizeof(g_log.path))
		return vm_err_set(err, VM_ERR_INVALID, "log.file: path too long");
	if (to_file && (fd = open_log_file(opts->file, &size)) < 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "log.file: cannot open %s", opts->file);

	pthread_mutex_lock(&g_log.lock);
	if (g_log.fd >= 0)
		close(g_log.fd);
	g_log.fd = fd;
	g_log.failing = false;
	g_log.size = size;
	snprintf(g_log.path, sizeof(g_log.path), "%s", to_file ? opts->file : "");
	atomic_store(&g_log.level, (int)opts->level);
	g_log.format = opts->format;
	g_log.max_size = opts->max_size;
	g_log.max_files = opts->max_files;
	pthread_mutex_unlock(&g_log.lock);
	return 0;
}

void log_shutdown(void)
{
	pthread_mutex_lock(&g_log.lock);
	if (g_log.fd >= 0)
		close(g_log.fd);
	g_log.fd = -1;
	g_log.path[0] = '\0';
	pthread_mutex_unlock(&g_log.lock);
}

/* --- redaction ------------------------------------------------------------------ */

static const char redacted[] = "[REDACTED]";

static bool is_b64url(char c)
{
	return isalnum((unsigned char)c) || c == '-' || c == '_' || c == '=' || c == '+' ||
	       c == '/';
}

static bool is_value_char(char c)
{
	return c != '\0' && c != '"' && c != '\'' && c != ',' && c != '}' && c != '&' &&
	       !isspace((unsigned char)c);
}

/* Replaces s[from, to) with the marker; returns the index just after it. */
static size_t redact_span(char *s, size_t *len, size_t cap, size_t from, size_t to)
{
	size_t mlen = sizeof(redacted) - 1;
	if (to - from == mlen && memcmp(s + from, redacted, mlen) == 0)
		return to;
	size_t tail = *len - to;
	if (from + mlen + tail >= cap) {
		/* No room to grow: shorten the tail rather than leak the secret. */
		tail = cap > from + mlen + 1 ? cap - from - mlen - 1 : 0;
		if (from + mlen >= cap) {
			s[from] = '\0';
			*len = from;
			return from;
		}
	}
	memmove(s + from + mlen, s + to, tail);
	memcpy(s + from, redacted, mlen);
	*len = from + mlen + tail;
	s[*len] = '\0';
	return from + mlen;
}

static bool ieq_prefix(const char *s, const char *word)
{
	return strncasecmp(s, word, strlen(word)) == 0;
}

static const char *const secret_words[] = {
    "token",   "password",      "passwd",     "secret",      "apikey",      "api_key",
    "api-key", "authorization", "credential", "private_key", "install_key", "key",
};

/* Length of a secret-naming key ending at s[end) (the word just before a
 * separator), or 0 when the word names nothing secret. */
static size_t secret_key_before(const char *s, size_t end)
{
	size_t start = end;
	while (start > 0 &&
	       (isalnum((unsigned char)s[start - 1]) || s[start - 1] == '_' || s[start - 1] == '-'))
		start--;
	if (start == end)
		return 0;
	for (size_t i = 0; i < sizeof(secret_words) / sizeof(secret_words[0]); i++) {
		size_t wl = strlen(secret_words[i]);
		/* the key ends with a secret word: x_token, piko.token, install-key … */
		if (end - start >= wl && strncasecmp(s + end - wl, secret_words[i], wl) == 0)
			return end - start;
	}
	return 0;
}

size_t log_redact(char *s, size_t cap)
{
	size_t len = strlen(s);
	for (size_t i = 0; i < len; i++) {
		/* Bearer <token> */
		if (ieq_prefix(s + i, "bearer ") && (i == 0 || !isalnum((unsigned char)s[i - 1]))) {
			size_t v = i + 7, e = v;
			while (e < len && is_value_char(s[e]))
				e++;
			/* prose like "no bearer token" names a token, it is not one */
			bool word = (e - v == 5 && strncasecmp(s + v, "token", 5) == 0) ||
			            (e - v == 6 && strncasecmp(s + v, "tokens", 6) == 0);
			if (e > v && !word)
				i = redact_span(s, &len, cap, v, e) - 1;
			continue;
		}
		/* JWT: eyJ… . … . … */
		if (strncmp(s + i, "eyJ", 3) == 0 && (i == 0 || !is_b64url(s[i - 1]))) {
			size_t e = i, dots = 0;
			while (e < len && (is_b64url(s[e]) || s[e] == '.'))
				dots += s[e++] == '.';
			if (dots >= 1) {
				i = redact_span(s, &len, cap, i, e) - 1;
				continue;
			}
		}
		/* PEM private key blocks */
		if (strncmp(s + i, "-----BEGIN ", 11) == 0) {
			const char *end = strstr(s + i, "PRIVATE KEY-----");
			const char *first_nl = strchr(s + i, '\n');
			if (end != NULL && (first_nl == NULL || end < first_nl)) {
				const char *stop = strstr(end + 16, "-----END ");
				const char *tail = stop ? strstr(stop + 9, "-----") : NULL;
				size_t e = tail ? (size_t)(tail + 5 - s) : len;
				i = redact_span(s, &len, cap, i, e) - 1;
				continue;
			}
		}
		/* key=value, key: value, "key": "value" */
		if (s[i] == '=' || s[i] == ':') {
			size_t kend = i;
			if (kend > 0 && (s[kend - 1] == '"' || s[kend - 1] == '\''))
				kend--;
			if (secret_key_before(s, kend) == 0)
				continue;
			size_t v = i + 1;
			while (v < len && (s[v] == ' ' || s[v] == '"' || s[v] == '\''))
				v++;
			if (ieq_prefix(s + v, "bearer "))
				v += 7;
			size_t e = v;
			while (e < len && is_value_char(s[e]))
				e++;
			if (e > v)
				i = redact_span(s, &len, cap, v, e) - 1;
		}
	}
	return len;
}

/* --- output ----------------------------------------------------------------------- */

static void json_escape(char *out, size_t cap, const char *in)
{
	size_t o = 0;
	for (; *in != '\0' && o + 7 < cap; in++) {
		unsigned char c = (unsigned char)*in;
		if (c == '"' || c == '\\') {
			out[o++] = '\\';
			out[o++] = (char)c;
		} else if (c == '\n') {
			out[o++] = '\\';
			out[o++] = 'n';
		} else if (c < 0x20) {
			o = str_appendf(out, cap, o, "\\u%04x", c);
		} else {
			out[o++] = (char)c;
		}
	}
	/* full: never end inside a character */
	out[utf8_cut(out, o)] = '\0';
}

static void rotate_locked(void)
{
	char from[PATH_MAX + 16], to[PATH_MAX + 16];
	close(g_log.fd);
	g_log.fd = -1;
	if (g_log.max_files <= 0) {
		unlink(g_log.path);
	} else {
		for (int n = g_log.max_files - 1; n >= 1; n--) {
			snprintf(from, sizeof(from), "%s.%d", g_log.path, n);
			snprintf(to, sizeof(to), "%s.%d", g_log.path, n + 1);
			rename(from, to);
		}
		snprintf(to, sizeof(to), "%s.1", g_log.path);
		rename(g_log.path, to);
	}
	g_log.fd = open_log_file(g_log.path, &g_log.size);
}

/* The whole line to fd 2; false when even that refused it. */
static bool write_stderr(const char *line, size_t len)
{
	while (len > 0) {
		ssize_t n = write(STDERR_FILENO, line, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		line += n;
		len -= (size_t)n;
	}
	return true;
}

/* A line the file refused goes to stderr (journald under systemd) instead:
 * "audit line NOT written" on a full disk must not be lost with the rest. */
static void file_failed_locked(const char *line, size_t len, int e)
{
	g_log.file_write_failures++;
	if (!g_log.failing) {
		g_log.failing = true;
		char note[PATH_MAX + 160];
		int k = snprintf(note, sizeof(note),
		                 "log: cannot write %s (%s); lines go to stderr until it works "
		                 "again\n",
		                 g_log.path, strerror(e));
		if (k > 0)
			(void)write_stderr(note,
			                   (size_t)k < sizeof(note) ? (size_t)k : sizeof(note) - 1);
	}
	if (!write_stderr(line, len))
		g_log.lines_lost++;
}

static void write_line_locked(const char *line, size_t len)
{
	if (g_log.path[0] == '\0') {
		if (!write_stderr(line, len))
			g_log.lines_lost++;
		return;
	}
	if (g_log.fd >= 0 && g_log.max_size > 0 && g_log.size > 0 &&
	    g_log.size + len > g_log.max_size)
		rotate_locked();
	if (g_log.fd < 0) /* rotation or a reopen failed: try again for this line */
		g_log.fd = open_log_file(g_log.path, &g_log.size);
	if (g_log.fd < 0) {
		file_failed_locked(line, len, errno);
		return;
	}
	ssize_t n = write(g_log.fd, line, len);
	if (n == (ssize_t)len) {
		g_log.size += (uint64_t)len;
		g_log.failing = false;
		return;
	}
	int e = n < 0 ? errno : ENOSPC;
	/* a torn line would run into the next one: take it back */
	if (n > 0) {
		off_t end = lseek(g_log.fd, 0, SEEK_END);
		if (end < n || ftruncate(g_log.fd, end - n) != 0)
			g_log.size += (uint64_t)n;
	}
	file_failed_locked(line, len, e);
}

static void format_time(char *buf, size_t cap)
{
	(void)time_rfc3339(buf, cap, time_wall_ms(), true);
}

void log_msg(enum log_level level, const char *module, const char *fmt, ...)
{
	if ((int)level < atomic_load_explicit(&g_log.level, memory_order_relaxed))
		return;
	char raw[LOG_LINE_MAX], msg[LOG_LINE_MAX];
	va_list ap;
	va_start(ap, fmt);
	int len = vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	if (len < 0)
		return;
	if ((size_t)len >= sizeof(raw))
		raw[utf8_cut(raw, sizeof(raw) - 1)] = '\0';
	log_redact(raw, sizeof(raw));
	/* Arguments carry the caller's bytes (paths, headers, output): one event is
	 * one line of valid UTF-8, so controls and invalid bytes become \xNN. */
	utf8_escape(msg, sizeof(msg), raw, strlen(raw), UTF8_ESC_CTRL, NULL);

	char line[LOG_LINE_MAX * 2 + 256], ts[40];
	int n;
	pthread_mutex_lock(&g_log.lock);
	bool journald = g_log.fd < 0 && getenv("JOURNAL_STREAM") != NULL;
	format_time(ts, sizeof(ts));
	if (g_log.format == LOG_FORMAT_JSON) {
		char esc[LOG_LINE_MAX * 2];
		json_escape(esc, sizeof(esc), msg);
		n = snprintf(
		    line, sizeof(line),
		    "{\"time\":\"%s\",\"level\":\"%s\",\"module\":\"%s\",\"msg\":\"%s\"}\n", ts,
		    log_level_name(level), module, esc);
	} else if (journald) {
		/* journald adds its own timestamps and maps <N> to a priority. */
		n = snprintf(line, sizeof(line), "<%d>%s: %s\n", level_syslog[level], module, msg);
	} else {
		n = snprintf(line, sizeof(line), "%s %-5s %s: %s\n", ts, log_level_name(level),
		             module, msg);
	}
	if (n > 0)
		write_line_locked(line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
	pthread_mutex_unlock(&g_log.lock);
}

void log_get_stats(struct log_stats *out)
{
	pthread_mutex_lock(&g_log.lock);
	out->file_write_failures = g_log.file_write_failures;
	out->lines_lost = g_log.lines_lost;
	pthread_mutex_unlock(&g_log.lock);
}
