/* libFuzzer target: core/passwd's line parsers. The first byte picks passwd
 * or group; the rest is one line (NULs included). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/passwd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	static struct passwd_entry pe;
	static struct group_entry ge;
	const char *line = (const char *)data + 1;
	size_t len = size - 1;
	if (data[0] & 1) {
		if (group_parse_line(line, len, &ge, NULL) == PASSWD_LINE_OK) {
			if (strlen(ge.name) == 0 || (ge.members[0] != '\0') != (ge.nmembers > 0))
				__builtin_trap();
			(void)group_has_member(&ge, "root");
		}
	} else if (passwd_parse_line(line, len, &pe, NULL) == PASSWD_LINE_OK &&
	           pe.name[0] == '\0') {
		__builtin_trap();
	}
	return 0;
}
