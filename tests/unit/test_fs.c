/* Unit tests for core/fs: atomic replace, mkdir -p, bounded reads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/fs.h"

#include "test_dir.h"

static void test_fs_write_atomic_replaces_with_mode_and_no_temp_left(void **state)
{
	(void)state;
	char path[128];
	struct vm_err err;
	snprintf(path, sizeof(path), "%s/secret.txt", test_dir);
	assert_int_equal(fs_write_atomic(path, "one", 3, 0600, &err), 0);
	assert_int_equal(fs_write_atomic(path, "second", 6, 0600, &err), 0);
	char *data;
	size_t len;
	assert_int_equal(fs_read_file(path, 100, &data, &len, &err), 0);
	assert_int_equal(len, 6);
	assert_string_equal(data, "second");
	free(data);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	DIR *d = opendir(test_dir);
	struct dirent *e;
	int entries = 0;
	while ((e = readdir(d)) != NULL)
		entries += e->d_name[0] != '.';
	closedir(d);
	assert_int_equal(entries, 1);
}

static void test_fs_write_atomic_missing_dir_fails_cleanly(void **state)
{
	(void)state;
	char path[128];
	struct vm_err err = {0};
	snprintf(path, sizeof(path), "%s/missing/x", test_dir);
	assert_int_not_equal(fs_write_atomic(path, "x", 1, 0600, &err), 0);
	assert_non_null(strstr(err.msg, "missing/x"));
}

static void test_fs_mkdir_p_nested_and_existing(void **state)
{
	(void)state;
	char path[128];
	struct vm_err err;
	snprintf(path, sizeof(path), "%s/a/b/c", test_dir);
	assert_int_equal(fs_mkdir_p(path, 0700, &err), 0);
	assert_int_equal(fs_mkdir_p(path, 0700, &err), 0);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	char file[160];
	snprintf(file, sizeof(file), "%s/file", test_dir);
	assert_int_equal(fs_write_atomic(file, "x", 1, 0600, &err), 0);
	assert_int_not_equal(fs_mkdir_p(file, 0700, &err), 0);
	assert_non_null(strstr(err.msg, "not a directory"));
}

static void test_fs_read_file_enforces_limit(void **state)
{
	(void)state;
	char path[128];
	struct vm_err err;
	snprintf(path, sizeof(path), "%s/big", test_dir);
	char buf[10000];
	memset(buf, 'a', sizeof(buf));
	assert_int_equal(fs_write_atomic(path, buf, sizeof(buf), 0600, &err), 0);
	char *data;
	assert_int_not_equal(fs_read_file(path, 9999, &data, NULL, &err), 0);
	assert_null(data);
	assert_int_equal(err.code, VM_ERR_INVALID);
	size_t len;
	assert_int_equal(fs_read_file(path, 10000, &data, &len, &err), 0);
	assert_int_equal(len, 10000);
	free(data);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_fs_write_atomic_replaces_with_mode_and_no_temp_left),
	    cmocka_unit_test(test_fs_write_atomic_missing_dir_fails_cleanly),
	    cmocka_unit_test(test_fs_mkdir_p_nested_and_existing),
	    cmocka_unit_test(test_fs_read_file_enforces_limit),
	};
	return cmocka_run_group_tests(tests, test_dir_setup, test_dir_teardown);
}
