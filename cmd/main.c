/* vm-agent entry point: a table of subcommands, like tmux's cmd_entry. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "core/cp.h"
#include "core/err.h"

static int cmd_help_exec(const struct cmd_entry *self, int argc, char **argv);

static const struct cmd_entry cmd_help_entry = {
    "help",
    "show help for vm-agent or one subcommand",
    "Shows the list of subcommands, or the full help of one.\n",
    "help [SUBCOMMAND]",
    cmd_help_exec,
};

static const struct cmd_entry *const commands[] = {
    &cmd_run_entry,    &cmd_install_entry, &cmd_configure_entry,
    &cmd_repair_entry, &cmd_upgrade_entry, &cmd_uninstall_entry,
    &cmd_status_entry, &cmd_version_entry, &cmd_help_entry,
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static void print_overview(FILE *out)
{
	fprintf(out, "usage: vm-agent <subcommand> [flags]\n\n"
	             "vm-agent keeps an outbound tunnel to a Piko server and serves a small,\n"
	             "authenticated API on loopback for running probes and reading health.\n\n"
	             "Subcommands:\n");
	for (size_t i = 0; i < NCOMMANDS; i++)
		fprintf(out, "  %-10s %s\n", commands[i]->name, commands[i]->summary);
	fprintf(out, "\nRun 'vm-agent <subcommand> --help' for its flags.\n"
	             "Exit codes: 0 ok, 1 runtime error, 3 agent not running (status),\n"
	             "            64 usage error, 78 configuration error.\n");
}

void cmd_print_usage(const struct cmd_entry *e, FILE *out)
{
	fprintf(out, "usage: vm-agent %s\n\n%s", e->synopsis, e->usage);
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

int cmd_getopt(const struct cmd_entry *e, int argc, char **argv, const char *shortopts,
               const struct option *longopts, int *exit_code)
{
	int idx = 0;
	opterr = 0;
	int c = getopt_long(argc, argv, shortopts, longopts, &idx);
	if (c == 'h') {
		cmd_print_usage(e, stdout);
		*exit_code = VM_EXIT_OK;
		return '?';
	}
	if (c == '?' || c == ':') {
		const char *arg = argv[optind - 1];
		if (c == ':')
			*exit_code = cmd_usage_error(e, "option '%s' needs a value", arg);
		else
			*exit_code = cmd_usage_error(e, "unknown option '%s'", arg);
		return '?';
	}
	return c;
}

static const struct cmd_entry *find_command(const char *name)
{
	for (size_t i = 0; i < NCOMMANDS; i++)
		if (strcmp(commands[i]->name, name) == 0)
			return commands[i];
	return NULL;
}

static int cmd_help_exec(const struct cmd_entry *self, int argc, char **argv)
{
	if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
		cmd_print_usage(self, stdout);
		return VM_EXIT_OK;
	}
	if (argc > 2)
		return cmd_usage_error(self, "too many arguments");
	if (argc == 2) {
		const struct cmd_entry *e = find_command(argv[1]);
		if (e == NULL)
			return cmd_usage_error(self, "unknown subcommand '%s'", argv[1]);
		cmd_print_usage(e, stdout);
		return VM_EXIT_OK;
	}
	print_overview(stdout);
	return VM_EXIT_OK;
}

int main(int argc, char **argv)
{
	/* First, before any JSON exists: every jansson buffer (a parsed token,
	 * the lexer's copy, a dumped credentials file) is wiped when freed. */
	cp_json_wipe_on_free();
	if (argc < 2) {
		print_overview(stderr);
		return VM_EXIT_USAGE;
	}
	const char *name = argv[1];
	if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0)
		name = "help";
	else if (strcmp(name, "--version") == 0)
		name = "version";
	const struct cmd_entry *e = find_command(name);
	if (e == NULL) {
		fprintf(stderr, "vm-agent: unknown subcommand '%s'\n\n", argv[1]);
		print_overview(stderr);
		return VM_EXIT_USAGE;
	}
	/* getopt sees "<subcommand> flags…" with the subcommand as argv[0]. */
	optind = 1;
	return e->exec(e, argc - 1, argv + 1);
}
