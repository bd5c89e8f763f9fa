/* A tiny tmpfs for tests that need a really full filesystem (ENOSPC: root is
 * not refused by quotas or permissions): mounted in a private mount namespace
 * of the test process, so the host never sees it. */
#ifndef VMA_TEST_TMPFS_H
#define VMA_TEST_TMPFS_H

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

/* Mounts a tmpfs of size bytes (e.g. "64k") on dir (created) and fills it
 * but for about keep bytes. Returns false (the caller skips) without root or
 * mount namespaces. */
static bool test_tmpfs_full(const char *dir, const char *size, size_t keep)
{
	static bool private_ns;
	if (!private_ns) {
		if (unshare(CLONE_NEWNS) != 0)
			return false;
		if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
			return false;
		private_ns = true;
	}
	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return false;
	char opts[64];
	snprintf(opts, sizeof(opts), "size=%s,mode=0700", size);
	if (mount("vma-test", dir, "tmpfs", 0, opts) != 0)
		return false;
	char fill[4096 + 16];
	snprintf(fill, sizeof(fill), "%s/fill", dir);
	int fd = open(fill, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return false;
	static const char page[4096];
	for (int i = 0; i < 100000; i++) /* bounded: a tmpfs of at most ~400 MiB */
		if (write(fd, page, sizeof(page)) != (ssize_t)sizeof(page))
			break;
	/* free what the caller needs again (1 page granularity) */
	struct stat st;
	if (fstat(fd, &st) == 0 && keep > 0)
		(void)ftruncate(fd, st.st_size > (off_t)keep ? st.st_size - (off_t)keep : 0);
	close(fd);
	return true;
}

static void test_tmpfs_release(const char *dir)
{
	(void)umount2(dir, MNT_DETACH);
}

#endif
