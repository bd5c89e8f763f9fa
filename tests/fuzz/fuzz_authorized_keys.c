/* libFuzzer target: the authorized_keys model. The input is parsed as a
 * current file and as a strict key source; a merge of the source into the
 * file (both modes) must read back, contain every wanted key, and merging
 * again must change nothing (idempotency, with 0 added and 0 removed). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "probe/steps/authkeys.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_merge(const struct ak_file *cur, const struct ak_file *want, bool exclusive)
{
	struct vm_err err;
	struct ak_merge m;
	if (ak_merge(cur, want, exclusive, &m, &err) != 0)
		return;
	struct ak_file now;
	if (ak_parse_file(m.text, m.len, false, &now, &err) != 0)
		abort();
	struct ak_merge again;
	if (ak_merge(&now, want, exclusive, &again, &err) != 0 || again.len != m.len ||
	    memcmp(again.text, m.text, m.len) != 0 || again.added != 0 || again.removed != 0)
		abort();
	ak_merge_free(&again);
	ak_file_free(&now);
	ak_merge_free(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vm_err err;
	struct ak_key k;
	(void)ak_parse_key((const char *)data, size, &k, &err);
	ak_key_free(&k);
	/* the first half as the file, the second as the source (or all of it) */
	size_t half = size / 2;
	struct ak_file cur, want;
	int a = ak_parse_file((const char *)data, half, false, &cur, &err);
	int b = ak_parse_file((const char *)data + half, size - half, true, &want, &err);
	if (a == 0 && b == 0) {
		check_merge(&cur, &want, false);
		check_merge(&cur, &want, true);
	}
	ak_file_free(&cur);
	ak_file_free(&want);
	if (ak_parse_file((const char *)data, size, false, &cur, &err) == 0 &&
	    ak_parse_file((const char *)data, size, true, &want, &err) == 0)
		check_merge(&cur, &want, false);
	ak_file_free(&cur);
	ak_file_free(&want);
	return 0;
}
