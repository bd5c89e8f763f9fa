/* What the backup steps (backup.c) share with their pure parts (backup_parse.c):
 * rsync's output parser and the ignore globs, which behave like rsync's
 * --exclude for the patterns they accept and refuse the rest. */
#ifndef VMA_PROBE_STEPS_BACKUP_H
#define VMA_PROBE_STEPS_BACKUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The --out-format we give rsync: logged before each item is transferred
 * (no %b), so the line names the file being copied. Fields are split on '|',
 * which no itemize string or length holds; the name is last. */
#define RSYNC_OUT_FORMAT "VMA1|%i|%l|%n"
#define RSYNC_LINE_MAX   (24u << 10) /* a 4 KiB path, each byte escaped (\#ooo) */
#define RSYNC_NAME_MAX   1024        /* names kept for events and lists (cut) */

/* --- ignore globs ------------------------------------------------------------- */

#define BACKUP_GLOB_MAX 256

struct backup_glob {
	char pat[BACKUP_GLOB_MAX]; /* without the trailing '/' */
	bool anchored;             /* leading '/': matched from the transfer root */
	bool dir_only;             /* trailing '/': directories only */
	int slashes;               /* infix slashes: matched against as many last components + 1 */
};

/* Accepts a pattern whose meaning is the same for rsync's --exclude and for
 * fnmatch(FNM_PATHNAME): '*', '?', '[...]' classes of letters, digits and
 * ".-_!", literal characters, a leading '/' and a trailing '/'. Refuses "**",
 * backslashes, rule prefixes ("+ ", "- ", "!"), empty components, controls
 * and anything longer than BACKUP_GLOB_MAX - 1. why says what was refused. */
int backup_glob_parse(const char *pattern, struct backup_glob *out, char *why, size_t why_cap);

/* True when name (relative to the transfer root, as rsync lists it: "src/a/b",
 * no trailing '/') is excluded by one of the globs. */
bool backup_glob_excluded(const struct backup_glob *g, int n, const char *name, bool is_dir);

/* --- rsync output ------------------------------------------------------------- */

enum rsync_rec_type {
	RSYNC_REC_EMPTY = 0,
	RSYNC_REC_ITEM,     /* an --out-format line */
	RSYNC_REC_PROGRESS, /* an --info=progress2 update */
	RSYNC_REC_STAT,     /* a --stats line we read */
	RSYNC_REC_OTHER,    /* anything else (messages, other stats) */
};

enum rsync_stat {
	RSYNC_STAT_FILES = 0,       /* Number of files */
	RSYNC_STAT_REG_TRANSFERRED, /* Number of regular files transferred */
	RSYNC_STAT_TOTAL_SIZE,      /* Total file size (bytes) */
	RSYNC_STAT_TRANSFERRED,     /* Total transferred file size (bytes) */
	RSYNC_STAT_COUNT
};

struct rsync_rec {
	enum rsync_rec_type type;
	/* ITEM */
	char itemize[16];          /* "YXcstpoguax" (11), or "*deleting" */
	int64_t length;            /* the file's size (%l) */
	char name[RSYNC_NAME_MAX]; /* as rsync prints it (escaped, dirs end in '/') */
	bool name_cut;
	const char *op; /* "copy", "create", "link", "attrs", "unchanged", "delete", "message" */
	char kind;      /* 'f' file, 'd' dir, 'L' symlink, 'D' device, 'S' special, 0 */
	bool changes;   /* the item would change something at the destination */
	/* PROGRESS */
	int64_t bytes;         /* transferred so far */
	int percent;           /* 0-100 */
	int64_t xfr;           /* files transferred so far (-1 = not said) */
	int64_t to_chk, total; /* files left to check / in the list (-1 = not said) */
	/* STAT */
	enum rsync_stat stat;
	int64_t value;
};

/* Parses one record of rsync's output (a line without its '\r' or '\n').
 * Pure; any bytes are fine. */
void rsync_parse_record(const char *s, size_t len, struct rsync_rec *out);

/* Splits rsync's stdout into records ('\n' and progress2's '\r') and parses
 * each: fn gets every non-empty record. A record longer than RSYNC_LINE_MAX is
 * dropped (counted in overlong). */
struct rsync_reader {
	char line[RSYNC_LINE_MAX];
	size_t len;
	bool skipping; /* inside an overlong record */
	uint64_t overlong;
	void (*fn)(void *ctx, const struct rsync_rec *rec);
	void *ctx;
	struct rsync_rec rec; /* scratch: too large for a thread's stack twice over */
};

void rsync_reader_init(struct rsync_reader *r, void (*fn)(void *, const struct rsync_rec *),
                       void *ctx);
void rsync_reader_feed(struct rsync_reader *r, const char *data, size_t len);
/* Parses what is left without a terminator (at exit). */
void rsync_reader_finish(struct rsync_reader *r);

/* What an rsync exit status means: a stable code ("partial_transfer",
 * "ssh_failed"…), a sentence, and whether it is only a warning (24). */
struct rsync_exit {
	const char *code;
	const char *what;
	bool warning;
};
struct rsync_exit rsync_exit_describe(int status);

#endif
