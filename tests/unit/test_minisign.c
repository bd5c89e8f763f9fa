/* Unit tests for core/minisign against vectors made by the real minisign 0.11
 * (tests/data/minisign: key.pub signs payload.txt; other.pub is a second key). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fs.h"
#include "core/minisign.h"

static char *data_path(const char *name)
{
	static char buf[4][1024];
	static int i;
	const char *dir = getenv("VMA_TEST_DATA");
	char *p = buf[i++ % 4];
	snprintf(p, 1024, "%s/minisign/%s", dir ? dir : "tests/data", name);
	return p;
}

static char *slurp(const char *name, size_t *len)
{
	char *data = NULL;
	struct vm_err err;
	size_t n = 0;
	if (fs_read_file(data_path(name), 1 << 20, &data, &n, &err) != 0)
		fail_msg("%s", err.msg);
	if (len)
		*len = n;
	return data;
}

static void load_key(const char *name, struct msig_pubkey *k)
{
	size_t n;
	char *t = slurp(name, &n);
	struct vm_err err;
	assert_int_equal(msig_parse_pubkey(t, n, k, &err), 0);
	free(t);
}

static int verify(const char *keyname, const char *signame, const char *file, struct vm_err *err)
{
	struct msig_pubkey k;
	struct msig_sig s;
	load_key(keyname, &k);
	size_t n;
	char *t = slurp(signame, &n);
	int rc = msig_parse_sig(t, n, &s, err);
	free(t);
	if (rc != 0)
		return rc;
	int rc_file = msig_verify_file(&k, 1, &s, data_path(file), 1 << 20, err);
	char *d = slurp(file, &n);
	struct vm_err err2;
	int rc_buf = msig_verify_buf(&k, &s, d, n, &err2);
	free(d);
	assert_int_equal(rc_file == 0, rc_buf == 0); /* both paths agree */
	return rc_file;
}

static void test_minisign_good_prehashed_signature_verifies(void **state)
{
	(void)state;
	struct vm_err err = {0};
	assert_int_equal(verify("key.pub", "good.minisig", "payload.txt", &err), 0);
}

static void test_minisign_legacy_ed_signature_verifies(void **state)
{
	(void)state;
	struct vm_err err = {0};
	size_t n;
	char *t = slurp("legacy.minisig", &n);
	struct msig_sig s;
	assert_int_equal(msig_parse_sig(t, n, &s, &err), 0);
	free(t);
	assert_false(s.prehashed);
	assert_string_equal(s.trusted_comment, "legacy sig");
	assert_int_equal(verify("key.pub", "legacy.minisig", "payload.txt", &err), 0);
}

static void test_minisign_tampered_file_is_rejected(void **state)
{
	(void)state;
	struct vm_err err = {0};
	assert_int_not_equal(verify("key.pub", "good.minisig", "tampered.txt", &err), 0);
	assert_non_null(strstr(err.msg, "does not match"));
	assert_int_not_equal(verify("key.pub", "legacy.minisig", "tampered.txt", &err), 0);
}

static void test_minisign_other_key_is_rejected_by_key_id(void **state)
{
	(void)state;
	struct vm_err err = {0};
	assert_int_not_equal(verify("key.pub", "other.minisig", "payload.txt", &err), 0);
	assert_non_null(strstr(err.msg, "signed by key"));
	/* and the other key does accept its own signature */
	assert_int_equal(verify("other.pub", "other.minisig", "payload.txt", &err), 0);
}

static void test_minisign_forged_key_id_still_fails_signature(void **state)
{
	(void)state;
	struct msig_pubkey k, other;
	struct msig_sig s;
	struct vm_err err;
	load_key("key.pub", &k);
	load_key("other.pub", &other);
	size_t n;
	char *t = slurp("other.minisig", &n);
	assert_int_equal(msig_parse_sig(t, n, &s, &err), 0);
	free(t);
	memcpy(s.keyid, k.keyid, MSIG_KEYID_LEN);
	assert_int_not_equal(msig_verify_file(&k, 1, &s, data_path("payload.txt"), 1 << 20, &err),
	                     0);
}

static void test_minisign_altered_trusted_comment_is_rejected(void **state)
{
	(void)state;
	struct vm_err err = {0};
	assert_int_not_equal(verify("key.pub", "badcomment.minisig", "payload.txt", &err), 0);
	assert_non_null(strstr(err.msg, "trusted comment"));
}

static void test_minisign_picks_matching_key_among_several(void **state)
{
	(void)state;
	struct msig_pubkey keys[2];
	struct msig_sig s;
	struct vm_err err;
	load_key("other.pub", &keys[0]);
	load_key("key.pub", &keys[1]);
	size_t n;
	char *t = slurp("good.minisig", &n);
	assert_int_equal(msig_parse_sig(t, n, &s, &err), 0);
	free(t);
	assert_int_equal(msig_verify_file(keys, 2, &s, data_path("payload.txt"), 1 << 20, &err), 0);
	assert_int_not_equal(msig_verify_file(keys, 1, &s, data_path("payload.txt"), 1 << 20, &err),
	                     0);
	assert_non_null(strstr(err.msg, "not one of"));
}

static void test_minisign_pubkey_bare_line_and_keyid_display(void **state)
{
	(void)state;
	size_t n;
	char *t = slurp("key.pub", &n);
	struct msig_pubkey a, b;
	struct vm_err err;
	assert_int_equal(msig_parse_pubkey(t, n, &a, &err), 0);
	char *line2 = strchr(t, '\n') + 1;
	assert_int_equal(msig_parse_pubkey(line2, strlen(line2), &b, &err), 0);
	assert_memory_equal(&a, &b, sizeof(a));
	char hex[17];
	msig_keyid_hex(a.keyid, hex);
	assert_non_null(strstr(t, hex)); /* minisign prints the id in the comment */
	free(t);
}

static void test_minisign_malformed_inputs_are_errors(void **state)
{
	(void)state;
	static const char *const bad_sigs[] = {
	    "",
	    "untrusted comment: x\n",
	    "untrusted comment: x\nAAAA\ntrusted comment: t\nAAAA\n",
	    "comment: x\nRUS6\ntrusted comment: t\nAAAA\n",
	    "untrusted comment: x\n!!!!\ntrusted comment: t\nAAAA\n",
	    "untrusted comment: a\nb\nc\nd\ne\n",
	};
	struct msig_sig s;
	struct vm_err err;
	for (size_t i = 0; i < sizeof(bad_sigs) / sizeof(bad_sigs[0]); i++)
		assert_int_not_equal(msig_parse_sig(bad_sigs[i], strlen(bad_sigs[i]), &s, &err), 0);
	static const char *const bad_keys[] = {
	    "",
	    "untrusted comment: x\n",
	    "AAAA",
	    "untrusted comment: x\nAAAA\nBBBB\n",
	};
	struct msig_pubkey k;
	for (size_t i = 0; i < sizeof(bad_keys) / sizeof(bad_keys[0]); i++)
		assert_int_not_equal(msig_parse_pubkey(bad_keys[i], strlen(bad_keys[i]), &k, &err),
		                     0);
	/* a signature line re-encoded with another algorithm tag */
	size_t n;
	char *t = slurp("good.minisig", &n);
	char *l2 = strchr(t, '\n') + 1;
	l2[1] = 'X'; /* "RUS…" -> "RXS…": first bytes no longer "ED" */
	assert_int_not_equal(msig_parse_sig(t, n, &s, &err), 0);
	free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_minisign_good_prehashed_signature_verifies),
	    cmocka_unit_test(test_minisign_legacy_ed_signature_verifies),
	    cmocka_unit_test(test_minisign_tampered_file_is_rejected),
	    cmocka_unit_test(test_minisign_other_key_is_rejected_by_key_id),
	    cmocka_unit_test(test_minisign_forged_key_id_still_fails_signature),
	    cmocka_unit_test(test_minisign_altered_trusted_comment_is_rejected),
	    cmocka_unit_test(test_minisign_picks_matching_key_among_several),
	    cmocka_unit_test(test_minisign_pubkey_bare_line_and_keyid_display),
	    cmocka_unit_test(test_minisign_malformed_inputs_are_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
