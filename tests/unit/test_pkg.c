/* Unit tests for the pkg.ensure and service steps' parsers (dpkg-query, apt's
 * status fd, apt-get -s, systemctl show) and their request validation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "health/health.h"
#include "probe/internal.h"
#include "probe/steps/steps.h"

static void test_dpkg_query_installed_removed_and_multiarch(void **state)
{
	(void)state;
	const char out[] = "openssh-server\tii \t1:9.2p1-2+deb12u3\n"
	                   "oldpkg\trc \t1.0-1\n"
	                   "libfoo\tun \t\n"
	                   "libc6\tii \t2.36-9+deb12u4\n"
	                   "libc6\tun \t\n"
	                   "trig\tiW \t2.0\n";
	struct pkg_info p[8];
	int n = pkg_parse_dpkg_query(out, strlen(out), p, 8);
	assert_int_equal(n, 5);
	assert_string_equal(p[0].name, "openssh-server");
	assert_true(p[0].installed);
	assert_string_equal(p[0].version, "1:9.2p1-2+deb12u3");
	assert_false(p[1].installed);
	assert_false(p[2].installed);
	assert_string_equal(p[2].version, "");
	assert_true(p[3].installed); /* the uninstalled foreign arch does not win */
	assert_true(p[4].installed);
}

static void test_dpkg_query_refuses_malformed_and_bounds(void **state)
{
	(void)state;
	struct pkg_info p[2];
	assert_int_equal(pkg_parse_dpkg_query("a\tii\n", 5, p, 2), -1);
	assert_int_equal(pkg_parse_dpkg_query("\tii \t1\n", 7, p, 2), -1);
	assert_int_equal(pkg_parse_dpkg_query("a\tiiiii\t1\n", 10, p, 2), -1);
	char big[400];
	memset(big, 'x', sizeof(big));
	memcpy(big, "a\tii \t", 6);
	assert_int_equal(pkg_parse_dpkg_query(big, sizeof(big), p, 2), -1);
	const char three[] = "a\tii \t1\nb\tii \t1\nc\tii \t1\n";
	assert_int_equal(pkg_parse_dpkg_query(three, strlen(three), p, 2), 2);
	assert_int_equal(pkg_parse_dpkg_query("", 0, p, 2), 0);
}

static void test_apt_status_lines(void **state)
{
	(void)state;
	struct apt_status s;
	const char *l = "pmstatus:vma-hello:20.0000:Preparing vma-hello (amd64)\n";
	assert_int_equal(apt_status_parse(l, strlen(l), &s), 0);
	assert_int_equal(s.kind, APT_PMSTATUS);
	assert_string_equal(s.pkg, "vma-hello");
	assert_true(s.percent > 19.9 && s.percent < 20.1);
	assert_string_equal(s.msg, "Preparing vma-hello (amd64)");

	l = "pmstatus:libc6:amd64:50.0000:Unpacking libc6:amd64 (2.36)";
	assert_int_equal(apt_status_parse(l, strlen(l), &s), 0);
	assert_string_equal(s.pkg, "libc6:amd64");
	assert_string_equal(s.msg, "Unpacking libc6:amd64 (2.36)");

	l = "dlstatus:1:0.0000:Retrieving file 1 of 3";
	assert_int_equal(apt_status_parse(l, strlen(l), &s), 0);
	assert_int_equal(s.kind, APT_DLSTATUS);
	assert_string_equal(s.pkg, "");
	assert_string_equal(s.msg, "Retrieving file 1 of 3");

	l = "pmerror:/var/cache/apt/archives/x.deb:100:trying to overwrite '/x'";
	assert_int_equal(apt_status_parse(l, strlen(l), &s), 0);
	assert_int_equal(s.kind, APT_PMERROR);

	assert_int_equal(apt_status_parse("Setting up x (1.0) ...", 22, &s), -1);
	assert_int_equal(apt_status_parse("pmstatus:x:abc", 14, &s), -1);
	assert_int_equal(apt_status_parse("pmstatus:x:200:m", 16, &s), -1);
	assert_int_equal(apt_status_parse("pmstatus::5:m", 13, &s), -1);
}

static void test_apt_sim_actions(void **state)
{
	(void)state;
	const char out[] = "NOTE: This is only a simulation!\n"
	                   "Inst vma-dep (1.0 localhost [all])\n"
	                   "Inst vma-hello [1.0] (2.0 localhost [all]) []\n"
	                   "Remv oldthing [0.9-1]\n"
	                   "Purg gone [3]\n"
	                   "Conf vma-dep (1.0 localhost [all])\n";
	struct apt_sim a[8];
	int n = apt_parse_sim(out, strlen(out), a, 8);
	assert_int_equal(n, 4);
	assert_int_equal(a[0].action, 'i');
	assert_string_equal(a[0].name, "vma-dep");
	assert_string_equal(a[0].old_version, "");
	assert_string_equal(a[0].new_version, "1.0");
	assert_int_equal(a[1].action, 'u');
	assert_string_equal(a[1].old_version, "1.0");
	assert_string_equal(a[1].new_version, "2.0");
	assert_int_equal(a[2].action, 'r');
	assert_string_equal(a[2].old_version, "0.9-1");
	assert_int_equal(a[3].action, 'r');
	/* more actions than room: counted, not written */
	assert_int_equal(apt_parse_sim(out, strlen(out), a, 1), 4);
	assert_int_equal(apt_parse_sim("Inst x [1.0\n", 12, a, 8), -1);
	assert_int_equal(apt_parse_sim("Inst \n", 6, a, 8), 0);
}

static void test_systemctl_show(void **state)
{
	(void)state;
	const char out[] = "MainPID=412\nLoadState=loaded\nActiveState=active\nSubState=running\n"
	                   "UnitFileState=enabled\nCanReload=yes\nOther=x=y\n";
	struct svc_state s;
	assert_int_equal(svc_parse_show(out, strlen(out), &s), 0);
	assert_int_equal(s.main_pid, 412);
	assert_string_equal(s.load, "loaded");
	assert_string_equal(s.active, "active");
	assert_string_equal(s.sub, "running");
	assert_string_equal(s.unit_file, "enabled");
	assert_true(s.can_reload);
	const char nf[] = "LoadState=not-found\nCanReload=no\nMainPID=0\nUnitFileState=\n";
	assert_int_equal(svc_parse_show(nf, strlen(nf), &s), 0);
	assert_false(s.can_reload);
	assert_string_equal(s.unit_file, "");
	assert_int_equal(svc_parse_show("garbage\n", 8, &s), -1);
	assert_int_equal(svc_parse_show("MainPID=12a\n", 12, &s), -1);
	assert_int_equal(svc_parse_show("MainPID=99999999999\n", 20, &s), -1);
	char big[100];
	snprintf(big, sizeof(big), "ActiveState=%060d\n", 0);
	assert_int_equal(svc_parse_show(big, strlen(big), &s), -1);
}

/* A whole request through the real parser: 0, or -1 with the path. */
static int parse(const char *body, char *epath, size_t cap)
{
	struct probe_request req;
	struct vm_err err = {0};
	memset(&req, 0, sizeof(req));
	epath[0] = '\0';
	int rc = probe_request_parse(body, strlen(body), &req, epath, cap, &err);
	probe_request_free(&req);
	return rc;
}

static void test_pkg_and_service_requests_are_validated_with_paths(void **state)
{
	(void)state;
	char p[128];
	assert_int_equal(parse("{\"steps\":[{\"type\":\"pkg.ensure\",\"names\":[\"vma-hello\"],"
	                       "\"check\":true}]}",
	                       p, sizeof(p)),
	                 0);
	static const struct {
		const char *body, *path;
	} bad[] = {
	    {"{\"steps\":[{\"type\":\"pkg.ensure\",\"names\":[\"ok\",\"-oAPT::x=1\"]}]}",
	     "steps[0].names[1]"},
	    {"{\"steps\":[{\"type\":\"pkg.ensure\",\"names\":[]}]}", "steps[0].names"},
	    {"{\"steps\":[{\"type\":\"pkg.ensure\",\"names\":[\"ab\",\"ab\"]}]}", "steps[0].names[1]"},
	    {"{\"steps\":[{\"type\":\"pkg.ensure\",\"names\":[\"ab\"],\"state\":\"gone\"}]}",
	     "steps[0].state"},
	    {"{\"steps\":[{\"type\":\"pkg.ensure\",\"names\":[\"ab\",\"cd\"],\"version\":\"1.0\"}]}",
	     "steps[0].version"},
	    {"{\"steps\":[{\"type\":\"pkg.ensure\",\"names\":[\"ab\"],\"version\":\"1 0\"}]}",
	     "steps[0].version"},
	    {"{\"steps\":[{\"type\":\"pkg.ensure\",\"names\":[\"ab\"],\"manager\":\"brew\"}]}",
	     "steps[0].manager"},
	    {"{\"steps\":[{\"type\":\"pkg.ensure\",\"names\":[\"ab\"],\"chek\":true}]}",
	     "steps[0].chek"},
	    {"{\"steps\":[{\"type\":\"service\",\"name\":\"-x\",\"action\":\"start\"}]}",
	     "steps[0].name"},
	    {"{\"steps\":[{\"type\":\"service\",\"action\":\"start\"}]}", "steps[0].name"},
	    {"{\"steps\":[{\"type\":\"service\",\"name\":\"ssh\",\"action\":\"kick\"}]}",
	     "steps[0].action"},
	    {"{\"steps\":[{\"type\":\"service\",\"name\":\"ssh\",\"action\":\"start\",\"check\":1}]}",
	     "steps[0].check"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(parse(bad[i].body, p, sizeof(p)), -1);
		if (strcmp(p, bad[i].path) != 0)
			fail_msg("%s: path %s, want %s", bad[i].body, p, bad[i].path);
	}
}

static void test_rpm_query_installed_epoch_and_not_installed(void **state)
{
	(void)state;
	const char out[] = "bash\t(none)\t5.2.15-2.fc38\tx86_64\n"
	                   "package vma-nothere is not installed\n"
	                   "openssl\t1\t3.0.9-2.fc38\tx86_64\n"
	                   "kernel\t0\t6.4.1-1\tx86_64\n"
	                   "kernel\t0\t6.5.2-1\tx86_64\n"
	                   "\n";
	struct pkg_info p[8];
	int n = pkg_parse_rpm_query(out, strlen(out), p, 8);
	assert_int_equal(n, 4);
	assert_string_equal(p[0].name, "bash");
	assert_string_equal(p[0].version, "5.2.15-2.fc38");
	assert_true(p[0].installed);
	assert_string_equal(p[1].name, "vma-nothere");
	assert_false(p[1].installed);
	assert_string_equal(p[2].version, "1:3.0.9-2.fc38");
	assert_string_equal(p[3].version, "6.4.1-1"); /* the first line of a name wins */
	assert_int_equal(pkg_parse_rpm_query("", 0, p, 8), 0);
	assert_int_equal(pkg_parse_rpm_query(out, strlen(out), p, 2), 2);
}

static void test_rpm_query_refuses_malformed(void **state)
{
	(void)state;
	struct pkg_info p[2];
	static const char *const bad[] = {
	    "bash\t(none)\t5.2\tx86_64\n",           /* no release */
	    "bash\tx1\t5.2-1\tx86_64\n",             /* epoch not a number */
	    "bash\t1\t5.2-1\n",                       /* three fields */
	    "bash\t1\t5.2-1\tx86_64\textra\n",      /* five */
	    "\t1\t5.2-1\tx86_64\n",                  /* no name */
	    "package a b is not installed\n",        /* a name with a space */
	    "package  is not installed\n",           /* an empty one */
	    "error: rpmdb open failed\n",
	    "bash\t1234567890\t5.2-1\tnoarch\n",     /* an epoch past 9 digits */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (pkg_parse_rpm_query(bad[i], strlen(bad[i]), p, 2) != -1)
			fail_msg("accepted %s", bad[i]);
	char big[400];
	memset(big, 'a', sizeof(big));
	memcpy(big + 200, "\t0\t1-1\tnoarch", 14);
	assert_int_equal(pkg_parse_rpm_query(big, sizeof(big), p, 2), -1);
	assert_int_equal(pkg_parse_rpm_query("a\0\t0\t1-1\tx\n", 12, p, 2), -1);
}

static void test_zypper_info_candidates(void **state)
{
	(void)state;
	/* zypper --no-color info vma-hello vma-nothere vma-dep (LC_ALL=C) */
	const char out[] = "Loading repository data...\n"
	                   "Reading installed packages...\n"
	                   "\n"
	                   "\n"
	                   "Information for package vma-hello:\n"
	                   "----------------------------------\n"
	                   "Repository     : vma\n"
	                   "Name           : vma-hello\n"
	                   "Version        : 2.0-1\n"
	                   "Arch           : noarch\n"
	                   "Installed      : Yes\n"
	                   "Status         : out-of-date (version 1.0-1 installed)\n"
	                   "Description    : \n"
	                   "    Version : not a field\n"
	                   "package 'vma-nothere' not found.\n"
	                   "Name           : vma-dep\n"
	                   "Version        : 3:1.0-1\n"
	                   "Name           : vma-dep\n"
	                   "Version        : 0.9-1\n";
	struct pkg_info p[8];
	int n = pkg_parse_zypper_info(out, strlen(out), p, 8);
	assert_int_equal(n, 2);
	assert_string_equal(p[0].name, "vma-hello");
	assert_string_equal(p[0].version, "2.0-1");
	assert_true(p[0].installed);
	assert_string_equal(p[1].name, "vma-dep");
	assert_string_equal(p[1].version, "3:1.0-1"); /* the first entry of a name wins */
	assert_int_equal(pkg_parse_zypper_info("", 0, p, 8), 0);
	assert_int_equal(pkg_parse_zypper_info(out, strlen(out), p, 1), 1);
	static const char *const bad[] = {
	    "Version        : 2.0-1\n",                             /* no Name before */
	    "Name           : a b\nVersion        : 1-1\n",        /* a name with a space */
	    "Name           : \n",                                  /* an empty one */
	    "Name           : a\nVersion        : 1 2\n",          /* a version with a space */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (pkg_parse_zypper_info(bad[i], strlen(bad[i]), p, 2) != -1)
			fail_msg("accepted %s", bad[i]);
	char big[400];
	memset(big, 'a', sizeof(big));
	memcpy(big, "Name : ", 7);
	assert_int_equal(pkg_parse_zypper_info(big, sizeof(big), p, 2), -1);
}

static void test_os_owner_of_the_package_database(void **state)
{
	(void)state;
	assert_string_equal(health_os_pkg_manager_of("debian", ""), "apt");
	assert_string_equal(health_os_pkg_manager_of("ubuntu", "debian"), "apt");
	assert_string_equal(health_os_pkg_manager_of("rocky", "rhel centos fedora"), "dnf");
	assert_string_equal(health_os_pkg_manager_of("fedora", ""), "dnf");
	assert_string_equal(health_os_pkg_manager_of("opensuse-leap", "suse opensuse"), "zypper");
	assert_string_equal(health_os_pkg_manager_of("sles", ""), "zypper");
	assert_string_equal(health_os_pkg_manager_of("alpine", ""), "apk");
	/* ID wins over ID_LIKE; a word must match whole */
	assert_string_equal(health_os_pkg_manager_of("mydistro", "fedora debian"), "dnf");
	assert_null(health_os_pkg_manager_of("debianish", "fedoraish"));
	assert_null(health_os_pkg_manager_of("", ""));
	assert_null(health_os_pkg_manager_of(NULL, NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_dpkg_query_installed_removed_and_multiarch),
	    cmocka_unit_test(test_dpkg_query_refuses_malformed_and_bounds),
	    cmocka_unit_test(test_rpm_query_installed_epoch_and_not_installed),
	    cmocka_unit_test(test_rpm_query_refuses_malformed),
	    cmocka_unit_test(test_zypper_info_candidates),
	    cmocka_unit_test(test_os_owner_of_the_package_database),
	    cmocka_unit_test(test_apt_status_lines),
	    cmocka_unit_test(test_apt_sim_actions),
	    cmocka_unit_test(test_systemctl_show),
	    cmocka_unit_test(test_pkg_and_service_requests_are_validated_with_paths),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
