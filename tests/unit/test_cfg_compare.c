/* Unit tests for "did the settings a module uses change?": decided key by key
 * through the config key table (cfg_keys_differ), so bytes that mean nothing
 * (struct padding, what follows a string's NUL) never force a restart of the
 * tunnel or the webhook listener, and every real change still does. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "tunnel/tunnel.h"
#include "webhook/webhook.h"

static const char yaml[] = "agent:\n"
                           "  id: a1\n"
                           "  tenant_id: t1\n"
                           "piko:\n"
                           "  server_url: https://piko.example.test\n"
                           "  endpoint: a1\n"
                           "  token: tok\n"
                           "auth:\n"
                           "  issuer: https://cp.example.test\n";

static struct cfg *load(void)
{
	static char *const no_env[] = {NULL};
	struct cfg *c = malloc(sizeof(*c));
	assert_non_null(c);
	struct vm_err err = {0};
	assert_int_equal(cfg_load_buffer(c, "config.yaml", yaml, strlen(yaml), no_env, &err), 0);
	return c;
}

/* Scribbles over every byte no key gives a meaning to: after each string's
 * NUL, and the padding inside the piko, webhook and auth sections. */
static void scribble_meaningless_bytes(struct cfg *c)
{
	char *strs[] = {c->piko.server_url, c->piko.endpoint,       c->piko.token,
	                c->piko.ca_file,    c->piko.forward_addr,   c->auth.issuer,
	                c->auth.audit_file, c->webhook.listen_addr, c->webhook.tls_cert_file,
	                c->agent.tenant_id};
	size_t caps[] = {sizeof(c->piko.server_url),
	                 sizeof(c->piko.endpoint),
	                 sizeof(c->piko.token),
	                 sizeof(c->piko.ca_file),
	                 sizeof(c->piko.forward_addr),
	                 sizeof(c->auth.issuer),
	                 sizeof(c->auth.audit_file),
	                 sizeof(c->webhook.listen_addr),
	                 sizeof(c->webhook.tls_cert_file),
	                 sizeof(c->agent.tenant_id)};
	for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
		size_t n = strlen(strs[i]);
		memset(strs[i] + n + 1, 'x', caps[i] - n - 1);
	}
	/* the bytes between insecure_skip_verify and the next field, if any */
	char *p = (char *)&c->piko.insecure_skip_verify + 1;
	memset(p, 0x5a, (size_t)((char *)c->piko.proxy_url - p));
	p = (char *)&c->webhook.tls_enabled + 1;
	memset(p, 0x5a, (size_t)((char *)c->webhook.tls_cert_file - p));
	/* unused list slots */
	for (int k = c->auth.jwt_keys.count; k < CFG_LIST_MAX; k++)
		memset(c->auth.jwt_keys.items[k], 'y', CFG_STR_MAX);
}

static void test_cfg_compare_meaningless_bytes_are_no_change(void **state)
{
	(void)state;
	struct cfg *a = load(), *b = load();
	assert_false(tun_config_changed(a, b));
	assert_false(wh_listener_changed(a, b));
	scribble_meaningless_bytes(b);
	assert_false(tun_config_changed(a, b));
	assert_false(wh_listener_changed(a, b));
	free(a);
	free(b);
}

static void test_cfg_compare_real_changes_are_seen(void **state)
{
	(void)state;
	struct cfg *a = load(), *b = load();
	scribble_meaningless_bytes(b);
	snprintf(b->piko.token, sizeof(b->piko.token), "tok2");
	assert_true(tun_config_changed(a, b));
	assert_false(wh_listener_changed(a, b));
	free(b);
	b = load();
	b->piko.reconnect.multiplier = 3.0;
	assert_true(tun_config_changed(a, b));
	free(b);
	b = load();
	/* the tunnel forwards to the webhook's own address unless told otherwise */
	b->webhook.port = 9100;
	assert_true(tun_config_changed(a, b));
	assert_true(wh_listener_changed(a, b));
	snprintf(a->piko.forward_addr, sizeof(a->piko.forward_addr), "127.0.0.1:9999");
	snprintf(b->piko.forward_addr, sizeof(b->piko.forward_addr), "127.0.0.1:9999");
	assert_false(tun_config_changed(a, b));
	free(b);
	b = load();
	b->auth.replay_cache_size = 17;
	assert_true(wh_listener_changed(a, b));
	free(b);
	b = load();
	snprintf(b->auth.jwt_keys.items[0], CFG_STR_MAX, "/etc/k.pem");
	b->auth.jwt_keys.count = 1;
	assert_true(wh_listener_changed(a, b));
	free(b);
	b = load();
	snprintf(b->agent.tenant_id, sizeof(b->agent.tenant_id), "t2");
	assert_true(tun_config_changed(a, b));
	assert_true(wh_listener_changed(a, b));
	free(b);
	/* the tunnel's unix listener: where it is and how many it serves */
	b = load();
	snprintf(b->agent.runtime_dir, sizeof(b->agent.runtime_dir), "/run/elsewhere");
	assert_true(tun_config_changed(a, b));
	assert_true(wh_listener_changed(a, b));
	free(b);
	b = load();
	b->piko.max_streams = 7;
	assert_true(wh_listener_changed(a, b));
	b->piko.max_streams = a->piko.max_streams;
	b->webhook.tunnel_threads = a->webhook.tunnel_threads + 1;
	assert_true(wh_listener_changed(a, b));
	free(b);
	/* and by name, for any module's own list */
	b = load();
	b->probe.max_concurrent = a->probe.max_concurrent + 1;
	static const char *const probe_keys[] = {"probe.", NULL};
	static const char *const log_keys[] = {"log.level", "log.format", NULL};
	assert_true(cfg_keys_differ(a, b, probe_keys));
	assert_false(cfg_keys_differ(a, b, log_keys));
	free(b);
	free(a);
}

/* The tunnel's unix listener (its workers) runs only while the tunnel
 * forwards to it: a reload turning the tunnel on or off starts or stops it. */
static void test_cfg_compare_tunnel_listener_only_while_used(void **state)
{
	(void)state;
	struct cfg *a = load();
	assert_true(wh_tunnel_listener_wanted(a));
	a->piko.server_url[0] = '\0';
	assert_false(wh_tunnel_listener_wanted(a));
	free(a);
	a = load();
	snprintf(a->piko.forward_addr, sizeof(a->piko.forward_addr), "127.0.0.1:9999");
	assert_false(wh_tunnel_listener_wanted(a));
	free(a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cfg_compare_meaningless_bytes_are_no_change),
	    cmocka_unit_test(test_cfg_compare_real_changes_are_seen),
	    cmocka_unit_test(test_cfg_compare_tunnel_listener_only_while_used),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
