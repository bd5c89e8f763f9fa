/* What the lifecycle subcommands (install, configure, repair, upgrade,
 * uninstall) share: taking the install key from a flag, and running one
 * command with a report that is printed as text or JSON. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "core/err.h"
#include "core/http.h"

int cmd_take_key(const struct cmd_entry *self, bool from_file, char *arg, struct secret *key)
{
	struct vm_err err = {0};
	if (!from_file) {
		if (secret_set(key, arg, &err) != 0)
			return VM_EXIT_RUNTIME;
		/* keep it out of /proc/<pid>/cmdline from now on */
		explicit_bzero(arg, strlen(arg));
		return 0;
	}
	if (secret_load_file(key, arg, &err) != 0) {
		fprintf(stderr, "vm-agent %s: %s\n", self->name, err.msg);
		return VM_EXIT_USAGE;
	}
	return 0;
}

struct lc_report *cmd_lc_begin(const struct cmd_entry *self, bool http)
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

int cmd_lc_end(const struct cmd_entry *self, struct lc_report *r, int rc, const struct vm_err *err,
               const struct cmd_lc_exit *how)
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

/* Whole seconds, as the timeout flags take them. */
static int parse_seconds(const char *s, unsigned *out)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v > 86400)
		return -1;
	*out = (unsigned)v;
	return 0;
}

static void clear_secrets(const struct cmd_flag *flags, size_t n, char *base)
{
	for (size_t i = 0; i < n; i++)
		if (flags[i].kind == CMD_FLAG_KEY || flags[i].kind == CMD_FLAG_KEY_FILE)
			secret_clear((struct secret *)(void *)(base + flags[i].off));
}

/* Stores one flag's value at its offset; returns 0 or an exit code. */
static int take_flag(const struct cmd_entry *self, const struct cmd_flag *f, char *base)
{
	void *field = base + f->off;
	switch (f->kind) {
	case CMD_FLAG_STR:
		*(const char **)field = optarg;
		return 0;
	case CMD_FLAG_BOOL:
		*(bool *)field = true;
		return 0;
	case CMD_FLAG_SECONDS:
		if (parse_seconds(optarg, (unsigned *)field) != 0)
			return cmd_usage_error(self,
			                       "--%s: expected whole seconds (0-86400), got '%s'",
			                       f->name, optarg);
		return 0;
	case CMD_FLAG_KEY:
	case CMD_FLAG_KEY_FILE:
		return cmd_take_key(self, f->kind == CMD_FLAG_KEY_FILE, optarg, field);
	}
	return VM_EXIT_USAGE;
}

int cmd_parse_flags(const struct cmd_entry *self, int argc, char **argv,
                    const struct cmd_flag *flags, size_t nflags, void *args)
{
	struct option opts[CMD_FLAGS_MAX + 2];
	if (nflags > CMD_FLAGS_MAX)
		return VM_EXIT_RUNTIME;
	for (size_t i = 0; i < nflags; i++) {
		bool has_arg = flags[i].kind != CMD_FLAG_BOOL;
		opts[i] = (struct option){flags[i].name, has_arg ? required_argument : no_argument,
		                          NULL, 256 + (int)i};
	}
	opts[nflags] = (struct option){"help", no_argument, NULL, 'h'};
	opts[nflags + 1] = (struct option){NULL, 0, NULL, 0};

	int rc = -1, c;
	while ((c = cmd_getopt(self, argc, argv, ":h", opts, &rc)) != -1) {
		if (c == '?' || c < 256 || (size_t)(c - 256) >= nflags)
			goto fail;
		if ((rc = take_flag(self, &flags[c - 256], args)) != 0)
			goto fail;
	}
	if (optind < argc) {
		rc = cmd_usage_error(self, "unexpected argument '%s'", argv[optind]);
		goto fail;
	}
	return -1;
fail:
	clear_secrets(flags, nflags, args);
	return rc < 0 ? VM_EXIT_USAGE : rc;
}
