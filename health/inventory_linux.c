/* Linux inventory: the parsers of host text (os-release, cpuinfo, dpkg-query
 * and rpm output, /proc/net sockets, systemctl's JSON) and the collectors
 * that feed them: files under proc_root and etc_root, getifaddrs, uname and
 * the package and service tools through core/proc (argv only, a deadline,
 * bounded output). Each section fails alone, into "errors". */
#include <arpa/inet.h>
#include <ctype.h>
#include <ifaddrs.h>
#include <inttypes.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netpacket/packet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/passwd.h"
#include "core/proc.h"
#include "core/time.h"
#include "health/health.h"
#include "health/internal.h"

/* --- parsers -------------------------------------------------------------------------- */

/* Copies s[0, n) into out (cap bytes) whole; false when it does not fit. */
static bool copy_exact(char *out, size_t cap, const char *s, size_t n)
{
	if (n >= cap)
		return false;
	memcpy(out, s, n);
	out[n] = '\0';
	return true;
}

static const char *line_end(const char *p)
{
	const char *nl = strchr(p, '\n');
	return nl != NULL ? nl : p + strlen(p);
}

/* An os-release value: bare, "double quoted" (\\ \" \$ \` escapes) or 'single'. */
static bool os_release_value(const char *v, size_t n, char *out, size_t cap)
{
	size_t o = 0;
	char q = n > 0 && (v[0] == '"' || v[0] == '\'') ? v[0] : 0;
	size_t i = q ? 1 : 0, end = n;
	if (q) {
		if (n < 2 || v[n - 1] != q)
			return false;
		end = n - 1;
	}
	for (; i < end; i++) {
		char c = v[i];
		if (q == '"' && c == '\\' && i + 1 < end && strchr("\\\"$`", v[i + 1]) != NULL)
			c = v[++i];
		if (o + 1 >= cap)
			return false;
		out[o++] = c;
	}
	out[o] = '\0';
	return true;
}

int health_inv_parse_os_release(const char *text, struct health_os_release *out)
{
	memset(out, 0, sizeof(*out));
	static const struct {
		const char *key;
		size_t off, cap;
	} keys[] = {
#define K(k, f) \
	{k, offsetof(struct health_os_release, f), sizeof(((struct health_os_release *)0)->f)}
	    K("ID", id),
	    K("ID_LIKE", id_like),
	    K("NAME", name),
	    K("VERSION", version),
	    K("VERSION_ID", version_id),
	    K("VERSION_CODENAME", version_codename),
	    K("PRETTY_NAME", pretty_name),
#undef K
	};
	int found = 0;
	for (const char *p = text; *p != '\0';) {
		const char *e = line_end(p);
		const char *eq = memchr(p, '=', (size_t)(e - p));
		for (size_t k = 0; eq != NULL && k < sizeof(keys) / sizeof(keys[0]); k++) {
			size_t kl = strlen(keys[k].key);
			if ((size_t)(eq - p) != kl || memcmp(p, keys[k].key, kl) != 0)
				continue;
			char *dst = (char *)out + keys[k].off;
			if (os_release_value(eq + 1, (size_t)(e - eq - 1), dst, keys[k].cap))
				found++;
			else
				dst[0] = '\0';
		}
		p = *e != '\0' ? e + 1 : e;
	}
	return found > 0 ? 0 : -1;
}

int health_inv_parse_cpuinfo(const char *text, struct health_cpu_info *out)
{
	memset(out, 0, sizeof(*out));
	static const char *const model_keys[] = {"model name", "Processor", "cpu model", "uarch",
	                                         "cpu"};
	size_t model_rank = sizeof(model_keys) / sizeof(model_keys[0]);
	for (const char *p = text; *p != '\0';) {
		const char *e = line_end(p);
		const char *colon = memchr(p, ':', (size_t)(e - p));
		if (colon != NULL) {
			size_t kl = (size_t)(colon - p);
			while (kl > 0 && (p[kl - 1] == ' ' || p[kl - 1] == '\t'))
				kl--;
			const char *v = colon + 1;
			while (v < e && (*v == ' ' || *v == '\t'))
				v++;
			if (kl == 9 && memcmp(p, "processor", 9) == 0)
				out->count++;
			/* the most specific model key wins, its first occurrence */
			for (size_t k = 0; k < model_rank; k++) {
				if (kl == strlen(model_keys[k]) &&
				    memcmp(p, model_keys[k], kl) == 0 && v < e &&
				    copy_exact(out->model, sizeof(out->model), v,
				               (size_t)(e - v))) {
					model_rank = k;
					break;
				}
			}
		}
		p = *e != '\0' ? e + 1 : e;
	}
	return out->count > 0 ? 0 : -1;
}

#define MAX_TABS 8

/* Splits line[0, len) (a trailing newline dropped) on tabs; -1 on a NUL. */
static int split_tabs(const char *line, size_t len, const char *f[MAX_TABS], size_t fl[MAX_TABS])
{
	while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	if (len == 0)
		return 0;
	if (memchr(line, '\0', len) != NULL)
		return -1;
	int n = 0;
	size_t from = 0;
	for (size_t i = 0; i <= len; i++) {
		if (i < len && line[i] != '\t')
			continue;
		if (n == MAX_TABS)
			return -1;
		f[n] = line + from;
		fl[n] = i - from;
		n++;
		from = i + 1;
	}
	return n;
}

/* Both package formats: four tab-separated fields, a name first. Returns 0,
 * HEALTH_INV_LINE_SKIP for an empty line, or -1. */
static int pkg_fields(const char *line, size_t len, const char *f[MAX_TABS], size_t fl[MAX_TABS],
                      struct health_pkg *out)
{
	memset(out, 0, sizeof(*out));
	int n = split_tabs(line, len, f, fl);
	if (n == 0)
		return HEALTH_INV_LINE_SKIP;
	return n == 4 && fl[0] > 0 ? 0 : -1;
}

int health_inv_parse_dpkg_line(const char *line, size_t len, struct health_pkg *out)
{
	const char *f[MAX_TABS];
	size_t fl[MAX_TABS];
	int rc = pkg_fields(line, len, f, fl, out);
	if (rc != 0)
		return rc;
	if (fl[3] < 2)
		return -1;
	/* status abbreviation: want, current state, error ("ii ", "rc ", "iU ") */
	if (f[3][1] != 'i' && f[3][1] != 'U' && f[3][1] != 'F' && f[3][1] != 'H' &&
	    f[3][1] != 'W' && f[3][1] != 't')
		return HEALTH_INV_LINE_SKIP;
	if (!copy_exact(out->name, sizeof(out->name), f[0], fl[0]) ||
	    !copy_exact(out->version, sizeof(out->version), f[1], fl[1]) ||
	    !copy_exact(out->arch, sizeof(out->arch), f[2], fl[2]))
		return -1;
	return 0;
}

int health_inv_parse_rpm_line(const char *line, size_t len, struct health_pkg *out)
{
	const char *f[MAX_TABS];
	size_t fl[MAX_TABS];
	int rc = pkg_fields(line, len, f, fl, out);
	if (rc != 0)
		return rc;
	if (fl[2] == 0)
		return -1;
	/* gpg-pubkey entries are keys in the database, not packages */
	if (fl[0] == 10 && memcmp(f[0], "gpg-pubkey", 10) == 0)
		return HEALTH_INV_LINE_SKIP;
	size_t o = 0;
	bool epoch = fl[1] > 0 && !(fl[1] == 6 && memcmp(f[1], "(none)", 6) == 0);
	if (epoch) {
		for (size_t i = 0; i < fl[1]; i++)
			if (!isdigit((unsigned char)f[1][i]))
				return -1;
		if (fl[1] + 1 >= sizeof(out->version))
			return -1;
		memcpy(out->version, f[1], fl[1]);
		out->version[fl[1]] = ':';
		o = fl[1] + 1;
	}
	if (!copy_exact(out->name, sizeof(out->name), f[0], fl[0]) ||
	    !copy_exact(out->version + o, sizeof(out->version) - o, f[2], fl[2]) ||
	    !copy_exact(out->arch, sizeof(out->arch), f[3], fl[3]))
		return -1;
	return 0;
}

/* Reads exactly n hex digits at *p into v; advances *p. */
static bool hex_n(const char **p, const char *end, size_t n, uint32_t *v)
{
	uint32_t x = 0;
	for (size_t i = 0; i < n; i++, (*p)++) {
		if (*p >= end || !isxdigit((unsigned char)**p))
			return false;
		char c = **p;
		x = x << 4 |
		    (uint32_t)(isdigit((unsigned char)c) ? c - '0' : (tolower(c) - 'a' + 10));
	}
	*v = x;
	return true;
}

/* "ADDR:PORT" as the kernel prints it: each 32-bit word in host byte order. */
static bool net_endpoint(const char **p, const char *end, bool v6, uint8_t addr[16], uint16_t *port)
{
	size_t words = v6 ? 4 : 1;
	for (size_t w = 0; w < words; w++) {
		uint32_t v;
		if (!hex_n(p, end, 8, &v))
			return false;
		memcpy(addr + 4 * w, &v, 4);
	}
	uint32_t pt;
	if (*p >= end || **p != ':')
		return false;
	(*p)++;
	if (!hex_n(p, end, 4, &pt))
		return false;
	*port = (uint16_t)pt;
	return true;
}

static bool skip_spaces(const char **p, const char *end)
{
	if (*p >= end || **p != ' ')
		return false;
	while (*p < end && **p == ' ')
		(*p)++;
	return *p < end;
}

static bool dec_u64(const char **p, const char *end, uint64_t *v)
{
	uint64_t x = 0;
	const char *s = *p;
	for (; *p < end && isdigit((unsigned char)**p); (*p)++) {
		uint64_t d = (uint64_t)(**p - '0');
		if (x > (UINT64_MAX - d) / 10)
			return false;
		x = x * 10 + d;
	}
	*v = x;
	return *p > s;
}

/* Skips one space-separated token. */
static bool skip_token(const char **p, const char *end)
{
	const char *s = *p;
	while (*p < end && **p != ' ')
		(*p)++;
	return *p > s;
}

int health_inv_parse_net_line(const char *line, size_t len, bool v6, struct health_sock *out)
{
	memset(out, 0, sizeof(*out));
	const char *p = line, *end = line + len;
	while (end > p && (end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\r'))
		end--;
	while (p < end && *p == ' ')
		p++;
	if (p == end)
		return HEALTH_INV_LINE_SKIP;
	if ((size_t)(end - p) >= 2 && memcmp(p, "sl", 2) == 0)
		return HEALTH_INV_LINE_SKIP;
	/* "N: local remote st tx:rx tr:when retrnsmt uid timeout inode …" */
	uint64_t sl, uid, inode;
	if (!dec_u64(&p, end, &sl) || p >= end || *p++ != ':' || !skip_spaces(&p, end))
		return -1;
	uint8_t la[16] = {0}, ra[16] = {0};
	uint16_t rport;
	uint32_t st;
	if (!net_endpoint(&p, end, v6, la, &out->port) || !skip_spaces(&p, end) ||
	    !net_endpoint(&p, end, v6, ra, &rport) || !skip_spaces(&p, end) ||
	    !hex_n(&p, end, 2, &st))
		return -1;
	/* tx_queue:rx_queue, tr:tm->when, retrnsmt, then uid, timeout, inode */
	for (int i = 0; i < 3; i++)
		if (!skip_spaces(&p, end) || !skip_token(&p, end))
			return -1;
	if (!skip_spaces(&p, end) || !dec_u64(&p, end, &uid) || uid > UINT32_MAX ||
	    !skip_spaces(&p, end) || !skip_token(&p, end) || !skip_spaces(&p, end) ||
	    !dec_u64(&p, end, &inode))
		return -1;
	static const uint8_t zero[16] = {0};
	out->state = (uint8_t)st;
	out->remote_any = rport == 0 && memcmp(ra, zero, sizeof(ra)) == 0;
	out->uid = (uint32_t)uid;
	out->inode = inode;
	if (inet_ntop(v6 ? AF_INET6 : AF_INET, la, out->addr, sizeof(out->addr)) == NULL)
		return -1;
	return 0;
}

int health_inv_parse_units_json(const char *text, size_t len, const char *name_key, const char *k1,
                                const char *k2, health_unit_fn fn, void *ctx)
{
	json_error_t jerr;
	json_t *a = json_loadb(text, len, 0, &jerr);
	if (!json_is_array(a)) {
		json_decref(a);
		return -1;
	}
	size_t i;
	json_t *o;
	int seen = 0;
	json_array_foreach(a, i, o)
	{
		const char *name = json_string_value(json_object_get(o, name_key));
		if (name == NULL)
			continue;
		const char *v1 = k1 != NULL ? json_string_value(json_object_get(o, k1)) : NULL;
		const char *v2 = k2 != NULL ? json_string_value(json_object_get(o, k2)) : NULL;
		fn(ctx, name, v1 != NULL ? v1 : "", v2 != NULL ? v2 : "");
		seen++;
	}
	json_decref(a);
	return seen;
}

#define UNIT_COLS 8

int health_inv_parse_units_plain(const char *text, size_t len, int c1, int c2, health_unit_fn fn,
                                 void *ctx)
{
	int need = c1 > c2 ? c1 : c2;
	if (need >= UNIT_COLS || memchr(text, '\0', len) != NULL)
		return -1;
	int seen = 0;
	const char *p = text, *end = text + len;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl != NULL ? nl : end;
		char col[UNIT_COLS][256];
		int n = 0;
		for (const char *q = p; q < le && n < UNIT_COLS;) {
			while (q < le && (*q == ' ' || *q == '\t' || *q == '\r'))
				q++;
			const char *s = q;
			while (q < le && *q != ' ' && *q != '\t' && *q != '\r')
				q++;
			if (q == s)
				break;
			/* list-units marks failed units with a bullet column ("●", or "*") */
			if (n == 0 && ((q - s == 3 && memcmp(s, "\xe2\x97\x8f", 3) == 0) ||
			               (q - s == 1 && *s == '*')))
				continue;
			if (!copy_exact(col[n], sizeof(col[n]), s, (size_t)(q - s)))
				return -1;
			n++;
		}
		if (n > 0) {
			if (n <= need)
				return -1;
			fn(ctx, col[0], c1 >= 0 ? col[c1] : "", c2 >= 0 ? col[c2] : "");
			seen++;
		}
		p = le + 1;
	}
	return seen;
}

/* --- collectors ----------------------------------------------------------------------- */

struct inv {
	const struct health_inv_ctx *ctx;
	json_t *doc, *errors, *truncated;
};

static void section_error(struct inv *iv, const char *section, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void section_error(struct inv *iv, const char *section, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* messages quote tool output: host bytes too */
	json_object_set_new(iv->errors, section, health_inv_str(msg, strlen(msg)));
}

static void mark_truncated(struct inv *iv, const char *section)
{
	health_inv_name_truncated(iv->truncated, section);
}

/* Appends item to list unless it holds max_items already (then marks it). */
static bool list_add(struct inv *iv, json_t *list, const char *section, json_t *item)
{
	if (item == NULL)
		return false;
	if (json_array_size(list) >= iv->ctx->max_items) {
		json_decref(item);
		mark_truncated(iv, section);
		return false;
	}
	return json_array_append_new(list, item) == 0;
}

static json_t *hs(const char *s)
{
	return health_inv_str(s, strlen(s));
}

static char *const tool_env[] = {"LC_ALL=C", "PATH=" PROC_DEFAULT_PATH, "SYSTEMD_COLORS=0",
                                 "SYSTEMD_PAGER=", NULL};

#define TOOL_DEADLINE_MS 20000
#define FQDN_DEADLINE_MS 3000 /* a resolver without an answer: fall back to the hostname */
#define TOOL_OUTPUT_MAX  (16u << 20)

/* Runs argv (name looked up in the fixed system PATH). 0 when it ran and
 * exited 0; otherwise the section's error is set. res is the caller's. */
static int run_tool(struct inv *iv, const char *section, char *const *argv, int64_t deadline_ms,
                    struct proc_result *res)
{
	struct proc_spec spec = {
	    .argv = argv,
	    .envp = tool_env,
	    .flags = PROC_SEARCH_PATH | PROC_DIE_WITH_PARENT,
	    .deadline_ms = time_mono_ms() + deadline_ms,
	    .grace_ms = 1000,
	    .out_cap = TOOL_OUTPUT_MAX,
	    .cancel = iv->ctx->cancel,
	};
	struct vm_err err = {0};
	memset(res, 0, sizeof(*res));
	if (proc_run(&spec, res, &err) != 0) {
		section_error(iv, section, "%s: %s", argv[0], err.msg);
		return -1;
	}
	if (res->exit_code != 0 || res->timed_out || res->canceled) {
		char how[128];
		proc_result_describe(res, how, sizeof(how));
		/* the tool's own words, on one line */
		char said[301];
		size_t n = res->err_len < sizeof(said) - 1 ? res->err_len : sizeof(said) - 1;
		for (size_t i = 0; i < n; i++)
			said[i] = res->err[i] == '\n' ? ' ' : res->err[i];
		while (n > 0 && said[n - 1] == ' ')
			n--;
		said[n] = '\0';
		section_error(iv, section, "%s %s: %s%s%s", argv[0], argv[1], how, n ? ": " : "",
		              said);
		return -1;
	}
	if (res->out_truncated)
		mark_truncated(iv, section);
	return 0;
}

static void collect_host(struct inv *iv)
{
	struct utsname u;
	if (uname(&u) != 0) {
		section_error(iv, "kernel", "uname failed");
	} else {
		json_object_set_new(iv->doc, "kernel",
		                    json_pack("{s:o,s:o,s:o}", "name", hs(u.sysname), "release",
		                              hs(u.release), "version", hs(u.version)));
		json_object_set_new(iv->doc, "architecture", hs(u.machine));
	}
	char host[256] = "";
	if (gethostname(host, sizeof(host) - 1) != 0)
		section_error(iv, "host", "gethostname failed");
	/* FQDN: the resolver may hang (a dead DNS server), so ask hostname(1)
	 * under a deadline rather than call getaddrinfo on this thread */
	json_t *h = json_pack("{s:o}", "hostname", hs(host));
	char *const argv[] = {"hostname", "--fqdn", NULL};
	struct proc_result r;
	if (run_tool(iv, "host", argv, FQDN_DEADLINE_MS, &r) == 0 && r.out != NULL) {
		size_t n = r.out_len;
		while (n > 0 && (r.out[n - 1] == '\n' || r.out[n - 1] == ' '))
			n--;
		json_object_set_new(h, "fqdn", health_inv_str(r.out, n));
	} else {
		json_object_set_new(h, "fqdn", hs(host));
	}
	proc_result_free(&r);
	json_object_set_new(iv->doc, "host", h);
}

/* etc_root/os-release, else the vendor copy it links to (the text, freed by
 * the caller), NULL with err set. */
static char *read_os_release(const char *etc_root, struct vm_err *err)
{
	static const char *const files[] = {"os-release", "../usr/lib/os-release"};
	char *t = NULL;
	for (size_t i = 0; i < 2 && t == NULL; i++) {
		char path[PATH_MAX];
		snprintf(path, sizeof(path), "%s/%s", etc_root, files[i]);
		if (fs_read_file(path, 64 << 10, &t, NULL, err) != 0)
			t = NULL;
	}
	return t;
}

const char *health_os_pkg_manager_of(const char *id, const char *id_like)
{
	static const struct {
		const char *word, *manager;
	} families[] = {
	    {"debian", "apt"},     {"ubuntu", "apt"},      {"opensuse", "zypper"}, {"suse", "zypper"},
	    {"sles", "zypper"},    {"sled", "zypper"},     {"opensuse-leap", "zypper"},
	    {"opensuse-tumbleweed", "zypper"},             {"fedora", "dnf"},      {"rhel", "dnf"},
	    {"centos", "dnf"},     {"rocky", "dnf"},       {"almalinux", "dnf"},   {"ol", "dnf"},
	    {"amzn", "dnf"},       {"alpine", "apk"}};
	/* ID names the OS itself: it wins over ID_LIKE, whose words go from the
	 * closest family to the farthest */
	const char *lists[] = {id != NULL ? id : "", id_like != NULL ? id_like : ""};
	for (size_t l = 0; l < 2; l++) {
		for (const char *p = lists[l]; *p != '\0';) {
			while (*p == ' ')
				p++;
			size_t n = strcspn(p, " ");
			for (size_t i = 0; n > 0 && i < sizeof(families) / sizeof(families[0]); i++)
				if (strlen(families[i].word) == n && memcmp(p, families[i].word, n) == 0)
					return families[i].manager;
			p += n;
		}
	}
	return NULL;
}

const char *health_os_pkg_manager(const char *etc_root)
{
	struct vm_err err = {0};
	char *t = read_os_release(etc_root, &err);
	struct health_os_release os;
	const char *m = t != NULL && health_inv_parse_os_release(t, &os) == 0
	                    ? health_os_pkg_manager_of(os.id, os.id_like)
	                    : NULL;
	free(t);
	return m;
}

static void collect_os(struct inv *iv)
{
	struct vm_err err = {0};
	char *t = read_os_release(iv->ctx->etc_root, &err);
	struct health_os_release os;
	if (t == NULL) {
		section_error(iv, "os", "%s", err.msg);
		return;
	}
	if (health_inv_parse_os_release(t, &os) != 0) {
		section_error(iv, "os", "os-release has none of ID, NAME, VERSION_ID");
	} else {
		json_object_set_new(
		    iv->doc, "os",
		    json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "id", hs(os.id), "id_like",
		              hs(os.id_like), "name", hs(os.name), "version", hs(os.version),
		              "version_id", hs(os.version_id), "version_codename",
		              hs(os.version_codename), "pretty_name", hs(os.pretty_name)));
	}
	free(t);
}

static void collect_cpu_memory(struct inv *iv)
{
	char *t;
	struct health_cpu_info cpu;
	if (health_read_proc(&iv->ctx->proc, "cpuinfo", &t) != 0) {
		section_error(iv, "cpu", "cannot read cpuinfo");
	} else {
		if (health_inv_parse_cpuinfo(t, &cpu) != 0) {
			long n = sysconf(_SC_NPROCESSORS_ONLN);
			cpu.count = n > 0 ? (uint64_t)n : 0;
		}
		json_object_set_new(
		    iv->doc, "cpu",
		    json_pack("{s:o,s:I}", "model", hs(cpu.model), "count", (json_int_t)cpu.count));
		free(t);
	}
	struct health_system *sys = calloc(1, sizeof(*sys));
	if (sys == NULL || health_read_proc(&iv->ctx->proc, "meminfo", &t) != 0) {
		section_error(iv, "memory", "cannot read meminfo");
		free(sys);
		return;
	}
	if (health_parse_meminfo(t, sys) != 0)
		section_error(iv, "memory", "meminfo not understood");
	else
		json_object_set_new(iv->doc, "memory",
		                    json_pack("{s:I,s:I}", "total_bytes",
		                              (json_int_t)sys->mem_total, "swap_total_bytes",
		                              (json_int_t)sys->swap_total));
	free(t);
	free(sys);
}

#define INV_MAX_FS 256

static void collect_filesystems(struct inv *iv)
{
	size_t cap = iv->ctx->max_items < INV_MAX_FS ? iv->ctx->max_items : INV_MAX_FS;
	struct health_fs *fs = calloc(cap, sizeof(*fs));
	size_t n = 0;
	json_t *list = json_array();
	json_object_set_new(iv->doc, "filesystems", list);
	if (fs == NULL || health_collect_filesystems(&iv->ctx->proc, fs, cap, &n) != 0) {
		section_error(iv, "filesystems", "cannot read or parse the mounts file");
		free(fs);
		return;
	}
	if (n == cap)
		mark_truncated(iv, "filesystems");
	for (size_t i = 0; i < n; i++)
		list_add(iv, list, "filesystems",
		         json_pack("{s:o,s:o,s:o,s:I,s:I,s:I,s:I}", "device", hs(fs[i].device),
		                   "mount", hs(fs[i].mount), "fstype", hs(fs[i].fstype),
		                   "size_bytes", (json_int_t)fs[i].size_bytes, "avail_bytes",
		                   (json_int_t)fs[i].avail_bytes, "inodes_total",
		                   (json_int_t)fs[i].inodes_total, "inodes_free",
		                   (json_int_t)fs[i].inodes_free));
	free(fs);
}

static unsigned prefix_len(const uint8_t *mask, size_t n)
{
	unsigned bits = 0;
	for (size_t i = 0; i < n; i++)
		bits += (unsigned)__builtin_popcount(mask[i]);
	return bits;
}

#define INV_MAX_IFACES 256

struct ifaces {
	size_t n;
	struct {
		char name[IFNAMSIZ]; /* the kernel's bytes, maybe not UTF-8 */
		json_t *o;           /* borrowed from the list */
	} at[INV_MAX_IFACES];
};

static json_t *iface_of(struct inv *iv, json_t *list, struct ifaces *seen, const char *name)
{
	for (size_t i = 0; i < seen->n; i++)
		if (strcmp(seen->at[i].name, name) == 0)
			return seen->at[i].o;
	if (seen->n == INV_MAX_IFACES) {
		mark_truncated(iv, "interfaces");
		return NULL;
	}
	json_t *o = json_pack("{s:o,s:[],s:[]}", "name", hs(name), "flags", "addresses");
	if (!list_add(iv, list, "interfaces", o))
		return NULL;
	snprintf(seen->at[seen->n].name, IFNAMSIZ, "%s", name);
	seen->at[seen->n++].o = o;
	return o;
}

static void collect_interfaces(struct inv *iv)
{
	json_t *list = json_array();
	json_object_set_new(iv->doc, "interfaces", list);
	struct ifaddrs *ifa;
	struct ifaces *seen = calloc(1, sizeof(*seen));
	if (seen == NULL || getifaddrs(&ifa) != 0) {
		section_error(iv, "interfaces", "getifaddrs failed");
		free(seen);
		return;
	}
	for (struct ifaddrs *a = ifa; a != NULL; a = a->ifa_next) {
		/* interface names are at most IFNAMSIZ bytes but not necessarily UTF-8 */
		if (a->ifa_name == NULL || strlen(a->ifa_name) >= IFNAMSIZ)
			continue;
		json_t *o = iface_of(iv, list, seen, a->ifa_name);
		if (o == NULL)
			continue;
		json_t *flags = json_object_get(o, "flags");
		if (json_array_size(flags) == 0) {
			if (a->ifa_flags & IFF_UP)
				json_array_append_new(flags, json_string("up"));
			if (a->ifa_flags & IFF_RUNNING)
				json_array_append_new(flags, json_string("running"));
			if (a->ifa_flags & IFF_LOOPBACK)
				json_array_append_new(flags, json_string("loopback"));
		}
		if (a->ifa_addr == NULL)
			continue;
		int fam = a->ifa_addr->sa_family;
		char txt[INET6_ADDRSTRLEN];
		if (fam == AF_PACKET) {
			const struct sockaddr_ll *ll =
			    (const struct sockaddr_ll *)(void *)a->ifa_addr;
			if (ll->sll_halen == 6) {
				snprintf(txt, sizeof(txt), "%02x:%02x:%02x:%02x:%02x:%02x",
				         ll->sll_addr[0], ll->sll_addr[1], ll->sll_addr[2],
				         ll->sll_addr[3], ll->sll_addr[4], ll->sll_addr[5]);
				json_object_set_new(o, "mac", json_string(txt));
			}
			continue;
		}
		const void *ad, *mk = NULL;
		size_t mlen;
		if (fam == AF_INET) {
			ad = &((const struct sockaddr_in *)(void *)a->ifa_addr)->sin_addr;
			if (a->ifa_netmask != NULL)
				mk =
				    &((const struct sockaddr_in *)(void *)a->ifa_netmask)->sin_addr;
			mlen = 4;
		} else if (fam == AF_INET6) {
			ad = &((const struct sockaddr_in6 *)(void *)a->ifa_addr)->sin6_addr;
			if (a->ifa_netmask != NULL)
				mk = &((const struct sockaddr_in6 *)(void *)a->ifa_netmask)
				          ->sin6_addr;
			mlen = 16;
		} else {
			continue;
		}
		if (inet_ntop(fam, ad, txt, sizeof(txt)) == NULL)
			continue;
		json_t *addrs = json_object_get(o, "addresses");
		list_add(iv, addrs, "interfaces",
		         json_pack("{s:s,s:s,s:i}", "family", fam == AF_INET ? "inet" : "inet6",
		                   "address", txt, "prefix", mk ? (int)prefix_len(mk, mlen) : -1));
	}
	freeifaddrs(ifa);
	free(seen);
}

/* Calls fn on each line of text[0, len). */
static void each_line(const char *text, size_t len, void (*fn)(void *ctx, const char *l, size_t n),
                      void *ctx)
{
	const char *p = text, *end = text + len;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
		fn(ctx, p, n);
		p += n + 1;
	}
}

struct pkg_walk {
	struct inv *iv;
	json_t *list;
	int (*parse)(const char *line, size_t len, struct health_pkg *out);
	size_t bad;
};

static void pkg_line(void *ctx, const char *l, size_t n)
{
	struct pkg_walk *w = ctx;
	struct health_pkg pk;
	int rc = w->parse(l, n, &pk);
	if (rc < 0)
		w->bad++;
	if (rc != 0)
		return;
	list_add(w->iv, w->list, "packages",
	         json_pack("{s:o,s:o,s:o}", "name", hs(pk.name), "version", hs(pk.version),
	                   "architecture", hs(pk.arch)));
}

static void collect_packages(struct inv *iv)
{
	char *const dpkg[] = {"dpkg-query", "-W", "-f",
	                      "${Package}\t${Version}\t${Architecture}\t${db:Status-Abbrev}\n",
	                      NULL};
	char *const rpm[] = {"rpm", "-qa", "--queryformat",
	                     "%{NAME}\t%{EPOCH}\t%{VERSION}-%{RELEASE}\t%{ARCH}\n", NULL};
	char path[PATH_MAX];
	struct vm_err err = {0};
	struct pkg_walk w = {.iv = iv, .list = json_array()};
	char *const *argv;
	const char *manager;
	/* the database of the manager that owns the OS (os-release): a Debian
	 * host can have rpm installed, an rpm one dpkg; unknown OS: dpkg first */
	const char *owner = health_os_pkg_manager(iv->ctx->etc_root);
	bool rpm_os = owner != NULL && (strcmp(owner, "dnf") == 0 || strcmp(owner, "zypper") == 0);
	if (!rpm_os && proc_resolve("dpkg-query", path, sizeof(path), &err) == 0) {
		argv = dpkg;
		manager = "dpkg";
		w.parse = health_inv_parse_dpkg_line;
	} else if (proc_resolve("rpm", path, sizeof(path), &err) == 0) {
		argv = rpm;
		manager = "rpm";
		w.parse = health_inv_parse_rpm_line;
	} else {
		section_error(iv, "packages", "neither dpkg-query nor rpm found");
		json_decref(w.list);
		return;
	}
	json_object_set_new(iv->doc, "package_manager", json_string(manager));
	json_object_set_new(iv->doc, "packages", w.list);
	struct proc_result r;
	if (run_tool(iv, "packages", argv, TOOL_DEADLINE_MS, &r) == 0 && r.out != NULL) {
		each_line(r.out, r.out_len, pkg_line, &w);
		if (w.bad > 0)
			section_error(iv, "packages", "%zu lines of %s output not understood",
			              w.bad, argv[0]);
	}
	proc_result_free(&r);
}

struct unit_walk {
	struct inv *iv;
	json_t *by_name; /* name -> {name, active, sub, enabled} */
	size_t n;
};

static json_t *unit_entry(struct unit_walk *w, const char *name)
{
	json_t *o = json_object_get(w->by_name, name);
	if (o != NULL)
		return o;
	if (w->n >= w->iv->ctx->max_items) {
		mark_truncated(w->iv, "services");
		return NULL;
	}
	o = json_pack("{s:o}", "name", hs(name));
	if (o == NULL || json_object_set_new(w->by_name, name, o) != 0)
		return NULL;
	w->n++;
	return o;
}

static void unit_state(void *ctx, const char *name, const char *active, const char *sub)
{
	json_t *o = unit_entry(ctx, name);
	if (o == NULL)
		return;
	json_object_set_new(o, "active", hs(active));
	json_object_set_new(o, "sub", hs(sub));
}

static void unit_file(void *ctx, const char *name, const char *state, const char *unused)
{
	(void)unused;
	json_t *o = unit_entry(ctx, name);
	if (o != NULL)
		json_object_set_new(o, "enabled", hs(state));
}

/* One systemctl table, as JSON where systemctl has --output=json (systemd
 * 246 and later) and as the plain table otherwise. True when understood. */
static bool units_query(struct inv *iv, struct unit_walk *w, const char *verb, bool all,
                        const char *name_key, const char *k1, const char *k2, int c1, int c2,
                        health_unit_fn fn)
{
	for (int plain = 0; plain < 2; plain++) {
		char *argv[8] = {"systemctl", (char *)verb, "--type=service", "--no-pager"};
		int n = 4;
		if (all)
			argv[n++] = "--all";
		if (plain) {
			argv[n++] = "--no-legend";
			argv[n++] = "--plain";
		} else {
			argv[n++] = "--output=json";
		}
		argv[n] = NULL;
		struct proc_result r;
		bool ok = false;
		if (run_tool(iv, "services", argv, TOOL_DEADLINE_MS, &r) == 0 && r.out != NULL) {
			int got =
			    plain ? health_inv_parse_units_plain(r.out, r.out_len, c1, c2, fn, w)
			          : health_inv_parse_units_json(r.out, r.out_len, name_key, k1, k2,
			                                        fn, w);
			if (got >= 0)
				ok = true;
			else
				section_error(iv, "services", "systemctl %s: output not understood",
				              verb);
		}
		proc_result_free(&r);
		if (ok) {
			if (plain) /* the JSON attempt's complaint is moot */
				json_object_del(iv->errors, "services");
			return true;
		}
	}
	return false;
}

static void collect_services(struct inv *iv)
{
	struct unit_walk w = {.iv = iv, .by_name = json_object()};
	bool any = units_query(iv, &w, "list-unit-files", false, "unit_file", "state", NULL, 1, -1,
	                       unit_file);
	/* without a running systemd (containers, chroots) only the unit files are known */
	any |= units_query(iv, &w, "list-units", true, "unit", "active", "sub", 2, 3, unit_state);
	json_t *list = json_array();
	const char *k;
	json_t *v;
	json_object_foreach(w.by_name, k, v) json_array_append(list, v);
	json_decref(w.by_name);
	if (any || json_array_size(list) > 0)
		json_object_set_new(iv->doc, "services", list);
	else
		json_decref(list);
}

struct acct_walk {
	struct inv *iv;
	json_t *list;
	bool group;
	size_t bad;
	struct group_entry g;
	struct passwd_entry p;
};

static void acct_line(void *ctx, const char *l, size_t n)
{
	struct acct_walk *w = ctx;
	struct group_entry *g = &w->g;
	struct passwd_entry *p = &w->p;
	json_t *o;
	if (w->group) {
		int rc = group_parse_line(l, n, g, NULL);
		if (rc != PASSWD_LINE_OK) {
			w->bad += rc < 0;
			return;
		}
		json_t *members = json_array();
		for (const char *m = g->members; *m != '\0';) {
			const char *c = strchr(m, ',');
			size_t ml = c != NULL ? (size_t)(c - m) : strlen(m);
			if (json_array_size(members) >= w->iv->ctx->max_items) {
				mark_truncated(w->iv, "groups");
				break;
			}
			json_array_append_new(members, health_inv_str(m, ml));
			m += ml + (c != NULL);
		}
		o = json_pack("{s:o,s:I,s:o}", "name", hs(g->name), "gid", (json_int_t)g->gid,
		              "members", members);
	} else {
		int rc = passwd_parse_line(l, n, p, NULL);
		if (rc != PASSWD_LINE_OK) {
			w->bad += rc < 0;
			return;
		}
		o = json_pack("{s:o,s:I,s:I,s:o,s:o,s:o}", "name", hs(p->name), "uid",
		              (json_int_t)p->uid, "gid", (json_int_t)p->gid, "gecos", hs(p->gecos),
		              "home", hs(p->home), "shell", hs(p->shell));
	}
	list_add(w->iv, w->list, w->group ? "groups" : "users", o);
}

#define ACCOUNT_FILE_MAX (64u << 20)

static void collect_accounts(struct inv *iv, bool group)
{
	const char *section = group ? "groups" : "users";
	char path[PATH_MAX], *t;
	size_t len;
	struct vm_err err = {0};
	snprintf(path, sizeof(path), "%s/%s", iv->ctx->etc_root, group ? "group" : "passwd");
	struct acct_walk *w = calloc(1, sizeof(*w));
	json_t *list = json_array();
	json_object_set_new(iv->doc, section, list);
	if (w == NULL) {
		section_error(iv, section, "out of memory");
		return;
	}
	*w = (struct acct_walk){.iv = iv, .list = list, .group = group};
	if (fs_read_file(path, ACCOUNT_FILE_MAX, &t, &len, &err) != 0) {
		section_error(iv, section, "%s", err.msg);
		free(w);
		return;
	}
	each_line(t, len, acct_line, w);
	if (w->bad > 0)
		section_error(iv, section, "%zu lines of %s not understood", w->bad, path);
	free(t);
	free(w);
}

struct sock_walk {
	struct inv *iv;
	json_t *list, *seen;
	const char *proto;
	bool v6, udp;
	size_t bad;
};

static void sock_line(void *ctx, const char *l, size_t n)
{
	struct sock_walk *w = ctx;
	struct health_sock s;
	int rc = health_inv_parse_net_line(l, n, w->v6, &s);
	if (rc < 0)
		w->bad++;
	if (rc != 0)
		return;
	/* TCP: LISTEN; UDP: bound and not connected to a peer */
	if (w->udp ? !(s.state == 0x07 && s.remote_any) : s.state != 0x0A)
		return;
	char key[80];
	snprintf(key, sizeof(key), "%s %s %u", w->proto, s.addr, s.port);
	if (json_object_get(w->seen, key) != NULL) /* SO_REUSEPORT: one socket per worker */
		return;
	json_object_set_new(w->seen, key, json_true());
	list_add(w->iv, w->list, "listening",
	         json_pack("{s:s,s:s,s:i,s:I,s:I}", "protocol", w->proto, "address", s.addr, "port",
	                   (int)s.port, "uid", (json_int_t)s.uid, "inode", (json_int_t)s.inode));
}

static void collect_listening(struct inv *iv)
{
	static const struct {
		const char *file, *proto;
		bool v6, udp;
	} files[] = {{"net/tcp", "tcp", false, false},
	             {"net/tcp6", "tcp6", true, false},
	             {"net/udp", "udp", false, true},
	             {"net/udp6", "udp6", true, true}};
	struct sock_walk w = {.iv = iv, .list = json_array(), .seen = json_object()};
	json_object_set_new(iv->doc, "listening", w.list);
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		char *t;
		/* no IPv6 in the kernel: no tcp6/udp6 files, nothing missing */
		if (health_read_proc(&iv->ctx->proc, files[i].file, &t) != 0) {
			if (!files[i].v6)
				section_error(iv, "listening", "cannot read %s", files[i].file);
			continue;
		}
		w.proto = files[i].proto;
		w.v6 = files[i].v6;
		w.udp = files[i].udp;
		each_line(t, strlen(t), sock_line, &w);
		free(t);
	}
	json_decref(w.seen);
	if (w.bad > 0)
		section_error(iv, "listening", "%zu socket lines not understood", w.bad);
}

json_t *health_inventory_collect(const struct health_inv_ctx *ctx)
{
	struct inv iv = {
	    .ctx = ctx, .doc = json_object(), .errors = json_object(), .truncated = json_array()};
	if (iv.doc == NULL || iv.errors == NULL || iv.truncated == NULL) {
		json_decref(iv.doc);
		json_decref(iv.errors);
		json_decref(iv.truncated);
		return NULL;
	}
	char at[TIME_RFC3339_MAX];
	time_rfc3339(at, sizeof(at), time_wall_ms(), true);
	json_object_set_new(iv.doc, "collected_at", json_string(at));
	collect_host(&iv);
	collect_os(&iv);
	collect_cpu_memory(&iv);
	collect_filesystems(&iv);
	collect_interfaces(&iv);
	collect_packages(&iv);
	collect_services(&iv);
	collect_accounts(&iv, false);
	collect_accounts(&iv, true);
	collect_listening(&iv);
	json_object_set_new(iv.doc, "truncated", iv.truncated);
	json_object_set_new(iv.doc, "errors", iv.errors);
	return iv.doc;
}
