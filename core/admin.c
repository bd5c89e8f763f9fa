/* Admin socket server (one thread polling up to ADMIN_CONNS_DEFAULT
 * connections, each with a whole-exchange deadline) and its client. */
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

#include "core/buf.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/proc.h"
#include "core/time.h"

struct admin_conn;

struct admin_server {
	int fd;
	int stop_pipe[2];
	pthread_t thr;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	const struct admin_cmd *cmds;
	size_t ncmds;
	void *ctx;
	struct admin_limits lim;
	struct admin_conn *conns; /* lim.max_conns slots */
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

/* One connection: reading its request line, then writing its reply. */
struct admin_conn {
	int fd; /* -1 = free slot */
	int64_t deadline_ms;
	struct buf in; /* the request line, at most request_max + 1 bytes */
	char *out;     /* the reply, with its newline */
	size_t out_len, out_off;
};

static const char reply_oom[] = "{\"ok\":false,\"error\":{\"code\":\"internal\","
                                "\"message\":\"out of memory\"}}\n";
static const char reply_busy[] = ADMIN_REPLY_BUSY "\n";
static const char reply_forbidden[] =
    "{\"ok\":false,\"error\":{\"code\":\"forbidden\",\"message\":\"only root or the agent's "
    "user may use this socket\"}}\n";

/* The reply line for doc (consumed), malloc'd with its newline; NULL = out of memory. */
static char *render(json_t *doc, size_t *len)
{
	char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
	json_decref(doc);
	if (text == NULL)
		return NULL;
	size_t n = strlen(text);
	if (n + 1 > ADMIN_REPLY_MAX) {
		free(text);
		return render(json_pack("{s:b,s:{s:s,s:s}}", "ok", 0, "error", "code", "internal",
		                        "message", "reply too large"),
		              len);
	}
	char *line = realloc(text, n + 2);
	if (line == NULL) {
		free(text);
		return NULL;
	}
	line[n] = '\n';
	line[n + 1] = '\0';
	*len = n + 1;
	return line;
}

static void set_reply(struct admin_conn *c, json_t *doc)
{
	c->out = render(doc, &c->out_len);
	if (c->out == NULL) {
		c->out = strdup(reply_oom);
		c->out_len = c->out ? sizeof(reply_oom) - 1 : 0;
	}
	c->out_off = 0;
}

static void set_error(struct admin_conn *c, const char *code, const char *msg)
{
	set_reply(c,
	          json_pack("{s:b,s:{s:s,s:s}}", "ok", 0, "error", "code", code, "message", msg));
}

static bool peer_allowed(int fd)
{
	struct ucred cr;
	socklen_t len = sizeof(cr);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0)
		return false;
	return cr.uid == 0 || cr.uid == geteuid();
}

/* Runs the request in c->in[0..len) and queues its reply. */
static void dispatch(struct admin_server *srv, struct admin_conn *c, size_t len)
{
	char cmd[64];
	json_t *req;
	struct vm_err err = {0};
	if (admin_parse_request((const char *)buf_data(&c->in), len, cmd, sizeof(cmd), &req,
	                        &err) != 0) {
		set_error(c, "bad_request", err.msg);
		return;
	}
	const struct admin_cmd *cm = NULL;
	for (size_t i = 0; i < srv->ncmds; i++)
		if (strcmp(srv->cmds[i].name, cmd) == 0)
			cm = &srv->cmds[i];
	if (cm == NULL) {
		char msg[128];
		snprintf(msg, sizeof(msg), "unknown command \"%.60s\"", cmd);
		set_error(c, "unknown_command", msg);
	} else {
		json_t *res = cm->fn(srv->ctx, req, &err);
		if (res == NULL)
			set_error(c, err.code == VM_ERR_INVALID ? "invalid" : "failed",
			          err.msg[0] ? err.msg : "command failed");
		else
			set_reply(c, json_pack("{s:b,s:o}", "ok", 1, "result", res));
	}
	json_decref(req);
}

static void conn_close(struct admin_conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	buf_free(&c->in);
	free(c->out);
	*c = (struct admin_conn){.fd = -1};
}

/* Reads what is there (non-blocking). Returns -1 when the connection is done. */
static int conn_read(struct admin_server *srv, struct admin_conn *c)
{
	for (;;) {
		size_t room = c->in.max - c->in.len < 4096 ? c->in.max - c->in.len : 4096;
		if (room == 0) { /* full, and no newline */
			char msg[96];
			snprintf(msg, sizeof(msg), "expected one line of JSON of at most %zu bytes",
			         srv->lim.request_max);
			set_error(c, "bad_request", msg);
			return 0;
		}
		uint8_t *dst = buf_reserve(&c->in, room);
		if (dst == NULL) {
			set_reply(c, NULL);
			return 0;
		}
		ssize_t r = recv(c->fd, dst, room, MSG_DONTWAIT);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
		if (r == 0) {
			if (c->in.len == 0)
				return -1;
			dispatch(srv, c, c->in.len);    /* EOF without newline: accept */
			return c->out != NULL ? 0 : -1; /* NULL: no memory even to say so */
		}
		uint8_t *nl = memchr(dst, '\n', (size_t)r);
		buf_commit(&c->in, (size_t)r);
		if (nl != NULL) {
			dispatch(srv, c, (size_t)(nl - buf_data(&c->in)));
			return c->out != NULL ? 0 : -1;
		}
	}
}

/* Writes what the socket takes. Returns -1 when the connection is done. */
static int conn_write(struct admin_conn *c)
{
	while (c->out_off < c->out_len) {
		ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
		                 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (w <= 0)
			return -1;
		c->out_off += (size_t)w;
	}
	return -1; /* all sent: one request per connection */
}

/* Answers a connection we will not serve with one short line, without
 * waiting for it (the line fits an empty socket buffer). */
static void refuse(int fd, const char *line, size_t len)
{
	(void)send(fd, line, len, MSG_NOSIGNAL | MSG_DONTWAIT);
	close(fd);
}

static void accept_new(struct admin_server *srv)
{
	/* Bounded: a flood of connects cannot keep the loop from serving. */
	for (size_t k = 0; k < srv->lim.max_conns + 8; k++) {
		int fd = accept4(srv->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0)
			return;
		if (!peer_allowed(fd)) {
			refuse(fd, reply_forbidden, sizeof(reply_forbidden) - 1);
			continue;
		}
		struct admin_conn *slot = NULL;
		for (size_t i = 0; i < srv->lim.max_conns && slot == NULL; i++)
			if (srv->conns[i].fd < 0)
				slot = &srv->conns[i];
		if (slot == NULL) {
			refuse(fd, reply_busy, sizeof(reply_busy) - 1);
			continue;
		}
		*slot = (struct admin_conn){.fd = fd,
		                            .deadline_ms = time_mono_ms() + srv->lim.deadline_ms};
		buf_init(&slot->in, srv->lim.request_max + 1);
	}
}

/* One thread, one poll over the listener and every open connection; each
 * connection has one deadline for its whole exchange, so a client that
 * connects and drips bytes (or nothing) costs a slot for at most that long. */
static void *server_main(void *arg)
{
	struct admin_server *srv = arg;
	size_t max = srv->lim.max_conns;
	for (;;) {
		struct pollfd p[2 + ADMIN_CONNS_LIMIT];
		struct admin_conn *pc[2 + ADMIN_CONNS_LIMIT];
		p[0] = (struct pollfd){srv->fd, POLLIN, 0};
		p[1] = (struct pollfd){srv->stop_pipe[0], POLLIN, 0};
		nfds_t n = 2;
		int64_t now = time_mono_ms(), next = -1;
		for (size_t i = 0; i < max; i++) {
			struct admin_conn *c = &srv->conns[i];
			if (c->fd < 0)
				continue;
			p[n] = (struct pollfd){c->fd, c->out ? POLLOUT : POLLIN, 0};
			pc[n++] = c;
			if (next < 0 || c->deadline_ms < next)
				next = c->deadline_ms;
		}
		int timeout = next < 0 ? -1 : next <= now ? 0 : (int)(next - now);
		int r = poll(p, n, timeout);
		if (r < 0 && errno != EINTR)
			break;
		if (r > 0 && p[1].revents != 0)
			break;
		now = time_mono_ms();
		for (nfds_t i = 2; r > 0 && i < n; i++) {
			struct admin_conn *c = pc[i];
			if (p[i].revents == 0)
				continue;
			int done = c->out ? conn_write(c) : conn_read(srv, c);
			if (done == 0 && c->out != NULL)
				done = conn_write(c); /* usually the whole reply fits at once */
			if (done != 0)
				conn_close(c);
		}
		for (nfds_t i = 2; i < n; i++)
			if (pc[i]->fd >= 0 && now >= pc[i]->deadline_ms) {
				log_debug("admin",
				          "dropping a connection that did not finish within %d ms",
				          (int)srv->lim.deadline_ms);
				conn_close(pc[i]);
			}
		if (r > 0 && (p[0].revents & POLLIN))
			accept_new(srv);
	}
	for (size_t i = 0; i < max; i++)
		conn_close(&srv->conns[i]);
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
	return admin_start_with(runtime_dir, cmds, n, ctx, NULL, err);
}

struct admin_server *admin_start_with(const char *runtime_dir, const struct admin_cmd *cmds,
                                      size_t n, void *ctx, const struct admin_limits *lim,
                                      struct vm_err *err)
{
	struct admin_limits l = {ADMIN_CONNS_DEFAULT, ADMIN_DEADLINE_MS, ADMIN_REQUEST_MAX};
	if (lim != NULL) {
		if (lim->max_conns > 0)
			l.max_conns =
			    lim->max_conns < ADMIN_CONNS_LIMIT ? lim->max_conns : ADMIN_CONNS_LIMIT;
		if (lim->deadline_ms > 0)
			l.deadline_ms = lim->deadline_ms;
		if (lim->request_max > 0 && lim->request_max < ADMIN_REQUEST_MAX)
			l.request_max = lim->request_max;
	}
	struct admin_server *srv = calloc(1, sizeof(*srv));
	struct admin_conn *conns = calloc(l.max_conns, sizeof(*conns));
	if (srv == NULL || conns == NULL) {
		free(srv);
		free(conns);
		vm_err_set(err, VM_ERR_NOMEM, "out of memory");
		return NULL;
	}
	for (size_t i = 0; i < l.max_conns; i++)
		conns[i].fd = -1;
	srv->conns = conns;
	srv->lim = l;
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
	/* Non-blocking: the loop accepts until EAGAIN. */
	srv->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
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
	if (chmod(srv->path, 0600) != 0 || listen(srv->fd, 64) != 0) {
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
	free(srv->conns);
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
	free(srv->conns);
	free(srv);
}

/* --- client ------------------------------------------------------------------------------ */

/* Waits until fd is ready for events or deadline_ms (monotonic) passes. */
static int wait_io(int fd, short events, int64_t deadline_ms)
{
	for (;;) {
		int64_t left = deadline_ms - time_mono_ms();
		if (left <= 0)
			return -1;
		struct pollfd p = {fd, events, 0};
		int r = poll(&p, 1, (int)left);
		if (r < 0 && errno == EINTR)
			continue;
		return r > 0 ? 0 : -1;
	}
}

static int call_connect(const char *path, int64_t deadline_ms, int *fd_out, struct vm_err *err)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	memcpy(a.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "socket");
	/* connect on a unix socket blocks only while the backlog is full. */
	int64_t left = deadline_ms - time_mono_ms();
	struct timeval tv = {(time_t)(left / 1000), (suseconds_t)(left % 1000) * 1000};
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
	*fd_out = fd;
	return 0;
}

static int call_send(int fd, const char *p, size_t n, int64_t deadline_ms)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (wait_io(fd, POLLOUT, deadline_ms) != 0) {
				errno = ETIMEDOUT;
				return -1;
			}
			continue;
		}
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* One exchange: connect, send, read the reply line, all before deadline_ms. */
static int call_once(const char *path, const char *request, int64_t deadline_ms, int timeout_ms,
                     char **reply_out, struct vm_err *err)
{
	int fd = -1;
	int rc = call_connect(path, deadline_ms, &fd, err);
	if (rc != 0)
		return rc;
	size_t rl = strlen(request);
	int send_errno = 0;
	if (call_send(fd, request, rl, deadline_ms) != 0 ||
	    call_send(fd, "\n", 1, deadline_ms) != 0) {
		send_errno = errno;
		/* A server that refuses (busy, forbidden) answers and closes
		 * without reading: its line may be waiting for us. */
		if (send_errno != EPIPE && send_errno != ECONNRESET) {
			close(fd);
			if (send_errno == ETIMEDOUT)
				return vm_err_set(err, VM_ERR_IO,
				                  "no answer from the agent on %s within %d ms",
				                  path, timeout_ms);
			return vm_err_errno(err, VM_ERR_IO, send_errno, "send to %s", path);
		}
	}
	struct buf b;
	buf_init(&b, ADMIN_REPLY_MAX);
	for (;;) {
		size_t room = b.max - b.len < 16384 ? b.max - b.len : 16384;
		uint8_t *dst = room > 0 ? buf_reserve(&b, room) : NULL;
		if (dst == NULL)
			break; /* full or out of memory: judged by its newline below */
		ssize_t r = recv(fd, dst, room, MSG_DONTWAIT);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (wait_io(fd, POLLIN, deadline_ms) == 0)
				continue;
			buf_free(&b);
			close(fd);
			return vm_err_set(err, VM_ERR_IO,
			                  "no answer from the agent on %s within %d ms", path,
			                  timeout_ms);
		}
		if (r < 0) {
			int e = errno;
			buf_free(&b);
			close(fd);
			return vm_err_errno(err, VM_ERR_IO, e, "read from %s", path);
		}
		if (r == 0)
			break;
		buf_commit(&b, (size_t)r);
		if (memchr(dst, '\n', (size_t)r) != NULL)
			break;
	}
	close(fd);
	char *nl = b.len > 0 ? memchr(b.p, '\n', b.len) : NULL;
	if (nl == NULL) {
		buf_free(&b);
		if (send_errno != 0)
			return vm_err_errno(err, VM_ERR_IO, send_errno, "send to %s", path);
		return vm_err_set(err, VM_ERR_IO, "incomplete answer from the agent on %s", path);
	}
	*nl = '\0';
	if ((*reply_out = buf_take(&b, NULL)) == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	return 0;
}

int admin_call(const char *path, const char *request, int timeout_ms, char **reply_out,
               struct vm_err *err)
{
	*reply_out = NULL;
	if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
		return vm_err_set(err, VM_ERR_INVALID, "%s: path too long for a unix socket", path);
	int64_t deadline_ms = time_mono_ms() + (timeout_ms > 0 ? timeout_ms : 1);
	int64_t pause_ms = 20;
	for (;;) {
		char *reply = NULL;
		int rc = call_once(path, request, deadline_ms, timeout_ms, &reply, err);
		if (rc != 0)
			return rc;
		/* Busy: other clients hold every slot, each for at most ADMIN_DEADLINE_MS. */
		int64_t left = deadline_ms - time_mono_ms();
		if (strcmp(reply, ADMIN_REPLY_BUSY) != 0 || left <= pause_ms) {
			*reply_out = reply;
			return 0;
		}
		free(reply);
		struct timespec ts = {(time_t)(pause_ms / 1000),
		                      (long)(pause_ms % 1000) * 1000000L};
		while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
			;
		pause_ms = pause_ms * 2 > 200 ? 200 : pause_ms * 2;
	}
}
