/* libFuzzer target: the host steps' parsers of tool output (dpkg-query, rpm -q,
 * zypper info, apt's status fd, apt-get -s, systemctl show) and the bounded
 * diff of two texts.
 * The first byte picks the parser so one corpus covers them all. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "probe/steps/steps.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	const char *text = (const char *)data + 1;
	size_t len = size - 1;
	static struct pkg_info info[8];
	static struct apt_sim sim[8];
	struct apt_status st;
	struct svc_state svc;
	switch (data[0] % 7) {
	case 0:
		(void)pkg_parse_dpkg_query(text, len, info, 8);
		break;
	case 1:
		(void)apt_status_parse(text, len, &st);
		break;
	case 2:
		(void)apt_parse_sim(text, len, sim, 8);
		break;
	case 3:
		(void)svc_parse_show(text, len, &svc);
		break;
	case 5:
		(void)pkg_parse_rpm_query(text, len, info, 8);
		break;
	case 6:
		(void)pkg_parse_zypper_info(text, len, info, 8);
		break;
	case 4: {
		/* two texts split at the first NUL; the diff is cut at 512 bytes */
		const char *nul = memchr(text, '\0', len);
		size_t alen = nul != NULL ? (size_t)(nul - text) : len / 2;
		size_t boff = nul != NULL ? alen + 1 : alen;
		struct buf out;
		buf_init(&out, 1u << 20);
		int rc = host_diff(text, alen, text + boff, len - boff, "f", 512, &out);
		if (rc >= 0 && out.len > 512)
			abort();
		buf_free(&out);
		break;
	}
	}
	return 0;
}
