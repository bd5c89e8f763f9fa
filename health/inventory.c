/* The inventory document: host strings made safe for JSON, the size bound
 * (the longest lists are halved until the document fits), and the cache
 * that lets GET /v1/inventory answer from one collection for cache_ttl. */
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "core/time.h"
#include "health/internal.h"

json_t *health_inv_str(const char *s, size_t len)
{
	if (s == NULL)
		return json_string("");
	char buf[HEALTH_INV_STR_MAX + 1];
	unsigned res = 0;
	size_t n = utf8_escape(buf, sizeof(buf), s, len, UTF8_ESC_CTRL, &res);
	/* escaped whole, backslashes too, so that the original bytes can be read back */
	if (res & UTF8_ESCAPED)
		n = utf8_escape(buf, sizeof(buf), s, len, UTF8_ESC_CTRL | UTF8_ESC_BACKSLASH, &res);
	return json_stringn(buf, n);
}

/* The lists the bound may cut, in the document or under a section. */
static const char *const cuttable[] = {"packages",  "services",   "users",      "groups",
                                       "listening", "interfaces", "filesystems"};

void health_inv_name_truncated(json_t *truncated, const char *section)
{
	size_t i;
	json_t *v;
	json_array_foreach(truncated, i, v) if (strcmp(json_string_value(v), section) == 0) return;
	json_array_append_new(truncated, json_string(section));
}

int health_inventory_dump(json_t *doc, uint64_t max_bytes, char **text, size_t *len)
{
	*text = NULL;
	*len = 0;
	for (;;) {
		char *s = json_dumps(doc, JSON_COMPACT);
		if (s == NULL)
			return -1;
		size_t n = strlen(s);
		if (n <= max_bytes) {
			*text = s;
			*len = n;
			return 0;
		}
		free(s);
		/* halve the longest list: a few rounds whatever the sizes */
		json_t *longest = NULL;
		const char *which = NULL;
		for (size_t i = 0; i < sizeof(cuttable) / sizeof(cuttable[0]); i++) {
			json_t *a = json_object_get(doc, cuttable[i]);
			if (json_is_array(a) &&
			    (longest == NULL || json_array_size(a) > json_array_size(longest))) {
				longest = a;
				which = cuttable[i];
			}
		}
		if (longest == NULL || json_array_size(longest) == 0)
			return -1;
		size_t keep = json_array_size(longest) / 2;
		while (json_array_size(longest) > keep)
			json_array_remove(longest, json_array_size(longest) - 1);
		health_inv_name_truncated(json_object_get(doc, "truncated"), which);
	}
}

void health_inventory_settings(struct health_monitor *m, const struct cfg *cfg)
{
	m->inv_ttl_ms = cfg->inventory.cache_ttl_ms;
	m->inv_max_items = cfg->inventory.max_items > 0 ? (size_t)cfg->inventory.max_items : 1;
	m->inv_max_bytes = cfg->inventory.max_bytes;
}

char *health_inventory_json(struct health_monitor *m, size_t *len, struct vm_err *err)
{
	pthread_mutex_lock(&m->mu);
	uint64_t ttl = m->inv_ttl_ms, max_bytes = m->inv_max_bytes;
	size_t max_items = m->inv_max_items;
	pthread_mutex_unlock(&m->mu);

	/* one collection at a time: a second request waits and gets its result */
	pthread_mutex_lock(&m->inv_mu);
	int64_t now = time_mono_ms();
	if (m->inv_text == NULL || ttl == 0 || now - m->inv_at_ms >= (int64_t)ttl) {
		struct health_inv_ctx ctx = {
		    .proc = m->proc,
		    .etc_root = "/etc",
		    .max_items = max_items,
		    .cancel = &m->stop,
		};
		json_t *doc = health_inventory_collect(&ctx);
		char *text = NULL;
		size_t n = 0;
		int rc = doc != NULL ? health_inventory_dump(doc, max_bytes, &text, &n) : -1;
		json_decref(doc);
		if (rc != 0) {
			pthread_mutex_unlock(&m->inv_mu);
			vm_err_set(err, VM_ERR_NOMEM,
			           "the inventory could not be built within %llu bytes",
			           (unsigned long long)max_bytes);
			return NULL;
		}
		free(m->inv_text);
		m->inv_text = text;
		m->inv_len = n;
		m->inv_at_ms = time_mono_ms();
	}
	char *copy = malloc(m->inv_len + 1);
	if (copy != NULL) {
		memcpy(copy, m->inv_text, m->inv_len + 1);
		*len = m->inv_len;
	} else {
		vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	}
	pthread_mutex_unlock(&m->inv_mu);
	return copy;
}
