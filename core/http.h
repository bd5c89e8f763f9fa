/* HTTP client for calls the agent makes (control plane, downloads): a thin,
 * bounded wrapper over libcurl with CA/proxy/timeouts, a body cap, a
 * download-to-file mode, and the agent's one retry/backoff policy
 * (exponential, full jitter) that every retry and reconnect uses. */
#ifndef VMA_CORE_HTTP_H
#define VMA_CORE_HTTP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define HTTP_DEFAULT_CONNECT_MS 10000
#define HTTP_DEFAULT_TOTAL_MS   30000
#define HTTP_DEFAULT_MAX_BODY   (1024 * 1024)
/* Error bodies kept in memory in download mode (non-2xx answers). */
#define HTTP_ERROR_BODY_MAX (64 * 1024)

struct http_opts {
	const char *ca_file;         /* NULL or "" = system CA bundle */
	const char *proxy;           /* NULL or "" = libcurl's environment handling
	                              * (HTTPS_PROXY, NO_PROXY…); else an explicit URL */
	uint64_t connect_timeout_ms; /* 0 = HTTP_DEFAULT_CONNECT_MS */
	uint64_t total_timeout_ms;   /* 0 = HTTP_DEFAULT_TOTAL_MS; a download should set more */
	size_t max_body; /* response (or downloaded file) cap; 0 = HTTP_DEFAULT_MAX_BODY */
	const char *download_path; /* when set, a 2xx body is written to this file (created
	                            * 0600, truncated, fsync'd) instead of resp->body */
	/* NULL or "" = none; else a file holding "user:password" for the proxy
	 * (http_proxy_apply), so that no URL has to carry the password */
	const char *proxy_credentials_file;
	bool follow_redirects; /* at most 5, http/https only */
	const char
	    *user_agent; /* NULL = "vm-agent/<version>" is up to the caller; curl's default */
	/* Borrowed. When it becomes true the transfer is aborted (shutdown). */
	const atomic_bool *cancel;
	/* NULL or "" = TCP; else the request goes over this unix socket
	 * (CURLOPT_UNIX_SOCKET_PATH; the URL's host is then only the Host header). */
	const char *unix_socket;
	/* When set, a 2xx body is handed to this sink chunk by chunk instead of
	 * resp->body (a stream: logs, pull progress); it is also called with len 0
	 * about once a second while the transfer waits. A non-zero return ends the
	 * transfer, and http_request then returns 0 with the status it had. */
	int (*on_body)(void *ctx, const char *data, size_t len);
	void *body_ctx;
};

struct http_resp {
	long status; /* HTTP status; 0 when no response arrived */
	char *body;  /* NUL-terminated, malloc'd; NULL when empty or downloaded */
	size_t len;
	long retry_after_s;  /* Retry-After in seconds (date or delta), -1 when absent */
	uint64_t downloaded; /* bytes written to download_path */
};

/* Call once from the main thread before any other thread uses http_ (curl's
 * global init is not thread-safe on every build). Returns 0 or -VM_ERR_INTERNAL. */
int http_global_init(struct vm_err *err);
void http_global_cleanup(void);

/* The CA bundle a TLS connection trusts: `configured` when it is set; else
 * $SSL_CERT_FILE when set and readable; else NULL (libcurl's compiled-in
 * default) when that bundle is readable; else the first readable well-known
 * system bundle (Debian, RHEL, SUSE, Alpine paths): the static binary carries
 * Debian's path and runs on the others too. NULL means "set no CAINFO". The
 * system choice is made once per process. */
const char *http_ca_bundle(const char *configured);

/* Performs one request. headers: NULL-terminated array of "Name: value" (NULL
 * = none). body may be NULL (body_len 0). Returns 0 when an HTTP response
 * arrived, whatever its status (check resp->status); a negative code when not:
 * -VM_ERR_IO for connection/TLS/timeout errors, -VM_ERR_INVALID when the body
 * exceeded max_body, -VM_ERR_BUSY when cancelled. resp is always initialised;
 * free it with http_resp_free. Never logs headers (they may carry tokens). */
int http_request(const struct http_opts *opts, const char *method, const char *url,
                 const char *const *headers, const void *body, size_t body_len,
                 struct http_resp *resp, struct vm_err *err);

void http_resp_free(struct http_resp *resp);

/* The one way a curl handle (CURL *) gets its proxy, for http_request and the
 * tunnel: CURLOPT_PROXY from proxy_url (NULL or "" = libcurl's environment
 * handling) and CURLOPT_PROXYUSERPWD from credentials_file (NULL or "" =
 * none; else see http_proxy_credentials_check). The password is zeroed here
 * (libcurl keeps its own copy) and never appears in err. */
int http_proxy_apply(void *curl, const char *proxy_url, const char *credentials_file,
                     struct vm_err *err);

/* Checks a proxy credentials file without keeping its content: a secret file
 * (secret_load_file: regular, no symlink, 0600 or stricter) holding one
 * non-empty "user:password" line of at most HTTP_PROXY_CREDS_MAX bytes. */
#define HTTP_PROXY_CREDS_MAX 1024
int http_proxy_credentials_check(const char *path, struct vm_err *err);

struct http_retry {
	unsigned max_attempts;     /* total tries, first included; 0 = 1 */
	uint64_t initial_delay_ms; /* 0 = 1000 */
	uint64_t max_delay_ms;     /* 0 = 300000 */
	double multiplier;         /* < 1 = 2.0 */
	/* Sleeps ms between attempts; returns non-zero to give up (shutdown).
	 * NULL = nanosleep. */
	int (*sleep_fn)(void *ctx, uint64_t ms);
	void *sleep_ctx;
};

/* Whether a result is worth retrying: connection errors/timeouts (rc
 * -VM_ERR_IO), 408, 429 and 5xx. Any other 4xx never is. */
bool http_should_retry(int rc, long status);

/* Delay before retry number attempt (1 = after the first failure), full
 * jitter: uniform in [0, min(max_delay, initial * multiplier^(attempt-1))]
 * scaled by rnd (any 32-bit value), raised to Retry-After when the server
 * asked for longer (capped at max_delay_ms). Pure, for tests. */
uint64_t http_backoff_ms(const struct http_retry *r, unsigned attempt, long retry_after_s,
                         uint32_t rnd);
/* The same with a random rnd (getrandom): what callers use. */
uint64_t http_backoff_next_ms(const struct http_retry *r, unsigned attempt, long retry_after_s);

/* http_request, retried per r while http_should_retry says so. resp holds
 * the last answer. Returns like http_request. */
int http_request_retry(const struct http_opts *opts, const struct http_retry *r, const char *method,
                       const char *url, const char *const *headers, const void *body,
                       size_t body_len, struct http_resp *resp, struct vm_err *err);

#endif
