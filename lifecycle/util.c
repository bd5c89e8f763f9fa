/* Lifecycle plumbing: root-prefixed paths, step reports (text and JSON),
 * file helpers and the install record (credentials.json: core/cp). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/codec.h"
#include "core/fs.h"
#include "core/time.h"
#include "lifecycle/internal.h"

/* --- paths ------------------------------------------------------------------------------------ */

int lc_join(char *out, size_t cap, const char *root, const char *target)
{
	int n = snprintf(out, cap, "%s%s", root, target);
	if (n < 0 || (size_t)n >= cap)
		return vm_err_set(NULL, VM_ERR_INVALID, "path too long");
	return 0;
}

int lc_paths_init(struct lc_paths *p, const char *root, const char *bin_default, struct vm_err *err)
{
	memset(p, 0, sizeof(*p));
	if (root != NULL && root[0] != '\0') {
		if (root[0] != '/')
			return vm_err_set(err, VM_ERR_INVALID,
			                  "--root must be an absolute path: %s", root);
		snprintf(p->root, sizeof(p->root), "%s", root);
		size_t n = strlen(p->root);
		while (n > 1 && p->root[n - 1] == '/')
			p->root[--n] = '\0';
		if (strcmp(p->root, "/") == 0)
			p->root[0] = '\0';
	}
	const char *r = p->root;
	struct {
		char *dst;
		const char *target;
	} const rows[] = {
	    {p->etc_dir, LC_ETC_DIR},
	    {p->config, LC_CONFIG},
	    {p->credentials, LC_CREDENTIALS},
	    {p->piko_token, LC_PIKO_TOKEN},
	    {p->unit, LC_UNIT_DIR "/" LC_UNIT_NAME},
	    {p->unit_wants, LC_UNIT_DIR "/multi-user.target.wants/" LC_UNIT_NAME},
	    {p->state_dir, LC_STATE_DIR},
	    {p->log_dir, LC_LOG_DIR},
	    {p->cache_dir, LC_CACHE_DIR},
	    {p->install_record, LC_STATE_DIR "/install.json"},
	    {p->journal, LC_STATE_DIR "/upgrade.journal"},
	    {p->pid_file, LC_STATE_DIR "/agent.pid"},
	    {p->reload_status, LC_STATE_DIR "/reload.json"},
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		if (lc_join(rows[i].dst, PATH_MAX, r, rows[i].target) != 0)
			return vm_err_set(err, VM_ERR_INVALID, "--root path too long");
	struct lc_record rec;
	const char *bin = bin_default != NULL ? bin_default : LC_BIN_LOCAL;
	if (lc_record_read(p, &rec, NULL) == 0 && rec.bin[0] == '/')
		bin = rec.bin;
	if (lc_join(p->bin, sizeof(p->bin), r, bin) != 0)
		return vm_err_set(err, VM_ERR_INVALID, "--root path too long");
	return 0;
}

const char *lc_target_path(const struct lc_paths *p, const char *full)
{
	size_t n = strlen(p->root);
	if (n > 0 && strncmp(full, p->root, n) == 0 && full[n] == '/')
		return full + n;
	return full;
}

/* --- reports ---------------------------------------------------------------------------------- */

static const char *const status_names[] = {"ok", "changed", "skipped", "warn", "fail"};
static const char *const status_labels[] = {"OK", "CHANGED", "SKIP", "WARN", "FAIL"};

void lc_report_init(struct lc_report *r, const char *command)
{
	memset(r, 0, sizeof(*r));
	r->command = command;
}

void lc_report_add(struct lc_report *r, const char *name, enum lc_status st, const char *hint,
                   const char *fmt, ...)
{
	if (r == NULL || r->n >= LC_REPORT_MAX)
		return;
	struct lc_step *s = &r->steps[r->n++];
	snprintf(s->name, sizeof(s->name), "%s", name);
	s->status = st;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s->detail, sizeof(s->detail), fmt, ap);
	va_end(ap);
	snprintf(s->hint, sizeof(s->hint), "%s", hint ? hint : "");
}

void lc_report_fact(struct lc_report *r, const char *key, const char *value)
{
	if (r == NULL)
		return;
	for (size_t i = 0; i < r->nfacts; i++)
		if (strcmp(r->facts[i][0], key) == 0) {
			snprintf(r->facts[i][1], sizeof(r->facts[i][1]), "%s", value);
			return;
		}
	if (r->nfacts >= sizeof(r->facts) / sizeof(r->facts[0]))
		return;
	snprintf(r->facts[r->nfacts][0], sizeof(r->facts[0][0]), "%s", key);
	snprintf(r->facts[r->nfacts][1], sizeof(r->facts[0][1]), "%s", value);
	r->nfacts++;
}

enum lc_status lc_report_worst(const struct lc_report *r)
{
	enum lc_status w = LC_OK;
	for (size_t i = 0; i < r->n; i++)
		if (r->steps[i].status > w && r->steps[i].status != LC_SKIPPED)
			w = r->steps[i].status;
	return w;
}

void lc_report_print(const struct lc_report *r, FILE *out, bool json)
{
	if (!json) {
		for (size_t i = 0; i < r->n; i++) {
			const struct lc_step *s = &r->steps[i];
			fprintf(out, "%-8s %-22s %s\n", status_labels[s->status], s->name,
			        s->detail);
			if (s->hint[0] != '\0' && s->status >= LC_WARN)
				fprintf(out, "         %-22s fix: %s\n", "", s->hint);
		}
		if (r->result[0] != '\0')
			fprintf(out, "%s\n", r->result);
		return;
	}
	json_t *steps = json_array();
	for (size_t i = 0; i < r->n; i++) {
		const struct lc_step *s = &r->steps[i];
		json_t *o = json_pack("{s:s,s:s,s:s}", "name", s->name, "status",
		                      status_names[s->status], "detail", s->detail);
		if (o != NULL && s->hint[0] != '\0')
			json_object_set_new(o, "hint", json_string(s->hint));
		json_array_append_new(steps, o);
	}
	enum lc_status worst = lc_report_worst(r);
	json_t *doc =
	    json_pack("{s:s,s:b,s:s,s:o}", "command", r->command, "ok",
	              worst < LC_WARN || (worst == LC_WARN && strcmp(r->command, "repair") != 0),
	              "result", r->result, "steps", steps);
	for (size_t i = 0; doc != NULL && i < r->nfacts; i++)
		json_object_set_new(doc, r->facts[i][0], json_string(r->facts[i][1]));
	char *text = doc ? json_dumps(doc, JSON_INDENT(2)) : NULL;
	if (text != NULL)
		fprintf(out, "%s\n", text);
	free(text);
	json_decref(doc);
}

/* --- files ------------------------------------------------------------------------------------ */

bool lc_exists(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0;
}

bool lc_is_dir(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int lc_remove_tree(const char *path, struct vm_err *err)
{
	struct stat st;
	if (lstat(path, &st) != 0)
		return errno == ENOENT ? 0 : vm_err_errno(err, VM_ERR_IO, errno, "stat %s", path);
	if (!S_ISDIR(st.st_mode)) {
		if (unlink(path) != 0 && errno != ENOENT)
			return vm_err_errno(err, VM_ERR_IO, errno, "remove %s", path);
		return 0;
	}
	DIR *d = opendir(path);
	if (d == NULL)
		return vm_err_errno(err, VM_ERR_IO, errno, "open %s", path);
	int rc = 0;
	struct dirent *e;
	while (rc == 0 && (e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		char child[PATH_MAX];
		if (snprintf(child, sizeof(child), "%s/%s", path, e->d_name) >= (int)sizeof(child))
			rc = vm_err_set(err, VM_ERR_INVALID, "%s: path too long", path);
		else
			rc = lc_remove_tree(child, err);
	}
	closedir(d);
	if (rc == 0 && rmdir(path) != 0 && errno != ENOENT)
		rc = vm_err_errno(err, VM_ERR_IO, errno, "remove %s", path);
	return rc;
}

int lc_sha256_hex(const char *path, char out[65], struct vm_err *err)
{
	uint8_t h[SHA256_LEN];
	int rc = sha256_file(path, h, err);
	if (rc == 0)
		hex_encode(h, sizeof(h), out);
	return rc;
}

int lc_ensure_dir(const char *dir, mode_t mode, bool *changed, struct vm_err *err)
{
	struct stat st;
	if (stat(dir, &st) != 0) {
		int rc = fs_mkdir_p(dir, 0755, err);
		if (rc != 0)
			return rc;
		if (chmod(dir, mode) != 0)
			return vm_err_errno(err, VM_ERR_IO, errno, "chmod %s", dir);
		if (changed)
			*changed = true;
		return 0;
	}
	if (!S_ISDIR(st.st_mode))
		return vm_err_set(err, VM_ERR_INVALID, "%s exists and is not a directory", dir);
	if ((st.st_mode & 07777) != mode) {
		if (chmod(dir, mode) != 0)
			return vm_err_errno(err, VM_ERR_IO, errno, "chmod %s", dir);
		if (changed)
			*changed = true;
	}
	return 0;
}

/* --- install record --------------------------------------------------------------------------- */

static void copy_json_str(json_t *o, const char *key, char *dst, size_t cap)
{
	const char *v = json_string_value(json_object_get(o, key));
	snprintf(dst, cap, "%s", v ? v : "");
}

int lc_record_read(const struct lc_paths *p, struct lc_record *rec, struct vm_err *err)
{
	memset(rec, 0, sizeof(*rec));
	json_error_t jerr;
	json_t *o = json_load_file(p->install_record, 0, &jerr);
	if (o == NULL)
		return vm_err_set(err, VM_ERR_NOTFOUND, "%s: %s", p->install_record, jerr.text);
	copy_json_str(o, "bin", rec->bin, sizeof(rec->bin));
	copy_json_str(o, "sha256", rec->sha256, sizeof(rec->sha256));
	copy_json_str(o, "version", rec->version, sizeof(rec->version));
	rec->from_package = json_is_true(json_object_get(o, "from_package"));
	json_decref(o);
	return 0;
}

int lc_record_write(const struct lc_paths *p, const struct lc_record *rec, struct vm_err *err)
{
	char when[32];
	(void)time_rfc3339(when, sizeof(when), time_wall_ms(), false);
	json_t *o =
	    json_pack("{s:s,s:s,s:s,s:b,s:s}", "bin", rec->bin, "sha256", rec->sha256, "version",
	              rec->version, "from_package", rec->from_package, "updated_at", when);
	char *text = o ? json_dumps(o, JSON_INDENT(2)) : NULL;
	json_decref(o);
	if (text == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	int rc = fs_write_atomic(p->install_record, text, strlen(text), 0600, err);
	free(text);
	return rc;
}

/* --- versions --------------------------------------------------------------------------------- */

int lc_version_cmp(const char *a, const char *b, bool *ok)
{
	*ok = true;
	if (*a == 'v')
		a++;
	if (*b == 'v')
		b++;
	for (int part = 0; part < 4; part++) {
		char *ea, *eb;
		if (!(*a >= '0' && *a <= '9') || !(*b >= '0' && *b <= '9')) {
			*ok = false;
			return 0;
		}
		unsigned long x = strtoul(a, &ea, 10), y = strtoul(b, &eb, 10);
		if (x != y)
			return x < y ? -1 : 1;
		a = ea;
		b = eb;
		bool da = *a == '.', db = *b == '.';
		if (!da || !db) {
			/* "1.2" vs "1.2.1": the longer one is newer */
			if (da != db)
				return da ? 1 : -1;
			break;
		}
		a++;
		b++;
	}
	/* a pre-release ("-rc1") sorts before the release */
	bool pa = *a == '-', pb = *b == '-';
	if ((*a != '\0' && !pa) || (*b != '\0' && !pb)) {
		*ok = false;
		return 0;
	}
	if (pa != pb)
		return pa ? -1 : 1;
	int c = strcmp(a, b);
	return c < 0 ? -1 : c > 0;
}
