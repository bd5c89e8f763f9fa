/* installers/config.example.yaml must load with the real loader and mention
 * every key of the configuration table (set, or commented out), so that the
 * example cannot drift from the code. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/fs.h"

static char *example_path(void)
{
	static char path[1024];
	const char *data = getenv("VMA_TEST_DATA"); /* <src>/tests/data */
	snprintf(path, sizeof(path), "%s/../../installers/config.example.yaml",
	         data ? data : "tests/data");
	return path;
}

static void test_config_example_loads(void **state)
{
	(void)state;
	static char *const no_env[] = {NULL};
	struct cfg *c = malloc(sizeof(*c));
	struct vm_err err = {0};
	int rc = cfg_load(c, example_path(), no_env, &err);
	if (rc != 0)
		fail_msg("%s", err.msg);
	assert_int_equal(c->webhook.port, 9999);
	free(c);
}

/* "section:" headers and "key:" or "# key:" lines, followed in order. */
static void test_config_example_mentions_every_key(void **state)
{
	(void)state;
	char *text;
	size_t len;
	struct vm_err err;
	assert_int_equal(fs_read_file(example_path(), 1 << 20, &text, &len, &err), 0);
	for (size_t i = 0; i < cfg_key_count(); i++) {
		const char *key = cfg_key_name(i);
		/* find each section header in turn, then the leaf after the last one */
		const char *pos = text;
		char buf[160];
		snprintf(buf, sizeof(buf), "%s", key);
		char *seg = buf, *dot;
		int depth = 0;
		while ((dot = strchr(seg, '.')) != NULL) {
			*dot = '\0';
			char hdr[400];
			snprintf(hdr, sizeof(hdr), "\n%*s%s:\n", depth * 2, "", seg);
			pos = strstr(pos, hdr);
			if (pos == NULL)
				fail_msg("section of %s missing", key);
			seg = dot + 1;
			depth++;
		}
		char set[400], commented[400];
		snprintf(set, sizeof(set), "\n%*s%s:", depth * 2, "", seg);
		snprintf(commented, sizeof(commented), "\n%*s# %s:", depth * 2, "", seg);
		if (strstr(pos, set) == NULL && strstr(pos, commented) == NULL)
			fail_msg("key %s is not in config.example.yaml", key);
	}
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_config_example_loads),
	    cmocka_unit_test(test_config_example_mentions_every_key),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
