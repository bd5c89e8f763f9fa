/* Run records on disk: one JSON file per probe under probe.work_dir/runs,
 * replaced atomically (fs_write_atomic) at each persisted transition. The file
 * names are the probe ids, which sort by creation time. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/log.h"
#include "probe/internal.h"

#define RECORD_MAX (256u << 20) /* 32 steps × 2 streams × output cap, with slack */

static int record_path(const char *dir, const char *id, char *out, size_t cap)
{
	return (size_t)snprintf(out, cap, "%s/%s.json", dir, id) < cap ? 0 : -1;
}

int probe_store_write(const char *dir, const char *id, const char *text, struct vm_err *err)
{
	char path[PATH_MAX];
	if (record_path(dir, id, path, sizeof(path)) != 0)
		return vm_err_set(err, VM_ERR_INVALID, "probe.work_dir too long");
	return fs_write_atomic(path, text, strlen(text), 0600, err);
}

json_t *probe_store_read(const char *dir, const char *id)
{
	char path[PATH_MAX];
	if (record_path(dir, id, path, sizeof(path)) != 0)
		return NULL;
	char *data;
	size_t len;
	struct vm_err err;
	if (fs_read_file(path, RECORD_MAX, &data, &len, &err) != 0)
		return NULL;
	json_error_t jerr;
	json_t *rec = json_loadb(data, len, 0, &jerr);
	free(data);
	if (rec != NULL && !json_is_object(rec)) {
		json_decref(rec);
		rec = NULL;
	}
	return rec;
}

void probe_store_remove(const char *dir, const char *id)
{
	char path[PATH_MAX];
	if (record_path(dir, id, path, sizeof(path)) == 0)
		(void)unlink(path);
}

static bool is_record_name(const char *name, size_t *idlen)
{
	size_t n = strlen(name);
	if (n < 6 || n - 5 >= PROBE_ID_MAX || strcmp(name + n - 5, ".json") != 0)
		return false;
	for (size_t i = 0; i < n - 5; i++)
		if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'z') ||
		      name[i] == '-'))
			return false;
	*idlen = n - 5;
	return true;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int probe_store_scan(const char *dir, int max, void (*fn)(void *ctx, const char *id, json_t *rec),
                     void *ctx, struct vm_err *err)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		return vm_err_errno(err, VM_ERR_IO, errno, "open %s", dir);
	char **names = NULL;
	size_t n = 0, cap = 0;
	int rc = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		size_t idlen;
		if (!is_record_name(de->d_name, &idlen))
			continue;
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 256;
			char **nn = realloc(names, ncap * sizeof(*nn));
			if (nn == NULL) {
				rc = vm_err_set(err, VM_ERR_NOMEM, "out of memory");
				goto out;
			}
			names = nn;
			cap = ncap;
		}
		names[n] = strndup(de->d_name, idlen);
		if (names[n] == NULL) {
			rc = vm_err_set(err, VM_ERR_NOMEM, "out of memory");
			goto out;
		}
		n++;
	}
	if (n > 0)
		qsort(names, n, sizeof(*names), cmp_names);
	/* Only the newest max are kept: older ones fall outside retention anyway. */
	size_t first = n > (size_t)max ? n - (size_t)max : 0;
	for (size_t i = 0; i < n; i++) {
		if (i < first) {
			probe_store_remove(dir, names[i]);
			continue;
		}
		json_t *rec = probe_store_read(dir, names[i]);
		if (rec == NULL) {
			log_warn("probe", "%s/%s.json is unreadable or not JSON; ignored", dir, names[i]);
			continue;
		}
		fn(ctx, names[i], rec);
		json_decref(rec);
	}
out:
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	closedir(d);
	return rc;
}
