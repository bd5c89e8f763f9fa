/* Unit tests for core/sock: the unix listener directory and name checks
 * (mode, owner, symlinks, stale and live sockets, what is left after bind). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/sock.h"

#include "test_dir.h"

static int listen_at(const char *path)
{
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(fd, 1), 0);
	return fd;
}

static void test_sock_prepare_bind_seal_gives_0600_socket(void **state)
{
	(void)state;
	char rt[128];
	snprintf(rt, sizeof(rt), "%s/run", test_dir);
	struct sock_unix s;
	struct vm_err err = {0};
	assert_int_equal(sock_unix_prepare(&s, rt, "w.sock", &err), 0);
	struct stat st;
	assert_int_equal(stat(rt, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700); /* created private */
	int fd = listen_at(s.path);
	assert_int_equal(sock_unix_seal(&s, &err), 0);
	assert_int_equal(lstat(s.path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0600);
	/* a second agent: the live socket is not taken over */
	struct sock_unix s2;
	assert_int_equal(sock_unix_prepare(&s2, rt, "w.sock", &err), -VM_ERR_BUSY);
	close(fd);
	sock_unix_close(&s);
}

static void test_sock_prepare_replaces_only_a_stale_socket(void **state)
{
	(void)state;
	char rt[128], path[192];
	snprintf(rt, sizeof(rt), "%s/run", test_dir);
	snprintf(path, sizeof(path), "%s/w.sock", rt);
	assert_int_equal(mkdir(rt, 0700), 0);
	close(listen_at(path)); /* the file stays, nobody accepts */
	struct sock_unix s;
	struct vm_err err = {0};
	assert_int_equal(sock_unix_prepare(&s, rt, "w.sock", &err), 0);
	assert_int_equal(access(path, F_OK), -1);
	sock_unix_close(&s);

	/* a symlink or a file at the name is never removed */
	assert_int_equal(symlink("/etc/passwd", path), 0);
	assert_int_equal(sock_unix_prepare(&s, rt, "w.sock", &err), -VM_ERR_PERM);
	struct stat st;
	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISLNK(st.st_mode));
	unlink(path);
	FILE *f = fopen(path, "w");
	fclose(f);
	assert_int_equal(sock_unix_prepare(&s, rt, "w.sock", &err), -VM_ERR_PERM);
	assert_int_equal(access(path, F_OK), 0);
}

static void test_sock_prepare_refuses_open_or_symlinked_dir(void **state)
{
	(void)state;
	char rt[128], link[160];
	snprintf(rt, sizeof(rt), "%s/run", test_dir);
	snprintf(link, sizeof(link), "%s/link", test_dir);
	assert_int_equal(mkdir(rt, 0700), 0);
	assert_int_equal(chmod(rt, 0775), 0); /* the group may replace what is in it */
	struct sock_unix s;
	struct vm_err err = {0};
	assert_int_equal(sock_unix_prepare(&s, rt, "w.sock", &err), -VM_ERR_PERM);
	assert_non_null(strstr(err.msg, "0700"));
	assert_int_equal(chmod(rt, 01777), 0); /* sticky /tmp-like: refused too */
	assert_int_equal(sock_unix_prepare(&s, rt, "w.sock", &err), -VM_ERR_PERM);
	assert_int_equal(chmod(rt, 0755), 0); /* others may list it: harmless */
	assert_int_equal(sock_unix_prepare(&s, rt, "w.sock", &err), 0);
	sock_unix_close(&s);
	assert_int_equal(chmod(rt, 0700), 0);
	assert_int_equal(symlink(rt, link), 0);
	assert_int_not_equal(sock_unix_prepare(&s, link, "w.sock", &err), 0);
	/* a path too long for sun_path is an error, not a silent cut */
	char longdir[200];
	memset(longdir, 'a', sizeof(longdir) - 1);
	longdir[0] = '/';
	longdir[sizeof(longdir) - 1] = '\0';
	assert_int_equal(sock_unix_prepare(&s, longdir, "w.sock", &err), -VM_ERR_INVALID);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_sock_prepare_bind_seal_gives_0600_socket,
	                                    test_dir_setup, test_dir_teardown),
	    cmocka_unit_test_setup_teardown(test_sock_prepare_replaces_only_a_stale_socket,
	                                    test_dir_setup, test_dir_teardown),
	    cmocka_unit_test_setup_teardown(test_sock_prepare_refuses_open_or_symlinked_dir,
	                                    test_dir_setup, test_dir_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
