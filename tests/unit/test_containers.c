/* Unit tests for containers/: the log-stream frame parser, the create-spec
 * validator (paths), its canonical hash and the engine body mapping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdint.h>
#include <string.h>

#include "containers/containers.h"

static void test_ctr_log_frame_parses_stdout_and_stderr_frames(void **state)
{
	(void)state;
	const uint8_t buf[] = {1, 0, 0, 0, 0, 0, 0, 3, 'a', 'b', '\n', 2, 0, 0, 0, 0, 0, 0, 1, 'e'};
	struct ctr_log_frame f;
	long n = ctr_log_frame_parse(buf, sizeof(buf), &f);
	assert_int_equal(n, 11);
	assert_int_equal(f.stream, 1);
	assert_int_equal(f.len, 3);
	assert_memory_equal(f.data, "ab\n", 3);
	n = ctr_log_frame_parse(buf + 11, sizeof(buf) - 11, &f);
	assert_int_equal(n, 9);
	assert_int_equal(f.stream, 2);
	assert_int_equal(f.len, 1);
}

static void test_ctr_log_frame_waits_for_a_whole_frame(void **state)
{
	(void)state;
	const uint8_t buf[] = {1, 0, 0, 0, 0, 0, 0, 5, 'a', 'b'};
	struct ctr_log_frame f;
	for (size_t len = 0; len <= sizeof(buf); len++)
		assert_int_equal(ctr_log_frame_parse(buf, len, &f), 0);
	const uint8_t empty[] = {2, 0, 0, 0, 0, 0, 0, 0};
	assert_int_equal(ctr_log_frame_parse(empty, sizeof(empty), &f), 8);
	assert_int_equal(f.len, 0);
}

static void test_ctr_log_frame_refuses_what_is_not_a_frame(void **state)
{
	(void)state;
	struct ctr_log_frame f;
	const uint8_t bad_stream[] = {4, 0, 0, 0, 0, 0, 0, 1, 'x'};
	const uint8_t bad_pad[] = {1, 0, 1, 0, 0, 0, 0, 1, 'x'};
	const uint8_t too_big[] = {1, 0, 0, 0, 0x00, 0x10, 0x00, 0x01};
	const uint8_t text[] = "hello, world";
	assert_int_equal(ctr_log_frame_parse(bad_stream, sizeof(bad_stream), &f), -1);
	assert_int_equal(ctr_log_frame_parse(bad_pad, sizeof(bad_pad), &f), -1);
	assert_int_equal(ctr_log_frame_parse(too_big, sizeof(too_big), &f), -1);
	assert_int_equal(ctr_log_frame_parse(text, sizeof(text), &f), -1);
}

static const char *validate_path(const char *text)
{
	static struct ctr_err err;
	memset(&err, 0, sizeof(err));
	json_t *j = json_loads(text, 0, NULL);
	assert_non_null(j);
	json_t *canon = NULL;
	bool replace, never;
	int rc = ctr_spec_validate(j, &canon, &replace, &never, &err);
	json_decref(j);
	json_decref(canon);
	if (rc == 0)
		return NULL;
	assert_int_equal(err.status, 400);
	assert_string_equal(err.code, "invalid_request");
	return err.path;
}

static void test_ctr_spec_validate_names_the_bad_field(void **state)
{
	(void)state;
	assert_null(validate_path("{\"name\":\"web-1\",\"image\":\"busybox:1\",\"cpus\":1.5,"
	                          "\"ports\":[{\"container\":80,\"host\":8080}],"
	                          "\"volumes\":[{\"source\":\"data\",\"target\":\"/d\"}]}"));
	assert_string_equal(validate_path("{\"image\":\"x\"}"), "name");
	assert_string_equal(validate_path("{\"name\":\"-x\",\"image\":\"x\"}"), "name");
	assert_string_equal(validate_path("{\"name\":\"a\"}"), "image");
	assert_string_equal(validate_path("{\"name\":\"a\",\"image\":\"x\",\"zz\":1}"), "zz");
	assert_string_equal(
	    validate_path("{\"name\":\"a\",\"image\":\"x\",\"ports\":[{},{\"container\":1}]}"),
	    "ports[0].container");
	assert_string_equal(validate_path("{\"name\":\"a\",\"image\":\"x\",\"ports\":[{\"container\":"
	                                  "1,\"protocol\":\"sctp\"}]}"),
	                    "ports[0].protocol");
	assert_string_equal(validate_path("{\"name\":\"a\",\"image\":\"x\",\"volumes\":[{\"source\":"
	                                  "\"/a/./b\",\"target\":\"/d\"}]}"),
	                    "volumes[0].source");
	assert_string_equal(validate_path("{\"name\":\"a\",\"image\":\"x\",\"volumes\":[{\"source\":"
	                                  "\"/a\",\"target\":\"/\"}]}"),
	                    "volumes[0].target");
	assert_string_equal(validate_path("{\"name\":\"a\",\"image\":\"x\",\"env\":{\"A=B\":\"c\"}}"),
	                    "env.A=B");
	assert_string_equal(validate_path("{\"name\":\"a\",\"image\":\"x\",\"cpuset_cpus\":\"0-\"}"),
	                    "cpuset_cpus");
	assert_string_equal(
	    validate_path("{\"name\":\"a\",\"image\":\"x\",\"restart\":{\"policy\":\"always\","
	                  "\"max_retries\":3}}"),
	    "restart.max_retries");
	assert_string_equal(validate_path("{\"name\":\"a\",\"image\":\"x\",\"pull\":\"always\"}"),
	                    "pull");
	assert_string_equal(validate_path("[]"), "$");
}

static void test_ctr_spec_hash_ignores_key_order_and_replace(void **state)
{
	(void)state;
	struct ctr_err err;
	json_t *a = json_loads("{\"name\":\"a\",\"image\":\"x\",\"cpus\":1}", 0, NULL);
	json_t *b = json_loads("{\"cpus\":1,\"replace\":true,\"image\":\"x\",\"name\":\"a\"}", 0, NULL);
	json_t *c = json_loads("{\"cpus\":2,\"image\":\"x\",\"name\":\"a\"}", 0, NULL);
	json_t *ca, *cb, *cc;
	bool r, n;
	assert_int_equal(ctr_spec_validate(a, &ca, &r, &n, &err), 0);
	assert_false(r);
	assert_int_equal(ctr_spec_validate(b, &cb, &r, &n, &err), 0);
	assert_true(r);
	assert_int_equal(ctr_spec_validate(c, &cc, &r, &n, &err), 0);
	char ha[65], hb[65], hc[65];
	ctr_spec_hash(ca, ha);
	ctr_spec_hash(cb, hb);
	ctr_spec_hash(cc, hc);
	assert_string_equal(ha, hb);
	assert_string_not_equal(ha, hc);
	json_decref(a), json_decref(b), json_decref(c);
	json_decref(ca), json_decref(cb), json_decref(cc);
}

static void test_ctr_spec_body_maps_limits_ports_and_labels(void **state)
{
	(void)state;
	struct ctr_err err;
	json_t *s = json_loads("{\"name\":\"a\",\"image\":\"x\",\"cpus\":0.5,\"memory_bytes\":"
	                       "67108864,\"env\":{\"K\":\"v\"},\"ports\":[{\"container\":80,"
	                       "\"host\":8080,\"host_ip\":\"127.0.0.1\"}],\"volumes\":[{\"source\":"
	                       "\"/srv\",\"target\":\"/d\",\"read_only\":true}]}",
	                       0, NULL);
	json_t *c;
	bool r, n;
	assert_int_equal(ctr_spec_validate(s, &c, &r, &n, &err), 0);
	struct ctr_who who = {.sub = "op", .probe_id = "p1"};
	json_t *b = ctr_spec_body(c, "tenant-a", &who);
	json_t *h = json_object_get(b, "HostConfig");
	assert_int_equal(json_integer_value(json_object_get(h, "NanoCpus")), 500000000);
	assert_int_equal(json_integer_value(json_object_get(h, "Memory")), 67108864);
	assert_string_equal(json_string_value(json_array_get(json_object_get(b, "Env"), 0)), "K=v");
	json_t *pb = json_array_get(json_object_get(json_object_get(h, "PortBindings"), "80/tcp"), 0);
	assert_string_equal(json_string_value(json_object_get(pb, "HostPort")), "8080");
	assert_string_equal(json_string_value(json_object_get(pb, "HostIp")), "127.0.0.1");
	assert_string_equal(json_string_value(json_array_get(json_object_get(h, "Binds"), 0)),
	                    "/srv:/d:ro");
	json_t *l = json_object_get(b, "Labels");
	assert_string_equal(json_string_value(json_object_get(l, CTR_LABEL_TENANT)), "tenant-a");
	assert_string_equal(json_string_value(json_object_get(l, CTR_LABEL_CREATOR)), "op");
	assert_string_equal(json_string_value(json_object_get(l, CTR_LABEL_PROBE)), "p1");
	json_decref(b), json_decref(c), json_decref(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ctr_log_frame_parses_stdout_and_stderr_frames),
	    cmocka_unit_test(test_ctr_log_frame_waits_for_a_whole_frame),
	    cmocka_unit_test(test_ctr_log_frame_refuses_what_is_not_a_frame),
	    cmocka_unit_test(test_ctr_spec_validate_names_the_bad_field),
	    cmocka_unit_test(test_ctr_spec_hash_ignores_key_order_and_replace),
	    cmocka_unit_test(test_ctr_spec_body_maps_limits_ports_and_labels),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
