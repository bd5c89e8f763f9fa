/* Interposes write() for the library under test: while fake_write_zero is
 * set, every write to a file (fd > 2) "succeeds" with 0 bytes, as a full
 * FUSE or device file can. The library is linked statically into the test,
 * so its calls reach this definition before libc's. */
#ifndef VMA_TEST_FAKE_IO_H
#define VMA_TEST_FAKE_IO_H

#include <signal.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <unistd.h>

static atomic_bool fake_write_zero;

ssize_t write(int fd, const void *buf, size_t n)
{
	if (atomic_load(&fake_write_zero) && fd > 2 && n > 0)
		return 0;
	return (ssize_t)syscall(SYS_write, fd, buf, n);
}

/* A writer that loops on 0 would spin until ctest's timeout: fail in 5 s. */
static void fake_io_on_alarm(int sig)
{
	(void)sig;
	static const char msg[] = "FAIL: the writer spins when write() returns 0\n";
	(void)syscall(SYS_write, 2, msg, sizeof(msg) - 1);
	_exit(1);
}

static void fake_write_zero_begin(void)
{
	signal(SIGALRM, fake_io_on_alarm);
	alarm(5);
	atomic_store(&fake_write_zero, true);
}

static void fake_write_zero_end(void)
{
	atomic_store(&fake_write_zero, false);
	alarm(0);
}

#endif
