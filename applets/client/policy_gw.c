/*
 * policy_gw.c: "openshell policy set|get|list|update" against the gateway
 * (doc/cli.md, doc/api.md §5.7): full replacement (PUT), incremental
 * operations (PATCH), revisions and their load status, --wait for the
 * supervisor to report the revision loaded. The offline verbs (validate,
 * check, default) are in policy.c.
 */
#include <errno.h>
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
#include "policy.h"
#include "xfuncs.h"

#define POL_MAX_OPS 256
#define POL_EXIT_TIMEOUT 124

static const char policy_gw_usage[] =
    "Usage: openshell policy COMMAND [NAME] [OPTIONS]   (alias: pol)\n"
    "\n"
    "Commands against the gateway (NAME: the sandbox, default the last used one):\n"
    "  set [NAME] --policy FILE [--wait] [--timeout SECS] | --global [--yes]\n"
    "                      replace the whole policy; FILE is checked here first\n"
    "  get [NAME] [--rev N] [--full] | --global\n"
    "                      the revision in force (metadata; --full adds the text)\n"
    "  list [NAME] [--limit N] | --global\n"
    "                      revision history: VERSION HASH STATUS CREATED ERROR\n"
    "  update [NAME] [--add-endpoint HOST:PORT[:ACCESS[:PROTOCOL[:ENFORCEMENT[:OPT,...]]]]]...\n"
    "         [--remove-endpoint HOST:PORT]... [--add-allow HOST:PORT:METHOD:GLOB]...\n"
    "         [--add-deny HOST:PORT:METHOD:GLOB]... [--remove-rule NAME]...\n"
    "         [--binary PATH]... [--rule-name NAME] [--dry-run | --wait] [--timeout SECS]\n"
    "                      change network rules as one atomic batch (one new revision)\n"
    "\n"
    "Options:\n" CLI_COMMON_HELP "\n"
    "  ACCESS is read-only, read-write or full; PROTOCOL tcp, rest, websocket or sql;\n"
    "  ENFORCEMENT enforce or audit; OPT allowed-ip=CIDR (or another endpoint flag).\n"
    "  --binary applies to every --add-endpoint; --rule-name only with exactly one\n"
    "  (default name allow_HOST_PORT, e.g. allow_api_github_com_443).\n"
    "\n"
    "Examples:\n"
    "  openshell policy set demo --policy github_readonly.yaml --wait\n"
    "  openshell policy get demo --full\n"
    "  openshell policy list demo -o json\n"
    "  openshell policy update demo --add-endpoint api.github.com:443:read-only:rest \\\n"
    "      --binary /usr/bin/curl --wait\n"
    "  openshell policy update demo --add-deny api.github.com:443:POST:/repos/** --dry-run\n"
    "\n"
    "Only network_policies take effect in a running sandbox; the static sections\n"
    "(filesystem, landlock, process) are fixed when it is created.\n"
    "Exit status: 0 ok (with --wait: loaded), 1 failed (rejected policy, failed to\n"
    "load, unknown sandbox), 2 usage error, 3 no gateway, 124 --wait timed out.\n";

enum {
    OPT_POLICY = 0x100,
    OPT_GLOBAL,
    OPT_YES,
    OPT_WAIT,
    OPT_TIMEOUT,
    OPT_REV,
    OPT_FULL,
    OPT_BASE,
    OPT_LIMIT,
    OPT_ADD_EP,
    OPT_RM_EP,
    OPT_ADD_ALLOW,
    OPT_ADD_DENY,
    OPT_RM_RULE,
    OPT_BINARY,
    OPT_RULE_NAME,
    OPT_DRY_RUN,
};

struct pol_args {
    const char *file, *rule_name;
    bool global, yes, wait, full, dry_run;
    long timeout_s, rev, limit;
    /* update: each operation flag in command-line order */
    struct {
        int kind;
        const char *arg;
    } ops[POL_MAX_OPS];
    size_t nops;
    const char *binaries[POL_MAX_OPS];
    size_t nbinaries;
    char **pos;
    int npos;
};

static void
parse(struct cli_ctx *c, int argc, char **argv, struct pol_args *a)
{
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        { "policy", required_argument, NULL, OPT_POLICY },
        { "global", no_argument, NULL, OPT_GLOBAL },
        { "yes", no_argument, NULL, OPT_YES },
        { "wait", no_argument, NULL, OPT_WAIT },
        { "timeout", required_argument, NULL, OPT_TIMEOUT },
        { "rev", required_argument, NULL, OPT_REV },
        { "revision", required_argument, NULL, OPT_REV },
        { "full", no_argument, NULL, OPT_FULL },
        { "base", no_argument, NULL, OPT_BASE },
        { "limit", required_argument, NULL, OPT_LIMIT },
        { "add-endpoint", required_argument, NULL, OPT_ADD_EP },
        { "remove-endpoint", required_argument, NULL, OPT_RM_EP },
        { "add-allow", required_argument, NULL, OPT_ADD_ALLOW },
        { "add-deny", required_argument, NULL, OPT_ADD_DENY },
        { "remove-rule", required_argument, NULL, OPT_RM_RULE },
        { "binary", required_argument, NULL, OPT_BINARY },
        { "rule-name", required_argument, NULL, OPT_RULE_NAME },
        { "dry-run", no_argument, NULL, OPT_DRY_RUN },
        { NULL, 0, NULL, 0 },
    };
    int opt;

    memset(a, 0, sizeof(*a));
    a->timeout_s = 60;
    a->limit = 20;
    optind = 0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, CLI_COMMON_SHORTOPTS "y", longopts, NULL)) != -1) {
        if (cli_common_opt(c, opt, optarg))
            continue;
        switch (opt) {
        case 'h': fputs(policy_gw_usage, stdout); exit(0);
        case OPT_POLICY: a->file = optarg; break;
        case OPT_GLOBAL: a->global = true; break;
        case 'y':
        case OPT_YES: a->yes = true; break;
        case OPT_WAIT: a->wait = true; break;
        case OPT_TIMEOUT: a->timeout_s = cli_parse_num(c, "--timeout", optarg, 86400); break;
        case OPT_REV: a->rev = cli_parse_num(c, "--rev", optarg, 1L << 40); break;
        case OPT_FULL:
        case OPT_BASE: a->full = true; break;
        case OPT_LIMIT: a->limit = cli_parse_num(c, "--limit", optarg, 1000); break;
        case OPT_ADD_EP:
        case OPT_RM_EP:
        case OPT_ADD_ALLOW:
        case OPT_ADD_DENY:
        case OPT_RM_RULE:
            if (a->nops >= POL_MAX_OPS)
                applet_usage_error(c->prog, "too many operations (at most %d)", POL_MAX_OPS);
            a->ops[a->nops].kind = opt;
            a->ops[a->nops++].arg = optarg;
            break;
        case OPT_BINARY:
            if (a->nbinaries >= POL_MAX_OPS)
                applet_usage_error(c->prog, "too many --binary");
            if (optarg[0] != '/')
                applet_usage_error(c->prog, "--binary '%s': expected an absolute path", optarg);
            a->binaries[a->nbinaries++] = optarg;
            break;
        case OPT_RULE_NAME: a->rule_name = optarg; break;
        case OPT_DRY_RUN: a->dry_run = true; break;
        default: applet_bad_option(c->prog, argv, optind, optopt);
        }
    }
    a->pos = argv + optind;
    a->npos = argc - optind;
}

/* ------------------------------------------------------------------ helpers */

/* The revisions path of the sandbox NAME, or of the global policy. */
static char *
pol_path(const struct cli_ctx *c, const char *name, const char *suffix)
{
    if (!name)
        return xasprintf("/v1/gateway/policy%s", suffix);
    {
        char *s = xasprintf("/policy%s", suffix);
        char *p = cli_sb_path(c, name, s);
        free(s);
        return p;
    }
}

/* The sandbox for a per-sandbox command (connects first). */
static int
target(struct cli_ctx *c, const struct pol_args *a, char *name, size_t size)
{
    int rc;

    if ((rc = cli_connect(c, false)) != 0)
        return rc;
    if (a->global) {
        if (a->npos)
            return cli_fail(c, CLI_EXIT_USAGE, NULL, "--global takes no sandbox name");
        name[0] = '\0';
        return 0;
    }
    return cli_sandbox_name(c, a->npos, a->pos, name, size);
}

static const char *
short_hash(const char *h)
{
    static char out[16];
    const char *p = strncmp(h, "sha256:", 7) == 0 ? h + 7 : h;

    snprintf(out, sizeof(out), "%.12s", p);
    return out;
}

/* Report a 4xx/5xx about sandbox NAME's policy. A policy rejected by the
 * gateway's engine says "policy:LINE:COL: ..."; show FILE instead. */
static int
pol_fail(struct cli_ctx *c, int status, const cJSON *j, const char *name, const char *file)
{
    const char *m = cli_jstr(j, "error.message");

    if (status == 404 && name && strstr(m, "not found"))
        return cli_fail(c, CLI_EXIT_FAIL, "list them with: openshell sandbox list", "%s", m);
    if (status == 412)
        return cli_fail(c, CLI_EXIT_FAIL,
                        "a global policy is in force; change it with: openshell policy set "
                        "--global",
                        "%s", *m ? m : "failed precondition");
    if (status == 400 && file && *m) {
        struct buf b = BUF_INIT;
        const char *p = m, *hit;
        int rc;

        while ((hit = strstr(p, "policy:")) != NULL) {
            buf_append(&b, p, (size_t)(hit - p));
            buf_puts(&b, file);
            buf_putc(&b, ':');
            p = hit + 7;
        }
        buf_puts(&b, p);
        rc = cli_fail(c, CLI_EXIT_FAIL, "check it with: openshell policy validate FILE", "%s",
                      buf_cstr(&b));
        buf_fini(&b);
        return rc;
    }
    return cli_api_fail(c, status, j, NULL);
}

/* Poll revision VERSION until loaded / failed / superseded or the timeout.
 * 0 loaded (or superseded), 1 failed, 124 timed out. */
static int
wait_loaded(struct cli_ctx *c, const char *name, long version, long timeout_s)
{
    uint64_t t0 = cli_now_ms();
    char sfx[48];
    char *path;
    int rc = POL_EXIT_TIMEOUT;

    snprintf(sfx, sizeof(sfx), "/revisions/%ld", version);
    path = pol_path(c, name, sfx);
    for (;;) {
        cJSON *j = NULL;
        const char *st;
        int status;

        if ((rc = cli_call(c, "GET", path, NULL, NULL, 0, &status, &j)) != 0)
            break;
        if (status != 200) {
            rc = pol_fail(c, status, j, name, NULL);
            cJSON_Delete(j);
            break;
        }
        st = cli_jstr(j, "status");
        if (!strcmp(st, "loaded")) {
            cli_ok(c, "Policy version %ld loaded (active version: %ld)", version, version);
            cJSON_Delete(j);
            rc = 0;
            break;
        }
        if (!strcmp(st, "failed")) {
            fprintf(stderr, "%s Policy version %ld failed to load: %s\n",
                    c->color ? "\033[31m\u2717\033[0m" : "\u2717", version,
                    *cli_jstr(j, "load_error") ? cli_jstr(j, "load_error") : "(no reason given)");
            cJSON_Delete(j);
            rc = CLI_EXIT_FAIL;
            break;
        }
        if (!strcmp(st, "superseded")) {
            cli_warn(c, "Policy version %ld was superseded by a newer revision", version);
            cJSON_Delete(j);
            rc = 0;
            break;
        }
        cJSON_Delete(j);
        if (cli_now_ms() - t0 >= (uint64_t)timeout_s * 1000) {
            rc = cli_fail(c, POL_EXIT_TIMEOUT,
                          "is the sandbox's supervisor connected? see: openshell sandbox get",
                          "policy version %ld not loaded after %lds (status %s)", version,
                          timeout_s, st);
            break;
        }
        cli_sleep_ms(200);
    }
    free(path);
    return rc;
}

/* Global operations want a yes: --yes, or a "y" typed on a terminal. */
static int
confirm(struct cli_ctx *c, const struct pol_args *a, const char *what)
{
    char line[16];

    if (a->yes)
        return 0;
    if (isatty(0) != 1 || isatty(2) != 1)
        return cli_fail(c, CLI_EXIT_USAGE, "pass --yes",
                        "%s requires confirmation; pass --yes in non-interactive mode", what);
    fprintf(stderr, "%s overrides every sandbox's policy. Continue? [y/N] ", what);
    if (!fgets(line, sizeof(line), stdin) || (line[0] != 'y' && line[0] != 'Y'))
        return cli_fail(c, CLI_EXIT_FAIL, NULL, "not confirmed");
    return 0;
}

/* Check FILE locally (FILE:LINE:COL diagnostics) and read it into OUT. */
static int
load_local(struct cli_ctx *c, const char *file, struct buf *out)
{
    struct policy_diags d;
    struct policy *p = NULL;
    struct err e;
    int rc;

    err_clear(&e);
    policy_diags_init(&d);
    rc = policy_load_file(file, &p, &d, &e);
    for (size_t i = 0; i < d.n; i++)
        fprintf(stderr, "%s\n", d.v[i].text);
    if (rc < 0) {
        char *hint = xasprintf("check it with: openshell policy validate %s", file);
        if (d.errors)
            rc = cli_fail(c, CLI_EXIT_FAIL, hint, "policy %s: %zu error%s; nothing was changed",
                          file, d.errors, d.errors == 1 ? "" : "s");
        else
            rc = cli_fail(c, CLI_EXIT_FAIL, hint, "%s", err_str(&e, rc));
        free(hint);
    } else if (read_file(file, 256 * 1024, out, &e) < 0) {
        rc = cli_fail(c, CLI_EXIT_FAIL, NULL, "%s", e.msg);
    }
    policy_unref(p);
    policy_diags_fini(&d);
    return rc;
}

/* ------------------------------------------------------------------ set */

static int
pol_set(struct cli_ctx *c, struct pol_args *a)
{
    struct buf text = BUF_INIT;
    char name[256];
    cJSON *cur = NULL, *ans = NULL;
    char *path = NULL;
    int status, rc;

    if (!a->file)
        applet_usage_error(c->prog, "expected --policy FILE");
    if (a->global && a->wait)
        applet_usage_error(c->prog, "--global cannot --wait (no single sandbox reports it)");
    if ((rc = load_local(c, a->file, &text)) != 0)
        goto out;
    if ((rc = target(c, a, name, sizeof(name))) != 0)
        goto out;
    if (a->global && (rc = confirm(c, a, "Setting the global policy")) != 0)
        goto out;
    path = pol_path(c, a->global ? NULL : name, "");
    /* The same text as the latest revision: nothing to write. */
    if ((rc = cli_call(c, "GET", path, NULL, NULL, 0, &status, &cur)) != 0)
        goto out;
    if (status == 200 && !strcmp(cli_jstr(cur, "policy"), buf_cstr(&text)) &&
        strcmp(cli_jstr(cur, "status"), "failed") != 0) {
        const cJSON *v = cli_jget(cur, "version");
        long ver = cJSON_IsNumber(v) ? (long)v->valuedouble : 0;
        fprintf(stderr, "\u00b7 Policy unchanged (version %ld, hash %s)\n", ver,
                short_hash(cli_jstr(cur, "policy_hash")));
        if (c->output != CLI_OUT_TABLE)
            cli_print_data(c, cur);
        rc = a->wait ? wait_loaded(c, name, ver, a->timeout_s) : 0;
        goto out;
    }
    if (status != 200 && status != 404) {
        rc = pol_fail(c, status, cur, a->global ? NULL : name, NULL);
        goto out;
    }
    if ((rc = cli_call(c, "PUT", path, "application/yaml", text.data, text.len, &status, &ans)) !=
        0)
        goto out;
    if (status != 200) {
        rc = pol_fail(c, status, ans, a->global ? NULL : name, a->file);
        goto out;
    }
    {
        const cJSON *v = cli_jget(ans, "version");
        long ver = cJSON_IsNumber(v) ? (long)v->valuedouble : 0;
        if (a->global)
            cli_ok(c, "Global policy configured (version %ld, hash: %s)", ver,
                   short_hash(cli_jstr(ans, "policy_hash")));
        else
            cli_ok(c, "Policy version %ld submitted (hash: %s)", ver,
                   short_hash(cli_jstr(ans, "policy_hash")));
        if (c->output != CLI_OUT_TABLE)
            cli_print_data(c, ans);
        if (a->wait)
            rc = wait_loaded(c, name, ver, a->timeout_s);
    }
out:
    cJSON_Delete(cur);
    cJSON_Delete(ans);
    buf_fini(&text);
    free(path);
    return rc;
}

/* ------------------------------------------------------------------ get */

/* The version of the latest revision with status "loaded" (0: none). */
static long
active_version(struct cli_ctx *c, const char *name)
{
    char *path = pol_path(c, name, "/revisions");
    cJSON *j = NULL;
    const cJSON *it;
    long v = 0;
    int status;

    if (cli_call(c, "GET", path, NULL, NULL, 0, &status, &j) == 0 && status == 200)
        cJSON_ArrayForEach(it, cli_jget(j, "items"))
        {
            const cJSON *n = cli_jget(it, "version");
            if (!strcmp(cli_jstr(it, "status"), "loaded") && cJSON_IsNumber(n)) {
                v = (long)n->valuedouble;
                break;
            }
        }
    cJSON_Delete(j);
    free(path);
    return v;
}

static int
pol_get(struct cli_ctx *c, struct pol_args *a)
{
    char name[256], sfx[48];
    cJSON *rev = NULL, *glob = NULL, *out = NULL;
    const char *sandbox;
    char *path;
    int status, rc;
    bool global_active = false;

    if ((rc = target(c, a, name, sizeof(name))) != 0)
        return rc;
    sandbox = a->global ? NULL : name;
    if (a->rev)
        snprintf(sfx, sizeof(sfx), "/revisions/%ld", a->rev);
    else
        sfx[0] = '\0';
    path = pol_path(c, sandbox, sfx);
    rc = cli_call(c, "GET", path, NULL, NULL, 0, &status, &rev);
    free(path);
    if (rc)
        goto out;
    if (status != 200 && !(status == 404 && !a->rev &&
                           strstr(cli_jstr(rev, "error.message"), "no policy revision"))) {
        rc = pol_fail(c, status, rev, sandbox, NULL);
        goto out;
    }
    if (status != 200) {
        cJSON_Delete(rev);
        rev = NULL;
    }
    if (sandbox) {
        /* A global policy, when there is one, is what is in force. */
        char *gp = pol_path(c, NULL, "");
        int gs;
        if (cli_call(c, "GET", gp, NULL, NULL, 0, &gs, &glob) == 0 && gs == 200)
            global_active = true;
        free(gp);
    }
    out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "scope", sandbox ? "sandbox" : "global");
    if (sandbox)
        cJSON_AddStringToObject(out, "sandbox", sandbox);
    else
        cJSON_AddNullToObject(out, "sandbox");
    {
        const cJSON *v = cli_jget(rev, "version");
        cJSON_AddNumberToObject(out, "version", cJSON_IsNumber(v) ? v->valuedouble : 0);
    }
    cJSON_AddNumberToObject(out, "active_version", (double)active_version(c, sandbox));
    cJSON_AddStringToObject(out, "hash", cli_jstr(rev, "policy_hash"));
    cJSON_AddStringToObject(out, "status",
                            rev ? (a->rev ? cli_jstr(rev, "status") : "effective") : "default");
    cJSON_AddStringToObject(out, "revision_status", rev ? cli_jstr(rev, "status") : "");
    cJSON_AddStringToObject(out, "policy_source",
                            global_active ? "global"
                            : rev         ? (sandbox ? "sandbox" : "global")
                                          : "spec_or_default");
    if (global_active) {
        const cJSON *gv = cli_jget(glob, "version");
        cJSON_AddNumberToObject(out, "global_policy_version",
                                cJSON_IsNumber(gv) ? gv->valuedouble : 0);
    }
    if (cJSON_IsString(cli_jget(rev, "load_error")))
        cJSON_AddStringToObject(out, "load_error", cli_jstr(rev, "load_error"));
    {
        const cJSON *t = cli_jget(rev, "created_at_ms");
        cJSON_AddNumberToObject(out, "created_at_ms", cJSON_IsNumber(t) ? t->valuedouble : 0);
    }
    if (rev && (a->full || c->output != CLI_OUT_TABLE))
        cJSON_AddStringToObject(out, "policy", cli_jstr(rev, "policy"));
    else
        cJSON_AddNullToObject(out, "policy");

    if (c->output != CLI_OUT_TABLE) {
        cli_print_data(c, out);
    } else {
        const cJSON *v = cli_jget(out, "version");
        printf("Version:     %.0f\n", v->valuedouble);
        printf("Hash:        %s\n", rev ? short_hash(cli_jstr(rev, "policy_hash")) : "-");
        printf("Status:      %s\n",
               rev ? (a->rev ? cli_jstr(rev, "status") : "Effective")
                   : "none stored (the sandbox runs its spec policy or the default)");
        if (rev)
            printf("Load status: %s\n", cli_jstr(rev, "status"));
        printf("Active:      %.0f\n", cli_jget(out, "active_version")->valuedouble);
        printf("Source:      %s\n", cli_jstr(out, "policy_source"));
        if (global_active)
            printf("Global:      yes: global policy version %.0f overrides the sandbox's\n",
                   cli_jget(out, "global_policy_version")->valuedouble);
        if (*cli_jstr(out, "load_error"))
            printf("Error:       %s\n", cli_jstr(out, "load_error"));
        if (a->full && rev) {
            const char *t = cli_jstr(rev, "policy");
            size_t n = strlen(t);
            printf("---\n%s%s", t, n && t[n - 1] != '\n' ? "\n" : "");
        }
    }
out:
    cJSON_Delete(rev);
    cJSON_Delete(glob);
    cJSON_Delete(out);
    return rc;
}

/* ------------------------------------------------------------------ list */

static int
pol_list(struct cli_ctx *c, struct pol_args *a)
{
    static const char *const hdr[] = { "VERSION", "HASH", "STATUS", "CREATED", "ERROR" };
    char name[256];
    cJSON *j = NULL, *arr;
    const cJSON *it;
    char *path;
    int status, rc;
    long shown = 0;

    if ((rc = target(c, a, name, sizeof(name))) != 0)
        return rc;
    path = pol_path(c, a->global ? NULL : name, "/revisions");
    rc = cli_call(c, "GET", path, NULL, NULL, 0, &status, &j);
    free(path);
    if (rc)
        return rc;
    if (status != 200) {
        rc = pol_fail(c, status, j, a->global ? NULL : name, NULL);
        cJSON_Delete(j);
        return rc;
    }
    arr = cJSON_CreateArray();
    cJSON_ArrayForEach(it, cli_jget(j, "items"))
    {
        if (shown++ >= a->limit)
            break;
        cJSON_AddItemToArray(arr, cJSON_Duplicate(it, true));
    }
    if (c->output != CLI_OUT_TABLE) {
        cli_print_data(c, arr);
    } else if (!cJSON_GetArraySize(arr)) {
        printf("No policy revisions (the sandbox runs its spec policy or the default).\n");
    } else {
        struct cli_table *t = cli_table_new(5, hdr);
        struct buf b = BUF_INIT;
        cJSON_ArrayForEach(it, arr)
        {
            char ver[32], created[32], errs[48], hash[16];
            const cJSON *v = cli_jget(it, "version"), *cr = cli_jget(it, "created_at_ms");
            const char *st = cli_jstr(it, "status");
            snprintf(ver, sizeof(ver), "%.0f", cJSON_IsNumber(v) ? v->valuedouble : 0);
            snprintf(created, sizeof(created), "%.0f", cJSON_IsNumber(cr) ? cr->valuedouble : 0);
            snprintf(errs, sizeof(errs), "%.40s", cli_jstr(it, "load_error"));
            snprintf(hash, sizeof(hash), "%s", short_hash(cli_jstr(it, "policy_hash")));
            {
                const char *row[] = { ver, hash, st, created, errs };
                cli_table_add(t, row);
            }
            cli_table_color_last(t, 2,
                                 !strcmp(st, "loaded")   ? "32"
                                 : !strcmp(st, "failed") ? "31"
                                                         : NULL);
        }
        cli_table_render(t, cli_color_wanted(1), &b);
        fputs(buf_cstr(&b), stdout);
        buf_fini(&b);
        cli_table_free(t);
    }
    cJSON_Delete(arr);
    cJSON_Delete(j);
    return 0;
}

/* ------------------------------------------------------------------ update */

/* Split "HOST:PORT[:REST]" (HOST may be [v6]) into HOST, PORT and REST
 * (NULL when absent). -1 on a malformed spec. */
static int
split_hostport(const char *spec, char *host, size_t size, long *port, const char **rest)
{
    const char *p = spec, *colon;
    char *end;

    if (*p == '[') {
        const char *rb = strchr(p, ']');
        if (!rb || rb[1] != ':' || (size_t)(rb - p - 1) >= size || rb == p + 1)
            return -1;
        memcpy(host, p + 1, (size_t)(rb - p - 1));
        host[rb - p - 1] = '\0';
        colon = rb + 1;
    } else {
        colon = strchr(p, ':');
        if (!colon || colon == p || (size_t)(colon - p) >= size)
            return -1;
        memcpy(host, p, (size_t)(colon - p));
        host[colon - p] = '\0';
    }
    errno = 0;
    *port = strtol(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *port < 1 || *port > 65535 || (*end && *end != ':'))
        return -1;
    *rest = *end == ':' ? end + 1 : NULL;
    return 0;
}

/* allow_api_github_com_443: the reference's generated rule name. */
static char *
rule_name_for(const char *host, long port)
{
    struct buf b = BUF_INIT;

    buf_puts(&b, "allow_");
    for (const char *p = host; *p; p++)
        buf_putc(&b, (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ? *p
                     : (*p >= 'A' && *p <= 'Z')                           ? (char)(*p - 'A' + 'a')
                                                                          : '_');
    buf_printf(&b, "_%ld", port);
    return buf_steal(&b);
}

static bool
one_of(const char *s, const char *const *set)
{
    for (; *set; set++)
        if (!strcmp(s, *set))
            return true;
    return false;
}

/* The endpoint object of an --add-endpoint spec (REST after HOST:PORT). */
static cJSON *
endpoint_json(struct cli_ctx *c, const char *spec, const char *host, long port, const char *rest)
{
    static const char *const accesses[] = { "read-only", "read-write", "full", NULL };
    static const char *const protocols[] = { "tcp", "rest", "websocket", "sql", NULL };
    static const char *const enforcements[] = { "enforce", "audit", NULL };
    cJSON *ep = cJSON_CreateObject();
    char *copy = rest ? xstrdup(rest) : NULL, *field[4] = { NULL, NULL, NULL, NULL };
    int nf = 0;

    cJSON_AddStringToObject(ep, "host", host);
    cJSON_AddNumberToObject(ep, "port", (double)port);
    for (char *p = copy; p && nf < 4;) {
        char *colon = nf < 3 ? strchr(p, ':') : NULL;
        if (colon)
            *colon = '\0';
        field[nf++] = p;
        p = colon ? colon + 1 : NULL;
    }
    if (field[0] && *field[0]) {
        if (!one_of(field[0], accesses))
            applet_usage_error(c->prog,
                               "--add-endpoint '%s': access '%s': expected read-only, "
                               "read-write or full",
                               spec, field[0]);
        cJSON_AddStringToObject(ep, "access", field[0]);
    }
    if (field[1] && *field[1]) {
        if (!one_of(field[1], protocols))
            applet_usage_error(c->prog,
                               "--add-endpoint '%s': protocol '%s': expected tcp, rest, "
                               "websocket or sql",
                               spec, field[1]);
        cJSON_AddStringToObject(ep, "protocol", field[1]);
    }
    if (field[2] && *field[2]) {
        if (!one_of(field[2], enforcements))
            applet_usage_error(c->prog,
                               "--add-endpoint '%s': enforcement '%s': expected enforce "
                               "or audit",
                               spec, field[2]);
        cJSON_AddStringToObject(ep, "enforcement", field[2]);
    }
    if (field[3] && *field[3]) {
        cJSON *ips = NULL;
        char *save = NULL;
        for (char *o = strtok_r(field[3], ",", &save); o; o = strtok_r(NULL, ",", &save)) {
            if (!strncmp(o, "allowed-ip=", 11) && o[11]) {
                if (!ips)
                    ips = cJSON_AddArrayToObject(ep, "allowed_ips");
                cJSON_AddItemToArray(ips, cJSON_CreateString(o + 11));
            } else if (!strchr(o, '=')) {
                /* websocket-credential-rewrite and the like: the reference's
                 * flags, as the policy's snake_case booleans. */
                char *k = xstrdup(o);
                for (char *q = k; *q; q++)
                    if (*q == '-')
                        *q = '_';
                cJSON_AddBoolToObject(ep, k, true);
                free(k);
            } else {
                applet_usage_error(c->prog, "--add-endpoint '%s': option '%s'", spec, o);
            }
        }
    }
    free(copy);
    return ep;
}

/* The PATCH operations of A (in command-line order). */
static cJSON *
build_ops(struct cli_ctx *c, const struct pol_args *a)
{
    cJSON *ops = cJSON_CreateArray();
    size_t n_add = 0;

    for (size_t i = 0; i < a->nops; i++)
        n_add += a->ops[i].kind == OPT_ADD_EP;
    if (a->rule_name && n_add != 1)
        applet_usage_error(c->prog, "--rule-name goes with exactly one --add-endpoint");
    if (a->nbinaries && !n_add)
        applet_usage_error(c->prog, "--binary goes with --add-endpoint");
    for (size_t i = 0; i < a->nops; i++) {
        const char *spec = a->ops[i].arg, *rest;
        char host[256];
        long port = 0;
        cJSON *op = cJSON_CreateObject();

        if (a->ops[i].kind == OPT_RM_RULE) {
            if (!*spec)
                applet_usage_error(c->prog, "--remove-rule: empty name");
            cJSON_AddStringToObject(op, "op", "remove_rule");
            cJSON_AddStringToObject(op, "name", spec);
            cJSON_AddItemToArray(ops, op);
            continue;
        }
        if (split_hostport(spec, host, sizeof(host), &port, &rest) < 0)
            applet_usage_error(c->prog, "'%s': expected HOST:PORT...", spec);
        switch (a->ops[i].kind) {
        case OPT_ADD_EP: {
            char *rn = a->rule_name ? xstrdup(a->rule_name) : rule_name_for(host, port);
            cJSON *rule, *eps, *bins;
            cJSON_AddStringToObject(op, "op", "add_rule");
            cJSON_AddStringToObject(op, "name", rn);
            free(rn);
            rule = cJSON_AddObjectToObject(op, "rule");
            eps = cJSON_AddArrayToObject(rule, "endpoints");
            cJSON_AddItemToArray(eps, endpoint_json(c, spec, host, port, rest));
            bins = cJSON_AddArrayToObject(rule, "binaries");
            for (size_t b = 0; b < a->nbinaries; b++) {
                cJSON *bo = cJSON_CreateObject();
                cJSON_AddStringToObject(bo, "path", a->binaries[b]);
                cJSON_AddItemToArray(bins, bo);
            }
            break;
        }
        case OPT_RM_EP:
            if (rest)
                applet_usage_error(c->prog, "--remove-endpoint '%s': expected HOST:PORT", spec);
            cJSON_AddStringToObject(op, "op", "remove_endpoint");
            cJSON_AddStringToObject(op, "host", host);
            cJSON_AddNumberToObject(op, "port", (double)port);
            break;
        default: { /* --add-allow / --add-deny HOST:PORT:METHOD:GLOB */
            const char *colon = rest ? strchr(rest, ':') : NULL;
            bool allow = a->ops[i].kind == OPT_ADD_ALLOW;
            char *method;
            cJSON *r, *arr;
            if (!colon || colon == rest || !colon[1])
                applet_usage_error(c->prog, "--add-%s '%s': expected HOST:PORT:METHOD:GLOB",
                                   allow ? "allow" : "deny", spec);
            method = xstrndup(rest, (size_t)(colon - rest));
            cJSON_AddStringToObject(op, "op", allow ? "add_allow_rules" : "add_deny_rules");
            cJSON_AddStringToObject(op, "host", host);
            cJSON_AddNumberToObject(op, "port", (double)port);
            arr = cJSON_AddArrayToObject(op, allow ? "rules" : "deny_rules");
            r = cJSON_CreateObject();
            cJSON_AddStringToObject(r, "method", method);
            cJSON_AddStringToObject(r, "path", colon + 1);
            if (allow) {
                cJSON *w = cJSON_CreateObject();
                cJSON_AddItemToObject(w, "allow", r);
                r = w;
            }
            cJSON_AddItemToArray(arr, r);
            free(method);
            break;
        }
        }
        cJSON_AddItemToArray(ops, op);
    }
    return ops;
}

static void
print_warnings(struct cli_ctx *c, const cJSON *ans)
{
    const cJSON *w;

    cJSON_ArrayForEach(w, cli_jget(ans, "warnings"))
    {
        if (cJSON_IsString(w))
            cli_warn(c, "%s", w->valuestring);
    }
}

static int
pol_update(struct cli_ctx *c, struct pol_args *a)
{
    char name[256];
    cJSON *req, *ans = NULL;
    char *path = NULL;
    int status, rc;

    if (!a->nops)
        applet_usage_error(c->prog, "nothing to change: give --add-endpoint, --remove-endpoint, "
                                    "--add-allow, --add-deny or --remove-rule");
    if (a->dry_run && a->wait)
        applet_usage_error(c->prog, "--dry-run and --wait exclude each other");
    if (a->global)
        applet_usage_error(c->prog, "policy update works on a sandbox's policy; replace the "
                                    "global one with: policy set --global");
    req = cJSON_CreateObject();
    cJSON_AddItemToObject(req, "operations", build_ops(c, a));
    if (a->dry_run)
        cJSON_AddBoolToObject(req, "dry_run", true);
    if ((rc = target(c, a, name, sizeof(name))) != 0)
        goto out;
    path = pol_path(c, name, "");
    if ((rc = cli_call_json(c, "PATCH", path, req, &status, &ans)) != 0)
        goto out;
    if (status == 405) {
        rc = cli_fail(c, CLI_EXIT_FAIL, "use: openshell policy set NAME --policy FILE",
                      "gateway '%s' does not support incremental policy updates yet", c->gw.name);
        goto out;
    }
    if (status != 200) {
        rc = pol_fail(c, status, ans, name, NULL);
        goto out;
    }
    print_warnings(c, ans);
    if (a->dry_run) {
        const cJSON *pol = cli_jget(ans, "policy");
        if (c->output == CLI_OUT_JSON) {
            cli_print_data(c, ans);
        } else {
            struct buf b = BUF_INIT;
            cli_yaml_render(pol, &b);
            fputs(buf_cstr(&b), stdout);
            buf_fini(&b);
        }
        fprintf(stderr, "(dry run: nothing was changed)\n");
        goto out;
    }
    {
        const cJSON *v = cli_jget(ans, "version");
        long ver = cJSON_IsNumber(v) ? (long)v->valuedouble : 0;
        cli_ok(c, "Policy version %ld submitted (hash: %s)", ver,
               short_hash(cli_jstr(ans, "policy_hash")));
        if (c->output != CLI_OUT_TABLE)
            cli_print_data(c, ans);
        if (a->wait)
            rc = wait_loaded(c, name, ver, a->timeout_s);
    }
out:
    cJSON_Delete(req);
    cJSON_Delete(ans);
    free(path);
    return rc;
}

int
cli_policy_gw(int argc, char **argv)
{
    static const char *const subs[] = { "set", "get", "list", "update" };
    struct cli_ctx c;
    struct pol_args a;
    char prog[64];
    int rc;

    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        if (strcmp(argv[0], subs[i]) != 0)
            continue;
        snprintf(prog, sizeof(prog), "openshell policy %s", subs[i]);
        cli_ctx_init(&c, prog);
        parse(&c, argc, argv, &a);
        switch (i) {
        case 0: rc = pol_set(&c, &a); break;
        case 1: rc = pol_get(&c, &a); break;
        case 2: rc = pol_list(&c, &a); break;
        default: rc = pol_update(&c, &a); break;
        }
        cli_ctx_fini(&c);
        return rc;
    }
    return -1;
}
