/* The configuration file as a flat list of dotted keys and values, for
 * install and configure: read with libyaml, edited, rendered back in the
 * config table's order and validated by the real loader before any write.
 * Comments in the file are not kept (the previous file is kept as .bak). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/fs.h"
#include "lifecycle/internal.h"

#define CFG_FILE_MAX (1024 * 1024)

static bool known_key(const char *key)
{
	for (size_t i = 0; i < cfg_key_count(); i++)
		if (strcmp(cfg_key_name(i), key) == 0)
			return true;
	return false;
}

/* A YAML list is kept as LIST_MARK item LIST_MARK item… so that it is written
 * back as a list (entries may contain commas). */
#define LIST_MARK '\x1f'

static int flatten_list(yaml_document_t *doc, yaml_node_t *seq, const char *key,
                        struct lc_cfg_doc *out, struct vm_err *err)
{
	if (!known_key(key))
		return vm_err_set(err, VM_ERR_INVALID, "%s: unknown configuration key", key);
	char buf[sizeof(out->pairs[0].value)];
	size_t o = 0;
	buf[o++] = LIST_MARK;
	for (yaml_node_item_t *it = seq->data.sequence.items.start;
	     it < seq->data.sequence.items.top; it++) {
		yaml_node_t *n = yaml_document_get_node(doc, *it);
		if (n == NULL || n->type != YAML_SCALAR_NODE)
			return vm_err_set(err, VM_ERR_INVALID, "%s: list entries must be strings",
			                  key);
		size_t len = n->data.scalar.length;
		if (o + len + 2 >= sizeof(buf) || memchr(n->data.scalar.value, LIST_MARK, len))
			return vm_err_set(err, VM_ERR_INVALID, "%s: list too long", key);
		if (it != seq->data.sequence.items.start)
			buf[o++] = LIST_MARK;
		memcpy(buf + o, n->data.scalar.value, len);
		o += len;
	}
	buf[o] = '\0';
	struct lc_cfg_pair *slot = NULL;
	for (size_t i = 0; i < out->n && slot == NULL; i++)
		if (strcmp(out->pairs[i].key, key) == 0)
			slot = &out->pairs[i];
	if (slot == NULL) {
		if (out->n >= LC_CFG_MAX_PAIRS)
			return vm_err_set(err, VM_ERR_INVALID, "too many keys");
		slot = &out->pairs[out->n++];
		snprintf(slot->key, sizeof(slot->key), "%s", key);
	}
	memcpy(slot->value, buf, o + 1);
	return 0;
}

static int flatten(yaml_document_t *doc, yaml_node_t *map, const char *prefix,
                   struct lc_cfg_doc *out, struct vm_err *err)
{
	for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *k = yaml_document_get_node(doc, p->key);
		yaml_node_t *v = yaml_document_get_node(doc, p->value);
		if (k == NULL || v == NULL || k->type != YAML_SCALAR_NODE)
			return vm_err_set(err, VM_ERR_INVALID, "keys must be plain names");
		char full[160];
		if (snprintf(full, sizeof(full), "%s%s%s", prefix, prefix[0] ? "." : "",
		             (const char *)k->data.scalar.value) >= (int)sizeof(full))
			return vm_err_set(err, VM_ERR_INVALID, "key name too long");
		if (v->type == YAML_MAPPING_NODE) {
			int rc = flatten(doc, v, full, out, err);
			if (rc != 0)
				return rc;
			continue;
		}
		if (v->type == YAML_SEQUENCE_NODE) {
			int rc = flatten_list(doc, v, full, out, err);
			if (rc != 0)
				return rc;
			continue;
		}
		if (v->type != YAML_SCALAR_NODE)
			return vm_err_set(err, VM_ERR_INVALID, "%s: unexpected value", full);
		const char *val = (const char *)v->data.scalar.value;
		bool null_plain =
		    v->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
		    (val[0] == '\0' || strcmp(val, "~") == 0 || strcmp(val, "null") == 0);
		if (null_plain && !known_key(full))
			continue; /* an empty section such as "health:" */
		int rc = lc_cfg_set(out, full, null_plain ? "" : val, err);
		if (rc != 0)
			return rc;
	}
	return 0;
}

int lc_cfg_parse(const char *name, const char *data, size_t len, struct lc_cfg_doc *doc,
                 struct vm_err *err)
{
	memset(doc, 0, sizeof(*doc));
	doc->pairs = calloc(LC_CFG_MAX_PAIRS, sizeof(*doc->pairs));
	if (doc->pairs == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	yaml_parser_t parser;
	yaml_document_t ydoc;
	if (!yaml_parser_initialize(&parser)) {
		lc_cfg_free(doc);
		return vm_err_set(err, VM_ERR_NOMEM, "cannot initialize the YAML parser");
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)data, len);
	int rc = 0;
	if (!yaml_parser_load(&parser, &ydoc)) {
		rc = vm_err_set(err, VM_ERR_INVALID, "%s:%zu: %s", name,
		                parser.problem_mark.line + 1,
		                parser.problem ? parser.problem : "YAML syntax error");
		yaml_parser_delete(&parser);
		lc_cfg_free(doc);
		return rc;
	}
	yaml_node_t *root = yaml_document_get_root_node(&ydoc);
	if (root != NULL && root->type == YAML_MAPPING_NODE)
		rc = flatten(&ydoc, root, "", doc, err);
	else if (root != NULL && !(root->type == YAML_SCALAR_NODE && root->data.scalar.length == 0))
		rc = vm_err_set(err, VM_ERR_INVALID, "%s: expected a mapping of sections", name);
	yaml_document_delete(&ydoc);
	yaml_parser_delete(&parser);
	if (rc != 0)
		lc_cfg_free(doc);
	return rc;
}

int lc_cfg_read(const char *path, struct lc_cfg_doc *doc, struct vm_err *err)
{
	char *data = NULL;
	size_t len = 0;
	if (!lc_exists(path))
		return lc_cfg_parse(path, "", 0, doc, err);
	int rc = fs_read_file(path, CFG_FILE_MAX, &data, &len, err);
	if (rc != 0)
		return rc;
	rc = lc_cfg_parse(path, data, len, doc, err);
	explicit_bzero(data, len); /* it may hold piko.token */
	free(data);
	return rc;
}

const char *lc_cfg_get(const struct lc_cfg_doc *doc, const char *key)
{
	for (size_t i = 0; i < doc->n; i++)
		if (strcmp(doc->pairs[i].key, key) == 0)
			return doc->pairs[i].value;
	return NULL;
}

int lc_cfg_set(struct lc_cfg_doc *doc, const char *key, const char *value, struct vm_err *err)
{
	if (!known_key(key))
		return vm_err_set(err, VM_ERR_INVALID,
		                  "%s: unknown configuration key (see "
		                  "'vm-agent configure --show' for the list)",
		                  key);
	if (strlen(value) >= sizeof(doc->pairs[0].value))
		return vm_err_set(err, VM_ERR_INVALID, "%s: value too long", key);
	for (const char *c = value; *c; c++)
		if ((unsigned char)*c < 0x20 && *c != '\t')
			return vm_err_set(err, VM_ERR_INVALID,
			                  "%s: control characters are not allowed", key);
	struct lc_cfg_pair *slot = NULL;
	for (size_t i = 0; i < doc->n && slot == NULL; i++)
		if (strcmp(doc->pairs[i].key, key) == 0)
			slot = &doc->pairs[i];
	if (slot == NULL) {
		if (doc->n >= LC_CFG_MAX_PAIRS)
			return vm_err_set(err, VM_ERR_INVALID, "too many keys");
		slot = &doc->pairs[doc->n++];
		snprintf(slot->key, sizeof(slot->key), "%s", key);
	}
	snprintf(slot->value, sizeof(slot->value), "%s", value);
	return 0;
}

int lc_cfg_unset(struct lc_cfg_doc *doc, const char *key, struct vm_err *err)
{
	if (!known_key(key))
		return vm_err_set(err, VM_ERR_INVALID, "%s: unknown configuration key", key);
	for (size_t i = 0; i < doc->n; i++)
		if (strcmp(doc->pairs[i].key, key) == 0) {
			explicit_bzero(doc->pairs[i].value, sizeof(doc->pairs[i].value));
			memmove(&doc->pairs[i], &doc->pairs[i + 1],
			        (doc->n - i - 1) * sizeof(doc->pairs[0]));
			doc->n--;
			return 0;
		}
	return 0;
}

/* Appends s double-quoted with YAML escapes. */
static void put_quoted(char *buf, size_t cap, size_t *o, const char *s)
{
	if (*o < cap)
		buf[(*o)++] = '"';
	for (; *s && *o + 3 < cap; s++) {
		if (*s == '"' || *s == '\\')
			buf[(*o)++] = '\\';
		buf[(*o)++] = *s == '\t' ? ' ' : *s;
	}
	if (*o < cap)
		buf[(*o)++] = '"';
}

char *lc_cfg_render(const struct lc_cfg_doc *doc)
{
	size_t cap = 64 * 1024 + doc->n * 2 * sizeof(doc->pairs[0].value) + 64;
	char *buf = malloc(cap);
	if (buf == NULL)
		return NULL;
	size_t o = (size_t)snprintf(buf, cap,
	                            "# vm-agent configuration (written by vm-agent; "
	                            "see config.example.yaml for every key)\n");
	char prev[160] = "";
	for (size_t i = 0; i < cfg_key_count(); i++) {
		const char *key = cfg_key_name(i);
		const char *val = lc_cfg_get(doc, key);
		if (val == NULL)
			continue;
		const char *leaf = strrchr(key, '.') + 1;
		/* open every section level that differs from the previous key's */
		int depth = 0;
		for (const char *seg = key; seg < leaf; depth++) {
			const char *dot = strchr(seg, '.');
			size_t upto = (size_t)(dot - key);
			if (strncmp(prev, key, upto) != 0 ||
			    (prev[upto] != '.' && prev[upto] != '\0'))
				o = str_appendf(buf, cap, o, "%*s%.*s:\n", depth * 2, "",
				                (int)(dot - seg), seg);
			seg = dot + 1;
		}
		snprintf(prev, sizeof(prev), "%.*s", (int)(leaf - key - 1), key);
		o = str_appendf(buf, cap, o, "%*s%s: ", depth * 2, "", leaf);
		if (val[0] == LIST_MARK) {
			/* a list, as a flow sequence of quoted strings */
			if (o < cap)
				buf[o++] = '[';
			for (const char *it = val + 1; *it || it == val + 1;) {
				if (*it == '\0')
					break; /* the empty list */
				const char *end = strchr(it, LIST_MARK);
				size_t n = end ? (size_t)(end - it) : strlen(it);
				char item[sizeof(doc->pairs[0].value)];
				memcpy(item, it, n);
				item[n] = '\0';
				if (it != val + 1 && o + 2 < cap) {
					buf[o++] = ',';
					buf[o++] = ' ';
				}
				put_quoted(buf, cap, &o, item);
				if (end == NULL)
					break;
				it = end + 1;
			}
			if (o < cap)
				buf[o++] = ']';
		} else {
			put_quoted(buf, cap, &o, val);
		}
		if (o + 1 < cap)
			buf[o++] = '\n';
		if (o >= cap - 1)
			break;
	}
	buf[o < cap ? o : cap - 1] = '\0';
	return buf;
}

void lc_cfg_free(struct lc_cfg_doc *doc)
{
	if (doc->pairs != NULL) {
		explicit_bzero(doc->pairs, LC_CFG_MAX_PAIRS * sizeof(*doc->pairs));
		free(doc->pairs);
	}
	doc->pairs = NULL;
	doc->n = 0;
}

int lc_cfg_validate_text(const char *name, const char *text, struct vm_err *err)
{
	static char *const no_env[] = {NULL};
	struct cfg *c = malloc(sizeof(*c));
	if (c == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	int rc = cfg_load_buffer(c, name, text, strlen(text), no_env, err);
	explicit_bzero(c, sizeof(*c));
	free(c);
	return rc;
}

int lc_cfg_write(const char *path, const struct lc_cfg_doc *doc, struct vm_err *err)
{
	char *text = lc_cfg_render(doc);
	if (text == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	int rc = lc_cfg_validate_text(path, text, err);
	if (rc == 0 && lc_exists(path)) {
		char bak[PATH_MAX + 8];
		snprintf(bak, sizeof(bak), "%s.bak", path);
		rc = fs_copy_file(path, bak, 0600, 0, err);
	}
	if (rc == 0)
		rc = fs_write_atomic(path, text, strlen(text), 0640, err);
	explicit_bzero(text, strlen(text));
	free(text);
	return rc;
}
