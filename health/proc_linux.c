/* Linux collectors: /proc text (under a configurable root, so tests can point
 * at fixtures) and statvfs for filesystems. A table of collectors; each
 * failing one only leaves its fields at zero and sets its error bit. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fs.h"
#include "health/internal.h"

/* --- parsers -------------------------------------------------------------------------- */

static const char *next_line(const char *p)
{
	const char *nl = strchr(p, '\n');
	return nl != NULL ? nl + 1 : p + strlen(p);
}

/* Reads an unsigned decimal; returns the end pointer or NULL. */
static const char *read_u64(const char *p, uint64_t *out)
{
	while (*p == ' ' || *p == '\t')
		p++;
	if (!isdigit((unsigned char)*p))
		return NULL;
	uint64_t v = 0;
	for (; isdigit((unsigned char)*p); p++) {
		uint64_t d = (uint64_t)(*p - '0');
		if (v > (UINT64_MAX - d) / 10)
			return NULL;
		v = v * 10 + d;
	}
	*out = v;
	return p;
}

int health_parse_stat(const char *text, struct health_cpu_ticks *ticks, uint64_t *ncpu,
                      int64_t *btime, uint64_t *procs_running)
{
	bool have_cpu = false;
	*ncpu = 0;
	*btime = 0;
	*procs_running = 0;
	for (const char *p = text; *p != '\0'; p = next_line(p)) {
		if (strncmp(p, "cpu ", 4) == 0) {
			/* user nice system idle iowait irq softirq steal (guest is inside user) */
			uint64_t v[8] = {0};
			const char *q = p + 4;
			int got = 0;
			for (; got < 8; got++) {
				const char *e = read_u64(q, &v[got]);
				if (e == NULL)
					break;
				q = e;
			}
			if (got < 4)
				return -1;
			uint64_t total = 0;
			for (int i = 0; i < got; i++) {
				if (total > UINT64_MAX - v[i])
					return -1;
				total += v[i];
			}
			ticks->total = total;
			ticks->idle = v[3] + v[4]; /* idle + iowait */
			have_cpu = true;
		} else if (strncmp(p, "cpu", 3) == 0 && isdigit((unsigned char)p[3])) {
			(*ncpu)++;
		} else if (strncmp(p, "btime ", 6) == 0) {
			uint64_t b;
			if (read_u64(p + 6, &b) == NULL || b > INT64_MAX)
				return -1;
			*btime = (int64_t)b;
		} else if (strncmp(p, "procs_running ", 14) == 0) {
			if (read_u64(p + 14, procs_running) == NULL)
				return -1;
		}
	}
	return have_cpu ? 0 : -1;
}

static const char *read_double(const char *p, double *out)
{
	while (*p == ' ' || *p == '\t')
		p++;
	if (!isdigit((unsigned char)*p))
		return NULL;
	char *end;
	errno = 0;
	double v = strtod(p, &end);
	if (errno != 0 || end == p || !(v >= 0 && v < 1e15))
		return NULL;
	*out = v;
	return end;
}

int health_parse_loadavg(const char *text, double *l1, double *l5, double *l15)
{
	const char *p = read_double(text, l1);
	if (p != NULL)
		p = read_double(p, l5);
	if (p != NULL)
		p = read_double(p, l15);
	return p != NULL ? 0 : -1;
}

int health_parse_uptime(const char *text, double *uptime_s)
{
	return read_double(text, uptime_s) != NULL ? 0 : -1;
}

int health_parse_meminfo(const char *text, struct health_system *out)
{
	static const struct {
		const char *key;
		size_t off;
	} fields[] = {
	    {"MemTotal:", offsetof(struct health_system, mem_total)},
	    {"MemAvailable:", offsetof(struct health_system, mem_available)},
	    {"SwapTotal:", offsetof(struct health_system, swap_total)},
	    {"SwapFree:", offsetof(struct health_system, swap_free)},
	};
	unsigned found = 0;
	for (const char *p = text; *p != '\0'; p = next_line(p)) {
		for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
			size_t kl = strlen(fields[i].key);
			if (strncmp(p, fields[i].key, kl) != 0)
				continue;
			uint64_t kb;
			const char *e = read_u64(p + kl, &kb);
			if (e == NULL || kb > UINT64_MAX / 1024)
				return -1;
			*(uint64_t *)(void *)((char *)out + fields[i].off) = kb * 1024;
			found |= 1u << i;
		}
	}
	/* MemTotal and MemAvailable are required (kernel >= 3.14). */
	return (found & 3u) == 3u ? 0 : -1;
}

int health_parse_netdev(const char *text, struct health_net *out, size_t cap, size_t *n)
{
	*n = 0;
	int line = 0;
	for (const char *p = text; *p != '\0'; p = next_line(p), line++) {
		if (line < 2)
			continue; /* two header lines */
		const char *colon = strchr(p, ':');
		const char *eol = strchr(p, '\n');
		if (colon == NULL || (eol != NULL && colon > eol))
			return -1;
		const char *name = p;
		while (*name == ' ')
			name++;
		size_t nl = (size_t)(colon - name);
		if (nl == 0 || nl >= sizeof(out[0].iface))
			return -1;
		uint64_t v[9];
		const char *q = colon + 1;
		for (int i = 0; i < 9; i++) {
			q = read_u64(q, &v[i]);
			if (q == NULL)
				return -1;
		}
		if (nl == 2 && strncmp(name, "lo", 2) == 0)
			continue;
		if (*n >= cap)
			continue; /* bounded: extra interfaces are not reported */
		struct health_net *o = &out[(*n)++];
		memcpy(o->iface, name, nl);
		o->iface[nl] = '\0';
		o->rx_bytes = v[0];
		o->tx_bytes = v[8];
	}
	return 0;
}

bool health_fs_is_pseudo(const char *fstype)
{
	/* Kernel and virtual filesystems, read-only images that are always full
	 * (squashfs snaps, iso9660), and network filesystems whose statvfs can
	 * block for minutes when the server is gone. */
	static const char *const skip[] = {
	    "proc",           "sysfs",           "devtmpfs",    "devpts",     "tmpfs",
	    "cgroup",         "cgroup2",         "securityfs",  "pstore",     "bpf",
	    "debugfs",        "tracefs",         "configfs",    "fusectl",    "mqueue",
	    "hugetlbfs",      "autofs",          "binfmt_misc", "rpc_pipefs", "nsfs",
	    "efivarfs",       "selinuxfs",       "squashfs",    "iso9660",    "ramfs",
	    "fuse.lxcfs",     "fuse.gvfsd-fuse", "nfs",         "nfs4",       "cifs",
	    "smb3",           "fuse.sshfs",      "ceph",        "glusterfs",  "9p",
	    "overlayfs-none",
	};
	for (size_t i = 0; i < sizeof(skip) / sizeof(skip[0]); i++)
		if (strcmp(fstype, skip[i]) == 0)
			return true;
	return false;
}

/* Copies one space-separated field of a mounts line, decoding \ooo escapes. */
static const char *mount_field(const char *p, char *out, size_t cap, bool *ok)
{
	size_t o = 0;
	*ok = true;
	while (*p == ' ')
		p++;
	for (; *p != '\0' && *p != ' ' && *p != '\n'; p++) {
		char c = *p;
		if (c == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' &&
		    p[3] >= '0' && p[3] <= '7') {
			c = (char)(((p[1] - '0') << 6) | ((p[2] - '0') << 3) | (p[3] - '0'));
			p += 3;
		}
		if (o + 1 >= cap)
			*ok = false;
		else
			out[o++] = c;
	}
	out[o] = '\0';
	if (o == 0)
		*ok = false;
	return p;
}

int health_parse_mounts(const char *text, struct health_fs *out, size_t cap, size_t *n)
{
	*n = 0;
	for (const char *p = text; *p != '\0'; p = next_line(p)) {
		if (*p == '\n')
			continue;
		struct health_fs fs;
		memset(&fs, 0, sizeof(fs));
		bool ok1, ok2, ok3;
		const char *q = mount_field(p, fs.device, sizeof(fs.device), &ok1);
		q = mount_field(q, fs.mount, sizeof(fs.mount), &ok2);
		q = mount_field(q, fs.fstype, sizeof(fs.fstype), &ok3);
		(void)q;
		if (!ok2 || !ok3)
			return -1;
		if (fs.mount[0] != '/' || health_fs_is_pseudo(fs.fstype))
			continue;
		/* A later mount on the same point hides the earlier one. */
		size_t i = 0;
		while (i < *n && strcmp(out[i].mount, fs.mount) != 0)
			i++;
		if (i == *n) {
			if (*n >= cap)
				continue;
			(*n)++;
		}
		out[i] = fs;
	}
	return 0;
}

int health_parse_self_status(const char *text, uint64_t *rss_bytes, uint64_t *threads)
{
	bool rss = false, thr = false;
	for (const char *p = text; *p != '\0'; p = next_line(p)) {
		uint64_t v;
		if (strncmp(p, "VmRSS:", 6) == 0) {
			if (read_u64(p + 6, &v) == NULL || v > UINT64_MAX / 1024)
				return -1;
			*rss_bytes = v * 1024;
			rss = true;
		} else if (strncmp(p, "Threads:", 8) == 0) {
			if (read_u64(p + 8, &v) == NULL)
				return -1;
			*threads = v;
			thr = true;
		}
	}
	return rss && thr ? 0 : -1;
}

double health_cpu_percent(const struct health_cpu_ticks *prev, const struct health_cpu_ticks *cur)
{
	if (prev->total == 0 || cur->total <= prev->total || cur->idle < prev->idle)
		return -1;
	double dt = (double)(cur->total - prev->total);
	double di = (double)(cur->idle - prev->idle);
	double busy = (dt - di) / dt * 100.0;
	return busy < 0 ? 0 : busy > 100 ? 100 : busy;
}

/* --- collectors ----------------------------------------------------------------------- */

int health_read_proc(const struct health_proc_ctx *ctx, const char *rel, char **text)
{
	char path[PATH_MAX];
	struct vm_err err;
	snprintf(path, sizeof(path), "%s/%s", ctx->proc_root, rel);
	return fs_read_file(path, HEALTH_PROC_FILE_MAX, text, NULL, &err);
}

static void self_path(const struct health_proc_ctx *ctx, const char *rel, char *out, size_t cap)
{
	if (ctx->self_pid > 0)
		snprintf(out, cap, "%d/%s", ctx->self_pid, rel);
	else
		snprintf(out, cap, "self/%s", rel);
}

static int collect_stat(const struct health_proc_ctx *ctx, const struct health_cpu_ticks *prev,
                        struct health_system *out)
{
	char *t;
	if (health_read_proc(ctx, "stat", &t) != 0)
		return -1;
	uint64_t running;
	int rc = health_parse_stat(t, &out->ticks, &out->ncpu, &out->boot_time, &running);
	free(t);
	if (rc == 0)
		out->cpu_percent = health_cpu_percent(prev, &out->ticks);
	return rc;
}

static int collect_loadavg(const struct health_proc_ctx *ctx, const struct health_cpu_ticks *prev,
                           struct health_system *out)
{
	(void)prev;
	char *t;
	if (health_read_proc(ctx, "loadavg", &t) != 0)
		return -1;
	int rc = health_parse_loadavg(t, &out->load1, &out->load5, &out->load15);
	free(t);
	return rc;
}

static int collect_meminfo(const struct health_proc_ctx *ctx, const struct health_cpu_ticks *prev,
                           struct health_system *out)
{
	(void)prev;
	char *t;
	if (health_read_proc(ctx, "meminfo", &t) != 0)
		return -1;
	int rc = health_parse_meminfo(t, out);
	free(t);
	return rc;
}

static int collect_uptime(const struct health_proc_ctx *ctx, const struct health_cpu_ticks *prev,
                          struct health_system *out)
{
	(void)prev;
	char *t;
	if (health_read_proc(ctx, "uptime", &t) != 0)
		return -1;
	int rc = health_parse_uptime(t, &out->uptime_s);
	free(t);
	return rc;
}

static int collect_net(const struct health_proc_ctx *ctx, const struct health_cpu_ticks *prev,
                       struct health_system *out)
{
	(void)prev;
	char *t;
	if (health_read_proc(ctx, "net/dev", &t) != 0)
		return -1;
	int rc = health_parse_netdev(t, out->net, HEALTH_MAX_NET, &out->nnet);
	free(t);
	return rc;
}

int health_collect_filesystems(const struct health_proc_ctx *ctx, struct health_fs *fs, size_t cap,
                               size_t *nfs)
{
	char *t, rel[64];
	*nfs = 0;
	self_path(ctx, "mounts", rel, sizeof(rel));
	if (health_read_proc(ctx, rel, &t) != 0)
		return -1;
	size_t n = 0;
	int rc = health_parse_mounts(t, fs, cap, &n);
	free(t);
	if (rc != 0)
		return -1;
	int (*sv)(const char *, struct statvfs *) = ctx->statvfs_fn ? ctx->statvfs_fn : statvfs;
	size_t kept = 0;
	for (size_t i = 0; i < n; i++) {
		struct statvfs st;
		/* Unreadable mount points (permissions, vanished) are left out. */
		if (sv(fs[i].mount, &st) != 0 || st.f_blocks == 0)
			continue;
		struct health_fs *f = &fs[kept++];
		if (f != &fs[i])
			*f = fs[i];
		uint64_t frsize = st.f_frsize ? st.f_frsize : st.f_bsize;
		f->size_bytes = (uint64_t)st.f_blocks * frsize;
		f->free_bytes = (uint64_t)st.f_bfree * frsize;
		f->avail_bytes = (uint64_t)st.f_bavail * frsize;
		f->inodes_total = st.f_files;
		f->inodes_free = st.f_ffree;
	}
	*nfs = kept;
	return 0;
}

static int collect_fs(const struct health_proc_ctx *ctx, const struct health_cpu_ticks *prev,
                      struct health_system *out)
{
	(void)prev;
	return health_collect_filesystems(ctx, out->fs, HEALTH_MAX_FS, &out->nfs);
}

static bool is_number(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s; s++)
		if (!isdigit((unsigned char)*s))
			return false;
	return true;
}

/* Counts directory entries (numeric names only when numeric is set), bounded. */
static int count_dir(const char *path, bool numeric, uint64_t *out)
{
	DIR *d = opendir(path);
	if (d == NULL)
		return -1;
	uint64_t n = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL && n < 10000000) {
		if (e->d_name[0] == '.')
			continue;
		if (!numeric || is_number(e->d_name))
			n++;
	}
	closedir(d);
	*out = n;
	return 0;
}

static int collect_procs(const struct health_proc_ctx *ctx, const struct health_cpu_ticks *prev,
                         struct health_system *out)
{
	(void)prev;
	return count_dir(ctx->proc_root, true, &out->processes);
}

static int collect_self(const struct health_proc_ctx *ctx, const struct health_cpu_ticks *prev,
                        struct health_system *out)
{
	(void)prev;
	char rel[64], path[PATH_MAX], *t;
	self_path(ctx, "status", rel, sizeof(rel));
	if (health_read_proc(ctx, rel, &t) != 0)
		return -1;
	int rc = health_parse_self_status(t, &out->self_rss_bytes, &out->self_threads);
	free(t);
	self_path(ctx, "fd", rel, sizeof(rel));
	snprintf(path, sizeof(path), "%s/%s", ctx->proc_root, rel);
	if (rc == 0 && count_dir(path, false, &out->self_fds) != 0)
		rc = -1;
	return rc;
}

static const struct {
	const char *name;
	int (*fn)(const struct health_proc_ctx *, const struct health_cpu_ticks *,
	          struct health_system *);
} collectors[] = {
    {"stat", collect_stat},       {"loadavg", collect_loadavg}, {"meminfo", collect_meminfo},
    {"uptime", collect_uptime},   {"net", collect_net},         {"filesystems", collect_fs},
    {"processes", collect_procs}, {"self", collect_self},
};

void health_collect(const struct health_proc_ctx *ctx, const struct health_cpu_ticks *prev,
                    struct health_system *out)
{
	static const struct health_cpu_ticks none = {0, 0};
	memset(out, 0, sizeof(*out));
	out->cpu_percent = -1;
	for (size_t i = 0; i < sizeof(collectors) / sizeof(collectors[0]); i++)
		if (collectors[i].fn(ctx, prev != NULL ? prev : &none, out) != 0)
			out->errors |= 1u << i;
}
