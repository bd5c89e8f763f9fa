/* libFuzzer target: rsync's stdout as the backup steps read it (records split
 * on '\r'/'\n', items, progress2, stats), fed in two pieces at a split the
 * first byte picks; and the ignore-glob parser and matcher on the same bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "probe/steps/backup.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t seen;

static void on_rec(void *ctx, const struct rsync_rec *rec)
{
	(void)ctx;
	/* touch what a caller reads: strings must be terminated */
	seen += strlen(rec->name) + strlen(rec->itemize) + (uint64_t)rec->type;
	if (rec->op != NULL)
		seen += strlen(rec->op);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	static struct rsync_reader r;
	rsync_reader_init(&r, on_rec, NULL);
	size_t cut = (size_t)data[0] % size;
	rsync_reader_feed(&r, (const char *)data + 1, cut > 0 ? cut - 1 : 0);
	if (cut > 0)
		rsync_reader_feed(&r, (const char *)data + cut, size - cut);
	rsync_reader_finish(&r);

	/* the same bytes as a glob (up to the first NUL) matched against themselves */
	char *text = malloc(size);
	memcpy(text, data + 1, size - 1);
	text[size - 1] = '\0';
	struct backup_glob g;
	char why[128];
	if (backup_glob_parse(text, &g, why, sizeof(why)) == 0)
		(void)backup_glob_excluded(&g, 1, text, (data[0] & 1) != 0);
	free(text);
	(void)rsync_exit_describe((int)data[0]);
	return 0;
}
