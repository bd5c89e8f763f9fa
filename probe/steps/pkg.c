/* Step "pkg.ensure": packages present, absent or at the latest version,
 * through apt (apt-get and dpkg-query), dnf/yum or zypper (with rpm -q), by
 * argv only and never asking. One flow for all of them, the differences in
 * the manager table below: the installed versions are queried first and
 * names already as wanted are left alone; what would change is computed
 * before anything changes (apt-get -s; the repositories' candidate versions
 * for the rpm managers): check mode reports exactly that, a real run applies
 * it and queries again. Waits (with progress events) while another process
 * holds the package database; refreshes apt's lists when older than
 * host.apt_lists_max_age. apk is detected and refused as unsupported. Also
 * the parsers of the tools' output. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/fs.h"
#include "core/proc.h"
#include "core/time.h"
#include "health/health.h"
#include "probe/steps/steps.h"

#define APT_LISTS_DIR     "/var/lib/apt/lists"
#define LISTS_MAX_AGE_MS  (24LL * 3600 * 1000)
#define LOCK_EVENT_MS     1000
#define STATUS_EVENT_MS   500
#define DEPS_MAX          64 /* other packages apt pulls in or removes, reported */

enum pkg_state { PKG_PRESENT, PKG_ABSENT, PKG_LATEST };

struct pkg_args {
	const char *names[PKG_MAX];
	int n;
	enum pkg_state state;
	const char *version; /* only with one name and state present */
	const char *manager; /* NULL = detect */
};

/* --- parsers ------------------------------------------------------------------- */

/* Copies [s, s+n) into a cap-byte field; false when it does not fit. */
static bool field(char *dst, size_t cap, const char *s, size_t n)
{
	if (n >= cap)
		return false;
	memcpy(dst, s, n);
	dst[n] = '\0';
	return true;
}

int pkg_parse_dpkg_query(const char *data, size_t len, struct pkg_info *out, int max)
{
	int count = 0;
	size_t i = 0, ll;
	const char *line;
	while ((line = host_next_line(data, len, &i, &ll)) != NULL) {
		if (ll == 0)
			continue;
		const char *t1 = memchr(line, '\t', ll);
		const char *t2 = t1 != NULL ? memchr(t1 + 1, '\t', ll - (size_t)(t1 + 1 - line)) : NULL;
		if (t1 == NULL || t2 == NULL || t1 == line)
			return -1;
		struct pkg_info p = {0};
		size_t sl = (size_t)(t2 - t1 - 1);
		/* db:Status-Abbrev: want, status and error flags ("ii ", "rc ", "un ") */
		if (!field(p.name, sizeof(p.name), line, (size_t)(t1 - line)) || sl < 2 || sl > 3 ||
		    !field(p.version, sizeof(p.version), t2 + 1, ll - (size_t)(t2 + 1 - line)))
			return -1;
		char st = t1[2];
		p.installed = st == 'i' || st == 'W' || st == 't';
		/* one name can appear per architecture: an installed one wins */
		int k = 0;
		while (k < count && k < max && strcmp(out[k].name, p.name) != 0)
			k++;
		if (k < count && k < max) {
			if (p.installed && !out[k].installed)
				out[k] = p;
			continue;
		}
		if (count < max)
			out[count] = p;
		count++;
	}
	return count < max ? count : max;
}

/* Appends p unless its name is already there (the first entry of a name
 * wins); *count also counts what did not fit in max. */
static void add_first(struct pkg_info *out, int max, int *count, const struct pkg_info *p)
{
	for (int k = 0; k < *count && k < max; k++)
		if (strcmp(out[k].name, p->name) == 0)
			return;
	if (*count < max)
		out[*count] = *p;
	(*count)++;
}

int pkg_parse_rpm_query(const char *data, size_t len, struct pkg_info *out, int max)
{
	static const char nip[] = "package ", nis[] = " is not installed";
	int count = 0;
	size_t i = 0, ll;
	const char *line;
	while ((line = host_next_line(data, len, &i, &ll)) != NULL) {
		if (ll == 0)
			continue;
		struct pkg_info p = {0};
		const char *f[4];
		size_t fl[4];
		int nf = 0;
		for (size_t from = 0, c = 0; c <= ll; c++) {
			if (c < ll && line[c] != '\t')
				continue;
			if (nf == 4)
				return -1;
			f[nf] = line + from;
			fl[nf++] = c - from;
			from = c + 1;
		}
		if (nf == 1) {
			/* rpm -q's line for a name it does not have (LC_ALL=C) */
			size_t pl = sizeof(nip) - 1, sl = sizeof(nis) - 1;
			if (ll <= pl + sl || memcmp(line, nip, pl) != 0 ||
			    memcmp(line + ll - sl, nis, sl) != 0 ||
			    memchr(line + pl, ' ', ll - pl - sl) != NULL ||
			    !field(p.name, sizeof(p.name), line + pl, ll - pl - sl))
				return -1;
		} else {
			if (nf != 4 || fl[0] == 0 || fl[1] == 0 || fl[2] < 3 || fl[3] == 0 ||
			    memchr(f[2], '-', fl[2]) == NULL ||
			    !field(p.name, sizeof(p.name), f[0], fl[0]))
				return -1;
			bool none = fl[1] == 6 && memcmp(f[1], "(none)", 6) == 0;
			for (size_t c = 0; !none && c < fl[1]; c++)
				if (f[1][c] < '0' || f[1][c] > '9' || fl[1] > 9)
					return -1;
			none = none || (fl[1] == 1 && f[1][0] == '0');
			size_t el = none ? 0 : fl[1] + 1;
			if (el + fl[2] >= sizeof(p.version))
				return -1;
			if (!none) {
				memcpy(p.version, f[1], fl[1]);
				p.version[fl[1]] = ':';
			}
			memcpy(p.version + el, f[2], fl[2]);
			p.version[el + fl[2]] = '\0';
			p.installed = true;
		}
		add_first(out, max, &count, &p);
	}
	return count < max ? count : max;
}

/* "Key<spaces>: value" at line: the value, or NULL when the line is not key's. */
static const char *info_value(const char *line, size_t ll, const char *key, size_t *vl)
{
	size_t kl = strlen(key), c = kl;
	if (ll <= kl || memcmp(line, key, kl) != 0 || line[kl] != ' ')
		return NULL;
	while (c < ll && line[c] == ' ')
		c++;
	if (c + 1 >= ll || line[c] != ':' || line[c + 1] != ' ')
		return NULL;
	*vl = ll - c - 2;
	return line + c + 2;
}

int pkg_parse_zypper_info(const char *data, size_t len, struct pkg_info *out, int max)
{
	int count = 0;
	bool named = false;
	struct pkg_info p = {0};
	size_t i = 0, ll, vl;
	const char *line, *v;
	while ((line = host_next_line(data, len, &i, &ll)) != NULL) {
		if ((v = info_value(line, ll, "Name", &vl)) != NULL) {
			memset(&p, 0, sizeof(p));
			if (vl == 0 || memchr(v, ' ', vl) != NULL || !field(p.name, sizeof(p.name), v, vl))
				return -1;
			named = true;
		} else if ((v = info_value(line, ll, "Version", &vl)) != NULL) {
			if (!named || vl == 0 || memchr(v, ' ', vl) != NULL ||
			    !field(p.version, sizeof(p.version), v, vl))
				return -1;
			named = false;
			p.installed = true;
			add_first(out, max, &count, &p);
		}
	}
	return count < max ? count : max;
}

static bool number(const char *s, size_t n, double *out)
{
	if (n == 0 || n > 24)
		return false;
	char tmp[32];
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	char *end;
	double v = strtod(tmp, &end);
	if (*end != '\0' || !(v >= 0.0 && v <= 100.0) || tmp[0] == '-' || tmp[0] == '+' ||
	    tmp[0] == ' ')
		return false;
	*out = v;
	return true;
}

int apt_status_parse(const char *line, size_t len, struct apt_status *out)
{
	static const struct {
		const char *prefix;
		enum apt_status_kind kind;
	} kinds[] = {{"dlstatus:", APT_DLSTATUS},
	             {"pmstatus:", APT_PMSTATUS},
	             {"pmerror:", APT_PMERROR},
	             {"pmconffile:", APT_PMCONFFILE}};
	memset(out, 0, sizeof(*out));
	while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	size_t p = 0;
	for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
		size_t pl = strlen(kinds[k].prefix);
		if (len >= pl && memcmp(line, kinds[k].prefix, pl) == 0) {
			out->kind = kinds[k].kind;
			p = pl;
			break;
		}
	}
	if (out->kind == 0)
		return -1;
	/* the package (or download id) runs to the first ':' that is followed by
	 * a number and another ':' (a package name may itself hold ':arch') */
	for (size_t c = p; c < len; c++) {
		if (line[c] != ':' || c == p)
			continue;
		const char *num = line + c + 1;
		const char *end = memchr(num, ':', len - (c + 1));
		if (end == NULL)
			return -1;
		if (!number(num, (size_t)(end - num), &out->percent))
			continue;
		if (out->kind != APT_DLSTATUS &&
		    !field(out->pkg, sizeof(out->pkg), line + p, c - p))
			return -1;
		size_t ml = len - (size_t)(end + 1 - line);
		if (ml >= sizeof(out->msg))
			ml = sizeof(out->msg) - 1;
		memcpy(out->msg, end + 1, ml);
		out->msg[ml] = '\0';
		return 0;
	}
	return -1;
}

/* "[x]" at *s: its content into dst; *s moves past it and one space. */
static bool bracket(const char **s, const char *end, char open, char close, char *dst, size_t cap)
{
	if (*s >= end || **s != open)
		return true;
	const char *c = memchr(*s, close, (size_t)(end - *s));
	if (c == NULL)
		return false;
	const char *v = *s + 1;
	/* "(NEW origin [arch])": the version is the first word */
	const char *sp = memchr(v, ' ', (size_t)(c - v));
	if (!field(dst, cap, v, (size_t)((sp != NULL ? sp : c) - v)))
		return false;
	*s = c + 1;
	while (*s < end && **s == ' ')
		(*s)++;
	return true;
}

int apt_parse_sim(const char *data, size_t len, struct apt_sim *out, int max)
{
	int count = 0;
	size_t i = 0, ll;
	const char *line;
	while ((line = host_next_line(data, len, &i, &ll)) != NULL) {
		char action;
		if (ll > 5 && memcmp(line, "Inst ", 5) == 0)
			action = 'i';
		else if (ll > 5 && (memcmp(line, "Remv ", 5) == 0 || memcmp(line, "Purg ", 5) == 0))
			action = 'r';
		else
			continue;
		const char *s = line + 5, *end = line + ll;
		const char *sp = memchr(s, ' ', (size_t)(end - s));
		const char *ne = sp != NULL ? sp : end;
		struct apt_sim a = {.action = action};
		if (ne == s || !field(a.name, sizeof(a.name), s, (size_t)(ne - s)))
			return -1;
		s = ne;
		while (s < end && *s == ' ')
			s++;
		if (!bracket(&s, end, '[', ']', a.old_version, sizeof(a.old_version)) ||
		    !bracket(&s, end, '(', ')', a.new_version, sizeof(a.new_version)))
			return -1;
		if (action == 'i' && a.old_version[0] != '\0')
			a.action = 'u';
		if (count < max)
			out[count] = a;
		count++;
	}
	return count;
}

/* --- parse ---------------------------------------------------------------------- */

static void args_free(void *p)
{
	free(p);
}

int probe_pkg_parse(STEP_PARSE_ARGS)
{
	static const char *const known[] = {"names", "state", "version", "manager", NULL};
	static const char *const managers[] = {"apt", "dnf", "yum", "zypper", "apk", NULL};
	if (host_parse_common(obj, st, known, path, epath, ecap, err) != 0)
		return -1;
	struct pkg_args *a = calloc(1, sizeof(*a));
	if (a == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	st->ext = a;
	st->ext_free = args_free;
	const char *state = NULL;
	if (probe_field_str(obj, "state", false, 16, &state, path, epath, ecap, err) != 0 ||
	    probe_field_str(obj, "version", false, PKG_FIELD_MAX - 1, &a->version, path, epath, ecap,
	                    err) != 0 ||
	    probe_field_str(obj, "manager", false, 16, &a->manager, path, epath, ecap, err) != 0)
		return -1;
	if (a->manager != NULL) {
		const char *const *m = managers;
		while (*m != NULL && strcmp(*m, a->manager) != 0)
			m++;
		if (*m == NULL)
			return host_bad_field(path, "manager", epath, ecap, err,
			                      "one of apt, dnf, yum, zypper, apk");
	}
	a->state = PKG_PRESENT;
	if (state != NULL && strcmp(state, "absent") == 0)
		a->state = PKG_ABSENT;
	else if (state != NULL && strcmp(state, "latest") == 0)
		a->state = PKG_LATEST;
	else if (state != NULL && strcmp(state, "present") != 0)
		return host_bad_field(path, "state", epath, ecap, err,
		                      "one of present, absent, latest");
	json_t *names = json_object_get(obj, "names");
	if (!json_is_array(names) || json_array_size(names) == 0 ||
	    json_array_size(names) > PKG_MAX)
		return host_bad_field(path, "names", epath, ecap, err,
		                      "a list of 1 to 64 package names");
	size_t i;
	json_t *v;
	json_array_foreach(names, i, v)
	{
		char f[32];
		snprintf(f, sizeof(f), "names[%zu]", i);
		const char *s = json_string_value(v);
		if (s == NULL || strlen(s) != json_string_length(v) ||
		    !host_valid_pkg_name(a->manager, s))
			return host_bad_field(path, f, epath, ecap, err,
			                      "not a valid package name (Debian policy: lower case "
			                      "letters, digits, '+', '-', '.'; at least 2 characters)");
		for (int k = 0; k < a->n; k++)
			if (strcmp(a->names[k], s) == 0)
				return host_bad_field(path, f, epath, ecap, err, "listed twice");
		a->names[a->n++] = s;
	}
	if (a->version != NULL) {
		if (!host_valid_pkg_version(a->version))
			return host_bad_field(path, "version", epath, ecap, err,
			                      "not a valid version ([epoch:]upstream[-revision])");
		if (a->n != 1 || a->state != PKG_PRESENT)
			return host_bad_field(path, "version", epath, ecap, err,
			                      "only with one name and state present");
	}
	return 0;
}

/* Each package (requested: in packages and changes; a dependency once) is
 * under 1 KiB of JSON: names and versions are bounded, the message is 1 KiB. */
uint64_t probe_pkg_bound(const struct probe_step_req *st, uint64_t output_cap)
{
	(void)output_cap;
	const struct pkg_args *a = st->ext;
	return (uint64_t)((a != NULL ? a->n : PKG_MAX) * 2 + DEPS_MAX) * 1024 + PROBE_STEP_OVERHEAD;
}

/* --- run ------------------------------------------------------------------------ */

static const char *const apt_env[] = {"DEBIAN_FRONTEND=noninteractive",
                                      "APT_LISTCHANGES_FRONTEND=none", NULL};

/* A package database lock: an fcntl lock on the file (dpkg, apt, rpm), or a
 * pid file that is held while the pid in it is alive (dnf, zypper). */
struct pkg_lock {
	const char *path;
	bool pidfile;
};

#define RPM_LOCKS {"/var/lib/rpm/.rpm.lock", false}, {"/usr/lib/sysimage/rpm/.rpm.lock", false}

static const struct pkg_lock apt_locks[] = {{"/var/lib/dpkg/lock-frontend", false},
                                            {"/var/lib/dpkg/lock", false},
                                            {"/var/lib/apt/lists/lock", false},
                                            {"/var/cache/apt/archives/lock", false},
                                            {NULL, false}};
static const struct pkg_lock dnf_locks[] = {RPM_LOCKS,
                                            {"/var/lib/dnf/rpmdb_lock.pid", true},
                                            {"/var/cache/dnf/metadata_lock.pid", true},
                                            {"/var/cache/dnf/download_lock.pid", true},
                                            {NULL, false}};
static const struct pkg_lock zypp_locks[] = {RPM_LOCKS, {"/run/zypp.pid", true}, {NULL, false}};

static const char *const apt_lock_msgs[] = {"Could not get lock",
                                            "Unable to acquire the dpkg frontend lock",
                                            "Unable to lock", NULL};

/* What differs between the managers; everything else is one flow. */
struct pkg_mgr {
	const char *name, *tool;
	const char *const *flags; /* after the tool: never ask */
	const char *install, *upgrade, *remove;
	const char *downgrade; /* lets a pinned version be older than the installed one */
	char pin_sep;          /* NAME<sep>VERSION */
	const char *const *env;
	const struct pkg_lock *locks;
	int lock_exit;                   /* the tool's exit code when the database was locked… */
	const char *const *lock_msgs;    /* …with one of these on stderr (NULL: the code says it) */
	const char *const *candidates;   /* argv (names follow) printing the repositories' */
	int (*parse_candidates)(const char *, size_t, struct pkg_info *, int); /* best versions */
	const char *failed;              /* the error code of the tool failing */
};

#define RPM_QF "%{NAME}\t%{EPOCH}\t%{VERSION}-%{RELEASE}\t%{ARCH}\n"

static const char *const dnf_flags[] = {"-y", "--setopt=exit_on_lock=True", NULL};
static const char *const dnf_cand[] = {"dnf", "-q", "--setopt=exit_on_lock=True", "repoquery",
                                       "--latest-limit=1", "--qf", RPM_QF, NULL};
static const char *const yum_cand[] = {"yum", "-q", "--setopt=exit_on_lock=True", "repoquery",
                                       "--latest-limit=1", "--qf", RPM_QF, NULL};
static const char *const zypp_flags[] = {"--non-interactive", "--no-color", NULL};
static const char *const zypp_cand[] = {"zypper", "--non-interactive", "--no-color", "info", NULL};
static const char *const apt_flags[] = {"-q", "-y", "-o", "Dpkg::Options::=--force-confdef", "-o",
                                        "Dpkg::Options::=--force-confold", NULL};

/* dnf exits 200 when it finds another dnf holding its lock (exit_on_lock),
 * zypper 7 (ZYPPER_EXIT_ZYPP_LOCKED), apt-get 100 with a lock message. yum
 * on a current system is dnf and is driven the same way. */
static const struct pkg_mgr managers[] = {
    {"apt", "apt-get", apt_flags, "install", "install", "remove", "--allow-downgrades", '=',
     apt_env, apt_locks, 100, apt_lock_msgs, NULL, NULL, "apt_failed"},
    {"dnf", "dnf", dnf_flags, "install", "upgrade", "remove", NULL, '-', NULL, dnf_locks, 200,
     NULL, dnf_cand, pkg_parse_rpm_query, "dnf_failed"},
    {"yum", "yum", dnf_flags, "install", "upgrade", "remove", NULL, '-', NULL, dnf_locks, 200,
     NULL, yum_cand, pkg_parse_rpm_query, "dnf_failed"},
    {"zypper", "zypper", zypp_flags, "install", "update", "remove", "--oldpackage", '=', NULL,
     zypp_locks, 7, NULL, zypp_cand, pkg_parse_zypper_info, "zypper_failed"},
};

static const struct pkg_mgr *find_manager(const char *name)
{
	for (size_t i = 0; i < sizeof(managers) / sizeof(managers[0]); i++)
		if (strcmp(managers[i].name, name) == 0)
			return &managers[i];
	return NULL;
}

static bool is_apt(const struct pkg_mgr *m)
{
	return m == &managers[0];
}

/* Which manager this host has: the one that owns the OS (os-release), when
 * its tool is there; else the first tool found; NULL when none is known. */
static const char *detect_manager(void)
{
	const char *owner = health_os_pkg_manager("/etc");
	char op[PATH_MAX];
	struct vm_err oe = {0};
	if (owner != NULL) {
		const char *tool = strcmp(owner, "apt") == 0 ? "apt-get" : owner;
		if (proc_resolve(tool, op, sizeof(op), &oe) == 0 && access(op, X_OK) == 0)
			return owner;
		if (strcmp(owner, "dnf") == 0 && proc_resolve("yum", op, sizeof(op), &oe) == 0 &&
		    access(op, X_OK) == 0)
			return "yum";
	}
	static const char *const tools[][2] = {
	    {"apt-get", "apt"}, {"dnf", "dnf"}, {"yum", "yum"}, {"zypper", "zypper"}, {"apk", "apk"}};
	char p[PATH_MAX];
	struct vm_err e = {0};
	for (size_t i = 0; i < sizeof(tools) / sizeof(tools[0]); i++)
		if (proc_resolve(tools[i][0], p, sizeof(p), &e) == 0 && access(p, X_OK) == 0)
			return tools[i][1];
	return NULL;
}

/* 1 when the lock is held by another process (*pid: its pid, 0 unknown). */
static int lock_held(const struct pkg_lock *l, pid_t *pid)
{
	struct stat sb;
	struct vm_err e = {0};
	int fd = fs_open_read(l->path, &sb, &e);
	if (fd < 0)
		return 0;
	int held = 0;
	*pid = 0;
	if (!l->pidfile) {
		held = fs_lock_holder(fd, pid) == 1;
	} else {
		char b[32];
		ssize_t n = S_ISREG(sb.st_mode) ? read(fd, b, sizeof(b) - 1) : -1;
		if (n > 0) {
			b[n] = '\0';
			char *end;
			long v = strtol(b, &end, 10);
			if (v > 0 && v <= 0x7fffffff && (*end == '\0' || *end == '\n') &&
			    (pid_t)v != getpid() && (kill((pid_t)v, 0) == 0 || errno == EPERM)) {
				*pid = (pid_t)v;
				held = 1;
			}
		}
	}
	close(fd);
	return held;
}

/* Waits while one of the manager's locks is held by another process, with a
 * progress event every second; the step's status (result filled) when it
 * cannot wait longer. */
static enum probe_step_status wait_locks(const struct probe_step_ctx *ctx, const struct pkg_mgr *m,
                                         json_t *result, int64_t *waited)
{
	int64_t start = time_mono_ms(), last_event = 0;
	for (;;) {
		const char *held = NULL;
		pid_t pid = 0;
		for (const struct pkg_lock *l = m->locks; l->path != NULL && held == NULL; l++)
			if (lock_held(l, &pid) == 1)
				held = l->path;
		int64_t now = time_mono_ms();
		if (held == NULL) {
			*waited += now - start;
			return STEP_OK;
		}
		if (last_event == 0 || now - last_event >= LOCK_EVENT_MS) {
			last_event = now;
			probe_step_event(ctx, "info",
			                 &(struct probe_progress){(now - start) / 1000, -1, "seconds", NULL},
			                 "waiting for the package database: %s is held by %s%d", held,
			                 pid > 0 ? "pid " : "another process", pid > 0 ? (int)pid : 0);
		}
		if (!host_wait(ctx, 200)) {
			*waited += time_mono_ms() - start;
			if (ctx->cancel != NULL && atomic_load(ctx->cancel)) {
				host_fail(result, "canceled", "canceled while waiting for %s", held);
				return STEP_CANCELED;
			}
			host_fail(result, "lock_timeout",
			          "the package database stayed locked (%s) until the step's timeout",
			          held);
			return STEP_TIMED_OUT;
		}
	}
}

/* apt's lines on the status fd (stdout) become progress events. */
struct apt_progress {
	const struct probe_step_ctx *ctx;
	char line[1024];
	size_t len;
	bool overlong;
	int64_t last_event;
};

static void apt_line(struct apt_progress *p, const char *line, size_t len)
{
	struct apt_status s;
	if (apt_status_parse(line, len, &s) != 0)
		return;
	int64_t now = time_mono_ms();
	bool err = s.kind == APT_PMERROR;
	if (!err && now - p->last_event < STATUS_EVENT_MS)
		return;
	p->last_event = now;
	probe_step_event(p->ctx, err ? "warn" : "info",
	                 &(struct probe_progress){(int64_t)s.percent, 100, "percent", NULL}, "%s%s%s",
	                 s.pkg, s.pkg[0] != '\0' ? ": " : "", s.msg);
}

static void apt_output(void *ctx, enum proc_stream stream, const char *data, size_t len)
{
	struct apt_progress *p = ctx;
	if (stream != PROC_STDOUT)
		return;
	for (size_t i = 0; i < len; i++) {
		if (data[i] == '\n') {
			if (!p->overlong)
				apt_line(p, p->line, p->len);
			p->len = 0;
			p->overlong = false;
		} else if (p->len < sizeof(p->line)) {
			p->line[p->len++] = data[i];
		} else {
			p->overlong = true; /* not a status line of ours */
		}
	}
}

static bool lock_failure(const struct pkg_mgr *m, const struct proc_result *res)
{
	if (res->exit_code != m->lock_exit)
		return false;
	if (m->lock_msgs == NULL)
		return true;
	for (const char *const *s = m->lock_msgs; *s != NULL; s++)
		if (res->err != NULL && strstr(res->err, *s) != NULL)
			return true;
	return false;
}

/* Runs a manager's command once the locks are free, again when it lost the
 * race for them. 0 with res filled when it ran; otherwise the step's status. */
static int run_locked(const struct probe_step_ctx *ctx, const struct pkg_mgr *m,
                      const char *const *argv, json_t *result, int64_t *waited,
                      struct proc_result *res, enum probe_step_status *status)
{
	for (;;) {
		if ((*status = wait_locks(ctx, m, result, waited)) != STEP_OK)
			return -1;
		struct apt_progress prog = {.ctx = ctx};
		struct host_cmd c = {.argv = argv, .env = m->env};
		if (is_apt(m)) {
			c.on_output = apt_output;
			c.out_ctx = &prog;
		}
		struct vm_err err = {0};
		memset(res, 0, sizeof(*res));
		if (host_run(ctx, &c, res, &err) != 0) {
			*status = host_fail(result, m->failed, "%s: %s", argv[0], err.msg);
			return -1;
		}
		if (!lock_failure(m, res))
			return 0;
		proc_result_free(res);
		if (!host_wait(ctx, 200)) {
			*status = host_fail(result, "lock_timeout",
			                    "the package database stayed locked until the step's timeout");
			return -1;
		}
	}
}

/* info[i]: the entry of found for the i-th name (only the name when none). */
static void by_name(const struct pkg_args *a, const struct pkg_info *found, int k,
                    struct pkg_info *info)
{
	for (int i = 0; i < a->n; i++) {
		memset(&info[i], 0, sizeof(info[i]));
		snprintf(info[i].name, sizeof(info[i].name), "%s", a->names[i]);
		for (int j = 0; j < k; j++)
			if (strcmp(found[j].name, a->names[i]) == 0)
				info[i] = found[j];
	}
}

/* The installed state of names (dpkg-query or rpm -q); unknown names are
 * not installed. */
static int query(const struct probe_step_ctx *ctx, const struct pkg_mgr *m,
                 const struct pkg_args *a, struct pkg_info *info, json_t *result,
                 enum probe_step_status *status)
{
	const char *argv[PKG_MAX + 5] = {"dpkg-query", "-W", "-f",
	                                 "${Package}\t${db:Status-Abbrev}\t${Version}\n"};
	if (!is_apt(m)) {
		argv[0] = "rpm";
		argv[1] = "-q";
		argv[2] = "--qf";
		argv[3] = RPM_QF;
	}
	int n = 4;
	for (int i = 0; i < a->n; i++)
		argv[n++] = a->names[i];
	argv[n] = NULL;
	struct proc_result res = {0};
	struct vm_err err = {0};
	struct host_cmd c = {.argv = argv};
	if (host_run(ctx, &c, &res, &err) != 0) {
		*status = host_fail(result, m->failed, "%s: %s", argv[0], err.msg);
		return -1;
	}
	/* dpkg-query 1: some names are not known to dpkg at all; rpm -q: the
	 * number of names not installed */
	if (res.exit_code < 0 || (is_apt(m) ? res.exit_code > 1 : res.exit_code > a->n)) {
		*status = host_fail_proc(result, m->failed, argv[0], &res);
		proc_result_free(&res);
		return -1;
	}
	struct pkg_info found[PKG_MAX];
	const char *out = res.out != NULL ? res.out : "";
	int k = is_apt(m) ? pkg_parse_dpkg_query(out, res.out_len, found, PKG_MAX)
	                  : pkg_parse_rpm_query(out, res.out_len, found, PKG_MAX);
	proc_result_free(&res);
	if (k < 0) {
		*status = host_fail(result, m->failed, "%s: output not understood", argv[0]);
		return -1;
	}
	by_name(a, found, k, info);
	return 0;
}

/* The repositories' best version of each target name (dnf repoquery,
 * zypper info; never for a pin): version "" when there is none. */
static int candidates(const struct probe_step_ctx *ctx, const struct pkg_mgr *m,
                      const struct pkg_args *a, const char *const *targets, int nt,
                      struct pkg_info *cand, json_t *result, int64_t *waited,
                      enum probe_step_status *status)
{
	const char *argv[PKG_MAX + 16];
	int n = 0;
	while (m->candidates[n] != NULL) {
		argv[n] = m->candidates[n];
		n++;
	}
	for (int i = 0; i < nt; i++)
		argv[n++] = targets[i];
	argv[n] = NULL;
	struct proc_result res;
	if (run_locked(ctx, m, argv, result, waited, &res, status) != 0)
		return -1;
	if (res.exit_code != 0) {
		*status = host_fail_proc(result, m->failed, m->tool, &res);
		proc_result_free(&res);
		return -1;
	}
	struct pkg_info found[PKG_MAX];
	int k = m->parse_candidates(res.out != NULL ? res.out : "", res.out_len, found, PKG_MAX);
	proc_result_free(&res);
	if (k < 0) {
		*status = host_fail(result, m->failed, "%s: output not understood", m->tool);
		return -1;
	}
	by_name(a, found, k, cand);
	return 0;
}

/* The newest mtime of apt's package lists (wall ms), 0 when there are none. */
static int64_t lists_mtime(void)
{
	struct vm_err e = {0};
	int dfd = fs_walk_dir(APT_LISTS_DIR, &e);
	if (dfd < 0)
		return 0;
	DIR *d = fdopendir(dfd);
	if (d == NULL) {
		close(dfd);
		return 0;
	}
	int64_t newest = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (strstr(de->d_name, "_Packages") == NULL)
			continue;
		struct stat sb;
		if (fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0 ||
		    !S_ISREG(sb.st_mode))
			continue;
		int64_t ms = (int64_t)sb.st_mtim.tv_sec * 1000 + sb.st_mtim.tv_nsec / 1000000;
		if (ms > newest)
			newest = ms;
	}
	closedir(d);
	return newest;
}

/* TOOL FLAGS [-s | -o APT::Status-Fd=1 (apt)] VERB [downgrade flag] targets. */
static void mgr_argv(const struct pkg_mgr *m, const char **argv, bool simulate, bool pinned,
                     const char *verb, const char *const *targets, int nt)
{
	int n = 0;
	argv[n++] = m->tool;
	for (const char *const *f = m->flags; *f != NULL; f++)
		argv[n++] = *f;
	if (is_apt(m) && simulate) {
		argv[n++] = "-s";
	} else if (is_apt(m)) {
		argv[n++] = "-o";
		argv[n++] = "APT::Status-Fd=1";
	}
	argv[n++] = verb;
	if (pinned && m->downgrade != NULL && strcmp(verb, m->install) == 0)
		argv[n++] = m->downgrade;
	for (int i = 0; i < nt; i++)
		argv[n++] = targets[i];
	argv[n] = NULL;
}

static const char *action_name(char a)
{
	return a == 'i' ? "installed" : a == 'u' ? "upgraded" : a == 'r' ? "removed" : "none";
}

static const char *installed_version(const struct pkg_info *p)
{
	return p->installed ? p->version : NULL;
}

static json_t *str_or_null(const char *s)
{
	return s != NULL && s[0] != '\0' ? json_string(s) : json_null();
}

static void report(json_t *result, const char *name, char action, const char *old_v,
                   const char *new_v)
{
	json_t *p = json_object();
	json_object_set_new(p, "name", json_string(name));
	json_object_set_new(p, "action", json_string(action_name(action)));
	json_object_set_new(p, "old_version", str_or_null(old_v));
	json_object_set_new(p, "new_version", str_or_null(new_v));
	json_array_append_new(json_object_get(result, "packages"), p);
	if (action != 0) {
		json_t *c = host_change(result, "package", old_v != NULL && old_v[0] ? json_string(old_v) : NULL,
		                        new_v != NULL && new_v[0] ? json_string(new_v) : NULL);
		json_object_set_new(c, "name", json_string(name));
	}
}

/* Whether the installed version is the pinned one: apt's versions are whole;
 * an rpm pin may leave out the release ("1.0" is "1.0-3") and the epoch. */
static bool version_matches(const struct pkg_mgr *m, const char *installed, const char *pin)
{
	if (strcmp(installed, pin) == 0)
		return true;
	if (is_apt(m))
		return false;
	const char *colon = strchr(installed, ':');
	if (colon != NULL && strchr(pin, ':') == NULL)
		installed = colon + 1;
	size_t pl = strlen(pin);
	return strncmp(installed, pin, pl) == 0 && (installed[pl] == '\0' || installed[pl] == '-');
}

/* The tool's failure as an error code: a name or version it does not know. */
static const char *failure_code(const struct pkg_mgr *m, const struct proc_result *res,
                                bool pinned)
{
	const char *e = res->err != NULL ? res->err : "";
	bool missing = is_apt(m) ? strstr(e, "Unable to locate package") != NULL
	               : strcmp(m->tool, "zypper") == 0 ? res->exit_code == 104
	                                                : strstr(e, "Unable to find a match") != NULL;
	if (is_apt(m) && strstr(e, "was not found") != NULL)
		return "version_not_found";
	if (missing)
		return pinned && !is_apt(m) ? "version_not_found" : "package_not_found";
	return m->failed;
}

static enum probe_step_status finish(json_t *result, int64_t waited, enum probe_step_status st)
{
	json_object_set_new(result, "lock_waited_ms", json_integer(waited));
	return st;
}

/* apt-get -s: exactly what the real run would do; check mode (or nothing to
 * do) reports it. 1 when the step is done, 0 to go on, -1 failed. */
static int apt_plan(const struct probe_step_ctx *ctx, const struct probe_step_req *st,
                    const struct pkg_mgr *m, const struct pkg_args *a,
                    const struct pkg_info *before, const char *verb, const char *const *targets,
                    int nt, json_t *result, int64_t *waited, enum probe_step_status *status)
{
	const char *argv[PKG_MAX + 24];
	mgr_argv(m, argv, true, a->version != NULL, verb, targets, nt);
	struct proc_result res;
	if (run_locked(ctx, m, argv, result, waited, &res, status) != 0)
		return -1;
	if (res.exit_code != 0) {
		*status = host_fail_proc(result, failure_code(m, &res, a->version != NULL), m->tool,
		                         &res);
		proc_result_free(&res);
		return -1;
	}
	struct apt_sim *sim = calloc(DEPS_MAX, sizeof(*sim));
	int ns = sim != NULL ? apt_parse_sim(res.out != NULL ? res.out : "", res.out_len, sim, DEPS_MAX)
	                     : -1;
	proc_result_free(&res);
	if (ns < 0) {
		free(sim);
		*status = host_fail(result, m->failed, "apt-get -s: output not understood");
		return -1;
	}
	if (ns > DEPS_MAX)
		ns = DEPS_MAX;
	json_t *deps = json_array();
	json_object_set_new(result, "dependencies", deps);
	for (int j = 0; j < ns; j++) {
		bool asked = false;
		for (int i = 0; i < a->n; i++)
			asked = asked || strcmp(sim[j].name, a->names[i]) == 0;
		if (asked)
			continue;
		json_t *d = json_object();
		json_object_set_new(d, "name", json_string(sim[j].name));
		json_object_set_new(d, "action", json_string(action_name(sim[j].action)));
		json_object_set_new(d, "old_version", str_or_null(sim[j].old_version));
		json_object_set_new(d, "new_version", str_or_null(sim[j].new_version));
		json_array_append_new(deps, d);
	}
	if (!st->check && ns > 0) {
		free(sim);
		return 0;
	}
	for (int i = 0; i < a->n; i++) {
		const struct apt_sim *s = NULL;
		for (int j = 0; j < ns && s == NULL; j++)
			if (strcmp(sim[j].name, a->names[i]) == 0)
				s = &sim[j];
		if (s == NULL)
			report(result, a->names[i], 0, installed_version(&before[i]),
			       installed_version(&before[i]));
		else
			report(result, a->names[i], s->action, installed_version(&before[i]),
			       s->action == 'r' ? NULL : s->new_version);
	}
	free(sim);
	return 1;
}

enum probe_step_status probe_pkg_run(STEP_RUN_ARGS)
{
	const struct pkg_args *a = st->ext;
	host_result_init(result, st);
	json_object_set_new(result, "packages", json_array());
	const char *name = a->manager != NULL ? a->manager : detect_manager();
	if (name == NULL)
		return host_fail(result, "unsupported_manager",
		                 "no package manager found (apt-get, dnf, yum, zypper, apk)");
	json_object_set_new(result, "manager", json_string(name));
	const struct pkg_mgr *m = find_manager(name);
	if (m == NULL)
		return host_fail(result, "unsupported_manager",
		                 "unsupported manager: %s (pkg.ensure drives apt, dnf, yum and zypper)",
		                 name);

	enum probe_step_status status = STEP_OK;
	struct pkg_info before[PKG_MAX], after[PKG_MAX];
	if (query(ctx, m, a, before, result, &status) != 0)
		return status;
	/* what the manager is asked for: names not yet as wanted (latest: all
	 * of them); which[t] is the name of targets[t] */
	const char *targets[PKG_MAX];
	int which[PKG_MAX];
	char pinned[PKG_FIELD_MAX * 2];
	int nt = 0;
	for (int i = 0; i < a->n; i++) {
		bool want = a->state == PKG_LATEST ||
		            (a->state == PKG_ABSENT && before[i].installed) ||
		            (a->state == PKG_PRESENT &&
		             (!before[i].installed ||
		              (a->version != NULL &&
		               !version_matches(m, before[i].version, a->version))));
		if (!want)
			continue;
		which[nt] = i;
		if (a->version != NULL) {
			snprintf(pinned, sizeof(pinned), "%s%c%s", a->names[i], m->pin_sep, a->version);
			targets[nt++] = pinned;
		} else {
			targets[nt++] = a->names[i];
		}
	}
	int64_t waited = 0;
	json_object_set_new(result, "lists_refreshed", json_false());
	if (is_apt(m) && nt > 0 && a->state != PKG_ABSENT) {
		int64_t max_age = ctx->host != NULL ? (int64_t)ctx->host->apt_lists_max_age_ms
		                                    : LISTS_MAX_AGE_MS;
		int64_t mt = lists_mtime();
		if (mt == 0 || time_wall_ms() - mt >= max_age) {
			if (st->check) {
				/* check mode changes nothing, the lists included */
				probe_step_event(ctx, "warn", NULL,
				                 "apt's package lists are %s; check mode does not refresh them",
				                 mt == 0 ? "missing" : "stale");
				json_object_set_new(result, "lists_stale", json_true());
			} else {
				probe_step_event(ctx, "info", NULL, "apt-get update (lists %s)",
				                 mt == 0 ? "missing" : "older than host.apt_lists_max_age");
				const char *up[] = {"apt-get", "-q", "-o", "APT::Status-Fd=1", "update", NULL};
				struct proc_result res;
				if (run_locked(ctx, m, up, result, &waited, &res, &status) != 0)
					return status;
				if (res.exit_code != 0) {
					status = host_fail_proc(result, "apt_update_failed", "apt-get update",
					                        &res);
					proc_result_free(&res);
					return status;
				}
				proc_result_free(&res);
				json_object_set_new(result, "lists_refreshed", json_true());
			}
		}
	}
	if (nt == 0) {
		for (int i = 0; i < a->n; i++)
			report(result, a->names[i], 0, installed_version(&before[i]),
			       installed_version(&before[i]));
		return finish(result, waited, STEP_OK);
	}

	/* latest is a plain install for apt (it upgrades an installed name to
	 * its candidate); the rpm managers upgrade installed names by their
	 * upgrade verb and install the others */
	const char *verb = a->state == PKG_ABSENT ? m->remove : m->install;
	const char *inst[PKG_MAX], *upg[PKG_MAX];
	int ni = 0, nu = 0;
	if (is_apt(m)) {
		int r = apt_plan(ctx, st, m, a, before, verb, targets, nt, result, &waited, &status);
		if (r != 0)
			return r < 0 ? status : finish(result, waited, STEP_OK);
		for (int t = 0; t < nt; t++)
			inst[ni++] = targets[t];
	} else {
		/* the plan from the repositories' best versions (a pin is its own) */
		struct pkg_info cand[PKG_MAX];
		memset(cand, 0, sizeof(cand));
		if (a->state != PKG_ABSENT && a->version == NULL &&
		    candidates(ctx, m, a, targets, nt, cand, result, &waited, &status) != 0)
			return finish(result, waited, status);
		char plan[PKG_MAX] = {0};
		const char *newv[PKG_MAX] = {0};
		for (int t = 0; t < nt; t++) {
			int i = which[t];
			const struct pkg_info *b = &before[i];
			if (a->state == PKG_ABSENT) {
				plan[i] = 'r';
				continue;
			}
			newv[i] = a->version != NULL ? a->version : cand[i].version;
			if (newv[i][0] == '\0') {
				status = host_fail(result, "package_not_found",
				                   "%s: no package %s in the enabled repositories", m->tool,
				                   a->names[i]);
				return finish(result, waited, status);
			}
			if (!b->installed)
				plan[i] = 'i';
			else if (!version_matches(m, b->version, newv[i]))
				plan[i] = 'u';
		}
		int left = 0;
		for (int t = 0; t < nt; t++) {
			int i = which[t];
			if (plan[i] == 0)
				continue;
			targets[left] = targets[t];
			which[left++] = i;
			if (plan[i] == 'u' && a->state == PKG_LATEST)
				upg[nu++] = targets[t];
			else
				inst[ni++] = targets[t];
		}
		nt = left;
		if (st->check || nt == 0) {
			for (int i = 0; i < a->n; i++)
				report(result, a->names[i], plan[i], installed_version(&before[i]),
				       plan[i] == 'r' ? NULL
				       : plan[i] != 0 ? newv[i]
				                      : installed_version(&before[i]));
			return finish(result, waited, STEP_OK);
		}
	}

	/* the real run (apt: with its progress on the status fd) */
	const char *argv[PKG_MAX + 24];
	for (int pass = 0; pass < 2; pass++) {
		const char *v = pass == 0 ? verb : m->upgrade;
		int n = pass == 0 ? ni : nu;
		if (n == 0)
			continue;
		mgr_argv(m, argv, false, a->version != NULL, v, pass == 0 ? inst : upg, n);
		probe_step_event(ctx, "info", NULL, "%s %s: %d package(s)", m->tool, v, n);
		struct proc_result res;
		if (run_locked(ctx, m, argv, result, &waited, &res, &status) != 0)
			return finish(result, waited, status);
		if (res.exit_code != 0) {
			status = host_fail_proc(result, failure_code(m, &res, a->version != NULL),
			                        m->tool, &res);
			proc_result_free(&res);
			return finish(result, waited, status);
		}
		proc_result_free(&res);
	}
	json_object_set_new(result, "lock_waited_ms", json_integer(waited));
	if (query(ctx, m, a, after, result, &status) != 0)
		return status;
	for (int i = 0; i < a->n; i++) {
		char act = 0;
		if (before[i].installed && !after[i].installed)
			act = 'r';
		else if (!before[i].installed && after[i].installed)
			act = 'i';
		else if (after[i].installed && strcmp(before[i].version, after[i].version) != 0)
			act = 'u';
		report(result, a->names[i], act, installed_version(&before[i]),
		       installed_version(&after[i]));
	}
	return STEP_OK;
}
