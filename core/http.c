/* libcurl client: one easy handle per request (calls are rare: reports,
 * registration, downloads), bounded bodies, cancellable transfers. */
#include "core/http.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/codec.h"
#include "core/fs.h"
#include "core/rand.h"
#include "core/secret.h"
#include "core/time.h"

/* One transfer: the handle and everything libcurl keeps a pointer to
 * (ERRORBUFFER, WRITEDATA/XFERINFODATA = this struct, the header list), so all
 * of it lives exactly as long as the handle. The body (POSTFIELDS, not copied)
 * is the caller's and outlives the call. */
struct xfer {
	CURL *curl;
	char errbuf[CURL_ERROR_SIZE];
	struct curl_slist *hdrs;
	struct http_resp *resp;
	size_t cap;      /* memory body cap */
	struct buf body; /* the response body in memory, until it moves to resp */
	uint64_t file_cap;
	int fd; /* download target, -1 when none */
	bool overflow;
	bool sink_stopped; /* on_body asked to end the transfer */
	bool write_failed;
	int write_errno;
	const atomic_bool *cancel;
	int (*on_body)(void *ctx, const char *data, size_t len);
	void *body_ctx;
};

int http_global_init(struct vm_err *err)
{
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return vm_err_set(err, VM_ERR_INTERNAL, "libcurl initialisation failed");
	return 0;
}

void http_global_cleanup(void)
{
	curl_global_cleanup();
}

/* Where distributions keep their PEM bundle of trusted roots, most common first. */
static const char *const system_ca_bundles[] = {
	"/etc/ssl/certs/ca-certificates.crt",                /* Debian, Ubuntu, Arch, Alpine */
	"/etc/pki/tls/certs/ca-bundle.crt",                  /* Fedora, RHEL, CentOS */
	"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", /* RHEL 7+ */
	"/etc/ssl/ca-bundle.pem",                            /* openSUSE, SLES */
	"/etc/ssl/cert.pem",                                 /* Alpine, OpenBSD-style */
	"/etc/pki/tls/cacert.pem",
};

static pthread_once_t system_ca_once = PTHREAD_ONCE_INIT;
static char system_ca[PATH_MAX]; /* "" = libcurl's default */

static void system_ca_pick(void)
{
	const char *env = getenv("SSL_CERT_FILE");
	if (env != NULL && env[0] != '\0' && strlen(env) < sizeof(system_ca) &&
	    access(env, R_OK) == 0) {
		memcpy(system_ca, env, strlen(env) + 1);
		return;
	}
	const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
	/* A compiled-in bundle that is missing fails every handshake (libcurl
	 * does not fall back to its CA directory), so only a readable one, or no
	 * bundle but a readable directory (Debian's own libcurl), is kept. */
	if (v != NULL && v->cainfo != NULL) {
		if (access(v->cainfo, R_OK) == 0)
			return;
	} else if (v != NULL && v->capath != NULL && access(v->capath, R_OK | X_OK) == 0) {
		return;
	}
	for (size_t i = 0; i < sizeof(system_ca_bundles) / sizeof(system_ca_bundles[0]); i++) {
		if (access(system_ca_bundles[i], R_OK) == 0) {
			memcpy(system_ca, system_ca_bundles[i], strlen(system_ca_bundles[i]) + 1);
			return;
		}
	}
}

const char *http_ca_bundle(const char *configured)
{
	if (configured != NULL && configured[0] != '\0')
		return configured;
	pthread_once(&system_ca_once, system_ca_pick);
	return system_ca[0] != '\0' ? system_ca : NULL;
}

void http_resp_free(struct http_resp *resp)
{
	if (resp == NULL)
		return;
	free(resp->body);
	resp->body = NULL;
	resp->len = 0;
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *userp)
{
	struct xfer *x = userp;
	size_t n = size * nmemb;
	long status = 0;
	curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &status);
	/* Only a successful answer goes to the download file; an error page is
	 * kept in memory (small) so the caller can report it. */
	if (x->fd >= 0 && status >= 200 && status < 300) {
		if (x->resp->downloaded + n > x->file_cap) {
			x->overflow = true;
			return 0;
		}
		if (fs_write_all(x->fd, data, n) != 0) {
			x->write_failed = true;
			x->write_errno = errno;
			return 0;
		}
		x->resp->downloaded += n;
		return n;
	}
	if (x->on_body != NULL && status >= 200 && status < 300) {
		if (x->on_body(x->body_ctx, data, n) != 0) {
			x->sink_stopped = true;
			return 0;
		}
		return n;
	}
	if (buf_append(&x->body, data, n) != 0) {
		x->overflow = true;
		return 0;
	}
	return n;
}

static int on_progress(void *userp, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	(void)dt, (void)dn, (void)ut, (void)un;
	struct xfer *x = userp;
	if (x->cancel != NULL && atomic_load(x->cancel))
		return 1;
	/* a streaming sink gets its idle tick here (client gone, deadline) */
	if (x->on_body != NULL && x->on_body(x->body_ctx, NULL, 0) != 0) {
		x->sink_stopped = true;
		return 1;
	}
	return 0;
}

static int setup(CURL *c, const struct http_opts *o, const char *method, const char *url,
                 const void *body, size_t body_len, struct xfer *x)
{
	long connect_ms =
	    (long)(o->connect_timeout_ms ? o->connect_timeout_ms : HTTP_DEFAULT_CONNECT_MS);
	long total_ms = (long)(o->total_timeout_ms ? o->total_timeout_ms : HTTP_DEFAULT_TOTAL_MS);
	int bad = 0;
	bad |= (int)curl_easy_setopt(c, CURLOPT_URL, url);
	bad |= (int)curl_easy_setopt(c, CURLOPT_ERRORBUFFER, x->errbuf);
	/* Threads: no signals for DNS timeouts. */
	bad |= (int)curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	bad |= (int)curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	bad |= (int)curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
	bad |= (int)curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, total_ms);
	bad |= (int)curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	if (strcmp(method, "HEAD") == 0)
		bad |= (int)curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	if (body != NULL) {
		bad |= (int)curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		bad |= (int)curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
	}
	if (x->hdrs != NULL)
		bad |= (int)curl_easy_setopt(c, CURLOPT_HTTPHEADER, x->hdrs);
	const char *ca = http_ca_bundle(o->ca_file);
	if (ca != NULL)
		bad |= (int)curl_easy_setopt(c, CURLOPT_CAINFO, ca);
	if (o->user_agent != NULL)
		bad |= (int)curl_easy_setopt(c, CURLOPT_USERAGENT, o->user_agent);
	if (o->unix_socket != NULL && o->unix_socket[0] != '\0')
		bad |= (int)curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, o->unix_socket);
	if (o->follow_redirects) {
		bad |= (int)curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
		bad |= (int)curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
		bad |= (int)curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	}
	/* An honest Content-Length over the cap fails before any byte; a lying
	 * or absent one is caught by on_write, which counts. */
	if (x->fd >= 0)
		bad |= (int)curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)x->file_cap);
	bad |= (int)curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
	bad |= (int)curl_easy_setopt(c, CURLOPT_WRITEDATA, x);
	bad |= (int)curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
	bad |= (int)curl_easy_setopt(c, CURLOPT_XFERINFODATA, x);
	bad |= (int)curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	return bad;
}

static void strip_query(const char *url, char *out, size_t cap)
{
	/* URLs in messages lose their query (it may carry a signed token) and the
	 * password of their userinfo. */
	char bare[URL_SHOWN_MAX];
	snprintf(bare, sizeof(bare), "%.*s", (int)strcspn(url, "?#"), url);
	url_redact(bare, out, cap);
}

/* The file is a secret (core/secret: regular, no symlink, 0600 or stricter);
 * its form is one non-empty "user:password" line. */
static int proxy_creds_load(const char *path, struct secret *out, struct vm_err *err)
{
	int rc = secret_load_file(out, path, err);
	if (rc != 0)
		return rc;
	if (out->len == 0 || out->len > HTTP_PROXY_CREDS_MAX || strpbrk(out->value, "\r\n")) {
		secret_clear(out);
		return vm_err_set(err, VM_ERR_INVALID,
		                  "proxy credentials file %s: expected one line user:password "
		                  "of at most %d bytes",
		                  path, HTTP_PROXY_CREDS_MAX);
	}
	return 0;
}

int http_proxy_credentials_check(const char *path, struct vm_err *err)
{
	struct secret s = {0};
	int rc = proxy_creds_load(path, &s, err);
	secret_clear(&s);
	return rc;
}

int http_proxy_apply(void *curl, const char *proxy_url, const char *credentials_file,
                     struct vm_err *err)
{
	CURL *c = curl;
	if (proxy_url != NULL && proxy_url[0] != '\0' &&
	    curl_easy_setopt(c, CURLOPT_PROXY, proxy_url) != CURLE_OK)
		return vm_err_set(err, VM_ERR_INTERNAL, "libcurl rejected the proxy");
	if (credentials_file == NULL || credentials_file[0] == '\0')
		return 0;
	struct secret cred = {0};
	int rc = proxy_creds_load(credentials_file, &cred, err);
	/* libcurl copies option strings: ours is wiped right away */
	if (rc == 0 && curl_easy_setopt(c, CURLOPT_PROXYUSERPWD, cred.value) != CURLE_OK)
		rc = vm_err_set(err, VM_ERR_INTERNAL, "libcurl rejected the proxy credentials");
	secret_clear(&cred);
	return rc;
}

int http_request(const struct http_opts *opts, const char *method, const char *url,
                 const char *const *headers, const void *body, size_t body_len,
                 struct http_resp *resp, struct vm_err *err)
{
	static const struct http_opts none = {0};
	const struct http_opts *o = opts != NULL ? opts : &none;
	memset(resp, 0, sizeof(*resp));
	resp->retry_after_s = -1;
	char shown[256];
	strip_query(url, shown, sizeof(shown));

	struct xfer x = {
	    .resp = resp,
	    .cap = o->max_body ? o->max_body : HTTP_DEFAULT_MAX_BODY,
	    .file_cap = o->max_body ? o->max_body : HTTP_DEFAULT_MAX_BODY,
	    .fd = -1,
	    .cancel = o->cancel,
	    .on_body = o->on_body,
	    .body_ctx = o->body_ctx,
	};
	int rc = 0;
	CURL *c = curl_easy_init();
	if (c == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "cannot create an HTTP handle");
	x.curl = c;
	for (size_t i = 0; headers != NULL && headers[i] != NULL; i++) {
		struct curl_slist *n = curl_slist_append(x.hdrs, headers[i]);
		if (n == NULL) {
			rc = vm_err_set(err, VM_ERR_NOMEM, "out of memory");
			goto out;
		}
		x.hdrs = n;
	}
	/* downloading: only an error page is kept in memory */
	buf_init(&x.body, o->download_path != NULL ? HTTP_ERROR_BODY_MAX : x.cap);
	if (o->download_path != NULL) {
		x.fd = open(o->download_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (x.fd < 0) {
			rc = vm_err_errno(err, VM_ERR_IO, errno, "cannot create %s",
			                  o->download_path);
			goto out;
		}
	}
	if ((rc = http_proxy_apply(c, o->proxy, o->proxy_credentials_file, err)) != 0)
		goto out;
	if (setup(c, o, method, url, body, body_len, &x) != 0) {
		rc = vm_err_set(err, VM_ERR_INTERNAL, "%s %s: libcurl rejected an option", method,
		                shown);
		goto out;
	}
	CURLcode cc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp->status);
	curl_off_t ra = -1;
	if (curl_easy_getinfo(c, CURLINFO_RETRY_AFTER, &ra) == CURLE_OK && ra > 0)
		resp->retry_after_s = (long)ra;
	if (x.sink_stopped) {
		rc = 0; /* the caller's sink ended it: not an error */
	} else if (x.overflow || cc == CURLE_FILESIZE_EXCEEDED) {
		rc =
		    vm_err_set(err, VM_ERR_INVALID, "%s %s: response body exceeds %llu bytes",
		               method, shown, (unsigned long long)(x.fd >= 0 ? x.file_cap : x.cap));
	} else if (x.write_failed) {
		rc = vm_err_errno(err, VM_ERR_IO, x.write_errno, "%s %s: writing %s", method, shown,
		                  o->download_path);
	} else if (cc == CURLE_ABORTED_BY_CALLBACK) {
		rc = vm_err_set(err, VM_ERR_BUSY, "%s %s: cancelled", method, shown);
	} else if (cc != CURLE_OK) {
		resp->status = 0;
		rc = vm_err_set(err, VM_ERR_IO, "%s %s: %s", method, shown,
		                x.errbuf[0] ? x.errbuf : curl_easy_strerror(cc));
	} else if (x.fd >= 0 && fsync(x.fd) != 0) {
		rc = vm_err_errno(err, VM_ERR_IO, errno, "fsync %s", o->download_path);
	}
out:
	if (x.fd >= 0)
		close(x.fd);
	/* The handle first: it may still point at the list and the buffer. */
	curl_easy_cleanup(c);
	curl_slist_free_all(x.hdrs);
	if (x.body.len > 0)
		resp->body = buf_take(&x.body, &resp->len);
	buf_free(&x.body);
	return rc;
}

/* --- retries ------------------------------------------------------------------------ */

bool http_should_retry(int rc, long status)
{
	if (rc == -VM_ERR_IO)
		return true;
	if (rc != 0)
		return false; /* cancelled, oversized, local failure: trying again will not help */
	return status == 408 || status == 429 || (status >= 500 && status <= 599);
}

uint64_t http_backoff_ms(const struct http_retry *r, unsigned attempt, long retry_after_s,
                         uint32_t rnd)
{
	double initial = r->initial_delay_ms ? (double)r->initial_delay_ms : 1000.0;
	double max = r->max_delay_ms ? (double)r->max_delay_ms : 300000.0;
	double mult = r->multiplier >= 1.0 ? r->multiplier : 2.0;
	double d = initial;
	for (unsigned i = 1; i < attempt && d < max; i++)
		d *= mult;
	if (d > max)
		d = max;
	/* Full jitter: uniform in [0, d], so agents that failed together spread
	 * over the whole window instead of retrying in a herd. */
	d *= (double)rnd / 4294967295.0;
	if (retry_after_s > 0 && (double)retry_after_s * 1000.0 > d)
		d = (double)retry_after_s * 1000.0;
	if (d > max)
		d = max;
	return (uint64_t)d;
}

uint64_t http_backoff_next_ms(const struct http_retry *r, unsigned attempt, long retry_after_s)
{
	uint32_t rnd = 0;
	if (rand_bytes(&rnd, sizeof(rnd), NULL) != 0) /* jitter only: any spread will do */
		rnd = (uint32_t)time_mono_ms() * 2654435761u;
	return http_backoff_ms(r, attempt, retry_after_s, rnd);
}

static int default_sleep(void *ctx, uint64_t ms)
{
	(void)ctx;
	struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
	/* Relative and on CLOCK_MONOTONIC: a wall-clock jump cannot stretch it. */
	while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR)
		;
	return 0;
}
int http_request_retry(const struct http_opts *opts, const struct http_retry *r, const char *method,
                       const char *url, const char *const *headers, const void *body,
                       size_t body_len, struct http_resp *resp, struct vm_err *err)
{
	unsigned max = r != NULL && r->max_attempts ? r->max_attempts : 1;
	int (*sleep_fn)(void *, uint64_t) = r != NULL && r->sleep_fn ? r->sleep_fn : default_sleep;
	int rc = 0;
	for (unsigned attempt = 1;; attempt++) {
		rc = http_request(opts, method, url, headers, body, body_len, resp, err);
		if (attempt >= max || !http_should_retry(rc, resp->status))
			return rc;
		uint64_t delay = http_backoff_next_ms(r, attempt, resp->retry_after_s);
		http_resp_free(resp);
		if (sleep_fn(r->sleep_ctx, delay) != 0)
			return rc != 0
			           ? rc
			           : vm_err_set(err, VM_ERR_BUSY, "%s: retry cancelled", method);
		if (opts != NULL && opts->cancel != NULL && atomic_load(opts->cancel))
			return vm_err_set(err, VM_ERR_BUSY, "%s: cancelled", method);
	}
}
