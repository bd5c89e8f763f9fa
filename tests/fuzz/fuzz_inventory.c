/* libFuzzer target: the inventory's parsers of host text (health/
 * inventory_linux.c). The first byte (mod 9; the seeds start with bytes 0-8)
 * picks the parser and the rest is its input, so one corpus covers
 * os-release, cpuinfo, dpkg-query and rpm lines, /proc/net lines (v4, v6),
 * systemctl's JSON and plain tables, and the escaping of host strings. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "health/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void unit(void *ctx, const char *name, const char *v1, const char *v2)
{
	(void)ctx;
	if (name == NULL || v1 == NULL || v2 == NULL)
		__builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	const char *in = (const char *)data + 1;
	size_t len = size - 1;
	char *text = malloc(size);
	memcpy(text, in, len);
	text[len] = '\0';
	static struct health_os_release os;
	static struct health_cpu_info cpu;
	static struct health_pkg pkg;
	static struct health_sock sock;
	switch (data[0] % 9) {
	case 0:
		(void)health_inv_parse_os_release(text, &os);
		break;
	case 1:
		(void)health_inv_parse_cpuinfo(text, &cpu);
		break;
	case 2:
		(void)health_inv_parse_dpkg_line(in, len, &pkg);
		break;
	case 3:
		(void)health_inv_parse_rpm_line(in, len, &pkg);
		break;
	case 4:
	case 5:
		if (health_inv_parse_net_line(in, len, data[0] % 9 == 5, &sock) == 0 &&
		    strlen(sock.addr) == 0)
			__builtin_trap();
		break;
	case 6:
		(void)health_inv_parse_units_json(in, len, "unit", "active", "sub", unit, NULL);
		break;
	case 8:
		(void)health_inv_parse_units_plain(in, len, 2, 3, unit, NULL);
		break;
	case 7: {
		/* every host string becomes valid UTF-8 within the cap */
		json_t *s = health_inv_str(in, len);
		if (s == NULL || json_string_length(s) > HEALTH_INV_STR_MAX ||
		    !utf8_valid(json_string_value(s), json_string_length(s)))
			__builtin_trap();
		json_decref(s);
		break;
	}
	}
	free(text);
	return 0;
}
