/* Step "ssh_keys.sync": a user's ~/.ssh/authorized_keys made to hold the
 * wanted keys (from keys[] or fetched from source_url through core/http.h:
 * the agent's CA, proxy and a 256 KiB cap), every line checked as a public
 * key (authkeys.c) before anything is touched. The files are reached by the
 * directory-fd rule: the home directory opened once, .ssh in it with
 * O_NOFOLLOW, authorized_keys in that fd; a symlink at either is refused. */
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/codec.h"
#include "core/fs.h"
#include "core/http.h"
#include "core/time.h"
#include "probe/steps/authkeys.h"
#include "probe/steps/steps.h"

#define KEYS_FETCH_MS 30000 /* a key source must answer within this (and the step's deadline) */

struct keys_params {
	const char *user;
	const char *url; /* or: */
	char *text;      /* keys[] joined, one per line */
	size_t len;
	bool exclusive;
};

static void params_free(void *p)
{
	struct keys_params *kp = p;
	if (kp != NULL)
		free(kp->text);
	free(kp);
}

/* https, or http to a loopback address (a local mirror, tests): a key list
 * fetched in clear text from elsewhere could be rewritten on the way. No
 * userinfo: a key URL carries no password. */
static const char *url_refusal(const char *u)
{
	if (!url_is_http(u))
		return "an http(s) URL with a host and no spaces or control characters";
	const char *host = strstr(u, "://") + 3;
	size_t hn = strcspn(host, "/?#");
	if (memchr(host, '@', hn) != NULL)
		return "must not carry a user or password";
	if (strncmp(u, "https://", 8) == 0)
		return NULL;
	static const char *const loop[] = {"127.", "localhost:", "localhost/", "[::1]", NULL};
	for (int i = 0; loop[i] != NULL; i++)
		if (strncmp(host, loop[i], strlen(loop[i])) == 0)
			return NULL;
	if (hn == 9 && strncmp(host, "localhost", 9) == 0)
		return NULL;
	return "must be https (plain http only to a loopback address)";
}

int probe_ssh_keys_parse(STEP_PARSE_ARGS)
{
	static const char *const known[] = {"user", "source_url", "keys", "exclusive", NULL};
	if (host_parse_common(obj, st, known, path, epath, ecap, err) != 0)
		return -1;
	struct keys_params *kp = calloc(1, sizeof(*kp));
	if (kp == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	st->ext = kp;
	st->ext_free = params_free;
	if (probe_field_str(obj, "user", true, 32, &kp->user, path, epath, ecap, err) != 0 ||
	    probe_field_str(obj, "source_url", false, URL_HTTP_MAX, &kp->url, path, epath, ecap,
	                    err) != 0 ||
	    probe_field_bool(obj, "exclusive", &kp->exclusive, path, epath, ecap, err) != 0)
		return -1;
	if (!host_valid_user_name(kp->user))
		return host_bad_field(path, "user", epath, ecap, err,
		                      "not a user name ([a-z_][a-z0-9_-]*, at most 32)");
	json_t *keys = json_object_get(obj, "keys");
	if ((keys == NULL) == (kp->url == NULL))
		return host_bad_field(path, kp->url ? "keys" : "source_url", epath, ecap, err,
		                      "give exactly one of source_url and keys");
	if (kp->url != NULL) {
		const char *why = url_refusal(kp->url);
		return why ? host_bad_field(path, "source_url", epath, ecap, err, why) : 0;
	}
	if (!json_is_array(keys) || json_array_size(keys) == 0 ||
	    json_array_size(keys) > AK_KEYS_MAX)
		return host_bad_field(path, "keys", epath, ecap, err,
		                      "an array of 1-1024 public key lines");
	struct buf b;
	buf_init(&b, AK_TEXT_MAX);
	size_t i;
	json_t *v;
	json_array_foreach(keys, i, v)
	{
		char f[32];
		snprintf(f, sizeof(f), "keys[%zu]", i);
		struct ak_key k;
		struct vm_err why = {0};
		int rc = json_is_string(v)
		             ? ak_parse_key(json_string_value(v), json_string_length(v), &k, &why)
		             : vm_err_set(&why, VM_ERR_INVALID, "must be a string");
		ak_key_free(&k);
		if (rc != 0) {
			buf_free(&b);
			return host_bad_field(path, f, epath, ecap, err, why.msg);
		}
		if (buf_printf(&b, "%s\n", json_string_value(v)) != 0) {
			buf_free(&b);
			return host_bad_field(path, "keys", epath, ecap, err,
			                      "more than 256 KiB of keys");
		}
	}
	kp->text = buf_take(&b, &kp->len);
	return kp->text == NULL ? vm_err_set(err, VM_ERR_NOMEM, "out of memory") : 0;
}

/* The key source's text: fetched with the agent's client, refused whole
 * when it is too large (the transfer stops at the cap) or not a 200. */
static enum probe_step_status fetch(const struct probe_step_ctx *ctx, const char *url,
                                    json_t *result, char **text, size_t *len)
{
	int64_t left = ctx->deadline_ms > 0 ? ctx->deadline_ms - time_mono_ms() : KEYS_FETCH_MS;
	if (left <= 0)
		return host_fail(result, "timeout", "no time left to fetch the keys");
	const struct probe_http *h = ctx->http;
	struct http_opts o = {
	    .ca_file = h ? h->ca_file : NULL,
	    .proxy = h ? h->proxy_url : NULL,
	    .proxy_credentials_file = h ? h->proxy_credentials_file : NULL,
	    .connect_timeout_ms = 10000,
	    .total_timeout_ms = (uint64_t)(left < KEYS_FETCH_MS ? left : KEYS_FETCH_MS),
	    .max_body = AK_TEXT_MAX,
	    /* no redirects: an https source must not hand us on to plain http */
	    .follow_redirects = false,
	    .cancel = ctx->cancel,
	};
	struct http_resp resp;
	struct vm_err err = {0};
	probe_step_event(ctx, "info", NULL, "fetching keys from %s", url_shown(url).s);
	int rc = http_request(&o, "GET", url, NULL, NULL, 0, &resp, &err);
	enum probe_step_status ret = STEP_OK;
	if (rc == -VM_ERR_INVALID)
		ret = host_fail(result, "source_too_large",
		                "%s: the answer is larger than %u bytes; nothing was added",
		                url_shown(url).s, AK_TEXT_MAX);
	else if (rc != 0)
		ret = host_fail(result, "source_unreachable", "%s: %s; nothing was added",
		                url_shown(url).s, err.msg);
	else if (resp.status != 200)
		ret = host_fail(result, "source_http_status", "%s: HTTP %ld; nothing was added",
		                url_shown(url).s, resp.status);
	if (ret == STEP_OK) {
		*text = resp.body ? resp.body : strdup("");
		*len = resp.body ? resp.len : 0;
		resp.body = NULL;
		if (*text == NULL)
			ret = host_fail(result, "internal", "out of memory");
	}
	http_resp_free(&resp);
	return ret;
}

static enum probe_step_status fs_fail(json_t *result, const char *what, const struct vm_err *e)
{
	return host_fail(result, fs_err_name(e), "%s: %s", what, e->msg);
}

static const char *mode_str(mode_t m, char buf[8])
{
	snprintf(buf, 8, "%04o", (unsigned)(m & 07777));
	return buf;
}

enum probe_step_status probe_ssh_keys_run(STEP_RUN_ARGS)
{
	const struct keys_params *kp = st->ext;
	host_result_init(result, st);
	json_object_set_new(result, "user", json_string(kp->user));
	char pwbuf[4096];
	struct passwd pw, *pp = NULL;
	if (getpwnam_r(kp->user, &pw, pwbuf, sizeof(pwbuf), &pp) != 0 || pp == NULL)
		return host_fail(result, "no_such_user", "no user %s on this host", kp->user);
	if (pw.pw_dir == NULL || pw.pw_dir[0] != '/')
		return host_fail(result, "no_home", "%s has no absolute home directory", kp->user);

	/* the wanted keys, all checked before anything on disk is looked at */
	char *src = NULL;
	size_t srclen = 0;
	enum probe_step_status ret;
	if (kp->url != NULL && (ret = fetch(ctx, kp->url, result, &src, &srclen)) != STEP_OK)
		return ret;
	struct ak_file want = {0}, cur = {0};
	struct ak_merge m = {0};
	struct vm_err err = {0};
	int homefd = -1, sshfd = -1, fd = -1;
	char *old = NULL;
	size_t oldlen = 0;
	char path[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/.ssh/authorized_keys",
	         strcmp(pw.pw_dir, "/") == 0 ? "" : pw.pw_dir);
	if (ak_parse_file(src ? src : kp->text, src ? srclen : kp->len, true, &want, &err) != 0) {
		ret = host_fail(result, "source_invalid", "%s: %s; nothing was added",
		                kp->url ? url_shown(kp->url).s : "keys", err.msg);
		goto out;
	}
	size_t nwant = 0;
	for (size_t i = 0; i < want.n; i++)
		nwant += want.lines[i].is_key;
	if (nwant == 0) {
		ret = host_fail(result, "source_empty", "%s holds no key; nothing was changed",
		                kp->url ? url_shown(kp->url).s : "keys");
		goto out;
	}

	if ((homefd = fs_walk_dir(pw.pw_dir, &err)) < 0) {
		ret = fs_fail(result, pw.pw_dir, &err);
		goto out;
	}
	struct stat dsb, fsb;
	bool created = false;
	sshfd = fs_open_dir_at(homefd, ".ssh", false, 0700, false, 0, 0, &created, &dsb, &err);
	if (sshfd < 0 && err.code != VM_ERR_NOTFOUND) {
		ret = fs_fail(result, ".ssh", &err);
		goto out;
	}
	/* someone else's .ssh (or file) is not the user's to be handed over */
	if (sshfd >= 0 && dsb.st_uid != pw.pw_uid && dsb.st_uid != 0) {
		ret = host_fail(result, "wrong_owner", "%s/.ssh belongs to uid %u, not %s",
		                pw.pw_dir, (unsigned)dsb.st_uid, kp->user);
		goto out;
	}
	if (sshfd >= 0) {
		fd = fs_open_at(sshfd, "authorized_keys", &fsb, &err);
		if (fd < 0 && err.code != VM_ERR_NOTFOUND) {
			ret = fs_fail(result, path, &err);
			goto out;
		}
	}
	if (fd >= 0) {
		/* a hard link to another file would have us copy that file's bytes */
		if (fsb.st_nlink != 1 || (fsb.st_uid != pw.pw_uid && fsb.st_uid != 0)) {
			ret = host_fail(result, "wrong_owner",
			                "%s has %u links and belongs to uid %u; refused", path,
			                (unsigned)fsb.st_nlink, (unsigned)fsb.st_uid);
			goto out;
		}
		if (fs_read_fd(fd, path, AK_TEXT_MAX, &old, &oldlen, &err) != 0) {
			ret = fs_fail(result, path, &err);
			goto out;
		}
	}
	if (ak_parse_file(old ? old : "", oldlen, false, &cur, &err) != 0) {
		ret = host_fail(result, "invalid_authorized_keys",
		                "%s cannot be edited safely: %s; fix it by hand", path, err.msg);
		goto out;
	}
	if (ak_merge(&cur, &want, kp->exclusive, &m, &err) != 0) {
		ret = host_fail(result, "internal", "%s", err.msg);
		goto out;
	}
	json_object_set_new(result, "added", json_integer(m.added));
	json_object_set_new(result, "removed", json_integer(m.removed));
	json_object_set_new(result, "kept", json_integer(m.kept));

	/* what would change: .ssh (made, or its mode), the file's bytes, its mode or owner */
	char mb[8], mb2[8];
	char dpath[PATH_MAX + 8];
	snprintf(dpath, sizeof(dpath), "%s/.ssh", strcmp(pw.pw_dir, "/") == 0 ? "" : pw.pw_dir);
	if (sshfd < 0)
		json_object_set_new(host_change_str(result, "directory", NULL, "0700"), "path",
		                    json_string(dpath));
	else if ((dsb.st_mode & 07777) != 0700 || dsb.st_uid != pw.pw_uid)
		json_object_set_new(
		    host_change_str(result, "directory_mode", mode_str(dsb.st_mode, mb), "0700"),
		    "path", json_string(dpath));
	bool content = fd < 0 || oldlen != m.len || memcmp(old, m.text, m.len) != 0;
	if (content) {
		struct host_file before = {.exists = fd >= 0,
		                           .data = old,
		                           .len = oldlen,
		                           .mode = fd >= 0 ? fsb.st_mode & 07777 : 0,
		                           .uid = fd >= 0 ? fsb.st_uid : 0,
		                           .gid = fd >= 0 ? fsb.st_gid : 0};
		host_change_file(result, path, &before, m.text, m.len);
	}
	if (fd >= 0 &&
	    ((fsb.st_mode & 07777) != 0600 || fsb.st_uid != pw.pw_uid || fsb.st_gid != pw.pw_gid))
		json_object_set_new(
		    host_change_str(result, "file_mode", mode_str(fsb.st_mode, mb2), "0600"),
		    "path", json_string(path));
	json_t *changed = json_object_get(result, "changed");
	ret = STEP_OK;
	if (st->check || !json_is_true(changed))
		goto out;

	if (sshfd < 0 && (sshfd = fs_open_dir_at(homefd, ".ssh", true, 0700, true, pw.pw_uid,
	                                         pw.pw_gid, &created, &dsb, &err)) < 0) {
		ret = fs_fail(result, dpath, &err);
		goto out;
	}
	if (!created && ((dsb.st_mode & 07777) != 0700 || dsb.st_uid != pw.pw_uid) &&
	    fs_set_owner_mode(sshfd, true, pw.pw_uid, pw.pw_gid, 0700, &err) != 0) {
		ret = fs_fail(result, dpath, &err);
		goto out;
	}
	struct fs_write_opts o = {
	    .mode = 0600, .set_ids = true, .uid = pw.pw_uid, .gid = pw.pw_gid};
	if (fs_write_at(sshfd, "authorized_keys", m.text, m.len, &o, &err) != 0)
		ret = fs_fail(result, path, &err);
out:
	if (fd >= 0)
		close(fd);
	if (sshfd >= 0)
		close(sshfd);
	if (homefd >= 0)
		close(homefd);
	free(old);
	free(src);
	ak_merge_free(&m);
	ak_file_free(&want);
	ak_file_free(&cur);
	return ret;
}
