/* Flag tables: one parser (getopt_long built from the table) and one --help
 * generator for every subcommand, so that a flag is declared exactly once and
 * every value is checked the same way. */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "core/err.h"

/* Flag specs wider than this put their help on the next line. */
#define HELP_COL_MAX 28

static size_t flag_spec(const struct cmd_flag *f, char *out, size_t cap)
{
	char shortp[8] = "";
	if (f->short_name != 0)
		snprintf(shortp, sizeof(shortp), "-%c, ", f->short_name);
	const char *meta = f->metavar ? f->metavar : "";
	int n;
	if (f->kind == CMD_FLAG_OPERAND)
		n = snprintf(out, cap, "%s", f->name);
	else if (f->kind == CMD_FLAG_OPT_STR)
		n = snprintf(out, cap, "%s--%s [%s]", shortp, f->name, meta);
	else
		n = snprintf(out, cap, "%s--%s%s%s", shortp, f->name, f->metavar ? " " : "", meta);
	return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

static void print_help_lines(FILE *out, const char *help, size_t col)
{
	for (const char *p = help; *p != '\0';) {
		size_t n = strcspn(p, "\n");
		fprintf(out, "%.*s\n", (int)n, p);
		p += n;
		if (*p == '\n' && *++p != '\0')
			fprintf(out, "%*s", (int)col, "");
	}
}

void cmd_print_usage(const struct cmd_entry *e, FILE *out)
{
	char spec[128];
	size_t width = 10; /* "-h, --help" */
	for (size_t i = 0; i < e->nflags; i++) {
		size_t n = flag_spec(&e->flags[i], spec, sizeof(spec));
		if (n > width && n <= HELP_COL_MAX)
			width = n;
	}
	size_t col = 2 + width + 2;
	fprintf(out, "usage: vm-agent %s\n\n%s\nFlags:\n", e->synopsis, e->about);
	for (size_t i = 0; i < e->nflags; i++) {
		const struct cmd_flag *f = &e->flags[i];
		size_t n = flag_spec(f, spec, sizeof(spec));
		if (f->help == NULL || f->help[0] == '\0')
			fprintf(out, "  %s\n", spec);
		else if (n > width)
			fprintf(out, "  %s\n%*s", spec, (int)col, "");
		else
			fprintf(out, "  %-*s  ", (int)width, spec);
		if (f->help != NULL && f->help[0] != '\0')
			print_help_lines(out, f->help, col);
	}
	fprintf(out, "  -h, --help\n");
	if (e->epilog != NULL)
		fprintf(out, "\n%s", e->epilog);
}

int cmd_usage_error(const struct cmd_entry *e, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "vm-agent %s: ", e->name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\n\n", stderr);
	cmd_print_usage(e, stderr);
	return VM_EXIT_USAGE;
}

/* Whole seconds: digits only (no sign, exponent or suffix), at most max. */
static int parse_seconds(const char *s, unsigned long max, unsigned *out)
{
	if (s[0] < '0' || s[0] > '9')
		return -1;
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno != 0 || *end != '\0' || v > max)
		return -1;
	*out = (unsigned)v;
	return 0;
}

void cmd_clear_secrets(const struct cmd_entry *e, void *args)
{
	for (size_t i = 0; i < e->nflags; i++)
		if (e->flags[i].kind == CMD_FLAG_KEY || e->flags[i].kind == CMD_FLAG_KEY_FILE)
			secret_clear((struct secret *)(void *)((char *)args + e->flags[i].off));
}

/* --key VALUE is wiped from argv once copied (out of /proc/<pid>/cmdline);
 * --key-file FILE must be 0600. Returns 0 or the exit code. */
static int take_key(const struct cmd_entry *e, bool from_file, char *arg, struct secret *key)
{
	struct vm_err err = {0};
	if (!from_file) {
		if (secret_set(key, arg, &err) != 0)
			return VM_EXIT_RUNTIME;
		explicit_bzero(arg, strlen(arg));
		return 0;
	}
	if (secret_load_file(key, arg, &err) != 0) {
		fprintf(stderr, "vm-agent %s: %s\n", e->name, err.msg);
		return VM_EXIT_USAGE;
	}
	return 0;
}

/* Stores one flag's value at its offset; returns 0 or an exit code. */
static int take_flag(const struct cmd_entry *e, const struct cmd_flag *f, char *value, char *args)
{
	void *field = args + f->off;
	switch (f->kind) {
	case CMD_FLAG_STR:
	case CMD_FLAG_OPERAND:
		*(const char **)field = value;
		return 0;
	case CMD_FLAG_OPT_STR:
		*(const char **)field = value ? value : "";
		return 0;
	case CMD_FLAG_BOOL:
		*(bool *)field = true;
		return 0;
	case CMD_FLAG_LIST: {
		struct cmd_list *l = field;
		if (l->n >= CMD_LIST_MAX)
			return cmd_usage_error(e, "--%s: at most %d times", f->name, CMD_LIST_MAX);
		l->v[l->n++] = value;
		return 0;
	}
	case CMD_FLAG_SECONDS:
		if (parse_seconds(value, CMD_SECONDS_MAX, field) != 0)
			return cmd_usage_error(e, "--%s: expected whole seconds (0-%d), got '%s'",
			                       f->name, CMD_SECONDS_MAX, value);
		return 0;
	case CMD_FLAG_KEY:
	case CMD_FLAG_KEY_FILE:
		return take_key(e, f->kind == CMD_FLAG_KEY_FILE, value, field);
	}
	return VM_EXIT_USAGE;
}

static int has_arg(enum cmd_flag_kind k)
{
	return k == CMD_FLAG_BOOL      ? no_argument
	       : k == CMD_FLAG_OPT_STR ? optional_argument
	                               : required_argument;
}

/* getopt's tables from the flag table: long options map to 256 + index. */
static int build_options(const struct cmd_entry *e, struct option *opts, char *shortopts,
                         size_t scap)
{
	size_t n = 0, s = 0;
	shortopts[s++] = ':'; /* report a missing value as ':' */
	shortopts[s++] = 'h';
	for (size_t i = 0; i < e->nflags; i++) {
		const struct cmd_flag *f = &e->flags[i];
		if (f->kind == CMD_FLAG_OPERAND)
			continue;
		opts[n++] = (struct option){f->name, has_arg(f->kind), NULL, 256 + (int)i};
		if (f->short_name != 0 && s + 3 < scap) {
			shortopts[s++] = f->short_name;
			if (has_arg(f->kind) != no_argument)
				shortopts[s++] = ':';
			if (has_arg(f->kind) == optional_argument)
				shortopts[s++] = ':';
		}
	}
	shortopts[s] = '\0';
	opts[n++] = (struct option){"help", no_argument, NULL, 'h'};
	opts[n] = (struct option){NULL, 0, NULL, 0};
	return 0;
}

static const struct cmd_flag *flag_for(const struct cmd_entry *e, int c)
{
	if (c >= 256 && (size_t)(c - 256) < e->nflags)
		return &e->flags[c - 256];
	for (size_t i = 0; i < e->nflags; i++)
		if (e->flags[i].short_name == c && e->flags[i].kind != CMD_FLAG_OPERAND)
			return &e->flags[i];
	return NULL;
}

/* The operands left after the flags, in the order of the operand rows. */
static int take_operands(const struct cmd_entry *e, int argc, char **argv, char *args)
{
	size_t next = 0;
	for (int i = optind; i < argc; i++) {
		while (next < e->nflags && e->flags[next].kind != CMD_FLAG_OPERAND)
			next++;
		if (next >= e->nflags)
			return cmd_usage_error(e, "unexpected argument '%s'", argv[i]);
		int rc = take_flag(e, &e->flags[next++], argv[i], args);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* Returns 0 to run the command, else stops: *exit_code is 0 after --help,
 * or the usage error's code. */
static int parse(const struct cmd_entry *e, int argc, char **argv, char *args, int *exit_code)
{
	struct option opts[CMD_FLAGS_MAX + 2];
	char shortopts[3 * CMD_FLAGS_MAX + 4];
	*exit_code = VM_EXIT_USAGE;
	if (e->nflags > CMD_FLAGS_MAX) {
		*exit_code = VM_EXIT_RUNTIME;
		return -VM_ERR_INTERNAL;
	}
	build_options(e, opts, shortopts, sizeof(shortopts));
	optind = 1;
	opterr = 0;
	int c, idx;
	while ((c = getopt_long(argc, argv, shortopts, opts, &idx)) != -1) {
		if (c == 'h') {
			cmd_print_usage(e, stdout);
			*exit_code = VM_EXIT_OK;
			return -VM_ERR_INVALID; /* stop, successfully */
		}
		if (c == ':') {
			*exit_code =
			    cmd_usage_error(e, "option '%s' needs a value", argv[optind - 1]);
			return -VM_ERR_INVALID;
		}
		const struct cmd_flag *f = c == '?' ? NULL : flag_for(e, c);
		if (f == NULL) {
			*exit_code = cmd_usage_error(e, "unknown option '%s'", argv[optind - 1]);
			return -VM_ERR_INVALID;
		}
		char *value = optarg;
		/* "--check FILE" as well as "--check=FILE" */
		if (f->kind == CMD_FLAG_OPT_STR && value == NULL && optind < argc &&
		    argv[optind][0] != '-')
			value = argv[optind++];
		if ((*exit_code = take_flag(e, f, value, args)) != 0)
			return -VM_ERR_INVALID;
	}
	if ((*exit_code = take_operands(e, argc, argv, args)) != 0)
		return -VM_ERR_INVALID;
	return 0;
}

int cmd_parse_flags(const struct cmd_entry *e, int argc, char **argv, void *args, int *exit_code)
{
	int rc = parse(e, argc, argv, args, exit_code);
	if (rc != 0)
		cmd_clear_secrets(e, args);
	return rc;
}
