/* Subcommand table shared by main.c and the cmd_*.c files. */
#ifndef VMA_CMD_CMD_H
#define VMA_CMD_CMD_H

#include <stdbool.h>
#include <stdio.h>

#include "core/err.h"
#include "core/secret.h"
#include "lifecycle/lifecycle.h"

/* Flags as a table: each lands at an offset in the subcommand's args struct;
 * the parser (cmd/flags.c) and the --help text are both made from it. */
enum cmd_flag_kind {
	CMD_FLAG_BOOL,     /* bool = true; takes no value */
	CMD_FLAG_STR,      /* const char * = the value */
	CMD_FLAG_OPT_STR,  /* const char * = the value, or "" when given without one
	                      (--f, --f=V, or --f V when V does not start with '-') */
	CMD_FLAG_LIST,     /* struct cmd_list: one more value (repeatable) */
	CMD_FLAG_SECONDS,  /* unsigned = whole seconds, 0-CMD_SECONDS_MAX */
	CMD_FLAG_KEY,      /* struct secret = the value, wiped from argv */
	CMD_FLAG_KEY_FILE, /* struct secret = a 0600 file's content */
	CMD_FLAG_OPERAND,  /* const char * = the next operand; name is its metavar */
};

#define CMD_SECONDS_MAX 86400
#define CMD_LIST_MAX    64
#define CMD_FLAGS_MAX   32

struct cmd_list {
	const char *v[CMD_LIST_MAX];
	size_t n;
};

struct cmd_flag {
	const char *name; /* long name, without "--" */
	char short_name;  /* 0 = none */
	enum cmd_flag_kind kind;
	size_t off;
	const char *metavar; /* the value in --help ("FILE"); NULL without a value */
	const char *help;    /* may hold '\n' for more lines */
};

/* One subcommand, tmux cmd_entry style: the dispatcher parses argv against
 * flags into a zeroed args_size struct and calls exec with it. */
struct cmd_entry {
	const char *name;
	const char *summary;
	const char *synopsis; /* after "usage: vm-agent " */
	const char *about;    /* --help text above the flags */
	const char *epilog;   /* --help text below the flags; NULL = none */
	const struct cmd_flag *flags;
	size_t nflags;
	size_t args_size;
	int (*exec)(const struct cmd_entry *self, void *args);
};

#define CMD_TABLE(t) (t), sizeof(t) / sizeof((t)[0])

extern const struct cmd_entry cmd_run_entry;
extern const struct cmd_entry cmd_version_entry;
extern const struct cmd_entry cmd_install_entry;
extern const struct cmd_entry cmd_configure_entry;
extern const struct cmd_entry cmd_repair_entry;
extern const struct cmd_entry cmd_upgrade_entry;
extern const struct cmd_entry cmd_uninstall_entry;
extern const struct cmd_entry cmd_status_entry;
extern const struct cmd_entry cmd_runner_entry;
extern const struct cmd_entry cmd_remote_entry;

/* Prints "usage: vm-agent <synopsis>" and the help made from the entry. */
void cmd_print_usage(const struct cmd_entry *e, FILE *out);

/* Reports a usage error (unknown flag, missing value) and returns exit code 64. */
int cmd_usage_error(const struct cmd_entry *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Parses argv (argv[0] = the subcommand) against e->flags into args (zeroed,
 * e->args_size bytes). Returns 0 when e->exec should run; otherwise a
 * negative code and the command stops with *exit_code (0 after --help, 64 on
 * a usage error), the secrets already taken cleared. */
int cmd_parse_flags(const struct cmd_entry *e, int argc, char **argv, void *args, int *exit_code);

/* Clears every secret flag of e in args (after exec, or on a stop). */
void cmd_clear_secrets(const struct cmd_entry *e, void *args);

/* Lifecycle subcommands (cmd_lifecycle.c). */

struct cmd_lc_exit {
	bool json;               /* print the report as JSON */
	bool http;               /* initialise libcurl around the command */
	bool echo_error;         /* also print the error on stderr (text mode) */
	bool fail_step_is_error; /* exit 1 when a step FAILed although rc == 0 */
	int invalid_exit;        /* exit code for VM_ERR_INVALID; 0 = runtime (1) */
};

/* One lifecycle command (lc_install, lc_repair…) behind an adapter. */
typedef int (*cmd_lc_fn)(const void *opts, struct lc_report *r, struct vm_err *err);

/* Runs fn(opts) with a report for self->name, prints the report as how says
 * and turns the outcome into the exit code. */
int cmd_lc_run(const struct cmd_entry *self, cmd_lc_fn fn, const void *opts,
               const struct cmd_lc_exit *how);

/* Build information (build_info.c, generated). */
extern const char vma_build_version[];
extern const char vma_build_commit[];
extern const char vma_build_time[];

#endif
