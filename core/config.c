/* Configuration loader and editor, the one owner of config.yaml. One table lists
 * every key with its type, default and bounds; the YAML walk (which loads, and
 * for edits also says where each key sits), environment overrides, dump and
 * docs all use it. */
#include "core/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include "core/buf.h"
#include "core/codec.h"
#include "core/fs.h"
#include "core/net.h"

#define CFG_FILE_MAX (1024 * 1024)

enum cfg_type { T_STR, T_INT, T_BOOL, T_DURATION, T_SIZE, T_FLOAT, T_ENUM, T_STRLIST };

struct cfg_key {
	const char *name;
	enum cfg_type type;
	size_t off;
	size_t size;
	const char *def;
	double min, max;
	const char *choices; /* T_ENUM: "a|b|c", stored as the index */
	bool secret;
	/* What a reload does with a change (the running agent's behaviour, see
	 * reload in cmd/cmd_run.c): LIVE rows are applied; the rest, by default,
	 * keep their old value until a restart, and the reload says so. */
	enum cfg_apply apply;
};

/* Rows: name, field, default[, bounds][, LIVE]. */
#define LIVE     .apply = CFG_APPLY_LIVE
#define FIELD(f) .off = offsetof(struct cfg, f), .size = sizeof(((struct cfg *)0)->f)
#define STR(n, f, d, ...)                                                 \
	{                                                                 \
		.name = n, .type = T_STR, FIELD(f), .def = d, __VA_ARGS__ \
	}
#define SECRET(n, f, d, ...)                                                              \
	{                                                                                 \
		.name = n, .type = T_STR, FIELD(f), .def = d, .secret = true, __VA_ARGS__ \
	}
#define INT(n, f, d, lo, hi, ...)                                                               \
	{                                                                                       \
		.name = n, .type = T_INT, FIELD(f), .def = d, .min = lo, .max = hi, __VA_ARGS__ \
	}
#define BOOL(n, f, d, ...)                                                 \
	{                                                                  \
		.name = n, .type = T_BOOL, FIELD(f), .def = d, __VA_ARGS__ \
	}
#define DUR(n, f, d, lo, hi, ...)                                                        \
	{                                                                                \
		.name = n, .type = T_DURATION, FIELD(f), .def = d, .min = lo, .max = hi, \
		__VA_ARGS__                                                              \
	}
#define SIZE(n, f, d, lo, hi, ...)                                                               \
	{                                                                                        \
		.name = n, .type = T_SIZE, FIELD(f), .def = d, .min = lo, .max = hi, __VA_ARGS__ \
	}
#define FLOAT(n, f, d, lo, hi, ...)                                                               \
	{                                                                                         \
		.name = n, .type = T_FLOAT, FIELD(f), .def = d, .min = lo, .max = hi, __VA_ARGS__ \
	}
#define ENUM(n, f, d, ch, ...)                                                            \
	{                                                                                 \
		.name = n, .type = T_ENUM, FIELD(f), .def = d, .choices = ch, __VA_ARGS__ \
	}
#define LIST(n, f, d, ...)                                                    \
	{                                                                     \
		.name = n, .type = T_STRLIST, FIELD(f), .def = d, __VA_ARGS__ \
	}

#define DAY_MS 86400000.0
#define GIB    1073741824.0

static const struct cfg_key keys[] = {
    STR("agent.id", agent.id, ""),
    STR("agent.tenant_id", agent.tenant_id, ""),
    STR("agent.control_plane_url", agent.control_plane_url, "", LIVE),
    STR("agent.state_dir", agent.state_dir, ""),
    STR("agent.credentials_file", agent.credentials_file, "", LIVE),
    STR("agent.runtime_dir", agent.runtime_dir, ""),
    STR("agent.ca_file", agent.ca_file, "", LIVE),
    STR("agent.proxy_url", agent.proxy_url, "", LIVE),
    STR("agent.proxy_credentials_file", agent.proxy_credentials_file, "", LIVE),

    STR("piko.server_url", piko.server_url, "", LIVE),
    LIST("piko.fallback_urls", piko.fallback_urls, "", LIVE),
    STR("piko.endpoint", piko.endpoint, "", LIVE),
    SECRET("piko.token", piko.token, "", LIVE),
    STR("piko.token_file", piko.token_file, "", LIVE),
    STR("piko.ca_file", piko.ca_file, "", LIVE),
    BOOL("piko.insecure_skip_verify", piko.insecure_skip_verify, "false", LIVE),
    STR("piko.proxy_url", piko.proxy_url, "", LIVE),
    DUR("piko.connect_timeout", piko.connect_timeout_ms, "10s", 100, 600000, LIVE),
    DUR("piko.reconnect.initial_delay", piko.reconnect.initial_delay_ms, "1s", 10, DAY_MS, LIVE),
    DUR("piko.reconnect.max_delay", piko.reconnect.max_delay_ms, "60s", 10, DAY_MS, LIVE),
    FLOAT("piko.reconnect.multiplier", piko.reconnect.multiplier, "2.0", 1.0, 10.0, LIVE),
    STR("piko.forward_addr", piko.forward_addr, "", LIVE),
    INT("piko.max_streams", piko.max_streams, "1024", 1, 65536, LIVE),
    DUR("piko.keepalive_interval", piko.keepalive_interval_ms, "30s", 100, 3600000, LIVE),
    DUR("piko.keepalive_timeout", piko.keepalive_timeout_ms, "10s", 100, 600000, LIVE),
    DUR("piko.stop_grace", piko.stop_grace_ms, "10s", 0, 600000, LIVE),

    STR("webhook.listen_addr", webhook.listen_addr, "127.0.0.1", LIVE),
    INT("webhook.port", webhook.port, "9999", 1, 65535, LIVE),
    BOOL("webhook.tls_enabled", webhook.tls_enabled, "false", LIVE),
    STR("webhook.tls_cert_file", webhook.tls_cert_file, "", LIVE),
    STR("webhook.tls_key_file", webhook.tls_key_file, "", LIVE),
    SIZE("webhook.max_body", webhook.max_body, "4MiB", 1024, GIB, LIVE),
    DUR("webhook.request_timeout", webhook.request_timeout_ms, "30s", 100, 3600000, LIVE),
    INT("webhook.num_threads", webhook.num_threads, "16", 2, 256, LIVE),
    INT("webhook.tunnel_threads", webhook.tunnel_threads, "16", 2, 256, LIVE),

    LIST("auth.jwt_keys", auth.jwt_keys, "", LIVE),
    STR("auth.issuer", auth.issuer, "", LIVE),
    DUR("auth.max_token_lifetime", auth.max_token_lifetime_ms, "1h", 1000, DAY_MS, LIVE),
    INT("auth.replay_cache_size", auth.replay_cache_size, "50000", 16, 10000000, LIVE),
    STR("auth.audit_file", auth.audit_file, "", LIVE),
    SIZE("auth.audit_max_size", auth.audit_max_size, "10MiB", 4096, 64 * GIB, LIVE),
    INT("auth.audit_max_files", auth.audit_max_files, "5", 0, 100, LIVE),

    STR("probe.work_dir", probe.work_dir, ""),
    DUR("probe.default_timeout", probe.default_timeout_ms, "300s", 100, 7 * DAY_MS, LIVE),
    INT("probe.max_concurrent", probe.max_concurrent, "5", 1, 256),
    INT("probe.queue_size", probe.queue_size, "64", 1, 100000),
    SIZE("probe.output_cap", probe.output_cap, "1MiB", 1024, GIB),
    INT("probe.retention_count", probe.retention_count, "1000", 1, 1000000, LIVE),
    DUR("probe.retention_age", probe.retention_age_ms, "7d", 1000, 365 * DAY_MS, LIVE),
    DUR("probe.cancel_grace", probe.cancel_grace_ms, "5s", 0, 600000, LIVE),
    LIST("probe.allow", probe.allow, "", LIVE),
    SIZE("probe.memory_max", probe.memory_max, "0", 0, 1024 * GIB, LIVE),
    INT("probe.cpu_max", probe.cpu_max, "0", 0, 100000, LIVE),
    INT("probe.pids_max", probe.pids_max, "4096", 0, 4194304, LIVE),
    STR("probe.cgroup_root", probe.cgroup_root, "/sys/fs/cgroup"),

    DUR("host.apt_lists_max_age", host.apt_lists_max_age_ms, "24h", 0, 365 * DAY_MS, LIVE),
    BOOL("containers.enabled", containers.enabled, "true"),
    STR("containers.socket", containers.socket, "/var/run/docker.sock"),
    BOOL("containers.manage_unlabeled", containers.manage_unlabeled, "false"),
    BOOL("shell.enabled", shell.enabled, "true"),
    STR("shell.default", shell.default_cmd, "/bin/bash"),
    STR("shell.default_user", shell.default_user, "root"),
    INT("shell.max_sessions", shell.max_sessions, "4", 0, 64),
    DUR("shell.idle_timeout", shell.idle_timeout_ms, "15m", 1000, 7 * DAY_MS),
    DUR("shell.max_duration", shell.max_duration_ms, "12h", 1000, 7 * DAY_MS),
    SIZE("shell.record_max_bytes", shell.record_max_bytes, "64MiB", 4096, 64 * GIB),
    BOOL("shell.record_input", shell.record_input, "true"),
    INT("shell.retention_count", shell.retention_count, "200", 1, 1000000),
    DUR("shell.retention_age", shell.retention_age_ms, "30d", 1000, 3650 * DAY_MS),
    INT("limits.max_concurrent", limits.max_concurrent, "0", 0, 320, LIVE),
    STR("backup.ssh_identity", backup.ssh_identity, "", LIVE),
    STR("backup.known_hosts", backup.known_hosts, "", LIVE),
    DUR("backup.connect_timeout", backup.connect_timeout_ms, "10s", 1000, 600000, LIVE),
    DUR("backup.io_timeout", backup.io_timeout_ms, "5m", 1000, DAY_MS, LIVE),

    DUR("health.check_interval", health.check_interval_ms, "30s", 1000, DAY_MS, LIVE),
    DUR("health.report_interval", health.report_interval_ms, "300s", 1000, DAY_MS, LIVE),
    STR("health.proc_root", health.proc_root, "/proc"),
    FLOAT("health.disk_warn_percent", health.disk_warn_percent, "90", 1, 100, LIVE),
    FLOAT("health.disk_critical_percent", health.disk_critical_percent, "95", 1, 100, LIVE),
    FLOAT("health.memory_warn_percent", health.memory_warn_percent, "95", 1, 100, LIVE),
    DUR("health.tunnel_down_after", health.tunnel_down_after_ms, "5m", 1000, DAY_MS, LIVE),
    DUR("health.control_plane_unreachable_after", health.control_plane_unreachable_after_ms, "15m",
        1000, 7 * DAY_MS, LIVE),
    DUR("health.clock_skew_max", health.clock_skew_max_ms, "60s", 1000, DAY_MS, LIVE),
    INT("health.spool_max_entries", health.spool_max_entries, "1000", 1, 1000000, LIVE),
    SIZE("health.spool_max_bytes", health.spool_max_bytes, "10MiB", 4096, 10 * GIB, LIVE),
    DUR("inventory.cache_ttl", inventory.cache_ttl_ms, "60s", 0, DAY_MS, LIVE),
    INT("inventory.max_items", inventory.max_items, "10000", 1, 1000000, LIVE),
    SIZE("inventory.max_bytes", inventory.max_bytes, "4MiB", 4096, 256.0 * 1048576.0, LIVE),

    ENUM("log.level", log.level, "info", "debug|info|warn|error", LIVE),
    ENUM("log.format", log.format, "text", "text|json", LIVE),
    STR("log.file", log.file, "", LIVE),
    SIZE("log.max_size", log.max_size, "10MiB", 4096, 64 * GIB, LIVE),
    INT("log.max_files", log.max_files, "5", 0, 100, LIVE),

    STR("upgrade.public_keys", upgrade.public_keys, "", LIVE),
    DUR("upgrade.health_timeout", upgrade.health_timeout_ms, "60s", 1000, 3600000, LIVE),
    SIZE("upgrade.max_size", upgrade.max_size, "512MiB", 4096, 4 * GIB, LIVE),
};
#define NKEYS (sizeof(keys) / sizeof(keys[0]))

size_t cfg_key_count(void)
{
	return NKEYS;
}

const char *cfg_key_name(size_t i)
{
	return i < NKEYS ? keys[i].name : NULL;
}

enum cfg_apply cfg_key_apply(size_t i)
{
	return i < NKEYS ? keys[i].apply : CFG_APPLY_RESTART;
}

bool cfg_key_differs(const struct cfg *a, const struct cfg *b, size_t i)
{
	if (i >= NKEYS)
		return false;
	const char *fa = (const char *)a + keys[i].off, *fb = (const char *)b + keys[i].off;
	if (keys[i].type == T_STR)
		return strcmp(fa, fb) != 0; /* bytes after the NUL mean nothing */
	if (keys[i].type == T_STRLIST) {
		const struct cfg_strlist *la = (const void *)fa, *lb = (const void *)fb;
		if (la->count != lb->count)
			return true;
		for (int k = 0; k < la->count; k++)
			if (strcmp(la->items[k], lb->items[k]) != 0)
				return true;
		return false;
	}
	return memcmp(fa, fb, keys[i].size) != 0;
}

bool cfg_keys_differ(const struct cfg *a, const struct cfg *b, const char *const *names)
{
	for (size_t i = 0; i < NKEYS; i++)
		for (const char *const *n = names; *n != NULL; n++) {
			size_t len = strlen(*n);
			bool section = len > 0 && (*n)[len - 1] == '.';
			if ((section ? strncmp(keys[i].name, *n, len) == 0
			             : strcmp(keys[i].name, *n) == 0) &&
			    cfg_key_differs(a, b, i))
				return true;
		}
	return false;
}

void cfg_key_copy(struct cfg *dst, const struct cfg *src, size_t i)
{
	if (i < NKEYS)
		memcpy((char *)dst + keys[i].off, (const char *)src + keys[i].off, keys[i].size);
}

/* Where a key's value came from, for error messages after the walk. */
struct cfg_origin {
	int line, col; /* 1-based; 0 = not from the file */
	char env[96];  /* environment variable name, or "" */
};

/* Where a key sits in the text (byte offsets), recorded when the walk serves
 * an edit (cfg_doc_*): edits splice the text there and keep everything else. */
struct cfg_span {
	bool present;
	bool ok;        /* the value parsed (an edit may still fix it) */
	bool block_seq; /* the value is a block sequence ("- item" lines) */
	bool in_flow;   /* the enclosing mapping is a flow mapping {…} */
	size_t key_start, key_end, val_start, val_end;
	size_t content_end; /* end of the last scalar inside the value */
};

/* A section ("" = the top level): where a missing key of it is inserted. */
struct cfg_section_span {
	char name[64];
	bool null_value; /* "health:" or "health: ~" (or an empty file's "~") */
	bool flow, has_pairs;
	size_t key_col, key_end; /* of the section's own key */
	size_t indent;           /* column of its keys (block style) */
	size_t val_start, val_end, content_end;
};

#define CFG_SECTIONS_MAX 24

struct cfg_spans {
	struct cfg_span key[NKEYS];
	struct cfg_section_span sec[CFG_SECTIONS_MAX];
	size_t nsec;
	size_t step; /* the file's indentation step (0 = not seen yet) */
};

struct loader {
	struct cfg *cfg;
	const char *name;
	struct cfg_origin origin[NKEYS];
	struct vm_err *err;
	struct cfg_spans *sp; /* non-NULL when walking for an edit */
};

/* --- scalar parsing ------------------------------------------------------------------ */

struct unit {
	const char *suffix;
	double mult;
};

static int parse_with_units(const char *s, const struct unit *units, double dflt_mult,
                            uint64_t *out)
{
	if (s == NULL || *s == '\0' || isspace((unsigned char)*s) || *s == '-' || *s == '+')
		return -1;
	errno = 0;
	char *end;
	double v = strtod(s, &end);
	if (errno != 0 || end == s || !isfinite(v) || v < 0)
		return -1;
	double mult = dflt_mult;
	if (*end != '\0') {
		const struct unit *u = units;
		while (u->suffix != NULL && strcmp(end, u->suffix) != 0)
			u++;
		if (u->suffix == NULL)
			return -1;
		mult = u->mult;
	}
	double r = v * mult;
	if (r > 1.8e19 || r != floor(r))
		return -1;
	*out = (uint64_t)r;
	return 0;
}

int cfg_parse_duration(const char *s, uint64_t *ms)
{
	static const struct unit units[] = {
	    {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}, {NULL, 0},
	};
	return parse_with_units(s, units, 1000, ms);
}

int cfg_parse_size(const char *s, uint64_t *bytes)
{
	static const struct unit units[] = {
	    {"B", 1},         {"KiB", 1024.0},     {"MiB", 1048576.0}, {"GiB", 1073741824.0},
	    {"KB", 1e3},      {"MB", 1e6},         {"GB", 1e9},        {"K", 1024.0},
	    {"M", 1048576.0}, {"G", 1073741824.0}, {NULL, 0},
	};
	return parse_with_units(s, units, 1, bytes);
}

static int parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = {"true", "yes", "on", "1"};
	static const char *const no[] = {"false", "no", "off", "0"};
	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(s, yes[i]) == 0)
			return *out = true, 0;
		if (strcasecmp(s, no[i]) == 0)
			return *out = false, 0;
	}
	return -1;
}

static int parse_enum(const char *s, const char *choices, int *out)
{
	int idx = 0;
	size_t n = strlen(s);
	for (const char *p = choices;; idx++) {
		const char *bar = strchr(p, '|');
		size_t len = bar ? (size_t)(bar - p) : strlen(p);
		if (len == n && strncmp(p, s, n) == 0)
			return *out = idx, 0;
		if (bar == NULL)
			return -1;
		p = bar + 1;
	}
}

static void describe_range(const struct cfg_key *k, char *why, size_t cap)
{
	switch (k->type) {
	case T_INT:
		snprintf(why, cap, "expected integer %.0f-%.0f", k->min, k->max);
		break;
	case T_BOOL:
		snprintf(why, cap, "expected true or false");
		break;
	case T_DURATION:
		snprintf(why, cap,
		         "expected a duration like 500ms, 30s, 5m between %.0fms and %.0fms",
		         k->min, k->max);
		break;
	case T_SIZE:
		snprintf(why, cap, "expected a size like 512KiB, 10MiB between %.0f and %.0f bytes",
		         k->min, k->max);
		break;
	case T_FLOAT:
		snprintf(why, cap, "expected a number %.1f-%.1f", k->min, k->max);
		break;
	case T_ENUM:
		snprintf(why, cap, "expected one of %s", k->choices);
		break;
	case T_STR:
		snprintf(why, cap, "value too long (at most %zu bytes)", k->size - 1);
		break;
	case T_STRLIST:
		snprintf(why, cap,
		         "expected a list of at most %d non-empty strings of at most %d bytes",
		         CFG_LIST_MAX, CFG_STR_MAX - 1);
		break;
	}
}

/* Appends one entry to a list key; -1 when it is empty, too long or one too many. */
static int list_append(struct cfg_strlist *l, const char *val, size_t len)
{
	if (len == 0 || len >= CFG_STR_MAX || l->count >= CFG_LIST_MAX)
		return -1;
	memcpy(l->items[l->count], val, len);
	l->items[l->count++][len] = '\0';
	return 0;
}

/* A scalar list value (defaults, environment): comma-separated, spaces trimmed. */
static int parse_list(const char *val, struct cfg_strlist *l)
{
	memset(l, 0, sizeof(*l));
	for (const char *p = val; *p != '\0';) {
		size_t n = strcspn(p, ",");
		const char *b = p, *e = p + n;
		while (b < e && isspace((unsigned char)*b))
			b++;
		while (e > b && isspace((unsigned char)e[-1]))
			e--;
		if (list_append(l, b, (size_t)(e - b)) != 0)
			return -1;
		p += n;
		if (*p == ',' && *++p == '\0')
			return -1; /* a trailing comma hides an empty entry */
	}
	return 0;
}

/* Stores the text value of key k into cfg; on error writes the reason to why. */
static int set_value(struct cfg *cfg, const struct cfg_key *k, const char *val, char *why,
                     size_t cap)
{
	char *field = (char *)cfg + k->off;
	uint64_t u = 0;
	int rc = 0;
	switch (k->type) {
	case T_STR:
		if (strlen(val) >= k->size)
			rc = -1;
		else
			memcpy(field, val, strlen(val) + 1);
		break;
	case T_INT: {
		char *end;
		errno = 0;
		long v = strtol(val, &end, 10);
		if (errno != 0 || end == val || *end != '\0' || v < (long)k->min ||
		    v > (long)k->max)
			rc = -1;
		else
			*(int *)(void *)field = (int)v;
		break;
	}
	case T_BOOL:
		rc = parse_bool(val, (bool *)(void *)field);
		break;
	case T_DURATION:
	case T_SIZE:
		rc = k->type == T_DURATION ? cfg_parse_duration(val, &u) : cfg_parse_size(val, &u);
		if (rc == 0 && ((double)u < k->min || (double)u > k->max))
			rc = -1;
		if (rc == 0)
			*(uint64_t *)(void *)field = u;
		break;
	case T_FLOAT: {
		char *end;
		errno = 0;
		double v = strtod(val, &end);
		if (errno != 0 || end == val || *end != '\0' || !(v >= k->min && v <= k->max))
			rc = -1;
		else
			*(double *)(void *)field = v;
		break;
	}
	case T_ENUM:
		rc = parse_enum(val, k->choices, (int *)(void *)field);
		break;
	case T_STRLIST:
		rc = parse_list(val, (struct cfg_strlist *)(void *)field);
		break;
	}
	if (rc != 0)
		describe_range(k, why, cap);
	return rc;
}

static const struct cfg_key *find_key(const char *name)
{
	for (size_t i = 0; i < NKEYS; i++)
		if (strcmp(keys[i].name, name) == 0)
			return &keys[i];
	return NULL;
}

/* True when name is a section (a prefix of some key followed by '.'). */
static bool is_section(const char *name)
{
	size_t n = strlen(name);
	for (size_t i = 0; i < NKEYS; i++)
		if (strncmp(keys[i].name, name, n) == 0 && keys[i].name[n] == '.')
			return true;
	return false;
}

void cfg_webhook_socket_path(const struct cfg *cfg, char *out, size_t cap)
{
	snprintf(out, cap, "%.*s/" CFG_WEBHOOK_SOCKET_NAME, (int)(cap > 16 ? cap - 16 : 0),
	         cfg->agent.runtime_dir);
}

void cfg_defaults(struct cfg *cfg)
{
	char why[128];
	memset(cfg, 0, sizeof(*cfg));
	for (size_t i = 0; i < NKEYS; i++)
		(void)set_value(cfg, &keys[i], keys[i].def, why, sizeof(why));
	snprintf(cfg->source, sizeof(cfg->source), "built-in defaults");
}

/* --- "did you mean" -------------------------------------------------------------- */

static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	if (la > 63 || lb > 63)
		return 64;
	size_t row[64];
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
			size_t best = diag + cost;
			if (row[j] + 1 < best)
				best = row[j] + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

/* Suggests the closest key or section to name; writes "" when nothing is close. */
static void suggest(const char *name, char *out, size_t cap)
{
	size_t best = 4;
	out[0] = '\0';
	for (size_t i = 0; i < NKEYS; i++) {
		char cand[128];
		snprintf(cand, sizeof(cand), "%s", keys[i].name);
		/* try the key itself and each of its section prefixes */
		for (;;) {
			size_t d = edit_distance(name, cand);
			if (d < best) {
				best = d;
				snprintf(out, cap, " (did you mean %s?)", cand);
			}
			char *dot = strrchr(cand, '.');
			if (dot == NULL)
				break;
			*dot = '\0';
		}
	}
}

/* --- YAML walk -------------------------------------------------------------------- */

static int fail_at(struct loader *ld, const yaml_node_t *node, const char *key, const char *fmt,
                   ...) __attribute__((format(printf, 4, 5)));

static int fail_at(struct loader *ld, const yaml_node_t *node, const char *key, const char *fmt,
                   ...)
{
	char why[200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	return vm_err_set(ld->err, VM_ERR_INVALID, "%s:%zu:%zu: %s: %s", ld->name,
	                  node->start_mark.line + 1, node->start_mark.column + 1,
	                  key[0] ? key : "(top level)", why);
}

static bool is_null_scalar(const yaml_node_t *n)
{
	const char *v = (const char *)n->data.scalar.value;
	return n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
	       (v[0] == '\0' || strcmp(v, "~") == 0 || strcmp(v, "null") == 0);
}

static int walk_mapping(struct loader *ld, yaml_document_t *doc, yaml_node_t *map,
                        const char *prefix);

/* A YAML sequence of plain strings into a list key; errors point at the entry. */
static int walk_list(struct loader *ld, yaml_document_t *doc, yaml_node_t *seq,
                     const struct cfg_key *k, const char *full)
{
	struct cfg_strlist *l = (struct cfg_strlist *)(void *)((char *)ld->cfg + k->off);
	memset(l, 0, sizeof(*l));
	int i = 0;
	for (yaml_node_item_t *it = seq->data.sequence.items.start;
	     it < seq->data.sequence.items.top; it++, i++) {
		yaml_node_t *n = yaml_document_get_node(doc, *it);
		if (n == NULL)
			return vm_err_set(ld->err, VM_ERR_INVALID, "%s: malformed document",
			                  ld->name);
		if (n->type != YAML_SCALAR_NODE)
			return fail_at(ld, n, full, "entry %d: expected a string, not a %s", i,
			               n->type == YAML_MAPPING_NODE ? "mapping" : "list");
		if (i >= CFG_LIST_MAX)
			return fail_at(ld, n, full, "too many entries (at most %d)", CFG_LIST_MAX);
		size_t len = n->data.scalar.length;
		if (len == 0 || is_null_scalar(n))
			return fail_at(ld, n, full, "entry %d: must not be empty", i);
		if (len >= CFG_STR_MAX || strlen((const char *)n->data.scalar.value) != len)
			return fail_at(ld, n, full, "entry %d: too long (at most %d bytes)", i,
			               CFG_STR_MAX - 1);
		(void)list_append(l, (const char *)n->data.scalar.value, len);
	}
	return 0;
}

/* End of the last scalar inside n (a flow collection ends at its bracket). */
static size_t content_end(yaml_document_t *doc, const yaml_node_t *n)
{
	for (int depth = 0; n != NULL && depth < 64; depth++) {
		if (n->type == YAML_MAPPING_NODE &&
		    n->data.mapping.style != YAML_FLOW_MAPPING_STYLE &&
		    n->data.mapping.pairs.top > n->data.mapping.pairs.start)
			n = yaml_document_get_node(doc, n->data.mapping.pairs.top[-1].value);
		else if (n->type == YAML_SEQUENCE_NODE &&
		         n->data.sequence.style != YAML_FLOW_SEQUENCE_STYLE &&
		         n->data.sequence.items.top > n->data.sequence.items.start)
			n = yaml_document_get_node(doc, n->data.sequence.items.top[-1]);
		else
			return n->end_mark.index;
	}
	return 0;
}

/* Records a section's place for edits; a file with more sections than the
 * table has is refused by the walk long before this fills up. */
static void record_section(struct loader *ld, yaml_document_t *doc, const char *name,
                           const yaml_node_t *kn, const yaml_node_t *vn)
{
	struct cfg_spans *sp = ld->sp;
	if (sp == NULL || sp->nsec >= CFG_SECTIONS_MAX)
		return;
	struct cfg_section_span *s = &sp->sec[sp->nsec++];
	memset(s, 0, sizeof(*s));
	snprintf(s->name, sizeof(s->name), "%s", name);
	if (kn != NULL) {
		s->key_col = kn->start_mark.column;
		s->key_end = kn->end_mark.index;
	}
	s->val_start = vn->start_mark.index;
	s->val_end = vn->end_mark.index;
	s->content_end = content_end(doc, vn);
	if (vn->type != YAML_MAPPING_NODE) {
		s->null_value = true;
		return;
	}
	s->flow = vn->data.mapping.style == YAML_FLOW_MAPPING_STYLE;
	s->has_pairs = vn->data.mapping.pairs.top > vn->data.mapping.pairs.start;
	if (!s->has_pairs)
		return;
	const yaml_node_t *first = yaml_document_get_node(doc, vn->data.mapping.pairs.start->key);
	s->indent = first != NULL ? first->start_mark.column : 0;
	if (kn != NULL && !s->flow && sp->step == 0 && s->indent > s->key_col)
		sp->step = s->indent - s->key_col;
}

static void record_key(struct loader *ld, yaml_document_t *doc, size_t idx, bool in_flow,
                       const yaml_node_t *kn, const yaml_node_t *vn, bool ok)
{
	if (ld->sp == NULL)
		return;
	struct cfg_span *s = &ld->sp->key[idx];
	s->present = true;
	s->ok = ok;
	s->in_flow = in_flow;
	s->block_seq =
	    vn->type == YAML_SEQUENCE_NODE && vn->data.sequence.style != YAML_FLOW_SEQUENCE_STYLE;
	s->key_start = kn->start_mark.index;
	s->key_end = kn->end_mark.index;
	s->val_start = vn->start_mark.index;
	s->val_end = vn->end_mark.index;
	s->content_end = content_end(doc, vn);
}

static int walk_pair(struct loader *ld, yaml_document_t *doc, yaml_node_pair_t *pair,
                     const char *prefix, bool in_flow)
{
	yaml_node_t *kn = yaml_document_get_node(doc, pair->key);
	yaml_node_t *vn = yaml_document_get_node(doc, pair->value);
	if (kn == NULL || vn == NULL)
		return vm_err_set(ld->err, VM_ERR_INVALID, "%s: malformed document", ld->name);
	if (kn->type != YAML_SCALAR_NODE)
		return fail_at(ld, kn, prefix, "keys must be plain names");

	char full[160];
	const char *kname = (const char *)kn->data.scalar.value;
	if (snprintf(full, sizeof(full), "%s%s%s", prefix, prefix[0] ? "." : "", kname) >=
	    (int)sizeof(full))
		return fail_at(ld, kn, prefix, "key name too long");

	const struct cfg_key *k = find_key(full);
	if (k == NULL && !is_section(full)) {
		char hint[160];
		suggest(full, hint, sizeof(hint));
		return fail_at(ld, kn, full, "unknown key%s", hint);
	}
	if (k == NULL) { /* a section */
		if (vn->type == YAML_SCALAR_NODE && is_null_scalar(vn)) {
			record_section(ld, doc, full, kn, vn);
			return 0; /* "health:" with nothing below: keep defaults */
		}
		if (vn->type != YAML_MAPPING_NODE)
			return fail_at(ld, vn, full, "expected a mapping of keys");
		record_section(ld, doc, full, kn, vn);
		return walk_mapping(ld, doc, vn, full);
	}
	size_t idx = (size_t)(k - keys);
	if (ld->origin[idx].line != 0)
		return fail_at(ld, kn, full, "duplicate key (first set on line %d)",
		               ld->origin[idx].line);
	if (k->type == T_STRLIST && vn->type == YAML_SEQUENCE_NODE) {
		int rc = walk_list(ld, doc, vn, k, full);
		if (rc != 0)
			return rc;
		record_key(ld, doc, idx, in_flow, kn, vn, true);
		ld->origin[idx].line = (int)vn->start_mark.line + 1;
		ld->origin[idx].col = (int)vn->start_mark.column + 1;
		return 0;
	}
	if (vn->type != YAML_SCALAR_NODE)
		return fail_at(ld, vn, full, "expected %s, not a %s",
		               k->type == T_STRLIST ? "a list of strings" : "a single value",
		               vn->type == YAML_MAPPING_NODE ? "mapping" : "list");

	const char *val = (const char *)vn->data.scalar.value;
	if (is_null_scalar(vn))
		val = k->type == T_STR ? "" : k->def;
	char why[200];
	bool ok = set_value(ld->cfg, k, val, why, sizeof(why)) == 0;
	/* an edit may be the fix of a bad value: the final load judges the file */
	if (!ok && ld->sp == NULL)
		return fail_at(ld, vn, full, "%s", why);
	record_key(ld, doc, idx, in_flow, kn, vn, ok);
	ld->origin[idx].line = (int)vn->start_mark.line + 1;
	ld->origin[idx].col = (int)vn->start_mark.column + 1;
	return 0;
}

static int walk_mapping(struct loader *ld, yaml_document_t *doc, yaml_node_t *map,
                        const char *prefix)
{
	bool flow = map->data.mapping.style == YAML_FLOW_MAPPING_STYLE;
	for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
	     p++) {
		int rc = walk_pair(ld, doc, p, prefix, flow);
		if (rc != 0)
			return rc;
	}
	return 0;
}

static int parse_yaml(struct loader *ld, const char *data, size_t len)
{
	yaml_parser_t parser;
	yaml_document_t doc;
	if (!yaml_parser_initialize(&parser))
		return vm_err_set(ld->err, VM_ERR_NOMEM, "%s: cannot initialize YAML parser",
		                  ld->name);
	yaml_parser_set_input_string(&parser, (const unsigned char *)data, len);
	if (!yaml_parser_load(&parser, &doc)) {
		int rc =
		    vm_err_set(ld->err, VM_ERR_INVALID, "%s:%zu:%zu: %s%s%s", ld->name,
		               parser.problem_mark.line + 1, parser.problem_mark.column + 1,
		               parser.problem ? parser.problem : "YAML syntax error",
		               parser.context ? " " : "", parser.context ? parser.context : "");
		yaml_parser_delete(&parser);
		return rc;
	}
	int rc = 0;
	yaml_node_t *root = yaml_document_get_root_node(&doc);
	if (root != NULL && !(root->type == YAML_SCALAR_NODE && is_null_scalar(root))) {
		if (root->type != YAML_MAPPING_NODE)
			rc = fail_at(ld, root, "",
			             "expected a mapping with sections agent, piko, auth, "
			             "webhook, probe, health, log");
		else {
			record_section(ld, &doc, "", NULL, root);
			rc = walk_mapping(ld, &doc, root, "");
		}
	} else if (root != NULL) {
		record_section(ld, &doc, "", NULL, root); /* "~": an empty configuration */
	}
	yaml_document_delete(&doc);
	/* A second document in the same file is almost certainly a mistake. */
	if (rc == 0 && yaml_parser_load(&parser, &doc)) {
		if (yaml_document_get_root_node(&doc) != NULL)
			rc = vm_err_set(ld->err, VM_ERR_INVALID,
			                "%s:%zu:%zu: only one YAML document "
			                "is allowed",
			                ld->name, parser.mark.line + 1, parser.mark.column + 1);
		yaml_document_delete(&doc);
	}
	yaml_parser_delete(&parser);
	return rc;
}

/* --- environment -------------------------------------------------------------------- */

static void env_name(const char *key, char *out, size_t cap)
{
	size_t o = (size_t)snprintf(out, cap, "VM_AGENT_");
	for (; *key != '\0' && o + 1 < cap; key++)
		out[o++] = *key == '.' ? '_' : (char)toupper((unsigned char)*key);
	out[o] = '\0';
}

static const char *env_lookup(char *const *envp, const char *name)
{
	size_t n = strlen(name);
	for (; envp != NULL && *envp != NULL; envp++)
		if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=')
			return *envp + n + 1;
	return NULL;
}

static int apply_env(struct loader *ld, char *const *envp)
{
	for (size_t i = 0; i < NKEYS; i++) {
		char name[96];
		env_name(keys[i].name, name, sizeof(name));
		const char *val = env_lookup(envp, name);
		if (val == NULL)
			continue;
		char why[200];
		if (set_value(ld->cfg, &keys[i], val, why, sizeof(why)) != 0)
			return vm_err_set(ld->err, VM_ERR_INVALID, "environment %s: %s: %s", name,
			                  keys[i].name, why);
		memcpy(ld->origin[i].env, name, sizeof(name));
	}
	return 0;
}

/* --- validation across keys ------------------------------------------------------ */

static int fail_key(struct loader *ld, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail_key(struct loader *ld, const char *key, const char *fmt, ...)
{
	char why[220], where[PATH_MAX + 128] = "";
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	const struct cfg_key *k = find_key(key);
	const struct cfg_origin *o = k ? &ld->origin[k - keys] : NULL;
	if (o != NULL && o->env[0] != '\0')
		snprintf(where, sizeof(where), "environment %s: ", o->env);
	else if (o != NULL && o->line != 0)
		snprintf(where, sizeof(where), "%s:%d:%d: ", ld->name, o->line, o->col);
	else if (strcmp(ld->name, "built-in defaults") != 0)
		snprintf(where, sizeof(where), "%s: ", ld->name);
	return vm_err_set(ld->err, VM_ERR_INVALID, "%s%s: %s", where, key, why);
}

static bool is_http_url(const char *s)
{
	return url_is_http(s);
}

static bool is_endpoint_char(char c)
{
	return isalnum((unsigned char)c) || c == '-' || c == '_' || c == '.' || c == '~';
}

static int validate_endpoint(struct loader *ld, const char *ep)
{
	if (ep[0] == '\0')
		return 0;
	bool ok = strcmp(ep, ".") != 0 && strcmp(ep, "..") != 0;
	for (const char *p = ep; ok && *p; p++)
		ok = is_endpoint_char(*p);
	if (ok)
		return 0;
	char hint[CFG_ID_MAX];
	size_t i = 0;
	for (const char *p = ep; *p && i + 1 < sizeof(hint); p++)
		hint[i++] = is_endpoint_char(*p) ? *p : '-';
	hint[i] = '\0';
	return fail_key(
	    ld, "piko.endpoint",
	    "\"%s\" is not a single path segment (letters, digits, '-', '_', '.', '~'); "
	    "Piko endpoint IDs cannot contain '/': use e.g. \"%s\"",
	    ep, hint);
}

/* piko.forward_addr: "IP:PORT" or "[IPv6]:PORT"; the tunnel connects there. */
static bool is_forward_addr(const char *s)
{
	char host[sizeof(((struct cfg *)0)->piko.forward_addr)];
	int port;
	return net_parse_hostport(s, host, sizeof(host), &port, NULL) == 0;
}

static int validate(struct loader *ld)
{
	struct cfg *c = ld->cfg;
	if (c->webhook.tls_enabled && c->webhook.tls_cert_file[0] == '\0')
		return fail_key(ld, "webhook.tls_cert_file",
		                "required when webhook.tls_enabled is true");
	if (c->webhook.tls_enabled && c->webhook.tls_key_file[0] == '\0')
		return fail_key(ld, "webhook.tls_key_file",
		                "required when webhook.tls_enabled is true");
	if (c->webhook.listen_addr[0] == '\0')
		return fail_key(ld, "webhook.listen_addr", "must not be empty (use 127.0.0.1)");
	if (c->piko.server_url[0] && !is_http_url(c->piko.server_url))
		return fail_key(ld, "piko.server_url", "expected an http:// or https:// URL");
	for (int i = 0; i < c->piko.fallback_urls.count; i++)
		if (!is_http_url(c->piko.fallback_urls.items[i]))
			return fail_key(ld, "piko.fallback_urls",
			                "entry %d: expected an http:// or https:// URL", i);
	if (c->piko.fallback_urls.count > 0 && c->piko.server_url[0] == '\0')
		return fail_key(ld, "piko.fallback_urls", "needs piko.server_url (tried first)");
	if (c->agent.proxy_url[0] && !is_http_url(c->agent.proxy_url) &&
	    strncmp(c->agent.proxy_url, "socks", 5) != 0)
		return fail_key(ld, "agent.proxy_url",
		                "expected an http://, https:// or socks5:// URL");
	/* libcurl's message for a bad proxy scheme quotes the whole URL, password
	 * included: only schemes it takes reach it */
	if (c->piko.proxy_url[0] && !is_http_url(c->piko.proxy_url) &&
	    strncmp(c->piko.proxy_url, "socks", 5) != 0)
		return fail_key(ld, "piko.proxy_url",
		                "expected an http://, https:// or socks5:// URL");
	if (c->health.disk_warn_percent > c->health.disk_critical_percent)
		return fail_key(ld, "health.disk_warn_percent",
		                "must not exceed disk_critical_percent");
	if (c->agent.control_plane_url[0] && !is_http_url(c->agent.control_plane_url))
		return fail_key(ld, "agent.control_plane_url",
		                "expected an http:// or https:// URL");
	if (c->piko.token[0] && c->piko.token_file[0])
		return fail_key(
		    ld, "piko.token_file",
		    "piko.token and piko.token_file are both set; "
		    "keep one (token_file is preferred: it keeps the secret out of this file)");
	if (c->piko.reconnect.initial_delay_ms > c->piko.reconnect.max_delay_ms)
		return fail_key(ld, "piko.reconnect.initial_delay", "must not exceed max_delay");
	int rc = validate_endpoint(ld, c->piko.endpoint);
	if (rc != 0)
		return rc;
	if (c->piko.server_url[0] && c->piko.endpoint[0] == '\0')
		return fail_key(ld, "piko.endpoint", "required when piko.server_url is set");
	if (c->piko.forward_addr[0] && !is_forward_addr(c->piko.forward_addr))
		return fail_key(ld, "piko.forward_addr",
		                "expected IP:PORT with a numeric address, "
		                "e.g. 127.0.0.1:9999 or [::1]:9999");
	/* Tokens are checked against all three: a key without them would accept anything. */
	if (c->auth.jwt_keys.count > 0 && c->auth.issuer[0] == '\0')
		return fail_key(ld, "auth.issuer", "required when auth.jwt_keys is set");
	if (c->auth.jwt_keys.count > 0 && (c->agent.id[0] == '\0' || c->agent.tenant_id[0] == '\0'))
		return fail_key(ld, "auth.jwt_keys",
		                "agent.id and agent.tenant_id are required: "
		                "tokens are checked against them (aud, tenant_id)");
	return 0;
}

/* Directories that default from others, filled in after everything else.
 * Built-in defaults never need root; a system config run as root uses /var/lib. */
static void resolve_paths(struct cfg *c, bool from_file)
{
	if (c->agent.state_dir[0] == '\0') {
		const char *xdg = getenv("XDG_STATE_HOME");
		if (from_file && geteuid() == 0)
			snprintf(c->agent.state_dir, sizeof(c->agent.state_dir),
			         "/var/lib/vm-agent");
		else if (xdg != NULL && xdg[0] == '/')
			snprintf(c->agent.state_dir, sizeof(c->agent.state_dir), "%.*s/vm-agent",
			         (int)(sizeof(c->agent.state_dir) - 10), xdg);
		else
			snprintf(c->agent.state_dir, sizeof(c->agent.state_dir), ".vm-agent");
	}
	if (c->agent.runtime_dir[0] == '\0') {
		/* The admin socket lives here: root gets /run, users their runtime dir. */
		const char *xrd = getenv("XDG_RUNTIME_DIR");
		if (geteuid() == 0)
			snprintf(c->agent.runtime_dir, sizeof(c->agent.runtime_dir),
			         "/run/vm-agent");
		else if (xrd != NULL && xrd[0] == '/')
			snprintf(c->agent.runtime_dir, sizeof(c->agent.runtime_dir),
			         "%.*s/vm-agent", (int)(sizeof(c->agent.runtime_dir) - 10), xrd);
		else
			snprintf(c->agent.runtime_dir, sizeof(c->agent.runtime_dir), "%.*s/run",
			         (int)(sizeof(c->agent.runtime_dir) - 5), c->agent.state_dir);
	}
	if (c->probe.work_dir[0] == '\0')
		snprintf(c->probe.work_dir, sizeof(c->probe.work_dir), "%.*s/work",
		         (int)(sizeof(c->probe.work_dir) - 6), c->agent.state_dir);
	if (c->auth.audit_file[0] == '\0')
		snprintf(c->auth.audit_file, sizeof(c->auth.audit_file), "%.*s/audit.log",
		         (int)(sizeof(c->auth.audit_file) - 11), c->agent.state_dir);
}

/* A walk over cfg, which starts from the defaults; sp non-NULL for an edit. */
static struct loader *loader_new(struct cfg *cfg, const char *name, struct cfg_spans *sp,
                                 struct vm_err *err)
{
	struct loader *ld = calloc(1, sizeof(*ld));
	if (ld == NULL)
		return NULL;
	ld->cfg = cfg;
	ld->name = name;
	ld->err = err;
	ld->sp = sp;
	cfg_defaults(cfg);
	if (sp != NULL)
		memset(sp, 0, sizeof(*sp));
	return ld;
}

static int load_common(struct cfg *cfg, const char *name, const char *data, size_t len,
                       char *const *envp, struct vm_err *err)
{
	extern char **environ;
	struct loader *ld = loader_new(cfg, name, NULL, err);
	if (ld == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	snprintf(cfg->source, sizeof(cfg->source), "%s", name);
	int rc = data != NULL ? parse_yaml(ld, data, len) : 0;
	if (rc == 0)
		rc = apply_env(ld, envp != NULL ? envp : environ);
	if (rc == 0)
		rc = validate(ld);
	if (rc == 0)
		resolve_paths(cfg, data != NULL);
	free(ld);
	return rc;
}

int cfg_load_buffer(struct cfg *cfg, const char *name, const char *data, size_t len,
                    char *const *envp, struct vm_err *err)
{
	return load_common(cfg, name, data, len, envp, err);
}

int cfg_load(struct cfg *cfg, const char *path, char *const *envp, struct vm_err *err)
{
	if (path == NULL)
		return load_common(cfg, "built-in defaults", NULL, 0, envp, err);
	char *data;
	size_t len;
	int rc = fs_read_file(path, CFG_FILE_MAX, &data, &len, err);
	if (rc != 0)
		return rc;
	rc = load_common(cfg, path, data, len, envp, err);
	explicit_bzero(data, len); /* it may hold piko.token */
	free(data);
	return rc;
}

/* --- dump ----------------------------------------------------------------------------- */

static void format_value(const struct cfg *cfg, const struct cfg_key *k, char *out, size_t cap)
{
	const char *field = (const char *)cfg + k->off;
	switch (k->type) {
	case T_STR: {
		size_t n = strlen(k->name);
		char shown[CFG_STR_MAX + 8]; /* "***" may be longer than the user it replaces */
		if (k->secret && field[0] != '\0')
			snprintf(out, cap, "\"[REDACTED]\"");
		else if (n > 4 && strcmp(k->name + n - 4, "_url") == 0)
			snprintf(out, cap, "\"%s\"", url_redact(field, shown, sizeof(shown)));
		else
			snprintf(out, cap, "\"%s\"", field);
		break;
	}
	case T_INT:
		snprintf(out, cap, "%d", *(const int *)(const void *)field);
		break;
	case T_BOOL:
		snprintf(out, cap, "%s", *(const bool *)(const void *)field ? "true" : "false");
		break;
	case T_DURATION:
		snprintf(out, cap, "%llums",
		         (unsigned long long)*(const uint64_t *)(const void *)field);
		break;
	case T_SIZE:
		snprintf(out, cap, "%llu",
		         (unsigned long long)*(const uint64_t *)(const void *)field);
		break;
	case T_FLOAT:
		snprintf(out, cap, "%g", *(const double *)(const void *)field);
		break;
	case T_ENUM: {
		int idx = *(const int *)(const void *)field;
		const char *p = k->choices;
		for (int i = 0; i < idx && p != NULL; i++)
			p = strchr(p, '|') ? strchr(p, '|') + 1 : NULL;
		size_t len = p ? strcspn(p, "|") : 0;
		snprintf(out, cap, "%.*s", (int)len, p ? p : "");
		break;
	}
	case T_STRLIST: {
		const struct cfg_strlist *l = (const struct cfg_strlist *)(const void *)field;
		size_t o = (size_t)snprintf(out, cap, "[");
		for (int i = 0; i < l->count && o < cap; i++)
			o = str_appendf(out, cap, o, "%s\"%s\"", i ? ", " : "", l->items[i]);
		if (o < cap)
			snprintf(out + o, cap - o, "]");
		break;
	}
	}
}

int cfg_dump(const struct cfg *cfg, char *buf, size_t cap)
{
	size_t o = 0;
	char prev[160] = "";
	for (size_t i = 0; i < NKEYS && o < cap; i++) {
		/* print each new section path as nested mappings */
		const char *name = keys[i].name;
		const char *leaf = strrchr(name, '.') + 1;
		size_t plen = (size_t)(leaf - name - 1);
		int depth = 0;
		for (const char *p = name; p < leaf - 1; p++)
			depth += *p == '.';
		if (strlen(prev) != plen || strncmp(prev, name, plen) != 0) {
			/* open each section level that differs from the previous key */
			const char *seg = name;
			for (int d = 0; d <= depth; d++) {
				const char *dot = strchr(seg, '.');
				size_t upto = (size_t)(dot - name);
				if (strncmp(prev, name, upto) != 0 ||
				    (prev[upto] != '.' && prev[upto] != 0))
					o = str_appendf(buf, cap, o, "%*s%.*s:\n", d * 2, "",
					                (int)(dot - seg), seg);
				seg = dot + 1;
			}
			snprintf(prev, sizeof(prev), "%.*s", (int)plen, name);
		}
		char val[CFG_LIST_MAX * (CFG_STR_MAX + 4) + PATH_MAX];
		format_value(cfg, &keys[i], val, sizeof(val));
		if (o < cap)
			o = str_appendf(buf, cap, o, "%*s%s: %s\n", (depth + 1) * 2, "", leaf, val);
	}
	return o < cap ? 0 : -1;
}

/* --- editing ------------------------------------------------------------------------- */

/* The text of a config file being edited, walked by the loader above after
 * every change: values (file over defaults, no environment) and spans. */
struct cfg_doc {
	char name[PATH_MAX];
	char *text;
	size_t len;
	bool changed;
	struct cfg values;
	struct cfg_spans spans;
};

#define CFG_EDIT_VALUE_MAX (64 * 1024)

/* The walk for edits: structure errors fail as in cfg_load, bad values are kept. */
static int walk_text(const char *name, const char *text, size_t len, struct cfg *values,
                     struct cfg_spans *sp, struct vm_err *err)
{
	struct loader *ld = loader_new(values, name, sp, err);
	if (ld == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	int rc = parse_yaml(ld, text, len);
	free(ld);
	return rc;
}

void cfg_doc_free(struct cfg_doc *d)
{
	if (d == NULL)
		return;
	if (d->text != NULL) {
		explicit_bzero(d->text, d->len); /* it may hold piko.token */
		free(d->text);
	}
	explicit_bzero(d, sizeof(*d));
	free(d);
}

int cfg_doc_parse(struct cfg_doc **out, const char *name, const char *text, size_t len,
                  struct vm_err *err)
{
	*out = NULL;
	if (len > CFG_FILE_MAX)
		return vm_err_set(err, VM_ERR_INVALID, "%s: larger than %d bytes", name,
		                  CFG_FILE_MAX);
	struct cfg_doc *d = calloc(1, sizeof(*d));
	if (d == NULL || (d->text = malloc(len + 1)) == NULL) {
		free(d);
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	}
	snprintf(d->name, sizeof(d->name), "%s", name);
	memcpy(d->text, text, len);
	d->text[len] = '\0';
	d->len = len;
	int rc = walk_text(d->name, d->text, d->len, &d->values, &d->spans, err);
	if (rc != 0) {
		cfg_doc_free(d);
		return rc;
	}
	*out = d;
	return 0;
}

int cfg_doc_read(struct cfg_doc **out, const char *path, struct vm_err *err)
{
	char *data = NULL;
	size_t len = 0;
	struct vm_err e = {0};
	*out = NULL;
	int rc = fs_read_file(path, CFG_FILE_MAX, &data, &len, &e);
	if (rc != 0 && e.code == VM_ERR_NOTFOUND)
		return cfg_doc_parse(out, path, "", 0, err); /* missing: an empty file */
	if (rc != 0) {
		if (err != NULL)
			*err = e;
		return rc;
	}
	rc = cfg_doc_parse(out, path, data, len, err);
	explicit_bzero(data, len);
	free(data);
	return rc;
}

const char *cfg_doc_text(const struct cfg_doc *d, size_t *len)
{
	if (len != NULL)
		*len = d->len;
	return d->text;
}

bool cfg_doc_changed(const struct cfg_doc *d)
{
	return d->changed;
}

const struct cfg *cfg_doc_values(const struct cfg_doc *d)
{
	return &d->values;
}

bool cfg_doc_has(const struct cfg_doc *d, const char *key)
{
	const struct cfg_key *k = find_key(key);
	return k != NULL && d->spans.key[k - keys].present;
}

void cfg_free(struct cfg *cfg)
{
	if (cfg == NULL)
		return;
	explicit_bzero(cfg, sizeof(*cfg)); /* piko.token */
	free(cfg);
}

int cfg_doc_validate(const struct cfg_doc *d, struct vm_err *err)
{
	static char *const no_env[] = {NULL};
	struct cfg *c = malloc(sizeof(*c));
	if (c == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	int rc = load_common(c, d->name, d->text, d->len, no_env, err);
	cfg_free(c);
	return rc;
}

int cfg_doc_save(const struct cfg_doc *d, const char *path, mode_t mode, struct vm_err *err)
{
	int rc = cfg_doc_validate(d, err);
	return rc != 0 ? rc : fs_write_atomic(path, d->text, d->len, mode, err);
}

/* A bounded output buffer: sized once by the caller, overflow is an error. */
struct edit_out {
	char *p;
	size_t len, cap;
	bool overflow;
};

static void put(struct edit_out *o, const char *s, size_t n)
{
	if (o->overflow || n >= o->cap - o->len) {
		o->overflow = true;
		return;
	}
	memcpy(o->p + o->len, s, n);
	o->len += n;
	o->p[o->len] = '\0';
}

static void put_str(struct edit_out *o, const char *s)
{
	put(o, s, strlen(s));
}

static void put_indent(struct edit_out *o, size_t n)
{
	for (size_t i = 0; i < n && !o->overflow; i++)
		put(o, " ", 1);
}

/* s as a YAML double-quoted scalar (the caller refused control characters). */
static void put_quoted(struct edit_out *o, const char *s)
{
	put(o, "\"", 1);
	for (; *s != '\0'; s++) {
		if (*s == '"' || *s == '\\')
			put(o, "\\", 1);
		if (*s == '\t')
			put(o, "\\t", 2);
		else
			put(o, s, 1);
	}
	put(o, "\"", 1);
}

/* The value as YAML: a quoted string, or for a list key a flow sequence of them. */
static int render_value(const struct cfg_key *k, const char *value, struct edit_out *o,
                        struct vm_err *err)
{
	if (k->type != T_STRLIST) {
		put_quoted(o, value);
		return 0;
	}
	struct cfg_strlist *l = malloc(sizeof(*l));
	if (l == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	int rc = 0;
	if (parse_list(value, l) != 0) {
		char why[200];
		describe_range(k, why, sizeof(why));
		rc = vm_err_set(err, VM_ERR_INVALID, "%s: %s (comma-separated)", k->name, why);
	} else {
		put(o, "[", 1);
		for (int i = 0; i < l->count; i++) {
			if (i > 0)
				put(o, ", ", 2);
			put_quoted(o, l->items[i]);
		}
		put(o, "]", 1);
	}
	free(l);
	return rc;
}

/* Offset just past the line holding pos-1; pos itself when it is in a line's
 * leading indentation (a block node may end at the next line's first token). */
static size_t line_after(const char *text, size_t len, size_t pos)
{
	size_t b = pos;
	while (b > 0 && text[b - 1] == ' ')
		b--;
	if (b == 0 || text[b - 1] == '\n')
		return b;
	while (pos < len && text[pos] != '\n')
		pos++;
	return pos < len ? pos + 1 : len;
}

static size_t line_start(const char *text, size_t pos)
{
	while (pos > 0 && text[pos - 1] != '\n')
		pos--;
	return pos;
}

/* The new text: text[0:a] + text[b:c] + ins + text[c:], i.e. [a,b) removed and
 * ins inserted at c (a <= b <= c). */
static char *splice(const struct cfg_doc *d, size_t a, size_t b, size_t c, const char *ins,
                    size_t *out_len)
{
	size_t n = strlen(ins);
	if (a > b || b > c || c > d->len || d->len - (b - a) + n > CFG_FILE_MAX)
		return NULL;
	size_t len = d->len - (b - a) + n;
	char *t = malloc(len + 1);
	if (t == NULL)
		return NULL;
	memcpy(t, d->text, a);
	memcpy(t + a, d->text + b, c - b);
	memcpy(t + a + (c - b), ins, n);
	memcpy(t + a + (c - b) + n, d->text + c, d->len - c);
	t[len] = '\0';
	*out_len = len;
	return t;
}

/* The rest of a dotted key below a section, as block lines or a flow pair. */
static void render_rest(struct edit_out *o, const char *rest, const char *val, bool flow,
                        size_t indent, size_t step)
{
	int open = 0;
	for (const char *seg = rest;;) {
		const char *dot = strchr(seg, '.');
		size_t n = dot ? (size_t)(dot - seg) : strlen(seg);
		if (!flow)
			put_indent(o, indent);
		put(o, seg, n);
		if (dot == NULL) {
			put(o, ": ", 2);
			break;
		}
		if (flow) {
			put(o, ": {", 3);
			open++;
		} else {
			put(o, ":\n", 2);
			indent += step;
		}
		seg = dot + 1;
	}
	put_str(o, val);
	for (; open > 0; open--)
		put(o, "}", 1);
	if (!flow)
		put(o, "\n", 1);
}

static const struct cfg_section_span *find_section(const struct cfg_spans *sp, const char *name,
                                                   size_t n)
{
	for (size_t i = 0; i < sp->nsec; i++)
		if (strlen(sp->sec[i].name) == n && strncmp(sp->sec[i].name, name, n) == 0)
			return &sp->sec[i];
	return NULL;
}

/* Where a missing key goes: into its deepest existing section. */
static char *insert_key(const struct cfg_doc *d, const struct cfg_key *k, const char *val,
                        size_t *len)
{
	const struct cfg_spans *sp = &d->spans;
	size_t step = sp->step ? sp->step : 2;
	const struct cfg_section_span *sec = NULL;
	size_t n = strlen(k->name);
	for (;;) {
		while (n > 0 && k->name[n] != '.')
			n--;
		sec = find_section(sp, k->name, n);
		if (sec != NULL || n == 0)
			break;
		n--;
	}
	const char *rest = k->name + (n > 0 ? n + 1 : 0);
	size_t cap = strlen(val) + 64 +
	             4 * (strlen(k->name) + 4 * step + (sec ? sec->indent + sec->key_col : 0));
	struct edit_out o = {malloc(cap), 0, cap, false};
	if (o.p == NULL)
		return NULL;
	o.p[0] = '\0';
	char *t = NULL;
	if (sec != NULL && sec->flow) {
		/* before the closing brace of "{…}" */
		size_t at = sec->val_end;
		if (at == 0 || d->text[at - 1] != '}')
			goto out;
		if (sec->has_pairs)
			put(&o, ", ", 2);
		render_rest(&o, rest, val, true, 0, step);
		if (!o.overflow)
			t = splice(d, at - 1, at - 1, at - 1, o.p, len);
		goto out;
	}
	size_t a, b, c, indent;
	if (sec == NULL || (sec->name[0] == '\0' && !sec->null_value)) {
		/* a new top-level section: at the end of the file */
		a = b = c = d->len;
		indent = sec != NULL ? sec->indent : 0;
	} else if (sec->null_value) {
		/* "log: ~" or "log:" (or a file holding only "~"): drop the null */
		bool empty = sec->val_end == sec->val_start;
		a = empty ? 0 : sec->val_start;
		b = empty ? 0 : sec->val_end;
		c = sec->name[0] ? line_after(d->text, d->len, sec->key_end) : d->len;
		if (empty)
			a = b = c;
		if (b > c)
			goto out;
		/* "log: ~\n" becomes "log:\n", no trailing space */
		while (!empty && a > 0 && d->text[a - 1] == ' ' &&
		       (b == d->len || d->text[b] == '\n'))
			a--;
		indent = sec->name[0] ? sec->key_col + step : 0;
	} else {
		a = b = c = line_after(d->text, d->len, sec->content_end);
		indent = sec->indent;
	}
	if (c > 0 && d->text[c - 1] != '\n')
		put(&o, "\n", 1);
	render_rest(&o, rest, val, false, indent, step);
	if (!o.overflow)
		t = splice(d, a, b, c, o.p, len);
out:
	free(o.p);
	return t;
}

static char *replace_value(const struct cfg_doc *d, const struct cfg_span *s, const char *val,
                           size_t *len)
{
	size_t cap = strlen(val) + 8;
	struct edit_out o = {malloc(cap), 0, cap, false};
	if (o.p == NULL)
		return NULL;
	o.p[0] = '\0';
	size_t a = s->val_start, b = s->val_end;
	if (s->block_seq) {
		/* "allow:\n  - a\n  - b" becomes "allow: [...]" */
		a = s->key_end;
		b = s->content_end;
		put(&o, ": ", 2);
	} else if (a == b) {
		/* "key:" with nothing: the value goes after the colon */
		if (s->key_end >= d->len || d->text[s->key_end] != ':') {
			free(o.p);
			return NULL;
		}
		a = b = s->key_end + 1;
		put(&o, " ", 1);
	}
	put_str(&o, val);
	if (b > a && d->text[b - 1] == '\n')
		put(&o, "\n", 1); /* a block scalar ends with its line */
	char *t = o.overflow ? NULL : splice(d, a, b, b, o.p, len);
	free(o.p);
	return t;
}

static char *remove_key(const struct cfg_doc *d, const struct cfg_span *s, size_t *len)
{
	size_t a = s->key_start, b = s->val_end;
	if (!s->in_flow) {
		/* the key's lines, comments on them included */
		a = line_start(d->text, s->key_start);
		for (size_t i = a; i < s->key_start; i++)
			if (d->text[i] != ' ')
				return NULL;
		b = line_after(d->text, d->len, s->content_end);
	} else {
		size_t e = b;
		while (e < d->len && d->text[e] == ' ')
			e++;
		if (e < d->len && d->text[e] == ',') {
			for (e++; e < d->len && d->text[e] == ' ';)
				e++;
			b = e;
		} else {
			size_t p = a;
			while (p > 0 && d->text[p - 1] == ' ')
				p--;
			if (p > 0 && d->text[p - 1] == ',')
				a = p - 1;
		}
	}
	return splice(d, a, b, b, "", len);
}

/* "file:line:col: key: cannot edit…", at the key (or its file when absent). */
static int refuse_edit(const struct cfg_doc *d, size_t idx, struct vm_err *err)
{
	const struct cfg_span *s = &d->spans.key[idx];
	if (!s->present)
		return vm_err_set(err, VM_ERR_INVALID,
		                  "%s: %s: cannot add this key to the file's layout in place "
		                  "(edit it by hand)",
		                  d->name, keys[idx].name);
	size_t line = 1, col = 1;
	for (size_t i = 0; i < s->key_start && i < d->len; i++, col++)
		if (d->text[i] == '\n')
			line++, col = 0;
	return vm_err_set(err, VM_ERR_INVALID,
	                  "%s:%zu:%zu: %s: cannot edit this file's layout in place "
	                  "(edit it by hand)",
	                  d->name, line, col, keys[idx].name);
}

/* Takes the edited text when the loader reads it back with exactly one change:
 * key idx set to want (want == NULL: absent), every other key as before. */
static int commit(struct cfg_doc *d, char *text, size_t len, size_t idx, const struct cfg *want,
                  bool want_ok, struct vm_err *err)
{
	struct cfg_doc *n = calloc(1, sizeof(*n));
	if (n == NULL) {
		explicit_bzero(text, len);
		free(text);
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	}
	struct vm_err e = {0};
	bool ok = walk_text(d->name, text, len, &n->values, &n->spans, &e) == 0;
	for (size_t i = 0; ok && i < NKEYS; i++) {
		const struct cfg_span *was = &d->spans.key[i], *is = &n->spans.key[i];
		if (i == idx)
			ok = want == NULL ? !is->present
			                  : is->present && is->ok == want_ok &&
			                        (!want_ok || !cfg_key_differs(&n->values, want, i));
		else
			ok = was->present == is->present && was->ok == is->ok &&
			     !cfg_key_differs(&d->values, &n->values, i);
	}
	int rc = 0;
	if (!ok) {
		explicit_bzero(text, len);
		free(text);
		rc = refuse_edit(d, idx, err);
	} else {
		explicit_bzero(d->text, d->len);
		free(d->text);
		d->text = text;
		d->len = len;
		d->changed = true;
		d->values = n->values;
		d->spans = n->spans;
	}
	explicit_bzero(n, sizeof(*n));
	free(n);
	return rc;
}

static const struct cfg_key *edit_key(const char *key, struct vm_err *err)
{
	const struct cfg_key *k = find_key(key);
	if (k == NULL) {
		char hint[160];
		suggest(key, hint, sizeof(hint));
		vm_err_set(err, VM_ERR_INVALID,
		           "%s: unknown configuration key%s (see "
		           "'vm-agent configure --show' for the list)",
		           key, hint);
	}
	return k;
}

int cfg_doc_set(struct cfg_doc *d, const char *key, const char *value, struct vm_err *err)
{
	const struct cfg_key *k = edit_key(key, err);
	if (k == NULL)
		return -VM_ERR_INVALID;
	size_t vlen = strlen(value);
	if (vlen > CFG_EDIT_VALUE_MAX)
		return vm_err_set(err, VM_ERR_INVALID, "%s: value too long", key);
	for (const char *c = value; *c; c++)
		if (((unsigned char)*c < 0x20 && *c != '\t') || *c == 0x7f)
			return vm_err_set(err, VM_ERR_INVALID,
			                  "%s: control characters are not allowed", key);
	size_t idx = (size_t)(k - keys);
	struct cfg *want = malloc(sizeof(*want));
	size_t cap = 4 * vlen + 4 * CFG_LIST_MAX + 8;
	struct edit_out o = {malloc(cap), 0, cap, false};
	int rc = 0;
	if (want == NULL || o.p == NULL) {
		rc = vm_err_set(err, VM_ERR_NOMEM, "out of memory");
		goto out;
	}
	o.p[0] = '\0';
	cfg_defaults(want);
	char why[200];
	bool want_ok = set_value(want, k, value, why, sizeof(why)) == 0;
	const struct cfg_span *s = &d->spans.key[idx];
	if (s->present && s->ok && want_ok && !cfg_key_differs(&d->values, want, idx))
		goto out; /* already so, whatever the style it is written in */
	if ((rc = render_value(k, value, &o, err)) != 0)
		goto out;
	size_t len = 0;
	char *t = s->present ? replace_value(d, s, o.p, &len) : insert_key(d, k, o.p, &len);
	if (t == NULL)
		rc = refuse_edit(d, idx, err);
	else
		rc = commit(d, t, len, idx, want, want_ok, err);
out:
	if (o.p != NULL)
		explicit_bzero(o.p, o.cap);
	free(o.p);
	cfg_free(want);
	return rc;
}

int cfg_doc_unset(struct cfg_doc *d, const char *key, struct vm_err *err)
{
	const struct cfg_key *k = edit_key(key, err);
	if (k == NULL)
		return -VM_ERR_INVALID;
	size_t idx = (size_t)(k - keys);
	if (!d->spans.key[idx].present)
		return 0;
	size_t len = 0;
	char *t = remove_key(d, &d->spans.key[idx], &len);
	if (t == NULL)
		return refuse_edit(d, idx, err);
	return commit(d, t, len, idx, NULL, false, err);
}
