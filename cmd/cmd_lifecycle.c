/* What the lifecycle subcommands (install, configure, repair, upgrade,
 * uninstall) share: running one command with a report that is printed as
 * text or JSON. */
#include <stdlib.h>

#include "cmd/cmd.h"
#include "core/err.h"
#include "core/http.h"

static struct lc_report *report_begin(const struct cmd_entry *self, bool http)
{
	struct vm_err err = {0};
	struct lc_report *r = malloc(sizeof(*r));
	if (r == NULL || (http && http_global_init(&err) != 0)) {
		free(r);
		return NULL;
	}
	lc_report_init(r, self->name);
	return r;
}

static int report_end(const struct cmd_entry *self, struct lc_report *r, int rc,
                      const struct vm_err *err, const struct cmd_lc_exit *how)
{
	if (rc != 0 && r->result[0] == '\0')
		snprintf(r->result, sizeof(r->result), "%s failed: %s", self->name, err->msg);
	lc_report_print(r, stdout, how->json);
	if (rc != 0 && !how->json && how->echo_error)
		fprintf(stderr, "vm-agent %s: %s\n", self->name, err->msg);
	enum lc_status worst = lc_report_worst(r);
	free(r);
	if (how->http)
		http_global_cleanup();
	if (rc != 0)
		return err->code == VM_ERR_INVALID && how->invalid_exit ? how->invalid_exit
		                                                        : VM_EXIT_RUNTIME;
	return how->fail_step_is_error && worst == LC_FAIL ? VM_EXIT_RUNTIME : VM_EXIT_OK;
}

int cmd_lc_run(const struct cmd_entry *self, cmd_lc_fn fn, const void *opts,
               const struct cmd_lc_exit *how)
{
	struct vm_err err = {0};
	struct lc_report *r = report_begin(self, how->http);
	if (r == NULL)
		return VM_EXIT_RUNTIME;
	int rc = fn(opts, r, &err);
	return report_end(self, r, rc, &err, how);
}
