/* Unit tests for the parsers that used to exist two or three times: hex
 * (core/codec), http(s) URLs (core/codec) and the forward address
 * (core/net). One rule each, the same for every caller. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdint.h>
#include <string.h>

#include "core/codec.h"
#include "core/net.h"

static void test_codec_hex_decode_takes_both_cases_and_refuses_the_rest(void **state)
{
	(void)state;
	uint8_t b[4];
	assert_int_equal(hex_decode("00fF7a", 6, b, sizeof(b)), 3);
	assert_int_equal(b[0], 0x00);
	assert_int_equal(b[1], 0xff);
	assert_int_equal(b[2], 0x7a);
	assert_int_equal(hex_decode("", 0, b, sizeof(b)), 0);
	assert_int_equal(hex_decode("abc", 3, b, sizeof(b)), -1);         /* odd */
	assert_int_equal(hex_decode("0g", 2, b, sizeof(b)), -1);          /* not hex */
	assert_int_equal(hex_decode("0\0", 2, b, sizeof(b)), -1);         /* NUL inside */
	assert_int_equal(hex_decode(" 1", 2, b, sizeof(b)), -1);          /* no spaces */
	assert_int_equal(hex_decode("0011223344", 10, b, sizeof(b)), -1); /* too long for out */
	char hex[9];
	hex_encode((const uint8_t *)"\x01\xab\xcd\xef", 4, hex);
	assert_int_equal(hex_decode(hex, 8, b, sizeof(b)), 4);
	assert_memory_equal(b, "\x01\xab\xcd\xef", 4);
}

static void test_codec_url_is_http_needs_scheme_host_and_clean_bytes(void **state)
{
	(void)state;
	static const char *const good[] = {"http://a", "https://cp.example.com/v1",
	                                   "http://[::1]:8080/x?y=1", "https://user@h/"};
	static const char *const bad[] = {
	    "",          "http://",       "https://",       "http:///path",      "ftp://h/",
	    "HTTP://h/", "https://h/a b", "https://h/\x7f", "https://h/\n",      "//h/",
	    "https:/h/", "https://?q",    "https://#f",     "file:///etc/passwd"};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		if (!url_is_http(good[i]))
			fail_msg("refused %s", good[i]);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (url_is_http(bad[i]))
			fail_msg("accepted \"%s\"", bad[i]);
	char longer[2100] = "https://h/";
	memset(longer + 10, 'a', sizeof(longer) - 11);
	assert_false(url_is_http(longer));
}

static void test_net_hostport_numeric_ip_and_port_only(void **state)
{
	(void)state;
	char host[64];
	int port = 0;
	assert_int_equal(net_parse_hostport("127.0.0.1:9999", host, sizeof(host), &port, NULL), 0);
	assert_string_equal(host, "127.0.0.1");
	assert_int_equal(port, 9999);
	assert_int_equal(net_parse_hostport("[::1]:8080", host, sizeof(host), &port, NULL), 0);
	assert_string_equal(host, "::1");
	assert_int_equal(port, 8080);
	static const char *const bad[] = {
	    "localhost:80", "127.0.0.1",  "127.0.0.1:0",     "127.0.0.1:65536",
	    ":80",          "127.0.0.1:", "127.0.0.1: 80",   "127.0.0.1:+80",
	    "127.0.0.1:8o", "[::1:80",    "::1:80",          "[127.0.0.1]:80",
	    "[]:80",        "1.2.3:80",   "127.0.0.1:080000"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct vm_err err = {0};
		if (net_parse_hostport(bad[i], host, sizeof(host), &port, &err) == 0)
			fail_msg("accepted \"%s\" as %s port %d", bad[i], host, port);
		assert_non_null(strstr(err.msg, "expected IP:PORT"));
	}
	/* the host must fit the caller's buffer, never be cut */
	char small[8];
	assert_int_not_equal(
	    net_parse_hostport("[1:2:3:4:5:6:7:8]:1", small, sizeof(small), &port, NULL), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_codec_hex_decode_takes_both_cases_and_refuses_the_rest),
	    cmocka_unit_test(test_codec_url_is_http_needs_scheme_host_and_clean_bytes),
	    cmocka_unit_test(test_net_hostport_numeric_ip_and_port_only),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
