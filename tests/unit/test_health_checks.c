/* Unit tests for health threshold checks and the Prometheus/JSON exports. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "health/internal.h"

static const struct health_thresholds th = {
    .disk_warn_percent = 90,
    .disk_critical_percent = 95,
    .memory_warn_percent = 95,
    .tunnel_down_after_ms = 300000,
    .cp_unreachable_after_ms = 900000,
    .clock_skew_max_ms = 60000,
};

static struct health_snapshot *base(void)
{
	struct health_snapshot *s = calloc(1, sizeof(*s));
	s->time = 1000000;
	s->started_at = 999000;
	s->sys.cpu_percent = -1;
	s->sys.mem_total = 1000;
	s->sys.mem_available = 500;
	s->sys.nfs = 1;
	snprintf(s->sys.fs[0].mount, sizeof(s->sys.fs[0].mount), "/");
	snprintf(s->sys.fs[0].fstype, sizeof(s->sys.fs[0].fstype), "ext4");
	s->sys.fs[0].size_bytes = 1000;
	s->sys.fs[0].free_bytes = 500;
	s->sys.fs[0].avail_bytes = 500;
	s->sys.fs[0].inodes_total = 100;
	s->sys.fs[0].inodes_free = 50;
	return s;
}

static bool has_reason(const struct health_snapshot *s, const char *needle)
{
	for (size_t i = 0; i < s->nreasons; i++)
		if (strstr(s->reasons[i], needle) != NULL)
			return true;
	return false;
}

static void test_health_checks_all_fine_is_healthy(void **state)
{
	(void)state;
	struct health_snapshot *s = base();
	health_evaluate(s, &th);
	assert_int_equal(s->state, HEALTH_HEALTHY);
	assert_int_equal(s->nreasons, 0);
	free(s);
}

static void test_health_checks_disk_thresholds(void **state)
{
	(void)state;
	struct health_snapshot *s = base();
	s->sys.fs[0].free_bytes = 80;
	s->sys.fs[0].avail_bytes = 80; /* 92 % */
	health_evaluate(s, &th);
	assert_int_equal(s->state, HEALTH_DEGRADED);
	assert_true(has_reason(s, "disk / is 92% full"));
	s->sys.fs[0].free_bytes = 60;
	s->sys.fs[0].avail_bytes = 10; /* reserved blocks count as used: 940/950 = 99 % */
	health_evaluate(s, &th);
	assert_int_equal(s->state, HEALTH_UNHEALTHY);
	assert_true(has_reason(s, "disk / is 99% full"));
	s->sys.fs[0].free_bytes = s->sys.fs[0].avail_bytes = 500;
	s->sys.fs[0].inodes_free = 2;
	health_evaluate(s, &th);
	assert_int_equal(s->state, HEALTH_UNHEALTHY);
	assert_true(has_reason(s, "inodes"));
	free(s);
}

static void test_health_checks_tunnel_down_after_five_minutes(void **state)
{
	(void)state;
	struct health_snapshot *s = base();
	s->tunnel.enabled = true;
	s->tunnel.connected = false;
	s->tunnel.changed_at = s->time - 60;
	health_evaluate(s, &th);
	assert_int_equal(s->state, HEALTH_DEGRADED);
	assert_true(has_reason(s, "tunnel reconnecting"));
	s->tunnel.changed_at = s->time - 301;
	health_evaluate(s, &th);
	assert_int_equal(s->state, HEALTH_UNHEALTHY);
	assert_true(has_reason(s, "tunnel down for 301s"));
	s->tunnel.connected = true;
	health_evaluate(s, &th);
	assert_int_equal(s->state, HEALTH_HEALTHY);
	free(s);
}

static void test_health_checks_control_plane_clock_memory_spool(void **state)
{
	(void)state;
	struct health_snapshot *s = base();
	s->reporting_enabled = true;
	s->cp_unreachable_since = s->time - 100;
	health_evaluate(s, &th);
	assert_int_equal(s->state, HEALTH_HEALTHY); /* not yet 15 min */
	s->cp_unreachable_since = s->time - 1000;
	health_evaluate(s, &th);
	assert_int_equal(s->state, HEALTH_DEGRADED);
	assert_true(has_reason(s, "control plane unreachable"));
	s->cp_unreachable_since = 0;
	s->last_report_status = 401;
	health_evaluate(s, &th);
	assert_int_equal(s->state, HEALTH_UNHEALTHY);
	s->last_report_status = 202;
	s->clock_skew_known = true;
	s->clock_skew_s = -75;
	health_evaluate(s, &th);
	assert_true(has_reason(s, "clock skew -75s"));
	s->clock_skew_s = 30;
	s->sys.mem_available = 10;
	health_evaluate(s, &th);
	assert_true(has_reason(s, "memory is 99% used"));
	assert_false(has_reason(s, "clock"));
	s->spool_dropped = 3;
	health_evaluate(s, &th);
	assert_true(has_reason(s, "3 health reports dropped"));
	free(s);
}

static void test_health_state_names(void **state)
{
	(void)state;
	assert_string_equal(health_state_name(HEALTH_HEALTHY), "healthy");
	assert_string_equal(health_state_name(HEALTH_DEGRADED), "degraded");
	assert_string_equal(health_state_name(HEALTH_UNHEALTHY), "unhealthy");
}

static void test_health_prometheus_format_and_escaping(void **state)
{
	(void)state;
	struct health_snapshot *s = base();
	snprintf(s->sys.fs[0].mount, sizeof(s->sys.fs[0].mount), "/mnt/a \"q\" \\ x\ny");
	s->sys.nnet = 1;
	snprintf(s->sys.net[0].iface, sizeof(s->sys.net[0].iface), "eth0");
	s->sys.net[0].rx_bytes = 12345678901ull;
	s->sys.cpu_percent = 12.5;
	s->reports_sent = 4;
	health_evaluate(s, &th);
	char *text = health_format_prometheus(s, "1.2.3");
	assert_non_null(text);
	assert_non_null(strstr(text, "# HELP vm_agent_health_reports_sent_total "));
	assert_non_null(strstr(text, "# TYPE vm_agent_health_reports_sent_total counter\n"
	                             "vm_agent_health_reports_sent_total 4\n"));
	assert_non_null(strstr(text, "vm_agent_build_info{version=\"1.2.3\"} 1\n"));
	assert_non_null(strstr(text, "vm_agent_health_state{state=\"healthy\"} 1\n"));
	assert_non_null(strstr(text, "vm_agent_health_state{state=\"degraded\"} 0\n"));
	assert_non_null(strstr(text, "vm_agent_host_cpu_usage_ratio 0.125\n"));
	assert_non_null(strstr(text, "mountpoint=\"/mnt/a \\\"q\\\" \\\\ x\\ny\""));
	assert_non_null(strstr(text, "vm_agent_host_network_receive_bytes_total{device=\"eth0\"} "
	                             "12345678901\n"));
	assert_non_null(strstr(text, "vm_agent_clock_skew_seconds NaN\n"));
	/* every sample line belongs to a family declared just before with TYPE */
	for (char *line = text; *line; line = strchr(line, '\n') + 1) {
		if (*line != '#') {
			size_t n = strcspn(line, "{ ");
			char pat[160];
			snprintf(pat, sizeof(pat), "# TYPE %.*s ", (int)n, line);
			assert_non_null(strstr(text, pat));
		}
		if (strchr(line, '\n') == NULL)
			break;
	}
	free(text);
	free(s);
}

static void test_health_json_has_state_reasons_and_system(void **state)
{
	(void)state;
	struct health_snapshot *s = base();
	s->sys.fs[0].avail_bytes = s->sys.fs[0].free_bytes = 1;
	health_evaluate(s, &th);
	json_t *j = health_snapshot_json(s, "agent-1", "0.1.0");
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "state")), "unhealthy");
	assert_int_equal(json_array_size(json_object_get(j, "reasons")), 1);
	json_t *sys = json_object_get(j, "system");
	assert_true(json_is_null(json_object_get(sys, "cpu_percent")));
	assert_int_equal(json_array_size(json_object_get(sys, "filesystems")), 1);
	json_decref(j);
	free(s);
}

/* Containment as the executor found it: mode, limits available or why not,
 * in the JSON and as gauges; absent (null, no family) without a source. */
static void test_health_containment_in_json_and_metrics(void **state)
{
	(void)state;
	struct health_snapshot *s = base();
	health_evaluate(s, &th);
	json_t *j = health_snapshot_json(s, "agent-1", "0.1.0");
	assert_true(json_is_null(json_object_get(j, "containment")));
	assert_non_null(json_object_get(json_object_get(j, "log"), "file_write_failures"));
	json_decref(j);
	char *text = health_format_prometheus(s, "1.2.3");
	assert_null(strstr(text, "vm_agent_probe_containment"));
	free(text);

	s->containment_known = true;
	snprintf(s->containment.mode, sizeof(s->containment.mode), "cgroup-v2");
	s->containment.memory = s->containment.pids = true;
	snprintf(s->containment.why, sizeof(s->containment.why), "no cpu controller");
	j = health_snapshot_json(s, "agent-1", "0.1.0");
	json_t *c = json_object_get(j, "containment");
	assert_string_equal(json_string_value(json_object_get(c, "mode")), "cgroup-v2");
	json_t *lim = json_object_get(c, "limits");
	assert_true(json_is_true(json_object_get(lim, "memory")));
	assert_true(json_is_false(json_object_get(lim, "cpu")));
	assert_true(json_is_true(json_object_get(lim, "pids")));
	assert_string_equal(json_string_value(json_object_get(c, "limits_unavailable")),
	                    "no cpu controller");
	json_decref(j);
	text = health_format_prometheus(s, "1.2.3");
	assert_non_null(strstr(text, "# TYPE vm_agent_probe_containment gauge\n"));
	assert_non_null(strstr(text, "vm_agent_probe_containment{mode=\"cgroup-v2\"} 1\n"));
	assert_non_null(strstr(text, "vm_agent_probe_containment{mode=\"none\"} 0\n"));
	assert_non_null(strstr(text, "vm_agent_probe_limit_available{limit=\"memory\"} 1\n"));
	assert_non_null(strstr(text, "vm_agent_probe_limit_available{limit=\"cpu\"} 0\n"));
	s->log.file_write_failures = 3;
	free(text);
	text = health_format_prometheus(s, "1.2.3");
	assert_non_null(strstr(text, "vm_agent_log_file_write_failures_total 3\n"));
	assert_non_null(strstr(text, "vm_agent_log_lines_lost_total 0\n"));
	free(text);
	free(s);
}

/* limits.max_concurrent: slots in use and the limit, null/NaN without a budget. */
static void test_health_concurrency_in_json_and_metrics(void **state)
{
	(void)state;
	struct health_snapshot *s = base();
	health_evaluate(s, &th);
	json_t *j = health_snapshot_json(s, "agent-1", "0.1.0");
	assert_true(json_is_null(json_object_get(j, "concurrency")));
	json_decref(j);
	s->budget_known = true;
	s->budget_in_use = 2;
	s->budget_limit = 3;
	j = health_snapshot_json(s, "agent-1", "0.1.0");
	json_t *c = json_object_get(j, "concurrency");
	assert_int_equal(json_integer_value(json_object_get(c, "in_use")), 2);
	assert_int_equal(json_integer_value(json_object_get(c, "limit")), 3);
	json_decref(j);
	char *text = health_format_prometheus(s, "1.2.3");
	assert_non_null(strstr(text, "vm_agent_concurrency_in_use 2\n"));
	assert_non_null(strstr(text, "vm_agent_concurrency_limit 3\n"));
	free(text);
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_health_checks_all_fine_is_healthy),
	    cmocka_unit_test(test_health_checks_disk_thresholds),
	    cmocka_unit_test(test_health_checks_tunnel_down_after_five_minutes),
	    cmocka_unit_test(test_health_checks_control_plane_clock_memory_spool),
	    cmocka_unit_test(test_health_state_names),
	    cmocka_unit_test(test_health_prometheus_format_and_escaping),
	    cmocka_unit_test(test_health_json_has_state_reasons_and_system),
	    cmocka_unit_test(test_health_containment_in_json_and_metrics),
	    cmocka_unit_test(test_health_concurrency_in_json_and_metrics),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
