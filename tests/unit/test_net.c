/* Unit tests for core/net.c's banner read (sshd.harden's connection test):
 * a loopback server that sends a line, one that says nothing, a closed port,
 * and a line longer than the caller's buffer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <netinet/in.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/net.h"
#include "core/time.h"

struct server {
	int lfd, port;
	const char *say; /* NULL: accept and stay silent until closed */
	pthread_t th;
};

static void *serve(void *p)
{
	struct server *s = p;
	int fd = accept(s->lfd, NULL, NULL);
	if (fd < 0)
		return NULL;
	if (s->say != NULL) {
		ssize_t n = write(fd, s->say, strlen(s->say));
		(void)n;
	}
	char b[16];
	while (read(fd, b, sizeof(b)) > 0) /* until the client closes */
		;
	close(fd);
	return NULL;
}

static void server_start(struct server *s, const char *say)
{
	s->say = say;
	s->lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(s->lfd >= 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);
	assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(s->lfd, 4), 0);
	assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&a, &al), 0);
	s->port = ntohs(a.sin_port);
	assert_int_equal(pthread_create(&s->th, NULL, serve, s), 0);
}

static void server_stop(struct server *s)
{
	pthread_join(s->th, NULL);
	close(s->lfd);
}

static void test_net_read_banner_reads_the_first_line(void **state)
{
	(void)state;
	struct server s;
	server_start(&s, "SSH-2.0-OpenSSH_9.2p1 Debian-2\r\nmore");
	char line[256];
	struct vm_err err = {0};
	assert_int_equal(
	    net_read_banner("127.0.0.1", s.port, time_mono_ms() + 5000, line, sizeof(line), &err),
	    0);
	assert_string_equal(line, "SSH-2.0-OpenSSH_9.2p1 Debian-2");
	server_stop(&s);
}

static void test_net_read_banner_cuts_a_long_line(void **state)
{
	(void)state;
	struct server s;
	server_start(&s, "SSH-2.0-a-very-long-banner-without-end");
	char line[8];
	struct vm_err err = {0};
	assert_int_equal(
	    net_read_banner("127.0.0.1", s.port, time_mono_ms() + 5000, line, sizeof(line), &err),
	    0);
	assert_string_equal(line, "SSH-2.0");
	server_stop(&s);
}

static void test_net_read_banner_gives_up_at_the_deadline(void **state)
{
	(void)state;
	struct server s;
	server_start(&s, NULL);
	char line[64];
	struct vm_err err = {0};
	int64_t t0 = time_mono_ms();
	assert_true(net_read_banner("127.0.0.1", s.port, t0 + 300, line, sizeof(line), &err) < 0);
	int64_t took = time_mono_ms() - t0;
	assert_true(took >= 250 && took < 3000);
	assert_non_null(strstr(err.msg, "no line in time"));
	server_stop(&s);
}

static void test_net_read_banner_refused_and_bad_address(void **state)
{
	(void)state;
	/* a port nobody listens on: bind one, then close it */
	struct server s;
	server_start(&s, "x\n");
	int port = s.port;
	char line[64];
	struct vm_err err = {0};
	assert_int_equal(
	    net_read_banner("127.0.0.1", port, time_mono_ms() + 2000, line, sizeof(line), &err), 0);
	server_stop(&s);
	assert_true(net_read_banner("127.0.0.1", port, time_mono_ms() + 2000, line, sizeof(line),
	                            &err) < 0);
	assert_true(
	    net_read_banner("localhost", 22, time_mono_ms() + 100, line, sizeof(line), &err) < 0);
	assert_true(
	    net_read_banner("127.0.0.1", 0, time_mono_ms() + 100, line, sizeof(line), &err) < 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_net_read_banner_reads_the_first_line),
	    cmocka_unit_test(test_net_read_banner_cuts_a_long_line),
	    cmocka_unit_test(test_net_read_banner_gives_up_at_the_deadline),
	    cmocka_unit_test(test_net_read_banner_refused_and_bad_address),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
