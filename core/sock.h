/* Unix listening sockets only the agent's own user may reach: the directory
 * is checked through an opened fd, stale sockets are replaced, anything else
 * at the name is refused. civetweb (webhook) binds the path itself, so the
 * checks come before bind (sock_unix_prepare) and after it (sock_unix_seal). */
#ifndef VMA_CORE_SOCK_H
#define VMA_CORE_SOCK_H

#include <stddef.h>
#include <sys/un.h>

#include "core/err.h"

#define SOCK_UNIX_PATH_MAX sizeof(((struct sockaddr_un *)0)->sun_path)

struct sock_unix {
	int dirfd; /* the checked directory, open until sock_unix_close */
	char dir[SOCK_UNIX_PATH_MAX];
	char name[64];
	char path[SOCK_UNIX_PATH_MAX]; /* dir/name, what bind and connect use */
};

/* Creates dir (0700) when missing and opens it without following a symlink;
 * it must be a directory owned by the effective uid that neither group nor
 * others may write to. A socket at name that nobody accepts on is removed (an agent that
 * was killed); one that accepts is VM_ERR_BUSY; anything else there (a file,
 * a symlink) is refused. On success s->path is ready to bind. */
int sock_unix_prepare(struct sock_unix *s, const char *dir, const char *name, struct vm_err *err);

/* After bind: the name must be a socket owned by us in the same directory
 * (not swapped meanwhile); sets its mode to 0600. */
int sock_unix_seal(struct sock_unix *s, struct vm_err *err);

/* Closes the directory fd (the listener removes the socket itself). */
void sock_unix_close(struct sock_unix *s);

#endif
