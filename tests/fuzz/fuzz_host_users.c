/* libFuzzer target: what user.ensure and sshd.harden read from the host:
 * passwd/group texts (whole-file lookups over core/passwd's line parsers) and
 * sshd_config / `sshd -T` text (Include detection, value lookup, the in-place
 * block). The first byte picks the function; the rest is the text. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/passwd.h"
#include "probe/steps/steps.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	const char *text = (const char *)data + 1;
	size_t len = size - 1;
	static struct passwd_entry pe;
	static struct group_entry ge;
	char v[256];
	switch (data[0] % 5) {
	case 0:
		if (host_passwd_find(text, len, "root", &pe) == 1 && strcmp(pe.name, "root") != 0)
			__builtin_trap();
		break;
	case 1: {
		char list[64];
		if (host_group_find(text, len, "sudo", &ge) == 1 && strcmp(ge.name, "sudo") != 0)
			__builtin_trap();
		if (host_group_memberships(text, len, "alice", list, sizeof(list)) == 0 &&
		    strlen(list) >= sizeof(list))
			__builtin_trap();
		break;
	}
	case 2:
		(void)host_sshd_includes(text, len, HOST_SSHD_DROPIN);
		break;
	case 3:
		if (host_sshd_value(text, len, "port", v, sizeof(v)) == 1 && strlen(v) >= sizeof(v))
			__builtin_trap();
		break;
	default: {
		/* the block is idempotent: applying it twice gives the same text */
		struct buf a, b, old;
		buf_init(&a, 1u << 22);
		buf_init(&b, 1u << 22);
		buf_init(&old, 1u << 22);
		static const char body[] = "PasswordAuthentication no\n";
		if (host_sshd_inplace(text, len, body, sizeof(body) - 1, &a, &old) == 0) {
			if (host_sshd_inplace((const char *)buf_data(&a), a.len, body,
			                      sizeof(body) - 1, &b, &old) != 0 ||
			    a.len != b.len || memcmp(buf_data(&a), buf_data(&b), a.len) != 0 ||
			    old.len != sizeof(body) - 1)
				__builtin_trap();
		}
		buf_free(&a);
		buf_free(&b);
		buf_free(&old);
	}
	}
	return 0;
}
