/* Files: atomic replace, directories, bounded reads. */
#ifndef VMA_CORE_FS_H
#define VMA_CORE_FS_H

#include <stddef.h>
#include <sys/types.h>

#include "core/err.h"

/* Writes data to path atomically: temp file in the same directory, fsync,
 * rename over path, fsync of the directory. A crash leaves either the old or
 * the new content, never a mix. */
int fs_write_atomic(const char *path, const void *data, size_t len, mode_t mode,
                    struct vm_err *err);

/* Creates path and its parents (like mkdir -p); existing dirs are fine. */
int fs_mkdir_p(const char *path, mode_t mode, struct vm_err *err);

/* Reads at most max bytes of path into a NUL-terminated buffer the caller
 * frees. A file larger than max is an error (VM_ERR_INVALID). */
int fs_read_file(const char *path, size_t max, char **out, size_t *len, struct vm_err *err);

/* fsyncs the directory that contains path. */
int fs_sync_parent(const char *path, struct vm_err *err);

#endif
