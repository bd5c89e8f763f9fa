/* cgroup v2 for steps: layout detection (pure v2, hybrid, none), the agent's
 * own subtree (leaf "agent/" + "steps/"), per-step cgroups with memory.max,
 * cpu.max and pids.max, cgroup.kill, and the record of the base in the state
 * dir so a restarted agent kills what a crashed one left running. */
#include "core/cgroup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/codec.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/time.h"

#define WAIT_EMPTY_MS 3000 /* after SIGKILL a cgroup empties in microseconds */
#define PID_LIST_MAX  4096 /* pids read per pass from cgroup.procs */

static const struct {
	unsigned bit;
	const char *name;
} ctl_names[] = {{CG_MEMORY, "memory"}, {CG_CPU, "cpu"}, {CG_PIDS, "pids"}};

const char *cg_mode_name(enum cg_mode m)
{
	return m == CG_LIMIT ? "cgroup-v2" : m == CG_TRACK ? "cgroup-v2 (no controllers)" : "none";
}

static bool exists(const char *dir, const char *name)
{
	char p[PATH_MAX];
	struct stat st;
	return (size_t)snprintf(p, sizeof(p), "%s/%s", dir, name) < sizeof(p) && stat(p, &st) == 0;
}

/* Reads dir/name (small cgroup files) into buf; -1 when it cannot. */
static int read_small(const char *dir, const char *name, char *buf, size_t cap)
{
	char p[PATH_MAX];
	if ((size_t)snprintf(p, sizeof(p), "%s/%s", dir, name) >= sizeof(p))
		return -1;
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t off = 0;
	while (off + 1 < cap) {
		ssize_t n = read(fd, buf + off, cap - 1 - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	buf[off] = '\0';
	close(fd);
	return 0;
}

/* cgroup files take one write each; no O_CREAT: a missing file is an answer. */
static int write_small(const char *dir, const char *name, const char *val)
{
	char p[PATH_MAX];
	if ((size_t)snprintf(p, sizeof(p), "%s/%s", dir, name) >= sizeof(p))
		return -ENAMETOOLONG;
	int fd = open(p, O_WRONLY | O_TRUNC | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	size_t len = strlen(val);
	ssize_t n = write(fd, val, len);
	int e = n == (ssize_t)len ? 0 : n < 0 ? -errno : -EIO;
	close(fd);
	return e;
}

/* The CG_* named in a controllers list ("cpu memory pids", "+memory +pids"). */
static unsigned parse_controllers(const char *s)
{
	unsigned bits = 0;
	while (*s != '\0') {
		s += strspn(s, " \t\n+");
		size_t n = strcspn(s, " \t\n");
		for (size_t i = 0; i < sizeof(ctl_names) / sizeof(ctl_names[0]); i++)
			if (n == strlen(ctl_names[i].name) && strncmp(s, ctl_names[i].name, n) == 0)
				bits |= ctl_names[i].bit;
		s += n;
	}
	return bits;
}

static unsigned controllers_of(const char *dir, const char *file)
{
	char buf[512];
	return read_small(dir, file, buf, sizeof(buf)) == 0 ? parse_controllers(buf) : 0;
}

/* Enables for dir's children the wanted controllers dir itself has. */
static void enable_controllers(const char *dir, unsigned want)
{
	unsigned avail = controllers_of(dir, "cgroup.controllers") & want;
	char line[64] = "";
	size_t o = 0;
	for (size_t i = 0; i < sizeof(ctl_names) / sizeof(ctl_names[0]); i++)
		if (avail & ctl_names[i].bit)
			o = str_appendf(line, sizeof(line), o, "%s+%s", o ? " " : "",
			                ctl_names[i].name);
	if (o == 0 || write_small(dir, "cgroup.subtree_control", line) == 0)
		return;
	/* one refused controller must not cost the others */
	for (size_t i = 0; i < sizeof(ctl_names) / sizeof(ctl_names[0]); i++) {
		char one[16];
		snprintf(one, sizeof(one), "+%s", ctl_names[i].name);
		if (avail & ctl_names[i].bit)
			(void)write_small(dir, "cgroup.subtree_control", one);
	}
}

int cg_detect(const char *root, const char *self_cgroup, char *v2, size_t v2cap, char *own,
              size_t owncap, struct vm_err *err)
{
	if (exists(root, "cgroup.controllers")) {
		if ((size_t)snprintf(v2, v2cap, "%s", root) >= v2cap)
			return vm_err_set(err, VM_ERR_INVALID, "cgroup path too long");
	} else if (exists(root, "unified/cgroup.controllers")) {
		if ((size_t)snprintf(v2, v2cap, "%s/unified", root) >= v2cap)
			return vm_err_set(err, VM_ERR_INVALID, "cgroup path too long");
	} else {
		return vm_err_set(err, VM_ERR_NOTFOUND, "no cgroup v2 hierarchy at %s", root);
	}
	char *text = NULL;
	size_t len = 0;
	if (fs_read_file(self_cgroup, 64 * 1024, &text, &len, err) != 0)
		return -err->code;
	int rc = vm_err_set(err, VM_ERR_NOTFOUND, "%s has no cgroup v2 (0::) entry", self_cgroup);
	for (char *line = text; line != NULL && *line != '\0';) {
		char *nl = strchr(line, '\n');
		if (nl != NULL)
			*nl = '\0';
		if (strncmp(line, "0::/", 4) == 0) {
			const char *p = line + 3;
			if (strstr(p, "/..") != NULL || strlen(p) >= owncap)
				rc = vm_err_set(err, VM_ERR_INVALID, "unusable own cgroup %.128s",
				                p);
			else
				rc = (snprintf(own, owncap, "%s", p), 0);
			break;
		}
		line = nl != NULL ? nl + 1 : NULL;
	}
	free(text);
	return rc;
}

/* The pids in a cgroup (one read pass); returns how many went into pids. */
static int read_pids(const char *dir, pid_t *pids, int max)
{
	char p[PATH_MAX];
	if ((size_t)snprintf(p, sizeof(p), "%s/cgroup.procs", dir) >= sizeof(p))
		return 0;
	FILE *f = fopen(p, "re");
	if (f == NULL)
		return 0;
	int n = 0;
	long v;
	while (n < max && fscanf(f, "%ld", &v) == 1)
		if (v > 0)
			pids[n++] = (pid_t)v;
	fclose(f);
	return n;
}

static void kill_dir(const char *dir)
{
	if (write_small(dir, "cgroup.kill", "1") == 0)
		return;
	/* before Linux 5.14: signal each member until none is left (bounded) */
	static _Thread_local pid_t pids[PID_LIST_MAX];
	for (int pass = 0; pass < 64; pass++) {
		int n = read_pids(dir, pids, PID_LIST_MAX);
		if (n == 0)
			return;
		for (int i = 0; i < n; i++)
			(void)kill(pids[i], SIGKILL);
	}
}

/* Fit for the next step: no process, not frozen, no child cgroup (a root
 * step may have made one). Any read that fails is a no. */
static bool dir_reusable(const char *dir)
{
	char buf[256];
	if (read_small(dir, "cgroup.events", buf, sizeof(buf)) != 0 ||
	    strstr(buf, "populated 0") == NULL || strstr(buf, "frozen 1") != NULL)
		return false;
	if (read_small(dir, "cgroup.stat", buf, sizeof(buf)) != 0)
		return false;
	const char *d = strstr(buf, "nr_descendants ");
	return d != NULL && d[15] == '0' && (d[16] == '\n' || d[16] == '\0');
}

static bool dir_empty(const char *dir)
{
	char buf[256];
	if (read_small(dir, "cgroup.events", buf, sizeof(buf)) == 0) {
		const char *p = strstr(buf, "populated ");
		if (p != NULL)
			return p[10] == '0';
	}
	pid_t one;
	return read_pids(dir, &one, 1) == 0;
}

/* Kills what is in dir and waits until empty (bounded); returns how many
 * processes were there. */
static int drain_dir(const char *dir)
{
	static _Thread_local pid_t pids[PID_LIST_MAX];
	int found = read_pids(dir, pids, PID_LIST_MAX);
	int64_t until = time_mono_ms() + WAIT_EMPTY_MS;
	while (!dir_empty(dir) && time_mono_ms() < until) {
		kill_dir(dir);
		struct timespec ts = {0, 2 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	return found;
}

/* Kills what is in dir, waits until empty (bounded), removes it. */
static int destroy_dir(const char *dir)
{
	int found = drain_dir(dir);
	if (rmdir(dir) != 0 && errno != ENOENT)
		log_warn("cgroup", "cannot remove %s: %s", dir, strerror(errno));
	return found;
}

int cg_kill_leftovers(const char *base)
{
	DIR *d = opendir(base);
	if (d == NULL)
		return 0;
	int killed = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (strncmp(e->d_name, "step-", 5) != 0)
			continue;
		char p[PATH_MAX];
		if ((size_t)snprintf(p, sizeof(p), "%s/%s", base, e->d_name) < sizeof(p))
			killed += destroy_dir(p);
	}
	closedir(d);
	return killed;
}

/* A recorded base must be a cgroup directory below the v2 mount, nothing else:
 * the record is ours (0600 in a root-only dir), but a path is not a promise. */
static bool plausible_base(const char *root, const char *path)
{
	size_t n = strlen(root);
	return strncmp(path, root, n) == 0 && path[n] == '/' && strstr(path, "/..") == NULL;
}

static void cleanup_record(struct cg_tree *t, const char *root, int *killed)
{
	char *text = NULL;
	size_t len = 0;
	struct vm_err err = {0};
	if (fs_read_file(t->record, PATH_MAX, &text, &len, &err) != 0)
		return;
	text[strcspn(text, "\n")] = '\0';
	if (plausible_base(root, text)) {
		int n = cg_kill_leftovers(text);
		if (n > 0)
			log_warn("cgroup",
			         "killed %d process(es) left running by a previous agent in %s", n,
			         text);
		*killed += n;
	}
	free(text);
}

/* The empty step cgroups a dead agent kept for reuse (step-<pid>-<n>, pid
 * gone): removed, so its base can go. A live agent's are left alone; a busy
 * one's rmdir fails (EBUSY). */
static void sweep_dead_pool(const char *base)
{
	DIR *d = opendir(base);
	if (d == NULL)
		return;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		char p[PATH_MAX];
		long pid = strncmp(e->d_name, "step-", 5) == 0 ? strtol(e->d_name + 5, NULL, 10) : 0;
		if (pid <= 0 || (kill((pid_t)pid, 0) == 0 || errno != ESRCH) ||
		    (size_t)snprintf(p, sizeof(p), "%s/%s", base, e->d_name) >= sizeof(p))
			continue;
		(void)rmdir(p);
	}
	closedir(d);
}

/* Bases of agents that died with kill -9 and whose state dir is gone (test
 * runs, reinstalls): empty ones are removed. A live idle agent's base may go
 * too; cg_step_new makes it again. */
static void sweep_stale_bases(const char *v2, const char *mine)
{
	DIR *d = opendir(v2);
	if (d == NULL)
		return;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		char p[PATH_MAX];
		if (strncmp(e->d_name, "vm-agent-", 9) != 0 ||
		    (size_t)snprintf(p, sizeof(p), "%s/%s", v2, e->d_name) >= sizeof(p) ||
		    strcmp(p, mine) == 0)
			continue;
		sweep_dead_pool(p);
		(void)rmdir(p); /* EBUSY while it holds steps: then it is not stale */
	}
	closedir(d);
}

static void describe_missing(struct cg_tree *t, const char *layout)
{
	char miss[64] = "";
	size_t o = 0;
	for (size_t i = 0; i < sizeof(ctl_names) / sizeof(ctl_names[0]); i++)
		if (!(t->controllers & ctl_names[i].bit))
			o = str_appendf(miss, sizeof(miss), o, "%s%s", o ? ", " : "",
			                ctl_names[i].name);
	if (o > 0)
		snprintf(t->why, sizeof(t->why), "no %s controller for %.80s (%s)", miss, t->base,
		         layout);
}

void cg_open(struct cg_tree *t, const char *root, const char *self_cgroup, const char *state_dir,
             int *killed)
{
	memset(t, 0, sizeof(*t));
	pthread_mutex_init(&t->pool_lock, NULL);
	*killed = 0;
	snprintf(t->record, sizeof(t->record), "%.*s/cgroup.base", PATH_MAX - 16, state_dir);
	cleanup_record(t, root, killed);
	char v2[PATH_MAX], own[PATH_MAX], dele[PATH_MAX];
	struct vm_err err = {0};
	if (cg_detect(root, self_cgroup, v2, sizeof(v2), own, sizeof(own), &err) != 0) {
		snprintf(t->why, sizeof(t->why), "%s", err.msg);
		return;
	}
	bool hybrid = strcmp(v2, root) != 0;
	const unsigned want = CG_MEMORY | CG_CPU | CG_PIDS;
	if (strcmp(own, "/") == 0) {
		/* not delegated (no systemd, or hybrid): a base of our own, named for
		 * the state dir so several agents on one host never meet */
		uint8_t h[SHA256_LEN];
		char hex[17];
		sha256_buf(state_dir, strlen(state_dir), h);
		hex_encode(h, 8, hex);
		enable_controllers(v2, want);
		snprintf(t->base, sizeof(t->base), "%.*s/vm-agent-%s", PATH_MAX - 32, v2, hex);
		sweep_stale_bases(v2, t->base);
	} else {
		const char *leaf = strrchr(own, '/');
		snprintf(dele, sizeof(dele), "%.*s%.*s", PATH_MAX / 2, v2, PATH_MAX / 2 - 1, own);
		if (strcmp(leaf, "/agent") == 0) {
			dele[strlen(dele) - 6] = '\0'; /* restarted inside our own leaf */
		} else {
			/* "no internal processes": controllers for steps/ only once the
			 * agent itself has moved out of the delegated cgroup */
			char a[PATH_MAX];
			snprintf(a, sizeof(a), "%.*s/agent", PATH_MAX - 8, dele);
			if ((mkdir(a, 0755) != 0 && errno != EEXIST) ||
			    write_small(a, "cgroup.procs", "0") != 0)
				log_warn("cgroup", "cannot move the agent into %s: %s", a,
				         strerror(errno));
		}
		enable_controllers(dele, want);
		snprintf(t->base, sizeof(t->base), "%.*s/steps", PATH_MAX - 8, dele);
	}
	if (mkdir(t->base, 0755) != 0 && errno != EEXIST) {
		snprintf(t->why, sizeof(t->why), "cannot create %.160s: %s", t->base,
		         strerror(errno));
		t->base[0] = '\0';
		return;
	}
	(void)cg_kill_leftovers(t->base); /* same base, no record (crash before it was written) */
	enable_controllers(t->base, want);
	t->controllers = controllers_of(t->base, "cgroup.subtree_control") & want;
	t->mode = t->controllers != 0 ? CG_LIMIT : CG_TRACK;
	describe_missing(t, hybrid ? "hybrid layout: the controllers are bound to cgroup v1"
	                           : "not delegated: set Delegate=yes on the service");
	if (fs_write_atomic(t->record, t->base, strlen(t->base), 0600, &err) != 0)
		log_warn("cgroup", "cannot record %s: %s", t->base, err.msg);
}

void cg_close(struct cg_tree *t)
{
	if (t == NULL || t->base[0] == '\0')
		return;
	pthread_mutex_lock(&t->pool_lock);
	for (int i = 0; i < t->pool_n; i++) {
		char p[PATH_MAX];
		close(t->pool[i].procs_fd);
		if ((size_t)snprintf(p, sizeof(p), "%s/%s", t->base, t->pool[i].name) < sizeof(p) &&
		    rmdir(p) != 0 && errno != ENOENT)
			log_warn("cgroup", "cannot remove %s: %s", p, strerror(errno));
	}
	t->pool_n = 0;
	pthread_mutex_unlock(&t->pool_lock);
	(void)cg_kill_leftovers(t->base);
	/* the delegated steps/ stays (it is part of our subtree); our own base goes */
	if (strstr(t->base, "/vm-agent-") != NULL && rmdir(t->base) != 0 && errno != ENOENT)
		log_warn("cgroup", "cannot remove %s: %s", t->base, strerror(errno));
	(void)unlink(t->record);
	t->base[0] = '\0';
	t->mode = CG_NONE;
}

/* reset: a reused cgroup, every controller's file is written (lim's value or
 * "max") and *failed says whether any write failed. */
static unsigned write_limits(const char *dir, unsigned controllers, const struct cg_limits *lim,
                             bool reset, bool *failed, char *note, size_t cap)
{
	struct {
		unsigned bit;
		const char *file, *key;
		uint64_t v;
	} rows[] = {
	    {CG_MEMORY, "memory.max", "memory_max", lim->memory_max},
	    {CG_CPU, "cpu.max", "cpu_max", lim->cpu_max},
	    {CG_PIDS, "pids.max", "pids_max", lim->pids_max},
	};
	unsigned applied = 0;
	size_t o = 0;
	note[0] = '\0';
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		if (rows[i].v == 0) {
			if (reset && (controllers & rows[i].bit) &&
			    write_small(dir, rows[i].file,
			                rows[i].bit == CG_CPU ? "max 100000" : "max") != 0)
				*failed = true;
			continue;
		}
		char val[48];
		if (rows[i].bit == CG_CPU)
			snprintf(val, sizeof(val), "%llu 100000",
			         (unsigned long long)rows[i].v * 1000);
		else
			snprintf(val, sizeof(val), "%llu", (unsigned long long)rows[i].v);
		int e = (controllers & rows[i].bit) ? write_small(dir, rows[i].file, val) : 1;
		if (e == 0) {
			applied |= rows[i].bit;
			continue;
		}
		if (e < 0)
			*failed = true;
		/* "memory_max, pids_max (Invalid argument)": a reason only for a failed write */
		o = str_appendf(note, cap, o, "%s%s%s%s%s", o ? ", " : "", rows[i].key,
		                e > 0 ? "" : " (", e > 0 ? "" : strerror(-e), e > 0 ? "" : ")");
	}
	if (o > 0)
		(void)str_appendf(note, cap, o, " not applied");
	return applied;
}

unsigned cg_write_limits(const char *dir, unsigned controllers, const struct cg_limits *lim,
                         char *note, size_t cap)
{
	bool failed = false;
	return write_limits(dir, controllers, lim, false, &failed, note, cap);
}

/* A pooled cgroup for s, checked empty again and its limits rewritten; false
 * when the pool is empty (then s is untouched) or the one taken is in doubt
 * (then it is removed). */
static bool pool_take(struct cg_tree *t, const struct cg_limits *lim, struct cg_step *s)
{
	struct cg_pooled c;
	pthread_mutex_lock(&t->pool_lock);
	bool got = t->pool_n > 0;
	if (got)
		c = t->pool[--t->pool_n];
	pthread_mutex_unlock(&t->pool_lock);
	if (!got)
		return false;
	snprintf(s->path, sizeof(s->path), "%.*s/%s", PATH_MAX - 64, t->base, c.name);
	bool failed = false;
	if (dir_reusable(s->path)) {
		s->applied = write_limits(s->path, t->controllers, lim, true, &failed, s->note,
		                          sizeof(s->note));
		if (!failed) {
			s->procs_fd = c.procs_fd;
			return true;
		}
	}
	close(c.procs_fd);
	(void)destroy_dir(s->path);
	s->path[0] = '\0';
	s->applied = 0;
	s->note[0] = '\0';
	return false;
}

/* Gives s's cgroup back to the pool when it is fit for another step. */
static bool pool_put(struct cg_step *s)
{
	struct cg_tree *t = s->tree;
	const char *name = strrchr(s->path, '/');
	size_t blen = strlen(t->base);
	if (s->procs_fd < 0 || name == NULL || (size_t)(name - s->path) != blen ||
	    strncmp(s->path, t->base, blen) != 0 || strlen(name + 1) >= sizeof(t->pool[0].name) ||
	    !dir_reusable(s->path))
		return false;
	pthread_mutex_lock(&t->pool_lock);
	bool room = t->pool_n < CG_POOL_MAX && t->base[0] != '\0';
	if (room) {
		struct cg_pooled *c = &t->pool[t->pool_n++];
		snprintf(c->name, sizeof(c->name), "%s", name + 1);
		c->procs_fd = s->procs_fd;
	}
	pthread_mutex_unlock(&t->pool_lock);
	return room;
}

int cg_step_new(struct cg_tree *t, const struct cg_limits *lim, struct cg_step *s,
                struct vm_err *err)
{
	memset(s, 0, sizeof(*s));
	s->procs_fd = -1;
	if (t == NULL || t->mode == CG_NONE)
		return vm_err_set(err, VM_ERR_NOTFOUND, "no cgroup tree");
	s->tree = t;
	if (pool_take(t, lim, s))
		goto noted;
	for (int tries = 0;; tries++) {
		unsigned n = atomic_fetch_add(&t->seq, 1);
		snprintf(s->path, sizeof(s->path), "%.*s/step-%ld-%u", PATH_MAX - 40, t->base,
		         (long)getpid(), n);
		if (mkdir(s->path, 0755) == 0)
			break;
		if (errno == ENOENT && tries < 8 && mkdir(t->base, 0755) == 0) {
			/* removed by another agent's sweep (see sweep_stale_bases) */
			enable_controllers(t->base, t->controllers);
			continue;
		}
		if (errno != EEXIST || tries >= 8) {
			int e = errno;
			s->path[0] = '\0';
			return vm_err_errno(err, VM_ERR_IO, e, "create step cgroup in %s", t->base);
		}
	}
	s->applied = cg_write_limits(s->path, t->controllers, lim, s->note, sizeof(s->note));
	char p[PATH_MAX + 16];
	snprintf(p, sizeof(p), "%s/cgroup.procs", s->path);
	s->procs_fd = open(p, O_WRONLY | O_CLOEXEC);
	if (s->procs_fd < 0) {
		int e = errno;
		(void)rmdir(s->path);
		s->path[0] = '\0';
		return vm_err_errno(err, VM_ERR_IO, e, "open %s", p);
	}
noted:
	if (s->note[0] != '\0' && t->why[0] != '\0') {
		(void)str_appendf(s->note, sizeof(s->note), strlen(s->note), ": %s", t->why);
	}
	return 0;
}

void cg_step_kill(const struct cg_step *s)
{
	if (s->path[0] != '\0')
		kill_dir(s->path);
}

void cg_step_signal(const struct cg_step *s, int sig)
{
	static _Thread_local pid_t pids[PID_LIST_MAX];
	int n = s->path[0] != '\0' ? read_pids(s->path, pids, PID_LIST_MAX) : 0;
	for (int i = 0; i < n; i++)
		(void)kill(pids[i], sig);
}

bool cg_step_empty(const struct cg_step *s)
{
	return s->path[0] == '\0' || dir_empty(s->path);
}

void cg_step_free(struct cg_step *s)
{
	if (s->path[0] != '\0') {
		(void)drain_dir(s->path);
		if (s->tree != NULL && pool_put(s)) {
			s->procs_fd = -1; /* the pool's now */
			s->path[0] = '\0';
			return;
		}
	}
	if (s->procs_fd >= 0)
		close(s->procs_fd);
	s->procs_fd = -1;
	if (s->path[0] != '\0' && rmdir(s->path) != 0 && errno != ENOENT)
		log_warn("cgroup", "cannot remove %s: %s", s->path, strerror(errno));
	s->path[0] = '\0';
}

int cg_set_subreaper(void)
{
	return prctl(PR_SET_CHILD_SUBREAPER, 1UL, 0UL, 0UL, 0UL) == 0 ? 0 : -errno;
}

/* --- async-signal-safe /proc walk for the subreaper shim ------------------------------ */

struct dirent64_raw {
	uint64_t ino;
	int64_t off;
	unsigned short reclen;
	unsigned char type;
	char name[];
};

static long parse_pid(const char *s)
{
	long v = 0;
	if (*s == '\0')
		return -1;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9' || v > 100000000)
			return -1;
		v = v * 10 + (*s - '0');
	}
	return v;
}

/* The ppid field of /proc/<name>/stat (after the last ')'), -1 on error. */
static long stat_ppid(const char *name)
{
	char p[64] = "/proc/";
	size_t n = strlen(name);
	if (n > 20)
		return -1;
	memcpy(p + 6, name, n);
	memcpy(p + 6 + n, "/stat", 6);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	char buf[512];
	ssize_t r = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (r <= 0)
		return -1;
	buf[r] = '\0';
	char *q = strrchr(buf, ')');
	if (q == NULL || q[1] != ' ' || q[2] == '\0' || q[3] != ' ')
		return -1;
	long v = 0;
	for (q += 4; *q >= '0' && *q <= '9'; q++)
		v = v * 10 + (*q - '0');
	return v;
}

int cg_kill_own_children(void)
{
	int fd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	long self = (long)getpid();
	int count = 0;
	char buf[4096];
	for (;;) {
		long n = syscall(SYS_getdents64, fd, buf, sizeof(buf));
		if (n <= 0)
			break;
		for (long off = 0; off < n;) {
			struct dirent64_raw *d = (struct dirent64_raw *)(void *)(buf + off);
			off += d->reclen;
			long pid = parse_pid(d->name);
			if (pid > 0 && pid != self && stat_ppid(d->name) == self &&
			    kill((pid_t)pid, SIGKILL) == 0)
				count++;
		}
	}
	close(fd);
	return count;
}
