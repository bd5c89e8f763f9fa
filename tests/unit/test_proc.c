/* Unit tests for core/proc: exit codes and signals, stdin, the clean
 * environment, output caps, deadline and cancel of a whole process group, and
 * errors when nothing could be started. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/proc.h"

static char *const clean_env[] = {"PATH=/usr/bin:/bin", NULL};

static int run_sh(const char *script, struct proc_result *res, struct proc_spec *extra)
{
	char *const argv[] = {"/bin/sh", "-c", (char *)script, NULL};
	struct proc_spec spec = {.path = "/bin/sh",
	                         .argv = argv,
	                         .envp = clean_env,
	                         .out_cap = 1 << 20,
	                         .grace_ms = 200};
	if (extra != NULL) {
		spec.stdin_data = extra->stdin_data;
		spec.stdin_len = extra->stdin_len;
		spec.deadline_ms = extra->deadline_ms;
		spec.cancel = extra->cancel;
		if (extra->out_cap)
			spec.out_cap = extra->out_cap;
	}
	struct vm_err err = {0};
	return proc_run(&spec, res, &err);
}

static void test_proc_exit_code_stdout_stderr(void **state)
{
	(void)state;
	struct proc_result r;
	assert_int_equal(run_sh("echo out; echo err >&2; exit 3", &r, NULL), 0);
	assert_int_equal(r.exit_code, 3);
	assert_int_equal(r.term_signal, 0);
	assert_string_equal(r.out, "out\n");
	assert_string_equal(r.err, "err\n");
	proc_result_free(&r);
	assert_int_equal(run_sh("kill -9 $$", &r, NULL), 0);
	assert_int_equal(r.term_signal, SIGKILL);
	assert_int_equal(r.exit_code, -1);
	proc_result_free(&r);
}

static void test_proc_stdin_and_clean_env(void **state)
{
	(void)state;
	setenv("VMA_SECRET_FOR_TEST", "hunter2", 1);
	struct proc_spec in = {.stdin_data = "abc", .stdin_len = 3};
	struct proc_result r;
	assert_int_equal(run_sh("cat; env | grep -c VMA_SECRET || true", &r, &in), 0);
	assert_string_equal(r.out, "abc0\n");
	proc_result_free(&r);
	unsetenv("VMA_SECRET_FOR_TEST");
}

static void test_proc_output_cap_drains_and_flags(void **state)
{
	(void)state;
	struct proc_spec cap = {.out_cap = 1000};
	struct proc_result r;
	assert_int_equal(run_sh("head -c 300000 /dev/zero; echo e >&2", &r, &cap), 0);
	assert_int_equal(r.exit_code, 0);
	assert_int_equal(r.out_len, 1000);
	assert_true(r.out_truncated);
	assert_false(r.err_truncated);
	proc_result_free(&r);
}

static void test_proc_deadline_kills_group(void **state)
{
	(void)state;
	struct proc_spec dl = {.deadline_ms = proc_now_ms() + 300};
	struct proc_result r;
	/* the grandchild ignores SIGTERM and holds stdout open */
	assert_int_equal(run_sh("(trap '' TERM; sleep 30) & sleep 30", &r, &dl), 0);
	assert_true(r.timed_out);
	assert_false(r.canceled);
	assert_true(r.duration_ms < 5000);
	proc_result_free(&r);
}

static void test_proc_cancel_flag(void **state)
{
	(void)state;
	static atomic_bool cancel = true;
	struct proc_spec c = {.cancel = &cancel};
	struct proc_result r;
	assert_int_equal(run_sh("sleep 30", &r, &c), 0);
	assert_true(r.canceled);
	assert_int_equal(r.term_signal, SIGTERM);
	proc_result_free(&r);
}

static void test_proc_start_errors(void **state)
{
	(void)state;
	char *const argv[] = {"nope", NULL};
	struct proc_spec spec = {
	    .path = "/nonexistent/nope", .argv = argv, .envp = clean_env, .out_cap = 100};
	struct proc_result r;
	struct vm_err err = {0};
	assert_int_not_equal(proc_run(&spec, &r, &err), 0);
	assert_int_equal(err.code, VM_ERR_NOTFOUND);
	proc_result_free(&r);
	spec.path = "/bin/true";
	spec.cwd = "/nonexistent-dir";
	assert_int_not_equal(proc_run(&spec, &r, &err), 0);
	assert_non_null(strstr(err.msg, "chdir"));
	proc_result_free(&r);
	char path[256];
	assert_int_equal(proc_resolve("sh", path, sizeof(path), &err), 0);
	assert_true(path[0] == '/');
	assert_int_not_equal(proc_resolve("no-such-command-xyz", path, sizeof(path), &err), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_proc_exit_code_stdout_stderr),
	    cmocka_unit_test(test_proc_stdin_and_clean_env),
	    cmocka_unit_test(test_proc_output_cap_drains_and_flags),
	    cmocka_unit_test(test_proc_deadline_kills_group),
	    cmocka_unit_test(test_proc_cancel_flag),
	    cmocka_unit_test(test_proc_start_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
