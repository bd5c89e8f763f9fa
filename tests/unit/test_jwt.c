/* Unit tests for core/jwt: fixed vectors generated once by
 * tests/data/jwt/gen.go (Go's crypto, not this code) with their expected
 * results, plus scope matching, key loading and parser edge cases. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/jwt.h"

#define NOW 1700000100

static const char *data_dir(void)
{
	const char *d = getenv("VMA_TEST_DATA");
	return d != NULL ? d : "tests/data";
}

static struct jwt_keyset *load_keys(void)
{
	struct jwt_keyset *ks = jwt_keyset_new();
	assert_non_null(ks);
	const char *names[] = {"ed1.pem", "ec1.pem", "rsa1.pem"};
	for (size_t i = 0; i < 3; i++) {
		char path[1024];
		struct vm_err err = {0};
		snprintf(path, sizeof(path), "%s/jwt/%s", data_dir(), names[i]);
		if (jwt_keyset_add_file(ks, path, &err) != 0)
			fail_msg("%s: %s", path, err.msg);
	}
	assert_int_equal(jwt_keyset_count(ks), 3);
	return ks;
}

static int verify(const struct jwt_keyset *ks, const char *token, struct jwt_token *tok,
                  struct vm_err *err)
{
	int rc = jwt_parse(token, strlen(token), tok, err);
	if (rc == 0)
		rc = jwt_verify_signature(ks, tok, token, err);
	if (rc == 0) {
		struct jwt_policy pol = {"https://cp.test", "agent-1", "tenant-a", NOW, 3600};
		rc = jwt_check_claims(tok, &pol, err);
	}
	return rc;
}

static void test_jwt_fixed_vectors_get_expected_results(void **state)
{
	(void)state;
	struct jwt_keyset *ks = load_keys();
	char path[1024];
	snprintf(path, sizeof(path), "%s/jwt/cases.txt", data_dir());
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	static char line[16384];
	int ncases = 0;
	struct jwt_token *tok = malloc(sizeof(*tok));
	while (fgets(line, sizeof(line), f) != NULL) {
		if (line[0] == '#')
			continue;
		char name[64], want[64];
		int off = 0;
		if (sscanf(line, "%63s %63s %n", name, want, &off) != 2)
			continue;
		char *token = line + off;
		token[strcspn(token, "\r\n")] = '\0';
		struct vm_err err = {0};
		int rc = verify(ks, token, tok, &err);
		if (strcmp(jwt_reason_name(rc), want) != 0)
			fail_msg("%s: expected %s, got %s (%s)", name, want, jwt_reason_name(rc),
			         err.msg);
		ncases++;
	}
	fclose(f);
	free(tok);
	assert_true(ncases >= 20);
	jwt_keyset_free(ks);
}

static void test_jwt_valid_token_claims_are_copied(void **state)
{
	(void)state;
	struct jwt_keyset *ks = load_keys();
	char path[1024];
	snprintf(path, sizeof(path), "%s/jwt/cases.txt", data_dir());
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	static char line[16384];
	struct jwt_token *tok = malloc(sizeof(*tok));
	bool seen = false;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, "valid_rs256 ok ", 15) != 0)
			continue;
		char *token = line + 15;
		token[strcspn(token, "\r\n")] = '\0';
		struct vm_err err = {0};
		assert_int_equal(verify(ks, token, tok, &err), 0);
		assert_int_equal(tok->alg, JWT_ALG_RS256);
		assert_string_equal(tok->kid, "rsa1");
		assert_string_equal(tok->sub, "operator@msp");
		assert_string_equal(tok->jti, "jti-0001");
		assert_string_equal(tok->tenant_id, "tenant-a");
		assert_int_equal(tok->exp, 1700000600);
		assert_true(jwt_has_scope(tok, "probe:run"));
		assert_true(jwt_has_scope(tok, "probe:read"));
		assert_false(jwt_has_scope(tok, "probe:cancel"));
		assert_false(jwt_has_scope(tok, "probe"));
		assert_false(jwt_has_scope(tok, "probe:r"));
		seen = true;
	}
	fclose(f);
	free(tok);
	assert_true(seen);
	jwt_keyset_free(ks);
}

static void test_jwt_scope_matching_is_exact_words(void **state)
{
	(void)state;
	struct jwt_token tok;
	memset(&tok, 0, sizeof(tok));
	snprintf(tok.scope, sizeof(tok.scope), "  health:read   metrics:read ");
	assert_true(jwt_has_scope(&tok, "health:read"));
	assert_true(jwt_has_scope(&tok, "metrics:read"));
	assert_false(jwt_has_scope(&tok, "health"));
	assert_false(jwt_has_scope(&tok, "read"));
	tok.scope[0] = '\0';
	assert_false(jwt_has_scope(&tok, "health:read"));
}

static void test_jwt_keyset_refuses_bad_keys(void **state)
{
	(void)state;
	struct jwt_keyset *ks = jwt_keyset_new();
	struct vm_err err = {0};
	const char *junk = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
	assert_int_not_equal(jwt_keyset_add_pem(ks, "x", junk, strlen(junk), &err), 0);
	assert_non_null(strstr(err.msg, "not a PEM public key"));
	/* a private key file is not a public key */
	char path[1024], *pem;
	snprintf(path, sizeof(path), "%s/jwt/ed1.key", data_dir());
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	pem = calloc(1, 8192);
	size_t n = fread(pem, 1, 8191, f);
	fclose(f);
	assert_int_not_equal(jwt_keyset_add_pem(ks, "k", pem, n, &err), 0);
	free(pem);
	/* a duplicate kid is refused */
	snprintf(path, sizeof(path), "%s/jwt/ed1.pem", data_dir());
	assert_int_equal(jwt_keyset_add_file(ks, path, &err), 0);
	assert_int_not_equal(jwt_keyset_add_file(ks, path, &err), 0);
	assert_non_null(strstr(err.msg, "twice"));
	assert_int_not_equal(jwt_keyset_add_file(ks, "/nonexistent/k.pem", &err), 0);
	/* weak or unexpected key types are refused at load time */
	const char *weak[] = {"weak-rsa1024.pem", "ec-p384.pem"};
	for (size_t i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "%s/jwt/%s", data_dir(), weak[i]);
		assert_int_not_equal(jwt_keyset_add_file(ks, path, &err), 0);
		if (strstr(err.msg, "unsupported key type") == NULL)
			fail_msg("%s: %s", weak[i], err.msg);
	}
	assert_int_equal(jwt_keyset_count(ks), 1);
	jwt_keyset_free(ks);
	jwt_keyset_free(NULL);
}

static void test_jwt_parse_refuses_oversized_and_truncated(void **state)
{
	(void)state;
	struct jwt_token *tok = malloc(sizeof(*tok));
	struct vm_err err = {0};
	char *big = malloc(JWT_MAX_LEN + 2);
	memset(big, 'a', JWT_MAX_LEN + 1);
	big[10] = '.';
	big[20] = '.';
	assert_int_equal(jwt_parse(big, JWT_MAX_LEN + 1, tok, &err), -JWT_E_MALFORMED);
	free(big);
	assert_int_equal(jwt_parse("", 0, tok, &err), -JWT_E_MALFORMED);
	assert_int_equal(jwt_parse("..", 2, tok, &err), -JWT_E_MALFORMED);
	/* every prefix of a valid token is refused without crashing */
	const char *t = "eyJhbGciOiJFZERTQSIsImtpZCI6ImVkMSJ9.eyJpc3MiOiJ4In0.AAAA";
	for (size_t i = 0; i < strlen(t); i++)
		assert_int_not_equal(jwt_parse(t, i, tok, &err), 0);
	free(tok);
}

static void test_jwt_reason_names_cover_all(void **state)
{
	(void)state;
	for (int r = JWT_OK; r <= JWT_E_TENANT; r++)
		assert_string_not_equal(jwt_reason_name(-r), "unknown");
	assert_string_equal(jwt_reason_name(-99), "unknown");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_jwt_fixed_vectors_get_expected_results),
	    cmocka_unit_test(test_jwt_valid_token_claims_are_copied),
	    cmocka_unit_test(test_jwt_scope_matching_is_exact_words),
	    cmocka_unit_test(test_jwt_keyset_refuses_bad_keys),
	    cmocka_unit_test(test_jwt_parse_refuses_oversized_and_truncated),
	    cmocka_unit_test(test_jwt_reason_names_cover_all),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
