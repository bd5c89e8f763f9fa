/* The one parser of "IP:PORT" (piko.forward_addr: validated by the config
 * loader, used by the tunnel), and a bounded banner read (is a local daemon
 * answering?). */
#include "core/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/time.h"

static int bad(const char *s, struct vm_err *err)
{
	return vm_err_set(err, VM_ERR_INVALID,
	                  "\"%.80s\": expected IP:PORT with a numeric address, e.g. "
	                  "127.0.0.1:9999 or [::1]:9999",
	                  s);
}

int net_parse_hostport(const char *s, char *host, size_t cap, int *port, struct vm_err *err)
{
	const char *colon = strrchr(s, ':');
	if (colon == NULL || colon == s)
		return bad(s, err);
	const char *h = s;
	size_t hlen = (size_t)(colon - s);
	bool v6 = s[0] == '[';
	if (v6) {
		if (hlen < 3 || s[hlen - 1] != ']')
			return bad(s, err);
		h++;
		hlen -= 2;
	}
	if (hlen >= cap || hlen >= INET6_ADDRSTRLEN)
		return bad(s, err);
	char a[INET6_ADDRSTRLEN];
	memcpy(a, h, hlen);
	a[hlen] = '\0';
	unsigned char bin[16];
	if (inet_pton(v6 ? AF_INET6 : AF_INET, a, bin) != 1)
		return bad(s, err);
	const char *p = colon + 1;
	size_t plen = strlen(p);
	if (plen == 0 || plen > 5 || strspn(p, "0123456789") != plen)
		return bad(s, err);
	long v = 0;
	for (; *p; p++)
		v = v * 10 + (*p - '0');
	if (v < 1 || v > 65535)
		return bad(s, err);
	memcpy(host, a, hlen + 1);
	*port = (int)v;
	return 0;
}

/* Waits for events on fd until deadline_ms; 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short events, int64_t deadline_ms)
{
	for (;;) {
		int64_t left = deadline_ms - time_mono_ms();
		if (left <= 0)
			return 0;
		struct pollfd p = {.fd = fd, .events = events};
		int n = poll(&p, 1, left > 1000 ? 1000 : (int)left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n != 0)
			return n > 0 ? 1 : -1;
	}
}

int net_read_banner(const char *ip, int port, int64_t deadline_ms, char *out, size_t cap,
                    struct vm_err *err)
{
	struct sockaddr_storage ss = {0};
	socklen_t sl;
	struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
		v4->sin_port = htons((uint16_t)port);
		sl = sizeof(*v4);
	} else if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1) {
		v6->sin6_family = AF_INET6;
		v6->sin6_port = htons((uint16_t)port);
		sl = sizeof(*v6);
	} else {
		return vm_err_set(err, VM_ERR_INVALID, "%s: not a numeric address", ip);
	}
	if (port < 1 || port > 65535 || cap == 0)
		return vm_err_set(err, VM_ERR_INVALID, "port %d out of range", port);
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "socket");
	int rc = 0;
	size_t got = 0;
	if (connect(fd, (struct sockaddr *)&ss, sl) != 0 && errno != EINPROGRESS) {
		rc = vm_err_errno(err, VM_ERR_IO, errno, "connect %s:%d", ip, port);
		goto out;
	}
	int soerr = 0;
	socklen_t el = sizeof(soerr);
	if (wait_fd(fd, POLLOUT, deadline_ms) != 1 ||
	    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &el) != 0 || soerr != 0) {
		rc = vm_err_errno(err, VM_ERR_IO, soerr != 0 ? soerr : ETIMEDOUT, "connect %s:%d",
		                  ip, port);
		goto out;
	}
	while (got + 1 < cap && memchr(out, '\n', got) == NULL) {
		if (wait_fd(fd, POLLIN, deadline_ms) != 1) {
			rc = vm_err_set(err, VM_ERR_IO, "%s:%d sent no line in time", ip, port);
			goto out;
		}
		ssize_t n = read(fd, out + got, cap - 1 - got);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0) {
			rc = vm_err_set(err, VM_ERR_IO, "%s:%d closed before a line", ip, port);
			goto out;
		}
		got += (size_t)n;
	}
out:
	close(fd);
	out[got] = '\0';
	char *nl = strpbrk(out, "\r\n");
	if (nl != NULL)
		*nl = '\0';
	return rc;
}
