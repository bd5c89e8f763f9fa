/* limits.max_concurrent as a counting semaphore: a count under a mutex, and
 * one watcher that is told when a slot frees up (see budget.h). */
#include "core/budget.h"

#include <pthread.h>
#include <stdlib.h>

#include "core/time.h"

struct budget {
	pthread_mutex_t mu;
	pthread_cond_t idle; /* no watcher call in flight */
	int limit, used;
	void (*watch)(void *ctx);
	void *watch_ctx;
	int calls; /* watcher calls running now */
};

struct budget *budget_new(int limit, struct vm_err *err)
{
	struct budget *b = calloc(1, sizeof(*b));
	if (b == NULL) {
		vm_err_set(err, VM_ERR_NOMEM, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&b->mu, NULL);
	time_cond_init(&b->idle);
	b->limit = limit < 1 ? 1 : limit;
	return b;
}

void budget_free(struct budget *b)
{
	if (b == NULL)
		return;
	pthread_cond_destroy(&b->idle);
	pthread_mutex_destroy(&b->mu);
	free(b);
}

bool budget_try_take(struct budget *b)
{
	if (b == NULL)
		return true;
	pthread_mutex_lock(&b->mu);
	bool ok = b->used < b->limit;
	b->used += ok;
	pthread_mutex_unlock(&b->mu);
	return ok;
}

/* Under b->mu: calls the watcher with the lock dropped, counted so that
 * budget_watch(NULL) can wait for it. */
static void notify_locked(struct budget *b)
{
	void (*fn)(void *) = b->watch;
	void *ctx = b->watch_ctx;
	if (fn == NULL)
		return;
	b->calls++;
	pthread_mutex_unlock(&b->mu);
	fn(ctx);
	pthread_mutex_lock(&b->mu);
	if (--b->calls == 0)
		pthread_cond_broadcast(&b->idle);
}

void budget_give(struct budget *b)
{
	if (b == NULL)
		return;
	pthread_mutex_lock(&b->mu);
	if (b->used > 0)
		b->used--;
	notify_locked(b);
	pthread_mutex_unlock(&b->mu);
}

void budget_set_limit(struct budget *b, int limit)
{
	if (b == NULL)
		return;
	pthread_mutex_lock(&b->mu);
	bool grew = limit > b->limit;
	b->limit = limit < 1 ? 1 : limit;
	if (grew)
		notify_locked(b);
	pthread_mutex_unlock(&b->mu);
}

void budget_usage(struct budget *b, int *in_use, int *limit)
{
	*in_use = *limit = 0;
	if (b == NULL)
		return;
	pthread_mutex_lock(&b->mu);
	*in_use = b->used;
	*limit = b->limit;
	pthread_mutex_unlock(&b->mu);
}

void budget_watch(struct budget *b, void (*fn)(void *ctx), void *ctx)
{
	if (b == NULL)
		return;
	pthread_mutex_lock(&b->mu);
	b->watch = fn;
	b->watch_ctx = ctx;
	while (fn == NULL && b->calls > 0)
		pthread_cond_wait(&b->idle, &b->mu);
	pthread_mutex_unlock(&b->mu);
}
