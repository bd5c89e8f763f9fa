/* Unit tests for core/http against a tiny loopback server thread that answers
 * canned responses, one per connection. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/http.h"

#define MAX_ANSWERS 8

struct server {
	int fd;
	int port;
	const char *answers[MAX_ANSWERS];
	int n;
	int served;
	char last_request[4096];
	pthread_t thr;
};

static void *serve(void *arg)
{
	struct server *s = arg;
	for (int i = 0; i < s->n; i++) {
		int c = accept(s->fd, NULL, NULL);
		if (c < 0)
			break;
		size_t got = 0;
		/* read headers (and a small body) */
		for (;;) {
			ssize_t r =
			    read(c, s->last_request + got, sizeof(s->last_request) - 1 - got);
			if (r <= 0)
				break;
			got += (size_t)r;
			s->last_request[got] = '\0';
			char *end = strstr(s->last_request, "\r\n\r\n");
			if (end != NULL) {
				const char *cl = strcasestr(s->last_request, "content-length:");
				size_t want = cl ? (size_t)atoi(cl + 15) : 0;
				if (got >= (size_t)(end + 4 - s->last_request) + want)
					break;
			}
		}
		const char *a = s->answers[i];
		if (strcmp(a, "DROP") != 0) {
			ssize_t w = write(c, a, strlen(a));
			(void)w;
		}
		s->served++;
		close(c);
	}
	return NULL;
}

static void server_start(struct server *s)
{
	s->fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(s->fd >= 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(s->fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(s->fd, 8), 0);
	socklen_t len = sizeof(a);
	getsockname(s->fd, (struct sockaddr *)&a, &len);
	s->port = ntohs(a.sin_port);
	pthread_create(&s->thr, NULL, serve, s);
}

static void server_stop(struct server *s)
{
	pthread_join(s->thr, NULL);
	close(s->fd);
}

static void url_of(const struct server *s, const char *path, char *out, size_t cap)
{
	snprintf(out, cap, "http://127.0.0.1:%d%s", s->port, path);
}

static void test_http_post_sends_headers_and_body_and_reads_answer(void **state)
{
	(void)state;
	struct server s = {.n = 1,
	                   .answers = {"HTTP/1.1 202 Accepted\r\nContent-Length: 11\r\n"
	                               "Connection: close\r\n\r\n{\"ok\":true}"}};
	server_start(&s);
	char url[128];
	url_of(&s, "/v1/x", url, sizeof(url));
	const char *hdrs[] = {"Content-Type: application/json", "X-Test: 1", NULL};
	struct http_resp r;
	struct vm_err err = {0};
	int rc = http_request(NULL, "POST", url, hdrs, "{\"a\":1}", 7, &r, &err);
	server_stop(&s);
	assert_int_equal(rc, 0);
	assert_int_equal(r.status, 202);
	assert_string_equal(r.body, "{\"ok\":true}");
	assert_non_null(strstr(s.last_request, "POST /v1/x HTTP/1.1"));
	assert_non_null(strstr(s.last_request, "X-Test: 1"));
	assert_non_null(strstr(s.last_request, "{\"a\":1}"));
	http_resp_free(&r);
}

static void test_http_body_cap_is_an_error(void **state)
{
	(void)state;
	struct server s = {.n = 1,
	                   .answers = {"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n"
	                               "Connection: close\r\n\r\n01234567890123456789"}};
	server_start(&s);
	char url[128];
	url_of(&s, "/big", url, sizeof(url));
	struct http_opts o = {.max_body = 10};
	struct http_resp r;
	struct vm_err err = {0};
	int rc = http_request(&o, "GET", url, NULL, NULL, 0, &r, &err);
	server_stop(&s);
	assert_int_equal(rc, -VM_ERR_INVALID);
	assert_non_null(strstr(err.msg, "exceeds 10 bytes"));
	http_resp_free(&r);
}

static void test_http_connection_refused_is_io_error(void **state)
{
	(void)state;
	struct server s = {.n = 0};
	server_start(&s);
	server_stop(&s); /* closed: the port now refuses */
	char url[128];
	url_of(&s, "/x?token=secret", url, sizeof(url));
	struct http_resp r;
	struct vm_err err = {0};
	int rc = http_request(NULL, "GET", url, NULL, NULL, 0, &r, &err);
	assert_int_equal(rc, -VM_ERR_IO);
	assert_int_equal(r.status, 0);
	assert_null(strstr(err.msg, "secret"));
	assert_true(http_should_retry(rc, r.status));
	http_resp_free(&r);
}

static int counting_sleep(void *ctx, uint64_t ms)
{
	uint64_t *total = ctx;
	*total += ms;
	return 0;
}

static void test_http_retry_honours_retry_after_then_succeeds(void **state)
{
	(void)state;
	struct server s = {
	    .n = 3,
	    .answers = {"HTTP/1.1 429 Too Many\r\nRetry-After: 7\r\nContent-Length: 0\r\n"
	                "Connection: close\r\n\r\n",
	                "HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n"
	                "Connection: close\r\n\r\n",
	                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
	                "Connection: close\r\n\r\nok"}};
	server_start(&s);
	char url[128];
	url_of(&s, "/r", url, sizeof(url));
	uint64_t slept = 0;
	struct http_retry rt = {.max_attempts = 5,
	                        .initial_delay_ms = 10,
	                        .max_delay_ms = 60000,
	                        .multiplier = 2,
	                        .sleep_fn = counting_sleep,
	                        .sleep_ctx = &slept};
	struct http_resp r;
	struct vm_err err = {0};
	int rc = http_request_retry(NULL, &rt, "GET", url, NULL, NULL, 0, &r, &err);
	server_stop(&s);
	assert_int_equal(rc, 0);
	assert_int_equal(r.status, 200);
	assert_int_equal(s.served, 3);
	/* 7 s from Retry-After, then at most 20 ms (second step, full jitter) */
	assert_true(slept >= 7000 && slept <= 7000 + 20);
	http_resp_free(&r);
}

static void test_http_never_retries_plain_4xx(void **state)
{
	(void)state;
	struct server s = {.n = 1,
	                   .answers = {"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n"
	                               "Connection: close\r\n\r\n"}};
	server_start(&s);
	char url[128];
	url_of(&s, "/r", url, sizeof(url));
	uint64_t slept = 0;
	struct http_retry rt = {.max_attempts = 5, .sleep_fn = counting_sleep, .sleep_ctx = &slept};
	struct http_resp r;
	struct vm_err err = {0};
	int rc = http_request_retry(NULL, &rt, "GET", url, NULL, NULL, 0, &r, &err);
	server_stop(&s);
	assert_int_equal(rc, 0);
	assert_int_equal(r.status, 401);
	assert_int_equal(slept, 0);
	assert_false(http_should_retry(0, 404));
	assert_true(http_should_retry(0, 500));
	assert_true(http_should_retry(0, 429));
	http_resp_free(&r);
}

static void test_http_backoff_grows_caps_and_jitters(void **state)
{
	(void)state;
	/* Full jitter: uniform in [0, min(max, initial * 2^(n-1))]. */
	struct http_retry rt = {.initial_delay_ms = 1000, .max_delay_ms = 5000, .multiplier = 2};
	assert_int_equal(http_backoff_ms(&rt, 1, -1, 0xffffffffu), 1000);
	assert_int_equal(http_backoff_ms(&rt, 3, -1, 0xffffffffu), 4000);
	uint64_t half3 = http_backoff_ms(&rt, 3, -1, 0x7fffffffu);
	assert_true(half3 >= 1990 && half3 <= 2010);
	assert_int_equal(http_backoff_ms(&rt, 10, -1, 0xffffffffu), 5000);
	assert_int_equal(http_backoff_ms(&rt, 1, -1, 0), 0);
	assert_int_equal(http_backoff_ms(&rt, 1, 3, 0), 3000);
	assert_int_equal(http_backoff_ms(&rt, 1, 999, 0), 5000);
	for (unsigned n = 1; n < 40; n++)
		assert_true(http_backoff_next_ms(&rt, n, -1) <= 5000);
}

static void test_http_download_writes_file_only_on_success(void **state)
{
	(void)state;
	char dir[] = "/tmp/vma-test-http-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char path[128];
	snprintf(path, sizeof(path), "%s/blob", dir);
	struct server s = {.n = 2,
	                   .answers = {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
	                               "Connection: close\r\n\r\nhello",
	                               "HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n"
	                               "Connection: close\r\n\r\nnope"}};
	server_start(&s);
	char url[128];
	url_of(&s, "/f", url, sizeof(url));
	struct http_opts o = {.download_path = path};
	struct http_resp r;
	struct vm_err err = {0};
	assert_int_equal(http_request(&o, "GET", url, NULL, NULL, 0, &r, &err), 0);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.downloaded, 5);
	assert_null(r.body);
	char *data;
	size_t len;
	assert_int_equal(fs_read_file(path, 100, &data, &len, &err), 0);
	assert_string_equal(data, "hello");
	free(data);
	http_resp_free(&r);
	assert_int_equal(http_request(&o, "GET", url, NULL, NULL, 0, &r, &err), 0);
	assert_int_equal(r.status, 404);
	assert_string_equal(r.body, "nope");
	assert_int_equal(r.downloaded, 0);
	http_resp_free(&r);
	server_stop(&s);
	unlink(path);
	rmdir(dir);
}

static void write_mode(const char *path, const char *text, mode_t mode)
{
	unlink(path);
	assert_int_equal(fs_write_atomic(path, text, strlen(text), 0600, NULL), 0);
	assert_int_equal(chmod(path, mode), 0);
}

static void test_http_proxy_credentials_file_is_checked_and_sent(void **state)
{
	(void)state;
	char dir[] = "/tmp/vma-test-http-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char path[128], link_path[128];
	snprintf(path, sizeof(path), "%s/proxy.creds", dir);
	snprintf(link_path, sizeof(link_path), "%s/link", dir);
	struct vm_err err = {0};
	write_mode(path, "puser:Pw0rd-secret\n", 0600);
	assert_int_equal(http_proxy_credentials_check(path, &err), 0);
	/* readable by others, a symlink, two lines, empty: refused, content never shown */
	write_mode(path, "puser:Pw0rd-secret\n", 0644);
	assert_int_equal(http_proxy_credentials_check(path, &err), -VM_ERR_PERM);
	assert_non_null(strstr(err.msg, "chmod 600"));
	assert_null(strstr(err.msg, "Pw0rd"));
	write_mode(path, "puser:Pw0rd-secret\n", 0600);
	assert_int_equal(symlink(path, link_path), 0);
	assert_int_not_equal(http_proxy_credentials_check(link_path, &err), 0);
	write_mode(path, "puser:Pw0rd-secret\nsecond:line\n", 0600);
	assert_int_equal(http_proxy_credentials_check(path, &err), -VM_ERR_INVALID);
	assert_null(strstr(err.msg, "Pw0rd"));
	write_mode(path, "\n", 0600);
	assert_int_equal(http_proxy_credentials_check(path, &err), -VM_ERR_INVALID);

	/* through a proxy (our server plays it): Basic credentials from the file */
	write_mode(path, "puser:Pw0rd-secret\n", 0600);
	struct server s = {.n = 1,
	                   .answers = {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
	                               "Connection: close\r\n\r\nok"}};
	server_start(&s);
	char proxy[64];
	url_of(&s, "", proxy, sizeof(proxy));
	struct http_opts o = {.proxy = proxy, .proxy_credentials_file = path};
	struct http_resp r;
	assert_int_equal(
	    http_request(&o, "GET", "http://upstream.invalid/x", NULL, NULL, 0, &r, &err), 0);
	assert_int_equal(r.status, 200);
	/* base64("puser:Pw0rd-secret") */
	assert_non_null(
	    strstr(s.last_request, "Proxy-Authorization: Basic cHVzZXI6UHcwcmQtc2VjcmV0"));
	http_resp_free(&r);
	server_stop(&s);
	unlink(link_path);
	unlink(path);
	rmdir(dir);
}

/* A configured bundle wins; with none, SSL_CERT_FILE (when readable) is the
 * system choice, made once per process. */
static void test_http_ca_bundle_prefers_configured_then_ssl_cert_file(void **state)
{
	(void)state;
	char path[] = "/tmp/vma-ca-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(setenv("SSL_CERT_FILE", path, 1), 0);
	assert_string_equal(http_ca_bundle("/etc/custom-ca.pem"), "/etc/custom-ca.pem");
	const char *sys = http_ca_bundle("");
	assert_non_null(sys);
	assert_string_equal(sys, path);
	assert_string_equal(http_ca_bundle(NULL), path);
	unsetenv("SSL_CERT_FILE");
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    /* first: the system choice is made once, at the first request */
	    cmocka_unit_test(test_http_ca_bundle_prefers_configured_then_ssl_cert_file),
	    cmocka_unit_test(test_http_post_sends_headers_and_body_and_reads_answer),
	    cmocka_unit_test(test_http_body_cap_is_an_error),
	    cmocka_unit_test(test_http_connection_refused_is_io_error),
	    cmocka_unit_test(test_http_retry_honours_retry_after_then_succeeds),
	    cmocka_unit_test(test_http_never_retries_plain_4xx),
	    cmocka_unit_test(test_http_backoff_grows_caps_and_jitters),
	    cmocka_unit_test(test_http_download_writes_file_only_on_success),
	    cmocka_unit_test(test_http_proxy_credentials_file_is_checked_and_sent),
	};
	assert_int_equal(http_global_init(NULL), 0);
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	http_global_cleanup();
	return rc;
}
