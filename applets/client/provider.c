/*
 * provider.c: "openshell provider create|list|get|update|delete|list-types"
 * and "openshell sandbox provider list|attach|detach" (doc/cli.md,
 * doc/providers.md) against the gateway's provider API.
 *
 * Credential values are read from the command line (--credential K=V) or
 * the caller's environment (--credential K, --from-existing) and sent once
 * to the gateway; nothing prints them, and the gateway never returns them.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../applets.h"
#include "buf.h"
#include "cli.h"
#include "cli_out.h"
#include "client.h"
#include "xfuncs.h"

#define PV_MAX_ITEMS 64

static const char provider_usage[] =
    "Usage: openshell provider COMMAND [OPTIONS]\n"
    "\n"
    "A provider is a named set of credentials kept by the gateway (sealed at\n"
    "rest). Sandboxes it is attached to see placeholders, never the values;\n"
    "their proxy injects the real value into requests to the provider's\n"
    "endpoints.\n"
    "\n"
    "Commands:\n"
    "  create --name N --type T (--credential KEY[=VALUE]... | --from-existing)\n"
    "         [--config K=V]... [--label K=V]...\n"
    "                      create a provider; --credential KEY reads $KEY;\n"
    "                      --from-existing takes the type's variables from the\n"
    "                      environment\n"
    "  list [--limit N] [--offset N] [--names] [--all-workspaces]\n"
    "                      NAME TYPE CREDENTIAL_KEYS CONFIG_KEYS\n"
    "  get NAME            one provider (key names only, never values)\n"
    "  update NAME [--credential KEY[=VALUE]]... [--from-existing]\n"
    "         [--remove-credential KEY]... [--config K=V]... [--remove-config K]...\n"
    "                      change credentials (rotation reaches running sandboxes)\n"
    "  delete NAME...      delete providers (refused while attached to a sandbox)\n"
    "  list-types          the types --type accepts, their variables and endpoints\n"
    "\n"
    "Types: generic, openai (codex), anthropic (claude), github (gh), gitlab\n"
    "(glab), nvidia, deepinfra. A generic provider needs --config\n"
    "endpoints=HOST[:PORT],... (where its credentials may be injected).\n"
    "\n"
    "Options:\n" CLI_COMMON_HELP "\n"
    "Examples:\n"
    "  openshell provider create --name openai --type openai --credential OPENAI_API_KEY\n"
    "  openshell provider create --name gh --type github --from-existing\n"
    "  openshell provider create --name svc --type generic --credential SVC_TOKEN=abc \\\n"
    "      --config endpoints=api.example.com:443\n"
    "  openshell sandbox create --provider openai -- claude\n"
    "\n"
    "Exit status: 0 ok, 1 failed, 2 usage error, 3 no gateway reachable.\n";

static const char sb_provider_usage[] =
    "Usage: openshell sandbox provider COMMAND SANDBOX [PROVIDER]\n"
    "\n"
    "Commands:\n"
    "  list SANDBOX              the providers attached to SANDBOX\n"
    "  attach SANDBOX PROVIDER   attach (new processes see its placeholders)\n"
    "  detach SANDBOX PROVIDER   detach (its credentials stop being injected)\n"
    "\n"
    "Options:\n" CLI_COMMON_HELP;

enum {
    OPT_NAME = 0x100,
    OPT_TYPE,
    OPT_CRED,
    OPT_FROM_EXISTING,
    OPT_CONFIG,
    OPT_LABEL,
    OPT_RM_CRED,
    OPT_RM_CONFIG,
    OPT_LIMIT,
    OPT_OFFSET,
    OPT_NAMES,
    OPT_ALL_WS,
};

struct pv_args {
    const char *name, *type;
    const char *creds[PV_MAX_ITEMS], *configs[PV_MAX_ITEMS], *labels[PV_MAX_ITEMS];
    const char *rm_creds[PV_MAX_ITEMS], *rm_configs[PV_MAX_ITEMS];
    size_t ncreds, nconfigs, nlabels, nrm_creds, nrm_configs;
    bool from_existing, names, all_ws;
    long limit, offset;
    char **pos;
    int npos;
};

static void
push(const struct cli_ctx *c, const char **v, size_t *n, const char *opt, const char *arg, bool kv)
{
    if (kv && (!strchr(arg, '=') || arg[0] == '='))
        applet_usage_error(c->prog, "%s '%s': expected KEY=VALUE", opt, arg);
    if (!*arg)
        applet_usage_error(c->prog, "%s: empty", opt);
    if (*n >= PV_MAX_ITEMS)
        applet_usage_error(c->prog, "too many %s", opt);
    v[(*n)++] = arg;
}

static void
parse(struct cli_ctx *c, int argc, char **argv, struct pv_args *a, const char *usage)
{
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        { "name", required_argument, NULL, OPT_NAME },
        { "type", required_argument, NULL, OPT_TYPE },
        { "credential", required_argument, NULL, OPT_CRED },
        { "from-existing", no_argument, NULL, OPT_FROM_EXISTING },
        { "config", required_argument, NULL, OPT_CONFIG },
        { "label", required_argument, NULL, OPT_LABEL },
        { "remove-credential", required_argument, NULL, OPT_RM_CRED },
        { "remove-config", required_argument, NULL, OPT_RM_CONFIG },
        { "limit", required_argument, NULL, OPT_LIMIT },
        { "offset", required_argument, NULL, OPT_OFFSET },
        { "names", no_argument, NULL, OPT_NAMES },
        { "all-workspaces", no_argument, NULL, OPT_ALL_WS },
        { NULL, 0, NULL, 0 },
    };
    int opt;

    memset(a, 0, sizeof(*a));
    a->limit = 100;
    optind = 0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, CLI_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
        if (cli_common_opt(c, opt, optarg))
            continue;
        switch (opt) {
        case 'h': fputs(usage, stdout); exit(0);
        case OPT_NAME: a->name = optarg; break;
        case OPT_TYPE: a->type = optarg; break;
        case OPT_CRED: push(c, a->creds, &a->ncreds, "--credential", optarg, false); break;
        case OPT_FROM_EXISTING: a->from_existing = true; break;
        case OPT_CONFIG: push(c, a->configs, &a->nconfigs, "--config", optarg, true); break;
        case OPT_LABEL: push(c, a->labels, &a->nlabels, "--label", optarg, true); break;
        case OPT_RM_CRED:
            push(c, a->rm_creds, &a->nrm_creds, "--remove-credential", optarg, false);
            break;
        case OPT_RM_CONFIG:
            push(c, a->rm_configs, &a->nrm_configs, "--remove-config", optarg, false);
            break;
        case OPT_LIMIT: a->limit = cli_parse_num(c, "--limit", optarg, 1000000); break;
        case OPT_OFFSET: a->offset = cli_parse_num(c, "--offset", optarg, 1000000000); break;
        case OPT_NAMES: a->names = true; break;
        case OPT_ALL_WS: a->all_ws = true; break;
        default: applet_bad_option(c->prog, argv, optind, optopt);
        }
    }
    a->pos = argv + optind;
    a->npos = argc - optind;
}

/* ------------------------------------------------------------------ JSON */

/* The CLI's JSON for one provider (the reference's fields): never values. */
static cJSON *
pv_view(const cJSON *p)
{
    cJSON *o = cJSON_CreateObject(), *ck;
    const cJSON *v;
    char ts[32];

    cJSON_AddStringToObject(o, "id", cli_jstr(p, "metadata.id"));
    cJSON_AddStringToObject(o, "name", cli_jstr(p, "metadata.name"));
    cJSON_AddStringToObject(o, "workspace", cli_jstr(p, "metadata.workspace"));
    cJSON_AddStringToObject(o, "type", cli_jstr(p, "spec.type"));
    v = cli_jget(p, "spec.credential_keys");
    cJSON_AddItemToObject(o, "credential_keys", v ? cJSON_Duplicate(v, true) : cJSON_CreateArray());
    ck = cJSON_AddArrayToObject(o, "config_keys");
    for (const cJSON *c = (v = cli_jget(p, "spec.config")) ? v->child : NULL; c; c = c->next)
        cJSON_AddItemToArray(ck, cJSON_CreateString(c->string));
    cJSON_AddItemToObject(o, "config", v ? cJSON_Duplicate(v, true) : cJSON_CreateObject());
    v = cli_jget(p, "spec.endpoints");
    cJSON_AddItemToObject(o, "endpoints", v ? cJSON_Duplicate(v, true) : cJSON_CreateArray());
    v = cli_jget(p, "metadata.labels");
    cJSON_AddItemToObject(o, "labels", v ? cJSON_Duplicate(v, true) : cJSON_CreateObject());
    v = cli_jget(p, "metadata.resource_version");
    cJSON_AddNumberToObject(o, "resource_version", cJSON_IsNumber(v) ? v->valuedouble : 0);
    v = cli_jget(p, "metadata.created_at_ms");
    cli_format_time_ms(cJSON_IsNumber(v) ? (int64_t)v->valuedouble : 0, ts, sizeof(ts));
    cJSON_AddStringToObject(o, "created_at", ts);
    return o;
}

static void
join_strings(const cJSON *arr, struct buf *out)
{
    const cJSON *it;

    cJSON_ArrayForEach(it, arr)
        buf_printf(out, "%s%s", out->len ? ", " : "", cJSON_IsString(it) ? it->valuestring : "?");
    if (!out->len)
        buf_puts(out, "-");
}

static void
print_provider(const cJSON *v)
{
    bool color = cli_color_wanted(1);
    struct buf b = BUF_INIT;
    const cJSON *it;

    printf("%sProvider:%s\n", color ? "\033[1m" : "", color ? "\033[0m" : "");
    printf("  Id:               %s\n", cli_jstr(v, "id"));
    printf("  Name:             %s\n", cli_jstr(v, "name"));
    printf("  Workspace:        %s\n", cli_jstr(v, "workspace"));
    printf("  Type:             %s\n", cli_jstr(v, "type"));
    it = cJSON_GetObjectItemCaseSensitive(v, "resource_version");
    printf("  Resource version: %.0f\n", cJSON_IsNumber(it) ? it->valuedouble : 0);
    printf("  Created:          %s\n", cli_jstr(v, "created_at"));
    join_strings(cJSON_GetObjectItemCaseSensitive(v, "credential_keys"), &b);
    printf("  Credential keys:  %s\n", buf_cstr(&b));
    buf_reset(&b);
    join_strings(cJSON_GetObjectItemCaseSensitive(v, "config_keys"), &b);
    printf("  Config keys:      %s\n", buf_cstr(&b));
    buf_reset(&b);
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(v, "endpoints"))
        buf_printf(&b, "%s%s:%d", b.len ? ", " : "", cli_jstr(it, "host"),
                   cJSON_GetObjectItemCaseSensitive(it, "port")
                       ? cJSON_GetObjectItemCaseSensitive(it, "port")->valueint
                       : 0);
    printf("  Endpoints:        %s\n", b.len ? buf_cstr(&b) : "- (injected nowhere)");
    buf_fini(&b);
}

/* ------------------------------------------------------------------ helpers */

static char *
pv_path(const struct cli_ctx *c, const char *name)
{
    struct buf b = BUF_INIT;
    char *p;

    if (name)
        cli_pct_encode(name, &b);
    p = cli_ws_path(c, "/providers%s%s", name ? "/" : "", name ? buf_cstr(&b) : "");
    buf_fini(&b);
    return p;
}

/* The type TYPE's variables from the gateway (GET /v1/provider-types). */
static int
type_keys(struct cli_ctx *c, const char *type, cJSON **keys)
{
    cJSON *j = NULL;
    const cJSON *it;
    int status, rc = cli_call_json(c, "GET", "/v1/provider-types", NULL, &status, &j);

    *keys = NULL;
    if (rc)
        return rc;
    if (status != 200) {
        rc = cli_api_fail(c, status, j, NULL);
        cJSON_Delete(j);
        return rc;
    }
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(j, "items"))
    {
        const cJSON *a;
        bool match = !strcmp(cli_jstr(it, "type"), type);
        cJSON_ArrayForEach(a, cJSON_GetObjectItemCaseSensitive(it, "aliases")) match =
            match || (cJSON_IsString(a) && !strcmp(a->valuestring, type));
        if (match) {
            *keys = cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(it, "credential_keys"), true);
            break;
        }
    }
    cJSON_Delete(j);
    if (!*keys)
        return cli_fail(c, CLI_EXIT_FAIL, "see: openshell provider list-types",
                        "unsupported provider type: %s", type);
    return 0;
}

/* Fill CREDS from --credential and --from-existing (TYPE: the type). */
static int
collect_creds(struct cli_ctx *c, const struct pv_args *a, const char *type, cJSON *creds)
{
    int rc;

    for (size_t i = 0; i < a->ncreds; i++) {
        const char *eq = strchr(a->creds[i], '=');
        char *k = eq ? xstrndup(a->creds[i], (size_t)(eq - a->creds[i])) : xstrdup(a->creds[i]);
        const char *v = eq ? eq + 1 : getenv(k);

        if (!*k) {
            free(k);
            applet_usage_error(c->prog, "--credential '%s': expected KEY or KEY=VALUE",
                               a->creds[i]);
        }
        if (!v || !*v) {
            rc = cli_fail(c, CLI_EXIT_FAIL,
                          eq ? NULL : "export it first, or give --credential KEY=VALUE",
                          eq ? "--credential %s: empty value"
                             : "--credential %s: $%s is not set "
                               "or empty",
                          k, k);
            free(k);
            return rc;
        }
        cJSON_DeleteItemFromObjectCaseSensitive(creds, k);
        cJSON_AddStringToObject(creds, k, v);
        free(k);
    }
    if (a->from_existing) {
        cJSON *keys = NULL;
        const cJSON *it;
        struct buf looked = BUF_INIT;
        size_t found = 0;

        if ((rc = type_keys(c, type, &keys)) != 0)
            return rc;
        cJSON_ArrayForEach(it, keys)
        {
            const char *v = getenv(it->valuestring);
            buf_printf(&looked, "%s%s", looked.len ? ", " : "", it->valuestring);
            if (v && *v && !cJSON_HasObjectItem(creds, it->valuestring)) {
                cJSON_AddStringToObject(creds, it->valuestring, v);
                found++;
            }
        }
        cJSON_Delete(keys);
        if (!found && !a->ncreds) {
            rc = cli_fail(c, CLI_EXIT_FAIL, "export one, or give --credential KEY[=VALUE]",
                          "--from-existing: no credential for type %s in the environment "
                          "(looked for: %s)",
                          type, looked.len ? buf_cstr(&looked) : "nothing: the type names none");
            buf_fini(&looked);
            return rc;
        }
        fprintf(stderr, "Found %zu credential%s in the environment (%s)\n", found,
                found == 1 ? "" : "s", buf_cstr(&looked));
        buf_fini(&looked);
    }
    return 0;
}

/* Wipe every string under J (credential values) before it is freed. */
static void
wipe_strings(cJSON *j)
{
    for (cJSON *c = j ? j->child : NULL; c; c = c->next) {
        if (cJSON_IsString(c) && c->valuestring)
            explicit_bzero(c->valuestring, strlen(c->valuestring));
        wipe_strings(c);
    }
}

/* ------------------------------------------------------------------ commands */

static int
pv_create(struct cli_ctx *c, struct pv_args *a)
{
    cJSON *req = cJSON_CreateObject(), *spec, *creds, *ans = NULL, *v;
    char *path = NULL;
    int status, rc;

    if (a->npos)
        applet_usage_error(c->prog, "unexpected argument '%s'", a->pos[0]);
    if (!a->name || !a->type)
        applet_usage_error(c->prog, "--name and --type are required");
    if (a->ncreds && a->from_existing)
        applet_usage_error(c->prog, "--credential and --from-existing: give one source");
    if (!a->ncreds && !a->from_existing) {
        cJSON_Delete(req);
        return cli_fail(c, CLI_EXIT_USAGE,
                        "give --credential KEY[=VALUE] (KEY alone reads $KEY) or --from-existing",
                        "missing credential for provider '%s'", a->name);
    }
    if ((rc = cli_connect(c, true)) != 0)
        goto out;
    cJSON_AddStringToObject(req, "name", a->name);
    if (a->nlabels)
        cJSON_AddItemToObject(req, "labels",
                              cli_kv_into(cJSON_CreateObject(), a->labels, a->nlabels));
    spec = cJSON_AddObjectToObject(req, "spec");
    cJSON_AddStringToObject(spec, "type", a->type);
    creds = cJSON_AddObjectToObject(spec, "credentials");
    if (a->nconfigs)
        cJSON_AddItemToObject(spec, "config",
                              cli_kv_into(cJSON_CreateObject(), a->configs, a->nconfigs));
    if ((rc = collect_creds(c, a, a->type, creds)) != 0)
        goto out;
    path = pv_path(c, NULL);
    if ((rc = cli_call_json(c, "POST", path, req, &status, &ans)) != 0)
        goto out;
    if (status == 409) {
        char *hint =
            xasprintf("update it with: openshell provider update %s, or delete it first", a->name);
        rc = cli_fail(c, CLI_EXIT_FAIL, hint, "provider '%s' already exists in workspace '%s'",
                      a->name, c->workspace);
        free(hint);
        goto out;
    }
    if (status != 201) {
        rc = cli_api_fail(c, status, ans, NULL);
        goto out;
    }
    cli_ok(c, "Created provider %s", a->name);
    if (c->output != CLI_OUT_TABLE) {
        v = pv_view(ans);
        cli_print_data(c, v);
        cJSON_Delete(v);
    }
out:
    wipe_strings(req);
    cJSON_Delete(req);
    cJSON_Delete(ans);
    free(path);
    return rc;
}

static int
pv_update(struct cli_ctx *c, struct pv_args *a)
{
    cJSON *req = cJSON_CreateObject(), *spec, *creds, *cfg, *ans = NULL, *cur = NULL, *v;
    char *path = NULL;
    int status, rc;

    if (a->npos != 1)
        applet_usage_error(c->prog, a->npos ? "one provider at a time" : "expected NAME");
    if (!a->ncreds && !a->from_existing && !a->nconfigs && !a->nrm_creds && !a->nrm_configs &&
        !a->nlabels)
        applet_usage_error(c->prog, "nothing to update: give --credential, --from-existing, "
                                    "--config, --remove-credential, --remove-config or --label");
    if (a->type)
        applet_usage_error(c->prog, "--type: a provider's type cannot change");
    if ((rc = cli_connect(c, false)) != 0)
        goto out;
    path = pv_path(c, a->pos[0]);
    if ((rc = cli_call_json(c, "GET", path, NULL, &status, &cur)) != 0)
        goto out;
    if (status != 200) {
        rc = status == 404
                 ? cli_fail(c, CLI_EXIT_FAIL, "list them with: openshell provider list",
                            "provider '%s' not found in workspace '%s'", a->pos[0], c->workspace)
                 : cli_api_fail(c, status, cur, NULL);
        goto out;
    }
    spec = cJSON_AddObjectToObject(req, "spec");
    creds = cJSON_AddObjectToObject(spec, "credentials");
    if ((rc = collect_creds(c, a, cli_jstr(cur, "spec.type"), creds)) != 0)
        goto out;
    for (size_t i = 0; i < a->nrm_creds; i++)
        cJSON_AddNullToObject(creds, a->rm_creds[i]);
    if (!creds->child)
        cJSON_DeleteItemFromObjectCaseSensitive(spec, "credentials");
    cfg = cli_kv_into(cJSON_CreateObject(), a->configs, a->nconfigs);
    for (size_t i = 0; i < a->nrm_configs; i++)
        cJSON_AddNullToObject(cfg, a->rm_configs[i]);
    if (cfg->child)
        cJSON_AddItemToObject(spec, "config", cfg);
    else
        cJSON_Delete(cfg);
    if (a->nlabels) {
        const cJSON *l = cli_jget(cur, "metadata.labels");
        cJSON_AddItemToObject(req, "labels",
                              cli_kv_into(l ? cJSON_Duplicate(l, true) : cJSON_CreateObject(),
                                          a->labels, a->nlabels));
    }
    if ((rc = cli_call_json(c, "PATCH", path, req, &status, &ans)) != 0)
        goto out;
    if (status != 200) {
        rc = cli_api_fail(c, status, ans, NULL);
        goto out;
    }
    cli_ok(c, "Updated provider %s", a->pos[0]);
    if (c->output != CLI_OUT_TABLE) {
        v = pv_view(ans);
        cli_print_data(c, v);
        cJSON_Delete(v);
    }
out:
    wipe_strings(req);
    cJSON_Delete(req);
    cJSON_Delete(ans);
    cJSON_Delete(cur);
    free(path);
    return rc;
}

static int
pv_get(struct cli_ctx *c, struct pv_args *a)
{
    cJSON *ans = NULL, *v;
    char *path;
    int status, rc;

    if (a->npos != 1)
        applet_usage_error(c->prog, a->npos ? "one provider at a time" : "expected NAME");
    if ((rc = cli_connect(c, false)) != 0)
        return rc;
    path = pv_path(c, a->pos[0]);
    rc = cli_call_json(c, "GET", path, NULL, &status, &ans);
    free(path);
    if (rc == 0 && status != 200)
        rc = status == 404
                 ? cli_fail(c, CLI_EXIT_FAIL, "list them with: openshell provider list",
                            "provider '%s' not found in workspace '%s'", a->pos[0], c->workspace)
                 : cli_api_fail(c, status, ans, NULL);
    if (rc == 0) {
        v = pv_view(ans);
        if (c->output != CLI_OUT_TABLE)
            cli_print_data(c, v);
        else
            print_provider(v);
        cJSON_Delete(v);
    }
    cJSON_Delete(ans);
    return rc;
}

static void
print_list(const struct cli_ctx *c, const cJSON *all, bool all_ws, const char *empty)
{
    static const char *const hdr[] = { "WORKSPACE", "NAME", "TYPE", "CREDENTIAL_KEYS",
                                       "CONFIG_KEYS" };
    size_t o = all_ws ? 0 : 1;
    struct cli_table *tb;
    struct buf b = BUF_INIT;
    const cJSON *it;

    if (c->output != CLI_OUT_TABLE) {
        cli_print_data(c, all);
        return;
    }
    if (!cJSON_GetArraySize(all)) {
        printf("%s\n", empty);
        return;
    }
    tb = cli_table_new(5 - o, hdr + o);
    cJSON_ArrayForEach(it, all)
    {
        char nk[16], nc[16];
        const char *row[5];

        snprintf(nk, sizeof(nk), "%d",
                 cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(it, "credential_keys")));
        snprintf(nc, sizeof(nc), "%d",
                 cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(it, "config_keys")));
        row[0] = cli_jstr(it, "workspace");
        row[1] = cli_jstr(it, "name");
        row[2] = cli_jstr(it, "type");
        row[3] = nk;
        row[4] = nc;
        cli_table_add(tb, row + o);
    }
    cli_table_render(tb, cli_color_wanted(1), &b);
    fwrite(b.data, 1, b.len, stdout);
    buf_fini(&b);
    cli_table_free(tb);
}

static int
pv_list(struct cli_ctx *c, struct pv_args *a)
{
    cJSON *ans = NULL, *all = cJSON_CreateArray();
    const cJSON *it;
    char *path;
    int status, rc;

    if (a->npos)
        applet_usage_error(c->prog, "unexpected argument '%s'", a->pos[0]);
    if ((rc = cli_connect(c, false)) != 0)
        goto out;
    if (a->all_ws)
        path = xasprintf("/v1/providers?limit=%ld&offset=%ld", a->limit > 1000 ? 1000 : a->limit,
                         a->offset);
    else
        path = cli_ws_path(c, "/providers?limit=%ld&offset=%ld", a->limit > 1000 ? 1000 : a->limit,
                           a->offset);
    rc = cli_call_json(c, "GET", path, NULL, &status, &ans);
    free(path);
    if (rc)
        goto out;
    if (status != 200) {
        rc = cli_api_fail(c, status, ans, NULL);
        goto out;
    }
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(ans, "items"))
        cJSON_AddItemToArray(all, pv_view(it));
    if (a->names) {
        cJSON_ArrayForEach(it, all)
        {
            if (a->all_ws)
                printf("%s/", cli_jstr(it, "workspace"));
            printf("%s\n", cli_jstr(it, "name"));
        }
    } else {
        print_list(c, all, a->all_ws, "No providers found.");
    }
out:
    cJSON_Delete(ans);
    cJSON_Delete(all);
    return rc;
}

static int
pv_delete(struct cli_ctx *c, struct pv_args *a)
{
    int rc, worst = 0;

    if (!a->npos)
        applet_usage_error(c->prog, "expected NAME...");
    if ((rc = cli_connect(c, false)) != 0)
        return rc;
    for (int i = 0; i < a->npos; i++) {
        char *path = pv_path(c, a->pos[i]);
        cJSON *j = NULL;
        int status;

        rc = cli_call_json(c, "DELETE", path, NULL, &status, &j);
        free(path);
        if (rc == 0) {
            if (status == 200) {
                cli_ok(c, "Deleted provider %s", a->pos[i]);
            } else if (status == 404) {
                cli_warn(c, "Provider %s not found", a->pos[i]);
                rc = CLI_EXIT_FAIL;
            } else {
                rc = cli_api_fail(c, status, j, NULL);
            }
        }
        cJSON_Delete(j);
        if (rc == CLI_EXIT_UNREACHABLE)
            return rc;
        if (rc > worst)
            worst = rc;
    }
    return worst;
}

static int
pv_types(struct cli_ctx *c, struct pv_args *a)
{
    static const char *const hdr[] = { "TYPE", "ALIASES", "VARIABLES", "ENDPOINTS", "INFERENCE" };
    cJSON *ans = NULL;
    const cJSON *it;
    int status, rc;

    if (a->npos)
        applet_usage_error(c->prog, "unexpected argument '%s'", a->pos[0]);
    if ((rc = cli_connect(c, false)) != 0 ||
        (rc = cli_call_json(c, "GET", "/v1/provider-types", NULL, &status, &ans)) != 0)
        return rc;
    if (status != 200) {
        rc = cli_api_fail(c, status, ans, NULL);
    } else if (c->output != CLI_OUT_TABLE) {
        cli_print_data(c, cJSON_GetObjectItemCaseSensitive(ans, "items"));
    } else {
        struct cli_table *tb = cli_table_new(5, hdr);
        struct buf out = BUF_INIT;

        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(ans, "items"))
        {
            struct buf al = BUF_INIT, vars = BUF_INIT, eps = BUF_INIT;
            const cJSON *x;
            const char *row[5];

            join_strings(cJSON_GetObjectItemCaseSensitive(it, "aliases"), &al);
            join_strings(cJSON_GetObjectItemCaseSensitive(it, "credential_keys"), &vars);
            cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(it, "endpoints"))
                buf_printf(&eps, "%s%s:%d", eps.len ? "," : "", cli_jstr(x, "host"),
                           cJSON_GetObjectItemCaseSensitive(x, "port")->valueint);
            row[0] = cli_jstr(it, "type");
            row[1] = buf_cstr(&al);
            row[2] = buf_cstr(&vars);
            row[3] = eps.len ? buf_cstr(&eps) : "(--config endpoints=...)";
            row[4] = *cli_jstr(it, "api") ? cli_jstr(it, "api") : "-";
            cli_table_add(tb, row);
            buf_fini(&al);
            buf_fini(&vars);
            buf_fini(&eps);
        }
        cli_table_render(tb, cli_color_wanted(1), &out);
        fwrite(out.data, 1, out.len, stdout);
        buf_fini(&out);
        cli_table_free(tb);
    }
    cJSON_Delete(ans);
    return rc;
}

int
cli_provider(int argc, char **argv)
{
    static const char *const subs[] = { "create", "list", "get", "update", "delete", "list-types" };
    struct cli_ctx c;
    struct pv_args a;
    char prog[64];
    int rc;

    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        fputs(provider_usage, stdout);
        return 0; /* a group without a command: its help, as the reference */
    }
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        if (strcmp(argv[1], subs[i]) != 0)
            continue;
        snprintf(prog, sizeof(prog), "openshell provider %s", subs[i]);
        cli_ctx_init(&c, prog);
        parse(&c, argc - 1, argv + 1, &a, provider_usage);
        switch (i) {
        case 0: rc = pv_create(&c, &a); break;
        case 1: rc = pv_list(&c, &a); break;
        case 2: rc = pv_get(&c, &a); break;
        case 3: rc = pv_update(&c, &a); break;
        case 4: rc = pv_delete(&c, &a); break;
        default: rc = pv_types(&c, &a); break;
        }
        cli_ctx_fini(&c);
        return rc;
    }
    applet_usage_error("openshell provider", "unknown command '%s'", argv[1]);
}

/* ------------------------------------------------------------------ inferred providers */

/* The reference's auto-detection (v1): the trailing command's basename
 * names a provider type. */
static const char *
infer_type(const char *cmd)
{
    static const char *const map[][2] = {
        { "claude", "anthropic" }, { "codex", "openai" }, { "gh", "github" }, { "glab", "gitlab" }
    };
    const char *base = strrchr(cmd, '/') ? strrchr(cmd, '/') + 1 : cmd;

    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (!strcmp(map[i][0], base))
            return map[i][1];
    return NULL;
}

/* Yes unless the user says no ("" is yes). */
static bool
ask_yes(const char *question)
{
    char line[32];

    fprintf(stderr, "%s [Y/n] ", question);
    fflush(stderr);
    if (!fgets(line, sizeof(line), stdin))
        return false;
    return line[0] == '\n' || line[0] == 'y' || line[0] == 'Y';
}

int
cli_provider_infer(struct cli_ctx *c, char **argv, int argc, int mode, cJSON *names)
{
    const char *type = argc > 0 ? infer_type(argv[0]) : NULL;
    cJSON *ans = NULL, *req = NULL, *keys = NULL, *creds;
    const cJSON *it;
    char *path, name[80];
    int status, rc;
    size_t found = 0;

    if (mode < 0 || !type)
        return 0;
    path = cli_ws_path(c, "/providers?limit=1000");
    rc = cli_call_json(c, "GET", path, NULL, &status, &ans);
    free(path);
    if (rc)
        return rc;
    if (status != 200) {
        rc = cli_api_fail(c, status, ans, NULL);
        goto out;
    }
    /* Attached already (--provider), or one of that type exists: use it. */
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(ans, "items"))
    {
        const cJSON *n;
        bool named = false;

        if (strcmp(cli_jstr(it, "spec.type"), type) != 0)
            continue;
        cJSON_ArrayForEach(n, names) named =
            named || !strcmp(n->valuestring, cli_jstr(it, "metadata.name"));
        if (!named) {
            fprintf(stderr, "\u2192 Using provider '%s' (%s) for '%s'\n",
                    cli_jstr(it, "metadata.name"), type, argv[0]);
            cJSON_AddItemToArray(names, cJSON_CreateString(cli_jstr(it, "metadata.name")));
        }
        goto out;
    }
    fprintf(stderr, "Missing provider: %s\n", type);
    if (mode == 0) {
        if (isatty(0) != 1 || isatty(2) != 1) {
            char *hint = xasprintf("create it first: openshell provider create --name %s --type "
                                   "%s --from-existing (or pass --auto-providers or "
                                   "--no-auto-providers)",
                                   type, type);
            rc = cli_fail(c, CLI_EXIT_FAIL, hint,
                          "'%s' needs a provider of type %s and none exists in workspace '%s'",
                          argv[0], type, c->workspace);
            free(hint);
            goto out;
        }
        if (!ask_yes("Create from local credentials?"))
            goto out;
    }
    if ((rc = type_keys(c, type, &keys)) != 0)
        goto out;
    req = cJSON_CreateObject();
    creds = cJSON_AddObjectToObject(cJSON_AddObjectToObject(req, "spec"), "credentials");
    cJSON_AddStringToObject(cJSON_GetObjectItemCaseSensitive(req, "spec"), "type", type);
    cJSON_ArrayForEach(it, keys)
    {
        const char *v = getenv(it->valuestring);
        if (v && *v && !cJSON_HasObjectItem(creds, it->valuestring)) {
            cJSON_AddStringToObject(creds, it->valuestring, v);
            found++;
        }
    }
    if (!found) {
        cli_warn(c,
                 "No existing local credentials/config found for '%s'. You can configure it "
                 "from inside the sandbox.",
                 type);
        goto out;
    }
    /* The type's name, else -1..-4 when another provider holds it. */
    path = cli_ws_path(c, "/providers");
    for (int i = 0; i < 5; i++) {
        if (i)
            snprintf(name, sizeof(name), "%s-%d", type, i);
        else
            snprintf(name, sizeof(name), "%s", type);
        cJSON_DeleteItemFromObjectCaseSensitive(req, "name");
        cJSON_AddStringToObject(req, "name", name);
        cJSON_Delete(ans);
        ans = NULL;
        if ((rc = cli_call_json(c, "POST", path, req, &status, &ans)) != 0 || status != 409)
            break;
    }
    free(path);
    if (rc)
        goto out;
    if (status != 201) {
        rc = cli_api_fail(c, status, ans, NULL);
        goto out;
    }
    cli_ok(c, "Created provider %s (%s) from existing local state", name, type);
    cJSON_AddItemToArray(names, cJSON_CreateString(name));
out:
    wipe_strings(req);
    cJSON_Delete(req);
    cJSON_Delete(keys);
    cJSON_Delete(ans);
    return rc;
}

/* ------------------------------------------------------------------ sandbox provider */

static char *
sbp_path(const struct cli_ctx *c, const char *sb, const char *p)
{
    struct buf a = BUF_INIT, b = BUF_INIT;
    char *path;

    cli_pct_encode(sb, &a);
    if (p)
        cli_pct_encode(p, &b);
    path = cli_ws_path(c, "/sandboxes/%s/providers%s%s", buf_cstr(&a), p ? "/" : "",
                       p ? buf_cstr(&b) : "");
    buf_fini(&a);
    buf_fini(&b);
    return path;
}

int
cli_sandbox_provider(int argc, char **argv)
{
    static const char *const subs[] = { "list", "attach", "detach" };
    struct cli_ctx c;
    struct pv_args a;
    char prog[64], *path;
    cJSON *ans = NULL;
    size_t i;
    int status, rc;

    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        fputs(sb_provider_usage, stdout);
        return 0; /* a group without a command: its help, as the reference */
    }
    for (i = 0; i < 3 && strcmp(argv[1], subs[i]) != 0; i++)
        ;
    if (i == 3)
        applet_usage_error("openshell sandbox provider", "unknown command '%s'", argv[1]);
    snprintf(prog, sizeof(prog), "openshell sandbox provider %s", subs[i]);
    cli_ctx_init(&c, prog);
    parse(&c, argc - 1, argv + 1, &a, sb_provider_usage);
    if (a.npos != (i == 0 ? 1 : 2))
        applet_usage_error(c.prog, i == 0 ? "expected SANDBOX" : "expected SANDBOX PROVIDER");
    if ((rc = cli_connect(&c, false)) != 0)
        goto out;
    path = sbp_path(&c, a.pos[0], i == 0 ? NULL : a.pos[1]);
    rc = cli_call_json(&c, i == 0 ? "GET" : i == 1 ? "PUT" : "DELETE", path, NULL, &status, &ans);
    free(path);
    if (rc)
        goto out;
    if (status != 200) {
        rc = cli_api_fail(&c, status, ans,
                          status == 409 ? "sandbox was modified by another operation. Please retry"
                                        : NULL);
        goto out;
    }
    if (i == 0) {
        cJSON *all = cJSON_CreateArray();
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(ans, "items"))
            cJSON_AddItemToArray(all, pv_view(it));
        print_list(&c, all, false, "No providers attached.");
        cJSON_Delete(all);
    } else if (cJSON_IsTrue(cli_jget(ans, i == 1 ? "attached" : "detached"))) {
        cli_ok(&c, "%s provider %s %s sandbox %s", i == 1 ? "Attached" : "Detached", a.pos[1],
               i == 1 ? "to" : "from", a.pos[0]);
    } else {
        cli_warn(&c, "Provider %s already %s sandbox %s", a.pos[1],
                 i == 1 ? "attached to" : "detached from", a.pos[0]);
    }
out:
    cJSON_Delete(ans);
    cli_ctx_fini(&c);
    return rc;
}
