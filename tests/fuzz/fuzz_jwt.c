/* libFuzzer target: the JWT parser on arbitrary bytes, then claim checks and
 * (with a fixed Ed25519 key) signature verification of whatever parsed. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/jwt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char key_pem[] = "-----BEGIN PUBLIC KEY-----\n"
                              "MCowBQYDK2VwAyEA8W5jbvWpz+Pb39T+TvhvB9zvRevAYSzIZkBMYO/Fqag=\n"
                              "-----END PUBLIC KEY-----\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct jwt_keyset *ks;
	if (ks == NULL) {
		struct vm_err err;
		ks = jwt_keyset_new();
		if (jwt_keyset_add_pem(ks, "ed1", key_pem, sizeof(key_pem) - 1, &err) != 0)
			abort();
	}
	struct jwt_token tok;
	struct vm_err err;
	if (jwt_parse((const char *)data, size, &tok, &err) != 0)
		return 0;
	if (memchr(tok.kid, '\0', sizeof(tok.kid)) == NULL)
		abort();
	(void)jwt_verify_signature(ks, &tok, (const char *)data, &err);
	struct jwt_policy pol = {"https://cp.test", "agent-1", "tenant-a", 1700000100, 3600};
	(void)jwt_check_claims(&tok, &pol, &err);
	(void)jwt_has_scope(&tok, "probe:run");
	return 0;
}
