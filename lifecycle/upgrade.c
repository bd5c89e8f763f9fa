/* vm-agent upgrade: download next to the binary → sha256 → minisign (always)
 * → version not older → the new binary's self-test → keep .prev → atomic
 * rename → restart → health gate → commit, or restore .prev. A journal in the
 * state dir names the phase reached; lc_upgrade_recover (called at every
 * start) undoes an upgrade that was interrupted before it was committed. An
 * flock on upgrade.lock is held for the whole upgrade, so the agent restarted
 * by the upgrade itself does not mistake it for an interrupted one. */
#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "core/codec.h"
#include "core/config.h"
#include "core/fs.h"
#include "core/minisign.h"
#include "core/rand.h"
#include "core/proc.h"
#include "core/time.h"
#include "lifecycle/internal.h"

#define BINARY_MAX    ((size_t)512 * 1024 * 1024) /* upgrade.max_size by default */
#define SIGNATURE_MAX ((size_t)64 * 1024)
#define MAX_KEYS      16

/* Journal phases, in order. Before "swapped" the old binary was never touched. */
static const char *const phases[] = {"downloading", "verified", "prev_saved", "swapped"};
enum phase { PH_DOWNLOADING, PH_VERIFIED, PH_PREV_SAVED, PH_SWAPPED, PH_COUNT };

struct job {
	const struct lc_upgrade_opts *o;
	struct lc_paths p;
	char from[64];
	char bin[PATH_MAX], prev[PATH_MAX + 8], fresh[PATH_MAX + 40], sig[PATH_MAX + 64];
	int lock_fd;
	size_t max_size; /* download cap, counted while the bytes arrive */
	/* without --proxy: the installed agent.proxy_url and its credentials file,
	 * so that an upgrade started remotely takes the agent's own way out */
	char proxy[CFG_STR_MAX], proxy_creds[PATH_MAX];
	struct lc_report *r;
};

/* --- journal and lock --------------------------------------------------------------------- */

static int journal_write(const struct job *j, enum phase ph, struct vm_err *err)
{
	char when[32];
	(void)time_rfc3339(when, sizeof(when), time_wall_ms(), false);
	json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s}", "phase", phases[ph], "bin",
	                      j->bin, "prev", j->prev, "new", j->fresh, "signature", j->sig, "from",
	                      j->from, "to", j->o->version, "time", when);
	char *text = o ? json_dumps(o, JSON_INDENT(2)) : NULL;
	json_decref(o);
	if (text == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	int rc = fs_write_atomic(j->p.journal, text, strlen(text), 0600, err);
	free(text);
	return rc;
}

static void journal_remove(const char *path)
{
	if (unlink(path) == 0)
		(void)fs_sync_parent(path, NULL);
}

/* Puts prev back as bin without losing prev: link to a temp name, rename. */
static int restore_prev(const char *prev, const char *bin, struct vm_err *err)
{
	char tmp[PATH_MAX + 16];
	if (snprintf(tmp, sizeof(tmp), "%s.rollback", bin) >= (int)sizeof(tmp))
		return vm_err_set(err, VM_ERR_INVALID, "path too long");
	unlink(tmp);
	if (link(prev, tmp) != 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "link %s", prev);
	if (rename(tmp, bin) != 0) {
		int e = errno;
		unlink(tmp);
		return vm_err_errno(err, VM_ERR_IO, e, "rename %s over %s", tmp, bin);
	}
	unlink(tmp); /* still there when bin already was prev: see swap_in */
	return fs_sync_parent(bin, err);
}

/* The installed binary was replaced: it is no longer the file .prev links to
 * (swap_in links .prev to the binary, journals "prev_saved", then renames). */
static bool swapped_in(const char *bin, const char *prev)
{
	struct stat a, b;
	if (stat(bin, &a) != 0 || stat(prev, &b) != 0)
		return false;
	return a.st_dev != b.st_dev || a.st_ino != b.st_ino;
}

/* After a rollback the install record names the restored binary: a kill
 * between the record's rewrite and the journal's removal left it naming the
 * new one. */
static void record_restore(const char *state_dir, const char *bin, const char *from)
{
	struct lc_paths *p = calloc(1, sizeof(*p));
	struct lc_record rec;
	char sum[65];
	if (p == NULL)
		return;
	if (snprintf(p->install_record, sizeof(p->install_record), "%s/install.json", state_dir) <
	        (int)sizeof(p->install_record) &&
	    lc_record_read(p, &rec, NULL) == 0 && lc_sha256_hex(bin, sum, NULL) == 0 &&
	    strcmp(rec.sha256, sum) != 0) {
		snprintf(rec.sha256, sizeof(rec.sha256), "%s", sum);
		if (from != NULL && from[0] != '\0')
			snprintf(rec.version, sizeof(rec.version), "%s", from);
		(void)lc_record_write(p, &rec, NULL);
	}
	free(p);
}

/* Removes <path><suffix>: a temp name of swap_in or restore_prev. */
static void unlink_suffixed(const char *path, const char *suffix)
{
	char tmp[PATH_MAX + 16];
	if (path != NULL && path[0] != '\0' &&
	    snprintf(tmp, sizeof(tmp), "%s%s", path, suffix) < (int)sizeof(tmp))
		unlink(tmp);
}

enum lc_upgrade_state lc_upgrade_state(const char *state_dir)
{
	char journal[PATH_MAX + 16];
	if (snprintf(journal, sizeof(journal), "%s/upgrade.journal", state_dir) >=
	        (int)sizeof(journal) ||
	    !lc_exists(journal))
		return LC_UPGRADE_NONE;
	int fd = fs_lock_open(state_dir, "upgrade.lock", 0, NULL);
	if (fd == -VM_ERR_BUSY)
		return LC_UPGRADE_RUNNING;
	if (fd < 0) /* cannot tell: as if it ran (the caller looks again) */
		return LC_UPGRADE_RUNNING;
	/* under the lock: a live upgrade removes its journal before it unlocks */
	enum lc_upgrade_state st = lc_exists(journal) ? LC_UPGRADE_ORPHANED : LC_UPGRADE_NONE;
	close(fd);
	return st;
}

enum lc_recover_result lc_upgrade_recover(const char *state_dir, char *bin, size_t bin_cap,
                                          char *msg, size_t cap)
{
	char journal[PATH_MAX + 16];
	if (bin_cap > 0)
		bin[0] = '\0';
	if (cap > 0)
		msg[0] = '\0';
	if (snprintf(journal, sizeof(journal), "%s/upgrade.journal", state_dir) >=
	        (int)sizeof(journal) ||
	    !lc_exists(journal))
		return LC_RECOVER_NOTHING;
	int fd = fs_lock_open(state_dir, "upgrade.lock", 0, NULL);
	if (fd == -VM_ERR_BUSY) {
		snprintf(msg, cap, "an upgrade is in progress (upgrade.lock is held)");
		return LC_RECOVER_BUSY;
	}
	json_t *o = json_load_file(journal, 0, NULL);
	const char *ph = json_string_value(json_object_get(o, "phase"));
	const char *jbin = json_string_value(json_object_get(o, "bin"));
	const char *jprev = json_string_value(json_object_get(o, "prev"));
	const char *jnew = json_string_value(json_object_get(o, "new"));
	const char *jsig = json_string_value(json_object_get(o, "signature"));
	const char *from = json_string_value(json_object_get(o, "from"));
	const char *to = json_string_value(json_object_get(o, "to"));
	enum lc_recover_result res = LC_RECOVER_CLEANED;
	if (jnew != NULL && jnew[0] != '\0')
		unlink(jnew);
	if (jsig != NULL && jsig[0] != '\0')
		unlink(jsig);
	unlink_suffixed(jprev, ".tmp");     /* swap_in killed between link and rename */
	unlink_suffixed(jbin, ".rollback"); /* restore_prev, likewise */
	bool undo = ph != NULL && jbin && jprev &&
	            (strcmp(ph, phases[PH_SWAPPED]) == 0 ||
	             (strcmp(ph, phases[PH_PREV_SAVED]) == 0 && swapped_in(jbin, jprev)));
	if (undo) {
		struct vm_err e = {0};
		if (restore_prev(jprev, jbin, &e) == 0) {
			record_restore(state_dir, jbin, from);
			res = LC_RECOVER_ROLLED_BACK;
			snprintf(bin, bin_cap, "%s", jbin);
			snprintf(msg, cap,
			         "interrupted upgrade to %s was never confirmed healthy: "
			         "previous binary restored",
			         to ? to : "?");
		} else {
			snprintf(msg, cap,
			         "interrupted upgrade to %s: cannot restore the previous "
			         "binary: %s",
			         to ? to : "?", e.msg);
		}
	} else {
		snprintf(msg, cap,
		         "interrupted upgrade to %s (phase %s) cleaned up; the installed "
		         "binary was not changed",
		         to ? to : "?", ph ? ph : "unknown");
	}
	json_decref(o);
	journal_remove(journal);
	if (fd >= 0)
		close(fd);
	return res;
}

/* --- checks ------------------------------------------------------------------------------------
 */

static int load_keys(const struct job *j, struct msig_pubkey *keys, size_t *n, struct vm_err *err)
{
	*n = 0;
	const char *b = j->o->builtin_key;
	if (b != NULL && b[0] != '\0' && msig_parse_pubkey(b, strlen(b), &keys[*n], NULL) == 0)
		(*n)++;
	struct cfg *eff = lc_config_effective(j->p.config, NULL);
	if (eff != NULL) {
		char buf[sizeof(eff->upgrade.public_keys)];
		snprintf(buf, sizeof(buf), "%s", eff->upgrade.public_keys);
		cfg_free(eff);
		char *save = NULL;
		for (char *tok = strtok_r(buf, ", \t", &save); tok && *n < MAX_KEYS;
		     tok = strtok_r(NULL, ", \t", &save)) {
			struct vm_err e;
			if (msig_parse_pubkey(tok, strlen(tok), &keys[*n], &e) != 0)
				return vm_err_set(err, VM_ERR_INVALID, "upgrade.public_keys: %s",
				                  e.msg);
			(*n)++;
		}
	}
	if (*n == 0)
		return vm_err_set(err, VM_ERR_INVALID,
		                  "no trusted upgrade key: none is compiled in "
		                  "and upgrade.public_keys is empty (signatures are mandatory)");
	return 0;
}

static int check_checksum(const struct job *j, struct vm_err *err)
{
	const char *want = j->o->checksum + strlen("sha256:");
	char got[65];
	int rc = lc_sha256_hex(j->fresh, got, err);
	if (rc != 0)
		return rc;
	if (strcasecmp(got, want) != 0)
		return vm_err_set(err, VM_ERR_INVALID,
		                  "checksum mismatch: expected sha256:%s, the "
		                  "download has sha256:%s (truncated or altered)",
		                  want, got);
	return 0;
}

static int check_signature(const struct job *j, struct vm_err *err)
{
	struct msig_pubkey keys[MAX_KEYS];
	size_t nkeys;
	int rc = load_keys(j, keys, &nkeys, err);
	if (rc != 0)
		return rc;
	char url[2048];
	if (j->o->signature_url != NULL)
		snprintf(url, sizeof(url), "%s", j->o->signature_url);
	else
		snprintf(url, sizeof(url), "%s.minisig", j->o->url);
	struct cp_opts cp = {
	    .ca_file = j->o->ca_file, .proxy = j->proxy, .proxy_credentials_file = j->proxy_creds};
	struct vm_err e;
	if (lc_fetch(&cp, url, j->sig, SIGNATURE_MAX, &e) != 0)
		return vm_err_set(err, VM_ERR_PERM,
		                  "signature missing: %s (signatures are mandatory)", e.msg);
	char *text;
	size_t len;
	if ((rc = fs_read_file(j->sig, SIGNATURE_MAX, &text, &len, err)) != 0)
		return rc;
	struct msig_sig sig;
	rc = msig_parse_sig(text, len, &sig, err);
	free(text);
	if (rc == 0)
		rc = msig_verify_file(keys, nkeys, &sig, j->fresh, j->max_size, err);
	if (rc != 0) {
		char why[256];
		snprintf(why, sizeof(why), "%s", err ? err->msg : "");
		return vm_err_set(err, VM_ERR_PERM, "bad signature: %s", why);
	}
	return 0;
}

/* The ELF class, byte order and machine of path must be this process's. */
static int check_elf(const char *path, struct vm_err *err)
{
	unsigned char a[EI_NIDENT + 4], b[EI_NIDENT + 4];
	int fa = open(path, O_RDONLY | O_CLOEXEC),
	    fb = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	ssize_t na = fa >= 0 ? read(fa, a, sizeof(a)) : -1;
	ssize_t nb = fb >= 0 ? read(fb, b, sizeof(b)) : -1;
	if (fa >= 0)
		close(fa);
	if (fb >= 0)
		close(fb);
	if (na != (ssize_t)sizeof(a) || memcmp(a, ELFMAG, SELFMAG) != 0)
		return vm_err_set(err, VM_ERR_INVALID,
		                  "self-test: the new binary is not an ELF "
		                  "executable");
	if (nb != (ssize_t)sizeof(b))
		return 0; /* cannot compare: the execution below decides */
	/* e_machine is the 2 bytes after e_type, right after e_ident */
	if (a[EI_CLASS] != b[EI_CLASS] || a[EI_DATA] != b[EI_DATA] ||
	    memcmp(a + EI_NIDENT + 2, b + EI_NIDENT + 2, 2) != 0)
		return vm_err_set(err, VM_ERR_INVALID,
		                  "self-test: the new binary is for another "
		                  "architecture");
	return 0;
}

/* Runs the new binary once: argv[0] executed as a path, our environment,
 * killed at the deadline, and with us: a killed `vm-agent upgrade` must not
 * leave a hung self-test running. */
static int run_new_binary(const char *const argv[], uint64_t timeout_ms, struct proc_result *res,
                          struct vm_err *err)
{
	struct proc_spec spec = {.argv = (char *const *)argv,
	                         .flags = PROC_DIE_WITH_PARENT,
	                         .deadline_ms = time_mono_ms() + (int64_t)timeout_ms,
	                         .out_cap = 8192};
	struct vm_err why = {0};
	if (proc_run(&spec, res, &why) != 0)
		return vm_err_set(err, VM_ERR_INVALID,
		                  "self-test: cannot execute the new binary: %s", why.msg);
	return 0;
}

static bool ran_ok(const struct proc_result *res)
{
	return !res->timed_out && res->term_signal == 0 && res->exit_code == 0;
}

static int self_test(const struct job *j, const char *path, const char *want_version,
                     struct vm_err *err)
{
	int rc = check_elf(path, err);
	if (rc != 0)
		return rc;
	uint64_t tmo = (j->o->self_test_timeout_s ? j->o->self_test_timeout_s : 10) * 1000ull;
	const char *argv[] = {path, "version", "--json", NULL};
	struct proc_result res;
	char how[160];
	if ((rc = run_new_binary(argv, tmo, &res, err)) != 0)
		goto out;
	proc_result_describe(&res, how, sizeof(how));
	if (!ran_ok(&res)) {
		rc = vm_err_set(err, VM_ERR_INVALID, "self-test: 'version --json' failed: %s", how);
		goto out;
	}
	json_t *o = json_loads(res.out ? res.out : "", 0, NULL);
	const char *v = json_string_value(json_object_get(o, "version"));
	const char *arch = json_string_value(json_object_get(o, "arch"));
	struct utsname u;
	uname(&u);
	if (v == NULL || strcmp(v, want_version) != 0)
		rc = vm_err_set(err, VM_ERR_INVALID,
		                "self-test: the new binary reports version %s, "
		                "expected %s",
		                v ? v : "(none)", want_version);
	else if (arch == NULL || strcmp(arch, u.machine) != 0)
		rc = vm_err_set(err, VM_ERR_INVALID,
		                "self-test: the new binary reports arch %s, this "
		                "machine is %s",
		                arch ? arch : "(none)", u.machine);
	json_decref(o);
	if (rc != 0 || !lc_exists(j->p.config))
		goto out;
	/* The new binary must accept the configuration it will run with. */
	proc_result_free(&res);
	const char *check[] = {path, "configure", "--check", j->p.config, NULL};
	if ((rc = run_new_binary(check, tmo, &res, err)) != 0)
		goto out;
	if (!ran_ok(&res)) {
		proc_result_describe(&res, how, sizeof(how));
		const char *e = res.err ? res.err : "";
		size_t n = strcspn(e, "\n");
		rc = vm_err_set(err, VM_ERR_INVALID,
		                "self-test: the new binary rejects %s: %s: %.*s",
		                lc_target_path(&j->p, j->p.config), how, (int)n, e);
	}
out:
	proc_result_free(&res);
	return rc;
}

/* --- restart and health gate ------------------------------------------------------------------ */

/* upgrade.health_timeout from the installed config (60 s when unset). */
static unsigned configured_health_timeout(const struct job *j)
{
	uint64_t ms = 60000;
	struct cfg *eff = lc_config_effective(j->p.config, NULL);
	if (eff != NULL && eff->upgrade.health_timeout_ms >= 1000)
		ms = eff->upgrade.health_timeout_ms;
	cfg_free(eff);
	return (unsigned)(ms / 1000);
}

/* upgrade.max_size (BINARY_MAX when unset) and, without --proxy, the proxy
 * settings from the installed config. */
static void configured_download(struct job *j)
{
	uint64_t v = BINARY_MAX;
	snprintf(j->proxy, sizeof(j->proxy), "%s", j->o->proxy ? j->o->proxy : "");
	struct cfg *eff = lc_config_effective(j->p.config, NULL);
	if (eff != NULL) {
		v = eff->upgrade.max_size;
		if (v == 0 || v > SIZE_MAX / 2)
			v = BINARY_MAX;
		const char *pc = eff->agent.proxy_credentials_file;
		if (j->o->proxy == NULL)
			snprintf(j->proxy, sizeof(j->proxy), "%s", eff->agent.proxy_url);
		/* the file is a target path: under --root it lives below the root */
		if (j->o->proxy == NULL && pc[0] == '/')
			lc_join(j->proxy_creds, sizeof(j->proxy_creds), j->p.root, pc);
		cfg_free(eff);
	}
	j->max_size = (size_t)v;
}

static int health_gate(const struct job *j, pid_t old_pid, struct vm_err *err)
{
	if (j->p.root[0] != '\0' || !lc_svc_available(&j->p)) {
		/* Nothing to restart here: the gate is the installed file itself. */
		return self_test(j, j->bin, j->o->version, err);
	}
	unsigned tmo =
	    j->o->health_timeout_s ? j->o->health_timeout_s : configured_health_timeout(j);
	int rc = lc_svc_restart(&j->p, err);
	if (rc != 0)
		return rc;
	int64_t deadline = time_mono_ms() + (int64_t)tmo * 1000;
	for (;;) {
		pid_t pid = lc_svc_main_pid(&j->p);
		struct vm_err e;
		if (pid > 0 && pid != old_pid && lc_wait_healthy(j->p.config, 2, &e) == 0) {
			/* still the same process a moment later: not a crash loop */
			sleep(2);
			if (lc_svc_main_pid(&j->p) == pid && lc_svc_is_active(&j->p))
				return 0;
		}
		if (time_mono_ms() >= deadline)
			return vm_err_set(err, VM_ERR_IO,
			                  "health gate: the new version did not become "
			                  "healthy within %us",
			                  tmo);
		sleep(1);
	}
}

/* --- events ------------------------------------------------------------------------------------
 */

static void report_event(const struct job *j, const char *outcome, const char *reason)
{
	struct cp_creds c;
	if (cp_creds_load(j->p.credentials, &c, NULL) != 0)
		return;
	char url[512] = "";
	struct cfg *eff = lc_config_effective(j->p.config, NULL);
	if (eff != NULL)
		snprintf(url, sizeof(url), "%s", eff->agent.control_plane_url);
	cfg_free(eff);
	char id[ID_LEN + 1], when[TIME_RFC3339_MAX];
	struct vm_err ie;
	if (id_new(id, &ie) != 0) { /* an event without a unique id would be de-duplicated away */
		lc_report_add(j->r, "report", LC_WARN, NULL, "outcome not reported: %s", ie.msg);
		cp_creds_clear(&c);
		return;
	}
	(void)time_rfc3339(when, sizeof(when), time_wall_ms(), false);
	json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s}", "id", id, "type", "upgrade", "time",
	                      when, "outcome", outcome, "from_version", j->from, "to_version",
	                      j->o->version, "reason", reason);
	char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	struct cp_opts cp = {.url = url,
	                     .ca_file = j->o->ca_file,
	                     .proxy = j->proxy,
	                     .proxy_credentials_file = j->proxy_creds};
	struct vm_err e;
	if (body != NULL && url[0] != '\0' && cp_event(&cp, &c, body, &e) != 0)
		lc_report_add(j->r, "report", LC_WARN, NULL, "outcome not reported: %s", e.msg);
	else if (body != NULL && url[0] != '\0')
		lc_report_add(j->r, "report", LC_OK, NULL, "outcome reported to the control plane");
	free(body);
	cp_creds_clear(&c);
}

/* --- the upgrade -------------------------------------------------------------------------------
 */

static bool valid_checksum(const char *s)
{
	uint8_t sum[SHA256_LEN];
	return s != NULL && strncmp(s, "sha256:", 7) == 0 && strlen(s) == 7 + 64 &&
	       hex_decode(s + 7, 64, sum, sizeof(sum)) == SHA256_LEN;
}

static int step(struct job *j, const char *name, int rc, const struct vm_err *err,
                const char *okfmt)
{
	if (rc == 0)
		lc_report_add(j->r, name, LC_OK, NULL, "%s", okfmt);
	else
		lc_report_add(j->r, name, LC_FAIL, NULL, "%s", err ? err->msg : "failed");
	return rc;
}

static int prepare(struct job *j, struct vm_err *err)
{
	const struct lc_upgrade_opts *o = j->o;
	if (o->version == NULL || o->url == NULL)
		return vm_err_set(err, VM_ERR_INVALID, "--version and --url are required");
	if (!valid_checksum(o->checksum))
		return vm_err_set(err, VM_ERR_INVALID, "--checksum must be sha256:<64 hex digits>");
	int rc = lc_paths_init(&j->p, o->root, NULL, err);
	if (rc != 0)
		return rc;
	if (!lc_exists(j->p.bin))
		return vm_err_set(err, VM_ERR_NOTFOUND,
		                  "%s is not installed (run 'vm-agent install' "
		                  "first)",
		                  lc_target_path(&j->p, j->p.bin));
	struct lc_record rec;
	snprintf(j->from, sizeof(j->from), "%s", o->current_version ? o->current_version : "0");
	if (lc_record_read(&j->p, &rec, NULL) == 0 && rec.version[0] != '\0')
		snprintf(j->from, sizeof(j->from), "%s", rec.version);
	configured_download(j);
	snprintf(j->bin, sizeof(j->bin), "%s", j->p.bin);
	snprintf(j->prev, sizeof(j->prev), "%s.prev", j->p.bin);
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", j->p.bin);
	*strrchr(dir, '/') = '\0';
	/* same directory as the binary: the final rename cannot cross filesystems */
	snprintf(j->fresh, sizeof(j->fresh), "%s/.vm-agent.new.%ld", dir, (long)getpid());
	snprintf(j->sig, sizeof(j->sig), "%s.minisig", j->fresh);
	return 0;
}

static int swap_in(struct job *j, struct vm_err *err)
{
	char tmp[PATH_MAX + 16];
	snprintf(tmp, sizeof(tmp), "%s.tmp", j->prev);
	unlink(tmp);
	if (link(j->bin, tmp) != 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "keep the previous binary: link %s",
		                    j->bin);
	if (rename(tmp, j->prev) != 0) {
		int e = errno;
		unlink(tmp);
		return vm_err_errno(err, VM_ERR_IO, e, "rename %s", tmp);
	}
	/* After a rollback bin and .prev are links to one file; a rename between
	 * two links of one file does nothing and keeps both names (POSIX). */
	unlink(tmp);
	int rc = fs_sync_parent(j->prev, err);
	if (rc == 0)
		rc = journal_write(j, PH_PREV_SAVED, err);
	if (rc != 0)
		return rc;
	if (rename(j->fresh, j->bin) != 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "rename %s over %s", j->fresh, j->bin);
	rc = fs_sync_parent(j->bin, err);
	if (rc == 0)
		rc = journal_write(j, PH_SWAPPED, err);
	return rc;
}

static void rollback(struct job *j, const char *why)
{
	struct vm_err e = {0};
	if (restore_prev(j->prev, j->bin, &e) != 0) {
		lc_report_add(j->r, "rollback", LC_FAIL, "restore the .prev binary by hand", "%s",
		              e.msg);
		return;
	}
	lc_report_add(j->r, "rollback", LC_CHANGED, NULL, "previous binary (%s) restored: %s",
	              j->from, why);
	if (j->p.root[0] == '\0' && lc_svc_available(&j->p)) {
		if (lc_svc_restart(&j->p, &e) != 0 || lc_wait_healthy(j->p.config, 30, &e) != 0)
			lc_report_add(j->r, "restart", LC_FAIL, "'vm-agent repair'",
			              "after rollback: %s", e.msg);
		else
			lc_report_add(j->r, "restart", LC_OK, NULL,
			              "previous version running again");
	}
}

static int run(struct job *j, struct vm_err *err)
{
	const struct lc_upgrade_opts *o = j->o;
	bool ok;
	int cmp = lc_version_cmp(o->version, j->from, &ok);
	if (!ok)
		return step(j, "version",
		            vm_err_set(err, VM_ERR_INVALID,
		                       "cannot compare versions "
		                       "%s and %s",
		                       o->version, j->from),
		            err, "");
	if (cmp < 0 && !o->allow_downgrade)
		return step(j, "version",
		            vm_err_set(err, VM_ERR_INVALID,
		                       "%s is older than the "
		                       "installed %s (use --allow-downgrade)",
		                       o->version, j->from),
		            err, "");
	lc_report_add(j->r, "version", LC_OK, NULL, "%s -> %s", j->from, o->version);

	int rc = journal_write(j, PH_DOWNLOADING, err);
	struct cp_opts cp = {
	    .ca_file = o->ca_file, .proxy = j->proxy, .proxy_credentials_file = j->proxy_creds};
	if (rc == 0)
		rc = step(j, "download", lc_fetch(&cp, o->url, j->fresh, j->max_size, err), err,
		          url_shown(o->url).s);
	if (rc == 0)
		rc = step(j, "checksum", check_checksum(j, err), err, "sha256 matches");
	if (rc == 0)
		rc = step(j, "signature", check_signature(j, err), err, "minisign signature valid");
	if (rc == 0 && chmod(j->fresh, 0755) != 0)
		rc = vm_err_errno(err, VM_ERR_IO, errno, "chmod %s", j->fresh);
	if (rc == 0)
		rc = step(j, "self-test", self_test(j, j->fresh, o->version, err), err,
		          "version --json and configure --check pass");
	if (rc == 0)
		rc = journal_write(j, PH_VERIFIED, err);
	if (rc != 0) {
		unlink(j->fresh);
		unlink(j->sig);
		journal_remove(j->p.journal);
		return rc;
	}
	pid_t old_pid = lc_svc_main_pid(&j->p);
	rc = step(j, "swap", swap_in(j, err), err, "new binary in place, previous kept as .prev");
	if (rc == 0)
		rc = step(j, "health", health_gate(j, old_pid, err), err,
		          j->p.root[0] ? "installed binary verified (no restart under --root)"
		                       : "restarted and healthy");
	if (rc != 0) {
		if (lc_exists(j->prev))
			rollback(j, err ? err->msg : "failed");
		unlink(j->fresh);
		unlink(j->sig);
		journal_remove(j->p.journal);
		return rc;
	}
	unlink(j->sig);
	struct lc_record rec = {0};
	if (lc_record_read(&j->p, &rec, NULL) != 0)
		snprintf(rec.bin, sizeof(rec.bin), "%s", lc_target_path(&j->p, j->bin));
	snprintf(rec.version, sizeof(rec.version), "%s", o->version);
	(void)lc_sha256_hex(j->bin, rec.sha256, NULL);
	struct vm_err e;
	if (lc_record_write(&j->p, &rec, &e) != 0)
		lc_report_add(j->r, "record", LC_WARN, NULL, "%s", e.msg);
	journal_remove(j->p.journal); /* committed */
	return 0;
}

int lc_upgrade(const struct lc_upgrade_opts *o, struct lc_report *r, struct vm_err *err)
{
	struct job *j = calloc(1, sizeof(*j));
	if (j == NULL)
		return vm_err_set(err, VM_ERR_NOMEM, "out of memory");
	j->o = o;
	j->r = r;
	j->lock_fd = -1;
	int rc = prepare(j, err);
	if (rc != 0)
		goto out;
	if ((rc = lc_ensure_dir(j->p.state_dir, 0700, NULL, err)) != 0)
		goto out;
	j->lock_fd = fs_lock_open(j->p.state_dir, "upgrade.lock", 0, err);
	if (j->lock_fd < 0) {
		rc = j->lock_fd == -VM_ERR_BUSY ? vm_err_set(err, VM_ERR_BUSY, "another upgrade is running")
		                                : j->lock_fd;
		goto out;
	}
	/* A journal left by a killed upgrade: settle it before starting anew. */
	if (lc_exists(j->p.journal)) {
		close(j->lock_fd);
		char b[PATH_MAX], msg[512];
		if (lc_upgrade_recover(j->p.state_dir, b, sizeof(b), msg, sizeof(msg)) !=
		    LC_RECOVER_NOTHING)
			lc_report_add(r, "recover", LC_WARN, NULL, "%s", msg);
		j->lock_fd = fs_lock_open(j->p.state_dir, "upgrade.lock", 0, err);
		if (j->lock_fd < 0) {
			rc = j->lock_fd == -VM_ERR_BUSY
			         ? vm_err_set(err, VM_ERR_BUSY, "another upgrade is running")
			         : j->lock_fd;
			goto out;
		}
	}
	lc_report_fact(r, "from_version", j->from);
	lc_report_fact(r, "to_version", o->version);
	rc = run(j, err);
	if (rc == 0)
		snprintf(r->result, sizeof(r->result), "upgraded %s -> %s", j->from, o->version);
	else
		snprintf(r->result, sizeof(r->result),
		         "upgrade %s -> %s failed; %s is still "
		         "installed",
		         j->from, o->version, j->from);
	report_event(j, rc == 0 ? "succeeded" : "failed", rc == 0 ? "" : err ? err->msg : "");
out:
	if (j->lock_fd >= 0)
		close(j->lock_fd);
	free(j);
	return rc;
}

/* --- started remotely --------------------------------------------------------------------------
 */

static bool valid_version(const char *v)
{
	if (v == NULL || v[0] == '\0' || strlen(v) > 63)
		return false;
	for (; *v; v++)
		if (!((*v >= '0' && *v <= '9') || (*v >= 'a' && *v <= 'z') ||
		      (*v >= 'A' && *v <= 'Z') || *v == '.' || *v == '-' || *v == '+'))
			return false;
	return true;
}

static int request_check(const struct lc_upgrade_request *rq, struct vm_err *err)
{
	if (!valid_version(rq->version))
		return vm_err_set(err, VM_ERR_INVALID, "version: expected something like 1.2.3");
	if ((rq->url == NULL || !url_is_http(rq->url)))
		return vm_err_set(err, VM_ERR_INVALID, "url: expected an http(s) URL");
	if (!valid_checksum(rq->checksum))
		return vm_err_set(err, VM_ERR_INVALID, "checksum: expected sha256:<64 hex digits>");
	if (rq->signature_url != NULL && !url_is_http(rq->signature_url))
		return vm_err_set(err, VM_ERR_INVALID, "signature_url: expected an http(s) URL");
	return 0;
}

/* The directory the request file goes through: ours and nobody else's, so
 * only root (or we) could read or replace what is in it. */
static int private_dir(int dfd, const char *dir, struct vm_err *err)
{
	struct stat sb;
	if (fstat(dfd, &sb) != 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "fstat %s", dir);
	if (!S_ISDIR(sb.st_mode) || sb.st_uid != geteuid() || (sb.st_mode & 077) != 0)
		return vm_err_set(err, VM_ERR_PERM,
		                  "%s is not a directory private to uid %ld (owner %ld, mode %04o)",
		                  dir, (long)geteuid(), (long)sb.st_uid,
		                  (unsigned)(sb.st_mode & 07777));
	return 0;
}

/* The request is handed over in a 0600 file of the 0700 runtime dir, never
 * on the command line: /proc/<pid>/cmdline is readable by every local user
 * and a presigned URL carries a token in its query. (An inherited fd would do
 * for a plain fork, but systemd-run's transient unit inherits no fd.) */
static int request_write(const struct lc_upgrade_request *rq, char *path, size_t cap,
                         struct vm_err *err)
{
	const char *dir = rq->runtime_dir;
	if (dir == NULL || dir[0] != '/')
		return vm_err_set(err, VM_ERR_INVALID, "no runtime directory for the request");
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "open %s", dir);
	int rc = private_dir(dfd, dir, err);
	if (rc != 0)
		goto out;
	unsigned char r[8] = {0};
	if ((rc = rand_bytes(r, sizeof(r), err)) != 0)
		goto out;
	char leaf[FS_NAME_MAX];
	int n = snprintf(leaf, sizeof(leaf), "%s%02x%02x%02x%02x%02x%02x%02x%02x.json",
	                 LC_UPGRADE_REQUEST_PREFIX, r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]);
	if (n < 0 || (size_t)snprintf(path, cap, "%s/%s", dir, leaf) >= cap) {
		rc = vm_err_set(err, VM_ERR_INVALID, "runtime directory path too long");
		goto out;
	}
	json_t *o = json_pack("{s:s,s:s,s:s,s:b}", "version", rq->version, "url", rq->url,
	                      "checksum", rq->checksum, "allow_downgrade", rq->allow_downgrade);
	if (o != NULL && rq->signature_url != NULL)
		json_object_set_new(o, "signature_url", json_string(rq->signature_url));
	char *text = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (text == NULL) {
		rc = vm_err_set(err, VM_ERR_NOMEM, "out of memory");
		goto out;
	}
	const struct fs_write_opts wo = {.mode = 0600, .create_only = true};
	rc = fs_write_at(dfd, leaf, text, strlen(text), &wo, err);
	explicit_bzero(text, strlen(text));
	free(text);
out:
	close(dfd);
	return rc;
}

static void copy_field(char *dst, size_t cap, json_t *o, const char *key)
{
	const char *v = json_string_value(json_object_get(o, key));
	snprintf(dst, cap, "%s", v != NULL && strlen(v) < cap ? v : "");
}

int lc_upgrade_request_load(const char *path, struct lc_upgrade_request_buf *out,
                            struct vm_err *err)
{
	memset(out, 0, sizeof(*out));
	char leaf[FS_NAME_MAX];
	int dfd = fs_open_parent(path, leaf, err);
	if (dfd < 0)
		return dfd;
	char *text = NULL;
	size_t len = 0;
	struct stat sb;
	int fd = -1, rc = private_dir(dfd, path, err);
	if (rc != 0)
		goto out;
	if ((fd = fs_open_at(dfd, leaf, &sb, err)) < 0) {
		rc = fd;
		goto out;
	}
	/* Read once, then gone: the secret in it stays on disk no longer than needed. */
	(void)unlinkat(dfd, leaf, 0);
	if (sb.st_uid != geteuid() || (sb.st_mode & 077) != 0 || sb.st_nlink > 1) {
		rc = vm_err_set(err, VM_ERR_PERM, "%s: not a private file of uid %ld", path,
		                (long)geteuid());
		goto out;
	}
	if ((rc = fs_read_fd(fd, path, 16 * 1024, &text, &len, err)) != 0)
		goto out;
	json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(o)) {
		json_decref(o);
		rc = vm_err_set(err, VM_ERR_INVALID, "%s: not an upgrade request", path);
		goto out;
	}
	copy_field(out->version, sizeof(out->version), o, "version");
	copy_field(out->url, sizeof(out->url), o, "url");
	copy_field(out->checksum, sizeof(out->checksum), o, "checksum");
	copy_field(out->signature_url, sizeof(out->signature_url), o, "signature_url");
	out->allow_downgrade = json_is_true(json_object_get(o, "allow_downgrade"));
	const struct lc_upgrade_request rq = {
	    .version = out->version,
	    .url = out->url,
	    .checksum = out->checksum,
	    .signature_url = out->signature_url[0] != '\0' ? out->signature_url : NULL,
	};
	json_decref(o);
	rc = request_check(&rq, err);
out:
	if (text != NULL) {
		explicit_bzero(text, len);
		free(text);
	}
	if (fd >= 0)
		close(fd);
	close(dfd);
	return rc;
}

int lc_upgrade_sweep_requests(const char *runtime_dir)
{
	int dfd = runtime_dir != NULL && runtime_dir[0] == '/'
	              ? open(runtime_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
	              : -1;
	if (dfd < 0)
		return 0;
	int n = 0;
	DIR *d = private_dir(dfd, runtime_dir, NULL) == 0 ? fdopendir(dfd) : NULL;
	if (d == NULL) {
		close(dfd);
		return 0;
	}
	const size_t plen = strlen(LC_UPGRADE_REQUEST_PREFIX);
	for (struct dirent *e; (e = readdir(d)) != NULL;) {
		size_t len = strlen(e->d_name);
		if (len > plen + 5 && strncmp(e->d_name, LC_UPGRADE_REQUEST_PREFIX, plen) == 0 &&
		    strcmp(e->d_name + len - 5, ".json") == 0 &&
		    unlinkat(dirfd(d), e->d_name, 0) == 0)
			n++;
	}
	closedir(d); /* closes dfd */
	return n;
}

int lc_upgrade_start_background(const struct lc_upgrade_request *rq, struct vm_err *err)
{
	int rc = request_check(rq, err);
	if (rc != 0)
		return rc;
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0)
		return vm_err_errno(err, VM_ERR_IO, errno, "readlink /proc/self/exe");
	self[n] = '\0';
	char req[PATH_MAX];
	if ((rc = request_write(rq, req, sizeof(req), err)) != 0)
		return rc;
	/* the arguments go straight to the program: nothing is interpreted by a shell */
	const char *argv[] = {self, "upgrade", "--request", req, NULL};
	rc = lc_svc_spawn_detached(argv, err);
	if (rc != 0)
		unlink(req);
	return rc;
}
