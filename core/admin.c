/* Admin socket server (one thread, one connection at a time: admin traffic is
 * a handful of local requests) and its client. */
#include "core/admin.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/log.h"

#define CLIENT_IO_MS 5000

struct admin_server {
	int fd;
	int stop_pipe[2];
	pthread_t thr;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	const struct admin_cmd *cmds;
	size_t ncmds;
	void *ctx;
};

void admin_socket_path(const char *runtime_dir, char *out, size_t cap)
{
	snprintf(out, cap, "%.*s/" ADMIN_SOCKET_NAME, (int)(cap > 16 ? cap - 16 : 0), runtime_dir);
}

int admin_parse_request(const char *line, size_t len, char *cmd, size_t cmd_cap, json_t **req,
                        struct vm_err *err)
{
	*req = NULL;
	if (len > ADMIN_REQUEST_MAX)
		return vm_err_set(err, VM_ERR_INVALID, "request larger than %d bytes",
		                  ADMIN_REQUEST_MAX);
	json_error_t je;
	json_t *j = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
	if (j == NULL)
		return vm_err_set(err, VM_ERR_INVALID, "request is not JSON: %s", je.text);
	const char *c = json_string_value(json_object_get(j, "cmd"));
	if (!json_is_object(j) || c == NULL || c[0] == '\0' || strlen(c) >= cmd_cap) {
		json_decref(j);
		return vm_err_set(err, VM_ERR_INVALID,
		                  "request must be an object with a string \"cmd\"");
	}
	snprintf(cmd, cmd_cap, "%s", c);
	*req = j;
	return 0;
}

/* --- server ---------------------------------------------------------------------------- */

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static void reply(int fd, json_t *doc)
{
	char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
	json_decref(doc);
	if (text == NULL) {
		static const char oom[] = "{\"ok\":false,\"error\":{\"code\":\"internal\","
		                          "\"message\":\"out of memory\"}}\n";
		(void)write_all(fd, oom, sizeof(oom) - 1);
		return;
	}
	size_t n = strlen(text);
	if (n + 1 > ADMIN_REPLY_MAX) {
		free(text);
		reply(fd, json_pack("{s:b,s:{s:s,s:s}}", "ok", 0, "error", "code", "internal",
		                    "message", "reply too large"));
		return;
	}
	if (write_all(fd, text, n) == 0)
		(void)write_all(fd, "\n", 1);
	free(text);
}

static void reply_error(int fd, const char *code, const char *msg)
{
	reply(fd, json_pack("{s:b,s:{s:s,s:s}}", "ok", 0, "error", "code", code, "message", msg));
}

/* Reads one line (without the newline), bounded; the socket has a timeout. */
static int read_line(int fd, char *buf, size_t cap, size_t *len)
{
	size_t n = 0;
	while (n < cap) {
		ssize_t r = recv(fd, buf + n, cap - n, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		char *nl = memchr(buf + n, '\n', (size_t)r);
		n += (size_t)r;
		if (nl != NULL) {
			*len = (size_t)(nl - buf);
			return 0;
		}
	}
	if (n > 0 && n < cap) { /* EOF without newline: accept */
		*len = n;
		return 0;
	}
	return -1;
}

static bool peer_allowed(int fd)
{
	struct ucred cr;
	socklen_t len = sizeof(cr);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0)
		return false;
	return cr.uid == 0 || cr.uid == geteuid();
}

static void serve_conn(struct admin_server *srv, int fd)
{
	struct timeval tv = {CLIENT_IO_MS / 1000, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (!peer_allowed(fd)) {
		reply_error(fd, "forbidden", "only root or the agent's user may use this socket");
		return;
	}
	char *buf = malloc(ADMIN_REQUEST_MAX + 1);
	if (buf == NULL) {
		reply_error(fd, "internal", "out of memory");
		return;
	}
	size_t len = 0;
	if (read_line(fd, buf, ADMIN_REQUEST_MAX + 1, &len) != 0) {
		reply_error(fd, "bad_request", "expected one line of JSON of at most 64 KiB");
		free(buf);
		return;
	}
	char cmd[64];
	json_t *req;
	struct vm_err err = {0};
	if (admin_parse_request(buf, len, cmd, sizeof(cmd), &req, &err) != 0) {
		free(buf);
		reply_error(fd, "bad_request", err.msg);
		return;
	}
	free(buf);
	const struct admin_cmd *c = NULL;
	for (size_t i = 0; i < srv->ncmds; i++)
		if (strcmp(srv->cmds[i].name, cmd) == 0)
			c = &srv->cmds[i];
	if (c == NULL) {
		char msg[128];
		snprintf(msg, sizeof(msg), "unknown command \"%.60s\"", cmd);
		reply_error(fd, "unknown_command", msg);
	} else {
		json_t *res = c->fn(srv->ctx, req, &err);
		if (res == NULL)
			reply_error(fd, err.code == VM_ERR_INVALID ? "invalid" : "failed",
			            err.msg[0] ? err.msg : "command failed");
		else
			reply(fd, json_pack("{s:b,s:o}", "ok", 1, "result", res));
	}
	json_decref(req);
}

static void *server_main(void *arg)
{
	struct admin_server *srv = arg;
	for (;;) {
		struct pollfd p[2] = {{srv->fd, POLLIN, 0}, {srv->stop_pipe[0], POLLIN, 0}};
		int r = poll(p, 2, -1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 || p[1].revents != 0)
			break;
		if (p[0].revents & POLLIN) {
			int c = accept4(srv->fd, NULL, NULL, SOCK_CLOEXEC);
			if (c < 0)
				continue;
			serve_conn(srv, c);
			close(c);
		}
	}
	return NULL;
}

/* True when something accepts connections on path (another agent). */
static bool socket_alive(const char *path)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	bool alive = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	close(fd);
	return alive;
}

struct admin_server *admin_start(const char *runtime_dir, const struct admin_cmd *cmds, size_t n,
                                 void *ctx, struct vm_err *err)
{
	struct admin_server *srv = calloc(1, sizeof(*srv));
	if (srv == NULL) {
		vm_err_set(err, VM_ERR_NOMEM, "out of memory");
		return NULL;
	}
	srv->fd = -1;
	srv->stop_pipe[0] = srv->stop_pipe[1] = -1;
	srv->cmds = cmds;
	srv->ncmds = n;
	srv->ctx = ctx;
	if (strlen(runtime_dir) + 1 + strlen(ADMIN_SOCKET_NAME) >= sizeof(srv->path)) {
		vm_err_set(err, VM_ERR_INVALID,
		           "agent.runtime_dir %s: too long for a unix socket path", runtime_dir);
		goto fail;
	}
	admin_socket_path(runtime_dir, srv->path, sizeof(srv->path));
	if (fs_mkdir_p(runtime_dir, 0700, err) != 0)
		goto fail;
	if (socket_alive(srv->path)) {
		vm_err_set(err, VM_ERR_BUSY, "%s is in use: is another vm-agent running?",
		           srv->path);
		srv->path[0] = '\0'; /* not ours: never unlink it */
		goto fail;
	}
	unlink(srv->path); /* stale, from an agent that was killed */
	srv->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (srv->fd < 0) {
		vm_err_errno(err, VM_ERR_IO, errno, "admin socket");
		goto fail;
	}
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	memcpy(a.sun_path, srv->path, strlen(srv->path) + 1);
	if (bind(srv->fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		vm_err_errno(err, VM_ERR_IO, errno, "bind %s", srv->path);
		srv->path[0] = '\0';
		goto fail;
	}
	/* The 0700 directory already keeps others out during this window. */
	if (chmod(srv->path, 0600) != 0 || listen(srv->fd, 8) != 0) {
		vm_err_errno(err, VM_ERR_IO, errno, "listen %s", srv->path);
		goto fail;
	}
	if (pipe2(srv->stop_pipe, O_CLOEXEC) != 0) {
		vm_err_errno(err, VM_ERR_IO, errno, "pipe");
		goto fail;
	}
	if (pthread_create(&srv->thr, NULL, server_main, srv) != 0) {
		vm_err_set(err, VM_ERR_INTERNAL, "cannot start the admin thread");
		goto fail;
	}
	return srv;
fail:
	if (srv->fd >= 0)
		close(srv->fd);
	if (srv->path[0] != '\0' && srv->fd >= 0)
		unlink(srv->path);
	if (srv->stop_pipe[0] >= 0) {
		close(srv->stop_pipe[0]);
		close(srv->stop_pipe[1]);
	}
	free(srv);
	return NULL;
}

void admin_stop(struct admin_server *srv)
{
	if (srv == NULL)
		return;
	ssize_t w = write(srv->stop_pipe[1], "x", 1);
	(void)w;
	pthread_join(srv->thr, NULL);
	close(srv->fd);
	unlink(srv->path);
	close(srv->stop_pipe[0]);
	close(srv->stop_pipe[1]);
	free(srv);
}

/* --- client ------------------------------------------------------------------------------ */

int admin_call(const char *path, const char *request, int timeout_ms, char **reply_out,
               struct vm_err *err)
{
	*reply_out = NULL;
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(a.sun_path))
		return vm_err_set(err, VM_ERR_INVALID, "%s: path too long for a unix socket", path);
	memcpy(a.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "socket");
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		int e = errno;
		close(fd);
		if (e == EACCES || e == EPERM)
			return vm_err_set(err, VM_ERR_PERM,
			                  "permission denied on %s: run as root (or as "
			                  "the agent's user)",
			                  path);
		if (e == ENOENT || e == ECONNREFUSED || e == ENOTDIR)
			return vm_err_set(err, VM_ERR_NOTFOUND, "no agent is listening on %s",
			                  path);
		return vm_err_errno(err, VM_ERR_IO, e, "connect %s", path);
	}
	size_t rl = strlen(request);
	if (write_all(fd, request, rl) != 0 || write_all(fd, "\n", 1) != 0) {
		int e = errno;
		close(fd);
		return vm_err_errno(err, VM_ERR_IO, e, "send to %s", path);
	}
	size_t cap = 4096, n = 0;
	char *buf = malloc(cap + 1);
	if (buf == NULL) {
		close(fd);
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	}
	for (;;) {
		if (n == cap) {
			if (cap >= ADMIN_REPLY_MAX)
				break;
			cap *= 2;
			char *nb = realloc(buf, cap + 1);
			if (nb == NULL)
				break;
			buf = nb;
		}
		ssize_t r = recv(fd, buf + n, cap - n, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;
			free(buf);
			close(fd);
			if (e == EAGAIN || e == EWOULDBLOCK)
				return vm_err_set(err, VM_ERR_IO,
				                  "no answer from the agent on %s within %d ms",
				                  path, timeout_ms);
			return vm_err_errno(err, VM_ERR_IO, e, "read from %s", path);
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (memchr(buf + n - (size_t)r, '\n', (size_t)r) != NULL)
			break;
	}
	close(fd);
	char *nl = memchr(buf, '\n', n);
	if (nl == NULL) {
		free(buf);
		return vm_err_set(err, VM_ERR_IO, "incomplete answer from the agent on %s", path);
	}
	*nl = '\0';
	*reply_out = buf;
	return 0;
}
