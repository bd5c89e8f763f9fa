/* The concurrency budget (limits.max_concurrent): one counting semaphore
 * shared by everything that runs work on the VM. A shell holds a slot for
 * its lifetime, a probe while it runs. Callers never block in it: a shell
 * that finds no slot is refused, a probe stays queued until a release wakes
 * its owner (the one watcher). */
#ifndef VMA_CORE_BUDGET_H
#define VMA_CORE_BUDGET_H

#include <stdbool.h>

#include "core/err.h"

struct budget;

/* limit >= 1 slots. NULL (out of memory) with err set. */
struct budget *budget_new(int limit, struct vm_err *err);

/* Frees; slots still held are forgotten. NULL is fine. */
void budget_free(struct budget *b);

/* Takes a slot when one is free. A NULL budget has room for everything. */
bool budget_try_take(struct budget *b);

/* Gives a slot back, then calls the watcher (never under the budget's own
 * lock, so the watcher may take its owner's lock; the caller must not hold
 * it). NULL is fine. */
void budget_give(struct budget *b);

/* A new limit (a reload): held slots stay held; when it grows, the watcher
 * is called. Below 1 is 1. */
void budget_set_limit(struct budget *b, int limit);

/* Slots held now, and the limit. NULL gives 0 and 0. */
void budget_usage(struct budget *b, int *in_use, int *limit);

/* fn(ctx) after every give (and growth of the limit): the owner of a queue
 * of waiting work wakes it there. One watcher at a time; NULL removes it and
 * returns once no call to the old one is running (so its ctx may go). */
void budget_watch(struct budget *b, void (*fn)(void *ctx), void *ctx);

#endif
