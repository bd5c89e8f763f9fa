/* Unit tests for core/fs: atomic replace, mkdir -p, bounded reads, and caller
 * paths reached through an opened directory fd (symlink rule, O_TMPFILE
 * writes, backups). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/secret.h"

#include "test_dir.h"
#include "test_fake_io.h"

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

/* test_dir/name as a path. */
static const char *at(const char *name)
{
	static char buf[4][256];
	static int i;
	i = (i + 1) % 4;
	snprintf(buf[i], sizeof(buf[i]), "%s/%s", test_dir, name);
	return buf[i];
}

/* Entries of dir whose name contains needle. */
static int count_entries(const char *dir, const char *needle)
{
	DIR *d = opendir(dir);
	assert_non_null(d);
	struct dirent *e;
	int n = 0;
	while ((e = readdir(d)) != NULL)
		n += e->d_name[0] != '.' && strstr(e->d_name, needle) != NULL;
	closedir(d);
	return n;
}

static void assert_same_inode(int fd, const char *path)
{
	struct stat a, b;
	assert_int_equal(fstat(fd, &a), 0);
	assert_int_equal(stat(path, &b), 0);
	assert_true(a.st_dev == b.st_dev && a.st_ino == b.st_ino);
}

static void test_fs_open_parent_gives_dir_fd_and_leaf(void **state)
{
	(void)state;
	struct vm_err err = {0};
	assert_int_equal(mkdir(at("plain"), 0755), 0);
	char leaf[FS_NAME_MAX];
	int fd = fs_open_parent(at("plain/file.txt"), leaf, &err);
	assert_true(fd >= 0);
	assert_string_equal(leaf, "file.txt");
	assert_same_inode(fd, at("plain"));
	/* the walk (no openat2) resolves to the same directory */
	int wfd = fs_walk_dir(at("plain"), &err);
	assert_true(wfd >= 0);
	assert_same_inode(wfd, at("plain"));
	close(wfd);
	close(fd);
	assert_true(fs_open_parent("relative/x", leaf, &err) < 0);
	assert_int_equal(err.code, VM_ERR_INVALID);
	assert_true(fs_open_parent(at("plain/"), leaf, &err) < 0);
	assert_true(fs_open_parent(at("plain/.."), leaf, &err) < 0);
	assert_true(fs_open_parent(at("missing/x"), leaf, &err) < 0);
	assert_int_equal(err.code, VM_ERR_NOTFOUND);
}

static void test_fs_open_parent_refuses_symlink_in_world_writable_dir(void **state)
{
	(void)state;
	struct vm_err err = {0};
	assert_int_equal(mkdir(at("real"), 0755), 0);
	assert_int_equal(mkdir(at("pub"), 0755), 0);
	assert_int_equal(chmod(at("pub"), 01777), 0);
	assert_int_equal(symlink(at("real"), at("pub/link")), 0);
	char leaf[FS_NAME_MAX];
	assert_true(fs_open_parent(at("pub/link/f"), leaf, &err) < 0);
	assert_int_equal(err.code, FS_ERR_SYMLINK);
	assert_non_null(strstr(err.msg, "link"));
	assert_true(fs_walk_dir(at("pub/link"), &err) < 0);
	assert_int_equal(err.code, FS_ERR_SYMLINK);
}

static void test_fs_open_parent_refuses_symlink_in_dir_of_other_user(void **state)
{
	(void)state;
	if (geteuid() != 0)
		skip();
	struct vm_err err = {0};
	assert_int_equal(mkdir(at("home"), 0755), 0);
	assert_int_equal(chown(at("home"), 65534, 65534), 0);
	assert_int_equal(symlink("/etc", at("home/etc")), 0);
	char leaf[FS_NAME_MAX];
	assert_true(fs_open_parent(at("home/etc/passwd"), leaf, &err) < 0);
	assert_int_equal(err.code, FS_ERR_SYMLINK);
	struct stat sb;
	assert_true(fs_open_read(at("home/etc/passwd"), &sb, &err) < 0);
	assert_int_equal(err.code, FS_ERR_SYMLINK);
}

static void test_fs_open_parent_follows_symlink_only_root_could_place(void **state)
{
	(void)state;
	struct vm_err err = {0};
	/* test_dir is the agent's (root's) 0700 directory: its symlinks are trusted */
	assert_int_equal(mkdir(at("target"), 0755), 0);
	assert_int_equal(symlink("target", at("alias")), 0);
	char leaf[FS_NAME_MAX];
	int fd = fs_open_parent(at("alias/f"), leaf, &err);
	assert_true(fd >= 0);
	assert_same_inode(fd, at("target"));
	close(fd);
	/* a loop ends with an error, not a hang */
	assert_int_equal(symlink("loop2", at("loop1")), 0);
	assert_int_equal(symlink("loop1", at("loop2")), 0);
	assert_true(fs_open_parent(at("loop1/f"), leaf, &err) < 0);
}

static void test_fs_open_read_follows_trusted_leaf_symlink_relative(void **state)
{
	(void)state;
	struct vm_err err = {0};
	/* like /etc/os-release -> ../usr/lib/os-release */
	assert_int_equal(mkdir(at("usr"), 0755), 0);
	assert_int_equal(mkdir(at("etc"), 0755), 0);
	assert_int_equal(fs_write_atomic(at("usr/os-release"), "ID=x\n", 5, 0644, &err), 0);
	assert_int_equal(symlink("../usr/os-release", at("etc/os-release")), 0);
	struct stat sb;
	int fd = fs_open_read(at("etc/os-release"), &sb, &err);
	assert_true(fd >= 0);
	assert_int_equal(sb.st_size, 5);
	assert_same_inode(fd, at("usr/os-release"));
	close(fd);
}

static void test_fs_open_at_refuses_symlink_leaf_and_fifo(void **state)
{
	(void)state;
	struct vm_err err = {0};
	assert_int_equal(mkdir(at("leafs"), 0755), 0);
	assert_int_equal(symlink("/etc/passwd", at("leafs/link")), 0);
	assert_int_equal(mkfifo(at("leafs/fifo"), 0600), 0);
	char leaf[FS_NAME_MAX];
	int dfd = fs_open_parent(at("leafs/x"), leaf, &err);
	assert_true(dfd >= 0);
	struct stat sb;
	assert_true(fs_open_at(dfd, "link", &sb, &err) < 0);
	assert_int_equal(err.code, FS_ERR_SYMLINK);
	/* never opened for real: a FIFO without a writer would block here */
	assert_true(fs_open_at(dfd, "fifo", &sb, &err) < 0);
	assert_int_equal(err.code, VM_ERR_INVALID);
	assert_true(fs_open_at(dfd, "none", &sb, &err) < 0);
	assert_int_equal(err.code, VM_ERR_NOTFOUND);
	close(dfd);
}

static void test_fs_write_at_stays_in_opened_dir_after_swap(void **state)
{
	(void)state;
	struct vm_err err = {0};
	assert_int_equal(mkdir(at("swap-a"), 0755), 0);
	assert_int_equal(mkdir(at("swap-elsewhere"), 0700), 0);
	char leaf[FS_NAME_MAX];
	int dfd = fs_open_parent(at("swap-a/f"), leaf, &err);
	assert_true(dfd >= 0);
	/* the directory is moved away and its name becomes a symlink */
	assert_int_equal(rename(at("swap-a"), at("swap-b")), 0);
	assert_int_equal(symlink(at("swap-elsewhere"), at("swap-a")), 0);
	struct fs_write_opts o = {.mode = 0640};
	assert_int_equal(fs_write_at(dfd, leaf, "data", 4, &o, &err), 0);
	close(dfd);
	assert_int_equal(count_entries(at("swap-elsewhere"), ""), 0);
	struct stat st;
	assert_int_equal(stat(at("swap-b/f"), &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640);
	assert_int_equal(st.st_size, 4);
}

static void test_fs_write_at_create_only_and_no_temp_left(void **state)
{
	(void)state;
	struct vm_err err = {0};
	assert_int_equal(mkdir(at("w"), 0755), 0);
	char leaf[FS_NAME_MAX];
	int dfd = fs_open_parent(at("w/conf"), leaf, &err);
	assert_true(dfd >= 0);
	struct fs_write_opts o = {.mode = 0600, .create_only = true};
	assert_int_equal(fs_write_at(dfd, leaf, "one", 3, &o, &err), 0);
	assert_int_not_equal(fs_write_at(dfd, leaf, "two", 3, &o, &err), 0);
	assert_int_equal(err.code, VM_ERR_BUSY);
	o.create_only = false;
	assert_int_equal(fs_write_at(dfd, leaf, "three", 5, &o, &err), 0);
	close(dfd);
	char *data;
	size_t len;
	assert_int_equal(fs_read_file(at("w/conf"), 100, &data, &len, &err), 0);
	assert_string_equal(data, "three");
	free(data);
	assert_int_equal(count_entries(at("w"), ""), 1);
	assert_int_equal(count_entries(at("w"), ".vma.tmp."), 0);
}

static void test_fs_backup_keeps_owner_not_setuid(void **state)
{
	(void)state;
	if (geteuid() != 0)
		skip();
	struct vm_err err = {0};
	assert_int_equal(mkdir(at("bk"), 0755), 0);
	assert_int_equal(fs_write_atomic(at("bk/tool"), "#!/bin/sh\n", 10, 0600, &err), 0);
	assert_int_equal(chown(at("bk/tool"), 65534, 65534), 0);
	assert_int_equal(chmod(at("bk/tool"), 06755), 0);
	char leaf[FS_NAME_MAX];
	int dfd = fs_open_parent(at("bk/tool"), leaf, &err);
	assert_true(dfd >= 0);
	struct stat sb;
	int fd = fs_open_at(dfd, leaf, &sb, &err);
	assert_true(fd >= 0);
	assert_int_equal(fs_backup_at(dfd, "tool.bak", fd, &sb, 100, &err), 0);
	/* bounded: a larger original is refused and leaves nothing */
	assert_int_not_equal(fs_backup_at(dfd, "tool.bak2", fd, &sb, 9, &err), 0);
	assert_int_equal(err.code, VM_ERR_INVALID);
	assert_int_equal(access(at("bk/tool.bak2"), F_OK), -1);
	close(fd);
	close(dfd);
	struct stat st;
	assert_int_equal(lstat(at("bk/tool.bak"), &st), 0);
	assert_int_equal(st.st_uid, 65534);
	assert_int_equal(st.st_gid, 65534);
	assert_int_equal(st.st_mode & 07777, 0755);
	char *data;
	size_t len;
	assert_int_equal(fs_read_file(at("bk/tool.bak"), 100, &data, &len, &err), 0);
	assert_int_equal(len, 10);
	free(data);
	assert_int_equal(count_entries(at("bk"), ".vma.tmp."), 0);
}

/* Creates test_dir/name, an hour old when old. */
static int make_temp(const char *name, bool old)
{
	int fd = open(at(name), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	if (old) {
		struct timespec ts[2] = {{.tv_sec = time(NULL) - 3600},
		                         {.tv_sec = time(NULL) - 3600}};
		assert_int_equal(futimens(fd, ts), 0);
	}
	return fd;
}

static void test_fs_write_at_sweeps_only_dead_writers_temps(void **state)
{
	(void)state;
	struct vm_err err = {0};
	assert_int_equal(mkdir(at("sw"), 0755), 0);
	close(make_temp("sw/conf.vma.tmp.AAAAAA", true));     /* killed writer */
	int live = make_temp("sw/conf.vma.tmp.BBBBBB", true); /* a live, slow writer */
	assert_int_equal(flock(live, LOCK_EX | LOCK_NB), 0);
	close(make_temp("sw/conf.vma.tmp.CCCCCC", false)); /* just created, not yet locked */
	close(make_temp("sw/other.vma.tmp.DDDDDD", true)); /* another file's */
	char leaf[FS_NAME_MAX];
	int dfd = fs_open_parent(at("sw/conf"), leaf, &err);
	assert_true(dfd >= 0);
	struct fs_write_opts o = {.mode = 0600};
	assert_int_equal(fs_write_at(dfd, leaf, "x", 1, &o, &err), 0);
	close(dfd);
	close(live);
	assert_int_equal(access(at("sw/conf.vma.tmp.AAAAAA"), F_OK), -1);
	assert_int_equal(access(at("sw/conf.vma.tmp.BBBBBB"), F_OK), 0);
	assert_int_equal(access(at("sw/conf.vma.tmp.CCCCCC"), F_OK), 0);
	assert_int_equal(access(at("sw/other.vma.tmp.DDDDDD"), F_OK), 0);
}

/* Older versions copied with mkstemp ("name.tmp.XXXXXX", never flocked): a
 * killed one's copy is swept where the agent replaces its own files (same
 * directory, same name, stale); a fresh one, another name's, or any such
 * name in a caller's directory (file.write: it may be the customer's) stays. */
static void test_fs_own_writes_sweep_old_versions_dead_temps(void **state)
{
	(void)state;
	struct vm_err err = {0};
	assert_int_equal(mkdir(at("old"), 0755), 0);
	close(make_temp("old/vm-agent.tmp.Ab12Cd", true));  /* killed old writer */
	close(make_temp("old/vm-agent.tmp.Ef34Gh", false)); /* fresh: maybe live */
	close(make_temp("old/vm-agent.tmp.short", true));   /* not mkstemp's 6 */
	close(make_temp("old/other.tmp.Ij56Kl", true));     /* another file's */
	close(make_temp("old/src", false));
	assert_int_equal(fs_copy_file(at("old/src"), at("old/vm-agent"), 0755, 0, &err), 0);
	assert_int_equal(access(at("old/vm-agent.tmp.Ab12Cd"), F_OK), -1);
	assert_int_equal(access(at("old/vm-agent.tmp.Ef34Gh"), F_OK), 0);
	assert_int_equal(access(at("old/vm-agent.tmp.short"), F_OK), 0);
	assert_int_equal(access(at("old/other.tmp.Ij56Kl"), F_OK), 0);
	close(make_temp("old/state.json.tmp.Mn78Op", true));
	assert_int_equal(fs_write_atomic(at("old/state.json"), "{}", 2, 0600, &err), 0);
	assert_int_equal(access(at("old/state.json.tmp.Mn78Op"), F_OK), -1);
	/* a caller's directory: not ours to clean */
	close(make_temp("old/app.conf.tmp.Qr90St", true));
	char leaf[FS_NAME_MAX];
	int dfd = fs_open_parent(at("old/app.conf"), leaf, &err);
	assert_true(dfd >= 0);
	struct fs_write_opts o = {.mode = 0600};
	assert_int_equal(fs_write_at(dfd, leaf, "x", 1, &o, &err), 0);
	close(dfd);
	assert_int_equal(access(at("old/app.conf.tmp.Qr90St"), F_OK), 0);
}

/* write() returning 0 for a non-empty buffer must fail the write, not loop. */
static void test_fs_write_at_fails_when_write_returns_zero(void **state)
{
	(void)state;
	char path[128];
	struct vm_err err = {0};
	snprintf(path, sizeof(path), "%s/zero.txt", test_dir);
	fake_write_zero_begin();
	int rc = fs_write_atomic(path, "content", 7, 0600, &err);
	fake_write_zero_end();
	assert_int_equal(rc, -VM_ERR_IO);
	assert_non_null(strstr(err.msg, "zero.txt"));
	assert_int_not_equal(access(path, F_OK), 0);
}

/* A secret file that is a FIFO (or device) is refused on the opened fd, and
 * the open does not wait for a writer: the agent's start must not hang on it. */
static void test_secret_load_file_refuses_fifo_without_blocking(void **state)
{
	(void)state;
	char fifo[128];
	snprintf(fifo, sizeof(fifo), "%s/token.fifo", test_dir);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	struct secret s = {0};
	struct vm_err err = {0};
	signal(SIGALRM, SIG_DFL);
	alarm(5); /* a blocking open kills the test here */
	int rc = secret_load_file(&s, fifo, &err);
	alarm(0);
	assert_int_equal(rc, -VM_ERR_INVALID);
	assert_non_null(strstr(err.msg, "not a regular file"));
	assert_null(s.value);
	assert_int_equal(secret_load_file(&s, "/dev/null", &err), -VM_ERR_INVALID);
	unlink(fifo);
}

/* fs_remove_tree empties nested directories and removes a symlink inside
 * without following it (what it points to survives). */
static void test_fs_remove_tree_does_not_follow_symlinks(void **state)
{
	(void)state;
	char keep[PATH_MAX], tree[PATH_MAX], p[PATH_MAX + 64];
	snprintf(keep, sizeof(keep), "%s/keep", test_dir);
	snprintf(tree, sizeof(tree), "%s/tree", test_dir);
	assert_int_equal(mkdir(keep, 0700), 0);
	snprintf(p, sizeof(p), "%s/precious", keep);
	assert_int_equal(fs_write_atomic(p, "x", 1, 0600, &(struct vm_err){0}), 0);
	snprintf(p, sizeof(p), "%s/a/b", tree);
	assert_int_equal(fs_mkdir_p(p, 0700, &(struct vm_err){0}), 0);
	snprintf(p, sizeof(p), "%s/a/b/file", tree);
	assert_int_equal(fs_write_atomic(p, "y", 1, 0600, &(struct vm_err){0}), 0);
	snprintf(p, sizeof(p), "%s/a/link", tree);
	assert_int_equal(symlink(keep, p), 0);
	struct vm_err err = {0};
	assert_int_equal(fs_remove_tree(tree, &err), 0);
	struct stat sb;
	assert_int_not_equal(lstat(tree, &sb), 0);
	snprintf(p, sizeof(p), "%s/precious", keep);
	assert_int_equal(stat(p, &sb), 0);
	assert_int_equal(fs_remove_tree(tree, &err), 0); /* missing is fine */
}

/* .ssh-style directories: created 0700 with the given mode applied on the
 * fd, an existing one opened as is, a symlink or a file refused. */
static void test_fs_open_dir_at_creates_refuses_symlink_and_file(void **state)
{
	(void)state;
	char base[128];
	snprintf(base, sizeof(base), "%s/opendir", test_dir);
	assert_int_equal(mkdir(base, 0755), 0);
	int dfd = open(base, O_RDONLY | O_DIRECTORY);
	assert_true(dfd >= 0);
	struct vm_err err = {0};
	struct stat sb;
	bool created;
	assert_int_equal(fs_open_dir_at(dfd, "d", false, 0700, false, 0, 0, &created, &sb, &err),
	                 -VM_ERR_NOTFOUND);
	int fd = fs_open_dir_at(dfd, "d", true, 0711, true, getuid(), getgid(), &created, &sb, &err);
	assert_true(fd >= 0);
	assert_true(created);
	assert_int_equal(sb.st_mode & 07777, 0711);
	close(fd);
	fd = fs_open_dir_at(dfd, "d", true, 0700, false, 0, 0, &created, &sb, &err);
	assert_true(fd >= 0);
	assert_false(created);
	assert_int_equal(sb.st_mode & 07777, 0711); /* an existing one is not changed */
	assert_int_equal(fs_set_owner_mode(fd, false, 0, 0, 0700, &err), 0);
	assert_int_equal(fstat(fd, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0700);
	close(fd);
	assert_int_equal(symlinkat("/", dfd, "link"), 0);
	assert_int_equal(fs_open_dir_at(dfd, "link", true, 0700, false, 0, 0, &created, &sb, &err),
	                 -FS_ERR_SYMLINK);
	int f = openat(dfd, "file", O_CREAT | O_WRONLY, 0600);
	close(f);
	assert_int_equal(fs_open_dir_at(dfd, "file", true, 0700, false, 0, 0, &created, &sb, &err),
	                 -VM_ERR_INVALID);
	close(dfd);
}

/* The start-up sweep: a dead writer's linked temp goes (any leaf, in the
 * subdirectories too), a live writer's (flocked) stays, as do files that are
 * not ours or have a second link; _of takes one leaf's temps only. */
static void sweep_put(const char *dir, const char *name, const char *text)
{
	char p[256];
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	FILE *f = fopen(p, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static bool sweep_has(const char *dir, const char *name)
{
	char p[256];
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	return access(p, F_OK) == 0;
}

static void test_fs_sweep_dead_temps_removes_only_dead_writers_temps(void **state)
{
	(void)state;
	char base[128], sub[160], p[256], q[256];
	snprintf(base, sizeof(base), "%s/sweep", test_dir);
	snprintf(sub, sizeof(sub), "%s/health", base);
	assert_int_equal(mkdir(base, 0700), 0);
	assert_int_equal(mkdir(sub, 0700), 0);
	sweep_put(base, "state.json.vma.tmp.Ab12Cd", "{}");     /* dead: goes */
	sweep_put(sub, "last_report.json.vma.tmp.7Ggrr1", "{}"); /* dead, below: goes */
	sweep_put(base, "live.json.vma.tmp.ZZZZZZ", "{}");      /* flocked: stays */
	sweep_put(base, "linked.vma.tmp.QQQQQQ", "x");          /* two links: stays */
	sweep_put(base, "notes.vma.tmp.short", "x");            /* not our pattern */
	sweep_put(base, "config.yaml", "a: 1\n");
	snprintf(p, sizeof(p), "%s/linked.vma.tmp.QQQQQQ", base);
	snprintf(q, sizeof(q), "%s/linked-too", base);
	assert_int_equal(link(p, q), 0);
	snprintf(p, sizeof(p), "%s/live.json.vma.tmp.ZZZZZZ", base);
	int live = open(p, O_RDONLY);
	assert_true(live >= 0);
	assert_int_equal(flock(live, LOCK_EX | LOCK_NB), 0);
	assert_int_equal(fs_sweep_dead_temps(base, 1), 2);
	assert_false(sweep_has(base, "state.json.vma.tmp.Ab12Cd"));
	assert_false(sweep_has(sub, "last_report.json.vma.tmp.7Ggrr1"));
	assert_true(sweep_has(base, "live.json.vma.tmp.ZZZZZZ"));
	assert_true(sweep_has(base, "linked.vma.tmp.QQQQQQ"));
	assert_true(sweep_has(base, "notes.vma.tmp.short"));
	assert_true(sweep_has(base, "config.yaml"));
	close(live);
	/* depth 0 leaves the subdirectory alone; _of takes only its leaf's */
	sweep_put(sub, "x.vma.tmp.AAAAAA", "{}");
	assert_int_equal(fs_sweep_dead_temps(base, 0), 1); /* the now unlocked live one */
	assert_true(sweep_has(sub, "x.vma.tmp.AAAAAA"));
	sweep_put(base, "config.yaml.vma.tmp.BBBBBB", "a: 2\n");
	sweep_put(base, "other.yaml.vma.tmp.CCCCCC", "a: 3\n");
	snprintf(p, sizeof(p), "%s/config.yaml", base);
	assert_int_equal(fs_sweep_dead_temps_of(p), 1);
	assert_false(sweep_has(base, "config.yaml.vma.tmp.BBBBBB"));
	assert_true(sweep_has(base, "other.yaml.vma.tmp.CCCCCC"));
	assert_int_equal(fs_sweep_dead_temps_of("relative/config.yaml"), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_fs_write_atomic_replaces_with_mode_and_no_temp_left),
	    cmocka_unit_test(test_fs_write_atomic_missing_dir_fails_cleanly),
	    cmocka_unit_test(test_fs_mkdir_p_nested_and_existing),
	    cmocka_unit_test(test_fs_read_file_enforces_limit),
	    cmocka_unit_test(test_fs_open_parent_gives_dir_fd_and_leaf),
	    cmocka_unit_test(test_fs_open_parent_refuses_symlink_in_world_writable_dir),
	    cmocka_unit_test(test_fs_open_parent_refuses_symlink_in_dir_of_other_user),
	    cmocka_unit_test(test_fs_open_parent_follows_symlink_only_root_could_place),
	    cmocka_unit_test(test_fs_open_read_follows_trusted_leaf_symlink_relative),
	    cmocka_unit_test(test_fs_open_at_refuses_symlink_leaf_and_fifo),
	    cmocka_unit_test(test_fs_write_at_stays_in_opened_dir_after_swap),
	    cmocka_unit_test(test_fs_write_at_create_only_and_no_temp_left),
	    cmocka_unit_test(test_fs_backup_keeps_owner_not_setuid),
	    cmocka_unit_test(test_fs_write_at_sweeps_only_dead_writers_temps),
	    cmocka_unit_test(test_fs_own_writes_sweep_old_versions_dead_temps),
	    cmocka_unit_test(test_fs_write_at_fails_when_write_returns_zero),
	    cmocka_unit_test(test_secret_load_file_refuses_fifo_without_blocking),
	    cmocka_unit_test(test_fs_remove_tree_does_not_follow_symlinks),
	    cmocka_unit_test(test_fs_open_dir_at_creates_refuses_symlink_and_file),
	    cmocka_unit_test(test_fs_sweep_dead_temps_removes_only_dead_writers_temps),
	};
	return cmocka_run_group_tests(tests, test_dir_setup, test_dir_teardown);
}
