/* Subcommand table shared by main.c and the cmd_*.c files. */
#ifndef VMA_CMD_CMD_H
#define VMA_CMD_CMD_H

#include <getopt.h>
#include <stdio.h>

struct cmd_entry {
	const char *name;
	const char *summary;
	const char *usage; /* full --help text, after the "usage:" line */
	const char *synopsis;
	int (*exec)(const struct cmd_entry *self, int argc, char **argv);
};

extern const struct cmd_entry cmd_run_entry;
extern const struct cmd_entry cmd_version_entry;
extern const struct cmd_entry cmd_install_entry;
extern const struct cmd_entry cmd_configure_entry;
extern const struct cmd_entry cmd_repair_entry;
extern const struct cmd_entry cmd_upgrade_entry;
extern const struct cmd_entry cmd_uninstall_entry;
extern const struct cmd_entry cmd_status_entry;

/* Prints "usage: vm-agent <synopsis>" and the help text. */
void cmd_print_usage(const struct cmd_entry *e, FILE *out);

/* Reports a usage error (unknown flag, missing value) and returns exit code 64. */
int cmd_usage_error(const struct cmd_entry *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* getopt_long over argv with --help handled (shortopts must start with ':'
 * and contain 'h'); returns the option character,
 * -1 at the end, '?' after having printed a usage error. Sets *exit_code when
 * the command must stop (64 on error, 0 after --help). */
int cmd_getopt(const struct cmd_entry *e, int argc, char **argv, const char *shortopts,
               const struct option *longopts, int *exit_code);

/* Build information (build_info.c, generated). */
extern const char vma_build_version[];
extern const char vma_build_commit[];
extern const char vma_build_time[];

#endif
