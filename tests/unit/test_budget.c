/* Unit tests for core/budget: limits.max_concurrent as a counting semaphore
 * whose one watcher is told, outside the budget's lock, when a slot frees. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <unistd.h>

#include "core/budget.h"

static void test_budget_refuses_past_limit_until_a_slot_is_given(void **state)
{
	(void)state;
	struct vm_err err = {0};
	struct budget *b = budget_new(2, &err);
	assert_non_null(b);
	int used, limit;
	assert_true(budget_try_take(b));
	assert_true(budget_try_take(b));
	assert_false(budget_try_take(b));
	budget_usage(b, &used, &limit);
	assert_int_equal(used, 2);
	assert_int_equal(limit, 2);
	budget_give(b);
	budget_usage(b, &used, &limit);
	assert_int_equal(used, 1);
	assert_true(budget_try_take(b));
	assert_false(budget_try_take(b));
	budget_give(b);
	budget_give(b);
	budget_give(b); /* one too many: never below 0 */
	budget_usage(b, &used, &limit);
	assert_int_equal(used, 0);
	budget_free(b);
}

static void test_budget_null_has_room_and_limit_below_one_is_one(void **state)
{
	(void)state;
	assert_true(budget_try_take(NULL));
	budget_give(NULL);
	int used = 7, limit = 7;
	budget_usage(NULL, &used, &limit);
	assert_int_equal(used + limit, 0);
	budget_free(NULL);
	struct vm_err err = {0};
	struct budget *b = budget_new(0, &err);
	assert_true(budget_try_take(b));
	assert_false(budget_try_take(b));
	budget_free(b);
}

static void test_budget_lower_limit_keeps_holders_and_refuses_new(void **state)
{
	(void)state;
	struct vm_err err = {0};
	struct budget *b = budget_new(3, &err);
	for (int i = 0; i < 3; i++)
		assert_true(budget_try_take(b));
	budget_set_limit(b, 1);
	int used, limit;
	budget_usage(b, &used, &limit);
	assert_int_equal(used, 3);
	assert_int_equal(limit, 1);
	budget_give(b);
	assert_false(budget_try_take(b)); /* 2 held, limit 1 */
	budget_give(b);
	budget_give(b);
	assert_true(budget_try_take(b));
	budget_free(b);
}

struct watcher {
	struct budget *b;
	atomic_int calls;
	atomic_bool took; /* the watcher could take a slot: not called under the lock */
	atomic_bool block, inside;
};

static void on_free(void *ctx)
{
	struct watcher *w = ctx;
	atomic_store(&w->inside, true);
	if (budget_try_take(w->b)) {
		atomic_store(&w->took, true);
		budget_watch(w->b, on_free, w); /* re-entering the budget is fine too */
	}
	while (atomic_load(&w->block))
		usleep(1000);
	atomic_fetch_add(&w->calls, 1);
	atomic_store(&w->inside, false);
}

static void test_budget_watcher_told_after_give_and_growth_outside_lock(void **state)
{
	(void)state;
	struct vm_err err = {0};
	struct budget *b = budget_new(1, &err);
	struct watcher w = {.b = b};
	budget_watch(b, on_free, &w);
	assert_true(budget_try_take(b));
	budget_give(b);
	assert_int_equal(atomic_load(&w.calls), 1);
	assert_true(atomic_load(&w.took)); /* it took the freed slot itself */
	atomic_store(&w.took, false);
	budget_set_limit(b, 2); /* growth: one more slot */
	assert_int_equal(atomic_load(&w.calls), 2);
	assert_true(atomic_load(&w.took));
	budget_set_limit(b, 2); /* no growth: nobody told */
	assert_int_equal(atomic_load(&w.calls), 2);
	budget_watch(b, NULL, NULL);
	budget_give(b);
	assert_int_equal(atomic_load(&w.calls), 2);
	budget_free(b);
}

static void *give_thread(void *arg)
{
	budget_give(arg);
	return NULL;
}

struct unwatch {
	struct budget *b;
	atomic_bool done;
};

static void *unwatch_thread(void *arg)
{
	struct unwatch *u = arg;
	budget_watch(u->b, NULL, NULL);
	atomic_store(&u->done, true);
	return NULL;
}

static void test_budget_unwatch_waits_for_a_running_watcher_call(void **state)
{
	(void)state;
	struct vm_err err = {0};
	struct budget *b = budget_new(4, &err);
	struct watcher w = {.b = b};
	atomic_store(&w.block, true);
	budget_watch(b, on_free, &w);
	assert_true(budget_try_take(b));
	assert_true(budget_try_take(b));
	pthread_t g, u;
	assert_int_equal(pthread_create(&g, NULL, give_thread, b), 0);
	for (int i = 0; i < 5000 && !atomic_load(&w.inside); i++)
		usleep(1000);
	assert_true(atomic_load(&w.inside));
	struct unwatch uw = {.b = b};
	assert_int_equal(pthread_create(&u, NULL, unwatch_thread, &uw), 0);
	usleep(50 * 1000);
	assert_false(atomic_load(&uw.done)); /* the watcher's ctx is still in use */
	atomic_store(&w.block, false);
	pthread_join(u, NULL);
	pthread_join(g, NULL);
	assert_true(atomic_load(&uw.done));
	assert_false(atomic_load(&w.inside));
	budget_free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_budget_refuses_past_limit_until_a_slot_is_given),
	    cmocka_unit_test(test_budget_null_has_room_and_limit_below_one_is_one),
	    cmocka_unit_test(test_budget_lower_limit_keeps_holders_and_refuses_new),
	    cmocka_unit_test(test_budget_watcher_told_after_give_and_growth_outside_lock),
	    cmocka_unit_test(test_budget_unwatch_waits_for_a_running_watcher_call),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
