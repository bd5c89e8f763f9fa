/* A fresh scratch directory for the tests that ask for one (cmocka group or
 * per-test setup/teardown), removed with everything in it afterwards. */
#ifndef VMA_TEST_DIR_H
#define VMA_TEST_DIR_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>

static char test_dir[64];

static int test_dir_remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

static int test_dir_setup(void **state)
{
	(void)state;
	snprintf(test_dir, sizeof(test_dir), "/tmp/vma-test-XXXXXX");
	return mkdtemp(test_dir) == NULL ? -1 : 0;
}

static int test_dir_teardown(void **state)
{
	(void)state;
	return nftw(test_dir, test_dir_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
