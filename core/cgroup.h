/* Step containment: one cgroup v2 per step (tracking, cgroup.kill, limits
 * where controllers are delegated), found at start as pure v2, hybrid (v2
 * tree without controllers: track and kill only) or none (the caller falls
 * back to a subreaper). Linux only: core/cgroup_linux.c. */
#ifndef VMA_CORE_CGROUP_H
#define VMA_CORE_CGROUP_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/err.h"

enum cg_mode {
	CG_NONE = 0, /* no writable v2 tree: process group + subreaper fallback */
	CG_TRACK,    /* v2 tree without controllers (hybrid): kill, no limits */
	CG_LIMIT,    /* v2 with at least one of memory, cpu, pids */
};

/* Controllers usable in step cgroups. */
#define CG_MEMORY 1u
#define CG_CPU    2u
#define CG_PIDS   4u

/* Per-step limits; 0 = none. */
struct cg_limits {
	uint64_t memory_max; /* bytes (memory.max) */
	uint32_t cpu_max;    /* percent of one CPU (cpu.max over a 100 ms period) */
	uint32_t pids_max;   /* tasks (pids.max): a fork bomb stops here */
};

/* Empty step cgroups kept for the next step (no mkdir/rmdir per step). */
#define CG_POOL_MAX 32

struct cg_pooled {
	char name[48]; /* "step-<pid>-<n>" under base: the start-up sweep's pattern */
	int procs_fd;
};

struct cg_tree {
	enum cg_mode mode;
	unsigned controllers;  /* CG_* usable under base */
	char base[PATH_MAX];   /* step cgroups are created here; "" in CG_NONE */
	char record[PATH_MAX]; /* state file naming base (cleanup after a crash) */
	char why[256];         /* why cgroups or some limits are unavailable; "" = all there */
	atomic_uint seq;
	pthread_mutex_t pool_lock; /* set up by cg_open */
	int pool_n;
	struct cg_pooled pool[CG_POOL_MAX];
};

struct cg_step {
	char path[PATH_MAX];
	int procs_fd;     /* cgroup.procs, O_CLOEXEC: the child writes "0" to join */
	unsigned applied; /* CG_* whose limit was written */
	char note[256];   /* requested limits that could not be applied, and why */
	struct cg_tree *tree; /* where cg_step_free returns it when it is clean */
};

/* Pure lookup, testable on a fake tree: v2 is root itself (pure v2) or
 * root/unified (hybrid); own is the agent's v2 path from self_cgroup (the
 * "0::" line of /proc/self/cgroup). Returns VM_ERR_NOTFOUND without v2. */
int cg_detect(const char *root, const char *self_cgroup, char *v2, size_t v2cap, char *own,
              size_t owncap, struct vm_err *err);

/* Sets t up under root for an agent whose probe state lives in state_dir:
 * kills the step cgroups a previous (crashed) run recorded there, then makes
 * the base for new steps — under a non-root own cgroup (systemd Delegate=yes)
 * the agent first moves itself into a leaf "agent/" (no internal processes)
 * and enables memory, cpu and pids for "steps/". Never fails: on trouble the
 * mode degrades and why says so. *killed counts leftover processes killed. */
void cg_open(struct cg_tree *t, const char *root, const char *self_cgroup, const char *state_dir,
             int *killed);

/* Empties the pool, removes the base when empty and the record. NULL is fine. */
void cg_close(struct cg_tree *t);

/* Kills every process in the step cgroups under base (a dead agent's leftovers)
 * and removes them. Returns the number of processes that were still there. */
int cg_kill_leftovers(const char *base);

/* A step cgroup under t with the limits it can apply: an empty one from the
 * pool (checked empty again, every limit rewritten: lim's value or "max"),
 * else a new one. */
int cg_step_new(struct cg_tree *t, const struct cg_limits *lim, struct cg_step *s,
                struct vm_err *err);

/* Writes the limits of lim whose controller is in controllers into the
 * cgroup directory dir; returns the CG_* written, and note says what was
 * requested and not applied. */
unsigned cg_write_limits(const char *dir, unsigned controllers, const struct cg_limits *lim,
                         char *note, size_t cap);

/* SIGKILLs everything in the step cgroup (cgroup.kill, else each pid). */
void cg_step_kill(const struct cg_step *s);

/* Sends sig to each process in the step cgroup (SIGTERM before the kill). */
void cg_step_signal(const struct cg_step *s, int sig);

/* True when no process is left in the step cgroup. */
bool cg_step_empty(const struct cg_step *s);

/* Kills what is left and waits (bounded) until empty; then the cgroup goes
 * back to its tree's pool when it is empty, not frozen, has no child cgroup
 * and the pool has room, else it is removed. */
void cg_step_free(struct cg_step *s);

/* Makes the calling process a subreaper (PR_SET_CHILD_SUBREAPER): orphans of
 * its descendants are reparented to it instead of init. */
int cg_set_subreaper(void);

/* SIGKILLs every child of the calling process (found by walking /proc).
 * Async-signal-safe: a subreaper's shim calls it between fork and exit.
 * Returns how many were signalled. */
int cg_kill_own_children(void);

/* Names for logs and results: "cgroup-v2", "cgroup-v2 (no controllers)", "none". */
const char *cg_mode_name(enum cg_mode m);

#endif
