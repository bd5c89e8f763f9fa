/* The create spec: strict validation (400 with the JSON path), its canonical
 * form and hash for idempotent create, and the mapping to the engine's body. */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "containers/containers.h"
#include "core/codec.h"

#define NAME_MAX_LEN   128
#define IMAGE_MAX_LEN  255
#define LIST_MAX       128 /* env, labels, ports, volumes, argv entries */
#define VALUE_MAX_LEN  4096
#define ARGV_MAX_LEN   8192
#define MEMORY_MIN     (6 * 1024 * 1024) /* the engines refuse less */
#define CPUS_MAX       1024.0

static int bad(struct ctr_err *err, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int bad(struct ctr_err *err, const char *path, const char *fmt, ...)
{
	err->status = 400;
	snprintf(err->code, sizeof(err->code), "invalid_request");
	snprintf(err->path, sizeof(err->path), "%s", path);
	char m[200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(m, sizeof(m), fmt, ap);
	va_end(ap);
	snprintf(err->msg, sizeof(err->msg), "%s: %s", path, m);
	return -1;
}

static bool printable(const char *s, size_t max, bool spaces)
{
	size_t n = strlen(s);
	if (n == 0 || n > max)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x21 || c == 0x7f)
			if (!(spaces && c == ' '))
				return false;
	}
	return true;
}

/* Docker's container and volume name rule: [a-zA-Z0-9][a-zA-Z0-9_.-]* */
static bool engine_name(const char *s, size_t max)
{
	size_t n = strlen(s);
	if (n == 0 || n > max || !isalnum((unsigned char)s[0]))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '.' && s[i] != '-')
			return false;
	return true;
}

static bool env_name(const char *s)
{
	if (!(isalpha((unsigned char)s[0]) || s[0] == '_') || strlen(s) > 256)
		return false;
	for (const char *p = s; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '_')
			return false;
	return true;
}

static bool abs_path(const char *s)
{
	if (s[0] != '/' || !printable(s, 1024, false) || strchr(s, ':') != NULL ||
	    strchr(s, ',') != NULL)
		return false;
	/* no "." or ".." component: the mount is where it says */
	for (const char *p = s; (p = strchr(p, '/')) != NULL; p++) {
		if ((p[1] == '.' && (p[2] == '/' || p[2] == '\0')) ||
		    (p[1] == '.' && p[2] == '.' && (p[3] == '/' || p[3] == '\0')))
			return false;
	}
	return true;
}

static int check_known(const json_t *o, const char *const *known, const char *path,
                       struct ctr_err *err)
{
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)o, k, v)
	{
		bool ok = false;
		for (size_t i = 0; known[i] != NULL && !ok; i++)
			ok = strcmp(k, known[i]) == 0;
		if (!ok) {
			char p[128];
			snprintf(p, sizeof(p), "%s%s%.64s", path, path[0] ? "." : "", k);
			return bad(err, p, "unknown field");
		}
	}
	return 0;
}

static int check_argv(const json_t *a, const char *path, struct ctr_err *err)
{
	if (!json_is_array(a) || json_array_size(a) == 0 || json_array_size(a) > LIST_MAX)
		return bad(err, path, "must be a non-empty array of at most %d strings", LIST_MAX);
	size_t i;
	json_t *v;
	json_array_foreach(a, i, v)
	{
		if (!json_is_string(v) || json_string_length(v) > ARGV_MAX_LEN ||
		    strlen(json_string_value(v)) != json_string_length(v)) {
			char p[128];
			snprintf(p, sizeof(p), "%s[%zu]", path, i);
			return bad(err, p, "must be a string without NUL of at most %d bytes",
			           ARGV_MAX_LEN);
		}
	}
	return 0;
}

static int check_map(const json_t *m, const char *path, bool env, struct ctr_err *err)
{
	if (!json_is_object(m) || json_object_size(m) > LIST_MAX)
		return bad(err, path, "must be an object of at most %d strings", LIST_MAX);
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)m, k, v)
	{
		char p[128];
		snprintf(p, sizeof(p), "%s.%.64s", path, k);
		if (env ? !env_name(k) : !printable(k, 256, false) || strchr(k, '=') != NULL)
			return bad(err, p, env ? "not a valid variable name" : "not a valid label key");
		if (!env && strncmp(k, CTR_LABEL_PREFIX, strlen(CTR_LABEL_PREFIX)) == 0)
			return bad(err, p, "labels under " CTR_LABEL_PREFIX " are the agent's own");
		if (!json_is_string(v) || json_string_length(v) > VALUE_MAX_LEN ||
		    strlen(json_string_value(v)) != json_string_length(v))
			return bad(err, p, "must be a string without NUL of at most %d bytes",
			           VALUE_MAX_LEN);
	}
	return 0;
}

static int check_port(const json_t *o, size_t i, struct ctr_err *err)
{
	static const char *const known[] = {"container", "host", "host_ip", "protocol", NULL};
	char path[64];
	snprintf(path, sizeof(path), "ports[%zu]", i);
	if (!json_is_object(o))
		return bad(err, path, "must be an object");
	if (check_known(o, known, path, err) != 0)
		return -1;
	char p[96];
	json_t *c = json_object_get(o, "container");
	snprintf(p, sizeof(p), "%s.container", path);
	if (!json_is_integer(c) || json_integer_value(c) < 1 || json_integer_value(c) > 65535)
		return bad(err, p, "required, an integer 1..65535");
	json_t *h = json_object_get(o, "host");
	snprintf(p, sizeof(p), "%s.host", path);
	if (h != NULL &&
	    (!json_is_integer(h) || json_integer_value(h) < 0 || json_integer_value(h) > 65535))
		return bad(err, p, "an integer 0..65535 (0 = any free port)");
	json_t *ip = json_object_get(o, "host_ip");
	snprintf(p, sizeof(p), "%s.host_ip", path);
	if (ip != NULL) {
		unsigned char bin[16];
		const char *s = json_string_value(ip);
		if (s == NULL || (inet_pton(AF_INET, s, bin) != 1 && inet_pton(AF_INET6, s, bin) != 1))
			return bad(err, p, "must be an IPv4 or IPv6 address");
	}
	json_t *pr = json_object_get(o, "protocol");
	snprintf(p, sizeof(p), "%s.protocol", path);
	if (pr != NULL && (!json_is_string(pr) || (strcmp(json_string_value(pr), "tcp") != 0 &&
	                                           strcmp(json_string_value(pr), "udp") != 0)))
		return bad(err, p, "must be \"tcp\" or \"udp\"");
	return 0;
}

static int check_volume(const json_t *o, size_t i, struct ctr_err *err)
{
	static const char *const known[] = {"source", "target", "read_only", NULL};
	char path[64], p[96];
	snprintf(path, sizeof(path), "volumes[%zu]", i);
	if (!json_is_object(o))
		return bad(err, path, "must be an object");
	if (check_known(o, known, path, err) != 0)
		return -1;
	const char *src = json_string_value(json_object_get(o, "source"));
	snprintf(p, sizeof(p), "%s.source", path);
	if (src == NULL || (src[0] == '/' ? !abs_path(src) : !engine_name(src, NAME_MAX_LEN)))
		return bad(err, p, "required: an absolute host path or a volume name");
	const char *dst = json_string_value(json_object_get(o, "target"));
	snprintf(p, sizeof(p), "%s.target", path);
	if (dst == NULL || !abs_path(dst) || strcmp(dst, "/") == 0)
		return bad(err, p, "required: an absolute path in the container (not /)");
	json_t *ro = json_object_get(o, "read_only");
	snprintf(p, sizeof(p), "%s.read_only", path);
	if (ro != NULL && !json_is_boolean(ro))
		return bad(err, p, "must be a boolean");
	return 0;
}

static int check_restart(const json_t *o, struct ctr_err *err)
{
	static const char *const known[] = {"policy", "max_retries", NULL};
	if (!json_is_object(o))
		return bad(err, "restart", "must be an object");
	if (check_known(o, known, "restart", err) != 0)
		return -1;
	const char *p = json_string_value(json_object_get(o, "policy"));
	if (p == NULL || (strcmp(p, "no") != 0 && strcmp(p, "always") != 0 &&
	                  strcmp(p, "on-failure") != 0 && strcmp(p, "unless-stopped") != 0))
		return bad(err, "restart.policy",
		           "required: \"no\", \"always\", \"on-failure\" or \"unless-stopped\"");
	json_t *m = json_object_get(o, "max_retries");
	if (m != NULL &&
	    (!json_is_integer(m) || json_integer_value(m) < 0 || json_integer_value(m) > 1000 ||
	     strcmp(p, "on-failure") != 0))
		return bad(err, "restart.max_retries",
		           "an integer 0..1000, only with policy \"on-failure\"");
	return 0;
}

static bool cpuset(const char *s)
{
	if (strlen(s) == 0 || strlen(s) > 256)
		return false;
	for (const char *p = s; *p; p++)
		if (!isdigit((unsigned char)*p) && *p != ',' && *p != '-')
			return false;
	return isdigit((unsigned char)s[0]) && isdigit((unsigned char)s[strlen(s) - 1]);
}

static int check_fields(const json_t *s, struct ctr_err *err)
{
	const char *name = json_string_value(json_object_get(s, "name"));
	if (name == NULL || !engine_name(name, NAME_MAX_LEN))
		return bad(err, "name", "required: [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most %d bytes",
		           NAME_MAX_LEN);
	const char *image = json_string_value(json_object_get(s, "image"));
	if (image == NULL || !printable(image, IMAGE_MAX_LEN, false) || image[0] == '-')
		return bad(err, "image", "required: an image reference of at most %d bytes",
		           IMAGE_MAX_LEN);
	json_t *v;
	if ((v = json_object_get(s, "command")) != NULL && check_argv(v, "command", err) != 0)
		return -1;
	if ((v = json_object_get(s, "entrypoint")) != NULL && check_argv(v, "entrypoint", err) != 0)
		return -1;
	if ((v = json_object_get(s, "env")) != NULL && check_map(v, "env", true, err) != 0)
		return -1;
	if ((v = json_object_get(s, "labels")) != NULL && check_map(v, "labels", false, err) != 0)
		return -1;
	const char *lists[] = {"ports", "volumes"};
	for (size_t l = 0; l < 2; l++) {
		json_t *a = json_object_get(s, lists[l]);
		if (a == NULL)
			continue;
		if (!json_is_array(a) || json_array_size(a) > LIST_MAX)
			return bad(err, lists[l], "must be an array of at most %d objects", LIST_MAX);
		size_t i;
		json_array_foreach(a, i, v)
		{
			if ((l == 0 ? check_port(v, i, err) : check_volume(v, i, err)) != 0)
				return -1;
		}
	}
	if ((v = json_object_get(s, "cpus")) != NULL &&
	    (!json_is_number(v) || !(json_number_value(v) >= 0.01) ||
	     json_number_value(v) > CPUS_MAX))
		return bad(err, "cpus", "a number of CPUs, 0.01..%g", CPUS_MAX);
	if ((v = json_object_get(s, "cpuset_cpus")) != NULL &&
	    (!json_is_string(v) || !cpuset(json_string_value(v))))
		return bad(err, "cpuset_cpus", "a CPU list like \"0-2,4\"");
	if ((v = json_object_get(s, "memory_bytes")) != NULL &&
	    (!json_is_integer(v) || json_integer_value(v) < MEMORY_MIN))
		return bad(err, "memory_bytes", "an integer of at least %d", MEMORY_MIN);
	if ((v = json_object_get(s, "restart")) != NULL && check_restart(v, err) != 0)
		return -1;
	const char *nm = json_string_value(json_object_get(s, "network_mode"));
	if (json_object_get(s, "network_mode") != NULL &&
	    (nm == NULL || (strcmp(nm, "bridge") != 0 && strcmp(nm, "host") != 0 &&
	                    strcmp(nm, "none") != 0 && !engine_name(nm, NAME_MAX_LEN))))
		return bad(err, "network_mode", "\"bridge\", \"host\", \"none\" or a network name");
	if ((v = json_object_get(s, "replace")) != NULL && !json_is_boolean(v))
		return bad(err, "replace", "must be a boolean");
	const char *pull = json_string_value(json_object_get(s, "pull"));
	if (json_object_get(s, "pull") != NULL &&
	    (pull == NULL || (strcmp(pull, "missing") != 0 && strcmp(pull, "never") != 0)))
		return bad(err, "pull", "\"missing\" or \"never\"");
	return 0;
}

int ctr_spec_validate(const json_t *spec, json_t **canon, bool *replace, bool *pull_never,
                      struct ctr_err *err)
{
	static const char *const known[] = {
	    "name", "image",        "command",      "entrypoint", "env",          "labels",
	    "ports", "volumes",     "cpus",         "cpuset_cpus", "memory_bytes", "restart",
	    "network_mode", "replace", "pull",      NULL};
	*canon = NULL;
	if (!json_is_object(spec))
		return bad(err, "$", "the spec must be a JSON object");
	if (check_known(spec, known, "", err) != 0 || check_fields(spec, err) != 0)
		return -1;
	*replace = json_is_true(json_object_get(spec, "replace"));
	const char *pull = json_string_value(json_object_get(spec, "pull"));
	*pull_never = pull != NULL && strcmp(pull, "never") == 0;
	json_t *c = json_deep_copy(spec);
	if (c == NULL) {
		err->status = 503;
		snprintf(err->code, sizeof(err->code), "unavailable");
		snprintf(err->msg, sizeof(err->msg), "out of memory");
		return -1;
	}
	json_object_del(c, "replace");
	json_object_del(c, "pull");
	*canon = c;
	return 0;
}

void ctr_spec_hash(const json_t *canon, char out[65])
{
	char *text = json_dumps(canon, JSON_COMPACT | JSON_SORT_KEYS);
	uint8_t h[SHA256_LEN];
	sha256_buf(text != NULL ? text : "", text != NULL ? strlen(text) : 0, h);
	hex_encode(h, sizeof(h), out);
	free(text);
}

static json_t *env_list(const json_t *env)
{
	json_t *a = json_array();
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)env, k, v)
	{
		size_t n = strlen(k) + json_string_length(v) + 2;
		char *s = malloc(n);
		if (s == NULL)
			continue;
		snprintf(s, n, "%s=%s", k, json_string_value(v));
		json_array_append_new(a, json_string(s));
		free(s);
	}
	return a;
}

static void add_ports(json_t *body, json_t *host, const json_t *ports)
{
	json_t *exposed = json_object(), *bind = json_object();
	size_t i;
	json_t *p;
	json_array_foreach(ports, i, p)
	{
		const char *proto = json_string_value(json_object_get(p, "protocol"));
		char key[32], hp[16];
		snprintf(key, sizeof(key), "%lld/%s",
		         (long long)json_integer_value(json_object_get(p, "container")),
		         proto != NULL ? proto : "tcp");
		json_t *h = json_object_get(p, "host");
		snprintf(hp, sizeof(hp), "%lld", h != NULL ? (long long)json_integer_value(h) : 0LL);
		const char *ip = json_string_value(json_object_get(p, "host_ip"));
		json_object_set_new(exposed, key, json_object());
		json_t *list = json_object_get(bind, key);
		if (list == NULL) {
			list = json_array();
			json_object_set_new(bind, key, list);
		}
		json_array_append_new(list, json_pack("{s:s, s:s}", "HostIp", ip != NULL ? ip : "",
		                                      "HostPort", strcmp(hp, "0") ? hp : ""));
	}
	json_object_set_new(body, "ExposedPorts", exposed);
	json_object_set_new(host, "PortBindings", bind);
}

static json_t *binds(const json_t *vols)
{
	json_t *a = json_array();
	size_t i;
	json_t *v;
	json_array_foreach(vols, i, v)
	{
		char s[2200];
		snprintf(s, sizeof(s), "%s:%s%s", json_string_value(json_object_get(v, "source")),
		         json_string_value(json_object_get(v, "target")),
		         json_is_true(json_object_get(v, "read_only")) ? ":ro" : "");
		json_array_append_new(a, json_string(s));
	}
	return a;
}

json_t *ctr_spec_body(const json_t *canon, const char *tenant, const struct ctr_who *who)
{
	json_t *body = json_object(), *host = json_object(), *labels = json_object(), *v;
	json_object_set(body, "Image", json_object_get(canon, "image"));
	if ((v = json_object_get(canon, "command")) != NULL)
		json_object_set(body, "Cmd", v);
	if ((v = json_object_get(canon, "entrypoint")) != NULL)
		json_object_set(body, "Entrypoint", v);
	if ((v = json_object_get(canon, "env")) != NULL)
		json_object_set_new(body, "Env", env_list(v));
	if ((v = json_object_get(canon, "labels")) != NULL)
		json_object_update(labels, v);
	char hash[65];
	ctr_spec_hash(canon, hash);
	json_object_set_new(labels, CTR_LABEL_TENANT, json_string(tenant));
	json_object_set_new(labels, CTR_LABEL_CREATOR,
	                    json_string(who != NULL && who->sub != NULL ? who->sub : ""));
	json_object_set_new(labels, CTR_LABEL_PROBE, json_string(who != NULL && who->probe_id != NULL
	                                                             ? who->probe_id
	                                                             : ""));
	json_object_set_new(labels, CTR_LABEL_SPEC, json_string(hash));
	json_object_set_new(body, "Labels", labels);
	if ((v = json_object_get(canon, "ports")) != NULL)
		add_ports(body, host, v);
	if ((v = json_object_get(canon, "volumes")) != NULL)
		json_object_set_new(host, "Binds", binds(v));
	if ((v = json_object_get(canon, "cpus")) != NULL)
		json_object_set_new(host, "NanoCpus",
		                    json_integer((json_int_t)(json_number_value(v) * 1e9 + 0.5)));
	if ((v = json_object_get(canon, "cpuset_cpus")) != NULL)
		json_object_set(host, "CpusetCpus", v);
	if ((v = json_object_get(canon, "memory_bytes")) != NULL)
		json_object_set(host, "Memory", v);
	if ((v = json_object_get(canon, "restart")) != NULL) {
		json_t *m = json_object_get(v, "max_retries");
		json_object_set_new(host, "RestartPolicy",
		                    json_pack("{s:O, s:I}", "Name", json_object_get(v, "policy"),
		                              "MaximumRetryCount",
		                              m != NULL ? json_integer_value(m) : (json_int_t)0));
	}
	if ((v = json_object_get(canon, "network_mode")) != NULL)
		json_object_set(host, "NetworkMode", v);
	json_object_set_new(body, "HostConfig", host);
	return body;
}
