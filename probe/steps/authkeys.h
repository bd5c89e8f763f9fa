/* The authorized_keys model of ssh_keys.sync (authkeys.c): a key line parsed
 * and validated as a public key (options, type, a base64 blob that decodes
 * into a well-formed key of that type, comment), a file as unmanaged lines
 * kept verbatim plus one marked block of managed keys, and the merge that
 * dedupes by (type, blob). Pure: no I/O. */
#ifndef VMA_PROBE_STEPS_AUTHKEYS_H
#define VMA_PROBE_STEPS_AUTHKEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define AK_TEXT_MAX (256u << 10) /* a key source or file larger than this is refused */
#define AK_LINE_MAX (16u << 10)
#define AK_KEYS_MAX 1024

#define AK_BEGIN "# BEGIN vm-agent ssh_keys (managed: edits here are replaced)"
#define AK_END   "# END vm-agent ssh_keys"

struct ak_key {
	char *options; /* NULL = none; as written ("from=\"10.0.0.0/8\",no-pty") */
	char *type;    /* "ssh-ed25519", "sk-ssh-ed25519@openssh.com"… */
	uint8_t *blob; /* decoded */
	size_t blob_len;
	char *b64;     /* the blob as written (valid, canonical padding) */
	char *comment; /* NULL = none */
};

struct ak_line {
	bool is_key;
	bool managed; /* inside the marked block */
	char *raw;    /* not a key (comment, blank, something sshd would not read): verbatim */
	struct ak_key key;
};

struct ak_file {
	struct ak_line *lines;
	size_t n, cap;
	bool has_block;
	size_t block_at; /* index in lines where the block stood (its keys are dropped from
	                    lines and kept as managed lines) */
};

/* Parses one line (without its newline) as a public key: [options] type
 * base64 [comment]. The type must be ssh-ed25519, ssh-rsa,
 * ecdsa-sha2-nistp256/384/521, sk-ssh-ed25519@openssh.com or
 * sk-ecdsa-sha2-nistp256@openssh.com; the blob must decode, name the same
 * type and hold exactly a key of it (RSA 1024-16384 bits, points of the
 * named curve's size, 32-byte Ed25519 keys); options must be the ones sshd
 * knows, with balanced quotes; nothing may be a control character.
 * Free out with ak_key_free (also after an error). */
int ak_parse_key(const char *line, size_t len, struct ak_key *out, struct vm_err *err);
void ak_key_free(struct ak_key *k);

/* Parses a whole text. strict (a key source): every line that is not blank
 * or a # comment must be a valid key, else the whole text is refused with
 * its line number. Not strict (the current authorized_keys): lines that are
 * not valid keys are kept as raw. The marked block is read (and refused if
 * unterminated or nested). More than AK_TEXT_MAX bytes, a NUL byte, a line
 * longer than AK_LINE_MAX or more than AK_KEYS_MAX keys: refused. */
int ak_parse_file(const char *text, size_t len, bool strict, struct ak_file *out,
                  struct vm_err *err);
void ak_file_free(struct ak_file *f);

/* Same key: same type and blob. */
bool ak_key_same(const struct ak_key *a, const struct ak_key *b);

struct ak_merge {
	char *text; /* the new file, malloc'd */
	size_t len;
	int added, removed, kept; /* keys by (type, blob): new only, old only, both */
};

/* The new file for the wanted keys (a strict parse; its comments ignored):
 * not exclusive, every unmanaged line stays as it is and the block holds the
 * wanted keys not already among them (deduped, in order; no block when none
 * is left); exclusive, the file is the block of wanted keys alone. */
int ak_merge(const struct ak_file *cur, const struct ak_file *want, bool exclusive,
             struct ak_merge *out, struct vm_err *err);
void ak_merge_free(struct ak_merge *m);

#endif
