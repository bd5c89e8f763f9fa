/* libFuzzer target: the crontab model. Whatever parses renders, the rendering
 * parses again into the same text (a block is never lost or split), and a
 * schedule that passes the check passes it again in its normalised form. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "probe/steps/crontab.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vm_err err;
	struct cron_tab tab;
	if (cron_parse((const char *)data, size, &tab, &err) == 0) {
		size_t len;
		char *out = cron_render(&tab, &len);
		if (out != NULL) {
			struct cron_tab again;
			if (cron_parse(out, len, &again, &err) != 0)
				abort();
			char *out2 = cron_render(&again, NULL);
			if (out2 == NULL || strcmp(out, out2) != 0)
				abort();
			/* an edit through the model renders to a crontab that reads back */
			struct cron_job j = {.name = "fuzz",
			                     .schedule = "@daily",
			                     .command = "echo 100%",
			                     .valid = true};
			if (cron_set(&again, &j, &err) == 0) {
				char *out3 = cron_render(&again, NULL);
				struct cron_tab third;
				if (out3 != NULL) {
					if (cron_parse(out3, strlen(out3), &third, &err) != 0 ||
					    strcmp(cron_find(&third, "fuzz")->command,
					           "echo 100%") != 0)
						abort();
					cron_tab_free(&third);
				}
				free(out3);
			}
			free(out2);
			cron_tab_free(&again);
		}
		free(out);
	}
	cron_tab_free(&tab);
	char *s = malloc(size + 1);
	if (s == NULL)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	char norm[CRON_SCHED_MAX + 1], norm2[CRON_SCHED_MAX + 1];
	if (cron_schedule_check(s, norm, sizeof(norm), &err) == 0 &&
	    (cron_schedule_check(norm, norm2, sizeof(norm2), &err) != 0 ||
	     strcmp(norm, norm2) != 0))
		abort();
	(void)cron_command_check(s, &err);
	free(s);
	return 0;
}
