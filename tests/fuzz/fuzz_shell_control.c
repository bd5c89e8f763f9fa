/* libFuzzer target: the shell's control-message parser. */
#include <stddef.h>
#include <stdint.h>

#include "webhook/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wh_shell_ctl c;
	struct vm_err err;
	if (wh_shell_control_parse((const char *)data, size, &c, &err) == 0 &&
	    c.type == WH_SHELL_CTL_RESIZE &&
	    (c.cols == 0 || c.rows == 0 || c.cols > WH_SHELL_DIM_MAX || c.rows > WH_SHELL_DIM_MAX))
		__builtin_trap(); /* an accepted size is always in bounds */
	return 0;
}
