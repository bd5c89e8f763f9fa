/* libFuzzer target: the YAML configuration loader with arbitrary bytes, and the
 * editor (cfg_doc_*) with a random key and value on that YAML: it never
 * crashes, and an edit it accepts always walks back with the key as asked. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Input: "OP KEYBYTE VALUE \0 YAML" (OP odd = unset), or plain YAML (a set of a
 * key picked from the bytes, so that every YAML seed also drives the editor). */
static void fuzz_edit(const uint8_t *data, size_t size)
{
	char value[4096] = "x-1";
	const char *yaml = (const char *)data;
	size_t len = size, pick = 0;
	bool unset = false;
	const uint8_t *nul = size >= 2 ? memchr(data, 0, size) : NULL;
	if (nul != NULL && nul - data >= 2 && (size_t)(nul - data) - 2 < sizeof(value)) {
		unset = data[0] & 1;
		pick = data[1];
		memcpy(value, data + 2, (size_t)(nul - data) - 2);
		value[nul - data - 2] = '\0';
		yaml = (const char *)nul + 1;
		len = size - (size_t)(nul - data) - 1;
	} else {
		for (size_t i = 0; i < size; i++)
			pick += data[i];
	}
	const char *key = cfg_key_name(pick % cfg_key_count());
	struct vm_err err;
	struct cfg_doc *d = NULL;
	if (cfg_doc_parse(&d, "fuzz.yaml", yaml, len, &err) != 0)
		return;
	int rc = unset ? cfg_doc_unset(d, key, &err) : cfg_doc_set(d, key, value, &err);
	if (rc == 0) {
		size_t n;
		const char *t = cfg_doc_text(d, &n);
		struct cfg_doc *back = NULL;
		if (cfg_doc_parse(&back, "fuzz.yaml", t, n, &err) != 0)
			abort(); /* an accepted edit always re-loads */
		if (cfg_doc_has(back, key) == unset)
			abort();
		(void)cfg_doc_validate(back, &err);
		cfg_doc_free(back);
	}
	cfg_doc_free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct cfg cfg;
	static char *const env[] = {NULL};
	struct vm_err err;
	if (cfg_load_buffer(&cfg, "fuzz.yaml", (const char *)data, size, env, &err) == 0) {
		char buf[65536];
		(void)cfg_dump(&cfg, buf, sizeof(buf));
	}
	fuzz_edit(data, size);
	return 0;
}
