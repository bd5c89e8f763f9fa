/* civetweb 1.15 compiled as one translation unit with the one accessor the
 * webhook needs and its API lacks: the socket of a connection, so that the
 * request guard (webhook/guard.c) can end a request whose deadline passed
 * (civetweb itself bounds each recv(), not a request). Built without our
 * warnings, like civetweb.c itself. */
/* remote_addr of a connection on the unix listener (civetweb's default: "*") */
#define UNIX_DOMAIN_SOCKET_SERVER_NAME "unix"
#include "civetweb.c"

int mg_vma_client_fd(const struct mg_connection *conn);

int mg_vma_client_fd(const struct mg_connection *conn)
{
	return conn != NULL ? (int)conn->client.sock : -1;
}
