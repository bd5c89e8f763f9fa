/* Unit tests for the authorized_keys model of ssh_keys.sync: keys checked
 * down to their wire format, options and comments, files with unmanaged lines
 * kept byte for byte, and the merge with its added/removed/kept counts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "probe/steps/authkeys.h"

/* real keys made with ssh-keygen */
#define K_ED                                                                                \
	"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE/jvAF+YG71tww7fNS3ZIkxJwyRvTy1ZYns+grpyhQ1 " \
	"c-ed25519"
#define K_ED2 \
	"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtUbJEil+ojfFZIcsDiO7qPKQuEWn74yg3bE7uI2m6l second"
#define K_P256                                                                                     \
	"ecdsa-sha2-nistp256 "                                                                     \
	"AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBJbt8qCLxDCm4gjE7Uo41LPPcBzHdtTQPFYB" \
	"6iBfxvBI8bvP2cA7Am/zeEPFxDNkoThSRluX8ROwpBQ4aAfiCbo= c-ecdsa"
#define K_P384                                                                            \
	"ecdsa-sha2-nistp384 "                                                            \
	"AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBGv8ceVkwGmk9tgoA1/hjS+2PR/" \
	"EXOK1QXI8dzZhkG9AM+gQION0B1qo0jhj7YC8WRUvoLy7dXXvsAd8U6OJQodch7F08+uWQo90gVrF+"  \
	"haW6VH6q8JqNRmpPU3ggdv94g== c-ecdsa"
#define K_P521                                                                                     \
	"ecdsa-sha2-nistp521 "                                                                     \
	"AAAAE2VjZHNhLXNoYTItbmlzdHA1MjEAAAAIbmlzdHA1MjEAAACFBAEgMR8BSHhZ3Svgv0zRBIsjlWlDToXB98o/" \
	"va/P2JzXRI58Z/"                                                                           \
	"4Hy3VzbUywPpboDibsKFBilWT6bAU5ufBSpW9lzwEyOHZaTVA4cJGf3J+"                                \
	"xr3hFGCRSbv435eM0FsYKFuZTO0PfUwBlVP39AoFchhk8l/wUIIn2mfRuhsyGyhiMN9ty8w== c-ecdsa"
#define K_RSA                                                                                 \
	"ssh-rsa "                                                                            \
	"AAAAB3NzaC1yc2EAAAADAQABAAAAgQC5riZYK0RxoIbPA0QOFvu9dTFhLyH5ePOaQWL4dH0E58+cQo9Nrz/" \
	"IZr1tMyla9xRjU5GI4oLjUnXEjsr8KgQnqENNh8YdD3NpcB8TmXe9YqbkRmGwSMlvIHEIWg5VdM+v5x/"    \
	"PeSi9VQ129jhRwWF8vJTZl4umnRNhTXWBVRzoJw== c-rsa"

static int parse_key(const char *line, struct ak_key *k, struct vm_err *err)
{
	return ak_parse_key(line, strlen(line), k, err);
}

/* A key line "type base64(blob)" from wire-format pieces (strings). */
static char *make_line(const char *type, const char *const *parts, const size_t *lens, int n)
{
	uint8_t blob[4096];
	size_t o = 0;
	for (int i = 0; i < n; i++) {
		size_t l = lens[i];
		blob[o++] = (uint8_t)(l >> 24);
		blob[o++] = (uint8_t)(l >> 16);
		blob[o++] = (uint8_t)(l >> 8);
		blob[o++] = (uint8_t)l;
		memcpy(blob + o, parts[i], l);
		o += l;
	}
	char *line = malloc(strlen(type) + 2 + b64_encoded_len(o) + 1);
	int k = sprintf(line, "%s ", type);
	b64_encode(blob, o, line + k, 0);
	return line;
}

static void test_authkeys_real_keys_of_every_type_parse(void **state)
{
	(void)state;
	static const char *const keys[] = {K_ED, K_ED2, K_RSA, K_P256, K_P384, K_P521};
	static const char *const types[] = {
	    "ssh-ed25519",         "ssh-ed25519",         "ssh-rsa",
	    "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"};
	for (size_t i = 0; i < 6; i++) {
		struct ak_key k;
		struct vm_err err = {0};
		if (parse_key(keys[i], &k, &err) != 0)
			fail_msg("%s: %s", types[i], err.msg);
		assert_string_equal(k.type, types[i]);
		assert_null(k.options);
		assert_non_null(k.comment);
		ak_key_free(&k);
	}
}

static void test_authkeys_options_and_comment(void **state)
{
	(void)state;
	struct ak_key k;
	struct vm_err err = {0};
	const char *line =
	    "from=\"10.0.0.0/8,192.168.1.1\",command=\"echo \\\"hi there\\\"\",no-pty " K_ED
	    " two words  ";
	assert_int_equal(parse_key(line, &k, &err), 0);
	assert_string_equal(
	    k.options, "from=\"10.0.0.0/8,192.168.1.1\",command=\"echo \\\"hi there\\\"\",no-pty");
	assert_string_equal(k.comment, "c-ed25519 two words");
	ak_key_free(&k);
	assert_int_equal(parse_key("  restrict,PTY " K_RSA, &k, &err), 0);
	ak_key_free(&k);
	static const char *const bad[] = {
	    "bogus-option " K_ED,
	    "from=10.0.0.1 " K_ED,
	    "command=\"unterminated " K_ED,
	    "no-pty,",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parse_key(bad[i], &k, &err) == 0)
			fail_msg("accepted: %s", bad[i]);
		ak_key_free(&k);
	}
}

static void test_authkeys_garbage_and_wrong_keys_refused(void **state)
{
	(void)state;
	char rsa_as_ed[2048];
	snprintf(rsa_as_ed, sizeof(rsa_as_ed), "ssh-ed25519 %s", strchr(K_RSA, ' ') + 1);
	char cut[2048];
	snprintf(cut, sizeof(cut), "%s", K_ED);
	cut[strlen("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI")] = '\0';
	char noncanon[2048];
	snprintf(noncanon, sizeof(noncanon), "%s", K_P256); /* 104 bytes: 2 padding bits */
	*strchr(noncanon + 20, ' ') = '\0';
	noncanon[strlen(noncanon) - 2] ^= 1; /* before the '=': a padding bit set */
	const char *bad[] = {
	    "",
	    "hello world",
	    "<html><body>Not Found</body></html>",
	    "ssh-dss AAAAB3NzaC1kc3MAAACBAP==",
	    "ssh-ed25519",
	    "ssh-ed25519 !!!notbase64!!!",
	    rsa_as_ed,
	    cut,
	    noncanon,
	    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE/jvAF+YG71tww7fNS3ZIkxJwyRvTy1ZYns+grpyhQ1\x01",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct ak_key k;
		struct vm_err err = {0};
		if (parse_key(bad[i], &k, &err) == 0)
			fail_msg("accepted %zu: %s", i, bad[i]);
		assert_true(err.msg[0] != '\0');
		ak_key_free(&k);
	}
}

static void test_authkeys_wire_format_checked(void **state)
{
	(void)state;
	char pk[32] = {1}, app[] = "ssh:", point[65] = {4};
	char weak_n[96] = {0x40}; /* 767 bits */
	struct {
		const char *type;
		const char *parts[4];
		size_t lens[4];
		int n;
		bool ok;
	} cases[] = {
	    {"sk-ssh-ed25519@openssh.com",
	     {"sk-ssh-ed25519@openssh.com", pk, app},
	     {26, 32, 4},
	     3,
	     true},
	    {"sk-ssh-ed25519@openssh.com", {"sk-ssh-ed25519@openssh.com", pk}, {26, 32}, 2, false},
	    {"sk-ecdsa-sha2-nistp256@openssh.com",
	     {"sk-ecdsa-sha2-nistp256@openssh.com", "nistp256", point, app},
	     {34, 8, 65, 4},
	     4,
	     true},
	    {"ecdsa-sha2-nistp256",
	     {"ecdsa-sha2-nistp256", "nistp384", point},
	     {19, 8, 65},
	     3,
	     false},
	    {"ecdsa-sha2-nistp256",
	     {"ecdsa-sha2-nistp256", "nistp256", point},
	     {19, 8, 64},
	     3,
	     false},
	    {"ssh-ed25519", {"ssh-ed25519", pk}, {11, 31}, 2, false},
	    {"ssh-ed25519", {"ssh-ed25519", pk, pk}, {11, 32, 1}, 3, false},
	    {"ssh-rsa", {"ssh-rsa", "\x01\x00\x01", weak_n}, {7, 3, 96}, 3, false},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *line = make_line(cases[i].type, cases[i].parts, cases[i].lens, cases[i].n);
		struct ak_key k;
		struct vm_err err = {0};
		int rc = parse_key(line, &k, &err);
		if ((rc == 0) != cases[i].ok)
			fail_msg("case %zu (%s): rc %d: %s", i, line, rc, err.msg);
		ak_key_free(&k);
		free(line);
	}
}

static void test_authkeys_strict_source_refuses_any_bad_line(void **state)
{
	(void)state;
	const char *good = K_ED "\n\n# comment\n" K_RSA "\r\n";
	struct ak_file f;
	struct vm_err err = {0};
	assert_int_equal(ak_parse_file(good, strlen(good), true, &f, &err), 0);
	ak_file_free(&f);
	const char *bad = K_ED "\nnot a key\n";
	assert_int_not_equal(ak_parse_file(bad, strlen(bad), true, &f, &err), 0);
	assert_non_null(strstr(err.msg, "line 2"));
	ak_file_free(&f);
	/* the same text as an existing file: kept as a raw line */
	assert_int_equal(ak_parse_file(bad, strlen(bad), false, &f, &err), 0);
	assert_int_equal(f.n, 2);
	assert_false(f.lines[1].is_key);
	ak_file_free(&f);
	const char *unterminated = AK_BEGIN "\n" K_ED "\n";
	assert_int_not_equal(ak_parse_file(unterminated, strlen(unterminated), false, &f, &err), 0);
	ak_file_free(&f);
}

struct merged {
	char text[16384];
	int added, removed, kept;
};

static struct merged merge(const char *cur_text, const char *want_text, bool exclusive)
{
	struct ak_file cur, want;
	struct vm_err err = {0};
	struct merged m;
	if (ak_parse_file(cur_text, strlen(cur_text), false, &cur, &err) != 0 ||
	    ak_parse_file(want_text, strlen(want_text), true, &want, &err) != 0)
		fail_msg("parse: %s", err.msg);
	struct ak_merge out;
	if (ak_merge(&cur, &want, exclusive, &out, &err) != 0)
		fail_msg("merge: %s", err.msg);
	snprintf(m.text, sizeof(m.text), "%s", out.text);
	m.added = out.added;
	m.removed = out.removed;
	m.kept = out.kept;
	ak_merge_free(&out);
	ak_file_free(&cur);
	ak_file_free(&want);
	return m;
}

static void test_authkeys_merge_adds_dedupes_and_keeps_unmanaged(void **state)
{
	(void)state;
	const char *cur = "# mine\n"
	                  "no-pty " K_RSA "\n"
	                  "garbage line kept\n";
	/* K_RSA wanted too: already there unmanaged, kept as it is; K_ED deduped */
	char want[8192];
	snprintf(want, sizeof(want), "%s\n%s other\n%s\n", K_ED, K_ED, K_RSA);
	struct merged m = merge(cur, want, false);
	char expect[16384];
	snprintf(expect, sizeof(expect), "%s%s\n%s\n%s\n", cur, AK_BEGIN, K_ED, AK_END);
	assert_string_equal(m.text, expect);
	assert_int_equal(m.added, 1);
	assert_int_equal(m.removed, 0);
	assert_int_equal(m.kept, 1);
	/* second run: the same file, nothing added */
	struct merged again = merge(m.text, want, false);
	assert_string_equal(again.text, m.text);
	assert_int_equal(again.added, 0);
	assert_int_equal(again.removed, 0);
	assert_int_equal(again.kept, 2);
	/* a key dropped from the source leaves the managed block, unmanaged ones stay */
	struct merged drop = merge(m.text, K_ED2 "\n", false);
	snprintf(expect, sizeof(expect), "%s%s\n%s\n%s\n", cur, AK_BEGIN, K_ED2, AK_END);
	assert_string_equal(drop.text, expect);
	assert_int_equal(drop.added, 1);
	assert_int_equal(drop.removed, 1);
	assert_int_equal(drop.kept, 1);
}

static void test_authkeys_merge_exclusive_leaves_only_the_wanted_keys(void **state)
{
	(void)state;
	const char *cur = "# mine\nno-pty " K_RSA "\n" K_P256 "\nssh-dss AAAA old\n";
	struct merged m = merge(cur, K_ED "\n" K_RSA "\n", true);
	char expect[16384];
	snprintf(expect, sizeof(expect), "%s\n%s\n%s\n%s\n", AK_BEGIN, K_ED, K_RSA, AK_END);
	assert_string_equal(m.text, expect);
	assert_int_equal(m.added, 1);
	assert_int_equal(m.kept, 1);
	assert_int_equal(m.removed, 2); /* K_P256 and the ssh-dss line */
}

static void test_authkeys_merge_block_stays_in_place(void **state)
{
	(void)state;
	const char *cur = "# top\n" AK_BEGIN "\n" K_ED "\n" AK_END "\n# bottom\n";
	struct merged m = merge(cur, K_ED "\n" K_P384 "\n", false);
	char expect[16384];
	snprintf(expect, sizeof(expect), "# top\n%s\n%s\n%s\n%s\n# bottom\n", AK_BEGIN, K_ED,
	         K_P384, AK_END);
	assert_string_equal(m.text, expect);
	assert_int_equal(m.added, 1);
	assert_int_equal(m.kept, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_authkeys_real_keys_of_every_type_parse),
	    cmocka_unit_test(test_authkeys_options_and_comment),
	    cmocka_unit_test(test_authkeys_garbage_and_wrong_keys_refused),
	    cmocka_unit_test(test_authkeys_wire_format_checked),
	    cmocka_unit_test(test_authkeys_strict_source_refuses_any_bad_line),
	    cmocka_unit_test(test_authkeys_merge_adds_dedupes_and_keeps_unmanaged),
	    cmocka_unit_test(test_authkeys_merge_exclusive_leaves_only_the_wanted_keys),
	    cmocka_unit_test(test_authkeys_merge_block_stays_in_place),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
