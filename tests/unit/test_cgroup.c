/* Unit tests for core/cgroup on a fake tree (a temp dir laid out like
 * /sys/fs/cgroup): pure v2 / hybrid / none detection, the delegated setup
 * (agent moved to a leaf, controllers enabled for steps/), the hybrid
 * track-only mode that says why limits are missing, and limit writing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/cgroup.h"
#include "test_dir.h"

static const char *at(const char *rel)
{
	static char p[4][PATH_MAX];
	static int i;
	i = (i + 1) % 4;
	snprintf(p[i], sizeof(p[i]), "%s/%s", test_dir, rel);
	return p[i];
}

/* mkdir -p of rel's directory, then rel with content */
static void put(const char *rel, const char *content)
{
	char d[PATH_MAX];
	snprintf(d, sizeof(d), "%s", at(rel));
	for (char *s = d + strlen(test_dir) + 1; (s = strchr(s, '/')) != NULL; s++) {
		*s = '\0';
		(void)mkdir(d, 0755);
		*s = '/';
	}
	FILE *f = fopen(at(rel), "w");
	assert_non_null(f);
	fputs(content, f);
	fclose(f);
}

static const char *get(const char *rel)
{
	static char buf[512];
	buf[0] = '\0';
	FILE *f = fopen(at(rel), "r");
	if (f == NULL)
		return "<missing>";
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static void test_cgroup_detect_pure_v2_hybrid_none(void **state)
{
	(void)state;
	char v2[PATH_MAX], own[PATH_MAX];
	struct vm_err err = {0};
	put("self", "0::/system.slice/vm-agent.service\n");
	put("pure/cgroup.controllers", "cpuset cpu io memory pids\n");
	assert_int_equal(cg_detect(at("pure"), at("self"), v2, sizeof(v2), own, sizeof(own), &err),
	                 0);
	assert_string_equal(v2, at("pure"));
	assert_string_equal(own, "/system.slice/vm-agent.service");

	put("hyb/memory/tasks", "");
	put("hyb/unified/cgroup.controllers", "");
	put("self-hyb", "12:pids:/\n4:memory:/x\n1:name=systemd:/\n0::/\n");
	assert_int_equal(
	    cg_detect(at("hyb"), at("self-hyb"), v2, sizeof(v2), own, sizeof(own), &err), 0);
	assert_string_equal(v2, at("hyb/unified"));
	assert_string_equal(own, "/");

	put("v1only/memory/tasks", "");
	assert_int_equal(
	    cg_detect(at("v1only"), at("self"), v2, sizeof(v2), own, sizeof(own), &err),
	    -VM_ERR_NOTFOUND);
	put("self-v1", "4:memory:/x\n");
	assert_int_equal(
	    cg_detect(at("pure"), at("self-v1"), v2, sizeof(v2), own, sizeof(own), &err),
	    -VM_ERR_NOTFOUND);
	put("self-bad", "0::/a/../../etc\n");
	assert_int_equal(
	    cg_detect(at("pure"), at("self-bad"), v2, sizeof(v2), own, sizeof(own), &err),
	    -VM_ERR_INVALID);
}

static void test_cgroup_none_degrades_and_says_why(void **state)
{
	(void)state;
	put("v1only/memory/tasks", "");
	put("self", "0::/\n");
	struct cg_tree t;
	int killed = -1;
	cg_open(&t, at("v1only"), at("self"), test_dir, &killed);
	assert_int_equal(t.mode, CG_NONE);
	assert_int_equal(killed, 0);
	assert_string_equal(t.base, "");
	assert_non_null(strstr(t.why, "no cgroup v2"));
	struct cg_step s;
	struct vm_err err = {0};
	struct cg_limits lim = {0, 0, 10};
	assert_int_not_equal(cg_step_new(&t, &lim, &s, &err), 0);
	cg_close(&t);
}

/* What systemd gives a Delegate=yes service: its own cgroup, controllers
 * available, the agent's pid inside (the kernel shows child files, so the
 * fake tree has them already). */
static void lay_out_delegated(void)
{
	put("root/cgroup.controllers", "cpuset cpu io memory pids\n");
	put("root/system.slice/vm-agent.service/cgroup.controllers", "cpu io memory pids\n");
	put("root/system.slice/vm-agent.service/cgroup.subtree_control", "");
	put("root/system.slice/vm-agent.service/cgroup.procs", "1234\n");
	put("root/system.slice/vm-agent.service/agent/cgroup.procs", "");
	put("root/system.slice/vm-agent.service/steps/cgroup.controllers", "cpu io memory pids\n");
	put("root/system.slice/vm-agent.service/steps/cgroup.subtree_control", "");
	put("self", "0::/system.slice/vm-agent.service\n");
	(void)mkdir(at("state"), 0700);
}

static void test_cgroup_delegated_moves_agent_to_leaf_and_enables_limits(void **state)
{
	(void)state;
	lay_out_delegated();
	struct cg_tree t;
	int killed = -1;
	cg_open(&t, at("root"), at("self"), at("state"), &killed);
	assert_int_equal(t.mode, CG_LIMIT);
	assert_int_equal(t.controllers, CG_MEMORY | CG_CPU | CG_PIDS);
	assert_string_equal(t.why, "");
	assert_string_equal(t.base, at("root/system.slice/vm-agent.service/steps"));
	/* the agent left the delegated cgroup before controllers were enabled there */
	assert_string_equal(get("root/system.slice/vm-agent.service/agent/cgroup.procs"), "0");
	assert_string_equal(get("root/system.slice/vm-agent.service/cgroup.subtree_control"),
	                    "+memory +cpu +pids");
	assert_string_equal(get("root/system.slice/vm-agent.service/steps/cgroup.subtree_control"),
	                    "+memory +cpu +pids");
	/* the base is recorded for the next start */
	assert_string_equal(get("state/cgroup.base"), t.base);
	cg_close(&t);
	assert_string_equal(get("state/cgroup.base"), "<missing>");
}

static void test_cgroup_restart_inside_agent_leaf_keeps_tree(void **state)
{
	(void)state;
	lay_out_delegated();
	put("self", "0::/system.slice/vm-agent.service/agent\n");
	struct cg_tree t;
	int killed;
	cg_open(&t, at("root"), at("self"), at("state"), &killed);
	assert_int_equal(t.mode, CG_LIMIT);
	assert_string_equal(t.base, at("root/system.slice/vm-agent.service/steps"));
	cg_close(&t);
}

static void test_cgroup_hybrid_tracks_and_names_missing_limits(void **state)
{
	(void)state;
	put("root/memory/tasks", "");
	put("root/unified/cgroup.controllers", "");
	put("root/unified/cgroup.subtree_control", "");
	put("self", "0::/\n");
	(void)mkdir(at("state"), 0700);
	struct cg_tree t;
	int killed;
	cg_open(&t, at("root"), at("self"), at("state"), &killed);
	assert_int_equal(t.mode, CG_TRACK);
	assert_int_equal(t.controllers, 0);
	assert_non_null(strstr(t.base, "/root/unified/vm-agent-"));
	assert_non_null(strstr(t.why, "memory, cpu, pids"));
	assert_non_null(strstr(t.why, "hybrid"));
	cg_close(&t);
	/* our own base is removed again */
	struct stat st;
	assert_int_not_equal(stat(t.record, &st), 0);
}

static void test_cgroup_write_limits_only_what_is_available(void **state)
{
	(void)state;
	put("step/memory.max", "max\n");
	put("step/cpu.max", "max 100000\n");
	put("step/pids.max", "max\n");
	struct cg_limits lim = {256u << 20, 50, 100};
	char note[256];
	unsigned got =
	    cg_write_limits(at("step"), CG_MEMORY | CG_CPU | CG_PIDS, &lim, note, sizeof(note));
	assert_int_equal(got, CG_MEMORY | CG_CPU | CG_PIDS);
	assert_string_equal(note, "");
	assert_string_equal(get("step/memory.max"), "268435456");
	assert_string_equal(get("step/cpu.max"), "50000 100000");
	assert_string_equal(get("step/pids.max"), "100");

	/* only pids delegated: the others are named, never pretended */
	put("step2/pids.max", "max\n");
	got = cg_write_limits(at("step2"), CG_PIDS, &lim, note, sizeof(note));
	assert_int_equal(got, CG_PIDS);
	assert_string_equal(get("step2/pids.max"), "100");
	assert_string_equal(note, "memory_max, cpu_max not applied");

	/* a controller said to be there whose file is missing: reported, not applied */
	got = cg_write_limits(at("step2"), CG_MEMORY, &(struct cg_limits){1u << 20, 0, 0}, note,
	                      sizeof(note));
	assert_int_equal(got, 0);
	assert_string_equal(note, "memory_max (No such file or directory) not applied");

	/* nothing asked: nothing written */
	put("step3/pids.max", "max\n");
	got =
	    cg_write_limits(at("step3"), CG_PIDS, &(struct cg_limits){0, 0, 0}, note, sizeof(note));
	assert_int_equal(got, 0);
	assert_string_equal(get("step3/pids.max"), "max\n");
}

/* A clean step cgroup laid out in the fake tree (cgroup.events, cgroup.stat,
 * limit files holding an earlier step's values), handed to cg_step_free. */
static void release_fake_step(struct cg_tree *t, const char *name, const char *events)
{
	char rel[256];
	const char *base = "root/system.slice/vm-agent.service/steps";
	snprintf(rel, sizeof(rel), "%s/%s/cgroup.procs", base, name);
	put(rel, "");
	snprintf(rel, sizeof(rel), "%s/%s/cgroup.events", base, name);
	put(rel, events);
	snprintf(rel, sizeof(rel), "%s/%s/cgroup.stat", base, name);
	put(rel, "nr_descendants 0\nnr_dying_descendants 0\n");
	snprintf(rel, sizeof(rel), "%s/%s/memory.max", base, name);
	put(rel, "123\n");
	snprintf(rel, sizeof(rel), "%s/%s/cpu.max", base, name);
	put(rel, "5000 100000\n");
	snprintf(rel, sizeof(rel), "%s/%s/pids.max", base, name);
	put(rel, "7\n");
	struct cg_step s = {.tree = t};
	int n = snprintf(s.path, sizeof(s.path), "%.*s/%s", PATH_MAX - 64, t->base, name);
	assert_true(n > 0 && (size_t)n < sizeof(s.path));
	snprintf(rel, sizeof(rel), "%s/%s/cgroup.procs", base, name);
	s.procs_fd = open(at(rel), O_WRONLY | O_CLOEXEC);
	assert_true(s.procs_fd >= 0);
	cg_step_free(&s);
	assert_int_equal(s.procs_fd, -1);
}

static void test_cgroup_pool_reuses_clean_step_and_resets_limits(void **state)
{
	(void)state;
	lay_out_delegated();
	struct cg_tree t;
	int killed;
	cg_open(&t, at("root"), at("self"), at("state"), &killed);
	assert_int_equal(t.controllers, CG_MEMORY | CG_CPU | CG_PIDS);
	/* empty, not frozen, no child cgroup: kept for the next step */
	release_fake_step(&t, "step-1-1", "populated 0\nfrozen 0\n");
	assert_int_equal(t.pool_n, 1);
	struct cg_step s;
	struct vm_err err = {0};
	struct cg_limits lim = {256u << 20, 0, 0};
	assert_int_equal(cg_step_new(&t, &lim, &s, &err), 0);
	assert_int_equal(t.pool_n, 0);
	assert_string_equal(s.path, at("root/system.slice/vm-agent.service/steps/step-1-1"));
	assert_true(s.procs_fd >= 0);
	assert_int_equal(s.applied, CG_MEMORY);
	/* every limit is the new step's: the earlier step's cpu and pids are gone */
	const char *dir = "root/system.slice/vm-agent.service/steps/step-1-1";
	char rel[256];
	snprintf(rel, sizeof(rel), "%s/memory.max", dir);
	assert_string_equal(get(rel), "268435456");
	snprintf(rel, sizeof(rel), "%s/cpu.max", dir);
	assert_string_equal(get(rel), "max 100000");
	snprintf(rel, sizeof(rel), "%s/pids.max", dir);
	assert_string_equal(get(rel), "max");
	/* a child cgroup left by the step: not pooled (removed instead) */
	snprintf(rel, sizeof(rel), "%s/cgroup.stat", dir);
	put(rel, "nr_descendants 1\nnr_dying_descendants 0\n");
	cg_step_free(&s);
	assert_int_equal(t.pool_n, 0);
	/* frozen while in the pool: never handed out again */
	release_fake_step(&t, "step-1-2", "populated 0\nfrozen 0\n");
	assert_int_equal(t.pool_n, 1);
	put("root/system.slice/vm-agent.service/steps/step-1-2/cgroup.events",
	    "populated 0\nfrozen 1\n");
	int rc = cg_step_new(&t, &lim, &s, &err);
	assert_int_equal(t.pool_n, 0);
	assert_true(rc != 0 || strstr(s.path, "step-1-2") == NULL);
	if (rc == 0)
		cg_step_free(&s);
	/* shutdown empties the pool */
	release_fake_step(&t, "step-1-3", "populated 0\nfrozen 0\n");
	assert_int_equal(t.pool_n, 1);
	cg_close(&t);
	assert_int_equal(t.pool_n, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_cgroup_detect_pure_v2_hybrid_none, test_dir_setup,
	                                    test_dir_teardown),
	    cmocka_unit_test_setup_teardown(test_cgroup_none_degrades_and_says_why, test_dir_setup,
	                                    test_dir_teardown),
	    cmocka_unit_test_setup_teardown(
	        test_cgroup_delegated_moves_agent_to_leaf_and_enables_limits, test_dir_setup,
	        test_dir_teardown),
	    cmocka_unit_test_setup_teardown(test_cgroup_restart_inside_agent_leaf_keeps_tree,
	                                    test_dir_setup, test_dir_teardown),
	    cmocka_unit_test_setup_teardown(test_cgroup_hybrid_tracks_and_names_missing_limits,
	                                    test_dir_setup, test_dir_teardown),
	    cmocka_unit_test_setup_teardown(test_cgroup_write_limits_only_what_is_available,
	                                    test_dir_setup, test_dir_teardown),
	    cmocka_unit_test_setup_teardown(test_cgroup_pool_reuses_clean_step_and_resets_limits,
	                                    test_dir_setup, test_dir_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
