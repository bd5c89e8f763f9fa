/* Request guard: whole-request deadlines for one listener's civetweb workers.
 * civetweb 1.15 bounds each recv(), not a request, so a client that drips its
 * headers or body holds a worker for as long as it likes. The guard knows the
 * socket each worker reads from and, from its own thread, shuts down the read
 * side of a request that is not in (headers and body) by its deadline; and,
 * when shedding and every worker is taken, of any still sending headers after
 * GUARD_SHED_MS, which a real local client never needs. The worker then sees
 * end-of-file, answers 408 and closes. The tunnel's listener does not shed:
 * its only client is our bridge, which may write a stream's headers late
 * when it is busy, and Piko forwards whole headers anyway. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "core/log.h"
#include "core/time.h"
#include "webhook/internal.h"

/* Headers take longer than this only when a client is slow on purpose. */
#define GUARD_SHED_MS 200

struct wh_guard_slot {
	int fd;       /* -1: free */
	bool armed;   /* the request is being read: its deadline applies */
	bool headers; /* still reading the headers */
	bool cut;     /* the guard shut its read side */
	uint64_t start_ms, deadline_ms;
};

struct wh_guard {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_t thr;
	bool stop, started;
	bool shed; /* cut slow headers early while every worker is busy */
	uint64_t timeout_ms;
	uint64_t wake_at;                /* when the thread looks next (UINT64_MAX: when woken) */
	uint64_t cut_deadline, cut_shed; /* counters, for the log */
	size_t nslots, used;
	struct wh_guard_slot slots[];
};

/* Under g->mu. The fd stays the worker's: it is only closed after detach. */
static void cut(struct wh_guard *g, struct wh_guard_slot *s, bool shed)
{
	(void)shutdown(s->fd, SHUT_RD);
	s->cut = true;
	s->armed = false;
	if (shed)
		g->cut_shed++;
	else
		g->cut_deadline++;
}

/* One pass; returns when to look again (ms from now, -1 = until woken). */
static long sweep(struct wh_guard *g, uint64_t now)
{
	bool full = g->shed && g->used >= g->nslots;
	uint64_t next = UINT64_MAX;
	for (size_t i = 0; i < g->nslots; i++) {
		struct wh_guard_slot *s = &g->slots[i];
		if (s->fd < 0 || !s->armed)
			continue;
		if (now >= s->deadline_ms) {
			cut(g, s, false);
			continue;
		}
		if (full && s->headers && now >= s->start_ms + GUARD_SHED_MS) {
			cut(g, s, true);
			continue;
		}
		uint64_t at = s->deadline_ms;
		if (full && s->headers && s->start_ms + GUARD_SHED_MS < at)
			at = s->start_ms + GUARD_SHED_MS;
		if (at < next)
			next = at;
	}
	if (next == UINT64_MAX)
		return -1;
	return next > now ? (long)(next - now) : 0;
}

static void *guard_main(void *arg)
{
	struct wh_guard *g = arg;
	uint64_t noted = 0;
	pthread_mutex_lock(&g->mu);
	while (!g->stop) {
		long wait = sweep(g, (uint64_t)time_mono_ms());
		if (g->cut_deadline + g->cut_shed != noted) {
			noted = g->cut_deadline + g->cut_shed;
			log_debug("webhook",
			          "request guard: %llu requests past their deadline, %llu slow "
			          "headers shed while every worker was busy",
			          (unsigned long long)g->cut_deadline,
			          (unsigned long long)g->cut_shed);
		}
		if (wait < 0) {
			g->wake_at = UINT64_MAX;
			pthread_cond_wait(&g->cv, &g->mu);
			continue;
		}
		g->wake_at = (uint64_t)time_mono_ms() + (uint64_t)wait;
		struct timespec ts = time_deadline(wait);
		(void)pthread_cond_timedwait(&g->cv, &g->mu, &ts);
	}
	pthread_mutex_unlock(&g->mu);
	return NULL;
}

struct wh_guard *wh_guard_new(size_t workers, uint64_t timeout_ms, bool shed, struct vm_err *err)
{
	struct wh_guard *g = calloc(1, sizeof(*g) + workers * sizeof(g->slots[0]));
	if (g == NULL) {
		vm_err_set(err, VM_ERR_NOMEM, "out of memory");
		return NULL;
	}
	g->nslots = workers;
	g->timeout_ms = timeout_ms;
	g->shed = shed;
	g->wake_at = UINT64_MAX;
	for (size_t i = 0; i < workers; i++)
		g->slots[i].fd = -1;
	pthread_mutex_init(&g->mu, NULL);
	time_cond_init(&g->cv);
	if (pthread_create(&g->thr, NULL, guard_main, g) != 0) {
		vm_err_set(err, VM_ERR_INTERNAL, "cannot start the request guard thread");
		wh_guard_free(g);
		return NULL;
	}
	g->started = true;
	return g;
}

void wh_guard_free(struct wh_guard *g)
{
	if (g == NULL)
		return;
	if (g->started) {
		pthread_mutex_lock(&g->mu);
		g->stop = true;
		pthread_cond_signal(&g->cv);
		pthread_mutex_unlock(&g->mu);
		pthread_join(g->thr, NULL);
	}
	pthread_cond_destroy(&g->cv);
	pthread_mutex_destroy(&g->mu);
	free(g);
}

/* Under g->mu: a new request starts now (its headers are awaited). */
static void arm_headers(struct wh_guard *g, struct wh_guard_slot *s)
{
	uint64_t now = (uint64_t)time_mono_ms();
	s->armed = true;
	s->headers = true;
	s->cut = false;
	s->start_ms = now;
	s->deadline_ms = now + g->timeout_ms;
	/* Wake the thread only when it would look too late: a signal per
	 * request costs a context switch. */
	uint64_t at = g->shed && g->used >= g->nslots ? now + GUARD_SHED_MS : s->deadline_ms;
	if (at < g->wake_at)
		pthread_cond_signal(&g->cv);
}

struct wh_guard_slot *wh_guard_attach(struct wh_guard *g, int fd)
{
	if (g == NULL || fd < 0)
		return NULL;
	struct wh_guard_slot *s = NULL;
	pthread_mutex_lock(&g->mu);
	for (size_t i = 0; i < g->nslots && s == NULL; i++)
		if (g->slots[i].fd < 0)
			s = &g->slots[i];
	if (s != NULL) {
		s->fd = fd;
		g->used++;
		arm_headers(g, s);
	}
	pthread_mutex_unlock(&g->mu);
	return s;
}

void wh_guard_next_request(struct wh_guard *g, struct wh_guard_slot *s)
{
	if (g == NULL || s == NULL)
		return;
	pthread_mutex_lock(&g->mu);
	if (!s->cut)
		arm_headers(g, s);
	pthread_mutex_unlock(&g->mu);
}

void wh_guard_headers_in(struct wh_guard *g, struct wh_guard_slot *s, bool body)
{
	if (g == NULL || s == NULL)
		return;
	pthread_mutex_lock(&g->mu);
	s->headers = false; /* the deadline goes on for the body, if any */
	if (!body)
		s->armed = false;
	pthread_mutex_unlock(&g->mu);
}

void wh_guard_body_in(struct wh_guard *g, struct wh_guard_slot *s)
{
	if (g == NULL || s == NULL)
		return;
	pthread_mutex_lock(&g->mu);
	s->armed = false;
	pthread_mutex_unlock(&g->mu);
}

bool wh_guard_reading(struct wh_guard *g, struct wh_guard_slot *s)
{
	if (g == NULL || s == NULL)
		return false;
	pthread_mutex_lock(&g->mu);
	bool r = s->armed;
	pthread_mutex_unlock(&g->mu);
	return r;
}

bool wh_guard_was_cut(struct wh_guard *g, struct wh_guard_slot *s)
{
	if (g == NULL || s == NULL)
		return false;
	pthread_mutex_lock(&g->mu);
	bool c = s->cut;
	pthread_mutex_unlock(&g->mu);
	return c;
}

void wh_guard_detach(struct wh_guard *g, struct wh_guard_slot *s)
{
	if (g == NULL || s == NULL)
		return;
	pthread_mutex_lock(&g->mu);
	s->fd = -1;
	s->armed = s->cut = false;
	g->used--;
	pthread_mutex_unlock(&g->mu);
}
