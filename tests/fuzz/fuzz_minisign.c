/* libFuzzer target: the minisign public key and signature parsers, and a
 * verification attempt with whatever parsed (must never crash or read out of
 * bounds, and never succeed with random bytes). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/minisign.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vm_err err;
	struct msig_pubkey key;
	struct msig_sig sig;
	(void)msig_parse_pubkey((const char *)data, size, &key, &err);
	if (msig_parse_sig((const char *)data, size, &sig, &err) == 0) {
		memset(&key, 0, sizeof(key));
		memcpy(key.keyid, sig.keyid, sizeof(key.keyid));
		(void)msig_verify_buf(&key, &sig, data, size, &err);
	}
	return 0;
}
