/* Configuration: the YAML file (libyaml), built-in defaults, and environment
 * overrides VM_AGENT_<SECTION>_<KEY>; and the one editor of that file
 * (cfg_doc_*). Every key is one row of a table in config.c; errors name file,
 * line, column and key. */
#ifndef VMA_CORE_CONFIG_H
#define VMA_CORE_CONFIG_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/err.h"

#define CFG_STR_MAX   512
#define CFG_ID_MAX    128
#define CFG_TOKEN_MAX 8192
#define CFG_LIST_MAX  16 /* entries of a list key */

/* A list key: a YAML sequence of strings (or, in the environment, a
 * comma-separated value), at most CFG_LIST_MAX entries of CFG_STR_MAX-1 bytes. */
struct cfg_strlist {
	int count;
	char items[CFG_LIST_MAX][CFG_STR_MAX];
};

#define CFG_SYSTEM_PATH "/etc/vm-agent/config.yaml"

struct cfg_reconnect {
	uint64_t initial_delay_ms;
	uint64_t max_delay_ms;
	double multiplier;
};

struct cfg {
	/* Where the values came from: a file path, or "built-in defaults". */
	char source[PATH_MAX];

	struct {
		char id[CFG_ID_MAX];
		char tenant_id[CFG_ID_MAX];
		char control_plane_url[CFG_STR_MAX];
		char state_dir[PATH_MAX];
		char credentials_file[PATH_MAX];
		char runtime_dir[PATH_MAX];  /* admin socket; default depends on uid */
		char ca_file[PATH_MAX];      /* control-plane CA bundle; "" = system */
		char proxy_url[CFG_STR_MAX]; /* "" = libcurl's HTTPS_PROXY/NO_PROXY */
		/* "user:password" for both proxies (agent.proxy_url, piko.proxy_url),
		 * a 0600 file, so that no URL carries the password */
		char proxy_credentials_file[PATH_MAX];
	} agent;

	struct {
		char server_url[CFG_STR_MAX];
		/* tried in order after server_url when a server cannot be reached
		 * (a cluster without a load balancer in front) */
		struct cfg_strlist fallback_urls;
		char endpoint[CFG_ID_MAX];
		char token[CFG_TOKEN_MAX]; /* secret: never logged */
		char token_file[PATH_MAX];
		char ca_file[PATH_MAX];
		bool insecure_skip_verify;
		char proxy_url[CFG_STR_MAX];
		uint64_t connect_timeout_ms;
		struct cfg_reconnect reconnect;
		char forward_addr[64]; /* "" = the webhook's own address */
		int max_streams;
		uint64_t keepalive_interval_ms;
		uint64_t keepalive_timeout_ms;
		uint64_t stop_grace_ms;
	} piko;

	struct {
		char listen_addr[64];
		int port;
		bool tls_enabled;
		char tls_cert_file[PATH_MAX];
		char tls_key_file[PATH_MAX];
		uint64_t max_body;
		uint64_t request_timeout_ms;
		int num_threads;    /* workers of the TCP listener */
		int tunnel_threads; /* workers of the unix listener the tunnel forwards to */
	} webhook;

	struct {
		struct cfg_strlist
		    jwt_keys; /* PEM public key files; kid = basename without extension */
		char issuer[CFG_STR_MAX];
		uint64_t max_token_lifetime_ms;
		int replay_cache_size;
		char audit_file[PATH_MAX]; /* default <state_dir>/audit.log */
		uint64_t audit_max_size;
		int audit_max_files;
	} auth;

	struct {
		char work_dir[PATH_MAX];
		uint64_t default_timeout_ms;
		int max_concurrent;
		int queue_size;
		uint64_t output_cap;
		int retention_count;
		uint64_t retention_age_ms;
		uint64_t cancel_grace_ms;
		struct cfg_strlist allow; /* argv[0] paths or globs; empty = anything */
		/* per-step cgroup limits (0 = none); a request's "limits" replace them */
		uint64_t memory_max; /* bytes */
		int cpu_max;         /* percent of one CPU */
		int pids_max;
		char cgroup_root[PATH_MAX]; /* where cgroups are mounted; elsewhere = fallback */
	} probe;

	/* host steps (probe/steps/host.c and the step files); a step reads them
	 * through probe_step_ctx.host */
	struct cfg_host {
		uint64_t apt_lists_max_age_ms; /* apt-get update when the lists are older */
	} host;

	struct {
		bool enabled;
		char default_cmd[PATH_MAX]; /* when the user has no login shell */
		char default_user[CFG_ID_MAX];
		int max_sessions;
		uint64_t idle_timeout_ms;
		uint64_t max_duration_ms;
		uint64_t record_max_bytes;
		bool record_input;
		int retention_count;
		uint64_t retention_age_ms;
	} shell;

	/* backup.plan / backup.run over SSH: the key and the only hosts trusted */
	struct cfg_backup {
		char ssh_identity[PATH_MAX]; /* private key for ssh -i; "" = remote refused */
		char known_hosts[PATH_MAX];  /* UserKnownHostsFile; "" = remote refused */
		uint64_t connect_timeout_ms; /* ssh ConnectTimeout */
		uint64_t io_timeout_ms;      /* rsync --timeout: no data this long ends the run */
	} backup;

	struct {
		/* slots shared by running probes and open shells; 0 = their sum */
		int max_concurrent;
	} limits;

	struct {
		bool enabled;
		char socket[PATH_MAX]; /* the engine's API socket (Docker or Podman) */
		bool manage_unlabeled; /* touch containers without our tenant label too */
	} containers;

	struct {
		uint64_t check_interval_ms;
		uint64_t report_interval_ms;
		char proc_root[PATH_MAX];
		double disk_warn_percent;
		double disk_critical_percent;
		double memory_warn_percent;
		uint64_t tunnel_down_after_ms;
		uint64_t control_plane_unreachable_after_ms;
		uint64_t clock_skew_max_ms;
		int spool_max_entries;
		uint64_t spool_max_bytes;
	} health;

	struct {
		uint64_t cache_ttl_ms; /* GET /v1/inventory answers from cache this long */
		int max_items;         /* per list (packages, services, users…) */
		uint64_t max_bytes;    /* the whole document */
	} inventory;

	struct {
		int level;  /* enum log_level */
		int format; /* enum log_format */
		char file[PATH_MAX];
		uint64_t max_size;
		int max_files;
	} log;

	struct {
		/* minisign public keys (base64 key lines) trusted for upgrades, in
		 * addition to the key compiled into the binary; comma-separated */
		char public_keys[2048];
		uint64_t health_timeout_ms;
		uint64_t max_size; /* download cap, enforced while copying */
	} upgrade;
};

/* The webhook's unix listener, where the tunnel forwards each stream. */
#define CFG_WEBHOOK_SOCKET_NAME "webhook.sock"

/* "<agent.runtime_dir>/webhook.sock" (cut to cap). */
void cfg_webhook_socket_path(const struct cfg *cfg, char *out, size_t cap);

/* Fills cfg with the built-in defaults (no file, no environment). */
void cfg_defaults(struct cfg *cfg);

/* Frees a struct cfg the caller malloc'd, wiping it first: it may hold
 * piko.token (cfg_free(NULL) is fine). Every heap struct cfg ends here. */
void cfg_free(struct cfg *cfg);

/* Loads path (NULL = built-in defaults only), then applies environment
 * overrides from envp (NULL = the process environment), then validates.
 * On error, cfg is unspecified and err says "file:line:col: key: reason". */
int cfg_load(struct cfg *cfg, const char *path, char *const *envp, struct vm_err *err);

/* Like cfg_load but from a memory buffer; name is used in error messages. */
int cfg_load_buffer(struct cfg *cfg, const char *name, const char *data, size_t len,
                    char *const *envp, struct vm_err *err);

/* Parses "500ms", "1s", "5m", "2h", "300" (seconds). Returns 0 or -1. */
int cfg_parse_duration(const char *s, uint64_t *ms);

/* Parses "10MiB", "512KiB", "1GiB", "100KB", "4096" (bytes). Returns 0 or -1. */
int cfg_parse_size(const char *s, uint64_t *bytes);

/* Writes the effective configuration as YAML, secrets redacted and the
 * passwords of URLs (keys named *_url) replaced by *** (url_redact). */
int cfg_dump(const struct cfg *cfg, char *buf, size_t cap);

/* Editing the file's text (install, configure): the loader's own walk finds
 * where each key is, an edit splices only that place (comments, key order and
 * every other line stay as they were) and is kept only when the loader reads
 * the result back with exactly that one change. Values are written as quoted
 * YAML strings, list keys ("a,b" as in the environment) as YAML sequences.
 * Values that parse badly are kept until cfg_doc_validate judges the file. */
struct cfg_doc;
/* Text must be a config the loader can walk (same structural rules and
 * messages as cfg_load); name is used in messages. */
int cfg_doc_parse(struct cfg_doc **out, const char *name, const char *text, size_t len,
                  struct vm_err *err);
/* Like cfg_doc_parse on the file's content; a missing file is an empty one. */
int cfg_doc_read(struct cfg_doc **out, const char *path, struct vm_err *err);
/* Sets key (from the config table) to value, adding it (and its section) when absent. */
int cfg_doc_set(struct cfg_doc *d, const char *key, const char *value, struct vm_err *err);
/* Removes key from the file (back to its default); absent is fine. */
int cfg_doc_unset(struct cfg_doc *d, const char *key, struct vm_err *err);
/* The current text (NUL-terminated; len may be NULL). */
const char *cfg_doc_text(const struct cfg_doc *d, size_t *len);
/* True once an edit changed the text. */
bool cfg_doc_changed(const struct cfg_doc *d);
/* True when key is written in the file. */
bool cfg_doc_has(const struct cfg_doc *d, const char *key);
/* What the file says, over the defaults (no environment, paths unresolved). */
const struct cfg *cfg_doc_values(const struct cfg_doc *d);
/* Loads the text with cfg_load's rules (no environment): 0 when it is a valid file. */
int cfg_doc_validate(const struct cfg_doc *d, struct vm_err *err);
/* Validates, then replaces path atomically (fs_write_atomic) with mode. */
int cfg_doc_save(const struct cfg_doc *d, const char *path, mode_t mode, struct vm_err *err);
void cfg_doc_free(struct cfg_doc *d);

/* Number of keys and the dotted name of key i (for docs and completion). */
size_t cfg_key_count(void);
const char *cfg_key_name(size_t i);

/* What the running agent does with a changed key on reload: apply it, or keep
 * the old value until a restart (the table in config.c says, per key). */
enum cfg_apply { CFG_APPLY_RESTART = 0, CFG_APPLY_LIVE };
enum cfg_apply cfg_key_apply(size_t i);
/* True when key i has different values in a and b. */
bool cfg_key_differs(const struct cfg *a, const struct cfg *b, size_t i);
/* Copies the value of key i from src into dst. */
void cfg_key_copy(struct cfg *dst, const struct cfg *src, size_t i);
/* True when any of the keys named differs between a and b (cfg_key_differs:
 * value by value, never the bytes around them). names is NULL-terminated; a
 * name ending in '.' stands for its whole section ("piko."). */
bool cfg_keys_differ(const struct cfg *a, const struct cfg *b, const char *const *names);

#endif
