/* Unit tests for the inventory: each parser of host text (os-release,
 * cpuinfo, dpkg-query, rpm, /proc/net sockets, systemctl JSON), the escaping
 * of host strings, the size bound, and a collection from fixture trees and
 * from this machine. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/codec.h"
#include "health/internal.h"
#include "test_dir.h"

static void test_inventory_os_release_quotes_escapes_and_junk(void **state)
{
	(void)state;
	struct health_os_release os;
	const char *text = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"
	                   "NAME='Debian GNU/Linux'\n"
	                   "VERSION_ID=\"12\"\n"
	                   "ID=debian\n"
	                   "# a comment\n"
	                   "garbage line\n"
	                   "VERSION=\"say \\\"hi\\\" \\$x\"\n"
	                   "VERSION_CODENAME=\"unterminated\n"
	                   "HOME_URL=\"https://www.debian.org/\"";
	assert_int_equal(health_inv_parse_os_release(text, &os), 0);
	assert_string_equal(os.id, "debian");
	assert_string_equal(os.name, "Debian GNU/Linux");
	assert_string_equal(os.version_id, "12");
	assert_string_equal(os.pretty_name, "Debian GNU/Linux 12 (bookworm)");
	assert_string_equal(os.version, "say \"hi\" $x");
	assert_string_equal(os.version_codename, ""); /* bad quoting: left out */
	assert_int_equal(health_inv_parse_os_release("FOO=bar\n\n", &os), -1);
	assert_int_equal(health_inv_parse_os_release("", &os), -1);
	/* a value longer than its field is left out, never cut */
	char big[600] = "ID=";
	memset(big + 3, 'x', 500);
	assert_int_equal(health_inv_parse_os_release(big, &os), -1);
	assert_string_equal(os.id, "");
}

static void test_inventory_cpuinfo_model_and_count(void **state)
{
	(void)state;
	struct health_cpu_info c;
	const char *x86 =
	    "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n\n"
	    "processor\t: 1\nmodel name\t: AMD EPYC 7B13\n";
	assert_int_equal(health_inv_parse_cpuinfo(x86, &c), 0);
	assert_int_equal(c.count, 2);
	assert_string_equal(c.model, "AMD EPYC 7B13");
	const char *arm = "processor\t: 0\nBogoMIPS\t: 50.00\nCPU part\t: 0xd0c\n"
	                  "processor\t: 1\n\nHardware\t: x\nProcessor\t: ARMv8 rev 1\n";
	assert_int_equal(health_inv_parse_cpuinfo(arm, &c), 0);
	assert_int_equal(c.count, 2);
	assert_string_equal(c.model, "ARMv8 rev 1");
	assert_int_equal(health_inv_parse_cpuinfo("model name : x\n", &c), -1);
}

static void test_inventory_dpkg_lines_installed_only(void **state)
{
	(void)state;
	struct health_pkg p;
	const char *l = "libc6\t2.36-9+deb12u4\tamd64\tii \n";
	assert_int_equal(health_inv_parse_dpkg_line(l, strlen(l), &p), 0);
	assert_string_equal(p.name, "libc6");
	assert_string_equal(p.version, "2.36-9+deb12u4");
	assert_string_equal(p.arch, "amd64");
	l = "oldpkg\t1.0\tall\trc ";
	assert_int_equal(health_inv_parse_dpkg_line(l, strlen(l), &p), HEALTH_INV_LINE_SKIP);
	l = "held\t1.0\tall\thi ";
	assert_int_equal(health_inv_parse_dpkg_line(l, strlen(l), &p), 0);
	assert_int_equal(health_inv_parse_dpkg_line("", 0, &p), HEALTH_INV_LINE_SKIP);
	static const char *const bad[] = {"a\tb\tc", "a\tb\tc\td\te", "\t1\tall\tii ",
	                                  "a\t1\tall\ti", "a b c d"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (health_inv_parse_dpkg_line(bad[i], strlen(bad[i]), &p) != -1)
			fail_msg("accepted \"%s\"", bad[i]);
	assert_int_equal(health_inv_parse_dpkg_line("a\0\t1\tall\tii ", 12, &p), -1);
}

static void test_inventory_rpm_lines_epoch_and_keys(void **state)
{
	(void)state;
	struct health_pkg p;
	const char *l = "bash\t(none)\t5.1.8-6.el9\tx86_64\n";
	assert_int_equal(health_inv_parse_rpm_line(l, strlen(l), &p), 0);
	assert_string_equal(p.name, "bash");
	assert_string_equal(p.version, "5.1.8-6.el9");
	assert_string_equal(p.arch, "x86_64");
	l = "openssl\t1\t3.0.7-27.el9\tx86_64";
	assert_int_equal(health_inv_parse_rpm_line(l, strlen(l), &p), 0);
	assert_string_equal(p.version, "1:3.0.7-27.el9");
	l = "gpg-pubkey\t(none)\tfd431d51-4ae0493b\t(none)";
	assert_int_equal(health_inv_parse_rpm_line(l, strlen(l), &p), HEALTH_INV_LINE_SKIP);
	l = "x\tE1\t1-1\tnoarch";
	assert_int_equal(health_inv_parse_rpm_line(l, strlen(l), &p), -1);
	l = "x\t(none)\t\tnoarch";
	assert_int_equal(health_inv_parse_rpm_line(l, strlen(l), &p), -1);
}

static void test_inventory_net_lines_v4_v6_listen_and_udp(void **state)
{
	(void)state;
	struct health_sock s;
	const char *hdr = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when "
	                  "retrnsmt   uid  timeout inode\n";
	assert_int_equal(health_inv_parse_net_line(hdr, strlen(hdr), false, &s),
	                 HEALTH_INV_LINE_SKIP);
	const char *l = "   0: 0100007F:A431 00000000:0000 0A 00000000:00000000 00:00000000 "
	                "00000000     0        0 74536 1 00000000ec79f631 100 0 0 10 0\n";
	assert_int_equal(health_inv_parse_net_line(l, strlen(l), false, &s), 0);
	assert_string_equal(s.addr, "127.0.0.1");
	assert_int_equal(s.port, 0xA431);
	assert_int_equal(s.state, 0x0A);
	assert_true(s.remote_any);
	assert_int_equal(s.uid, 0);
	assert_int_equal(s.inode, 74536);
	l = "   1: 00000000000000000000000001000000:0016 00000000000000000000000000000000:0000 "
	    "0A 00000000:00000000 00:00000000 00000000  1000        0 12345 1 0000 100 0 0 10 0";
	assert_int_equal(health_inv_parse_net_line(l, strlen(l), true, &s), 0);
	assert_string_equal(s.addr, "::1");
	assert_int_equal(s.port, 22);
	assert_int_equal(s.uid, 1000);
	/* a connected UDP socket: remote set */
	l = "  5: 0100007F:0035 0101A8C0:1F90 01 00000000:00000000 00:00000000 00000000   100 0 "
	    "999 2";
	assert_int_equal(health_inv_parse_net_line(l, strlen(l), false, &s), 0);
	assert_false(s.remote_any);
	assert_string_equal(s.addr, "127.0.0.1");
	static const char *const bad[] = {
	    "0: 0100007F:A431",
	    "0: 0100007Z:A431 00000000:0000 0A 0:0 0:0 0 0 0 1",
	    "x: 0100007F:A431 00000000:0000 0A 0:0 0:0 0 0 0 1",
	    "0: 0100007F:A431 00000000:0000 0A 0:0 0:0 0 99999999999 0 1",
	    "0: 0100007F:A431 00000000:0000 0A 0:0 0:0 0 0 0", /* no inode */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (health_inv_parse_net_line(bad[i], strlen(bad[i]), false, &s) != -1)
			fail_msg("accepted \"%s\"", bad[i]);
	/* a v4 line read as v6 is too short */
	l = "0: 0100007F:A431 00000000:0000 0A 0:0 0:0 0 0 0 1";
	assert_int_equal(health_inv_parse_net_line(l, strlen(l), false, &s), 0);
	assert_int_equal(health_inv_parse_net_line(l, strlen(l), true, &s), -1);
}

struct units_seen {
	int n;
	char last[3][64];
};

static void seen_unit(void *ctx, const char *name, const char *v1, const char *v2)
{
	struct units_seen *u = ctx;
	u->n++;
	snprintf(u->last[0], 64, "%s", name);
	snprintf(u->last[1], 64, "%s", v1);
	snprintf(u->last[2], 64, "%s", v2);
}

static void test_inventory_systemctl_json(void **state)
{
	(void)state;
	struct units_seen u = {0};
	const char *units = "[{\"unit\":\"cron.service\",\"load\":\"loaded\",\"active\":\"active\","
	                    "\"sub\":\"running\",\"description\":\"cron\"},{\"nounit\":1},"
	                    "{\"unit\":\"ssh.service\",\"active\":\"failed\"}]";
	assert_int_equal(health_inv_parse_units_json(units, strlen(units), "unit", "active", "sub",
	                                             seen_unit, &u),
	                 2);
	assert_int_equal(u.n, 2);
	assert_string_equal(u.last[0], "ssh.service");
	assert_string_equal(u.last[1], "failed");
	assert_string_equal(u.last[2], "");
	assert_int_equal(health_inv_parse_units_json("{}", 2, "unit", NULL, NULL, seen_unit, &u),
	                 -1);
	assert_int_equal(health_inv_parse_units_json("[", 1, "unit", NULL, NULL, seen_unit, &u),
	                 -1);
	assert_int_equal(health_inv_parse_units_json("", 0, "unit", NULL, NULL, seen_unit, &u), -1);
}

static void test_inventory_systemctl_plain_tables(void **state)
{
	(void)state;
	struct units_seen u = {0};
	const char *files = "apt-daily.service              static   -\n"
	                    "ssh.service                    enabled  enabled\n\n";
	assert_int_equal(health_inv_parse_units_plain(files, strlen(files), 1, -1, seen_unit, &u),
	                 2);
	assert_string_equal(u.last[0], "ssh.service");
	assert_string_equal(u.last[1], "enabled");
	assert_string_equal(u.last[2], "");
	memset(&u, 0, sizeof(u));
	const char *units =
	    "  cron.service loaded active running Regular background program\n"
	    "\xe2\x97\x8f nginx.service loaded failed failed A high performance web "
	    "server\n";
	assert_int_equal(health_inv_parse_units_plain(units, strlen(units), 2, 3, seen_unit, &u),
	                 2);
	assert_string_equal(u.last[0], "nginx.service");
	assert_string_equal(u.last[1], "failed");
	assert_string_equal(u.last[2], "failed");
	/* too few columns, or a NUL */
	assert_int_equal(
	    health_inv_parse_units_plain("x.service loaded\n", 17, 2, 3, seen_unit, &u), -1);
	assert_int_equal(health_inv_parse_units_plain("a b\0c d e", 9, 1, -1, seen_unit, &u), -1);
	assert_int_equal(health_inv_parse_units_plain("", 0, 1, -1, seen_unit, &u), 0);
}

static void test_inventory_host_strings_escaped_and_cut(void **state)
{
	(void)state;
	json_t *s = health_inv_str("plain é", strlen("plain é"));
	assert_string_equal(json_string_value(s), "plain é");
	json_decref(s);
	s = health_inv_str("J\xfcrgen\\x", 8);
	assert_string_equal(json_string_value(s), "J\\xFCrgen\\\\x");
	json_decref(s);
	s = health_inv_str("a\nb", 3);
	assert_true(utf8_valid(json_string_value(s), strlen(json_string_value(s))));
	assert_null(strchr(json_string_value(s), '\n'));
	json_decref(s);
	char big[3000];
	memset(big, 'a', sizeof(big));
	s = health_inv_str(big, sizeof(big));
	assert_true(json_string_length(s) <= HEALTH_INV_STR_MAX);
	json_decref(s);
}

static void test_inventory_dump_halves_longest_list_and_names_it(void **state)
{
	(void)state;
	json_t *doc =
	    json_pack("{s:[],s:[],s:[],s:{}}", "packages", "users", "truncated", "errors");
	for (int i = 0; i < 2000; i++)
		json_array_append_new(json_object_get(doc, "packages"),
		                      json_pack("{s:s,s:i}", "name", "somepackage-name", "i", i));
	json_array_append_new(json_object_get(doc, "users"), json_string("root"));
	char *text;
	size_t len;
	assert_int_equal(health_inventory_dump(doc, 8192, &text, &len), 0);
	assert_true(len <= 8192);
	json_t *back = json_loads(text, 0, NULL);
	assert_non_null(back);
	assert_true(json_array_size(json_object_get(back, "packages")) < 2000);
	assert_true(json_array_size(json_object_get(back, "packages")) > 0);
	assert_int_equal(json_array_size(json_object_get(back, "users")), 1);
	assert_string_equal(
	    json_string_value(json_array_get(json_object_get(back, "truncated"), 0)), "packages");
	json_decref(back);
	free(text);
	/* nothing left to cut */
	assert_int_equal(health_inventory_dump(doc, 10, &text, &len), -1);
	json_decref(doc);
}

static void put(const char *dir, const char *name, const char *text)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void test_inventory_collect_fixture_sections_and_errors(void **state)
{
	(void)state;
	char proc[128], etc[128];
	snprintf(proc, sizeof(proc), "%s/proc", test_dir);
	snprintf(etc, sizeof(etc), "%s/etc", test_dir);
	assert_int_equal(mkdir(proc, 0755), 0);
	assert_int_equal(mkdir(etc, 0755), 0);
	char net[160];
	snprintf(net, sizeof(net), "%s/net", proc);
	assert_int_equal(mkdir(net, 0755), 0);
	put(etc, "os-release", "ID=fixture\nVERSION_ID=\"1\"\n");
	put(etc, "passwd",
	    "root:x:0:0:root:/root:/bin/bash\nbroken line\nu1:x:1000:1000:J\xfc:/home/u1:/bin/sh\n"
	    "u2:x:1001:1001::/home/u2:/bin/sh\nu3:x:1002:1002::/home/u3:/bin/sh\n");
	/* no group file: that section fails alone */
	put(proc, "cpuinfo", "processor : 0\nmodel name : Fixture CPU\n");
	put(proc, "meminfo",
	    "MemTotal: 1024 kB\nMemAvailable: 512 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n");
	put(net, "tcp",
	    "  sl local\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 "
	    "00000000     0        0 1 1\n   1: 0100007F:1F91 0100007F:0016 01 0:0 0:0 0 0 0 2\n");
	put(net, "udp", "  sl local\n   0: 00000000:0044 00000000:0000 07 0:0 0:0 0 0 0 3\n");
	struct health_inv_ctx ctx = {.proc = {.proc_root = proc}, .etc_root = etc, .max_items = 2};
	json_t *doc = health_inventory_collect(&ctx);
	assert_non_null(doc);
	assert_string_equal(json_string_value(json_object_get(json_object_get(doc, "os"), "id")),
	                    "fixture");
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(doc, "cpu"), "model")),
	    "Fixture CPU");
	assert_int_equal(
	    json_integer_value(json_object_get(json_object_get(doc, "memory"), "total_bytes")),
	    1024 * 1024);
	json_t *users = json_object_get(doc, "users");
	assert_int_equal(json_array_size(users), 2); /* max_items */
	assert_string_equal(json_string_value(json_object_get(json_array_get(users, 1), "gecos")),
	                    "J\\xFC");
	json_t *errors = json_object_get(doc, "errors");
	assert_non_null(json_object_get(errors, "groups"));
	assert_non_null(strstr(json_string_value(json_object_get(errors, "users")), "1 lines"));
	assert_null(json_object_get(errors, "os"));
	json_t *trunc = json_object_get(doc, "truncated");
	bool users_cut = false;
	size_t i;
	json_t *v;
	json_array_foreach(trunc, i, v) users_cut |= strcmp(json_string_value(v), "users") == 0;
	assert_true(users_cut);
	json_t *ports = json_object_get(doc, "listening");
	assert_int_equal(json_array_size(ports),
	                 2); /* tcp 8080 LISTEN and udp 68; not the connected one */
	assert_int_equal(json_integer_value(json_object_get(json_array_get(ports, 0), "port")),
	                 8080);
	assert_string_equal(
	    json_string_value(json_object_get(json_array_get(ports, 1), "protocol")), "udp");
	char *text = json_dumps(doc, JSON_COMPACT);
	assert_non_null(text); /* every string valid UTF-8 */
	free(text);
	json_decref(doc);
}

static void test_inventory_collect_this_host(void **state)
{
	(void)state;
	struct health_inv_ctx ctx = {
	    .proc = {.proc_root = "/proc"}, .etc_root = "/etc", .max_items = 100000};
	json_t *doc = health_inventory_collect(&ctx);
	assert_non_null(doc);
	char host[256] = "";
	gethostname(host, sizeof(host) - 1);
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(doc, "host"), "hostname")), host);
	assert_true(json_array_size(json_object_get(doc, "users")) > 0);
	assert_true(json_array_size(json_object_get(doc, "groups")) > 0);
	assert_true(json_array_size(json_object_get(doc, "interfaces")) > 0);
	assert_true(json_array_size(json_object_get(doc, "packages")) > 10);
	assert_true(json_integer_value(json_object_get(json_object_get(doc, "cpu"), "count")) > 0);
	char *text = json_dumps(doc, JSON_INDENT(1));
	if (getenv("VMA_TEST_VERBOSE") != NULL)
		printf("%.4000s\n", text);
	free(text);
	json_decref(doc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_inventory_os_release_quotes_escapes_and_junk),
	    cmocka_unit_test(test_inventory_cpuinfo_model_and_count),
	    cmocka_unit_test(test_inventory_dpkg_lines_installed_only),
	    cmocka_unit_test(test_inventory_rpm_lines_epoch_and_keys),
	    cmocka_unit_test(test_inventory_net_lines_v4_v6_listen_and_udp),
	    cmocka_unit_test(test_inventory_systemctl_json),
	    cmocka_unit_test(test_inventory_systemctl_plain_tables),
	    cmocka_unit_test(test_inventory_host_strings_escaped_and_cut),
	    cmocka_unit_test(test_inventory_dump_halves_longest_list_and_names_it),
	    cmocka_unit_test_setup_teardown(test_inventory_collect_fixture_sections_and_errors,
	                                    test_dir_setup, test_dir_teardown),
	    cmocka_unit_test(test_inventory_collect_this_host),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
