/* The one owner of random bytes and random ids (see core/rand.h). */
#include "core/rand.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "core/codec.h"

int rand_bytes(void *buf, size_t n, struct vm_err *err)
{
	uint8_t *p = buf;
	for (size_t got = 0; got < n;) {
		ssize_t r = getrandom(p + got, n - got, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			int e = r < 0 ? errno : EIO;
			memset(buf, 0, n);
			return vm_err_errno(err, VM_ERR_IO, e, "no random bytes from the kernel");
		}
		got += (size_t)r;
	}
	return 0;
}

int id_new(char out[ID_LEN + 1], struct vm_err *err)
{
	uint8_t b[16];
	out[0] = '\0';
	int rc = rand_bytes(b, sizeof(b), err);
	if (rc != 0)
		return rc;
	b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
	b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
	char hex[33];
	hex_encode(b, sizeof(b), hex);
	snprintf(out, ID_LEN + 1, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16,
	         hex + 20);
	return 0;
}
