/* Unit tests for the host-step framework (probe/steps/host.c): the bounded
 * unified diff, the name validators, files by the directory-fd rule, backups
 * restored byte-identical, and the common parse ("check", unknown fields). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/buf.h"
#include "probe/steps/steps.h"

#include "test_dir.h"

static char *diff(const char *a, const char *b, size_t max, int *rc)
{
	struct buf out;
	buf_init(&out, 1u << 20);
	*rc = host_diff(a, a ? strlen(a) : 0, b, b ? strlen(b) : 0, "etc/x", max, &out);
	char *s = buf_take(&out, NULL);
	buf_free(&out);
	return s;
}

static void test_host_diff_equal_texts_are_empty(void **state)
{
	(void)state;
	int rc;
	char *d = diff("a\nb\n", "a\nb\n", 4096, &rc);
	assert_int_equal(rc, 0);
	assert_string_equal(d, "");
	free(d);
}

static void test_host_diff_one_changed_line_with_context(void **state)
{
	(void)state;
	int rc;
	char *d = diff("1\n2\n3\n4\n5\n6\n7\n8\n9\n", "1\n2\n3\n4\nFIVE\n6\n7\n8\n9\n", 4096, &rc);
	assert_int_equal(rc, 0);
	assert_string_equal(d, "--- a/etc/x\n+++ b/etc/x\n@@ -2,7 +2,7 @@\n 2\n 3\n 4\n-5\n+FIVE\n 6\n"
	                       " 7\n 8\n");
	free(d);
}

static void test_host_diff_new_file_and_removed_file(void **state)
{
	(void)state;
	int rc;
	char *d = diff(NULL, "x\ny\n", 4096, &rc);
	assert_string_equal(d, "--- a/etc/x\n+++ b/etc/x\n@@ -0,0 +1,2 @@\n+x\n+y\n");
	free(d);
	d = diff("x\n", "", 4096, &rc);
	assert_string_equal(d, "--- a/etc/x\n+++ b/etc/x\n@@ -1,1 +0,0 @@\n-x\n");
	free(d);
}

static void test_host_diff_missing_final_newline_is_marked(void **state)
{
	(void)state;
	int rc;
	char *d = diff("a\nb", "a\nb\n", 4096, &rc);
	assert_string_equal(d, "--- a/etc/x\n+++ b/etc/x\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end "
	                       "of file\n+b\n");
	free(d);
}

static void test_host_diff_far_apart_changes_make_two_hunks(void **state)
{
	(void)state;
	int rc;
	char a[256] = "", b[256] = "";
	for (int i = 1; i <= 20; i++) {
		char l[8];
		snprintf(l, sizeof(l), "%d\n", i);
		strcat(a, l);
		strcat(b, i == 2 ? "two\n" : i == 18 ? "eighteen\n" : l);
	}
	char *d = diff(a, b, 4096, &rc);
	assert_non_null(strstr(d, "@@ -1,5 +1,5 @@\n 1\n-2\n+two\n 3\n 4\n 5\n"));
	assert_non_null(strstr(d, "@@ -15,6 +15,6 @@\n 15\n 16\n 17\n-18\n+eighteen\n 19\n 20\n"));
	free(d);
}

static void test_host_diff_insertion_in_the_middle_is_minimal(void **state)
{
	(void)state;
	int rc;
	char *d = diff("a\nb\nc\nd\n", "a\nb\nNEW\nc\nd\n", 4096, &rc);
	assert_string_equal(d, "--- a/etc/x\n+++ b/etc/x\n@@ -1,4 +1,5 @@\n a\n b\n+NEW\n c\n d\n");
	free(d);
}

static void test_host_diff_is_cut_at_max_on_a_line_end(void **state)
{
	(void)state;
	int rc;
	char big[4096] = "";
	for (int i = 0; i < 300; i++)
		strcat(big, "line\n");
	char *d = diff(NULL, big, 200, &rc);
	assert_int_equal(rc, 1);
	assert_true(strlen(d) <= 200);
	const char *tail = "\n\\ diff truncated\n";
	assert_string_equal(d + strlen(d) - strlen(tail), tail);
	free(d);
}

static void test_host_valid_pkg_names_follow_debian_policy(void **state)
{
	(void)state;
	assert_true(host_valid_pkg_name("apt", "openssh-server"));
	assert_true(host_valid_pkg_name(NULL, "libstdc++6"));
	assert_true(host_valid_pkg_name("apt", "g++"));
	assert_false(host_valid_pkg_name("apt", "a"));
	assert_false(host_valid_pkg_name("apt", "Foo"));
	assert_false(host_valid_pkg_name("apt", "-oAPT::x=1"));
	assert_false(host_valid_pkg_name("apt", "foo bar"));
	assert_false(host_valid_pkg_name("apt", "foo/bar"));
	assert_false(host_valid_pkg_name("apt", "foo=1.0"));
	assert_false(host_valid_pkg_name("apt", ""));
	assert_true(host_valid_pkg_name("dnf", "NetworkManager"));
	assert_true(host_valid_pkg_name("dnf", "python3_x"));
	assert_false(host_valid_pkg_name("dnf", "-x"));
}

static void test_host_valid_pkg_versions(void **state)
{
	(void)state;
	assert_true(host_valid_pkg_version("1:9.2p1-2+deb12u3"));
	assert_true(host_valid_pkg_version("1.0~rc1"));
	assert_false(host_valid_pkg_version("v1"));
	assert_false(host_valid_pkg_version("1.0 "));
	assert_false(host_valid_pkg_version("1;2"));
	assert_false(host_valid_pkg_version(""));
}

static void test_host_valid_unit_names_follow_systemd(void **state)
{
	(void)state;
	assert_true(host_valid_unit_name("ssh"));
	assert_true(host_valid_unit_name("ssh.service"));
	assert_true(host_valid_unit_name("getty@tty1.service"));
	assert_true(host_valid_unit_name("cron.timer"));
	assert_true(host_valid_unit_name("dev-disk-by\\x2duuid.device"));
	assert_false(host_valid_unit_name("-ssh"));
	assert_false(host_valid_unit_name(".service"));
	assert_false(host_valid_unit_name("a@b@c.service"));
	assert_false(host_valid_unit_name("ssh.bogus"));
	assert_false(host_valid_unit_name("ssh service"));
	assert_false(host_valid_unit_name("../x.service"));
	char longname[300];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	assert_false(host_valid_unit_name(longname));
}

static void test_host_valid_user_names_follow_useradd(void **state)
{
	(void)state;
	assert_true(host_valid_user_name("alice"));
	assert_true(host_valid_user_name("_apt"));
	assert_true(host_valid_user_name("svc-backup_2"));
	assert_true(host_valid_user_name("machine$"));
	assert_false(host_valid_user_name("Alice"));
	assert_false(host_valid_user_name("1abc"));
	assert_false(host_valid_user_name("-r"));
	assert_false(host_valid_user_name("a$b"));
	assert_false(host_valid_user_name("a.b"));
	assert_false(host_valid_user_name("abcdefghijabcdefghijabcdefghijabc")); /* 33 */
	assert_true(host_valid_group_name("sudo"));
	assert_false(host_valid_group_name("su do"));
}

static void test_host_file_write_read_and_backup_restore_byte_identical(void **state)
{
	(void)state;
	char path[128];
	snprintf(path, sizeof(path), "%s/conf", test_dir);
	struct vm_err err = {0};
	struct host_file f;
	assert_int_equal(host_file_read(path, 1024, &f, &err), 0);
	assert_false(f.exists);

	const char old[] = "old\0bytes\n";
	assert_int_equal(host_file_write(path, old, sizeof(old), 0640, getuid(), getgid(), &err), 0);
	struct host_backup b;
	assert_int_equal(host_backup_take(&b, path, 1024, &err), 0);
	assert_true(b.f.exists);
	assert_int_equal(b.f.mode, 0640);

	assert_int_equal(host_file_write(path, "new\n", 4, 0600, getuid(), getgid(), &err), 0);
	assert_int_equal(host_backup_restore(&b, &err), 0);
	assert_int_equal(host_file_read(path, 1024, &f, &err), 0);
	assert_int_equal(f.len, sizeof(old));
	assert_memory_equal(f.data, old, sizeof(old));
	assert_int_equal(f.mode, 0640);
	host_file_free(&f);
	host_backup_free(&b);

	/* a file that did not exist is removed again */
	char fresh[160];
	snprintf(fresh, sizeof(fresh), "%s/fresh", test_dir);
	assert_int_equal(host_backup_take(&b, fresh, 1024, &err), 0);
	assert_int_equal(host_file_write(fresh, "x", 1, 0644, getuid(), getgid(), &err), 0);
	assert_int_equal(host_backup_restore(&b, &err), 0);
	assert_int_equal(access(fresh, F_OK), -1);
	host_backup_free(&b);
}

static void test_host_file_read_refuses_a_symlink_and_a_too_large_file(void **state)
{
	(void)state;
	char path[128], link[128];
	snprintf(path, sizeof(path), "%s/big", test_dir);
	snprintf(link, sizeof(link), "%s/link", test_dir);
	struct vm_err err = {0};
	assert_int_equal(host_file_write(path, "0123456789", 10, 0644, getuid(), getgid(), &err), 0);
	struct host_file f;
	assert_int_equal(host_file_read(path, 5, &f, &err), -1);
	assert_int_equal(symlink(path, link), 0);
	assert_int_equal(host_file_read(link, 1024, &f, &err), -1);
	assert_false(f.exists);
}

static void test_host_parse_common_reads_check_and_refuses_unknown(void **state)
{
	(void)state;
	static const char *const known[] = {"names", NULL};
	struct probe_step_req st = {0};
	char epath[128];
	struct vm_err err = {0};
	json_t *o = json_pack("{s:s, s:b, s:[]}", "type", "pkg.ensure", "check", 1, "names");
	assert_int_equal(host_parse_common(o, &st, known, "steps[0]", epath, sizeof(epath), &err), 0);
	assert_true(st.check);
	json_object_set_new(o, "chek", json_true());
	assert_int_equal(host_parse_common(o, &st, known, "steps[0]", epath, sizeof(epath), &err), -1);
	assert_string_equal(epath, "steps[0].chek");
	json_object_del(o, "chek");
	json_object_set_new(o, "check", json_string("yes"));
	assert_int_equal(host_parse_common(o, &st, known, "steps[0]", epath, sizeof(epath), &err), -1);
	assert_string_equal(epath, "steps[0].check");
	json_decref(o);
}

static void test_host_change_records_before_after_and_sets_changed(void **state)
{
	(void)state;
	struct probe_step_req st = {.check = true};
	json_t *r = json_object();
	host_result_init(r, &st);
	assert_true(json_is_false(json_object_get(r, "changed")));
	assert_true(json_is_true(json_object_get(r, "check")));
	host_change_str(r, "state", "inactive", "active");
	struct host_file before = {.exists = true, .data = (char *)"a\n", .len = 2};
	json_t *c = host_change_file(r, "/etc/x", &before, "b\n", 2);
	assert_true(json_is_true(json_object_get(r, "changed")));
	assert_int_equal(json_array_size(json_object_get(r, "changes")), 2);
	assert_string_equal(json_string_value(json_object_get(c, "diff")),
	                    "--- a/etc/x\n+++ b/etc/x\n@@ -1,1 +1,1 @@\n-a\n+b\n");
	json_decref(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_host_diff_equal_texts_are_empty),
	    cmocka_unit_test(test_host_diff_one_changed_line_with_context),
	    cmocka_unit_test(test_host_diff_new_file_and_removed_file),
	    cmocka_unit_test(test_host_diff_missing_final_newline_is_marked),
	    cmocka_unit_test(test_host_diff_far_apart_changes_make_two_hunks),
	    cmocka_unit_test(test_host_diff_insertion_in_the_middle_is_minimal),
	    cmocka_unit_test(test_host_diff_is_cut_at_max_on_a_line_end),
	    cmocka_unit_test(test_host_valid_pkg_names_follow_debian_policy),
	    cmocka_unit_test(test_host_valid_pkg_versions),
	    cmocka_unit_test(test_host_valid_unit_names_follow_systemd),
	    cmocka_unit_test(test_host_valid_user_names_follow_useradd),
	    cmocka_unit_test_setup_teardown(test_host_file_write_read_and_backup_restore_byte_identical,
	                                    test_dir_setup, test_dir_teardown),
	    cmocka_unit_test_setup_teardown(test_host_file_read_refuses_a_symlink_and_a_too_large_file,
	                                    test_dir_setup, test_dir_teardown),
	    cmocka_unit_test(test_host_parse_common_reads_check_and_refuses_unknown),
	    cmocka_unit_test(test_host_change_records_before_after_and_sets_changed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
