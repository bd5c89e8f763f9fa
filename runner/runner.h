/* The agentless runner: probe steps over a line protocol on stdin/stdout
 * (`vm-agent runner --stdio`, docs/runner.md), one command at a time, with an
 * idempotency cache per session and a TTL. Steps go through probe_run_step:
 * the same engine, validation and policy as the webhook's probes. */
#ifndef VMA_RUNNER_RUNNER_H
#define VMA_RUNNER_RUNNER_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/cgroup.h"
#include "core/config.h"
#include "core/err.h"

#define RUNNER_PROTOCOL    1
#define RUNNER_LINE_MAX    (24u << 20) /* a file.write of 16 MiB, base64, and its fields */
#define RUNNER_ID_MAX      64
#define RUNNER_IDEM_MAX    128
#define RUNNER_CACHE_MAX   64          /* idempotency entries per session */
#define RUNNER_CACHE_BYTES (32u << 20) /* and their total size */
#define RUNNER_PATH_MAX    128

/* One parsed command line: {"type":"command", id, step, timeout?, idempotency_key?}. */
struct runner_cmd {
	json_t *doc;                 /* owns everything below */
	const char *id;              /* set as soon as it is valid, also on a later error */
	json_t *step;                /* an object; validated by the probe parser when run */
	json_t *timeout;             /* NULL = none */
	const char *idempotency_key; /* NULL = none */
	uint8_t hash[32];            /* of {step, timeout}: a key reused for another command */
};

/* Parses one line (without its newline) from an untrusted peer. On error,
 * path names the bad field ("$", "id", "step") and err says why; cmd->id may
 * still be set. Pure. Free with runner_cmd_free (also after an error). */
int runner_line_parse(const char *line, size_t len, struct runner_cmd *cmd, char *path,
                      size_t path_cap, struct vm_err *err);
void runner_cmd_free(struct runner_cmd *cmd);

/* Why runner_serve returned. */
enum runner_end {
	RUNNER_END_EOF,
	RUNNER_END_TTL,
	RUNNER_END_IDLE,
	RUNNER_END_SIGNAL,
	RUNNER_END_IO
};
const char *runner_end_name(enum runner_end why);

struct runner_opts {
	int in_fd, out_fd;
	uint64_t ttl_ms;  /* total lifetime; a running step is stopped at its end */
	uint64_t idle_ms; /* no command for this long ends the runner */
	size_t line_max;  /* RUNNER_LINE_MAX unless a test wants less */
	const char *work_dir;
	const struct cfg_strlist *allow; /* argv[0] patterns; empty = anything */
	uint64_t output_cap, grace_ms, default_timeout_ms;
	const atomic_bool *stop; /* set by a signal: ends the session, cancels a step */
	const char *version;
	struct cg_tree *cgroup; /* steps' containment (cgroup v2 or subreaper); NULL = group */
};

/* Sends the ready line, then serves commands until EOF, the TTL, the idle
 * limit, stop or an output error. Returns 0 (why says which) or an error
 * when the session could not start. */
int runner_serve(const struct runner_opts *o, enum runner_end *why, struct vm_err *err);

/* Writes msg (consumed) as one line to fd. */
int runner_send(int fd, json_t *msg);

#endif
