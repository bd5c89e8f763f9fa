/* Subcommand table shared by main.c and the cmd_*.c files. */
#ifndef VMA_CMD_CMD_H
#define VMA_CMD_CMD_H

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>

#include "core/err.h"
#include "core/secret.h"
#include "lifecycle/lifecycle.h"

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

/* Lifecycle subcommands (cmd_lifecycle.c). */

/* --key VALUE (wiped from argv once copied) or --key-file FILE (0600). Returns
 * 0, or the exit code after printing why. */
int cmd_take_key(const struct cmd_entry *self, bool from_file, char *arg, struct secret *key);

/* Flags as a table: each lands at an offset in the command's args struct. */
enum cmd_flag_kind {
	CMD_FLAG_STR,      /* const char * = the value */
	CMD_FLAG_BOOL,     /* bool = true; takes no value */
	CMD_FLAG_SECONDS,  /* unsigned = whole seconds, 0-86400 */
	CMD_FLAG_KEY,      /* struct secret = the value, wiped from argv */
	CMD_FLAG_KEY_FILE, /* struct secret = a 0600 file's content */
};

struct cmd_flag {
	const char *name;
	enum cmd_flag_kind kind;
	size_t off;
};

#define CMD_FLAGS_MAX 32

/* Parses argv against flags (and --help). Returns -1 when every flag was taken,
 * else the exit code to stop with (0 after --help, 64 on a usage error); on
 * that path the secrets already taken are cleared. */
int cmd_parse_flags(const struct cmd_entry *self, int argc, char **argv,
                    const struct cmd_flag *flags, size_t nflags, void *args);

/* A report for self->name, after libcurl's global init when http is set.
 * NULL when out of memory. */
struct lc_report *cmd_lc_begin(const struct cmd_entry *self, bool http);

struct cmd_lc_exit {
	bool json;               /* print the report as JSON */
	bool http;               /* cmd_lc_begin initialised libcurl */
	bool echo_error;         /* also print the error on stderr (text mode) */
	bool fail_step_is_error; /* exit 1 when a step FAILed although rc == 0 */
	int invalid_exit;        /* exit code for VM_ERR_INVALID; 0 = runtime (1) */
};

/* Prints and frees r, and turns rc/err into the exit code. */
int cmd_lc_end(const struct cmd_entry *self, struct lc_report *r, int rc, const struct vm_err *err,
               const struct cmd_lc_exit *how);

/* Build information (build_info.c, generated). */
extern const char vma_build_version[];
extern const char vma_build_commit[];
extern const char vma_build_time[];

#endif
