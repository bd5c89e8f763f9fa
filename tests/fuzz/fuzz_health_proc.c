/* libFuzzer target: every /proc text parser of health/proc_linux.c. The first
 * byte picks the parser so one corpus covers them all. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "health/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	char *text = malloc(size);
	memcpy(text, data + 1, size - 1);
	text[size - 1] = '\0';
	static struct health_system sys;
	static struct health_fs fs[4];
	static struct health_net net[4];
	struct health_cpu_ticks t;
	uint64_t a, b;
	int64_t bt;
	double x, y, z;
	size_t n;
	switch (data[0] % 7) {
	case 0:
		(void)health_parse_stat(text, &t, &a, &bt, &b);
		break;
	case 1:
		(void)health_parse_loadavg(text, &x, &y, &z);
		break;
	case 2:
		(void)health_parse_meminfo(text, &sys);
		break;
	case 3:
		(void)health_parse_uptime(text, &x);
		break;
	case 4:
		(void)health_parse_netdev(text, net, 4, &n);
		break;
	case 5:
		(void)health_parse_mounts(text, fs, 4, &n);
		break;
	case 6:
		(void)health_parse_self_status(text, &a, &b);
		break;
	}
	free(text);
	return 0;
}
