/* Configuration loader. One table lists every key with its type, default and
 * bounds; the YAML walk, environment overrides, dump and docs all use it. */
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

struct loader {
	struct cfg *cfg;
	const char *name;
	struct cfg_origin origin[NKEYS];
	struct vm_err *err;
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

static int walk_pair(struct loader *ld, yaml_document_t *doc, yaml_node_pair_t *pair,
                     const char *prefix)
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
		if (vn->type == YAML_SCALAR_NODE && is_null_scalar(vn))
			return 0; /* "health:" with nothing below: keep defaults */
		if (vn->type != YAML_MAPPING_NODE)
			return fail_at(ld, vn, full, "expected a mapping of keys");
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
	if (set_value(ld->cfg, k, val, why, sizeof(why)) != 0)
		return fail_at(ld, vn, full, "%s", why);
	ld->origin[idx].line = (int)vn->start_mark.line + 1;
	ld->origin[idx].col = (int)vn->start_mark.column + 1;
	return 0;
}

static int walk_mapping(struct loader *ld, yaml_document_t *doc, yaml_node_t *map,
                        const char *prefix)
{
	for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
	     p++) {
		int rc = walk_pair(ld, doc, p, prefix);
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
		else
			rc = walk_mapping(ld, &doc, root, "");
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

static int load_common(struct cfg *cfg, const char *name, const char *data, size_t len,
                       char *const *envp, struct vm_err *err)
{
	extern char **environ;
	struct loader *ld = calloc(1, sizeof(*ld));
	if (ld == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	ld->cfg = cfg;
	ld->name = name;
	ld->err = err;
	cfg_defaults(cfg);
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
