/* Piko token renewal: one thread that keeps the upstream token fresh from the
 * control plane (core/cp: POST /v1/agents/{id}/piko-token) at about 2/3 of its
 * lifetime and at once when Piko refused it, with the core backoff on
 * failures. The token goes to piko.token_file (atomic, 0600) and to the sink
 * (the tunnel), so the tunnel thread never waits on the control plane. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/config.h"
#include "core/cp.h"
#include "core/fs.h"
#include "core/http.h"
#include "core/log.h"
#include "core/secret.h"
#include "lifecycle/internal.h"

#define RENEW_FRACTION_NUM     2 /* renew at 2/3 of the lifetime */
#define RENEW_FRACTION_DEN     3
#define RENEW_RETRY_INITIAL_MS 1000
#define RENEW_RETRY_MAX_MS     60000
#define RENEW_CALL_TIMEOUT_MS  15000

struct renew_settings {
	bool enabled;
	char cp_url[CFG_STR_MAX];
	char ca_file[PATH_MAX];
	char proxy[CFG_STR_MAX];
	char proxy_creds[PATH_MAX];
	char credentials_file[PATH_MAX];
	char token_file[PATH_MAX];
	char inline_token[CFG_TOKEN_MAX]; /* piko.token when there is no file: for its exp */
};

struct lc_renewer {
	pthread_t thread;
	bool running;
	pthread_mutex_t mu; /* guards everything below */
	pthread_cond_t cond;
	atomic_bool stop;
	bool kicked;
	bool reschedule; /* settings changed: read the token again */
	struct renew_settings set;
	lc_token_sink sink;
	void *ctx;
};

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void settings_of(const struct cfg *cfg, struct renew_settings *s)
{
	memset(s, 0, sizeof(*s));
	s->enabled = cfg->agent.control_plane_url[0] != '\0' &&
	             cfg->agent.credentials_file[0] != '\0' && cfg->piko.server_url[0] != '\0';
	snprintf(s->cp_url, sizeof(s->cp_url), "%s", cfg->agent.control_plane_url);
	snprintf(s->ca_file, sizeof(s->ca_file), "%s", cfg->agent.ca_file);
	snprintf(s->proxy, sizeof(s->proxy), "%s", cfg->agent.proxy_url);
	snprintf(s->proxy_creds, sizeof(s->proxy_creds), "%s", cfg->agent.proxy_credentials_file);
	snprintf(s->credentials_file, sizeof(s->credentials_file), "%s",
	         cfg->agent.credentials_file);
	snprintf(s->token_file, sizeof(s->token_file), "%s", cfg->piko.token_file);
	snprintf(s->inline_token, sizeof(s->inline_token), "%s", cfg->piko.token);
}

static void settings_wipe(struct renew_settings *s)
{
	explicit_bzero(s->inline_token, sizeof(s->inline_token));
}

int lc_piko_token_fetch(const struct cp_opts *o, const char *creds_path, const char *token_path,
                        struct secret *out, int64_t *exp, struct vm_err *err)
{
	struct cp_creds creds;
	int rc = cp_creds_load(creds_path, &creds, err);
	if (rc != 0)
		return rc;
	rc = cp_piko_token(o, &creds, out, exp, err);
	cp_creds_clear(&creds);
	if (rc == 0 && token_path != NULL && token_path[0] != '\0')
		rc = fs_write_atomic(token_path, out->value, out->len, 0600, err);
	if (rc != 0)
		secret_clear(out);
	return rc;
}

static int renew_once(const struct renew_settings *s, const atomic_bool *cancel, struct secret *out,
                      int64_t *exp, struct vm_err *err)
{
	struct cp_opts o = {.url = s->cp_url,
	                    .ca_file = s->ca_file,
	                    .proxy = s->proxy,
	                    .proxy_credentials_file = s->proxy_creds,
	                    .timeout_ms = RENEW_CALL_TIMEOUT_MS,
	                    .cancel = cancel};
	return lc_piko_token_fetch(&o, s->credentials_file, s->token_file, out, exp, err);
}

/* When (wall clock, seconds) a token with these claims is renewed; 0 = no
 * expiry, so only a kick renews it. seen stands in for a missing iat. */
static int64_t renew_time(int64_t iat, int64_t exp, int64_t seen)
{
	if (exp == 0)
		return 0;
	if (iat == 0 || iat >= exp)
		iat = seen < exp ? seen : exp;
	return iat + (exp - iat) * RENEW_FRACTION_NUM / RENEW_FRACTION_DEN;
}

/* The same for the token the agent started with (file or inline). */
static int64_t renew_at(const struct renew_settings *s, int64_t seen)
{
	struct secret tok = {0};
	struct vm_err err;
	int64_t iat = 0, exp = 0;
	if (s->token_file[0] != '\0') {
		if (secret_load_file(&tok, s->token_file, &err) != 0)
			return seen; /* unreadable: fetch one now */
		(void)cp_token_times(tok.value, &iat, &exp);
		secret_clear(&tok);
	} else {
		(void)cp_token_times(s->inline_token, &iat, &exp);
	}
	return renew_time(iat, exp, seen);
}

static void timed_wait(struct lc_renewer *r, uint64_t ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += (time_t)(ms / 1000);
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_cond_timedwait(&r->cond, &r->mu, &ts);
}

/* The renewal thread's schedule (only it touches this). */
struct sched {
	unsigned failures, kicks; /* consecutive, for the backoff */
	uint64_t next_try;        /* monotonic ms, after a failure or a kick */
	int64_t due_wall;         /* when the current token is renewed; -1 = read it again */
	char last_error[256];
};

static const struct http_retry renew_policy = {.initial_delay_ms = RENEW_RETRY_INITIAL_MS,
                                               .max_delay_ms = RENEW_RETRY_MAX_MS,
                                               .multiplier = 2};

/* When the next attempt is due (monotonic ms; UINT64_MAX = only a kick). */
static uint64_t next_due(const struct lc_renewer *r, const struct sched *sc, uint64_t now)
{
	if (sc->failures > 0)
		return sc->next_try; /* the control plane failed: back off */
	if (r->kicked) /* a refused token: at once, not in a loop if Piko keeps refusing */
		return sc->kicks == 0 ? now : sc->next_try;
	if (sc->due_wall == 0)
		return UINT64_MAX;
	int64_t left_s = sc->due_wall - (int64_t)time(NULL);
	return left_s <= 0 ? now : now + (uint64_t)left_s * 1000u;
}

/* One attempt, without the lock: renew, hand over, log. Returns renew_once's
 * code; iat and exp get the new token's claims. */
static int attempt(struct lc_renewer *r, const struct renew_settings *s, struct sched *sc,
                   int64_t *iat, int64_t *exp)
{
	struct secret tok = {0};
	struct vm_err err = {0};
	int rc = renew_once(s, &r->stop, &tok, exp, &err);
	if (rc != 0) {
		/* Once per distinct problem, not every retry. */
		if (strcmp(sc->last_error, err.msg) != 0)
			log_warn("lifecycle",
			         "Piko token renewal failed: %s; retrying with backoff", err.msg);
		snprintf(sc->last_error, sizeof(sc->last_error), "%s", err.msg);
		return rc;
	}
	char when[32] = "?";
	struct tm tm;
	time_t e = (time_t)*exp;
	if (*exp > 0 && gmtime_r(&e, &tm) != NULL)
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	log_info("lifecycle", "Piko token renewed (expires %s)", when);
	sc->last_error[0] = '\0';
	struct vm_err serr = {0};
	if (r->sink != NULL && r->sink(r->ctx, &tok, &serr) != 0)
		log_warn("lifecycle",
		         "renewed Piko token: the new session failed (%s); the next reconnect "
		         "uses the token",
		         serr.msg);
	/* The next renewal follows this token (an inline piko.token has no file). */
	(void)cp_token_times(tok.value, iat, exp);
	secret_clear(&tok);
	return 0;
}

static void *renew_main(void *arg)
{
	struct lc_renewer *r = arg;
	struct sched sc = {.due_wall = -1};
	pthread_mutex_lock(&r->mu);
	while (!atomic_load(&r->stop)) {
		if (!r->set.enabled) {
			pthread_cond_wait(&r->cond, &r->mu);
			continue;
		}
		if (r->reschedule) {
			r->reschedule = false;
			sc.due_wall = -1;
		}
		if (sc.due_wall < 0)
			sc.due_wall = renew_at(&r->set, (int64_t)time(NULL));
		uint64_t now = mono_ms(), due = next_due(r, &sc, now);
		if (due > now) {
			if (due == UINT64_MAX)
				pthread_cond_wait(&r->cond, &r->mu);
			else
				timed_wait(r, due - now);
			continue;
		}
		bool was_kick = r->kicked;
		r->kicked = false;
		struct renew_settings s = r->set;
		pthread_mutex_unlock(&r->mu);
		int64_t iat = 0, exp = 0;
		int rc = attempt(r, &s, &sc, &iat, &exp);
		settings_wipe(&s);
		pthread_mutex_lock(&r->mu);
		if (rc == 0) {
			sc.failures = 0;
			sc.kicks = was_kick ? sc.kicks + 1 : 0;
			sc.due_wall = renew_time(iat, exp, (int64_t)time(NULL));
			sc.next_try =
			    mono_ms() +
			    (sc.kicks ? http_backoff_next_ms(&renew_policy, sc.kicks, -1) : 0);
		} else {
			sc.failures++;
			if (was_kick)
				r->kicked = true; /* still wanted: retry on the backoff */
			sc.next_try =
			    mono_ms() + http_backoff_next_ms(&renew_policy, sc.failures, -1);
		}
	}
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

struct lc_renewer *lc_renewer_new(const struct cfg *cfg, struct vm_err *err)
{
	struct lc_renewer *r = calloc(1, sizeof(*r));
	if (r == NULL) {
		vm_err_set(err, VM_ERR_NOMEM, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&r->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	/* Waits are on CLOCK_MONOTONIC: a wall-clock jump cannot stretch them. */
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&r->cond, &ca);
	pthread_condattr_destroy(&ca);
	settings_of(cfg, &r->set);
	return r;
}

int lc_renewer_run(struct lc_renewer *r, lc_token_sink sink, void *ctx, struct vm_err *err)
{
	r->sink = sink;
	r->ctx = ctx;
	int prc = pthread_create(&r->thread, NULL, renew_main, r);
	if (prc != 0)
		return vm_err_errno(err, VM_ERR_INTERNAL, prc,
		                    "cannot start the token renewal thread");
	r->running = true;
	return 0;
}

void lc_renewer_kick(void *renewer)
{
	struct lc_renewer *r = renewer;
	if (r == NULL)
		return;
	pthread_mutex_lock(&r->mu);
	r->kicked = true;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->mu);
}

void lc_renewer_reconfigure(struct lc_renewer *r, const struct cfg *cfg)
{
	if (r == NULL)
		return;
	pthread_mutex_lock(&r->mu);
	settings_wipe(&r->set);
	settings_of(cfg, &r->set);
	r->reschedule = true;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->mu);
}

void lc_renewer_stop(struct lc_renewer *r)
{
	if (r == NULL)
		return;
	pthread_mutex_lock(&r->mu);
	atomic_store(&r->stop, true);
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->mu);
	if (r->running)
		pthread_join(r->thread, NULL);
	settings_wipe(&r->set);
	pthread_cond_destroy(&r->cond);
	pthread_mutex_destroy(&r->mu);
	free(r);
}
