/* Unit tests for core/config: defaults, every error class with its message,
 * environment overrides, durations and sizes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "core/config.h"

static char *const no_env[] = {NULL};

static int load(struct cfg *c, const char *yaml, char *const *env, struct vm_err *err)
{
	return cfg_load_buffer(c, "config.yaml", yaml, strlen(yaml), env ? env : no_env, err);
}

static void expect_error(const char *yaml, const char *message)
{
	struct cfg *c = malloc(sizeof(*c));
	struct vm_err err = {0};
	assert_int_not_equal(load(c, yaml, NULL, &err), 0);
	assert_int_equal(err.code, VM_ERR_INVALID);
	if (strstr(err.msg, message) == NULL)
		fail_msg("expected \"%s\" in \"%s\"", message, err.msg);
	free(c);
}

static void test_config_defaults_match_seed(void **state)
{
	(void)state;
	struct cfg *c = malloc(sizeof(*c));
	struct vm_err err = {0};
	assert_int_equal(cfg_load(c, NULL, no_env, &err), 0);
	assert_string_equal(c->webhook.listen_addr, "127.0.0.1");
	assert_int_equal(c->webhook.port, 9999);
	assert_false(c->webhook.tls_enabled);
	assert_int_equal(c->probe.default_timeout_ms, 300000);
	assert_int_equal(c->probe.max_concurrent, 5);
	assert_int_equal(c->health.check_interval_ms, 30000);
	assert_int_equal(c->health.report_interval_ms, 300000);
	assert_int_equal(c->piko.reconnect.initial_delay_ms, 1000);
	assert_int_equal(c->piko.reconnect.max_delay_ms, 60000);
	assert_true(c->piko.reconnect.multiplier == 2.0);
	assert_int_equal(c->log.max_size, 10 * 1024 * 1024);
	assert_int_equal(c->log.max_files, 5);
	assert_string_equal(c->piko.server_url, "");
	assert_string_equal(c->source, "built-in defaults");
	/* built-in defaults never need root */
	assert_true(strncmp(c->agent.state_dir, "/var/lib", 8) != 0);
	assert_non_null(strstr(c->probe.work_dir, "/work"));
	free(c);
}

static void test_config_full_file_parses(void **state)
{
	(void)state;
	const char *yaml = "agent:\n"
	                   "  id: \"server-001\"\n"
	                   "  tenant_id: acme\n"
	                   "  control_plane_url: https://cp.example.com\n"
	                   "  state_dir: /tmp/vma-state\n"
	                   "piko:\n"
	                   "  server_url: https://piko.example.com\n"
	                   "  endpoint: tenant-acme-server-001\n"
	                   "  reconnect:\n"
	                   "    initial_delay: 500ms\n"
	                   "    max_delay: 2m\n"
	                   "    multiplier: 1.5\n"
	                   "webhook:\n"
	                   "  listen_addr: \"::1\"\n"
	                   "  port: 9100\n"
	                   "  max_body: 64KiB\n"
	                   "probe:\n"
	                   "  default_timeout: 60s\n"
	                   "  max_concurrent: 2\n"
	                   "health:\n"
	                   "  check_interval: 10s\n"
	                   "log:\n"
	                   "  level: debug\n"
	                   "  format: json\n"
	                   "  max_size: 1MiB\n"
	                   "  max_files: 3\n";
	struct cfg *c = malloc(sizeof(*c));
	struct vm_err err = {0};
	assert_int_equal(load(c, yaml, NULL, &err), 0);
	assert_string_equal(c->agent.id, "server-001");
	assert_string_equal(c->agent.tenant_id, "acme");
	assert_string_equal(c->piko.endpoint, "tenant-acme-server-001");
	assert_int_equal(c->piko.reconnect.initial_delay_ms, 500);
	assert_int_equal(c->piko.reconnect.max_delay_ms, 120000);
	assert_true(c->piko.reconnect.multiplier == 1.5);
	assert_string_equal(c->webhook.listen_addr, "::1");
	assert_int_equal(c->webhook.port, 9100);
	assert_int_equal(c->webhook.max_body, 65536);
	assert_int_equal(c->probe.default_timeout_ms, 60000);
	assert_int_equal(c->log.level, 0);
	assert_int_equal(c->log.format, 1);
	assert_int_equal(c->log.max_size, 1048576);
	assert_string_equal(c->probe.work_dir, "/tmp/vma-state/work");
	assert_string_equal(c->source, "config.yaml");
	free(c);
}

static void test_config_error_bad_port_names_line_column_key(void **state)
{
	(void)state;
	expect_error("agent:\n  id: x\nwebhook:\n  port: 99999\n",
	             "config.yaml:4:9: webhook.port: expected integer 1-65535");
	expect_error("webhook:\n  port: abc\n", "config.yaml:2:9: webhook.port: expected integer");
}

static void test_config_error_unknown_key_suggests(void **state)
{
	(void)state;
	expect_error("webhook:\n  prot: 9100\n",
	             "config.yaml:2:3: webhook.prot: unknown key (did you mean webhook.port?)");
	expect_error("webhok:\n  port: 9100\n", "webhok: unknown key (did you mean webhook?)");
	expect_error("zzzzzzzzzz: 1\n", "zzzzzzzzzz: unknown key");
}

static void test_config_error_types(void **state)
{
	(void)state;
	expect_error("webhook:\n  tls_enabled: maybe\n",
	             "2:16: webhook.tls_enabled: expected true or false");
	expect_error("probe:\n  default_timeout: 5 minutes\n",
	             "probe.default_timeout: expected a duration");
	expect_error("log:\n  max_size: lots\n", "log.max_size: expected a size");
	expect_error("log:\n  level: loud\n", "log.level: expected one of debug|info|warn|error");
	expect_error("piko:\n  reconnect:\n    multiplier: 0.5\n",
	             "3:17: piko.reconnect.multiplier: expected a number");
	expect_error("webhook: 5\n", "1:10: webhook: expected a mapping");
	expect_error("webhook:\n  port: [1, 2]\n",
	             "webhook.port: expected a single value, not a list");
	expect_error("- a\n- b\n", "1:1: (top level): expected a mapping");
}

static void test_config_error_yaml_syntax_has_position(void **state)
{
	(void)state;
	expect_error("webhook:\n  port: 1\n bad: [\n", "config.yaml:");
	expect_error("webhook:\n  port: \"unterminated\n", "config.yaml:");
}

static void test_config_error_duplicate_key(void **state)
{
	(void)state;
	expect_error("webhook:\n  port: 1\n  port: 2\n",
	             "3:3: webhook.port: duplicate key (first set on line 2)");
}

static void test_config_error_endpoint_with_slash_suggests_form(void **state)
{
	(void)state;
	expect_error(
	    "piko:\n  server_url: https://p\n  endpoint: tenant-acme/server-001\n",
	    "3:13: piko.endpoint: \"tenant-acme/server-001\" is not a single path segment");
	expect_error("piko:\n  server_url: https://p\n  endpoint: tenant-acme/server-001\n",
	             "use e.g. \"tenant-acme-server-001\"");
}

/* The URL and forward-address rules are core/codec's and core/net's, the
 * same ones install, upgrade and the tunnel apply: no host, spaces or an
 * unbracketed IPv6 address used to pass here and fail later elsewhere. */
static void test_config_urls_and_forward_addr_follow_the_one_rule(void **state)
{
	(void)state;
	expect_error("agent:\n  control_plane_url: \"https://\"\n",
	             "agent.control_plane_url: expected an http");
	expect_error("agent:\n  control_plane_url: \"https://cp/a b\"\n",
	             "agent.control_plane_url: expected an http");
	expect_error("piko:\n  server_url: \"http://\"\n  endpoint: a\n",
	             "piko.server_url: expected an http");
	expect_error("piko:\n  server_url: https://p\n  endpoint: a\n"
	             "  fallback_urls: [\"https://q\", \"ftp://r\"]\n",
	             "piko.fallback_urls: entry 1: expected an http");
	expect_error("piko:\n  fallback_urls: [\"https://q\"]\n",
	             "piko.fallback_urls: needs piko.server_url");
	expect_error("piko:\n  forward_addr: \"::1:8080\"\n",
	             "piko.forward_addr: expected IP:PORT");
	expect_error("piko:\n  forward_addr: \"127.0.0.1:+80\"\n",
	             "piko.forward_addr: expected IP:PORT");
}

/* Every cap up to the whole dump: nothing written past cap, -1 when cut. */
static void test_config_dump_never_writes_past_cap(void **state)
{
	(void)state;
	struct cfg *c = malloc(sizeof(*c));
	struct vm_err err = {0};
	assert_int_equal(load(c, "piko:\n  token: x\n", NULL, &err), 0);
	static char full[65536];
	assert_int_equal(cfg_dump(c, full, sizeof(full)), 0);
	size_t n = strlen(full);
	static char mem[65536 + 64];
	for (size_t cap = 1; cap <= n + 1; cap += cap < 400 ? 1 : 97) {
		memset(mem, 0x5a, cap + 64);
		int rc = cfg_dump(c, mem, cap);
		for (size_t i = cap; i < cap + 64; i++)
			if ((unsigned char)mem[i] != 0x5a)
				fail_msg("cap %zu: byte %zu written", cap, i);
		assert_int_equal(rc, cap > n ? 0 : -1);
		assert_true(memchr(mem, '\0', cap) != NULL);
	}
	free(c);
}

static void test_config_error_cross_field(void **state)
{
	(void)state;
	expect_error(
	    "webhook:\n  tls_enabled: true\n",
	    "config.yaml: webhook.tls_cert_file: required when webhook.tls_enabled is true");
	expect_error("piko:\n  server_url: ftp://x\n  endpoint: a\n",
	             "2:15: piko.server_url: expected an http");
	expect_error("piko:\n  server_url: https://x\n",
	             "piko.endpoint: required when piko.server_url is set");
	expect_error("piko:\n  reconnect:\n    initial_delay: 2m\n    max_delay: 1m\n",
	             "3:20: piko.reconnect.initial_delay: must not exceed max_delay");
	expect_error("piko:\n  token: a\n  token_file: /x\n",
	             "piko.token and piko.token_file are both set");
	expect_error("piko:\n  forward_addr: localhost:80\n",
	             "2:17: piko.forward_addr: expected IP:PORT");
	expect_error("piko:\n  forward_addr: 127.0.0.1\n", "piko.forward_addr: expected IP:PORT");
	expect_error("piko:\n  forward_addr: 127.0.0.1:0\n", "piko.forward_addr: expected IP:PORT");
	struct cfg *c = malloc(sizeof(*c));
	struct vm_err err = {0};
	assert_int_equal(load(c, "piko:\n  forward_addr: \"[::1]:8080\"\n", NULL, &err), 0);
	assert_string_equal(c->piko.forward_addr, "[::1]:8080");
	assert_int_equal(c->piko.max_streams, 1024);
	assert_int_equal(c->piko.keepalive_interval_ms, 30000);
	assert_int_equal(c->piko.keepalive_timeout_ms, 10000);
	assert_int_equal(c->piko.stop_grace_ms, 10000);
	free(c);
}

static void test_config_error_value_too_long(void **state)
{
	(void)state;
	char yaml[400];
	char longid[300];
	memset(longid, 'a', sizeof(longid) - 1);
	longid[sizeof(longid) - 1] = '\0';
	snprintf(yaml, sizeof(yaml), "agent:\n  id: %s\n", longid);
	expect_error(yaml, "agent.id: value too long (at most 127 bytes)");
}

static void test_config_empty_file_and_empty_section_keep_defaults(void **state)
{
	(void)state;
	struct cfg *c = malloc(sizeof(*c));
	struct vm_err err = {0};
	assert_int_equal(load(c, "", NULL, &err), 0);
	assert_int_equal(c->webhook.port, 9999);
	assert_int_equal(load(c, "health:\nwebhook:\n  port:\n", NULL, &err), 0);
	assert_int_equal(c->webhook.port, 9999);
	free(c);
}

static void test_config_env_overrides_file(void **state)
{
	(void)state;
	char *env[] = {"VM_AGENT_WEBHOOK_PORT=9100", "VM_AGENT_PIKO_RECONNECT_MAX_DELAY=5m",
	               "VM_AGENT_LOG_LEVEL=warn", "UNRELATED=1", NULL};
	struct cfg *c = malloc(sizeof(*c));
	struct vm_err err = {0};
	assert_int_equal(load(c, "webhook:\n  port: 9200\n", env, &err), 0);
	assert_int_equal(c->webhook.port, 9100);
	assert_int_equal(c->piko.reconnect.max_delay_ms, 300000);
	assert_int_equal(c->log.level, 2);
	free(c);
}

static void test_config_env_error_names_variable(void **state)
{
	(void)state;
	char *env[] = {"VM_AGENT_WEBHOOK_PORT=0", NULL};
	struct cfg *c = malloc(sizeof(*c));
	struct vm_err err = {0};
	assert_int_not_equal(load(c, "", env, &err), 0);
	assert_string_equal(
	    err.msg, "environment VM_AGENT_WEBHOOK_PORT: webhook.port: expected integer 1-65535");
	char *env2[] = {"VM_AGENT_WEBHOOK_TLS_ENABLED=true", NULL};
	assert_int_not_equal(load(c, "", env2, &err), 0);
	assert_non_null(strstr(err.msg, "webhook.tls_cert_file: required"));
	char *env3[] = {"VM_AGENT_PIKO_ENDPOINT=a/b", NULL};
	assert_int_not_equal(load(c, "", env3, &err), 0);
	assert_non_null(strstr(err.msg, "environment VM_AGENT_PIKO_ENDPOINT: piko.endpoint:"));
	free(c);
}

static void test_config_missing_file_is_notfound(void **state)
{
	(void)state;
	struct cfg *c = malloc(sizeof(*c));
	struct vm_err err = {0};
	assert_int_not_equal(cfg_load(c, "/nonexistent/vm-agent.yaml", no_env, &err), 0);
	assert_int_equal(err.code, VM_ERR_NOTFOUND);
	assert_non_null(strstr(err.msg, "/nonexistent/vm-agent.yaml"));
	free(c);
}

static void test_config_durations(void **state)
{
	(void)state;
	static const struct {
		const char *in;
		long long ms;
	} ok[] = {
	    {"500ms", 500},   {"1s", 1000},    {"5m", 300000}, {"300s", 300000}, {"2h", 7200000},
	    {"1d", 86400000}, {"300", 300000}, {"1.5s", 1500}, {"0s", 0},
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		uint64_t ms = 1;
		assert_int_equal(cfg_parse_duration(ok[i].in, &ms), 0);
		assert_int_equal(ms, ok[i].ms);
	}
	static const char *const bad[] = {"",        "s",   "-1s", "1 s", "1x",
	                                  "1.0005s", "nan", "inf", " 1s", "1e30s"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint64_t ms;
		if (cfg_parse_duration(bad[i], &ms) == 0)
			fail_msg("duration \"%s\" should be rejected", bad[i]);
	}
}

static void test_config_sizes(void **state)
{
	(void)state;
	static const struct {
		const char *in;
		long long bytes;
	} ok[] = {
	    {"10MiB", 10485760}, {"512KiB", 524288},  {"1GiB", 1073741824}, {"100KB", 100000},
	    {"4096", 4096},      {"1.5MiB", 1572864}, {"2M", 2097152},
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		uint64_t b = 0;
		assert_int_equal(cfg_parse_size(ok[i].in, &b), 0);
		assert_int_equal(b, ok[i].bytes);
	}
	static const char *const bad[] = {"", "MiB", "-1", "10 MiB", "10mib", "1.3B"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint64_t b;
		if (cfg_parse_size(bad[i], &b) == 0)
			fail_msg("size \"%s\" should be rejected", bad[i]);
	}
}

static void test_config_dump_redacts_token(void **state)
{
	(void)state;
	struct cfg *c = malloc(sizeof(*c));
	struct vm_err err = {0};
	assert_int_equal(load(c, "piko:\n  token: supersecretvalue\n", NULL, &err), 0);
	assert_string_equal(c->piko.token, "supersecretvalue");
	char buf[16384];
	assert_int_equal(cfg_dump(c, buf, sizeof(buf)), 0);
	assert_null(strstr(buf, "supersecretvalue"));
	assert_non_null(strstr(buf, "token: \"[REDACTED]\""));
	assert_non_null(strstr(buf, "webhook:\n  listen_addr: \"127.0.0.1\"\n  port: 9999\n"));
	assert_non_null(strstr(buf, "  reconnect:\n    initial_delay: 1000ms\n"));
	free(c);
}

static void test_config_list_from_yaml_sequence_and_env(void **state)
{
	(void)state;
	struct cfg *c = malloc(sizeof(*c));
	struct vm_err err = {0};
	const char *yaml =
	    "agent:\n  id: a\n  tenant_id: t\n"
	    "auth:\n  issuer: https://cp\n  jwt_keys:\n    - /k/a.pem\n    - /k/b.pem\n"
	    "probe:\n  allow: [/bin/*, /usr/bin/true]\n";
	assert_int_equal(load(c, yaml, NULL, &err), 0);
	assert_int_equal(c->auth.jwt_keys.count, 2);
	assert_string_equal(c->auth.jwt_keys.items[1], "/k/b.pem");
	assert_int_equal(c->probe.allow.count, 2);
	assert_string_equal(c->probe.allow.items[0], "/bin/*");
	char *env[] = {"VM_AGENT_PROBE_ALLOW= /bin/a , /bin/b", NULL};
	assert_int_equal(load(c, yaml, env, &err), 0);
	assert_int_equal(c->probe.allow.count, 2);
	assert_string_equal(c->probe.allow.items[0], "/bin/a");
	assert_string_equal(c->probe.allow.items[1], "/bin/b");
	/* a scalar in the file is read like the environment */
	assert_int_equal(load(c, "probe:\n  allow: /bin/x\n", NULL, &err), 0);
	assert_int_equal(c->probe.allow.count, 1);
	assert_int_equal(load(c, "probe:\n  allow:\n", NULL, &err), 0);
	assert_int_equal(c->probe.allow.count, 0);
	char buf[65536];
	assert_int_equal(load(c, yaml, NULL, &err), 0);
	assert_int_equal(cfg_dump(c, buf, sizeof(buf)), 0);
	assert_non_null(strstr(buf, "jwt_keys: [\"/k/a.pem\", \"/k/b.pem\"]"));
	free(c);
}

static void test_config_list_errors(void **state)
{
	(void)state;
	expect_error("probe:\n  allow:\n    - a\n    - [b]\n",
	             "config.yaml:4:7: probe.allow: entry 1: expected a string, not a list");
	expect_error("probe:\n  allow:\n    - a\n    - \"\"\n",
	             "probe.allow: entry 1: must not be empty");
	expect_error("probe:\n  allow: {a: b}\n",
	             "probe.allow: expected a list of strings, not a mapping");
	expect_error("probe:\n  max_concurrent: [1]\n", "expected a single value, not a list");
	char yaml[4096] = "probe:\n  allow:\n";
	for (int i = 0; i < CFG_LIST_MAX + 1; i++)
		strcat(yaml, "    - x\n");
	expect_error(yaml, "probe.allow: too many entries (at most 16)");
	char big[1024] = "probe:\n  allow:\n    - ";
	memset(big + strlen(big), 'x', 600);
	strcat(big, "\n");
	expect_error(big, "entry 0: too long");
	expect_error("auth:\n  jwt_keys: [/k.pem]\n", "auth.issuer: required when auth.jwt_keys");
	expect_error("auth:\n  jwt_keys: [/k.pem]\n  issuer: x\n", "agent.id and agent.tenant_id");

	struct cfg *c = malloc(sizeof(*c));
	struct vm_err err = {0};
	char *env1[] = {"VM_AGENT_PROBE_ALLOW=a,,b", NULL};
	assert_int_not_equal(load(c, "", env1, &err), 0);
	assert_non_null(
	    strstr(err.msg, "environment VM_AGENT_PROBE_ALLOW: probe.allow: expected a list"));
	char *env2[] = {"VM_AGENT_PROBE_ALLOW=a,", NULL};
	assert_int_not_equal(load(c, "", env2, &err), 0);
	free(c);
}

static void test_config_auth_and_probe_defaults(void **state)
{
	(void)state;
	struct cfg *c = malloc(sizeof(*c));
	struct vm_err err = {0};
	assert_int_equal(load(c, "agent:\n  state_dir: /tmp/s\n", NULL, &err), 0);
	assert_string_equal(c->auth.audit_file, "/tmp/s/audit.log");
	assert_int_equal(c->auth.jwt_keys.count, 0);
	assert_int_equal(c->probe.output_cap, 1024 * 1024);
	assert_int_equal(c->probe.queue_size, 64);
	assert_int_equal(c->probe.allow.count, 0);
	free(c);
}

static void expect_redacted(const char *url, const char *want)
{
	char out[256];
	url_redact(url, out, sizeof(out));
	if (strcmp(out, want) != 0)
		fail_msg("url_redact(\"%s\") = \"%s\", want \"%s\"", url, out, want);
}

static void test_config_url_redact_edge_cases(void **state)
{
	(void)state;
	expect_redacted("http://user:pass@proxy:3128/", "http://user:***@proxy:3128/");
	expect_redacted("https://host/path", "https://host/path");
	expect_redacted("", "");
	/* no scheme: the authority starts at the beginning */
	expect_redacted("user:pass@proxy:3128", "user:***@proxy:3128");
	expect_redacted("proxy:3128", "proxy:3128");
	/* '@' in the path, query or fragment is not userinfo */
	expect_redacted("http://host/a@b:c", "http://host/a@b:c");
	expect_redacted("http://host?x=u:p@y", "http://host?x=u:p@y");
	expect_redacted("http://host#u:p@y", "http://host#u:p@y");
	expect_redacted("http://u:p@host/a@b", "http://u:***@host/a@b");
	/* IPv6 hosts: their colons are not a password separator */
	expect_redacted("http://[::1]:9/x", "http://[::1]:9/x");
	expect_redacted("http://u:p@[::1]:9", "http://u:***@[::1]:9");
	expect_redacted("socks5h://u:p@[2001:db8::1]", "socks5h://u:***@[2001:db8::1]");
	/* percent-encoding stays encoded; an unencoded '@' in the password: last '@' wins */
	expect_redacted("http://us%40er:p%3Ass@h", "http://us%40er:***@h");
	expect_redacted("http://u:p@ss@h/", "http://u:***@h/");
	/* a user alone is often a token */
	expect_redacted("https://ghp_token@h/", "https://***@h/");
	expect_redacted("http://:pw@h", "http://:***@h");
	/* a cut output never holds any part of the password */
	char small[12];
	url_redact("http://u:secretpw@host", small, sizeof(small));
	assert_null(strstr(small, "sec"));
	assert_string_equal(url_shown("http://a:b@c").s, "http://a:***@c");
	/* shown URLs lose their query and fragment: a presigned URL's token is there */
	assert_string_equal(url_shown("https://u:p@h/p?X-Amz-Signature=S&a=b#f").s,
	                    "https://u:***@h/p");
	assert_string_equal(url_shown("https://h#frag").s, "https://h");
	assert_string_equal(url_redact(NULL, small, sizeof(small)), "");
}

static void test_config_dump_redacts_url_passwords(void **state)
{
	(void)state;
	struct cfg *c = malloc(sizeof(*c));
	struct vm_err err = {0};
	assert_int_equal(load(c,
	                      "agent:\n  proxy_url: http://u:Secret1@p:3128\n"
	                      "  control_plane_url: https://cp:Secret2@cp.example\n"
	                      "piko:\n  proxy_url: http://v:Secret3@[::1]:8080\n"
	                      "  server_url: https://w:Secret4@piko.example\n  endpoint: e\n",
	                      NULL, &err),
	                 0);
	char *buf = malloc(256 * 1024);
	assert_int_equal(cfg_dump(c, buf, 256 * 1024), 0);
	assert_null(strstr(buf, "Secret"));
	/* a scheme libcurl refuses is refused first: its message would quote the URL */
	expect_error("piko:\n  proxy_url: ftp://u:Secret5@h\n",
	             "piko.proxy_url: expected an http://");
	assert_non_null(strstr(buf, "proxy_url: \"http://u:***@p:3128\""));
	assert_non_null(strstr(buf, "proxy_url: \"http://v:***@[::1]:8080\""));
	assert_non_null(strstr(buf, "server_url: \"https://w:***@piko.example\""));
	/* the loaded value itself is intact: only what is shown is redacted */
	assert_string_equal(c->agent.proxy_url, "http://u:Secret1@p:3128");
	free(buf);
	free(c);
}

static size_t key_index(const char *name)
{
	for (size_t i = 0; i < cfg_key_count(); i++)
		if (strcmp(cfg_key_name(i), name) == 0)
			return i;
	fail_msg("no key %s", name);
	return 0;
}

static void test_config_key_apply_live_or_restart(void **state)
{
	(void)state;
	const char *live[] = {"probe.allow",      "probe.default_timeout",
	                      "log.level",        "webhook.port",
	                      "piko.server_url",  "health.check_interval",
	                      "upgrade.max_size", "agent.proxy_credentials_file"};
	const char *restart[] = {
	    "probe.max_concurrent", "probe.queue_size",  "probe.work_dir", "probe.output_cap",
	    "agent.state_dir",      "agent.runtime_dir", "agent.id",       "health.proc_root"};
	for (size_t i = 0; i < sizeof(live) / sizeof(live[0]); i++)
		if (cfg_key_apply(key_index(live[i])) != CFG_APPLY_LIVE)
			fail_msg("%s should apply live", live[i]);
	for (size_t i = 0; i < sizeof(restart) / sizeof(restart[0]); i++)
		if (cfg_key_apply(key_index(restart[i])) != CFG_APPLY_RESTART)
			fail_msg("%s should need a restart", restart[i]);
	assert_int_equal(cfg_key_apply(cfg_key_count()), CFG_APPLY_RESTART);
}

static void test_config_key_differs_and_copy(void **state)
{
	(void)state;
	struct cfg *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b));
	struct vm_err err = {0};
	assert_int_equal(
	    load(a, "probe:\n  allow: [\"/bin/a\"]\n  max_concurrent: 3\n", NULL, &err), 0);
	assert_int_equal(
	    load(b, "probe:\n  allow: [\"/bin/b\"]\n  max_concurrent: 3\n", NULL, &err), 0);
	size_t allow = key_index("probe.allow"), mc = key_index("probe.max_concurrent");
	assert_true(cfg_key_differs(a, b, allow));
	assert_false(cfg_key_differs(a, b, mc));
	/* bytes after a string's NUL are not a difference */
	snprintf(b->agent.id, sizeof(b->agent.id), "%s", a->agent.id);
	b->agent.id[sizeof(b->agent.id) - 1] = 'x';
	assert_false(cfg_key_differs(a, b, key_index("agent.id")));
	cfg_key_copy(b, a, allow);
	assert_false(cfg_key_differs(a, b, allow));
	assert_string_equal(b->probe.allow.items[0], "/bin/a");
	free(a);
	free(b);
}

/* --- editing: the same walker as the loader, on the file's text ---------------------- */

static struct cfg_doc *doc_of(const char *text)
{
	struct cfg_doc *d = NULL;
	struct vm_err err = {0};
	if (cfg_doc_parse(&d, "config.yaml", text, strlen(text), &err) != 0)
		fail_msg("cfg_doc_parse: %s", err.msg);
	return d;
}

static void test_config_tilde_only_file_same_rule_everywhere(void **state)
{
	(void)state;
	static const char *const empty_docs[] = {"~\n", "null\n", "", "# only a comment\n",
	                                         "---\n"};
	struct cfg *c = malloc(sizeof(*c));
	struct vm_err err = {0};
	for (size_t i = 0; i < sizeof(empty_docs) / sizeof(empty_docs[0]); i++) {
		assert_int_equal(load(c, empty_docs[i], NULL, &err), 0);
		struct cfg_doc *d = doc_of(empty_docs[i]);
		assert_int_equal(cfg_doc_set(d, "agent.id", "a-1", &err), 0);
		const char *t = cfg_doc_text(d, NULL);
		if (load(c, t, NULL, &err) != 0)
			fail_msg("\"%s\" edited to \"%s\": %s", empty_docs[i], t, err.msg);
		assert_string_equal(c->agent.id, "a-1");
		cfg_doc_free(d);
	}
	/* what the loader refuses, the editor refuses, with the same words */
	static const char *const bad[] = {"- a\n", "agent: [1]\n", "nosuch:\n  key: 1\n"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct vm_err le = {0}, ee = {0};
		struct cfg_doc *d = NULL;
		assert_int_not_equal(load(c, bad[i], NULL, &le), 0);
		assert_int_not_equal(cfg_doc_parse(&d, "config.yaml", bad[i], strlen(bad[i]), &ee),
		                     0);
		assert_null(d);
		assert_string_equal(le.msg, ee.msg);
	}
	free(c);
}

static void test_config_set_keeps_comments_and_order(void **state)
{
	(void)state;
	static const char text[] = "# top comment\n"
	                           "webhook:\n"
	                           "  port: 9100 # the port\n"
	                           "  listen_addr: 127.0.0.1\n"
	                           "\n"
	                           "agent: # who we are\n"
	                           "  id: a1\n"
	                           "  # tenant later\n"
	                           "piko:\n"
	                           "  reconnect: {max_delay: 30s}\n"
	                           "health:\n"
	                           "log: ~\n";
	struct cfg_doc *d = doc_of(text);
	struct vm_err err = {0};
	assert_int_equal(cfg_doc_set(d, "webhook.port", "9200", &err), 0);
	assert_int_equal(cfg_doc_set(d, "agent.tenant_id", "te\"n\\ant", &err), 0);
	assert_int_equal(cfg_doc_set(d, "piko.reconnect.initial_delay", "2s", &err), 0);
	assert_int_equal(cfg_doc_set(d, "piko.endpoint", "ep-1", &err), 0);
	assert_int_equal(cfg_doc_set(d, "health.check_interval", "45s", &err), 0);
	assert_int_equal(cfg_doc_set(d, "log.level", "debug", &err), 0);
	assert_int_equal(cfg_doc_set(d, "upgrade.max_size", "1GiB", &err), 0);
	assert_int_equal(cfg_doc_unset(d, "webhook.listen_addr", &err), 0);
	assert_int_equal(cfg_doc_unset(d, "probe.allow", &err), 0); /* not there: no-op */
	assert_string_equal(cfg_doc_text(d, NULL),
	                    "# top comment\n"
	                    "webhook:\n"
	                    "  port: \"9200\" # the port\n"
	                    "\n"
	                    "agent: # who we are\n"
	                    "  id: a1\n"
	                    "  tenant_id: \"te\\\"n\\\\ant\"\n"
	                    "  # tenant later\n"
	                    "piko:\n"
	                    "  reconnect: {max_delay: 30s, initial_delay: \"2s\"}\n"
	                    "  endpoint: \"ep-1\"\n"
	                    "health:\n"
	                    "  check_interval: \"45s\"\n"
	                    "log:\n"
	                    "  level: \"debug\"\n"
	                    "upgrade:\n"
	                    "  max_size: \"1GiB\"\n");
	assert_true(cfg_doc_changed(d));
	assert_int_equal(cfg_doc_validate(d, &err), 0);
	assert_string_equal(cfg_doc_values(d)->agent.tenant_id, "te\"n\\ant");
	assert_int_equal(cfg_doc_values(d)->webhook.port, 9200);
	assert_true(cfg_doc_has(d, "piko.reconnect.initial_delay"));
	assert_false(cfg_doc_has(d, "webhook.listen_addr"));
	cfg_doc_free(d);

	/* setting a key to the value it has changes nothing, whatever its style */
	d = doc_of("webhook:\n  port: 9100\n");
	assert_int_equal(cfg_doc_set(d, "webhook.port", "9100", &err), 0);
	assert_false(cfg_doc_changed(d));
	cfg_doc_free(d);
}

static void test_config_set_list_value_is_a_sequence(void **state)
{
	(void)state;
	struct cfg_doc *d =
	    doc_of("probe:\n  allow:\n    - /bin/a\n    - /bin/b\n  queue_size: 9\n");
	struct vm_err err = {0};
	assert_int_equal(cfg_doc_set(d, "probe.allow", "/bin/c, /bin/d", &err), 0);
	assert_string_equal(cfg_doc_text(d, NULL),
	                    "probe:\n  allow: [\"/bin/c\", \"/bin/d\"]\n  queue_size: 9\n");
	assert_int_equal(cfg_doc_set(d, "auth.jwt_keys", "/k/a.pem", &err), 0);
	const struct cfg *v = cfg_doc_values(d);
	assert_int_equal(v->probe.allow.count, 2);
	assert_string_equal(v->probe.allow.items[1], "/bin/d");
	assert_int_equal(v->auth.jwt_keys.count, 1);
	assert_non_null(strstr(cfg_doc_text(d, NULL), "jwt_keys: [\"/k/a.pem\"]"));
	assert_int_equal(cfg_doc_set(d, "probe.allow", "", &err), 0); /* the empty list */
	assert_int_equal(cfg_doc_values(d)->probe.allow.count, 0);
	assert_non_null(strstr(cfg_doc_text(d, NULL), "allow: []"));
	assert_int_not_equal(cfg_doc_set(d, "probe.allow", "/bin/a,", &err), 0);
	assert_non_null(strstr(err.msg, "probe.allow"));
	cfg_doc_free(d);
}

static void test_config_edit_refuses_unknown_keys_and_control_chars(void **state)
{
	(void)state;
	struct cfg_doc *d = doc_of("agent:\n  id: a1\n");
	struct vm_err err = {0};
	assert_int_not_equal(cfg_doc_set(d, "agent.nope", "1", &err), 0);
	assert_non_null(strstr(err.msg, "agent.nope: unknown configuration key"));
	assert_int_not_equal(cfg_doc_set(d, "agent", "1", &err), 0);
	assert_int_not_equal(cfg_doc_set(d, "agent.id", "a\nb", &err), 0);
	assert_non_null(strstr(err.msg, "control characters"));
	assert_int_not_equal(cfg_doc_unset(d, "agent.nope", &err), 0);
	assert_false(cfg_doc_changed(d));
	/* a value the loader refuses is written only after validation says so */
	assert_int_equal(cfg_doc_set(d, "webhook.port", "70000", &err), 0);
	assert_int_not_equal(cfg_doc_validate(d, &err), 0);
	assert_non_null(strstr(err.msg, "config.yaml:4:"));
	assert_non_null(strstr(err.msg, "webhook.port"));
	/* and can be fixed by the next edit */
	assert_int_equal(cfg_doc_set(d, "webhook.port", "9100", &err), 0);
	assert_int_equal(cfg_doc_validate(d, &err), 0);
	cfg_doc_free(d);
	/* a YAML error names the file, line and column */
	struct cfg_doc *bad = NULL;
	static const char broken[] = "agent:\n  id: [a\n";
	assert_int_not_equal(cfg_doc_parse(&bad, "config.yaml", broken, strlen(broken), &err), 0);
	assert_non_null(strstr(err.msg, "config.yaml:3:"));
}

/* Layouts beyond the plain block style: each edit gives exactly this text, or
 * is refused when no in-place splice keeps every other key as it was. */
static void test_config_edit_layouts(void **state)
{
	(void)state;
	static const struct {
		const char *in;
		bool unset;
		const char *key, *value, *out; /* out NULL: refused */
	} rows[] = {
	    {"agent:\n  id: |\n    abc\n  tenant_id: t\n", false, "agent.id", "x",
	     "agent:\n  id: \"x\"\n  tenant_id: t\n"},
	    {"agent:\n  id: |\n    abc\n", false, "agent.tenant_id", "x",
	     "agent:\n  id: |\n    abc\n  tenant_id: \"x\"\n"},
	    {"webhook:\n  port:\n  listen_addr: 1.2.3.4\n", false, "webhook.port", "9",
	     "webhook:\n  port: \"9\"\n  listen_addr: 1.2.3.4\n"},
	    {"{agent: {id: a, tenant_id: b}}\n", true, "agent.id", NULL,
	     "{agent: {tenant_id: b}}\n"},
	    {"{agent: {id: a, tenant_id: b}}\n", true, "agent.tenant_id", NULL,
	     "{agent: {id: a}}\n"},
	    {"{agent: {id: a}}\n", false, "piko.endpoint", "e",
	     "{agent: {id: a}, piko: {endpoint: \"e\"}}\n"},
	    {"agent: {}\n", false, "agent.id", "t", "agent: {id: \"t\"}\n"},
	    {"piko:\n  reconnect:\n    max_delay: 3s\n  endpoint: e\n", false,
	     "piko.reconnect.initial_delay", "1s",
	     "piko:\n  reconnect:\n    max_delay: 3s\n    initial_delay: \"1s\"\n  endpoint: e\n"},
	    {"probe:\n  allow:\n  - /a\n  - /b\n  queue_size: 3\n", true, "probe.allow", NULL,
	     "probe:\n  queue_size: 3\n"},
	    {"agent:\n  id: 'it''s'\n", false, "agent.id", "it's", "agent:\n  id: 'it''s'\n"},
	    /* an anchor shared by two keys cannot change for one of them alone */
	    {"agent:\n  id: &x a\n  tenant_id: *x\n", false, "agent.id", "z", NULL},
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct cfg_doc *d = doc_of(rows[i].in);
		struct vm_err err = {0};
		int rc = rows[i].unset ? cfg_doc_unset(d, rows[i].key, &err)
		                       : cfg_doc_set(d, rows[i].key, rows[i].value, &err);
		if (rows[i].out == NULL) {
			assert_int_not_equal(rc, 0);
			assert_non_null(strstr(err.msg, "config.yaml:2:3: agent.id: cannot edit"));
			assert_string_equal(cfg_doc_text(d, NULL), rows[i].in);
		} else {
			if (rc != 0)
				fail_msg("row %zu: %s", i, err.msg);
			assert_string_equal(cfg_doc_text(d, NULL), rows[i].out);
		}
		cfg_doc_free(d);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_config_defaults_match_seed),
	    cmocka_unit_test(test_config_full_file_parses),
	    cmocka_unit_test(test_config_error_bad_port_names_line_column_key),
	    cmocka_unit_test(test_config_error_unknown_key_suggests),
	    cmocka_unit_test(test_config_error_types),
	    cmocka_unit_test(test_config_error_yaml_syntax_has_position),
	    cmocka_unit_test(test_config_error_duplicate_key),
	    cmocka_unit_test(test_config_error_endpoint_with_slash_suggests_form),
	    cmocka_unit_test(test_config_error_cross_field),
	    cmocka_unit_test(test_config_urls_and_forward_addr_follow_the_one_rule),
	    cmocka_unit_test(test_config_dump_never_writes_past_cap),
	    cmocka_unit_test(test_config_error_value_too_long),
	    cmocka_unit_test(test_config_empty_file_and_empty_section_keep_defaults),
	    cmocka_unit_test(test_config_env_overrides_file),
	    cmocka_unit_test(test_config_env_error_names_variable),
	    cmocka_unit_test(test_config_missing_file_is_notfound),
	    cmocka_unit_test(test_config_durations),
	    cmocka_unit_test(test_config_sizes),
	    cmocka_unit_test(test_config_dump_redacts_token),
	    cmocka_unit_test(test_config_list_from_yaml_sequence_and_env),
	    cmocka_unit_test(test_config_list_errors),
	    cmocka_unit_test(test_config_auth_and_probe_defaults),
	    cmocka_unit_test(test_config_url_redact_edge_cases),
	    cmocka_unit_test(test_config_dump_redacts_url_passwords),
	    cmocka_unit_test(test_config_key_apply_live_or_restart),
	    cmocka_unit_test(test_config_key_differs_and_copy),
	    cmocka_unit_test(test_config_tilde_only_file_same_rule_everywhere),
	    cmocka_unit_test(test_config_set_keeps_comments_and_order),
	    cmocka_unit_test(test_config_set_list_value_is_a_sequence),
	    cmocka_unit_test(test_config_edit_refuses_unknown_keys_and_control_chars),
	    cmocka_unit_test(test_config_edit_layouts),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
