/* Unit tests for the crontab model of cron.ensure/cron.list: schedules,
 * variables and commands checked the way cron reads them, managed blocks
 * parsed and rendered, unmanaged lines kept byte for byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "probe/steps/crontab.h"

static void test_crontab_schedule_accepts_fields_lists_ranges_steps_names_macros(void **state)
{
	(void)state;
	static const char *const ok[][2] = {
	    {"* * * * *", "* * * * *"},
	    {"*/5  0-23/2\t1,15 jan-mar mon-fri", "*/5 0-23/2 1,15 jan-mar mon-fri"},
	    {"0 0 * * 7", "0 0 * * 7"},
	    {"59 23 31 12 0", "59 23 31 12 0"},
	    {"0 4 * DEC SUN", "0 4 * DEC SUN"},
	    {"1,2,3-5,*/10 * * * *", "1,2,3-5,*/10 * * * *"},
	    {"@daily", "@daily"},
	    {" @reboot ", "@reboot"},
	    {"@midnight", "@midnight"},
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		char out[CRON_SCHED_MAX + 1];
		struct vm_err err = {0};
		if (cron_schedule_check(ok[i][0], out, sizeof(out), &err) != 0)
			fail_msg("%s: refused: %s", ok[i][0], err.msg);
		assert_string_equal(out, ok[i][1]);
	}
}

static void test_crontab_schedule_refuses_everything_else(void **state)
{
	(void)state;
	static const char *const bad[] = {
	    "",
	    "* * * *",
	    "* * * * * *",
	    "60 * * * *",
	    "* 24 * * *",
	    "* * 0 * *",
	    "* * 32 * *",
	    "* * * 13 *",
	    "* * * * 8",
	    "5-1 * * * *",
	    "*/0 * * *",
	    "*/60 * * * *",
	    "5/10 * * * *",
	    "1,,2 * * * *",
	    ", * * * *",
	    "a * * * *",
	    "* * * jan,xyz *",
	    "* * * * mo",
	    "@every_5m",
	    "@DAILY",
	    "-1 * * * *",
	    "1- * * * *",
	    "*/ * * * *",
	    "001 * * * *",
	    "* * * * *\n",
	    "* * * * * ; rm -rf /",
	    "*/5/5 * * * *",
	    "** * * * *",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char out[CRON_SCHED_MAX + 1];
		struct vm_err err = {0};
		if (cron_schedule_check(bad[i], out, sizeof(out), &err) == 0)
			fail_msg("'%s': accepted as '%s'", bad[i], out);
		assert_true(err.msg[0] != '\0');
	}
}

static void test_crontab_env_and_command_checks(void **state)
{
	(void)state;
	struct vm_err err;
	assert_int_equal(cron_env_check("MAILTO", "ops@example.com", &err), 0);
	assert_int_equal(cron_env_check("_X1", "", &err), 0);
	assert_int_not_equal(cron_env_check("1X", "v", &err), 0);
	assert_int_not_equal(cron_env_check("A B", "v", &err), 0);
	assert_int_not_equal(cron_env_check("A=B", "v", &err), 0);
	assert_int_not_equal(cron_env_check("A", "x\ny", &err), 0);
	assert_int_not_equal(cron_env_check("A", " x", &err), 0);
	assert_int_not_equal(cron_env_check("A", "x\t", &err), 0);
	assert_int_equal(cron_command_check("date +%Y-%m-%d >> /tmp/log", &err), 0);
	assert_int_equal(cron_command_check("echo a\\tb", &err), 0);
	assert_int_not_equal(cron_command_check("", &err), 0);
	assert_int_not_equal(cron_command_check(" x", &err), 0);
	assert_int_not_equal(cron_command_check("a\nb", &err), 0);
	assert_int_not_equal(cron_command_check("a\rb", &err), 0);
	assert_int_not_equal(cron_command_check("date +\\%Y", &err), 0);
	assert_int_not_equal(cron_command_check("printf 'a\\\\n'", &err), 0);
	assert_int_equal(cron_name_check("backup.daily-1_x", &err), 0);
	assert_int_not_equal(cron_name_check("-x", &err), 0);
	assert_int_not_equal(cron_name_check("a b", &err), 0);
	assert_int_not_equal(cron_name_check("a/b", &err), 0);
	assert_int_not_equal(cron_name_check("", &err), 0);
}

static const char *const sample = "# my own jobs\n"
                                  "MAILTO=me\n"
                                  "\n"
                                  "*/10 * * * * /usr/bin/true   # keep\n"
                                  "# BEGIN vm-agent backup\n"
                                  "PATH=/usr/bin:/bin\n"
                                  "0 3 * * * /usr/local/bin/backup --date $(date +\\%F)\n"
                                  "# END vm-agent backup\n"
                                  "\t@hourly  /bin/echo hi\n";

static void test_crontab_parse_keeps_unmanaged_and_reads_blocks(void **state)
{
	(void)state;
	struct cron_tab tab;
	struct vm_err err = {0};
	assert_int_equal(cron_parse(sample, strlen(sample), &tab, &err), 0);
	assert_int_equal(tab.n, 6);
	assert_int_equal(tab.items[0].kind, CRON_COMMENT);
	assert_int_equal(tab.items[1].kind, CRON_ENV);
	assert_int_equal(tab.items[2].kind, CRON_BLANK);
	assert_int_equal(tab.items[3].kind, CRON_JOB);
	assert_true(tab.items[4].managed);
	assert_int_equal(tab.items[4].line_no, 5);
	assert_int_equal(tab.items[5].kind, CRON_JOB);
	struct cron_job *j = cron_find(&tab, "backup");
	assert_non_null(j);
	assert_true(j->valid);
	assert_string_equal(j->schedule, "0 3 * * *");
	assert_string_equal(j->command, "/usr/local/bin/backup --date $(date +%F)");
	assert_int_equal(j->nenv, 1);
	assert_string_equal(j->env[0], "PATH=/usr/bin:/bin");
	size_t len;
	char *out = cron_render(&tab, &len);
	assert_string_equal(out, sample);
	free(out);
	cron_tab_free(&tab);
}

static void test_crontab_set_replaces_in_place_appends_and_removes(void **state)
{
	(void)state;
	struct cron_tab tab;
	struct vm_err err = {0};
	assert_int_equal(cron_parse(sample, strlen(sample), &tab, &err), 0);
	struct cron_job want = {.name = "backup",
	                        .schedule = "30 2 * * *",
	                        .command = "echo 100% done",
	                        .nenv = 0,
	                        .valid = true};
	assert_int_equal(cron_set(&tab, &want, &err), 0);
	struct cron_job add = {.name = "report",
	                       .schedule = "@weekly",
	                       .command = "/usr/bin/report",
	                       .nenv = 1,
	                       .env = {"MAILTO=ops"},
	                       .valid = true};
	assert_int_equal(cron_set(&tab, &add, &err), 0);
	char *out = cron_render(&tab, NULL);
	const char *want_text = "# my own jobs\n"
	                        "MAILTO=me\n"
	                        "\n"
	                        "*/10 * * * * /usr/bin/true   # keep\n"
	                        "# BEGIN vm-agent backup\n"
	                        "30 2 * * * echo 100\\% done\n"
	                        "# END vm-agent backup\n"
	                        "\t@hourly  /bin/echo hi\n"
	                        "# BEGIN vm-agent report\n"
	                        "MAILTO=ops\n"
	                        "@weekly /usr/bin/report\n"
	                        "# END vm-agent report\n";
	assert_string_equal(out, want_text);
	/* and it reads back as the same entries */
	struct cron_tab again;
	assert_int_equal(cron_parse(out, strlen(out), &again, &err), 0);
	assert_string_equal(cron_find(&again, "backup")->command, "echo 100% done");
	assert_string_equal(cron_find(&again, "report")->env[0], "MAILTO=ops");
	cron_tab_free(&again);
	free(out);
	assert_true(cron_remove(&tab, "backup"));
	assert_false(cron_remove(&tab, "backup"));
	assert_null(cron_find(&tab, "backup"));
	out = cron_render(&tab, NULL);
	assert_null(strstr(out, "vm-agent backup"));
	assert_non_null(strstr(out, "\t@hourly  /bin/echo hi\n"));
	free(out);
	cron_tab_free(&tab);
}

static void test_crontab_too_long_line_refused(void **state)
{
	(void)state;
	struct cron_tab tab;
	struct vm_err err = {0};
	assert_int_equal(cron_parse("", 0, &tab, &err), 0);
	char cmd[CRON_LINE_MAX];
	memset(cmd, 'x', sizeof(cmd) - 1);
	cmd[sizeof(cmd) - 1] = '\0';
	struct cron_job j = {.name = "long", .schedule = "@daily", .command = cmd, .valid = true};
	assert_int_not_equal(cron_set(&tab, &j, &err), 0);
	assert_non_null(strstr(err.msg, "at most"));
	assert_int_equal(tab.n, 0);
	cron_tab_free(&tab);
}

static void test_crontab_hand_edited_block_kept_raw_and_replaceable(void **state)
{
	(void)state;
	const char *text = "# BEGIN vm-agent x\n"
	                   "# someone added a comment\n"
	                   "* * * * * echo 50%\n"
	                   "# END vm-agent x\n";
	struct cron_tab tab;
	struct vm_err err = {0};
	assert_int_equal(cron_parse(text, strlen(text), &tab, &err), 0);
	struct cron_job *j = cron_find(&tab, "x");
	assert_non_null(j);
	assert_false(j->valid);
	char *out = cron_render(&tab, NULL);
	assert_string_equal(out, text);
	free(out);
	struct cron_job want = {
	    .name = "x", .schedule = "@daily", .command = "true", .valid = true};
	assert_int_equal(cron_set(&tab, &want, &err), 0);
	out = cron_render(&tab, NULL);
	assert_string_equal(out, "# BEGIN vm-agent x\n@daily true\n# END vm-agent x\n");
	free(out);
	cron_tab_free(&tab);
}

static void test_crontab_structural_errors_refused_with_line(void **state)
{
	(void)state;
	static const char *const bad[][2] = {
	    {"a\n# BEGIN vm-agent x\n* * * * * true\n", "line 2"},
	    {"# END vm-agent x\n", "line 1"},
	    {"# BEGIN vm-agent x\n# BEGIN vm-agent y\n# END vm-agent y\n# END vm-agent x\n",
	     "line 2"},
	    {"# BEGIN vm-agent x\n# END vm-agent y\n", "line 2"},
	    {"# BEGIN vm-agent x\n# END vm-agent x\n# BEGIN vm-agent x\n# END vm-agent x\n",
	     "line 3"},
	    {"# BEGIN vm-agent a b\n# END vm-agent a b\n", "line 1"},
	    {"x\n\0y\n", "NUL"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct cron_tab tab;
		struct vm_err err = {0};
		size_t len = i == 6 ? 5 : strlen(bad[i][0]);
		if (cron_parse(bad[i][0], len, &tab, &err) == 0)
			fail_msg("case %zu accepted", i);
		if (strstr(err.msg, bad[i][1]) == NULL)
			fail_msg("case %zu: '%s' lacks '%s'", i, err.msg, bad[i][1]);
		cron_tab_free(&tab);
	}
	char *big = malloc(CRON_TEXT_MAX + 2);
	memset(big, '#', CRON_TEXT_MAX + 1);
	struct cron_tab tab;
	struct vm_err err;
	assert_int_not_equal(cron_parse(big, CRON_TEXT_MAX + 1, &tab, &err), 0);
	cron_tab_free(&tab);
	free(big);
}

static void test_crontab_no_final_newline_and_crlf_kept(void **state)
{
	(void)state;
	const char *text = "* * * * * a\r\nb=c";
	struct cron_tab tab;
	struct vm_err err = {0};
	assert_int_equal(cron_parse(text, strlen(text), &tab, &err), 0);
	assert_int_equal(tab.n, 2);
	char *out = cron_render(&tab, NULL);
	assert_string_equal(out, "* * * * * a\r\nb=c\n");
	free(out);
	cron_tab_free(&tab);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_crontab_schedule_accepts_fields_lists_ranges_steps_names_macros),
	    cmocka_unit_test(test_crontab_schedule_refuses_everything_else),
	    cmocka_unit_test(test_crontab_env_and_command_checks),
	    cmocka_unit_test(test_crontab_parse_keeps_unmanaged_and_reads_blocks),
	    cmocka_unit_test(test_crontab_set_replaces_in_place_appends_and_removes),
	    cmocka_unit_test(test_crontab_too_long_line_refused),
	    cmocka_unit_test(test_crontab_hand_edited_block_kept_raw_and_replaceable),
	    cmocka_unit_test(test_crontab_structural_errors_refused_with_line),
	    cmocka_unit_test(test_crontab_no_final_newline_and_crlf_kept),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
