/* The one parser of "IP:PORT" (piko.forward_addr: validated by the config
 * loader, used by the tunnel). */
#include "core/net.h"

#include <arpa/inet.h>
#include <stdbool.h>
#include <string.h>

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
