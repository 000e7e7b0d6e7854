/*
 * sandbox.c: "openshell sandbox create|list|get|delete" (doc/cli.md) against
 * the gateway's API (doc/api.md §5). The first sandbox command on a machine
 * without any gateway starts the local one (cli_connect with autostart).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../applets.h"
#include "buf.h"
#include "cli.h"
#include "cli_out.h"
#include "client.h"
#include "loop.h"
#include "policy.h"
#include "xfuncs.h"

#define SB_PAGE 1000
#define SB_MAX_ITEMS 256

static const char sandbox_usage[] =
    "Usage: openshell sandbox COMMAND [OPTIONS]   (alias: sb)\n"
    "\n"
    "Commands:\n"
    "  create [--name N] [--label K=V]... [--env K=V]... [--policy FILE]\n"
    "         [--tty|--no-tty] [--from SRC] [--provider P]... [--timeout SECS]\n"
    "         [--detach | --no-keep] [--upload LOCAL[:DEST]]...\n"
    "         [-- CMD ARGS...]\n"
    "                      create a sandbox, wait until it is ready, then run CMD in\n"
    "                      it attached to this terminal (default: a login shell when\n"
    "                      stdin is a terminal; none otherwise) and exit with its\n"
    "                      status. --detach: CMD becomes the sandbox's main process\n"
    "                      and nothing attaches. --no-keep: delete the sandbox when\n"
    "                      the command ends. The sandbox is kept by default.\n"
    "                      --upload copies LOCAL into DEST (default /sandbox) once\n"
    "                      the sandbox is ready, before the command.\n"
    "                      --provider attaches a provider; a CMD of claude, codex,\n"
    "                      gh or glab also attaches one of its type, created from\n"
    "                      the environment if missing (asked on a terminal;\n"
    "                      --auto-providers: without asking; --no-auto-providers:\n"
    "                      never)\n"
    "  exec [NAME] [-t] [-i] -- CMD   run a command in a sandbox (see exec --help)\n"
    "  connect [NAME]      an interactive login shell in a sandbox\n"
    "  upload NAME SRC [DST], download NAME SRC [DST]\n"
    "                      copy files and directories in and out (tar streams)\n"
    "  logs [NAME] [--follow] [--tail N] [--level L] [--source S]\n"
    "                      the sandbox's log lines\n"
    "  list [--limit N] [--offset N] [--selector K=V,...] [--names | --ids]\n"
    "       [--all-workspaces]\n"
    "                      sandboxes of the workspace: NAME CREATED PHASE\n"
    "  get [NAME]          one sandbox (default: the last used one)\n"
    "  provider list|attach|detach SANDBOX [PROVIDER]\n"
    "                      the providers whose credentials the sandbox may use\n"
    "  delete NAME... | --all\n"
    "                      delete sandboxes\n"
    "\n"
    "Options:\n" CLI_COMMON_HELP "\n"
    "Examples:\n"
    "  openshell sandbox create --name demo --policy policy.yaml -- python3 agent.py\n"
    "  openshell sandbox create --no-keep -- make test\n"
    "  openshell sandbox create --name svc --detach -- python3 -m http.server\n"
    "  openshell sandbox list -o json\n"
    "  openshell sandbox list --selector team=ml --names\n"
    "  openshell sandbox get demo\n"
    "  openshell sandbox delete --all\n"
    "\n"
    "Without any gateway the first sandbox command starts the local one\n"
    "('openshell gateway start'). OPENSHELL_SANDBOX_POLICY is the default\n"
    "--policy; OPENSHELL_PROVISION_TIMEOUT (seconds, 300) the default --timeout.\n"
    "Exit status: 0 ok, 1 failed (unknown sandbox, name taken, bad policy, error\n"
    "phase, timeout), 2 usage error, 3 no gateway reachable; create with an attached\n"
    "command, exec and connect: the command's status (124 timeout, 255 connection\n"
    "lost).\n";

enum {
    OPT_NAME = 0x100,
    OPT_LABEL,
    OPT_ENV,
    OPT_POLICY,
    OPT_TTY,
    OPT_TIMEOUT,
    OPT_DETACH,
    OPT_LIMIT,
    OPT_OFFSET,
    OPT_SELECTOR,
    OPT_NAMES,
    OPT_IDS,
    OPT_ALL,
    OPT_ALL_WS,
    OPT_FROM,
    OPT_PROVIDER,
    OPT_AUTO_PROVIDERS,
    OPT_NO_AUTO_PROVIDERS,
    OPT_NO_KEEP,
    OPT_NO_TTY,
    OPT_KEEP,
    OPT_UPLOAD,
};

struct sb_args {
    const char *name, *policy, *selector, *from;
    const char *providers[32];
    size_t nproviders;
    int auto_providers; /* 1 --auto-providers, -1 --no-auto-providers, 0 ask */
    const char *labels[SB_MAX_ITEMS], *envs[SB_MAX_ITEMS], *uploads[SB_MAX_ITEMS];
    size_t nuploads, nlabels, nenvs;
    bool tty, no_tty, detach, no_keep, names, ids, all, all_ws;
    long timeout_s, limit, offset;
    char **pos; /* positional arguments (the command after --) */
    int npos;
};

static void
parse(struct cli_ctx *c, int argc, char **argv, struct sb_args *a)
{
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        { "name", required_argument, NULL, OPT_NAME },
        { "label", required_argument, NULL, OPT_LABEL },
        { "env", required_argument, NULL, OPT_ENV },
        { "policy", required_argument, NULL, OPT_POLICY },
        { "tty", no_argument, NULL, OPT_TTY },
        { "timeout", required_argument, NULL, OPT_TIMEOUT },
        { "detach", no_argument, NULL, OPT_DETACH },
        { "no-keep", no_argument, NULL, OPT_NO_KEEP },
        { "keep", no_argument, NULL, OPT_KEEP },
        { "no-tty", no_argument, NULL, OPT_NO_TTY },
        { "upload", required_argument, NULL, OPT_UPLOAD },
        { "limit", required_argument, NULL, OPT_LIMIT },
        { "offset", required_argument, NULL, OPT_OFFSET },
        { "selector", required_argument, NULL, OPT_SELECTOR },
        { "names", no_argument, NULL, OPT_NAMES },
        { "ids", no_argument, NULL, OPT_IDS },
        { "all", no_argument, NULL, OPT_ALL },
        { "all-workspaces", no_argument, NULL, OPT_ALL_WS },
        { "from", required_argument, NULL, OPT_FROM },
        { "provider", required_argument, NULL, OPT_PROVIDER },
        { "auto-providers", no_argument, NULL, OPT_AUTO_PROVIDERS },
        { "no-auto-providers", no_argument, NULL, OPT_NO_AUTO_PROVIDERS },
        { NULL, 0, NULL, 0 },
    };
    const char *tmo = getenv("OPENSHELL_PROVISION_TIMEOUT");
    int opt;

    memset(a, 0, sizeof(*a));
    a->limit = 100;
    a->timeout_s = tmo && *tmo ? cli_parse_num(c, "OPENSHELL_PROVISION_TIMEOUT", tmo, 86400) : 300;
    optind = 0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, CLI_COMMON_SHORTOPTS "n:", longopts, NULL)) != -1) {
        if (cli_common_opt(c, opt, optarg))
            continue;
        switch (opt) {
        case 'h': fputs(sandbox_usage, stdout); exit(0);
        case 'n':
        case OPT_NAME: a->name = optarg; break;
        case OPT_LABEL:
        case OPT_ENV: {
            const char **v = opt == OPT_LABEL ? a->labels : a->envs;
            size_t *n = opt == OPT_LABEL ? &a->nlabels : &a->nenvs;
            if (!strchr(optarg, '=') || optarg[0] == '=')
                applet_usage_error(c->prog, "--%s '%s': expected KEY=VALUE",
                                   opt == OPT_LABEL ? "label" : "env", optarg);
            if (*n >= SB_MAX_ITEMS)
                applet_usage_error(c->prog, "too many --%s", opt == OPT_LABEL ? "label" : "env");
            v[(*n)++] = optarg;
            break;
        }
        case OPT_POLICY: a->policy = optarg; break;
        case OPT_TTY: a->tty = true; break;
        case OPT_TIMEOUT: a->timeout_s = cli_parse_num(c, "--timeout", optarg, 86400); break;
        case OPT_DETACH: a->detach = true; break;
        case OPT_NO_KEEP: a->no_keep = true; break;
        case OPT_KEEP: break; /* the default; accepted as the reference does */
        case OPT_NO_TTY: a->no_tty = true; break;
        case OPT_UPLOAD:
            if (!*optarg)
                applet_usage_error(c->prog, "--upload: empty");
            if (a->nuploads >= SB_MAX_ITEMS)
                applet_usage_error(c->prog, "too many --upload");
            a->uploads[a->nuploads++] = optarg;
            break;
        case OPT_LIMIT: a->limit = cli_parse_num(c, "--limit", optarg, 1000000); break;
        case OPT_OFFSET: a->offset = cli_parse_num(c, "--offset", optarg, 1000000000); break;
        case OPT_SELECTOR: a->selector = optarg; break;
        case OPT_NAMES: a->names = true; break;
        case OPT_IDS: a->ids = true; break;
        case OPT_ALL: a->all = true; break;
        case OPT_ALL_WS: a->all_ws = true; break;
        case OPT_AUTO_PROVIDERS: a->auto_providers = 1; break;
        case OPT_NO_AUTO_PROVIDERS: a->auto_providers = -1; break;
        case OPT_PROVIDER:
            if (!*optarg || a->nproviders >= 32)
                applet_usage_error(c->prog, "--provider: empty name or more than 32");
            a->providers[a->nproviders++] = optarg;
            break;
        case OPT_FROM:
            if (!*optarg)
                applet_usage_error(c->prog, "--from: empty");
            a->from = optarg;
            break;
        default: applet_bad_option(c->prog, argv, optind, optopt);
        }
    }
    a->pos = argv + optind;
    a->npos = argc - optind;
}

/* ------------------------------------------------------------------ JSON shapes */

/* The first condition's reason and message (or ""). */
static const cJSON *
first_condition(const cJSON *sb)
{
    const cJSON *conds = cli_jget(sb, "status.conditions");

    return cJSON_IsArray(conds) ? cJSON_GetArrayItem(conds, 0) : NULL;
}

/* The CLI's stable JSON for one sandbox (doc/cli.md): the reference's
 * fields plus what this gateway knows. */
static cJSON *
sb_view(const cJSON *sb)
{
    cJSON *o = cJSON_CreateObject();
    const cJSON *v, *cond = first_condition(sb);
    char ts[32];

    cJSON_AddStringToObject(o, "id", cli_jstr(sb, "metadata.id"));
    cJSON_AddStringToObject(o, "name", cli_jstr(sb, "metadata.name"));
    cJSON_AddStringToObject(o, "workspace", cli_jstr(sb, "metadata.workspace"));
    v = cli_jget(sb, "metadata.labels");
    cJSON_AddItemToObject(o, "labels", v ? cJSON_Duplicate(v, true) : cJSON_CreateObject());
    v = cli_jget(sb, "metadata.annotations");
    cJSON_AddItemToObject(o, "annotations", v ? cJSON_Duplicate(v, true) : cJSON_CreateObject());
    v = cli_jget(sb, "metadata.resource_version");
    cJSON_AddNumberToObject(o, "resource_version", cJSON_IsNumber(v) ? v->valuedouble : 0);
    v = cli_jget(sb, "metadata.created_at_ms");
    cli_format_time_ms(cJSON_IsNumber(v) ? (int64_t)v->valuedouble : 0, ts, sizeof(ts));
    cJSON_AddStringToObject(o, "created_at", ts);
    cJSON_AddNumberToObject(o, "created_at_ms", cJSON_IsNumber(v) ? v->valuedouble : 0);
    cJSON_AddStringToObject(o, "phase", cli_jstr(sb, "status.phase"));
    cJSON_AddStringToObject(o, "reason", cond ? cli_jstr(cond, "reason") : "");
    cJSON_AddStringToObject(o, "message", cond ? cli_jstr(cond, "message") : "");
    cJSON_AddStringToObject(o, "image", cli_jstr(sb, "spec.template.image"));
    v = cli_jget(sb, "spec.command");
    cJSON_AddItemToObject(o, "command", v ? cJSON_Duplicate(v, true) : cJSON_CreateArray());
    v = cli_jget(sb, "status.policy.latest_version");
    cJSON_AddNumberToObject(o, "current_policy_version", cJSON_IsNumber(v) ? v->valuedouble : 0);
    v = cli_jget(sb, "status.supervisor");
    if (cJSON_IsObject(v)) {
        /* the supervisor's session with the gateway (exec, files, logs) */
        const cJSON *pid = cJSON_GetObjectItemCaseSensitive(v, "pid");
        cJSON_AddBoolToObject(o, "supervisor_connected",
                              cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(v, "connected")));
        cJSON_AddNumberToObject(o, "supervisor_pid", cJSON_IsNumber(pid) ? pid->valuedouble : 0);
    }
    return o;
}

static const char *
phase_color(const char *phase)
{
    if (!strcmp(phase, "ready"))
        return "32";
    if (!strcmp(phase, "error"))
        return "31";
    if (!strcmp(phase, "provisioning") || !strcmp(phase, "starting"))
        return "33";
    if (!strcmp(phase, "deleting") || !strcmp(phase, "stopped"))
        return "2";
    return NULL;
}

/* ------------------------------------------------------------------ helpers */

static int
not_found(const struct cli_ctx *c, const char *name)
{
    return cli_fail(c, CLI_EXIT_FAIL, "list them with: openshell sandbox list",
                    "sandbox '%s' not found in workspace '%s' (gateway '%s')", name, c->workspace,
                    c->gw.name);
}

/* GET one sandbox: 0 and *SB, or CLI_EXIT_* after printing the error. */
static int
get_one(struct cli_ctx *c, const char *name, cJSON **sb)
{
    char *path = cli_sb_path(c, name, "");
    int status, rc = cli_call(c, "GET", path, NULL, NULL, 0, &status, sb);

    free(path);
    if (rc)
        return rc;
    if (status == 200)
        return 0;
    rc = status == 404 ? not_found(c, name) : cli_api_fail(c, status, *sb, NULL);
    cJSON_Delete(*sb);
    *sb = NULL;
    return rc;
}

/* One page of the list into *PAGE (the answer object). */
static int
list_page(struct cli_ctx *c, const char *selector, bool all_ws, long limit, long offset,
          cJSON **page)
{
    struct buf q = BUF_INIT;
    char *path;
    int status, rc;

    buf_printf(&q, "/sandboxes?limit=%ld&offset=%ld", limit, offset);
    if (selector) {
        buf_puts(&q, "&label_selector=");
        cli_pct_encode(selector, &q);
    }
    path = all_ws ? xasprintf("/v1%s", buf_cstr(&q)) : cli_ws_path(c, "%s", buf_cstr(&q));
    buf_fini(&q);
    rc = cli_call(c, "GET", path, NULL, NULL, 0, &status, page);
    free(path);
    if (rc)
        return rc;
    if (status != 200) {
        rc = cli_api_fail(c, status, *page,
                          status == 404 ? "list workspaces, or drop --workspace" : NULL);
        cJSON_Delete(*page);
        *page = NULL;
    }
    return rc;
}

/* ------------------------------------------------------------------ list */

static int
sb_list(struct cli_ctx *c, struct sb_args *a)
{
    static const char *const hdr[] = { "WORKSPACE", "NAME", "CREATED", "PHASE" };
    cJSON *all = cJSON_CreateArray(), *page = NULL;
    long total = 0, got = 0;
    int rc;

    if (a->npos)
        applet_usage_error(c->prog, "unexpected argument '%s'", a->pos[0]);
    if ((rc = cli_connect(c, true)) != 0)
        goto out;
    while (got < a->limit) {
        long want = a->limit - got > SB_PAGE ? SB_PAGE : a->limit - got, n;
        const cJSON *items, *it, *t;

        if ((rc = list_page(c, a->selector, a->all_ws, want, a->offset + got, &page)) != 0)
            goto out;
        items = cJSON_GetObjectItemCaseSensitive(page, "items");
        t = cJSON_GetObjectItemCaseSensitive(page, "total");
        total = cJSON_IsNumber(t) ? (long)t->valuedouble : 0;
        n = cJSON_GetArraySize(items);
        cJSON_ArrayForEach(it, items) cJSON_AddItemToArray(all, sb_view(it));
        cJSON_Delete(page);
        page = NULL;
        got += n;
        if (n < want)
            break;
    }
    if (a->names || a->ids) {
        const cJSON *it;
        struct buf b = BUF_INIT;
        cJSON_ArrayForEach(it, all)
        {
            if (a->all_ws && a->names) {
                buf_puts(&b, cli_jstr(it, "workspace"));
                buf_putc(&b, '/');
            }
            buf_puts(&b, cli_jstr(it, a->ids ? "id" : "name"));
            buf_putc(&b, '\n');
        }
        fwrite(b.data ? b.data : "", 1, b.len, stdout);
        buf_fini(&b);
    } else if (c->output != CLI_OUT_TABLE) {
        cli_print_data(c, all);
    } else if (got == 0) {
        printf("No sandboxes found.\n");
    } else {
        /* WORKSPACE first with --all-workspaces, as the reference. */
        size_t o = a->all_ws ? 0 : 1;
        struct cli_table *tb = cli_table_new(4 - o, hdr + o);
        struct buf b = BUF_INIT;
        const cJSON *it;
        cJSON_ArrayForEach(it, all)
        {
            const char *row[] = { cli_jstr(it, "workspace"), cli_jstr(it, "name"),
                                  cli_jstr(it, "created_at"), cli_jstr(it, "phase") };
            cli_table_add(tb, row + o);
            cli_table_color_last(tb, 3 - o, phase_color(row[3]));
        }
        cli_table_render(tb, cli_color_wanted(1), &b);
        fwrite(b.data, 1, b.len, stdout);
        buf_fini(&b);
        cli_table_free(tb);
        if (a->offset + got < total)
            fprintf(stderr, "(%ld of %ld shown; see --limit and --offset)\n", got, total);
    }
out:
    cJSON_Delete(all);
    return rc;
}

/* ------------------------------------------------------------------ get */

static void
print_sandbox(const struct cli_ctx *c, const cJSON *v)
{
    const cJSON *x;
    const char *phase = cli_jstr(v, "phase"), *col = phase_color(phase);
    bool color = cli_color_wanted(1);

    (void)c;
    printf("%sSandbox:%s\n", color ? "\033[1m" : "", color ? "\033[0m" : "");
    printf("  Id:               %s\n", cli_jstr(v, "id"));
    printf("  Name:             %s\n", cli_jstr(v, "name"));
    printf("  Workspace:        %s\n", cli_jstr(v, "workspace"));
    if (color && col)
        printf("  Phase:            \033[%sm%s\033[0m\n", col, phase);
    else
        printf("  Phase:            %s\n", phase);
    if (*cli_jstr(v, "reason"))
        printf("  Reason:           %s: %s\n", cli_jstr(v, "reason"), cli_jstr(v, "message"));
    printf("  Created:          %s\n", cli_jstr(v, "created_at"));
    x = cJSON_GetObjectItemCaseSensitive(v, "resource_version");
    printf("  Resource version: %.0f\n", cJSON_IsNumber(x) ? x->valuedouble : 0);
    x = cJSON_GetObjectItemCaseSensitive(v, "supervisor_connected");
    if (x) {
        const cJSON *pid = cJSON_GetObjectItemCaseSensitive(v, "supervisor_pid");
        if (cJSON_IsTrue(x))
            printf("  Supervisor:       connected (pid %.0f)\n",
                   cJSON_IsNumber(pid) ? pid->valuedouble : 0);
        else
            printf("  Supervisor:       not connected\n");
    }
    printf("  Command:          ");
    {
        bool first = true;
        cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(v, "command"))
        {
            printf("%s%s", first ? "" : " ", cJSON_IsString(x) ? x->valuestring : "?");
            first = false;
        }
        if (first)
            fputs("- (idle: commands run through exec)", stdout);
    }
    putchar('\n');
    printf("  Labels:           ");
    x = cJSON_GetObjectItemCaseSensitive(v, "labels");
    if (!cJSON_GetArraySize(x))
        printf("-");
    for (const cJSON *l = x ? x->child : NULL; l; l = l->next)
        printf("%s%s=%s", l == x->child ? "" : ",", l->string,
               cJSON_IsString(l) ? l->valuestring : "");
    putchar('\n');
    x = cJSON_GetObjectItemCaseSensitive(v, "revision");
    printf("  Policy source:    %s\n", cli_jstr(v, "policy_source"));
    if (cJSON_IsNumber(x) && x->valuedouble > 0) {
        const char *text = cli_jstr(v, "policy");
        printf("  Revision:         %.0f (%s)\n", x->valuedouble, cli_jstr(v, "policy_status"));
        printf("\n%sPolicy:%s\n", color ? "\033[1m" : "", color ? "\033[0m" : "");
        while (*text) {
            size_t n = strcspn(text, "\n");
            printf("  %.*s\n", (int)n, text);
            text += n + (text[n] == '\n');
        }
    }
}

/* NAME, else the last used sandbox (saying so), else an error. */
static int
name_or_last(struct cli_ctx *c, struct sb_args *a, char *out, size_t size)
{
    if (a->npos > 1)
        applet_usage_error(c->prog, "unexpected argument '%s'", a->pos[1]);
    if (a->npos == 1)
        return buf_copy_fixed(out, size, a->pos[0]) < 0
                   ? cli_fail(c, CLI_EXIT_USAGE, NULL, "sandbox name too long")
                   : 0;
    if (c->adhoc || cli_last_sandbox_get(c->cfg, c->gw.name, c->workspace, out, size) < 0)
        return cli_fail(c, CLI_EXIT_USAGE, "name one: openshell sandbox get NAME",
                        "no sandbox named and no last used sandbox");
    fprintf(stderr, "\u2192 Using sandbox '%s' (last used)\n", out);
    return 0;
}

static int
sb_get(struct cli_ctx *c, struct sb_args *a)
{
    char name[256];
    cJSON *sb = NULL, *v;
    int rc;

    if ((rc = cli_connect(c, true)) != 0 || (rc = name_or_last(c, a, name, sizeof(name))) != 0)
        return rc;
    if ((rc = get_one(c, name, &sb)) != 0)
        return rc;
    v = sb_view(sb);
    {
        /* The reference's get adds where the policy comes from, its
         * revision and its text. */
        char *path = cli_sb_path(c, name, "/policy");
        cJSON *pol = NULL;
        int status;

        rc = cli_call(c, "GET", path, NULL, NULL, 0, &status, &pol);
        free(path);
        if (rc) {
            cJSON_Delete(v);
            cJSON_Delete(sb);
            return rc;
        }
        if (status == 200) {
            const cJSON *ver = cJSON_GetObjectItemCaseSensitive(pol, "version");
            cJSON_AddStringToObject(v, "policy_source", "sandbox");
            cJSON_AddNumberToObject(v, "revision", cJSON_IsNumber(ver) ? ver->valuedouble : 0);
            cJSON_AddStringToObject(v, "policy_status", cli_jstr(pol, "status"));
            cJSON_AddStringToObject(v, "policy", cli_jstr(pol, "policy"));
        } else {
            const cJSON *sp = cli_jget(sb, "spec.policy");
            cJSON_AddStringToObject(v, "policy_source", sp ? "spec" : "default");
            cJSON_AddNumberToObject(v, "revision", 0);
            /* spec.policy is the YAML's structure as JSON */
            cJSON_AddItemToObject(v, "policy", sp ? cJSON_Duplicate(sp, true) : cJSON_CreateNull());
        }
        cJSON_Delete(pol);
    }
    if (c->output != CLI_OUT_TABLE)
        cli_print_data(c, v);
    else
        print_sandbox(c, v);
    cJSON_Delete(v);
    cJSON_Delete(sb);
    return 0;
}

/* ------------------------------------------------------------------ delete */

static int
delete_one(struct cli_ctx *c, const char *name)
{
    char *path = cli_sb_path(c, name, "");
    cJSON *j = NULL;
    int status, rc = cli_call(c, "DELETE", path, NULL, NULL, 0, &status, &j);

    free(path);
    if (rc == 0) {
        if (status == 200 || status == 202) {
            cli_ok(c, "Deleted sandbox %s", name);
            if (!c->adhoc)
                cli_last_sandbox_clear(c->cfg, c->gw.name, c->workspace, name);
        } else if (status == 404) {
            cli_warn(c, "Sandbox %s not found", name);
            rc = CLI_EXIT_FAIL;
        } else {
            rc = cli_api_fail(c, status, j, NULL);
        }
    }
    cJSON_Delete(j);
    return rc;
}

static int
sb_delete(struct cli_ctx *c, struct sb_args *a)
{
    int rc, worst = 0;

    if (a->all == (a->npos > 0))
        applet_usage_error(c->prog, a->all ? "--all takes no names" : "expected NAME... or --all");
    if ((rc = cli_connect(c, false)) != 0)
        return rc;
    if (a->all) {
        /* Collect first (deleting while paging would shift the offsets). */
        cJSON *page = NULL, *names = cJSON_CreateArray();
        const cJSON *it;
        long off = 0;
        for (;;) {
            long n;
            if ((rc = list_page(c, NULL, false, SB_PAGE, off, &page)) != 0) {
                cJSON_Delete(names);
                return rc;
            }
            n = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(page, "items"));
            cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(page, "items"))
                cJSON_AddItemToArray(names, cJSON_CreateString(cli_jstr(it, "metadata.name")));
            cJSON_Delete(page);
            off += n;
            if (n < SB_PAGE)
                break;
        }
        if (!cJSON_GetArraySize(names))
            fprintf(stderr, "No sandboxes to delete.\n");
        cJSON_ArrayForEach(it, names)
        {
            rc = delete_one(c, it->valuestring);
            if (rc == CLI_EXIT_UNREACHABLE) {
                cJSON_Delete(names);
                return rc;
            }
            if (rc > worst)
                worst = rc;
        }
        cJSON_Delete(names);
        return worst;
    }
    for (int i = 0; i < a->npos; i++) {
        rc = delete_one(c, a->pos[i]);
        if (rc == CLI_EXIT_UNREACHABLE)
            return rc;
        if (rc > worst)
            worst = rc;
    }
    return worst;
}

/* ------------------------------------------------------------------ create */

/* Validate FILE locally: its FILE:LINE:COL diagnostics reach the user
 * before anything is created. The text into OUT. */
static int
check_policy(const struct cli_ctx *c, const char *file, struct buf *out)
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
            rc = cli_fail(c, CLI_EXIT_FAIL, hint, "policy %s: %zu error%s", file, d.errors,
                          d.errors == 1 ? "" : "s");
        else
            rc = cli_fail(c, CLI_EXIT_FAIL, hint, "%s", err_str(&e, rc));
        free(hint);
    } else {
        rc = read_file(file, 256 * 1024, out, &e) < 0
                 ? cli_fail(c, CLI_EXIT_FAIL, NULL, "%s", e.msg)
                 : 0;
    }
    policy_unref(p);
    policy_diags_fini(&d);
    return rc;
}

/* Progress while waiting: a spinner line on a terminal, timestamped lines
 * otherwise (one per phase change), one sentence with -o json. */
struct progress {
    bool tty, json;
    uint64_t t0;
    unsigned tick;
    char last[128];
};

static void
progress_step(struct progress *p, const char *phase, const char *reason)
{
    static const char *const spin[] = { "\u280b", "\u2819", "\u2839", "\u2838", "\u283c",
                                        "\u2834", "\u2826", "\u2827", "\u2807", "\u280f" };
    double t = (double)(cli_now_ms() - p->t0) / 1000;
    char now[128];

    snprintf(now, sizeof(now), "%s%s%s", phase, *reason ? ": " : "", reason);
    if (p->tty) {
        fprintf(stderr, "\r\033[K%s %s sandbox... (%s, %.1fs)", spin[p->tick++ % 10],
                !strcmp(phase, "provisioning") ? "Requesting" : "Starting", now, t);
    } else if (!p->json && strcmp(now, p->last) != 0) {
        fprintf(stderr, "  [%.1fs] Phase %s\n", t, now);
    }
    buf_copy_fixed(p->last, sizeof(p->last), now);
}

static void
progress_clear(struct progress *p)
{
    if (p->tty)
        fputs("\r\033[K", stderr);
}

/* Is the sandbox's supervisor session up? True when the gateway does not
 * say (older gateways): exec then retries its 503 instead. */
static bool
supervisor_connected(const cJSON *sb)
{
    const cJSON *sv = cli_jget(sb, "status.supervisor");

    if (!cJSON_IsObject(sv))
        return true;
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(sv, "connected"));
}

/* Poll until ready (and, with NEED_SESSION, the supervisor connected),
 * error, exited, record-only or the timeout. */
/* Changes pushed by the watch stream wake the wait at once; without one
 * (an older gateway) it polls. */
struct watch {
    struct cli_stream s;
    struct loop_timer *tick;
    bool changed, ticked, on;
};

static void
watch_data(struct cli_stream *s, const uint8_t *p, size_t n)
{
    struct watch *w = s->arg;

    (void)p;
    (void)n;
    w->changed = true;
    loop_stop(s->c->loop);
}

static void
watch_tick(void *arg)
{
    struct watch *w = arg;

    w->ticked = true;
    loop_stop(w->s.c->loop);
}

/* Until the sandbox changes, or 250 ms (50 ms polling without a watch). */
static void
watch_wait(struct watch *w)
{
    if (!w->on || w->s.closed || (w->s.status && w->s.status != 200)) {
        struct timespec ts = { 0, 50 * 1000000L };
        nanosleep(&ts, NULL);
        return;
    }
    w->changed = w->ticked = false;
    loop_timer_start(w->tick, 250, false);
    while (!w->changed && !w->ticked && !w->s.closed && !cli_interrupted)
        cli_stream_run(&w->s);
    loop_timer_stop(w->tick);
}

static int wait_ready_loop(struct cli_ctx *c, const char *name, long timeout_s, bool need_session,
                           cJSON **last, struct watch *w);

static int
wait_ready(struct cli_ctx *c, const char *name, long timeout_s, bool need_session, cJSON **last)
{
    struct watch w;
    char *path = cli_sb_path(c, name, "/watch");
    int rc;

    memset(&w, 0, sizeof(w));
    w.s.arg = &w;
    w.s.on_data = watch_data;
    w.tick = loop_timer_new(c->loop, watch_tick, &w);
    w.on = cli_stream_open(&w.s, c, "GET", path, NULL, NULL, 0, false) == 0;
    free(path);
    rc = wait_ready_loop(c, name, timeout_s, need_session, last, &w);
    cli_stream_fini(&w.s);
    loop_timer_free(w.tick);
    return rc;
}

static int
wait_ready_loop(struct cli_ctx *c, const char *name, long timeout_s, bool need_session,
                cJSON **last, struct watch *w)
{
    struct progress pg = { .tty = isatty(2) == 1 && c->output == CLI_OUT_TABLE,
                           .json = c->output != CLI_OUT_TABLE,
                           .t0 = cli_now_ms() };
    uint64_t t0 = pg.t0;
    bool allocated = false;

    if (pg.json)
        fprintf(stderr, "Provisioning sandbox (structured output on stdout)...\n");
    else if (!pg.tty)
        fprintf(stderr, "  [0.0s] Requesting sandbox...\n");
    for (;;) {
        cJSON *sb = NULL;
        const cJSON *cond;
        const char *phase;
        int rc;

        if (cli_interrupted) {
            progress_clear(&pg);
            return cli_fail(c, 130, NULL, "interrupted while sandbox '%s' was provisioning", name);
        }
        rc = get_one(c, name, &sb);

        if (rc) {
            progress_clear(&pg);
            return rc;
        }
        cJSON_Delete(*last);
        *last = sb;
        phase = cli_jstr(sb, "status.phase");
        cond = first_condition(sb);
        if (!allocated && strcmp(phase, "provisioning") != 0 && strcmp(phase, "unknown") != 0 &&
            *phase) {
            /* The reference's checklist: one line per completed step. */
            allocated = true;
            progress_clear(&pg);
            if (pg.tty)
                cli_ok(c, "Sandbox allocated (%.1fs)", (double)(cli_now_ms() - t0) / 1000);
        }
        progress_step(&pg, phase,
                      cond ? cli_jstr(cond, "reason")
                      : !strcmp(phase, "ready") && !supervisor_connected(sb)
                          ? "supervisor connecting"
                          : "");
        if (!strcmp(phase, "ready") && (!need_session || supervisor_connected(sb))) {
            progress_clear(&pg);
            cli_ok(c, "Sandbox ready (%.1fs)", (double)(cli_now_ms() - t0) / 1000);
            return 0;
        }
        if (!strcmp(phase, "exited")) {
            const cJSON *x = cli_jget(sb, "status.exit_code");
            progress_clear(&pg);
            if (need_session)
                return cli_fail(c, CLI_EXIT_FAIL, "see: openshell sandbox get NAME",
                                "sandbox '%s' exited (status %.0f) before it was ready", name,
                                cJSON_IsNumber(x) ? x->valuedouble : -1);
            cli_warn(c, "sandbox '%s': its main process already exited (status %.0f)", name,
                     cJSON_IsNumber(x) ? x->valuedouble : -1);
            return 0;
        }
        if (!strcmp(phase, "error")) {
            progress_clear(&pg);
            return cli_fail(c, CLI_EXIT_FAIL, "see: openshell sandbox get NAME",
                            "sandbox entered error phase while provisioning: %s: %s",
                            cli_jstr(cond, "reason"), cli_jstr(cond, "message"));
        }
        if (!strcmp(cli_jstr(cond, "reason"), "NoComputeDriver")) {
            progress_clear(&pg);
            if (need_session)
                return cli_fail(c, CLI_EXIT_FAIL,
                                "start the gateway with a compute driver (gateway start uses the "
                                "local one), or pass --detach",
                                "gateway '%s' has no compute driver: nothing to attach to in "
                                "sandbox '%s' (kept as a record unless --no-keep)",
                                c->gw.name, name);
            cli_warn(c,
                     "gateway '%s' has no compute driver yet: sandbox '%s' is a record only "
                     "(phase %s)",
                     c->gw.name, name, phase);
            return 0;
        }
        if (cli_now_ms() - t0 >= (uint64_t)timeout_s * 1000) {
            progress_clear(&pg);
            return cli_fail(c, CLI_EXIT_FAIL, "raise --timeout or OPENSHELL_PROVISION_TIMEOUT",
                            "sandbox provisioning timed out after %lds. Last reported status: "
                            "%s%s%s%s",
                            timeout_s, phase, cond ? ": " : "",
                            cond ? cli_jstr(cond, "reason") : "",
                            !strcmp(phase, "ready") ? " (supervisor not connected)" : "");
        }
        fflush(stderr);
        watch_wait(w);
    }
}

static int
sb_create(struct cli_ctx *c, struct sb_args *a)
{
    struct buf policy = BUF_INIT;
    const char *pfile = a->policy;
    cJSON *req = cJSON_CreateObject(), *spec, *ans = NULL, *last = NULL;
    char *path = NULL, name[256] = "";
    bool attach, created = false;
    int status, rc;

    if (a->detach && a->no_keep)
        applet_usage_error(c->prog, "--no-keep goes with an attached command, not --detach");
    if (a->tty && a->no_tty)
        applet_usage_error(c->prog, "--tty and --no-tty exclude each other");
    /* Attach to CMD unless --detach; without CMD, to a login shell when
     * stdin is a terminal (piped or CI: implicit detach, as the
     * reference). */
    attach = !a->detach && (a->npos > 0 || a->no_keep ||
                            (isatty(0) == 1 && isatty(1) == 1 && c->output == CLI_OUT_TABLE));
    if (attach && c->output != CLI_OUT_TABLE)
        applet_usage_error(c->prog,
                           "-o %s goes with --detach (an attached command owns the "
                           "output)",
                           c->output == CLI_OUT_JSON ? "json" : "yaml");
    if (!pfile && getenv("OPENSHELL_SANDBOX_POLICY") && *getenv("OPENSHELL_SANDBOX_POLICY"))
        pfile = getenv("OPENSHELL_SANDBOX_POLICY");
    if (pfile && (rc = check_policy(c, pfile, &policy)) != 0)
        goto out;
    if ((rc = cli_connect(c, true)) != 0)
        goto out;
    if (a->no_keep)
        cli_catch_signals(c, true); /* Ctrl-C from here on: the sandbox is still deleted */
    if (a->name)
        cJSON_AddStringToObject(req, "name", a->name);
    if (a->nlabels)
        cJSON_AddItemToObject(req, "labels",
                              cli_kv_into(cJSON_CreateObject(), a->labels, a->nlabels));
    spec = cJSON_AddObjectToObject(req, "spec");
    if (a->npos && !attach) {
        /* --detach: CMD is the sandbox's main process. Attached, the
         * sandbox is idle and CMD runs through exec. */
        cJSON *cmd = cJSON_AddArrayToObject(spec, "command");
        for (int i = 0; i < a->npos; i++)
            cJSON_AddItemToArray(cmd, cJSON_CreateString(a->pos[i]));
        if (a->tty)
            cJSON_AddBoolToObject(spec, "tty", true);
    }
    {
        /* --provider names, plus the one the command implies (claude,
         * codex, gh, glab), as the reference infers them. */
        cJSON *pv = cJSON_CreateArray();
        for (size_t i = 0; i < a->nproviders; i++)
            cJSON_AddItemToArray(pv, cJSON_CreateString(a->providers[i]));
        if ((rc = cli_provider_infer(c, a->pos, a->npos, a->auto_providers, pv)) != 0) {
            cJSON_Delete(pv);
            goto out;
        }
        if (cJSON_GetArraySize(pv))
            cJSON_AddItemToObject(spec, "providers", pv);
        else
            cJSON_Delete(pv);
    }
    if (policy.len) {
        /* The sandbox's own policy (spec.policy, the YAML's structure as
         * JSON): its supervisor starts with it, filesystem and process
         * sections included, which a revision set after the create could
         * not change any more. The gateway validates it again (the engine
         * is the same); later changes are revisions (policy set/update). */
        struct err e;
        cJSON *pj = policy_yaml_to_json(policy.data, policy.len, &e);
        if (!pj) {
            rc = cli_fail(c, CLI_EXIT_FAIL, NULL, "policy %s: %s", pfile, e.msg);
            goto out;
        }
        cJSON_AddItemToObject(spec, "policy", pj);
    }
    if (a->from) /* what the sandbox starts from: the driver resolves it */
        cJSON_AddStringToObject(cJSON_AddObjectToObject(spec, "template"), "image", a->from);
    if (a->nenvs)
        cJSON_AddItemToObject(spec, "environment",
                              cli_kv_into(cJSON_CreateObject(), a->envs, a->nenvs));
    path = cli_ws_path(c, "/sandboxes");
    if ((rc = cli_call_json(c, "POST", path, req, &status, &ans)) != 0)
        goto out;
    if (status == 409) {
        char *hint = xasprintf("delete it first with: openshell sandbox delete %s, or use a "
                               "different --name",
                               a->name ? a->name : "NAME");
        rc = cli_fail(c, CLI_EXIT_FAIL, hint, "sandbox '%s' already exists in workspace '%s'",
                      a->name ? a->name : "?", c->workspace);
        free(hint);
        goto out;
    }
    if (status != 201) {
        rc = cli_api_fail(c, status, ans, NULL);
        goto out;
    }
    created = true;
    buf_copy_fixed(name, sizeof(name), cli_jstr(ans, "metadata.name"));
    fprintf(stderr, "\nCreated sandbox: %s%s%s\n\n", c->color ? "\033[1;36m" : "", name,
            c->color ? "\033[0m" : "");
    if (!c->adhoc && !a->no_keep)
        cli_last_sandbox_set(c->cfg, c->gw.name, c->workspace, name, NULL);
    if ((rc = wait_ready(c, name, a->timeout_s, attach || a->nuploads, &last)) != 0)
        goto out;
    for (size_t i = 0; i < a->nuploads; i++) {
        /* --upload LOCAL[:DEST] (DEST default /sandbox), before the command */
        const char *up = a->uploads[i], *colon = strrchr(up, ':');
        char *local = colon ? xstrndup(up, (size_t)(colon - up)) : xstrdup(up);
        rc = cli_upload(c, name, local, colon && colon[1] ? colon + 1 : "/sandbox");
        free(local);
        if (rc)
            goto out;
    }
    if (!attach) {
        if (c->output != CLI_OUT_TABLE) {
            cJSON *v = sb_view(last);
            cli_print_data(c, v);
            cJSON_Delete(v);
        }
        goto out;
    }
    {
        static char *shell[] = {
            "/bin/sh", "-c", "if [ -x /bin/bash ]; then exec /bin/bash -l; fi; exec /bin/sh -l"
        };
        struct cli_exec_opts o;
        memset(&o, 0, sizeof(o));
        o.argv = a->npos ? a->pos : shell;
        o.argc = a->npos ? a->npos : 3;
        o.tty = a->tty || (!a->no_tty && isatty(0) == 1 && isatty(1) == 1);
        o.stdin_on = o.tty || isatty(0) != 1;
        o.connect_wait_ms = a->timeout_s * 1000;
        fflush(stdout);
        rc = cli_exec(c, name, &o);
    }
out:
    if (created && a->no_keep) {
        /* --no-keep: the sandbox goes with the session, also on failure. */
        int drc = delete_one(c, name);
        if (rc == 0 && drc != 0)
            rc = drc;
    }
    cJSON_Delete(req);
    cJSON_Delete(ans);
    cJSON_Delete(last);
    buf_fini(&policy);
    free(path);
    return rc;
}

int
cli_sandbox(int argc, char **argv)
{
    static const char *const subs[] = { "create", "list", "get", "delete" };
    struct cli_ctx c;
    struct sb_args a;
    char prog[64];
    int rc;

    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        fputs(sandbox_usage, stdout);
        return 0;
    }
    if ((rc = cli_sandbox_io(argc - 1, argv + 1)) >= 0)
        return rc;
    if (!strcmp(argv[1], "provider"))
        return cli_sandbox_provider(argc - 1, argv + 1);
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        if (strcmp(argv[1], subs[i]) != 0)
            continue;
        snprintf(prog, sizeof(prog), "openshell sandbox %s", subs[i]);
        cli_ctx_init(&c, prog);
        parse(&c, argc - 1, argv + 1, &a);
        switch (i) {
        case 0: rc = sb_create(&c, &a); break;
        case 1: rc = sb_list(&c, &a); break;
        case 2: rc = sb_get(&c, &a); break;
        default: rc = sb_delete(&c, &a); break;
        }
        cli_ctx_fini(&c);
        return rc;
    }
    applet_usage_error("openshell sandbox", "unknown command '%s'", argv[1]);
}
