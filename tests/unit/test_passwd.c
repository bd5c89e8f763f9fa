/* Unit tests for core/passwd: one passwd(5) / group(5) line at a time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdint.h>
#include <string.h>

#include "core/passwd.h"

static int pw(const char *line, struct passwd_entry *e)
{
	struct vm_err err = {0};
	return passwd_parse_line(line, strlen(line), e, &err);
}

static int gr(const char *line, struct group_entry *g)
{
	struct vm_err err = {0};
	return group_parse_line(line, strlen(line), g, &err);
}

static void test_passwd_parses_all_seven_fields(void **state)
{
	(void)state;
	static struct passwd_entry e;
	assert_int_equal(pw("root:x:0:0:root:/root:/bin/bash\n", &e), PASSWD_LINE_OK);
	assert_string_equal(e.name, "root");
	assert_int_equal(e.uid, 0);
	assert_int_equal(e.gid, 0);
	assert_string_equal(e.gecos, "root");
	assert_string_equal(e.home, "/root");
	assert_string_equal(e.shell, "/bin/bash");
	/* empty gecos and shell, CRLF, the largest id */
	assert_int_equal(pw("nobody:*:4294967294:65534:::\r\n", &e), PASSWD_LINE_OK);
	assert_int_equal(e.uid, 4294967294u);
	assert_string_equal(e.gecos, "");
	assert_string_equal(e.shell, "");
	/* bytes are kept as they are: escaping is the JSON writer's job */
	assert_int_equal(pw("u:x:1:1:J\xfc rgen,,,:/home/u:/bin/sh", &e), PASSWD_LINE_OK);
	assert_string_equal(e.gecos, "J\xfc rgen,,,");
}

static void test_passwd_skips_blank_comment_and_nis_lines(void **state)
{
	(void)state;
	static struct passwd_entry e;
	assert_int_equal(pw("", &e), PASSWD_LINE_SKIP);
	assert_int_equal(pw("\n", &e), PASSWD_LINE_SKIP);
	assert_int_equal(pw("   \t", &e), PASSWD_LINE_SKIP);
	assert_int_equal(pw("# comment:x:0:0::/:", &e), PASSWD_LINE_SKIP);
	assert_int_equal(pw("+::::::", &e), PASSWD_LINE_SKIP);
	assert_int_equal(pw("-baduser::::::", &e), PASSWD_LINE_SKIP);
}

static void test_passwd_refuses_malformed_lines(void **state)
{
	(void)state;
	static struct passwd_entry e;
	static const char *const bad[] = {
	    "root:x:0:0:root:/root",               /* 6 fields */
	    "root:x:0:0:root:/root:/bin/sh:extra", /* 8 fields */
	    ":x:0:0::/:/bin/sh",                   /* empty name */
	    "u:x::0::/:/bin/sh",                   /* empty uid */
	    "u:x:-1:0::/:/bin/sh",                 /* sign */
	    "u:x: 1:0::/:/bin/sh",                 /* space */
	    "u:x:1:0x1::/:/bin/sh",                /* hex */
	    "u:x:4294967295:0::/:/bin/sh",         /* (uid_t)-1 */
	    "u:x:99999999999:0::/:/bin/sh",        /* too large */
	    "u:x:1:1:::::::::::::::::::::::::",    /* many fields */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (pw(bad[i], &e) != -1)
			fail_msg("accepted \"%s\"", bad[i]);
	/* a NUL inside the line */
	struct vm_err err = {0};
	assert_int_equal(passwd_parse_line("u:x:1:1\0::/:/bin/sh", 19, &e, &err), -1);
	assert_non_null(strstr(err.msg, "NUL"));
}

static void test_passwd_field_too_long_is_an_error_never_cut(void **state)
{
	(void)state;
	static struct passwd_entry e;
	static char line[4096];
	memset(line, 0, sizeof(line));
	strcpy(line, "u:x:1:1::/home/");
	memset(line + strlen(line), 'a', PASSWD_FIELD_MAX);
	strcat(line, ":/bin/sh");
	struct vm_err err = {0};
	assert_int_equal(passwd_parse_line(line, strlen(line), &e, &err), -1);
	assert_non_null(strstr(err.msg, "home longer than"));
	/* one byte shorter fits exactly */
	memset(line, 0, sizeof(line));
	strcpy(line, "u:x:1:1::");
	memset(line + strlen(line), 'a', PASSWD_FIELD_MAX - 1);
	strcat(line, ":/bin/sh");
	assert_int_equal(passwd_parse_line(line, strlen(line), &e, &err), PASSWD_LINE_OK);
	assert_int_equal(strlen(e.home), PASSWD_FIELD_MAX - 1);
}

static void test_group_parses_members(void **state)
{
	(void)state;
	static struct group_entry g;
	assert_int_equal(gr("sudo:x:27:alice,bob\n", &g), PASSWD_LINE_OK);
	assert_string_equal(g.name, "sudo");
	assert_int_equal(g.gid, 27);
	assert_string_equal(g.members, "alice,bob");
	assert_int_equal(g.nmembers, 2);
	assert_true(group_has_member(&g, "alice"));
	assert_true(group_has_member(&g, "bob"));
	assert_false(group_has_member(&g, "ali"));
	assert_false(group_has_member(&g, "alice,bob"));
	assert_false(group_has_member(&g, ""));
	assert_int_equal(gr("root:x:0:", &g), PASSWD_LINE_OK);
	assert_int_equal(g.nmembers, 0);
	assert_false(group_has_member(&g, "root"));
	assert_int_equal(gr("# c", &g), PASSWD_LINE_SKIP);
}

static void test_group_refuses_malformed_lines(void **state)
{
	(void)state;
	static struct group_entry g;
	static const char *const bad[] = {
	    "sudo:x:27",      "sudo:x:27:a:b", ":x:27:a",      "sudo:x:x:a",
	    "sudo:x:27:a,,b", "sudo:x:27:a,",  "sudo:x:27:,a", "sudo:x:4294967295:",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (gr(bad[i], &g) != -1)
			fail_msg("accepted \"%s\"", bad[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_passwd_parses_all_seven_fields),
	    cmocka_unit_test(test_passwd_skips_blank_comment_and_nis_lines),
	    cmocka_unit_test(test_passwd_refuses_malformed_lines),
	    cmocka_unit_test(test_passwd_field_too_long_is_an_error_never_cut),
	    cmocka_unit_test(test_group_parses_members),
	    cmocka_unit_test(test_group_refuses_malformed_lines),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
