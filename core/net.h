/* Network addresses the agent is configured with. */
#ifndef VMA_CORE_NET_H
#define VMA_CORE_NET_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

/* Parses "IP:PORT" or "[IPv6]:PORT": a numeric address (nothing to resolve,
 * so nothing DNS can redirect; IPv6 in brackets, so the port is never
 * ambiguous) and a port of 1-65535 in decimal digits only. host (cap bytes)
 * gets the address without brackets. Returns 0 or -VM_ERR_INVALID. */
int net_parse_hostport(const char *s, char *host, size_t cap, int *port, struct vm_err *err);

/* Connects to a numeric IPv4/IPv6 address and port and reads the server's
 * first line (a banner such as "SSH-2.0-…") into out (cap bytes, cut, without
 * the line end), giving up at deadline_ms (monotonic). Returns 0 or a
 * negative code with err saying why. */
int net_read_banner(const char *ip, int port, int64_t deadline_ms, char *out, size_t cap,
                    struct vm_err *err);

#endif
