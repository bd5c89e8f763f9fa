/* The authorized_keys model (see authkeys.h): key lines parsed and checked
 * down to the key's wire format, files split into unmanaged lines and the
 * managed block, and the merge of wanted keys into a file. */
#include "probe/steps/authkeys.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/buf.h"
#include "core/codec.h"
#include "probe/steps/steps.h"

struct ktype {
	const char *name;
	const char *curve; /* ECDSA: the curve string in the blob */
	size_t point;      /* ECDSA: uncompressed point length */
	bool sk;           /* security key: an application string follows */
};

static const struct ktype ktypes[] = {
    {"ssh-ed25519", NULL, 0, false},
    {"ssh-rsa", NULL, 0, false},
    {"ecdsa-sha2-nistp256", "nistp256", 65, false},
    {"ecdsa-sha2-nistp384", "nistp384", 97, false},
    {"ecdsa-sha2-nistp521", "nistp521", 133, false},
    {"sk-ssh-ed25519@openssh.com", NULL, 0, true},
    {"sk-ecdsa-sha2-nistp256@openssh.com", "nistp256", 65, true},
};

/* The options sshd reads (auth-options.c); case does not matter to it. */
static const char *const known_opts[] = {
    "agent-forwarding",
    "cert-authority",
    "command",
    "environment",
    "expiry-time",
    "from",
    "no-agent-forwarding",
    "no-port-forwarding",
    "no-pty",
    "no-user-rc",
    "no-X11-forwarding",
    "no-touch-required",
    "permitlisten",
    "permitopen",
    "port-forwarding",
    "principals",
    "pty",
    "restrict",
    "tunnel",
    "user-rc",
    "verify-required",
    "X11-forwarding",
    NULL,
};

static const struct ktype *ktype_find(const char *s, size_t n)
{
	for (size_t i = 0; i < sizeof(ktypes) / sizeof(ktypes[0]); i++)
		if (strlen(ktypes[i].name) == n && memcmp(ktypes[i].name, s, n) == 0)
			return &ktypes[i];
	return NULL;
}

static bool blank(char c)
{
	return c == ' ' || c == '\t';
}

void ak_key_free(struct ak_key *k)
{
	if (k == NULL)
		return;
	free(k->options);
	free(k->type);
	free(k->blob);
	free(k->b64);
	free(k->comment);
	memset(k, 0, sizeof(*k));
}

bool ak_key_same(const struct ak_key *a, const struct ak_key *b)
{
	return strcmp(a->type, b->type) == 0 && a->blob_len == b->blob_len &&
	       memcmp(a->blob, b->blob, a->blob_len) == 0;
}

/* --- the key's wire format (RFC 4253 strings and mpints) -------------------- */

struct rd {
	const uint8_t *p;
	size_t n;
};

static int rd_string(struct rd *r, const uint8_t **s, size_t *len)
{
	if (r->n < 4)
		return -1;
	size_t l = (size_t)r->p[0] << 24 | (size_t)r->p[1] << 16 | (size_t)r->p[2] << 8 | r->p[3];
	if (l > r->n - 4)
		return -1;
	*s = r->p + 4;
	*len = l;
	r->p += 4 + l;
	r->n -= 4 + l;
	return 0;
}

static bool str_is(const uint8_t *s, size_t n, const char *want)
{
	return n == strlen(want) && memcmp(s, want, n) == 0;
}

/* A positive mpint in canonical form; its size in bits into *bits. */
static int rd_mpint(struct rd *r, size_t *bits)
{
	const uint8_t *s;
	size_t n;
	if (rd_string(r, &s, &n) != 0 || n == 0 || (s[0] & 0x80) != 0)
		return -1;
	if (s[0] == 0 && (n == 1 || (s[1] & 0x80) == 0))
		return -1; /* a needless leading zero, or zero itself */
	if (s[0] == 0) {
		s++;
		n--;
	}
	size_t b = n * 8;
	for (uint8_t top = s[0]; (top & 0x80) == 0; top = (uint8_t)(top << 1))
		b--;
	*bits = b;
	return 0;
}

static int blob_check(const struct ktype *t, const uint8_t *blob, size_t len, struct vm_err *err)
{
	struct rd r = {blob, len};
	const uint8_t *s;
	size_t n;
	if (rd_string(&r, &s, &n) != 0 || !str_is(s, n, t->name))
		return vm_err_set(err, VM_ERR_INVALID, "the key data does not say it is %s",
		                  t->name);
	if (strcmp(t->name, "ssh-rsa") == 0) {
		size_t ebits, nbits;
		if (rd_mpint(&r, &ebits) != 0 || ebits < 2 || ebits > 64 ||
		    rd_mpint(&r, &nbits) != 0)
			return vm_err_set(err, VM_ERR_INVALID, "not a well-formed RSA key");
		if (nbits < 1024 || nbits > 16384)
			return vm_err_set(err, VM_ERR_INVALID,
			                  "an RSA key of %zu bits (1024-16384 are accepted)",
			                  nbits);
	} else if (t->curve != NULL) {
		if (rd_string(&r, &s, &n) != 0 || !str_is(s, n, t->curve) ||
		    rd_string(&r, &s, &n) != 0 || n != t->point || s[0] != 0x04)
			return vm_err_set(err, VM_ERR_INVALID, "not a well-formed %s key", t->name);
	} else {
		if (rd_string(&r, &s, &n) != 0 || n != 32)
			return vm_err_set(err, VM_ERR_INVALID, "not a well-formed Ed25519 key");
	}
	if (t->sk) {
		if (rd_string(&r, &s, &n) != 0 || n == 0 || n > 255)
			return vm_err_set(err, VM_ERR_INVALID,
			                  "a security key without application");
		for (size_t i = 0; i < n; i++)
			if (s[i] < 0x21 || s[i] > 0x7e)
				return vm_err_set(err, VM_ERR_INVALID,
				                  "a security key application that is not text");
	}
	if (r.n != 0)
		return vm_err_set(err, VM_ERR_INVALID, "%zu bytes after the key", r.n);
	return 0;
}

/* --- options ------------------------------------------------------------------ */

/* The options at s up to the first unquoted blank: name[="value"],... with
 * known names. *end gets where they stop. */
static int options_check(const char *s, const char **end, struct vm_err *err)
{
	const char *p = s;
	for (;;) {
		const char *name = p;
		while (isalnum((unsigned char)*p) || *p == '-')
			p++;
		size_t nl = (size_t)(p - name);
		bool known = false;
		for (int i = 0; known_opts[i] != NULL && nl > 0; i++)
			known = known || (strlen(known_opts[i]) == nl &&
			                  strncasecmp(known_opts[i], name, nl) == 0);
		if (!known)
			return vm_err_set(err, VM_ERR_INVALID, "unknown key option '%.*s'",
			                  (int)(nl > 40 ? 40 : nl), name);
		if (*p == '=') {
			if (*++p != '"')
				return vm_err_set(err, VM_ERR_INVALID,
				                  "the value of option %.*s must be quoted",
				                  (int)nl, name);
			for (p++; *p != '"'; p++) {
				if (*p == '\0')
					return vm_err_set(err, VM_ERR_INVALID,
					                  "option %.*s: unterminated quote",
					                  (int)nl, name);
				if (*p == '\\' && p[1] == '"')
					p++;
			}
			p++;
		}
		if (*p == ',') {
			p++;
			continue;
		}
		if (!blank(*p))
			return vm_err_set(err, VM_ERR_INVALID,
			                  "options must be followed by the key type");
		*end = p;
		return 0;
	}
}

/* --- one line ------------------------------------------------------------------- */

static char *dupn(const char *s, size_t n)
{
	char *d = malloc(n + 1);
	if (d != NULL) {
		memcpy(d, s, n);
		d[n] = '\0';
	}
	return d;
}

int ak_parse_key(const char *line, size_t len, struct ak_key *out, struct vm_err *err)
{
	memset(out, 0, sizeof(*out));
	if (len > AK_LINE_MAX)
		return vm_err_set(err, VM_ERR_INVALID, "a line longer than %u bytes", AK_LINE_MAX);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)line[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return vm_err_set(err, VM_ERR_INVALID, "a control character in the line");
	}
	char *l = dupn(line, len);
	if (l == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	int rc = 0;
	char *p = l;
	while (blank(*p))
		p++;
	size_t tl = strcspn(p, " \t");
	const struct ktype *t = ktype_find(p, tl);
	if (t == NULL) {
		/* not a key type first: options, then the type */
		const char *end = p;
		if (*p == '\0' || options_check(p, &end, err) != 0) {
			if (*p == '\0')
				vm_err_set(err, VM_ERR_INVALID, "an empty line");
			rc = -VM_ERR_INVALID;
			goto out;
		}
		if ((out->options = dupn(p, (size_t)(end - p))) == NULL)
			goto nomem;
		p += end - p;
		while (blank(*p))
			p++;
		tl = strcspn(p, " \t");
		if ((t = ktype_find(p, tl)) == NULL) {
			rc = vm_err_set(err, VM_ERR_INVALID,
			                "'%.*s' is not a key type accepted here",
			                (int)(tl > 40 ? 40 : tl), p);
			goto out;
		}
	}
	if ((out->type = dupn(p, tl)) == NULL)
		goto nomem;
	p += tl;
	while (blank(*p))
		p++;
	size_t bl = strcspn(p, " \t");
	if (bl == 0) {
		rc = vm_err_set(err, VM_ERR_INVALID, "no key data after the type");
		goto out;
	}
	out->blob = malloc(b64_decoded_max(bl) + 1);
	if (out->blob == NULL)
		goto nomem;
	long dn = b64_decode(p, bl, out->blob, 0);
	if (dn <= 0) {
		rc = vm_err_set(err, VM_ERR_INVALID, "the key data is not base64");
		goto out;
	}
	out->blob_len = (size_t)dn;
	/* one spelling per key: a re-encoding must give the same text */
	if ((out->b64 = malloc(b64_encoded_len(out->blob_len) + 1)) == NULL)
		goto nomem;
	b64_encode(out->blob, out->blob_len, out->b64, 0);
	if (strlen(out->b64) != bl || memcmp(out->b64, p, bl) != 0) {
		rc = vm_err_set(err, VM_ERR_INVALID, "the key data is not canonical base64");
		goto out;
	}
	if ((rc = blob_check(t, out->blob, out->blob_len, err)) != 0)
		goto out;
	p += bl;
	while (blank(*p))
		p++;
	size_t cl = strlen(p);
	while (cl > 0 && blank(p[cl - 1]))
		cl--;
	if (cl > 0 && (out->comment = dupn(p, cl)) == NULL)
		goto nomem;
out:
	free(l);
	return rc;
nomem:
	free(l);
	return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
}

/* --- files ---------------------------------------------------------------------- */

void ak_file_free(struct ak_file *f)
{
	if (f == NULL)
		return;
	for (size_t i = 0; i < f->n; i++) {
		free(f->lines[i].raw);
		ak_key_free(&f->lines[i].key);
	}
	free(f->lines);
	memset(f, 0, sizeof(*f));
}

static struct ak_line *line_add(struct ak_file *f)
{
	if (f->n == f->cap) {
		size_t cap = f->cap ? f->cap * 2 : 16;
		struct ak_line *p = realloc(f->lines, cap * sizeof(*p));
		if (p == NULL)
			return NULL;
		f->lines = p;
		f->cap = cap;
	}
	struct ak_line *l = &f->lines[f->n++];
	memset(l, 0, sizeof(*l));
	return l;
}

static bool skippable(const char *s, size_t n)
{
	size_t i = 0;
	while (i < n && blank(s[i]))
		i++;
	return i == n || s[i] == '#';
}

int ak_parse_file(const char *text, size_t len, bool strict, struct ak_file *out,
                  struct vm_err *err)
{
	memset(out, 0, sizeof(*out));
	if (len > AK_TEXT_MAX)
		return vm_err_set(err, VM_ERR_INVALID, "larger than %u bytes", AK_TEXT_MAX);
	if (memchr(text, '\0', len) != NULL)
		return vm_err_set(err, VM_ERR_INVALID, "holds a NUL byte: not a key list");
	bool in_block = false;
	size_t keys = 0, line_no = 0;
	size_t off = 0, n;
	const char *s;
	while ((s = host_next_line(text, len, &off, &n)) != NULL) {
		line_no++;
		size_t rawn = n;
		if (n > 0 && s[n - 1] == '\r')
			n--;
		if (n == strlen(AK_BEGIN) && memcmp(s, AK_BEGIN, n) == 0) {
			if (in_block || out->has_block)
				return vm_err_set(err, VM_ERR_INVALID,
				                  "line %zu: a second managed block", line_no);
			in_block = out->has_block = true;
			out->block_at = out->n;
			continue;
		}
		if (n == strlen(AK_END) && memcmp(s, AK_END, n) == 0) {
			if (!in_block)
				return vm_err_set(err, VM_ERR_INVALID,
				                  "line %zu: an END marker without its BEGIN",
				                  line_no);
			in_block = false;
			continue;
		}
		struct ak_line *l = line_add(out);
		if (l == NULL)
			return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
		l->managed = in_block;
		struct vm_err kerr = {0};
		int krc = skippable(s, n) ? -VM_ERR_INVALID : ak_parse_key(s, n, &l->key, &kerr);
		if (krc == -VM_ERR_NOMEM)
			return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
		if (krc == 0) {
			l->is_key = true;
			if (++keys > AK_KEYS_MAX)
				return vm_err_set(err, VM_ERR_INVALID, "more than %d keys",
				                  AK_KEYS_MAX);
		} else {
			ak_key_free(&l->key);
			if (strict && !skippable(s, n))
				return vm_err_set(err, VM_ERR_INVALID, "line %zu: %s", line_no,
				                  kerr.msg);
			if (n > AK_LINE_MAX)
				return vm_err_set(err, VM_ERR_INVALID,
				                  "line %zu: longer than %u bytes", line_no,
				                  AK_LINE_MAX);
		}
		/* every line as written: unmanaged ones are put back byte for byte */
		if ((l->raw = dupn(s, rawn)) == NULL)
			return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	}
	if (in_block)
		return vm_err_set(err, VM_ERR_INVALID, "the managed block has no END marker");
	return 0;
}

/* --- merge ------------------------------------------------------------------------ */

static int key_line(struct buf *b, const struct ak_key *k)
{
	return buf_printf(b, "%s%s%s %s%s%s\n", k->options ? k->options : "", k->options ? " " : "",
	                  k->type, k->b64, k->comment ? " " : "", k->comment ? k->comment : "");
}

/* Whether key k is among the lines of f (managed: any, else unmanaged only). */
static bool in_file(const struct ak_file *f, const struct ak_key *k, bool unmanaged_only)
{
	for (size_t i = 0; i < f->n; i++)
		if (f->lines[i].is_key && !(unmanaged_only && f->lines[i].managed) &&
		    ak_key_same(&f->lines[i].key, k))
			return true;
	return false;
}

/* Whether want's key i appeared earlier in want (a duplicate). */
static bool dup_before(const struct ak_file *want, size_t i)
{
	for (size_t j = 0; j < i; j++)
		if (want->lines[j].is_key && ak_key_same(&want->lines[j].key, &want->lines[i].key))
			return true;
	return false;
}

static int block(struct buf *b, const struct ak_file *cur, const struct ak_file *want,
                 bool exclusive)
{
	size_t n = 0;
	for (size_t i = 0; i < want->n; i++)
		n += want->lines[i].is_key && !dup_before(want, i) &&
		     (exclusive || !in_file(cur, &want->lines[i].key, true));
	if (n == 0)
		return 0;
	if (buf_printf(b, "%s\n", AK_BEGIN) != 0)
		return -1;
	for (size_t i = 0; i < want->n; i++) {
		const struct ak_line *l = &want->lines[i];
		if (l->is_key && !dup_before(want, i) &&
		    (exclusive || !in_file(cur, &l->key, true)) && key_line(b, &l->key) != 0)
			return -1;
	}
	return buf_printf(b, "%s\n", AK_END);
}

/* Keys of a (deduped) not in b. */
static int count_missing(const struct ak_file *a, const struct ak_file *b)
{
	int n = 0;
	for (size_t i = 0; i < a->n; i++) {
		if (!a->lines[i].is_key)
			continue;
		bool seen = false;
		for (size_t j = 0; j < i && !seen; j++)
			seen =
			    a->lines[j].is_key && ak_key_same(&a->lines[j].key, &a->lines[i].key);
		n += !seen && !in_file(b, &a->lines[i].key, false);
	}
	return n;
}

int ak_merge(const struct ak_file *cur, const struct ak_file *want, bool exclusive,
             struct ak_merge *out, struct vm_err *err)
{
	memset(out, 0, sizeof(*out));
	struct buf b;
	buf_init(&b, AK_TEXT_MAX);
	int bad = 0;
	if (exclusive) {
		bad = block(&b, cur, want, true);
	} else {
		bool done = false;
		for (size_t i = 0; i < cur->n && !bad; i++) {
			if (cur->has_block && cur->block_at == i && !done) {
				bad = block(&b, cur, want, false);
				done = true;
			}
			const struct ak_line *l = &cur->lines[i];
			if (bad || l->managed)
				continue;
			bad = buf_printf(&b, "%s\n", l->raw);
		}
		if (!done && !bad)
			bad = block(&b, cur, want, false);
	}
	if (bad) {
		buf_free(&b);
		return vm_err_set(err, VM_ERR_INVALID, "the new file would exceed %u bytes",
		                  AK_TEXT_MAX);
	}
	out->text = buf_take(&b, &out->len);
	if (out->text == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	/* counts by (type, blob) between the old file and the new one */
	struct ak_file now;
	struct vm_err perr;
	if (ak_parse_file(out->text, out->len, false, &now, &perr) != 0) {
		ak_file_free(&now);
		ak_merge_free(out);
		return vm_err_set(err, VM_ERR_INTERNAL, "the merged file does not read back: %s",
		                  perr.msg);
	}
	out->added = count_missing(&now, cur);
	out->removed = count_missing(cur, &now);
	int distinct = 0;
	for (size_t i = 0; i < now.n; i++) {
		bool seen = false;
		for (size_t j = 0; j < i && !seen; j++)
			seen = now.lines[j].is_key && now.lines[i].is_key &&
			       ak_key_same(&now.lines[j].key, &now.lines[i].key);
		distinct += now.lines[i].is_key && !seen;
	}
	out->kept = distinct - out->added;
	if (exclusive)
		for (size_t i = 0; i < cur->n; i++)
			out->removed += !cur->lines[i].is_key &&
			                !skippable(cur->lines[i].raw, strlen(cur->lines[i].raw));
	ak_file_free(&now);
	return 0;
}

void ak_merge_free(struct ak_merge *m)
{
	if (m == NULL)
		return;
	free(m->text);
	memset(m, 0, sizeof(*m));
}
