/* GET /v1/shell: an interactive terminal over a WebSocket (civetweb's server
 * side). The request is authorized and audited by dispatch like any other
 * before the upgrade; each session then has one thread running its shell
 * under core/proc's PTY mode (a cgroup or subreaper: the whole tree dies with
 * the session), writing output frames as it reads (a slow client stops the
 * reading: memory stays bounded), and an asciicast v2 recording under
 * <state_dir>/shell. The connection's worker reads the client's frames. */
#include <civetweb.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/budget.h"
#include "core/codec.h"
#include "core/fs.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/proc.h"
#include "core/rand.h"
#include "core/time.h"
#include "webhook/internal.h"

#define ARGV_MAX      WH_SHELL_ARGV_MAX
#define ENV_MAX       WH_SHELL_ENV_MAX
#define START_WAIT_MS 5000 /* for a "start" message when the query names no command */
#define LIST_MAX      1000
#define HEADER_MAX    8192
#define GRACE_MS      500  /* SIGTERM → SIGKILL; an interactive bash ignores SIGTERM */
#define CLOSE_WAIT_MS 2000 /* for the client's close frame after ours */
#define QUERY_MAX     4096

struct wh_shells {
	pthread_mutex_t mu;
	int active;
	struct wh_shell_session *sessions;
	struct cg_tree *cgroup; /* borrowed (the agent's); NULL = process group */
	struct budget *budget;  /* borrowed: limits.max_concurrent; NULL = none */
	char dir[PATH_MAX];     /* recordings */
	bool enabled, record_input;
	int max_sessions, retention_count;
	uint64_t idle_ms, max_ms, record_max, retention_age_ms;
	char default_cmd[PATH_MAX], default_user[CFG_ID_MAX];
};

struct recorder {
	pthread_mutex_t mu; /* output (session thread) and input (worker) both write */
	int fd;             /* -1: not recording (stopped, or none) */
	uint64_t bytes, max;
	bool truncated;
	char carry[4]; /* the start of a character the next chunk completes */
	size_t carry_len;
	int64_t t0;
};

struct wh_shell_session {
	struct wh_shells *owner;
	struct wh_shell_session *next;
	struct mg_connection *conn;
	struct wh_audit *audit;
	char id[ID_LEN + 1];
	char sub[256], jti[256], tenant[256], remote[64], user[64];
	char cmdline[1024];
	struct wh_shell_params query; /* the query's; a "start" message merges over them */
	/* Until the first frame (or START_WAIT_MS): the query had no command, so
	 * the first text frame may be {"type":"start",...}. Under mu. */
	bool awaiting;
	bool deferred;                 /* set before the upgrade: awaiting was true */
	struct wh_shell_params *start; /* handed from the worker to the session thread */
	char start_err[256];           /* a "start" message that did not validate */
	char *argv[ARGV_MAX + 1];
	char *envp[ENV_MAX + 8];
	char cwd[PATH_MAX];
	uid_t uid;
	gid_t gid;
	bool set_ids;
	uint16_t cols, rows;
	int64_t start_mono, start_wall;

	pthread_mutex_t mu;
	pthread_cond_t cv;
	int master; /* our dup of the terminal's master: input, resize, signals */
	pid_t pid;
	bool ended, ws_closed, thr_started;
	const char *reason; /* why it ended, when we ended it */
	pthread_t thr;
	atomic_bool cancel;
	_Atomic int64_t last_input;
	_Atomic uint64_t bytes_in, bytes_out;
	struct recorder rec;
};

struct wh_shells *wh_shells_new(const struct cfg *cfg, const struct wh_deps *deps,
                                struct vm_err *err)
{
	struct wh_shells *s = calloc(1, sizeof(*s));
	if (s == NULL) {
		vm_err_set(err, VM_ERR_NOMEM, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&s->mu, NULL);
	snprintf(s->dir, sizeof(s->dir), "%.*s/shell", (int)(sizeof(s->dir) - 7),
	         cfg->agent.state_dir);
	s->enabled = cfg->shell.enabled;
	s->record_input = cfg->shell.record_input;
	s->max_sessions = cfg->shell.max_sessions;
	s->retention_count = cfg->shell.retention_count;
	s->idle_ms = cfg->shell.idle_timeout_ms;
	s->max_ms = cfg->shell.max_duration_ms;
	s->record_max = cfg->shell.record_max_bytes;
	s->retention_age_ms = cfg->shell.retention_age_ms;
	snprintf(s->default_cmd, sizeof(s->default_cmd), "%s", cfg->shell.default_cmd);
	snprintf(s->default_user, sizeof(s->default_user), "%s", cfg->shell.default_user);
	s->cgroup = deps->cgroup;
	s->budget = deps->budget;
	return s;
}

void wh_shells_free(struct wh_shells *s)
{
	if (s == NULL)
		return;
	pthread_mutex_destroy(&s->mu);
	free(s);
}

/* --- recording (asciicast v2) ----------------------------------------------------------- */

/* Terminal bytes as JSON string content: characters split across reads are
 * carried over; bytes that are no UTF-8 become U+FFFD (asciinema does the
 * same). out holds at least 3 * (carry + n) bytes. */
static size_t cast_text(struct recorder *r, const char *data, size_t n, char *out)
{
	char *tmp = malloc(r->carry_len + n);
	if (tmp == NULL)
		return 0;
	memcpy(tmp, r->carry, r->carry_len);
	memcpy(tmp + r->carry_len, data, n);
	size_t len = r->carry_len + n;
	size_t keep = utf8_cut(tmp, len);
	/* a trailing partial character waits for the next chunk (at most 3 bytes) */
	r->carry_len = len - keep <= 3 ? len - keep : 0;
	memcpy(r->carry, tmp + keep, r->carry_len);
	if (len - keep > 3)
		keep = len;
	size_t o = 0;
	for (size_t i = 0; i < keep;) {
		size_t c = utf8_char_len(tmp + i, keep - i);
		if (c == 0) {
			memcpy(out + o, "\xEF\xBF\xBD", 3);
			o += 3;
			i++;
		} else {
			memcpy(out + o, tmp + i, c);
			o += c;
			i += c;
		}
	}
	free(tmp);
	return o;
}

/* One event line, under r->mu; the recording stops (and says so) at its bound. */
static void rec_line_locked(struct recorder *r, const char *kind, const char *text, size_t len)
{
	if (r->fd < 0)
		return;
	double t = (double)(time_mono_ms() - r->t0) / 1000.0;
	json_t *ev = json_pack("[f,s,s%]", t, kind, text, len);
	char *line = ev != NULL ? json_dumps(ev, JSON_COMPACT) : NULL;
	json_decref(ev);
	if (line == NULL)
		return;
	size_t n = strlen(line);
	if (r->bytes + n + 1 > r->max) {
		free(line);
		r->truncated = true;
		char note[128];
		int m = snprintf(note, sizeof(note),
		                 "[%.3f,\"m\",\"recording stopped: shell.record_max_bytes\"]\n", t);
		(void)fs_write_all(r->fd, note, (size_t)m);
		close(r->fd);
		r->fd = -1;
		return;
	}
	line[n] = '\n';
	if (fs_write_all(r->fd, line, n + 1) == 0)
		r->bytes += n + 1;
	free(line);
}

static void rec_bytes(struct recorder *r, const char *kind, const char *data, size_t n)
{
	pthread_mutex_lock(&r->mu);
	if (r->fd >= 0) {
		char *out = malloc(3 * (n + 4) + 1);
		if (out != NULL) {
			size_t len = cast_text(r, data, n, out);
			if (len > 0)
				rec_line_locked(r, kind, out, len);
			free(out);
		}
	}
	pthread_mutex_unlock(&r->mu);
}

static void rec_resize(struct recorder *r, uint16_t cols, uint16_t rows)
{
	char sz[32];
	int n = snprintf(sz, sizeof(sz), "%ux%u", cols, rows);
	pthread_mutex_lock(&r->mu);
	rec_line_locked(r, "r", sz, (size_t)n);
	pthread_mutex_unlock(&r->mu);
}

/* The file, before the upgrade: no recording, no session. */
static int rec_open(struct wh_shell_session *s, struct vm_err *err)
{
	struct recorder *r = &s->rec;
	r->fd = -1;
	r->max = s->owner->record_max;
	r->t0 = s->start_mono;
	if (fs_mkdir_p(s->owner->dir, 0700, err) != 0)
		return -1;
	char path[PATH_MAX + 64];
	snprintf(path, sizeof(path), "%s/%s.cast", s->owner->dir, s->id);
	r->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (r->fd < 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "create %s", path);
	return 0;
}

/* The header, once the parameters are final (a "start" message may come). */
static int rec_header(struct wh_shell_session *s, struct vm_err *err)
{
	struct recorder *r = &s->rec;
	json_t *h = json_pack(
	    "{s:i,s:i,s:i,s:I,s:s,s:{s:s,s:s},s:s,s:s,s:s,s:s,s:s,s:s}", "version", 2, "width",
	    s->cols, "height", s->rows, "timestamp", (json_int_t)(s->start_wall / 1000), "command",
	    s->cmdline, "env", "TERM", s->envp[0] + 5, "SHELL", s->argv[0], "id", s->id, "user",
	    s->user, "tenant", s->tenant, "sub", s->sub, "jti", s->jti, "remote", s->remote);
	char *line = h != NULL ? json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	json_decref(h);
	if (line == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	size_t n = strlen(line);
	line[n] = '\n';
	int rc = fs_write_all(r->fd, line, n + 1);
	r->bytes = n + 1;
	free(line);
	if (rc != 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "write the recording of %s", s->id);
	return 0;
}

static bool valid_session_id(const char *id)
{
	size_t n = strlen(id);
	if (n != ID_LEN)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f') ||
		      id[i] == '-'))
			return false;
	return true;
}

static bool session_active(struct wh_shells *sh, const char *id)
{
	for (struct wh_shell_session *s = sh->sessions; s != NULL; s = s->next)
		if (strcmp(s->id, id) == 0)
			return true;
	return false;
}

/* Retention: recordings older than shell.retention_age go, then the oldest
 * past shell.retention_count (never a running session's). Under sh->mu. */
static void prune_locked(struct wh_shells *sh)
{
	DIR *d = opendir(sh->dir);
	if (d == NULL)
		return;
	struct ent {
		char name[64];
		int64_t mtime;
	} *ents = calloc(LIST_MAX * 4, sizeof(*ents));
	size_t n = 0;
	int64_t now = time_wall_ms();
	struct dirent *de;
	while (ents != NULL && (de = readdir(d)) != NULL && n < LIST_MAX * 4) {
		size_t len = strlen(de->d_name);
		if (len != ID_LEN + 5 || strcmp(de->d_name + ID_LEN, ".cast") != 0)
			continue;
		struct stat st;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
			continue;
		char id[ID_LEN + 1];
		snprintf(id, sizeof(id), "%.*s", ID_LEN, de->d_name);
		if (session_active(sh, id))
			continue;
		int64_t mt = (int64_t)st.st_mtime * 1000;
		if (now - mt > (int64_t)sh->retention_age_ms) {
			(void)unlinkat(dirfd(d), de->d_name, 0);
			continue;
		}
		snprintf(ents[n].name, sizeof(ents[n].name), "%s", de->d_name);
		ents[n++].mtime = mt;
	}
	/* the newest retention_count stay (active ones are not counted: they are extra) */
	while (ents != NULL && n > (size_t)sh->retention_count) {
		size_t old = 0;
		for (size_t i = 1; i < n; i++)
			if (ents[i].mtime < ents[old].mtime)
				old = i;
		(void)unlinkat(dirfd(d), ents[old].name, 0);
		ents[old] = ents[--n];
	}
	free(ents);
	closedir(d);
}

/* --- parameters (the query, or a "start" message) --------------------------------------- */

static int query_var(const struct wh_req *req, const char *name, char *out, size_t cap)
{
	const char *qs = req->info->query_string;
	out[0] = '\0';
	if (qs == NULL)
		return 0;
	return mg_get_var(qs, strlen(qs), name, out, cap);
}

static int add_env(struct wh_shell_session *s, int *n, const char *name, const char *value)
{
	if (*n >= ENV_MAX + 7)
		return -1;
	size_t len = strlen(name) + strlen(value) + 2;
	char *e = malloc(len);
	if (e == NULL)
		return -1;
	snprintf(e, len, "%s=%s", name, value);
	s->envp[(*n)++] = e;
	return 0;
}

/* The query's parameters, by the rules of a "start" message (shell_control.c):
 * sizes as integers, command and env as JSON text, the rest as strings. */
static int query_params(const struct wh_req *req, struct wh_shell_params *p, struct vm_err *err)
{
	static const char *const names[] = {"cols", "rows", "command", "user",
	                                    "env",  "cwd",  "term"};
	char v[QUERY_MAX];
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		int n = query_var(req, names[i], v, sizeof(v));
		if (n == -2)
			return vm_err_set(err, VM_ERR_INVALID, "%s: over %d bytes", names[i],
			                  QUERY_MAX - 1);
		if (n <= 0)
			continue;
		json_t *j;
		if (strcmp(names[i], "cols") == 0 || strcmp(names[i], "rows") == 0)
			j = json_integer(strtol(v, NULL, 10));
		else if (strcmp(names[i], "command") == 0 || strcmp(names[i], "env") == 0)
			j = json_loads(v, JSON_REJECT_DUPLICATES, NULL);
		else
			j = json_stringn_nocheck(v, (size_t)n);
		int rc = wh_shell_param_set(p, names[i], j != NULL ? j : json_null(), err);
		json_decref(j);
		if (rc != 0)
			return -1;
	}
	return 0;
}

static void session_clear(struct wh_shell_session *s)
{
	for (int i = 0; s->argv[i] != NULL; i++) {
		free(s->argv[i]);
		s->argv[i] = NULL;
	}
	for (int i = 0; s->envp[i] != NULL; i++) {
		free(s->envp[i]);
		s->envp[i] = NULL;
	}
}

/* The session from validated parameters: user and ids, the command (default
 * the login shell, else shell.default, else sh), cwd, environment. 0, or -1
 * with err (VM_ERR_INVALID: the caller's mistake). May run again (start). */
static int session_setup(struct wh_shell_session *s, const struct wh_shell_params *p,
                         struct vm_err *err)
{
	struct wh_shells *sh = s->owner;
	session_clear(s);
	s->cols = p->cols != 0 ? p->cols : 80;
	s->rows = p->rows != 0 ? p->rows : 24;
	snprintf(s->user, sizeof(s->user), "%.63s", p->user != NULL ? p->user : sh->default_user);
	if (proc_lookup_ids(s->user, "", &s->uid, &s->gid, &s->set_ids, err) != 0) {
		err->code = VM_ERR_INVALID;
		return -1;
	}
	char pwbuf[4096], home[PATH_MAX] = "/", login[PATH_MAX] = "";
	struct passwd pw, *pp = NULL;
	if (getpwuid_r(s->uid, &pw, pwbuf, sizeof(pwbuf), &pp) == 0 && pp != NULL) {
		snprintf(home, sizeof(home), "%s", pp->pw_dir);
		snprintf(login, sizeof(login), "%s", pp->pw_shell);
	}
	int na = 0;
	for (; na < p->argc; na++)
		s->argv[na] = strdup(p->argv[na]);
	if (na == 0) {
		const char *sh_path = login;
		if (sh_path[0] != '/' || access(sh_path, X_OK) != 0 || strstr(sh_path, "nologin") ||
		    strstr(sh_path, "/false"))
			sh_path = sh->default_cmd;
		if (access(sh_path, X_OK) != 0)
			sh_path = "/bin/sh";
		s->argv[na++] = strdup(sh_path);
	}
	size_t off = 0;
	for (int i = 0; i < na; i++) {
		if (s->argv[i] == NULL)
			return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
		off = str_appendf(s->cmdline, sizeof(s->cmdline), off, "%s%s", i ? " " : "",
		                  s->argv[i]);
	}
	snprintf(s->cwd, sizeof(s->cwd), "%s",
	         p->cwd != NULL ? p->cwd : access(home, X_OK) == 0 ? home : "/");
	int ne = 0;
	/* envp[0] is TERM (the recording's header reads it there) */
	if (add_env(s, &ne, "TERM", p->term != NULL ? p->term : "xterm-256color") != 0 ||
	    add_env(s, &ne, "HOME", home) != 0 || add_env(s, &ne, "USER", s->user) != 0 ||
	    add_env(s, &ne, "LOGNAME", s->user) != 0 || add_env(s, &ne, "SHELL", s->argv[0]) != 0 ||
	    add_env(s, &ne, "PATH", PROC_DEFAULT_PATH) != 0)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	for (int i = 0; i < p->nenv; i++) {
		if (ne >= ENV_MAX + 7 || (s->envp[ne] = strdup(p->env[i])) == NULL)
			return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
		ne++;
	}
	return 0;
}

/* Fills the session from the query; answers 400 (503) and returns -1 on a bad one. */
static int parse_params(struct wh_req *req, struct wh_shell_session *s)
{
	struct vm_err err = {0};
	if (query_params(req, &s->query, &err) != 0 || session_setup(s, &s->query, &err) != 0) {
		if (err.code == VM_ERR_NOMEM)
			wh_reply_error(req, 503, "unavailable", "%s", err.msg);
		else
			wh_reply_error(req, 400, "invalid_request", "%s", err.msg);
		return -1;
	}
	/* no command: the first frame may be a "start" message with the parameters */
	s->awaiting = s->deferred = s->query.argc == 0;
	return 0;
}

/* --- the session ------------------------------------------------------------------------ */

static void session_free(struct wh_shell_session *s)
{
	if (s == NULL)
		return;
	session_clear(s);
	wh_shell_params_free(&s->query);
	if (s->start != NULL) {
		wh_shell_params_free(s->start);
		free(s->start);
	}
	if (s->master >= 0)
		close(s->master);
	if (s->rec.fd >= 0)
		close(s->rec.fd);
	pthread_mutex_destroy(&s->rec.mu);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
	free(s);
}

/* The session leaves the open list and gives its slot of the budget back
 * (after sh->mu: the budget's watcher takes the executor's lock). */
static void session_unlink(struct wh_shell_session *s)
{
	struct wh_shells *sh = s->owner;
	pthread_mutex_lock(&sh->mu);
	for (struct wh_shell_session **p = &sh->sessions; *p != NULL; p = &(*p)->next)
		if (*p == s) {
			*p = s->next;
			break;
		}
	sh->active--;
	pthread_mutex_unlock(&sh->mu);
	budget_give(sh->budget);
}

static int ws_send(struct wh_shell_session *s, int opcode, const char *data, size_t len)
{
	return mg_websocket_write(s->conn, opcode, data, len);
}

static void on_output(void *ctx, enum proc_stream stream, const char *data, size_t len)
{
	(void)stream;
	struct wh_shell_session *s = ctx;
	if (atomic_load(&s->cancel))
		return;
	rec_bytes(&s->rec, "o", data, len);
	/* blocks while the client does not read: the terminal is not read meanwhile */
	if (ws_send(s, MG_WEBSOCKET_OPCODE_BINARY, data, len) <= 0) {
		pthread_mutex_lock(&s->mu);
		if (s->reason == NULL)
			s->reason = "client gone";
		pthread_mutex_unlock(&s->mu);
		atomic_store(&s->cancel, true);
		return;
	}
	atomic_fetch_add(&s->bytes_out, len);
}

static void on_start(void *ctx, int master, pid_t pid)
{
	struct wh_shell_session *s = ctx;
	pthread_mutex_lock(&s->mu);
	/* ours outlives proc_run's copy: input never meets a closed (reused) fd */
	s->master = fcntl(master, F_DUPFD_CLOEXEC, 3);
	s->pid = pid;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

static bool should_stop(void *ctx)
{
	struct wh_shell_session *s = ctx;
	if (atomic_load(&s->cancel))
		return true;
	int64_t idle = time_mono_ms() - atomic_load(&s->last_input);
	if (s->owner->idle_ms > 0 && idle > (int64_t)s->owner->idle_ms) {
		pthread_mutex_lock(&s->mu);
		if (s->reason == NULL)
			s->reason = "idle timeout (shell.idle_timeout)";
		pthread_mutex_unlock(&s->mu);
		return true;
	}
	return false;
}

static json_t *summary(struct wh_shell_session *s, const struct proc_result *res, const char *why)
{
	json_t *o = json_pack(
	    "{s:s,s:s,s:s,s:I,s:I,s:I,s:b}", "id", s->id, "command", s->cmdline, "user", s->user,
	    "duration_ms", (json_int_t)(time_mono_ms() - s->start_mono), "bytes_in",
	    (json_int_t)atomic_load(&s->bytes_in), "bytes_out",
	    (json_int_t)atomic_load(&s->bytes_out), "recording_truncated", s->rec.truncated);
	if (o == NULL)
		return NULL;
	if (res != NULL && res->term_signal != 0) {
		const char *name = wh_shell_signal_name(res->term_signal);
		json_object_set_new(o, "signal", json_string(name != NULL ? name : "?"));
	} else if (res != NULL) {
		json_object_set_new(o, "code", json_integer(res->exit_code));
	}
	if (why != NULL)
		json_object_set_new(o, "reason", json_string(why));
	return o;
}

/* One durable line of this session (route GET /v1/shell, status 101). */
static int audit_line(struct wh_shell_session *s, const char *outcome, json_t *sum,
                      const char *error, struct vm_err *err)
{
	struct wh_audit_entry e = {
	    .outcome = outcome,
	    .status = 101,
	    .tenant = s->tenant,
	    .sub = s->sub,
	    .jti = s->jti,
	    .route = "GET /v1/shell",
	    .path = "/v1/shell",
	    .error = error,
	    .remote_addr = s->remote,
	    .shell = sum,
	};
	return s->audit != NULL ? wh_audit_write(s->audit, &e, true, err) : 0;
}

static void audit_end(struct wh_shell_session *s, json_t *sum, bool ok, const char *error)
{
	struct vm_err err = {0};
	if (audit_line(s, ok ? "ok" : "error", sum, error, &err) != 0)
		log_error("audit", "audit line NOT written for the end of shell %s (sub %s): %s",
		          s->id, s->sub, err.msg);
}

/* The durable line of a "start" message's parameters, before they run
 * (the line before the upgrade could not know them). */
static int audit_params(struct wh_shell_session *s, struct vm_err *err)
{
	json_t *sum = json_pack("{s:s,s:s,s:s,s:s,s:s}", "id", s->id, "event", "parameters",
	                        "command", s->cmdline, "user", s->user, "cwd", s->cwd);
	if (sum == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	int rc = audit_line(s, "started", sum, NULL, err);
	json_decref(sum);
	return rc;
}

/* When the query named no command: the first frame, for at most
 * START_WAIT_MS. A "start" message's parameters go over the query's, are
 * validated as the query's are and audited durably; another first frame, or
 * none in time, keeps the query's. Then the recording's header. 0 to run the
 * shell; -1 with err and *code (the exit message's "error") to end unstarted. */
static int await_start(struct wh_shell_session *s, const char **code, struct vm_err *err)
{
	if (!s->deferred)
		return 0; /* everything was in the query, the header written before the upgrade */
	pthread_mutex_lock(&s->mu);
	struct timespec until = time_deadline(START_WAIT_MS);
	while (s->awaiting && !s->ws_closed && !atomic_load(&s->cancel))
		if (pthread_cond_timedwait(&s->cv, &s->mu, &until) != 0)
			break;
	s->awaiting = false;
	struct wh_shell_params *start = s->start;
	s->start = NULL;
	char bad[sizeof(s->start_err)];
	snprintf(bad, sizeof(bad), "%s", s->start_err);
	bool gone = s->ws_closed || atomic_load(&s->cancel);
	pthread_mutex_unlock(&s->mu);
	int rc = 0;
	if (gone) {
		*code = "closed";
		rc = vm_err_set(err, VM_ERR_INVALID, "the connection ended before the shell started");
	} else if (bad[0] != '\0') {
		*code = "invalid_request";
		rc = vm_err_set(err, VM_ERR_INVALID, "start: %s", bad);
	} else if (start != NULL) {
		wh_shell_params_merge(&s->query, start);
		if (session_setup(s, &s->query, err) != 0) {
			*code = err->code == VM_ERR_NOMEM ? "unavailable" : "invalid_request";
			rc = -1;
		} else if (audit_params(s, err) != 0) {
			*code = "audit_unavailable"; /* fail closed: nothing runs unaudited */
			rc = -1;
		}
	}
	if (start != NULL) {
		wh_shell_params_free(start);
		free(start);
	}
	if (rc == 0 && rec_header(s, err) != 0) {
		*code = "recording_unavailable";
		rc = -1;
	}
	if (rc == 0 && s->query.argc > 0)
		log_info("shell", "session %s: parameters from its start message: user %s, %s", s->id,
		         s->user, s->cmdline);
	return rc;
}

static int run_shell(struct wh_shell_session *s, struct proc_result *res, struct vm_err *err)
{
	struct wh_shells *sh = s->owner;
	struct proc_spec spec = {
	    .path = s->argv[0],
	    .argv = s->argv,
	    .envp = s->envp,
	    .flags = PROC_PTY | PROC_DIE_WITH_PARENT,
	    .cwd = s->cwd,
	    .set_ids = s->set_ids,
	    .uid = s->uid,
	    .gid = s->gid,
	    .deadline_ms = sh->max_ms > 0 ? s->start_mono + (int64_t)sh->max_ms : 0,
	    .grace_ms = GRACE_MS,
	    .cancel = &s->cancel,
	    .on_output = on_output,
	    .ctx = s,
	    .cgroup = sh->cgroup,
	    .pty_cols = s->cols,
	    .pty_rows = s->rows,
	    .on_start = on_start,
	    .stop = should_stop,
	};
	return proc_run(&spec, res, err);
}

static void *session_main(void *arg)
{
	struct wh_shell_session *s = arg;
	struct proc_result res;
	memset(&res, 0, sizeof(res));
	struct vm_err err = {0};
	const char *code = NULL;
	int rc = await_start(s, &code, &err);
	if (rc == 0)
		rc = run_shell(s, &res, &err);
	pthread_mutex_lock(&s->mu);
	const char *why = s->reason;
	if (why == NULL && res.timed_out)
		why = "max duration (shell.max_duration)";
	if (why == NULL && res.canceled)
		why = "closed by the client";
	s->ended = true;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);

	json_t *sum = rc == 0 ? summary(s, &res, why) : summary(s, NULL, err.msg);
	json_t *msg = rc == 0 ? json_deep_copy(sum) : json_pack("{s:s}", "reason", err.msg);
	if (msg != NULL) {
		json_object_set_new(msg, "type", json_string("exit"));
		if (rc != 0)
			json_object_set_new(msg, "error",
			                    json_string(code != NULL ? code
			                                : err.code == VM_ERR_NOTFOUND
			                                    ? "not_found"
			                                    : "pty_unavailable"));
		char *text = json_dumps(msg, JSON_COMPACT);
		if (text != NULL)
			(void)ws_send(s, MG_WEBSOCKET_OPCODE_TEXT, text, strlen(text));
		free(text);
		json_decref(msg);
	}
	static const char normal[2] = {0x03, (char)0xe8}; /* 1000 */
	(void)ws_send(s, MG_WEBSOCKET_OPCODE_CONNECTION_CLOSE, normal, sizeof(normal));
	audit_end(s, sum, rc == 0, rc == 0 ? "" : err.msg);
	log_info("shell", "session %s ended: %s%s%s", s->id, rc != 0 ? err.msg : "",
	         why != NULL ? why : "", rc == 0 && why == NULL ? "the shell exited" : "");
	json_decref(sum);
	proc_result_free(&res);

	/* the worker leaves its read loop on the client's close frame; a client
	 * that sends none is cut off */
	pthread_mutex_lock(&s->mu);
	struct timespec until = time_deadline(CLOSE_WAIT_MS);
	while (!s->ws_closed)
		if (pthread_cond_timedwait(&s->cv, &s->mu, &until) != 0)
			break;
	bool closed = s->ws_closed;
	pthread_mutex_unlock(&s->mu);
	if (!closed)
		(void)shutdown(mg_vma_client_fd(s->conn), SHUT_RDWR);
	return NULL;
}

/* --- the request: limits, then the upgrade ------------------------------------------- */

static bool is_upgrade(const struct wh_req *req)
{
	const char *up = mg_get_header(req->conn, "Upgrade");
	return up != NULL && strcasecmp(up, "websocket") == 0;
}

void wh_api_shell(struct wh_req *req)
{
	struct wh_shells *sh = wh_shells_of(req);
	struct wh_conn *wc = wh_conn_of(req->conn);
	if (!is_upgrade(req)) {
		wh_reply_error(req, 400, "websocket_required",
		               "GET /v1/shell is a WebSocket (Upgrade: websocket)");
		return;
	}
	if (wc == NULL) { /* on_init_connection was out of memory */
		wh_reply_error(req, 503, "unavailable", "out of memory");
		return;
	}
	if (sh == NULL || !sh->enabled || sh->max_sessions == 0) {
		wh_reply_error(req, 403, "shell_disabled", "the shell is disabled (shell.enabled)");
		return;
	}
	struct wh_shell_session *s = calloc(1, sizeof(*s));
	if (s == NULL) {
		wh_reply_error(req, 503, "unavailable", "out of memory");
		return;
	}
	s->owner = sh;
	s->master = -1;
	wh_shell_params_init(&s->query);
	s->rec.fd = -1;
	pthread_mutex_init(&s->mu, NULL);
	pthread_mutex_init(&s->rec.mu, NULL);
	time_cond_init(&s->cv);
	s->conn = req->conn;
	s->audit = wh_audit_of(req);
	snprintf(s->sub, sizeof(s->sub), "%s", req->claims.sub);
	snprintf(s->jti, sizeof(s->jti), "%s", req->claims.jti);
	snprintf(s->tenant, sizeof(s->tenant), "%s", req->claims.tenant);
	snprintf(s->remote, sizeof(s->remote), "%s", req->info->remote_addr);
	s->start_mono = time_mono_ms();
	s->start_wall = time_wall_ms();
	atomic_store(&s->last_input, s->start_mono);
	struct vm_err err = {0};
	if (id_new(s->id, &err) != 0) {
		wh_reply_error(req, 503, "unavailable", "%s", err.msg);
		goto fail;
	}
	if (parse_params(req, s) != 0)
		goto fail;

	pthread_mutex_lock(&sh->mu);
	if (sh->active >= sh->max_sessions) {
		int n = sh->active;
		pthread_mutex_unlock(&sh->mu);
		wh_reply_error_hdr(
		    req, 429, "Retry-After: 5\r\n", "too_many_sessions",
		    "%d shell sessions are open; the limit is %d (shell.max_sessions)", n,
		    sh->max_sessions);
		goto fail;
	}
	/* the slot is held for the session's lifetime (session_unlink gives it back) */
	if (!budget_try_take(sh->budget)) {
		pthread_mutex_unlock(&sh->mu);
		int used, limit;
		budget_usage(sh->budget, &used, &limit);
		wh_reply_error_hdr(req, 429, "Retry-After: 5\r\n", "concurrency_limit",
		                   "%d of %d slots are held by running probes and open shells "
		                   "(limits.max_concurrent)",
		                   used, limit);
		goto fail;
	}
	sh->active++;
	s->next = sh->sessions;
	sh->sessions = s;
	prune_locked(sh);
	pthread_mutex_unlock(&sh->mu);

	if (rec_open(s, &err) != 0 || (!s->awaiting && rec_header(s, &err) != 0)) {
		/* no recording, no session: what is typed must be on record */
		session_unlink(s);
		wh_reply_error(req, 500, "recording_unavailable", "%s", err.msg);
		goto fail;
	}
	wc->shell = s;
	log_info("shell", "session %s for %.200s (tenant %.100s): user %s, %s", s->id, s->sub,
	         s->tenant, s->user, s->cmdline);
	req->upgrade = true;
	req->status = 101;
	/* awaiting: the command may still come in a "start" message, audited then */
	req->shell = json_pack("{s:s,s:s,s:s,s:s,s:b}", "id", s->id, "event", "start", "command",
	                       s->cmdline, "user", s->user, "awaiting_start", s->awaiting);
	return;
fail:
	session_free(s);
}

/* --- the WebSocket handlers (the connection's worker thread) ---------------------------- */

static struct wh_shell_session *session_of(const struct mg_connection *conn)
{
	struct wh_conn *c = wh_conn_of(conn);
	return c != NULL ? c->shell : NULL;
}

static int ws_connect(const struct mg_connection *conn, void *cbdata)
{
	(void)cbdata;
	/* only an upgrade that dispatch authorized and prepared goes on */
	return session_of(conn) != NULL ? 0 : 1;
}

static void ws_ready(struct mg_connection *conn, void *cbdata)
{
	(void)cbdata;
	struct wh_shell_session *s = session_of(conn);
	if (s == NULL)
		return;
	s->conn = conn;
	if (pthread_create(&s->thr, NULL, session_main, s) == 0) {
		s->thr_started = true;
		return;
	}
	static const char msg[] =
	    "{\"type\":\"exit\",\"error\":\"unavailable\",\"reason\":\"cannot start a thread\"}";
	(void)mg_websocket_write(conn, MG_WEBSOCKET_OPCODE_TEXT, msg, sizeof(msg) - 1);
	(void)mg_websocket_write(conn, MG_WEBSOCKET_OPCODE_CONNECTION_CLOSE, "\x03\xf3", 2);
}

/* The master once the shell runs (or -1 when it never will). */
static int wait_master(struct wh_shell_session *s)
{
	pthread_mutex_lock(&s->mu);
	while (s->master < 0 && !s->ended && s->thr_started)
		pthread_cond_wait(&s->cv, &s->mu);
	int fd = s->master;
	pthread_mutex_unlock(&s->mu);
	return fd;
}

/* Input to the terminal; a shell that does not read blocks us (and so the
 * client: TCP backpressure), polled so that an end is noticed. */
static void write_input(struct wh_shell_session *s, int fd, const char *data, size_t len)
{
	/* Counted as received, before the write: the shell may read them, exit
	 * and have its end line written before this thread runs again (the end
	 * line then said bytes_in 0: TestShellRecordingReplaysOutput, under load). */
	atomic_fetch_add(&s->bytes_in, len);
	size_t off = 0;
	while (off < len && !atomic_load(&s->cancel)) {
		ssize_t n = write(fd, data + off, len - off);
		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			struct pollfd p = {fd, POLLOUT, 0};
			(void)poll(&p, 1, 100);
			pthread_mutex_lock(&s->mu);
			bool ended = s->ended;
			pthread_mutex_unlock(&s->mu);
			if (ended)
				return;
			continue;
		}
		return; /* EIO: the terminal is gone */
	}
}

static void control(struct wh_shell_session *s, int fd, const char *data, size_t len)
{
	struct wh_shell_ctl c;
	struct vm_err err = {0};
	if (wh_shell_control_parse(data, len, &c, &err) != 0)
		return; /* invalid messages (and sizes) are ignored */
	switch (c.type) {
	case WH_SHELL_CTL_RESIZE: {
		struct winsize ws = {.ws_row = c.rows, .ws_col = c.cols};
		if (fd >= 0 && ioctl(fd, TIOCSWINSZ, &ws) == 0)
			rec_resize(&s->rec, c.cols, c.rows);
		break;
	}
	case WH_SHELL_CTL_SIGNAL:
		/* to the terminal's foreground job, as the key would */
		if (fd < 0 || ioctl(fd, TIOCSIG, c.signo) != 0)
			if (s->pid > 0)
				(void)kill(-s->pid, c.signo);
		break;
	case WH_SHELL_CTL_CLOSE:
		pthread_mutex_lock(&s->mu);
		if (s->reason == NULL)
			s->reason = "closed by the client";
		pthread_mutex_unlock(&s->mu);
		atomic_store(&s->cancel, true);
		break;
	case WH_SHELL_CTL_START: /* only as the first frame (first_frame) */
	case WH_SHELL_CTL_NONE:
		break;
	}
	wh_shell_ctl_free(&c);
}

/* The first frame of a session whose query named no command, while the
 * session thread waits for it (await_start): a "start" message is handed
 * over (true: consumed); any other frame starts the query's shell at once
 * and is then handled as usual (false). */
static bool first_frame(struct wh_shell_session *s, int op, const char *data, size_t len)
{
	pthread_mutex_lock(&s->mu);
	bool awaiting = s->awaiting;
	pthread_mutex_unlock(&s->mu);
	if (!awaiting)
		return false;
	struct wh_shell_ctl c;
	struct vm_err err = {0};
	bool is_start = false;
	struct wh_shell_params *p = NULL;
	if (op == MG_WEBSOCKET_OPCODE_TEXT) {
		int rc = wh_shell_control_parse(data, len, &c, &err);
		is_start = c.asked == WH_SHELL_CTL_START;
		if (rc == 0 && is_start && (p = malloc(sizeof(*p))) != NULL) {
			*p = c.params; /* moved */
			wh_shell_params_init(&c.params);
		} else if (is_start && rc == 0) {
			vm_err_set(&err, VM_ERR_NOMEM, "out of memory");
		}
		wh_shell_ctl_free(&c);
	}
	/* one step: the session thread sees either no first frame yet or all of it */
	pthread_mutex_lock(&s->mu);
	bool late = !s->awaiting; /* it stopped waiting meanwhile: an ordinary frame */
	if (!late) {
		s->awaiting = false;
		s->start = p;
		p = NULL;
		if (is_start && s->start == NULL)
			snprintf(s->start_err, sizeof(s->start_err), "%s", err.msg);
		pthread_cond_broadcast(&s->cv);
	}
	pthread_mutex_unlock(&s->mu);
	if (p != NULL) {
		wh_shell_params_free(p);
		free(p);
	}
	return is_start && !late;
}

static int ws_data(struct mg_connection *conn, int bits, char *data, size_t len, void *cbdata)
{
	(void)cbdata;
	struct wh_shell_session *s = session_of(conn);
	if (s == NULL)
		return 0;
	int op = bits & 0xf;
	if (op == MG_WEBSOCKET_OPCODE_CONNECTION_CLOSE)
		return 0;
	if (op == MG_WEBSOCKET_OPCODE_PING) {
		(void)mg_websocket_write(conn, MG_WEBSOCKET_OPCODE_PONG, data, len);
		return 1;
	}
	if (op == MG_WEBSOCKET_OPCODE_PONG)
		return 1;
	if (s->deferred && first_frame(s, op, data, len))
		return 1;
	int fd = wait_master(s);
	if (op == MG_WEBSOCKET_OPCODE_TEXT) {
		control(s, fd, data, len);
		return 1;
	}
	if (op == MG_WEBSOCKET_OPCODE_BINARY || op == MG_WEBSOCKET_OPCODE_CONTINUATION) {
		atomic_store(&s->last_input, time_mono_ms());
		if (s->owner->record_input)
			rec_bytes(&s->rec, "i", data, len);
		if (fd >= 0)
			write_input(s, fd, data, len);
	}
	return 1;
}

static void ws_close(const struct mg_connection *conn, void *cbdata)
{
	(void)cbdata;
	struct wh_conn *c = wh_conn_of(conn);
	struct wh_shell_session *s = c != NULL ? c->shell : NULL;
	if (s == NULL)
		return;
	pthread_mutex_lock(&s->mu);
	if (s->reason == NULL && !s->ended)
		s->reason = "connection closed";
	s->ws_closed = true;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	atomic_store(&s->cancel, true);
	if (s->thr_started)
		pthread_join(s->thr, NULL);
	session_unlink(s);
	c->shell = NULL;
	session_free(s);
}

void wh_shells_register(struct mg_context *ctx)
{
	mg_set_websocket_handler(ctx, "/v1/shell$", ws_connect, ws_ready, ws_data, ws_close, NULL);
}

/* A connection closed without the WebSocket handlers (refused before the
 * handshake): its prepared session goes. */
void wh_shells_drop(struct wh_conn *c)
{
	if (c == NULL || c->shell == NULL)
		return;
	struct wh_shell_session *s = c->shell;
	if (!s->thr_started) {
		/* accepted and audited as started, but the shell never ran */
		struct vm_err e = {0};
		if (s->deferred) /* its recording says what the session was */
			(void)rec_header(s, &e);
		json_t *sum = summary(s, NULL, "no WebSocket session (handshake failed)");
		audit_end(s, sum, false, "handshake_failed");
		json_decref(sum);
	}
	ws_close(s->conn, NULL);
}

void wh_shells_stop_all(struct wh_shells *sh, const struct mg_context *only)
{
	if (sh == NULL)
		return;
	pthread_mutex_lock(&sh->mu);
	for (struct wh_shell_session *s = sh->sessions; s != NULL; s = s->next) {
		if (only != NULL && mg_get_context(s->conn) != only)
			continue;
		pthread_mutex_lock(&s->mu);
		if (s->reason == NULL)
			s->reason = only != NULL ? "the tunnel was turned off" : "agent stopping";
		pthread_mutex_unlock(&s->mu);
		atomic_store(&s->cancel, true);
		/* the worker's read loop only looks at civetweb's stop flag between
		 * reads, and a write to a client that does not read waits for
		 * civetweb's timeout: end both now so that mg_stop need not wait */
		(void)shutdown(mg_vma_client_fd(s->conn), SHUT_RDWR);
	}
	pthread_mutex_unlock(&sh->mu);
}

/* --- GET /v1/shell/sessions, GET /v1/shell/sessions/{id}/recording ---------------------- */

static json_t *header_of(int dirfd, const char *name)
{
	int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	char buf[HEADER_MAX];
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	struct stat st;
	bool have = fstat(fd, &st) == 0;
	close(fd);
	if (n <= 0)
		return NULL;
	buf[n] = '\0';
	char *nl = strchr(buf, '\n');
	if (nl != NULL)
		*nl = '\0';
	json_t *h = json_loads(buf, 0, NULL);
	if (!json_is_object(h)) {
		json_decref(h);
		return NULL;
	}
	if (have)
		json_object_set_new(h, "recording_bytes", json_integer((json_int_t)st.st_size));
	return h;
}

void wh_api_shell_list(struct wh_req *req)
{
	struct wh_shells *sh = wh_shells_of(req);
	json_t *arr = json_array();
	DIR *d = sh != NULL ? opendir(sh->dir) : NULL;
	struct dirent *de;
	size_t n = 0;
	while (d != NULL && arr != NULL && (de = readdir(d)) != NULL && n < LIST_MAX) {
		size_t len = strlen(de->d_name);
		if (len != ID_LEN + 5 || strcmp(de->d_name + ID_LEN, ".cast") != 0)
			continue;
		json_t *h = header_of(dirfd(d), de->d_name);
		if (h == NULL)
			continue;
		char id[ID_LEN + 1];
		snprintf(id, sizeof(id), "%.*s", ID_LEN, de->d_name);
		pthread_mutex_lock(&sh->mu);
		bool active = session_active(sh, id);
		pthread_mutex_unlock(&sh->mu);
		json_t *e = json_pack(
		    "{s:s,s:O,s:O,s:O,s:O,s:O,s:O,s:b}", "id", id, "started",
		    json_object_get(h, "timestamp"), "user", json_object_get(h, "user"), "command",
		    json_object_get(h, "command"), "sub", json_object_get(h, "sub"), "tenant",
		    json_object_get(h, "tenant"), "recording_bytes",
		    json_object_get(h, "recording_bytes"), "active", active);
		json_decref(h);
		if (e != NULL && json_array_append_new(arr, e) == 0)
			n++;
	}
	if (d != NULL)
		closedir(d);
	wh_reply_json(req, 200, json_pack("{s:o}", "sessions", arr));
}

void wh_api_shell_recording(struct wh_req *req)
{
	struct wh_shells *sh = wh_shells_of(req);
	const char *id = req->params[0];
	if (sh == NULL || !valid_session_id(id)) {
		wh_reply_error(req, 404, "not_found", "no such session");
		return;
	}
	char path[PATH_MAX + 64];
	snprintf(path, sizeof(path), "%s/%s.cast", sh->dir, id);
	char *data = NULL;
	size_t len = 0;
	struct vm_err err = {0};
	/* the bound and the final marker line */
	if (fs_read_file(path, (size_t)sh->record_max + 256, &data, &len, &err) != 0) {
		if (err.code == VM_ERR_NOTFOUND)
			wh_reply_error(req, 404, "not_found", "no such session");
		else
			wh_reply_error(req, 500, "internal", "%s", err.msg);
		return;
	}
	wh_reply_raw(req, 200, "application/x-asciicast", NULL, data, len);
	free(data);
}
