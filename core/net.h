/* Network addresses the agent is configured with. */
#ifndef VMA_CORE_NET_H
#define VMA_CORE_NET_H

#include <stddef.h>

#include "core/err.h"

/* Parses "IP:PORT" or "[IPv6]:PORT": a numeric address (nothing to resolve,
 * so nothing DNS can redirect; IPv6 in brackets, so the port is never
 * ambiguous) and a port of 1-65535 in decimal digits only. host (cap bytes)
 * gets the address without brackets. Returns 0 or -VM_ERR_INVALID. */
int net_parse_hostport(const char *s, char *host, size_t cap, int *port, struct vm_err *err);

#endif
