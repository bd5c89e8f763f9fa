/* vm-agent entry point: a table of subcommands, like tmux's cmd_entry. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "core/cp.h"
#include "core/err.h"

static int cmd_help_exec(const struct cmd_entry *self, void *args);

struct help_args {
	const char *subcommand;
};

static const struct cmd_flag help_flags[] = {
    {"SUBCOMMAND", 0, CMD_FLAG_OPERAND, offsetof(struct help_args, subcommand), NULL,
     "the subcommand whose help to show"},
};

static const struct cmd_entry cmd_help_entry = {
    "help",
    "show help for vm-agent or one subcommand",
    "help [SUBCOMMAND]",
    "Shows the list of subcommands, or the full help of one.\n",
    NULL,
    CMD_TABLE(help_flags),
    sizeof(struct help_args),
    cmd_help_exec,
};

static const struct cmd_entry *const commands[] = {
    &cmd_run_entry,    &cmd_install_entry, &cmd_configure_entry,
    &cmd_repair_entry, &cmd_upgrade_entry, &cmd_uninstall_entry,
    &cmd_status_entry, &cmd_runner_entry, &cmd_remote_entry,
    &cmd_version_entry, &cmd_help_entry,
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

static const struct cmd_entry *find_command(const char *name)
{
	for (size_t i = 0; i < NCOMMANDS; i++)
		if (strcmp(commands[i]->name, name) == 0)
			return commands[i];
	return NULL;
}

static int cmd_help_exec(const struct cmd_entry *self, void *args)
{
	const struct help_args *a = args;
	if (a->subcommand == NULL) {
		print_overview(stdout);
		return VM_EXIT_OK;
	}
	const struct cmd_entry *e = find_command(a->subcommand);
	if (e == NULL)
		return cmd_usage_error(self, "unknown subcommand '%s'", a->subcommand);
	cmd_print_usage(e, stdout);
	return VM_EXIT_OK;
}

/* Parses the flags into the entry's own args struct, runs it, and wipes the
 * secrets it was given. */
static int dispatch(const struct cmd_entry *e, int argc, char **argv)
{
	void *args = calloc(1, e->args_size ? e->args_size : 1);
	if (args == NULL) {
		fprintf(stderr, "vm-agent %s: out of memory\n", e->name);
		return VM_EXIT_RUNTIME;
	}
	int exit_code;
	if (cmd_parse_flags(e, argc, argv, args, &exit_code) == 0) {
		exit_code = e->exec(e, args);
		cmd_clear_secrets(e, args);
	}
	free(args);
	return exit_code;
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
	/* the parser sees "<subcommand> flags…" with the subcommand as argv[0] */
	return dispatch(e, argc - 1, argv + 1);
}
