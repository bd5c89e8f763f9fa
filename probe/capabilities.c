/* What this agent can do, in one document: GET /v1/capabilities serves it and
 * the runner's `ready` message announces it, so a control plane can check a
 * step type and its parameter schema before it sends. Step types come from
 * the step table itself; features from a table of predicates. */
#include <ctype.h>
#include <string.h>
#include <sys/utsname.h>

#include "probe/internal.h"

extern const char vma_build_version[];

static bool feat_always(const struct cfg *cfg)
{
	(void)cfg;
	return true;
}

static bool feat_shell(const struct cfg *cfg)
{
	return cfg != NULL && cfg->shell.enabled && cfg->shell.max_sessions > 0;
}

/* Container steps are a family of step types: the feature is there once a
 * row of the table provides one. */
static bool feat_containers(const struct cfg *cfg)
{
	(void)cfg;
	for (size_t i = 0; i < probe_step_count; i++)
		if (strncmp(probe_steps[i].name, "container", 9) == 0 ||
		    strncmp(probe_steps[i].name, "docker", 6) == 0)
			return true;
	return false;
}

static const struct {
	const char *name;
	bool (*on)(const struct cfg *cfg);
} features[] = {
    {"probes", feat_always},         {"probe_events", feat_always}, {"check_mode", feat_always},
    {"inventory", feat_always},      {"upgrade", feat_always},      {"shell", feat_shell},
    {"containers", feat_containers},
};

json_t *probe_capabilities(const struct cfg *cfg)
{
	struct utsname u;
	if (uname(&u) != 0)
		memset(&u, 0, sizeof(u));
	char platform[sizeof(u.sysname)];
	size_t i = 0;
	for (; u.sysname[i] != '\0' && i + 1 < sizeof(platform); i++)
		platform[i] = (char)tolower((unsigned char)u.sysname[i]);
	platform[i] = '\0';
	json_t *steps = json_array(), *feats = json_object();
	if (steps == NULL || feats == NULL)
		goto fail;
	for (size_t k = 0; k < probe_step_count; k++) {
		const struct probe_step_type *t = &probe_steps[k];
		json_t *row = json_pack("{s:s,s:i,s:s?}", "type", t->name, "schema",
		                        t->schema > 0 ? t->schema : 1, "scope", t->scope);
		if (row == NULL || json_array_append_new(steps, row) != 0)
			goto fail;
	}
	for (size_t k = 0; k < sizeof(features) / sizeof(features[0]); k++)
		if (json_object_set_new(feats, features[k].name,
		                        json_boolean(features[k].on(cfg))) != 0)
			goto fail;
	/* u.machine and u.sysname are the kernel's: plain ASCII */
	json_t *doc =
	    json_pack("{s:s,s:s,s:s,s:O,s:O}", "version", vma_build_version, "platform", platform,
	              "architecture", u.machine, "step_types", steps, "features", feats);
	json_decref(steps);
	json_decref(feats);
	return doc;
fail:
	json_decref(steps);
	json_decref(feats);
	return NULL;
}
