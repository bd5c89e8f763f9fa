/* The crontab model of cron.ensure and cron.list (crontab.c): a user's
 * crontab as unmanaged lines kept verbatim and one marked block per managed
 * entry, the checks of schedules, variables and commands, and rendering back.
 * Pure: no I/O. */
#ifndef VMA_PROBE_STEPS_CRONTAB_H
#define VMA_PROBE_STEPS_CRONTAB_H

#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"

#define CRON_TEXT_MAX  (256u << 10) /* a crontab larger than this is refused */
#define CRON_LINE_MAX  998          /* cron reads 1000 bytes of a line, newline and NUL included */
#define CRON_NAME_MAX  64
#define CRON_ENV_MAX   16
#define CRON_SCHED_MAX 128

/* Block markers: "# BEGIN vm-agent <name>" ... "# END vm-agent <name>". */
#define CRON_BEGIN "# BEGIN vm-agent "
#define CRON_END   "# END vm-agent "

/* One managed entry. */
struct cron_job {
	char *name;
	char *schedule; /* normalised: one space between fields */
	char *command;  /* as the caller means it: the crontab holds it with % as \% */
	size_t nenv;
	char *env[CRON_ENV_MAX]; /* "NAME=value", in order */
	/* false: the block between the markers was edited by hand into something
	 * this model does not write; its lines are kept in raw until replaced */
	bool valid;
	char *raw; /* the lines between the markers, each ending in "\n" */
};

enum cron_kind { CRON_BLANK, CRON_COMMENT, CRON_ENV, CRON_JOB, CRON_OTHER };

struct cron_item {
	bool managed;
	size_t line_no;      /* 1-based, of the line or of the BEGIN marker */
	char *line;          /* unmanaged: verbatim, without its newline */
	enum cron_kind kind; /* unmanaged: what the line looks like */
	struct cron_job job; /* managed */
};

struct cron_tab {
	struct cron_item *items;
	size_t n, cap;
};

/* Parses crontab text (as `crontab -l` prints it). Refused (VM_ERR_INVALID,
 * with the line number): more than CRON_TEXT_MAX bytes, a NUL byte, a BEGIN
 * without its END, an END without its BEGIN, nested or duplicate blocks, a
 * marker with a bad name. Free tab with cron_tab_free (also after an error). */
int cron_parse(const char *text, size_t len, struct cron_tab *tab, struct vm_err *err);
void cron_tab_free(struct cron_tab *tab);

/* The whole crontab again: unmanaged lines verbatim, blocks rendered from
 * their job (or their raw lines when not valid), every line ending in "\n".
 * NULL when out of memory or over CRON_TEXT_MAX. Free with free(). */
char *cron_render(const struct cron_tab *tab, size_t *len);

/* The managed entry name, or NULL. */
struct cron_job *cron_find(struct cron_tab *tab, const char *name);
/* Replaces the entry of want->name in place, or appends it at the end
 * (copies want). 0 or -VM_ERR_NOMEM / -VM_ERR_INVALID (rendered job line
 * longer than CRON_LINE_MAX). */
int cron_set(struct cron_tab *tab, const struct cron_job *want, struct vm_err *err);
/* Removes the entry name; false when there was none. */
bool cron_remove(struct cron_tab *tab, const char *name);

/* Checks, each with a reason in err:
 * - name: 1-64 of [A-Za-z0-9._-], not starting with '-' or '.';
 * - schedule: one of @reboot @yearly @annually @monthly @weekly @daily
 *   @midnight @hourly, or five fields (minute 0-59, hour 0-23, day 1-31,
 *   month 1-12 or jan-dec, weekday 0-7 or sun-sat) each a comma list of
 *   "*", N, N-M (N <= M), "*" or N-M followed by /STEP (1 <= STEP <= the
 *   field's largest value); names in any case. Anything else is refused.
 *   The normalised form (one space between fields, names as given) goes to
 *   out (cap >= CRON_SCHED_MAX + 1);
 * - env: NAME of [A-Za-z_][A-Za-z0-9_]* (at most 64), value without control
 *   characters and without leading or trailing blanks (cron trims them);
 * - command: not empty, no control character but tab, no leading blank,
 *   and no backslash before a '%' or a backslash (cron implementations read
 *   those differently). Every '%' is written to the crontab as "\%", so the
 *   command runs as given instead of cron cutting it into stdin lines. */
int cron_name_check(const char *name, struct vm_err *err);
int cron_schedule_check(const char *in, char *out, size_t cap, struct vm_err *err);
int cron_env_check(const char *name, const char *value, struct vm_err *err);
int cron_command_check(const char *command, struct vm_err *err);

/* Splits a job line into its schedule (normalised into sched, cap >=
 * CRON_SCHED_MAX + 1) and where its command starts. -1 when the line is not
 * a job line this model accepts. */
int cron_split_job(const char *line, char *sched, size_t cap, const char **command);

#endif
