/* Step "sshd.harden": the asked sshd settings as a drop-in
 * (/etc/ssh/sshd_config.d/50-vm-agent.conf) when sshd_config includes it, else
 * as a marked block at the top of sshd_config (sshd takes a keyword's first
 * value). `sshd -t` before the reload, a banner read after it; on any failure
 * the old bytes come back and sshd is reloaded again. */
#include <ctype.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/buf.h"
#include "core/fs.h"
#include "core/net.h"
#include "core/time.h"
#include "probe/steps/steps.h"

#define SSHD_CONFIG     "/etc/ssh/sshd_config"
#define SSHD_DIR        "/etc/ssh/"
#define SSHD_KEY_MAX    64
#define SSHD_VALUE_MAX  1024
#define SSHD_LINE_MAX   (SSHD_LIST_CAP + 64)
#define SSHD_LIST_CAP   (HOST_SSHD_LIST_MAX * 33 + 1)
#define BLOCK_BEGIN     "# BEGIN vm-agent sshd.harden (managed: changes here are overwritten)"
#define BLOCK_END       "# END vm-agent sshd.harden"
#define DROPIN_HEADER   "# Managed by vm-agent (sshd.harden): changes here are overwritten.\n"
#define BANNER_WAIT_MS  5000
#define BANNER_RETRY_MS 200

/* --- sshd_config text (pure) ------------------------------------------------------- */

bool host_valid_sshd_keyword(const char *s)
{
	size_t n = s != NULL ? strlen(s) : 0;
	if (n == 0 || n > SSHD_KEY_MAX || !isalpha((unsigned char)s[0]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]))
			return false;
	return strcasecmp(s, "Include") != 0 && strcasecmp(s, "Match") != 0;
}

bool host_valid_sshd_value(const char *s)
{
	size_t n = s != NULL ? strlen(s) : 0;
	if (n == 0 || n > SSHD_VALUE_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c <= 0x20 || c >= 0x7f || c == '#' || c == '"')
			return false;
	}
	return true;
}

/* One line of sshd_config: keyword and arguments (both borrowed spans). */
struct kv {
	const char *key, *val;
	size_t klen, vlen;
};

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

/* Splits line[0, n) into keyword and the rest ("Key value" or "Key=value");
 * false for blank and comment lines. */
static bool split_kv(const char *line, size_t n, struct kv *kv)
{
	size_t i = 0;
	while (i < n && is_space(line[i]))
		i++;
	if (i == n || line[i] == '#')
		return false;
	kv->key = line + i;
	while (i < n && !is_space(line[i]) && line[i] != '=')
		i++;
	kv->klen = (size_t)(line + i - kv->key);
	while (i < n && is_space(line[i]))
		i++;
	if (i < n && line[i] == '=')
		i++;
	while (i < n && is_space(line[i]))
		i++;
	size_t end = n;
	while (end > i && is_space(line[end - 1]))
		end--;
	kv->val = line + i;
	kv->vlen = end - i;
	return kv->klen > 0;
}

static bool key_is(const struct kv *kv, const char *key)
{
	return kv->klen == strlen(key) && strncasecmp(kv->key, key, kv->klen) == 0;
}

/* Whether one Include argument (a glob, relative to /etc/ssh) matches file. */
static bool include_matches(const char *arg, size_t n, const char *file)
{
	char pat[PATH_MAX];
	if (n >= 2 && arg[0] == '"' && arg[n - 1] == '"') {
		arg++;
		n -= 2;
	}
	int w = snprintf(pat, sizeof(pat), "%s%.*s", arg[0] == '/' || n == 0 ? "" : SSHD_DIR,
	                 (int)n, arg);
	return n > 0 && w > 0 && (size_t)w < sizeof(pat) && fnmatch(pat, file, FNM_PATHNAME) == 0;
}

/* The next keyword line before the first Match block (what follows a Match
 * applies only to that match); false at the end or at the Match. */
static bool next_global(const char *conf, size_t len, size_t *pos, struct kv *kv)
{
	const char *line;
	size_t n;
	while ((line = host_next_line(conf, len, pos, &n)) != NULL)
		if (split_kv(line, n, kv))
			return !key_is(kv, "Match");
	return false;
}

bool host_sshd_includes(const char *conf, size_t len, const char *file)
{
	size_t pos = 0;
	struct kv kv;
	while (next_global(conf, len, &pos, &kv)) {
		if (!key_is(&kv, "Include"))
			continue;
		size_t i = 0;
		while (i < kv.vlen) {
			while (i < kv.vlen && is_space(kv.val[i]))
				i++;
			size_t start = i;
			while (i < kv.vlen && !is_space(kv.val[i]))
				i++;
			if (i > start && include_matches(kv.val + start, i - start, file))
				return true;
		}
	}
	return false;
}

int host_sshd_value(const char *conf, size_t len, const char *key, char *out, size_t cap)
{
	size_t pos = 0;
	struct kv kv;
	while (next_global(conf, len, &pos, &kv)) {
		if (key_is(&kv, key)) {
			if (cap > 0)
				snprintf(out, cap, "%.*s", (int)kv.vlen, kv.val);
			return 1;
		}
	}
	return 0;
}

static bool line_is(const char *line, size_t n, const char *s)
{
	while (n > 0 && line[n - 1] == '\r')
		n--;
	return n == strlen(s) && memcmp(line, s, n) == 0;
}

int host_sshd_inplace(const char *conf, size_t len, const char *body, size_t blen, struct buf *out,
                      struct buf *old)
{
	buf_free(out);
	if (old != NULL)
		buf_free(old);
	if (body != NULL &&
	    (buf_printf(out, BLOCK_BEGIN "\n") != 0 || buf_append(out, body, blen) != 0 ||
	     buf_printf(out, BLOCK_END "\n") != 0))
		return -1;
	size_t pos = 0, n;
	const char *line;
	bool in_block = false, seen = false;
	while ((line = host_next_line(conf, len, &pos, &n)) != NULL) {
		bool last = pos > len; /* the text's last line had no '\n' */
		if (!in_block && !seen && line_is(line, n, BLOCK_BEGIN)) {
			in_block = seen = true;
			continue;
		}
		if (in_block) {
			if (line_is(line, n, BLOCK_END))
				in_block = false;
			else if (old != NULL &&
			         (buf_append(old, line, n) != 0 || buf_append(old, "\n", 1)))
				return -1;
			continue;
		}
		if (buf_append(out, line, n) != 0 || (!last && buf_append(out, "\n", 1) != 0))
			return -1;
	}
	/* a BEGIN without an END: the block's extent is unknown, edit nothing */
	return in_block ? -2 : 0;
}

static int cmp_extra(const void *a, const void *b)
{
	const char *const *x = a, *const *y = b;
	return strcasecmp(x[0], y[0]);
}

static int put_list(struct buf *out, const char *key, const char *const *v, int n)
{
	if (n == 0)
		return 0;
	if (buf_printf(out, "%s", key) != 0)
		return -1;
	for (int i = 0; i < n; i++)
		if (buf_printf(out, " %s", v[i]) != 0)
			return -1;
	return buf_append(out, "\n", 1);
}

int host_sshd_render(const struct host_sshd_spec *s, struct buf *out)
{
	buf_free(out);
	if ((s->disable_password_auth == 1 &&
	     buf_printf(out, "PasswordAuthentication no\n") != 0) ||
	    (s->disable_root_login == 1 && buf_printf(out, "PermitRootLogin no\n") != 0) ||
	    put_list(out, "AllowUsers", s->allow_users, s->nallow_users) != 0 ||
	    put_list(out, "AllowGroups", s->allow_groups, s->nallow_groups) != 0 ||
	    (s->port != 0 && buf_printf(out, "Port %d\n", s->port) != 0))
		return -1;
	const char *ex[HOST_SSHD_EXTRA_MAX][2];
	for (int i = 0; i < s->nextra; i++) {
		ex[i][0] = s->extra[i].key;
		ex[i][1] = s->extra[i].value;
	}
	qsort(ex, (size_t)s->nextra, sizeof(ex[0]), cmp_extra);
	for (int i = 0; i < s->nextra; i++)
		if (buf_printf(out, "%s %s\n", ex[i][0], ex[i][1]) != 0)
			return -1;
	return 0;
}

/* --- parse ------------------------------------------------------------------------- */

static void sshd_req_free(void *p)
{
	free(p);
}

static int field_tristate(json_t *obj, const char *name, int *out, const char *path, char *epath,
                          size_t ecap, struct vm_err *err)
{
	json_t *v = json_object_get(obj, name);
	*out = -1;
	if (v == NULL)
		return 0;
	if (!json_is_boolean(v))
		return host_bad_field(path, name, epath, ecap, err, "must be true or false");
	*out = json_is_true(v);
	return 0;
}

static int field_names(json_t *obj, const char *name, bool (*valid)(const char *), const char **out,
                       int *n, const char *path, char *epath, size_t ecap, struct vm_err *err)
{
	json_t *v = json_object_get(obj, name);
	if (v == NULL)
		return 0;
	if (!json_is_array(v) || json_array_size(v) > HOST_SSHD_LIST_MAX)
		return host_bad_field(path, name, epath, ecap, err, "an array of at most 64 names");
	size_t i;
	json_t *e;
	json_array_foreach(v, i, e)
	{
		if (!json_is_string(e) || !valid(json_string_value(e))) {
			char f[48];
			snprintf(f, sizeof(f), "%s[%zu]", name, i);
			return host_bad_field(path, f, epath, ecap, err, "not a valid name");
		}
		out[(*n)++] = json_string_value(e);
	}
	return 0;
}

/* Keywords the typed fields own: extra must not set them a second way. */
static const char *const typed_keys[] = {
    "PasswordAuthentication", "PermitRootLogin", "AllowUsers", "AllowGroups", "Port", NULL};

int probe_sshd_parse(STEP_PARSE_ARGS)
{
	static const char *const known[] = {"disable_password_auth",
	                                    "disable_root_login",
	                                    "allow_users",
	                                    "allow_groups",
	                                    "port",
	                                    "extra",
	                                    NULL};
	if (host_parse_common(obj, st, known, path, epath, ecap, err) != 0)
		return -1;
	struct host_sshd_spec *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	st->ext = s;
	st->ext_free = sshd_req_free;
	if (field_tristate(obj, "disable_password_auth", &s->disable_password_auth, path, epath,
	                   ecap, err) != 0 ||
	    field_tristate(obj, "disable_root_login", &s->disable_root_login, path, epath, ecap,
	                   err) != 0 ||
	    field_names(obj, "allow_users", host_valid_user_name, s->allow_users, &s->nallow_users,
	                path, epath, ecap, err) != 0 ||
	    field_names(obj, "allow_groups", host_valid_group_name, s->allow_groups,
	                &s->nallow_groups, path, epath, ecap, err) != 0)
		return -1;
	json_t *port = json_object_get(obj, "port");
	if (port != NULL) {
		if (!json_is_integer(port) || json_integer_value(port) < 1 ||
		    json_integer_value(port) > 65535)
			return host_bad_field(path, "port", epath, ecap, err, "an integer 1-65535");
		s->port = (int)json_integer_value(port);
	}
	json_t *extra = json_object_get(obj, "extra");
	if (extra != NULL) {
		if (!json_is_object(extra) || json_object_size(extra) > HOST_SSHD_EXTRA_MAX)
			return host_bad_field(path, "extra", epath, ecap, err,
			                      "an object of at most 32 Keyword: value pairs");
		const char *k;
		json_t *v;
		json_object_foreach(extra, k, v)
		{
			char f[96];
			snprintf(f, sizeof(f), "extra.%.64s", k);
			f[utf8_cut(f, strlen(f))] = '\0';
			if (!host_valid_sshd_keyword(k))
				return host_bad_field(
				    path, f, epath, ecap, err,
				    "not an sshd_config keyword (letters and digits; not "
				    "Include or Match)");
			for (const char *const *t = typed_keys; *t != NULL; t++)
				if (strcasecmp(k, *t) == 0)
					return host_bad_field(
					    path, f, epath, ecap, err,
					    "set by its own field of sshd.harden");
			for (int i = 0; i < s->nextra; i++)
				if (strcasecmp(k, s->extra[i].key) == 0)
					return host_bad_field(path, f, epath, ecap, err,
					                      "given twice");
			if (!json_is_string(v) || !host_valid_sshd_value(json_string_value(v)))
				return host_bad_field(
				    path, f, epath, ecap, err,
				    "one value of printable ASCII without whitespace, '#' "
				    "or '\"'");
			s->extra[s->nextra].key = k;
			s->extra[s->nextra++].value = json_string_value(v);
		}
	}
	if (s->disable_password_auth != 1 && s->disable_root_login != 1 && s->nallow_users == 0 &&
	    s->nallow_groups == 0 && s->port == 0 && s->nextra == 0)
		return host_bad_field(path, "extra", epath, ecap, err,
		                      "nothing to set: give at least one setting");
	return 0;
}

/* --- run --------------------------------------------------------------------------- */

/* Appends a change per keyword whose value differs between the old and the new
 * managed text, and lists them in "modified_keys". */
static void report_keys(json_t *result, const char *old, size_t olen, const char *neu, size_t nlen)
{
	json_t *keys = json_array();
	const char *texts[2] = {neu, old};
	size_t lens[2] = {nlen, olen};
	for (int t = 0; t < 2; t++) {
		size_t pos = 0, n;
		const char *line;
		struct kv kv;
		while ((line = host_next_line(texts[t], lens[t], &pos, &n)) != NULL) {
			if (!split_kv(line, n, &kv) || kv.klen > SSHD_KEY_MAX)
				continue;
			char key[SSHD_KEY_MAX + 1], a[SSHD_LINE_MAX], b[SSHD_LINE_MAX];
			snprintf(key, sizeof(key), "%.*s", (int)kv.klen, kv.key);
			bool ha = host_sshd_value(old, olen, key, a, sizeof(a)) == 1;
			bool hb = host_sshd_value(neu, nlen, key, b, sizeof(b)) == 1;
			/* a key only in the old text is seen once, in the second pass */
			if ((t == 1 && hb) || (ha && hb && strcmp(a, b) == 0))
				continue;
			bool dup = false;
			size_t i;
			json_t *k;
			json_array_foreach(keys, i, k) dup |=
			    strcasecmp(json_string_value(k), key) == 0;
			if (dup)
				continue;
			json_array_append_new(keys, json_string(key));
			json_t *c = host_change(result, "sshd_config", ha ? json_string(a) : NULL,
			                        hb ? json_string(b) : NULL);
			json_object_set_new(c, "key", json_string(key));
		}
	}
	json_object_set_new(result, "modified_keys", keys);
}

static int sshd_test(const struct probe_step_ctx *ctx, json_t *result)
{
	const char *argv[] = {"sshd", "-t", NULL};
	return host_run_ok(ctx, argv, "sshd_rejected", result) == STEP_OK ? 0 : -1;
}

/* systemctl reload of Debian's ssh.service, else sshd.service (Fedora, SUSE, Arch). */
static int sshd_reload(const struct probe_step_ctx *ctx, json_t *result)
{
	static const char *const units[] = {"ssh.service", "sshd.service"};
	int rc = -1;
	for (size_t i = 0; i < 2 && rc != 0; i++) {
		const char *argv[] = {"systemctl", "reload", units[i], NULL};
		rc = host_run_ok(ctx, argv, "reload_failed", result) == STEP_OK ? 0 : -1;
	}
	if (rc == 0) {
		json_object_del(result, "error");
		json_object_del(result, "error_code");
	}
	return rc;
}

/* The port sshd listens on as it now reads its configuration (`sshd -T`). */
static int sshd_port(const struct probe_step_ctx *ctx, const struct host_sshd_spec *s)
{
	if (s->port != 0)
		return s->port;
	const char *argv[] = {"sshd", "-T", NULL};
	struct proc_result res = {0};
	struct vm_err err = {0};
	char v[16];
	int port = 22;
	if (host_run(ctx, &(struct host_cmd){.argv = argv}, &res, &err) == 0 &&
	    res.exit_code == 0 &&
	    host_sshd_value(res.out, res.out_len, "port", v, sizeof(v)) == 1 && atoi(v) > 0 &&
	    atoi(v) < 65536)
		port = atoi(v);
	proc_result_free(&res);
	return port;
}

/* The daemon accepts a connection and sends an SSH banner (it restarts its
 * listener on a reload: retried for a few seconds). */
static int sshd_answers(const struct probe_step_ctx *ctx, int port, json_t *result)
{
	int64_t end = time_mono_ms() + BANNER_WAIT_MS;
	if (ctx->deadline_ms > 0 && ctx->deadline_ms < end)
		end = ctx->deadline_ms;
	struct vm_err err = {0};
	char line[256];
	for (;;) {
		if (net_read_banner("127.0.0.1", port, end, line, sizeof(line), &err) == 0) {
			if (strncmp(line, "SSH-", 4) == 0) {
				probe_json_set_bytes(result, "banner", line, strlen(line));
				return 0;
			}
			vm_err_set(&err, VM_ERR_IO, "port %d answered without an SSH banner", port);
		}
		if (time_mono_ms() + BANNER_RETRY_MS >= end || !host_wait(ctx, BANNER_RETRY_MS))
			break;
	}
	host_fail(result, "sshd_unreachable", "sshd does not answer on 127.0.0.1:%d: %s", port,
	          err.msg);
	return -1;
}

/* Puts the old bytes back and reloads again, saying so in the result. */
static void roll_back(const struct probe_step_ctx *ctx, const struct host_backup *bk, bool reload,
                      json_t *result)
{
	struct vm_err err = {0};
	if (host_backup_restore(bk, &err) != 0) {
		json_object_set_new(result, "restore_error", json_string(err.msg));
		return;
	}
	json_object_set_new(result, "restored", json_true());
	if (!reload)
		return;
	/* keep the first failure's message: it is the reason */
	json_t *scratch = json_object();
	if (sshd_reload(ctx, scratch) != 0)
		json_object_set(result, "reload_error", json_object_get(scratch, "error"));
	json_decref(scratch);
}

enum probe_step_status probe_sshd_run(STEP_RUN_ARGS)
{
	const struct host_sshd_spec *s = st->ext;
	host_result_init(result, st);
	struct host_file conf = {0}, drop = {0};
	struct host_backup bk = {0};
	struct vm_err err = {0};
	struct buf body, text, old;
	buf_init(&body, HOST_TEXT_MAX);
	buf_init(&text, HOST_TEXT_MAX + 4096);
	buf_init(&old, HOST_TEXT_MAX);
	enum probe_step_status rc = STEP_OK;
	bool written = false;
	if (host_file_read(SSHD_CONFIG, HOST_TEXT_MAX, &conf, &err) != 0 ||
	    host_file_read(HOST_SSHD_DROPIN, HOST_TEXT_MAX, &drop, &err) != 0) {
		rc = host_fail(result, fs_err_name(&err), "%s", err.msg);
		goto out;
	}
	if (!conf.exists) {
		rc = host_fail(result, "sshd_missing", SSHD_CONFIG " does not exist");
		goto out;
	}
	if (host_sshd_render(s, &body) != 0) {
		rc = host_fail(result, "internal", "out of memory");
		goto out;
	}
	bool dropin = host_sshd_includes(conf.data, conf.len, HOST_SSHD_DROPIN);
	const char *target = dropin ? HOST_SSHD_DROPIN : SSHD_CONFIG;
	const struct host_file *cur = dropin ? &drop : &conf;
	json_object_set_new(result, "path", json_string(target));
	json_object_set_new(result, "mode", json_string(dropin ? "drop-in" : "in-place"));
	const char *oldbody = NULL;
	size_t oldlen = 0;
	if (dropin) {
		if (buf_printf(&text, DROPIN_HEADER) != 0 ||
		    buf_append(&text, buf_data(&body), body.len) != 0) {
			rc = host_fail(result, "internal", "out of memory");
			goto out;
		}
		oldbody = drop.data;
		oldlen = drop.len;
	} else {
		int r = host_sshd_inplace(conf.data, conf.len, (const char *)buf_data(&body),
		                          body.len, &text, &old);
		if (r != 0) {
			rc = r == -2 ? host_fail(result, "sshd_config_block",
			                         SSHD_CONFIG
			                         " has a vm-agent block without its end line")
			             : host_fail(result, "internal", "out of memory");
			goto out;
		}
		oldbody = (const char *)buf_data(&old);
		oldlen = old.len;
	}
	bool same = cur->exists && cur->len == text.len &&
	            memcmp(cur->data, buf_data(&text), text.len) == 0;
	if (same && (!dropin || (cur->mode == 0644 && cur->uid == 0 && cur->gid == 0))) {
		json_object_set_new(result, "modified_keys", json_array());
		goto out;
	}
	host_change_file(result, target, cur, (const char *)buf_data(&text), text.len);
	report_keys(result, oldbody, oldlen, (const char *)buf_data(&body), body.len);
	if (st->check)
		goto out;
	mode_t mode = dropin || !cur->exists ? 0644 : cur->mode;
	uid_t uid = dropin ? 0 : cur->uid;
	gid_t gid = dropin ? 0 : cur->gid;
	probe_step_event(ctx, "info", NULL, "writing %s", target);
	if (host_backup_take(&bk, target, HOST_TEXT_MAX, &err) != 0 ||
	    host_file_write(target, buf_data(&text), text.len, mode, uid, gid, &err) != 0) {
		rc = host_fail(result, fs_err_name(&err), "%s", err.msg);
		goto out;
	}
	written = true;
	probe_step_event(ctx, "info", NULL, "sshd -t");
	if (sshd_test(ctx, result) != 0) {
		/* nothing was loaded yet: the old bytes are enough */
		roll_back(ctx, &bk, false, result);
		rc = STEP_FAILED;
		goto out;
	}
	probe_step_event(ctx, "info", NULL, "reloading sshd");
	int port = sshd_port(ctx, s);
	if (sshd_reload(ctx, result) != 0 || sshd_answers(ctx, port, result) != 0) {
		roll_back(ctx, &bk, true, result);
		rc = STEP_FAILED;
		goto out;
	}
	json_object_set_new(result, "port", json_integer(port));
out:
	if (rc != STEP_OK && (!written || json_is_true(json_object_get(result, "restored"))))
		json_object_set_new(result, "changed", json_false());
	host_backup_free(&bk);
	host_file_free(&conf);
	host_file_free(&drop);
	buf_free(&body);
	buf_free(&text);
	buf_free(&old);
	return rc;
}
