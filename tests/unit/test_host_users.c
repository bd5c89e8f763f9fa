/* Unit tests for the pure parts of user.ensure, group.ensure, sudoers.ensure
 * and sshd.harden: the input rules (400 with the JSON path), the sudoers and
 * sshd renderers, Include detection, the in-place block and the passwd/group
 * lookups. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/passwd.h"
#include "probe/steps/steps.h"

/* Parses one step object with parse; returns its rc, epath gets the path. */
static int parse_step(int (*parse)(STEP_PARSE_ARGS), const char *json, char *epath, size_t ecap,
                      struct probe_step_req *st, json_t **doc)
{
	json_error_t je;
	*doc = json_loads(json, 0, &je);
	assert_non_null(*doc);
	memset(st, 0, sizeof(*st));
	json_t *name = json_object_get(*doc, "name");
	st->name = json_is_string(name) ? json_string_value(name) : NULL;
	struct vm_err err = {0};
	epath[0] = '\0';
	return parse(*doc, st, "steps[0]", epath, ecap, &err);
}

static void done_step(struct probe_step_req *st, json_t *doc)
{
	if (st->ext_free != NULL)
		st->ext_free(st->ext);
	json_decref(doc);
}

/* Expects parse to refuse json with the given error path. */
static void expect_bad(int (*parse)(STEP_PARSE_ARGS), const char *json, const char *want_path)
{
	struct probe_step_req st;
	json_t *doc;
	char epath[128];
	int rc = parse_step(parse, json, epath, sizeof(epath), &st, &doc);
	if (rc == 0 || strcmp(epath, want_path) != 0)
		fail_msg("%s: rc %d path %s, want %s", json, rc, epath, want_path);
	done_step(&st, doc);
}

static void expect_ok(int (*parse)(STEP_PARSE_ARGS), const char *json)
{
	struct probe_step_req st;
	json_t *doc;
	char epath[128];
	int rc = parse_step(parse, json, epath, sizeof(epath), &st, &doc);
	if (rc != 0)
		fail_msg("%s: refused at %s", json, epath);
	done_step(&st, doc);
}

static char *render_sudo(const char *name, const struct host_sudo_rule *r)
{
	struct buf b;
	buf_init(&b, 1u << 16);
	assert_int_equal(host_sudoers_render(name, r, &b), 0);
	char *s = buf_take(&b, NULL);
	buf_free(&b);
	return s;
}

/* --- sudoers ----------------------------------------------------------------------- */

static void test_sudoers_names_sudo_would_skip_are_refused(void **state)
{
	(void)state;
	assert_true(host_valid_sudoers_name("deploy"));
	assert_true(host_valid_sudoers_name("90-ops_team"));
	assert_false(host_valid_sudoers_name("ops.conf")); /* sudo skips names with '.' */
	assert_false(host_valid_sudoers_name("ops~"));     /* and editor backups */
	assert_false(host_valid_sudoers_name("../sudoers"));
	assert_false(host_valid_sudoers_name("a/b"));
	assert_false(host_valid_sudoers_name("-x"));
	assert_false(host_valid_sudoers_name(""));
	assert_false(host_valid_sudoers_name("a b"));
	char longname[80];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[79] = '\0';
	assert_false(host_valid_sudoers_name(longname));
}

static void test_sudo_commands_are_absolute_and_cannot_inject(void **state)
{
	(void)state;
	assert_true(host_valid_sudo_command("ALL"));
	assert_true(host_valid_sudo_command("/usr/bin/systemctl restart nginx"));
	assert_true(host_valid_sudo_command("/usr/bin/journalctl"));
	assert_true(host_valid_sudo_command("/usr/bin/ls ^/var/log/[a-z]+$"));
	assert_false(host_valid_sudo_command("systemctl"));
	assert_false(host_valid_sudo_command("all"));
	assert_false(host_valid_sudo_command("/bin/true\nroot ALL=(ALL) NOPASSWD: ALL"));
	assert_false(host_valid_sudo_command("/bin/true, ALL"));
	assert_false(host_valid_sudo_command("/bin/true : ALL"));
	assert_false(host_valid_sudo_command("/bin/a=b"));
	assert_false(host_valid_sudo_command("/bin/true \\"));
	assert_false(host_valid_sudo_command("/bin/true # x"));
	assert_false(host_valid_sudo_command("!/bin/sh"));
	assert_false(host_valid_sudo_command("/bin/true  x")); /* double space */
	assert_false(host_valid_sudo_command("/bin/true "));
	assert_false(host_valid_sudo_command("/bin/true\tx"));
	assert_false(host_valid_sudo_command(""));
}

static void test_sudoers_render_user_and_group_rules(void **state)
{
	(void)state;
	struct host_sudo_rule r = {.user = "alice", .ncommands = 2, .nopasswd = true};
	r.commands[0] = "/usr/bin/systemctl restart nginx";
	r.commands[1] = "/usr/bin/journalctl";
	char *s = render_sudo("web", &r);
	assert_string_equal(s, "# Managed by vm-agent (sudoers.ensure web): changes here are "
	                       "overwritten.\n"
	                       "alice ALL=(ALL:ALL) NOPASSWD: /usr/bin/systemctl restart nginx, "
	                       "/usr/bin/journalctl\n");
	free(s);
	struct host_sudo_rule g = {.group = "admins", .ncommands = 1};
	g.commands[0] = "ALL";
	s = render_sudo("admins", &g);
	assert_non_null(strstr(s, "\n%admins ALL=(ALL:ALL) ALL\n"));
	free(s);
}

static void test_sudoers_parse_refuses_bad_input_with_its_path(void **state)
{
	(void)state;
	expect_ok(probe_sudoers_parse,
	          "{\"name\":\"ops\",\"user\":\"alice\",\"commands\":[\"/bin/true\"],"
	          "\"nopasswd\":true}");
	expect_ok(probe_sudoers_parse, "{\"name\":\"ops\",\"state\":\"absent\"}");
	expect_bad(probe_sudoers_parse,
	           "{\"name\":\"ops.d\",\"user\":\"a\",\"commands\":[\"ALL\"]}", "steps[0].name");
	expect_bad(probe_sudoers_parse,
	           "{\"name\":\"ops\",\"user\":\"Bob\",\"commands\":[\"ALL\"]}", "steps[0].user");
	expect_bad(probe_sudoers_parse,
	           "{\"name\":\"ops\",\"group\":\"a b\",\"commands\":[\"ALL\"]}", "steps[0].group");
	expect_bad(probe_sudoers_parse,
	           "{\"name\":\"ops\",\"user\":\"a\",\"group\":\"b\",\"commands\":[\"ALL\"]}",
	           "steps[0].user");
	expect_bad(probe_sudoers_parse, "{\"name\":\"ops\",\"commands\":[\"ALL\"]}",
	           "steps[0].user");
	expect_bad(probe_sudoers_parse, "{\"name\":\"ops\",\"user\":\"a\",\"commands\":[]}",
	           "steps[0].commands");
	expect_bad(probe_sudoers_parse,
	           "{\"name\":\"ops\",\"user\":\"a\",\"commands\":[\"/bin/true\",\"vi\"]}",
	           "steps[0].commands[1]");
	expect_bad(probe_sudoers_parse,
	           "{\"name\":\"ops\",\"user\":\"a\",\"commands\":[\"ALL\"],\"runas\":\"x\"}",
	           "steps[0].runas");
	expect_bad(probe_sudoers_parse, "{\"name\":\"ops\",\"state\":\"gone\"}", "steps[0].state");
	expect_bad(probe_sudoers_parse, "{\"name\":\"ops\",\"state\":\"absent\",\"user\":\"a\"}",
	           "steps[0].state");
}

/* --- sshd -------------------------------------------------------------------------- */

static void test_sshd_keywords_and_values_follow_the_grammar(void **state)
{
	(void)state;
	assert_true(host_valid_sshd_keyword("MaxAuthTries"));
	assert_true(host_valid_sshd_keyword("X11Forwarding"));
	assert_false(host_valid_sshd_keyword("Include"));
	assert_false(host_valid_sshd_keyword("match"));
	assert_false(host_valid_sshd_keyword("1Key"));
	assert_false(host_valid_sshd_keyword("Max-Auth"));
	assert_false(host_valid_sshd_keyword("Key Value"));
	assert_false(host_valid_sshd_keyword(""));
	assert_true(host_valid_sshd_value("3"));
	assert_true(host_valid_sshd_value("aes256-ctr,aes128-ctr"));
	assert_false(host_valid_sshd_value("no\nPermitRootLogin yes"));
	assert_false(host_valid_sshd_value("a b"));
	assert_false(host_valid_sshd_value("a\tb"));
	assert_false(host_valid_sshd_value("x#y"));
	assert_false(host_valid_sshd_value("\"x\""));
	assert_false(host_valid_sshd_value(""));
}

static char *render_sshd(const struct host_sshd_spec *s)
{
	struct buf b;
	buf_init(&b, 1u << 16);
	assert_int_equal(host_sshd_render(s, &b), 0);
	char *out = buf_take(&b, NULL);
	buf_free(&b);
	return out;
}

static void test_sshd_render_is_fixed_order_with_extra_sorted(void **state)
{
	(void)state;
	struct host_sshd_spec s = {
	    .disable_password_auth = 1, .disable_root_login = 1, .port = 2222};
	s.allow_users[s.nallow_users++] = "alice";
	s.allow_users[s.nallow_users++] = "bob";
	s.allow_groups[s.nallow_groups++] = "ops";
	s.extra[0].key = "X11Forwarding";
	s.extra[0].value = "no";
	s.extra[1].key = "MaxAuthTries";
	s.extra[1].value = "3";
	s.nextra = 2;
	char *out = render_sshd(&s);
	assert_string_equal(out, "PasswordAuthentication no\nPermitRootLogin no\n"
	                         "AllowUsers alice bob\nAllowGroups ops\nPort 2222\n"
	                         "MaxAuthTries 3\nX11Forwarding no\n");
	free(out);
	struct host_sshd_spec none = {.disable_password_auth = 0, .disable_root_login = -1};
	out = render_sshd(&none);
	assert_string_equal(out, "");
	free(out);
}

static void test_sshd_include_detection(void **state)
{
	(void)state;
	const char *f = HOST_SSHD_DROPIN;
	const char *debian = "# This is the sshd server system-wide configuration file.\n"
	                     "\n"
	                     "Include /etc/ssh/sshd_config.d/*.conf\n"
	                     "KbdInteractiveAuthentication no\n";
	assert_true(host_sshd_includes(debian, strlen(debian), f));
	const char *relative = "include sshd_config.d/*.conf\n";
	assert_true(host_sshd_includes(relative, strlen(relative), f));
	const char *eq = "  Include=\"/etc/ssh/sshd_config.d/50-vm-agent.conf\"\r\n";
	assert_true(host_sshd_includes(eq, strlen(eq), f));
	const char *two = "Include /etc/ssh/other.conf /etc/ssh/sshd_config.d/*\n";
	assert_true(host_sshd_includes(two, strlen(two), f));
	const char *commented = "#Include /etc/ssh/sshd_config.d/*.conf\nPort 22\n";
	assert_false(host_sshd_includes(commented, strlen(commented), f));
	const char *other = "Include /etc/ssh/sshd_config.d/*.cfg\n";
	assert_false(host_sshd_includes(other, strlen(other), f));
	/* '*' does not cross '/' */
	const char *deep = "Include /etc/ssh/*.conf\n";
	assert_false(host_sshd_includes(deep, strlen(deep), f));
	const char *in_match = "Port 22\nMatch User bob\n  Include /etc/ssh/sshd_config.d/*.conf\n";
	assert_false(host_sshd_includes(in_match, strlen(in_match), f));
	assert_false(host_sshd_includes("", 0, f));
	/* no NUL terminator needed: the length bounds the scan */
	assert_false(host_sshd_includes("Include /etc/ssh/sshd_config.d/*.conf", 10, f));
}

static void test_sshd_value_first_wins_and_stops_at_match(void **state)
{
	(void)state;
	char v[64];
	const char *conf = "# c\nport 2222\nPort 22\nPasswordAuthentication=no\nMatch User x\n"
	                   "PermitRootLogin yes\n";
	assert_int_equal(host_sshd_value(conf, strlen(conf), "Port", v, sizeof(v)), 1);
	assert_string_equal(v, "2222");
	assert_int_equal(
	    host_sshd_value(conf, strlen(conf), "passwordauthentication", v, sizeof(v)), 1);
	assert_string_equal(v, "no");
	assert_int_equal(host_sshd_value(conf, strlen(conf), "PermitRootLogin", v, sizeof(v)), 0);
	const char *t = "port 22\naddressfamily any\nallowusers alice bob\n";
	assert_int_equal(host_sshd_value(t, strlen(t), "AllowUsers", v, sizeof(v)), 1);
	assert_string_equal(v, "alice bob");
}

static char *inplace(const char *conf, const char *body, int *rc, char **old)
{
	struct buf out, ob;
	buf_init(&out, 1u << 20);
	buf_init(&ob, 1u << 20);
	*rc =
	    host_sshd_inplace(conf, strlen(conf), body, body != NULL ? strlen(body) : 0, &out, &ob);
	char *s = buf_take(&out, NULL);
	if (old != NULL)
		*old = buf_take(&ob, NULL);
	buf_free(&out);
	buf_free(&ob);
	return s;
}

static void test_sshd_inplace_block_is_on_top_and_idempotent(void **state)
{
	(void)state;
	const char *conf = "# main\nPort 22\nPasswordAuthentication yes";
	int rc;
	char *old;
	char *once = inplace(conf, "PasswordAuthentication no\n", &rc, &old);
	assert_int_equal(rc, 0);
	assert_string_equal(old, "");
	free(old);
	const char *want = "# BEGIN vm-agent sshd.harden (managed: changes here are overwritten)\n"
	                   "PasswordAuthentication no\n"
	                   "# END vm-agent sshd.harden\n"
	                   "# main\nPort 22\nPasswordAuthentication yes";
	assert_string_equal(once, want);
	char *twice = inplace(once, "PasswordAuthentication no\n", &rc, &old);
	assert_int_equal(rc, 0);
	assert_string_equal(twice, want);
	assert_string_equal(old, "PasswordAuthentication no\n");
	free(old);
	/* a new body replaces the old block; NULL takes it out, the rest verbatim */
	char *other = inplace(twice, "PermitRootLogin no\n", &rc, NULL);
	assert_non_null(strstr(other, "\nPermitRootLogin no\n# END"));
	assert_null(strstr(other, "PasswordAuthentication no"));
	char *gone = inplace(other, NULL, &rc, NULL);
	assert_string_equal(gone, conf);
	/* a BEGIN without its END: nothing is edited */
	char *broken = inplace("# BEGIN vm-agent sshd.harden (managed: changes here are "
	                       "overwritten)\nPort 22\n",
	                       "X 1\n", &rc, NULL);
	assert_int_equal(rc, -2);
	free(once);
	free(twice);
	free(other);
	free(gone);
	free(broken);
}

static void test_sshd_parse_refuses_bad_input_with_its_path(void **state)
{
	(void)state;
	expect_ok(probe_sshd_parse,
	          "{\"disable_password_auth\":true,\"allow_users\":[\"alice\"],\"port\":22,"
	          "\"extra\":{\"MaxAuthTries\":\"3\"}}");
	expect_bad(probe_sshd_parse, "{\"port\":0}", "steps[0].port");
	expect_bad(probe_sshd_parse, "{\"port\":65536}", "steps[0].port");
	expect_bad(probe_sshd_parse, "{\"disable_root_login\":\"yes\"}",
	           "steps[0].disable_root_login");
	expect_bad(probe_sshd_parse, "{\"allow_users\":[\"alice\",\"Bob Smith\"]}",
	           "steps[0].allow_users[1]");
	expect_bad(probe_sshd_parse, "{\"allow_groups\":\"ops\"}", "steps[0].allow_groups");
	expect_bad(probe_sshd_parse, "{\"extra\":{\"MaxAuthTries\":\"3\\nPermitRootLogin yes\"}}",
	           "steps[0].extra.MaxAuthTries");
	expect_bad(probe_sshd_parse, "{\"extra\":{\"Ciphers\":\"a b\"}}", "steps[0].extra.Ciphers");
	expect_bad(probe_sshd_parse, "{\"extra\":{\"Match\":\"all\"}}", "steps[0].extra.Match");
	expect_bad(probe_sshd_parse, "{\"extra\":{\"Max Auth\":\"3\"}}", "steps[0].extra.Max Auth");
	expect_bad(probe_sshd_parse, "{\"extra\":{\"port\":\"2222\"}}", "steps[0].extra.port");
	expect_bad(probe_sshd_parse, "{\"extra\":{\"MaxAuthTries\":3}}",
	           "steps[0].extra.MaxAuthTries");
	expect_bad(probe_sshd_parse, "{\"disable_password_auth\":false}", "steps[0].extra");
	expect_bad(probe_sshd_parse, "{\"listen\":\"0.0.0.0\"}", "steps[0].listen");
}

/* --- users and groups -------------------------------------------------------------- */

static void test_passwd_paths_for_home_and_shell(void **state)
{
	(void)state;
	assert_true(host_valid_passwd_path("/bin/bash"));
	assert_true(host_valid_passwd_path("/home/alice"));
	assert_true(host_valid_passwd_path("/"));
	assert_false(host_valid_passwd_path("bin/bash"));
	assert_false(host_valid_passwd_path("/home/a:b"));
	assert_false(host_valid_passwd_path("/home/a\nroot::0:0::/:/bin/sh"));
	assert_false(host_valid_passwd_path("/home/../etc"));
	assert_false(host_valid_passwd_path("/home/./a"));
	assert_false(host_valid_passwd_path("/home/a/.."));
	assert_false(host_valid_passwd_path("/home//a"));
	assert_false(host_valid_passwd_path("/home/a/"));
	assert_false(host_valid_passwd_path(""));
	assert_true(host_valid_passwd_path("/home/.alice"));
	assert_true(host_valid_passwd_path("/home/a..b"));
}

static void test_user_parse_refuses_bad_input_with_its_path(void **state)
{
	(void)state;
	expect_ok(probe_user_parse, "{\"name\":\"alice\",\"uid\":1500,\"gid\":1500,"
	                            "\"groups\":[\"sudo\",\"adm\"],\"shell\":\"/bin/bash\","
	                            "\"home\":\"/home/alice\",\"system\":false}");
	expect_ok(probe_user_parse,
	          "{\"name\":\"alice\",\"state\":\"absent\",\"remove_home\":true}");
	expect_bad(probe_user_parse, "{\"name\":\"Alice\"}", "steps[0].name");
	expect_bad(probe_user_parse, "{\"name\":\"-alice\"}", "steps[0].name");
	expect_bad(probe_user_parse, "{\"name\":\"abcdefghijklmnopqrstuvwxyz0123456\"}",
	           "steps[0].name");
	expect_bad(probe_user_parse, "{}", "steps[0].name");
	expect_bad(probe_user_parse, "{\"name\":\"a\",\"uid\":0}", "steps[0].uid");
	expect_bad(probe_user_parse, "{\"name\":\"a\",\"uid\":4294967295}", "steps[0].uid");
	expect_bad(probe_user_parse, "{\"name\":\"a\",\"uid\":-1}", "steps[0].uid");
	expect_bad(probe_user_parse, "{\"name\":\"a\",\"uid\":\"1000\"}", "steps[0].uid");
	expect_bad(probe_user_parse, "{\"name\":\"a\",\"gid\":1.5}", "steps[0].gid");
	expect_bad(probe_user_parse, "{\"name\":\"a\",\"shell\":\"bash\"}", "steps[0].shell");
	expect_bad(probe_user_parse, "{\"name\":\"a\",\"home\":\"/home/a:x\"}", "steps[0].home");
	expect_bad(probe_user_parse, "{\"name\":\"a\",\"groups\":[\"sudo\",\"wheel,root\"]}",
	           "steps[0].groups[1]");
	expect_bad(probe_user_parse, "{\"name\":\"a\",\"groups\":\"sudo\"}", "steps[0].groups");
	expect_bad(probe_user_parse, "{\"name\":\"a\",\"state\":\"absent\",\"uid\":1000}",
	           "steps[0].state");
	expect_bad(probe_user_parse, "{\"name\":\"a\",\"password\":\"x\"}", "steps[0].password");
}

static void test_group_parse_refuses_bad_input_with_its_path(void **state)
{
	(void)state;
	expect_ok(probe_group_parse, "{\"name\":\"ops\",\"gid\":2000,\"system\":true}");
	expect_ok(probe_group_parse, "{\"name\":\"ops\",\"state\":\"absent\"}");
	expect_bad(probe_group_parse, "{\"name\":\"ops:x\"}", "steps[0].name");
	expect_bad(probe_group_parse, "{\"name\":\"ops\",\"gid\":0}", "steps[0].gid");
	expect_bad(probe_group_parse, "{\"name\":\"ops\",\"members\":[]}", "steps[0].members");
	expect_bad(probe_group_parse, "{\"name\":\"ops\",\"state\":\"absent\",\"gid\":5}",
	           "steps[0].state");
}

static void test_passwd_and_group_lookups(void **state)
{
	(void)state;
	const char *pw = "root:x:0:0:root:/root:/bin/bash\n"
	                 "garbage line\n"
	                 "+nis\n"
	                 "alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash\n"
	                 "alicex:x:1001:1001::/home/alicex:/bin/sh";
	struct passwd_entry e;
	assert_int_equal(host_passwd_find(pw, strlen(pw), "alice", &e), 1);
	assert_int_equal(e.uid, 1000);
	assert_string_equal(e.home, "/home/alice");
	assert_int_equal(host_passwd_find(pw, strlen(pw), "alicex", &e), 1);
	assert_string_equal(e.shell, "/bin/sh");
	assert_int_equal(host_passwd_find(pw, strlen(pw), "alic", &e), 0);
	assert_int_equal(host_passwd_find(pw, strlen(pw), "bob", &e), 0);
	assert_int_equal(host_passwd_find("", 0, "root", &e), 0);

	const char *gr = "root:x:0:\nsudo:x:27:bob,alice\nadm:x:4:alice\nalice:x:1000:\n"
	                 "users:x:100:alicex\n";
	struct group_entry *g = malloc(sizeof(*g));
	assert_int_equal(host_group_find(gr, strlen(gr), "sudo", g), 1);
	assert_int_equal(g->gid, 27);
	free(g);
	char list[256];
	assert_int_equal(host_group_memberships(gr, strlen(gr), "alice", list, sizeof(list)), 0);
	assert_string_equal(list, "adm,sudo"); /* sorted; the primary group is not a membership */
	assert_int_equal(host_group_memberships(gr, strlen(gr), "nobody", list, sizeof(list)), 0);
	assert_string_equal(list, "");
	assert_int_equal(host_group_memberships(gr, strlen(gr), "alice", list, 4), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sudoers_names_sudo_would_skip_are_refused),
	    cmocka_unit_test(test_sudo_commands_are_absolute_and_cannot_inject),
	    cmocka_unit_test(test_sudoers_render_user_and_group_rules),
	    cmocka_unit_test(test_sudoers_parse_refuses_bad_input_with_its_path),
	    cmocka_unit_test(test_sshd_keywords_and_values_follow_the_grammar),
	    cmocka_unit_test(test_sshd_render_is_fixed_order_with_extra_sorted),
	    cmocka_unit_test(test_sshd_include_detection),
	    cmocka_unit_test(test_sshd_value_first_wins_and_stops_at_match),
	    cmocka_unit_test(test_sshd_inplace_block_is_on_top_and_idempotent),
	    cmocka_unit_test(test_sshd_parse_refuses_bad_input_with_its_path),
	    cmocka_unit_test(test_passwd_paths_for_home_and_shell),
	    cmocka_unit_test(test_user_parse_refuses_bad_input_with_its_path),
	    cmocka_unit_test(test_group_parse_refuses_bad_input_with_its_path),
	    cmocka_unit_test(test_passwd_and_group_lookups),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
