/* libFuzzer target: the shell's control-message parser, "start" (the
 * session's parameters) included. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "webhook/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wh_shell_ctl c;
	struct vm_err err;
	int rc = wh_shell_control_parse((const char *)data, size, &c, &err);
	if (rc == 0 && c.type == WH_SHELL_CTL_RESIZE &&
	    (c.cols == 0 || c.rows == 0 || c.cols > WH_SHELL_DIM_MAX || c.rows > WH_SHELL_DIM_MAX))
		__builtin_trap(); /* an accepted size is always in bounds */
	if (rc != 0 && (c.params.argc != 0 || c.params.user != NULL))
		__builtin_trap(); /* a refused message leaves nothing behind */
	if (rc == 0 && c.type == WH_SHELL_CTL_START) {
		const struct wh_shell_params *p = &c.params;
		if (p->argc > WH_SHELL_ARGV_MAX || p->nenv > WH_SHELL_ENV_MAX ||
		    p->argv[p->argc] != NULL || p->cols > WH_SHELL_DIM_MAX ||
		    p->rows > WH_SHELL_DIM_MAX)
			__builtin_trap();
		for (int i = 0; i < p->argc; i++)
			if (p->argv[i][0] == '\0')
				__builtin_trap(); /* never an empty argument */
		for (int i = 0; i < p->nenv; i++)
			if (strchr(p->env[i], '=') == NULL || p->env[i][0] == '=')
				__builtin_trap(); /* always NAME=value */
		if (p->user != NULL && strlen(p->user) >= WH_SHELL_NAME_MAX)
			__builtin_trap();
	}
	wh_shell_ctl_free(&c);
	return 0;
}
