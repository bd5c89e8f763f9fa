/* Files: atomic replace, directories, bounded reads, and the one way to reach a
 * file on a caller's behalf: through an opened directory fd, never by path. */
#ifndef VMA_CORE_FS_H
#define VMA_CORE_FS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "core/err.h"

/* Writes data to path atomically: unnamed temp file (O_TMPFILE) in the same
 * directory, fsync, link + rename over path, fsync of the directory. A crash
 * leaves either the old or the new content, never a mix, and no temp file.
 * For the agent's own files: path is trusted and resolved normally. */
int fs_write_atomic(const char *path, const void *data, size_t len, mode_t mode,
                    struct vm_err *err);

/* Writes all of data to fd, retrying short writes and EINTR. A write that
 * makes no progress (returns 0) is an error (errno EIO), never a retry loop.
 * Returns 0, or -1 with errno set. */
int fs_write_all(int fd, const void *data, size_t len);

/* Copies the regular file src (checked on the opened fd: a FIFO or device is
 * VM_ERR_INVALID, and the open never blocks) to dst the fs_write_atomic way,
 * with mode, in bounded chunks; more than max bytes (0 = no limit) is
 * VM_ERR_INVALID and leaves dst as it was. For the agent's own paths. */
int fs_copy_file(const char *src, const char *dst, mode_t mode, uint64_t max, struct vm_err *err);

/* Opens the agent's own file path for reading (flags may add O_NOFOLLOW) and
 * checks the opened fd: anything but a regular file is VM_ERR_INVALID, and
 * the open never blocks (O_NONBLOCK: a FIFO waits for no writer, no device
 * becomes a controlling tty). Missing: VM_ERR_NOTFOUND. sb is fstat of the
 * returned fd. */
int fs_open_regular(const char *path, int flags, struct stat *sb, struct vm_err *err);

/* Creates path and its parents (like mkdir -p); existing dirs are fine. */
int fs_mkdir_p(const char *path, mode_t mode, struct vm_err *err);

/* Reads at most max bytes of path into a NUL-terminated buffer the caller
 * frees. A file larger than max is an error (VM_ERR_INVALID). */
int fs_read_file(const char *path, size_t max, char **out, size_t *len, struct vm_err *err);

/* The same from an open fd (read to its end; name is for messages). */
int fs_read_fd(int fd, const char *name, size_t max, char **out, size_t *len, struct vm_err *err);

/* fsyncs the directory that contains path. */
int fs_sync_parent(const char *path, struct vm_err *err);

/* --- Caller paths ---------------------------------------------------------
 * A path a caller sends (file.read, file.write) is resolved once into an
 * opened directory fd; the file is then opened, created and renamed relative
 * to that fd, so a directory or symlink swapped meanwhile cannot redirect it.
 * Symlinks: a symlink is followed only when the directory holding it is owned
 * by root (or the agent's euid) and writable by nobody else, so only root
 * could have placed it (/etc/os-release -> ../usr/lib/os-release); any other
 * symlink in the path fails with FS_ERR_SYMLINK. */

/* err->code when a path is refused because of a symlink. */
#define FS_ERR_SYMLINK VM_ERR_PERM
/* A stable name for an error of these functions, for API results:
 * symlink_refused, not_found, exists, invalid (not a regular file, a path or
 * file too long), io_error. */
const char *fs_err_name(const struct vm_err *err);

/* Size of a buffer for one path component (NAME_MAX + 1). */
#define FS_NAME_MAX 256

/* Opens (O_RDONLY | O_DIRECTORY) the directory holding the last component of
 * the absolute path and copies that component into leaf. openat2 with
 * RESOLVE_NO_SYMLINKS, else fs_walk_dir. Returns the fd or a negative code. */
int fs_open_parent(const char *path, char leaf[FS_NAME_MAX], struct vm_err *err);

/* The component-by-component walk (openat O_PATH | O_NOFOLLOW, fstat each
 * step) that applies the symlink rule above; used when openat2 is missing
 * or the path holds a symlink. Returns an O_RDONLY directory fd. */
int fs_walk_dir(const char *dir, struct vm_err *err);

/* Opens leaf in dirfd for reading, never following a symlink (FS_ERR_SYMLINK)
 * and never opening anything but a regular file (VM_ERR_INVALID; no device
 * is opened); sb is fstat of the returned fd. Missing: VM_ERR_NOTFOUND. */
int fs_open_at(int dirfd, const char *leaf, struct stat *sb, struct vm_err *err);

/* Opens the regular file at the absolute path for reading by the rule above
 * (a trusted symlink, also as the last component, is followed). */
int fs_open_read(const char *path, struct stat *sb, struct vm_err *err);

struct fs_write_opts {
	mode_t mode;  /* applied after the owner: chown would clear setuid */
	bool set_ids; /* fchown to uid:gid */
	uid_t uid;
	gid_t gid;
	bool create_only; /* fail (VM_ERR_BUSY) if leaf exists, atomically */
};

/* Replaces dirfd/leaf with data atomically: O_TMPFILE in dirfd (a named,
 * O_EXCL temp removed on failure where unsupported), owner, mode, fsync,
 * linkat/renameat in dirfd, fsync of dirfd. kill -9 leaves leaf old or new;
 * killed between the link and the rename it leaves the complete temp
 * "<leaf>.vma.tmp.XXXXXX" too, removed by the next write of leaf once stale,
 * and in the agent's own directories by fs_sweep_dead_temps at start. */
/* At start, before anything of ours writes there: removes the temp files that
 * killed writers left in dir and depth levels below it (our name pattern, one
 * link, not flocked: every temp is flocked by its writer from creation on).
 * For the agent's own directories only. Returns how many went. */
int fs_sweep_dead_temps(const char *dir, int depth);
/* The same for one file's temps only (an absolute path in a directory that is
 * not all ours, e.g. the config file's). */
int fs_sweep_dead_temps_of(const char *path);

int fs_write_at(int dirfd, const char *leaf, const void *data, size_t len,
                const struct fs_write_opts *o, struct vm_err *err);

/* Opens dir/name as a lock file (created 0600, close-on-exec, never through a
 * symlink) and takes an exclusive flock on it. While another open file holds
 * it, retries for up to wait_ms (0: once). Returns the descriptor (the lock
 * lasts until it is closed), -VM_ERR_BUSY when still held, or another
 * negative vm_err code. */
int fs_lock_open(const char *dir, const char *name, int wait_ms, struct vm_err *err);

/* Whether a POSIX (fcntl) lock on fd would conflict with a write lock of
 * ours — dpkg's and apt's locks — without taking it: 1 (held; *pid is the
 * holder, 0 when it is in a pid namespace we cannot see), 0 (free), -1. */
int fs_lock_holder(int fd, pid_t *pid);

/* Removes dirfd/leaf (not a directory; a symlink itself, never its target)
 * and fsyncs dirfd; a missing leaf is fine. */
int fs_remove_at(int dirfd, const char *leaf, struct vm_err *err);

/* Opens the directory name in dirfd (O_RDONLY), never following a symlink
 * (FS_ERR_SYMLINK); anything but a directory is VM_ERR_INVALID; missing is
 * VM_ERR_NOTFOUND unless create, which makes it (mode, then owner uid:gid
 * when set_ids, applied on the opened fd) and sets *created. sb is fstat of
 * the returned fd. */
int fs_open_dir_at(int dirfd, const char *name, bool create, mode_t mode, bool set_ids, uid_t uid,
                   gid_t gid, bool *created, struct stat *sb, struct vm_err *err);

/* Owner (when set_ids) then mode of an open file or directory. */
int fs_set_owner_mode(int fd, bool set_ids, uid_t uid, gid_t gid, mode_t mode, struct vm_err *err);

/* Copies the open regular file srcfd (from offset 0, at most max bytes, else
 * VM_ERR_INVALID) to dirfd/name the same atomic way, in bounded chunks. The
 * copy gets sb's owner and group and sb's permission bits without setuid,
 * setgid and sticky: it is never more usable or readable than the original. */
int fs_backup_at(int dirfd, const char *name, int srcfd, const struct stat *sb, uint64_t max,
                 struct vm_err *err);

/* Removes the directory tree at the absolute path: each level opened
 * O_NOFOLLOW | O_DIRECTORY and emptied with unlinkat relative to its fd, so
 * a symlink inside is removed, never followed. Missing is fine. For the
 * program's own private directories (the runner's scratch). */
int fs_remove_tree(const char *path, struct vm_err *err);

#endif
