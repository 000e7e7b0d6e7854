/*
 * gateway.c: "openshell gateway start|stop|status|add|select|list|remove|info"
 * (doc/cli.md). Registrations live in the XDG config directory
 * (include/cli_config.h); start/stop manage a local openshell-gateway
 * daemon; info asks the selected gateway.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../applets.h"
#include "cli.h"
#include "cli_out.h"
#include "client.h"
#include "xfuncs.h"

static const char gateway_usage[] =
    "Usage: openshell gateway COMMAND [OPTIONS]   (alias: gw)\n"
    "\n"
    "Commands:\n"
    "  start [--name N] [--state-dir D] [--listen ADDR:PORT|none]\n"
    "        [--compute-driver local|none]\n"
    "                      start a local gateway daemon (idempotent), register and\n"
    "                      select it, wait until it answers (the compute driver:\n"
    "                      OPENSHELL_COMPUTE_DRIVER, else the gateway's default)\n"
    "  stop [NAME]         stop a local gateway started by 'gateway start'\n"
    "  status [NAME]       is it reachable, which version, where it lives\n"
    "  add ENDPOINT [--name N]\n"
    "                      register a gateway (https://HOST:PORT, http://..., or\n"
    "                      unix:///PATH/gateway.sock) and select it\n"
    "  select [NAME]       make NAME the active gateway (no NAME: list them)\n"
    "  list                registered gateways; the active one is marked '*'\n"
    "  remove [NAME]       forget a registration (does not stop the gateway)\n"
    "  info [NAME]         the gateway's version, state and compute drivers\n"
    "\n"
    "Options:\n" CLI_COMMON_HELP "\n"
    "Examples:\n"
    "  openshell gateway start\n"
    "  openshell gateway add unix:///srv/openshell/gateway.sock --name shared\n"
    "  openshell gateway select shared\n"
    "  openshell gateway list -o json\n"
    "\n"
    "Selection: -g NAME, else OPENSHELL_GATEWAY, else the active gateway.\n"
    "Exit status: 0 ok, 1 failed, 2 usage error, 3 no gateway reachable.\n";

enum { OPT_NAME = 0x100, OPT_STATE_DIR, OPT_LISTEN, OPT_NAMES, OPT_LOCAL, OPT_DRIVER };

/* Parse SUBCOMMAND's options (argv[0] is its name); NAME gets the one
 * optional positional argument, EXTRA options go to the caller via the
 * out-parameters. */
struct gw_args {
    const char *name_opt, *state_dir, *listen, *pos;
    bool names, local;
};

static void
parse(struct cli_ctx *c, int argc, char **argv, struct gw_args *a)
{
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        { "name", required_argument, NULL, OPT_NAME },
        { "state-dir", required_argument, NULL, OPT_STATE_DIR },
        { "listen", required_argument, NULL, OPT_LISTEN },
        { "names", no_argument, NULL, OPT_NAMES },
        { "local", no_argument, NULL, OPT_LOCAL },
        { "compute-driver", required_argument, NULL, OPT_DRIVER },
        { NULL, 0, NULL, 0 },
    };
    int opt;

    memset(a, 0, sizeof(*a));
    optind = 0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, CLI_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
        if (cli_common_opt(c, opt, optarg))
            continue;
        switch (opt) {
        case 'h': fputs(gateway_usage, stdout); exit(0);
        case OPT_NAME:
            if (!cli_gw_name_ok(optarg))
                applet_usage_error(c->prog, "--name '%s': use letters, digits, '.', '_', '-'",
                                   optarg);
            a->name_opt = optarg;
            break;
        case OPT_STATE_DIR:
            if (optarg[0] != '/')
                applet_usage_error(c->prog, "--state-dir wants an absolute path");
            a->state_dir = optarg;
            break;
        case OPT_LISTEN: a->listen = optarg; break;
        case OPT_NAMES: a->names = true; break;
        case OPT_LOCAL: a->local = true; break;
        case OPT_DRIVER:
            if (strcmp(optarg, "local") != 0 && strcmp(optarg, "none") != 0)
                applet_usage_error(c->prog, "--compute-driver '%s': expected local or none",
                                   optarg);
            setenv("OPENSHELL_COMPUTE_DRIVER", optarg, 1);
            break;
        default: applet_bad_option(c->prog, argv, optind, optopt);
        }
    }
    if (optind < argc)
        a->pos = argv[optind++];
    if (optind < argc)
        applet_usage_error(c->prog, "unexpected argument '%s'", argv[optind]);
}

/* The gateway a command is about: POS, else the usual selection. */
static int
pick(struct cli_ctx *c, const char *pos)
{
    if (pos) {
        if (!cli_gw_name_ok(pos))
            return cli_fail(c, CLI_EXIT_USAGE, NULL, "'%s' is not a gateway name", pos);
        c->gateway_flag = pos;
    }
    return cli_select(c, false);
}

static int
gw_start(struct cli_ctx *c, const struct gw_args *a)
{
    if (a->pos)
        applet_usage_error(c->prog, "unexpected argument '%s' (use --name)", a->pos);
    return cli_gateway_start_local(c, a->name_opt ? a->name_opt : "openshell", a->state_dir,
                                   a->listen, false);
}

static int
gw_stop(struct cli_ctx *c, const struct gw_args *a)
{
    int rc = pick(c, a->pos);

    if (rc)
        return rc;
    if (!c->gw.state_dir[0])
        return cli_fail(c, CLI_EXIT_FAIL, "stop it where it runs",
                        "gateway '%s' was not started by 'openshell gateway start'", c->gw.name);
    return cli_gateway_stop_local(c, &c->gw);
}

/* GET /v1/gateway on the selected gateway; *INFO on success. */
static int
fetch_info(struct cli_ctx *c, cJSON **info, char *why, size_t size)
{
    const char *sock = c->gw.unix_socket[0] ? c->gw.unix_socket : NULL;
    int status, rc;

    *info = NULL;
    if (!sock && !strncmp(c->gw.endpoint, "unix://", 7))
        sock = c->gw.endpoint + 7;
    if (!sock && strncmp(c->gw.endpoint, "https://", 8) != 0) {
        buf_copy_fixed(why, size, "no unix socket or https endpoint to reach it by");
        return -1;
    }
    if (sock && !cli_socket_healthy(sock)) {
        buf_copy_fixed(why, size, "not reachable");
        return -1;
    }
    if ((rc = cli_connect(c, false)) != 0) {
        buf_copy_fixed(why, size, "not reachable");
        return -1;
    }
    if ((rc = cli_call(c, "GET", "/v1/gateway", NULL, NULL, 0, &status, info)) != 0)
        return -1;
    if (status != 200) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(*info, "error"), "message");
        buf_copy_fixed(why, size, cJSON_IsString(m) ? m->valuestring : "error");
        cJSON_Delete(*info);
        *info = NULL;
        return -1;
    }
    return 0;
}

static const char *
jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int
gw_status(struct cli_ctx *c, const struct gw_args *a, bool info_mode)
{
    char why[256] = "";
    cJSON *info = NULL, *out;
    long pid;
    int rc = pick(c, a->pos);

    if (rc)
        return rc;
    pid = c->gw.state_dir[0] ? cli_gateway_pid(c->gw.state_dir) : 0;
    fetch_info(c, &info, why, sizeof(why));
    if (info_mode && !info) {
        cJSON_Delete(info);
        return cli_fail(c, CLI_EXIT_UNREACHABLE,
                        c->gw.state_dir[0] ? "start it with: openshell gateway start" : NULL,
                        "gateway '%s': %s", c->gw.name, why);
    }
    out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "gateway", c->gw.name);
    cJSON_AddStringToObject(out, "server", c->gw.endpoint);
    cJSON_AddStringToObject(out, "auth", c->gw.auth);
    cJSON_AddStringToObject(out, "status", info ? "connected" : "disconnected");
    if (info) {
        /* /v1/gateway needs an authorised caller: answering it proves the
         * socket's peer credentials were accepted. */
        cJSON *auth = cJSON_AddObjectToObject(out, "authentication");
        cJSON_AddStringToObject(auth, "status", "authenticated");
        cJSON_AddStringToObject(auth, "mode", c->tls ? "mtls" : "unix_peer_credentials");
    }
    if (info) {
        cJSON *drivers = cJSON_GetObjectItemCaseSensitive(info, "compute_drivers");
        cJSON_AddStringToObject(out, "version", jstr(info, "version") ? jstr(info, "version") : "");
        if (jstr(info, "api"))
            cJSON_AddStringToObject(out, "api", jstr(info, "api"));
        if (jstr(info, "state_dir"))
            cJSON_AddStringToObject(out, "state_dir", jstr(info, "state_dir"));
        cJSON_AddItemToObject(out, "compute_drivers",
                              drivers ? cJSON_Duplicate(drivers, true) : cJSON_CreateArray());
    } else {
        cJSON_AddStringToObject(out, "error", why);
    }
    if (c->gw.unix_socket[0])
        cJSON_AddStringToObject(out, "unix_socket", c->gw.unix_socket);
    if (c->gw.state_dir[0]) {
        cJSON_AddBoolToObject(out, "local", true);
        if (pid > 0)
            cJSON_AddNumberToObject(out, "pid", (double)pid);
    }
    if (c->output != CLI_OUT_TABLE) {
        cli_print_data(c, out);
    } else {
        const cJSON *v;
        printf("Gateway:   %s\n", c->gw.name);
        printf("Server:    %s\n", c->gw.endpoint);
        if (info)
            printf("Status:    %sConnected%s\n", c->color ? "\033[32m" : "",
                   c->color ? "\033[0m" : "");
        else
            printf("Status:    %sDisconnected%s (%s)\n", c->color ? "\033[31m" : "",
                   c->color ? "\033[0m" : "", why);
        if (info)
            printf("Auth:      Authenticated (%s)\n",
                   c->tls ? "mTLS transport" : "local peer credentials");
        if ((v = cJSON_GetObjectItemCaseSensitive(out, "version")))
            printf("Version:   %s\n", v->valuestring);
        if (c->gw.unix_socket[0])
            printf("Socket:    %s\n", c->gw.unix_socket);
        if (c->gw.state_dir[0])
            printf("State:     %s\n", c->gw.state_dir);
        if (pid > 0)
            printf("Pid:       %ld\n", pid);
        if (info_mode) {
            const cJSON *d, *drivers = cJSON_GetObjectItemCaseSensitive(info, "compute_drivers");
            printf("API:       %s\n", jstr(info, "api") ? jstr(info, "api") : "-");
            printf("Drivers:   %s", cJSON_GetArraySize(drivers) ? "" : "none (records only)");
            cJSON_ArrayForEach(d, drivers)
            {
                printf("%s%s", d == drivers->child ? "" : ", ",
                       cJSON_IsString(d) ? d->valuestring
                       : jstr(d, "name") ? jstr(d, "name")
                                         : "?");
            }
            putchar('\n');
        }
    }
    rc = info ? 0 : CLI_EXIT_UNREACHABLE;
    cJSON_Delete(out);
    cJSON_Delete(info);
    return rc;
}

/* The client bundle for a local https gateway G, unless G's mtls/ has
 * one: OPENSHELL_LOCAL_TLS_DIR, else the state directory of a local gateway
 * registered with the same endpoint, else the default local gateway's
 * (each DIR/ca.crt, DIR/client/tls.{crt,key}, as the gateway writes them).
 * REQUIRED (--local): none found is an error; else a warning. */
static int
import_bundle(struct cli_ctx *c, const struct cli_gateway *g, bool required)
{
    const char *env = getenv("OPENSHELL_LOCAL_TLS_DIR");
    struct cli_gateway *all = NULL;
    char *have = xasprintf("%s/gateways/%s/mtls/ca.crt", c->cfg, g->name);
    char *cands[3] = { NULL, NULL, NULL };
    size_t n = 0, nc = 0;
    struct err e;
    int rc = 0;

    if (access(have, R_OK) == 0)
        goto out;
    if (env && *env)
        cands[nc++] = xstrdup(env);
    if (cli_gw_list(c->cfg, &all, &n, NULL) == 0)
        for (size_t i = 0; i < n && nc < 2; i++)
            if (all[i].state_dir[0] && !strcmp(all[i].endpoint, g->endpoint))
                cands[nc++] = xasprintf("%s/tls", all[i].state_dir);
    free(all);
    {
        char *sd = cli_state_dir("openshell");
        if (sd)
            cands[nc++] = xasprintf("%s/tls", sd);
        free(sd);
    }
    for (size_t i = 0; i < nc; i++) {
        char *ca = xasprintf("%s/ca.crt", cands[i]),
             *crt = xasprintf("%s/client/tls.crt", cands[i]),
             *key = xasprintf("%s/client/tls.key", cands[i]);
        bool there = access(ca, R_OK) == 0;
        if (there && cli_mtls_import(c->cfg, g->name, ca, crt, key, &e) < 0)
            rc = cli_fail(c, CLI_EXIT_FAIL, NULL, "importing the client bundle from %s: %s",
                          cands[i], e.msg);
        else if (there)
            fprintf(stderr, "  Imported the client TLS bundle from %s\n", cands[i]);
        free(ca);
        free(crt);
        free(key);
        if (there)
            goto out;
    }
    if (required)
        rc = cli_fail(c, CLI_EXIT_FAIL,
                      "start the local gateway first (openshell gateway start) so it provisions "
                      "client TLS material, or set OPENSHELL_LOCAL_TLS_DIR",
                      "no client TLS bundle found for '%s'", g->name);
out:
    for (size_t i = 0; i < nc; i++)
        free(cands[i]);
    free(have);
    return rc;
}

static int
gw_add(struct cli_ctx *c, const struct gw_args *a)
{
    struct cli_gateway g, old;
    char *host = NULL;
    unsigned port;
    struct err e;
    int rc;

    if (!a->pos)
        applet_usage_error(c->prog, "expected an ENDPOINT (https://HOST:PORT or unix:///PATH)");
    if (!c->cfg)
        return cli_fail(c, CLI_EXIT_FAIL, "set HOME or XDG_CONFIG_HOME",
                        "no configuration directory");
    memset(&g, 0, sizeof(g));
    if (cli_endpoint_parse(a->pos, g.endpoint, sizeof(g.endpoint), &host, &port, &e) < 0)
        return cli_fail(c, CLI_EXIT_USAGE, NULL, "%s", e.msg);
    if (a->name_opt)
        buf_copy_fixed(g.name, sizeof(g.name), a->name_opt);
    else if (!*host || cli_host_is_loopback(host))
        buf_copy_fixed(g.name, sizeof(g.name), "openshell");
    else
        buf_copy_fixed(g.name, sizeof(g.name), host);
    if (!cli_gw_name_ok(g.name)) {
        free(host);
        return cli_fail(c, CLI_EXIT_USAGE, "pass --name NAME", "'%s' is not a gateway name",
                        g.name);
    }
    if (cli_gw_load(c->cfg, g.name, &old, NULL) == 0) {
        char *hint = xasprintf("remove it first with: openshell gateway remove %s, or pass "
                               "--name",
                               g.name);
        free(host);
        rc = cli_fail(c, CLI_EXIT_FAIL, hint, "gateway '%s' is already registered (%s)", g.name,
                      old.endpoint);
        free(hint);
        return rc;
    }
    g.port = port;
    g.is_remote = *host && !cli_host_is_loopback(host);
    if (!strncmp(g.endpoint, "unix://", 7)) {
        buf_copy_fixed(g.unix_socket, sizeof(g.unix_socket), g.endpoint + 7);
        buf_copy_fixed(g.auth, sizeof(g.auth), "local");
    } else {
        buf_copy_fixed(g.auth, sizeof(g.auth),
                       !strncmp(g.endpoint, "https://", 8) ? "mtls" : "plaintext");
    }
    if (!strncmp(g.endpoint, "https://", 8) && (a->local || cli_host_is_loopback(host)) &&
        (rc = import_bundle(c, &g, a->local)) != 0) {
        free(host);
        return rc;
    }
    free(host);
    if (cli_gw_save(c->cfg, &g, &e) < 0 || cli_active_set(c->cfg, g.name, &e) < 0)
        return cli_fail(c, CLI_EXIT_FAIL, NULL, "registering '%s': %s", g.name, e.msg);
    cli_ok(c, "Gateway '%s' added and set as active", g.name);
    fprintf(stderr, "  Endpoint: %s\n  Type:     %s\n  Auth:     %s\n", g.endpoint,
            g.is_remote ? "remote" : "local", g.auth);
    if (!strncmp(g.endpoint, "https://", 8)) {
        char *ca = xasprintf("%s/gateways/%s/mtls/ca.crt", c->cfg, g.name);
        if (access(ca, R_OK) < 0)
            cli_warn(c,
                     "no client TLS bundle yet: place ca.crt, tls.crt and tls.key in "
                     "%s/gateways/%s/mtls",
                     c->cfg, g.name);
        free(ca);
    }
    if (g.unix_socket[0] && !cli_socket_healthy(g.unix_socket))
        cli_warn(c, "gateway '%s' is not reachable at %s yet", g.name, g.unix_socket);
    return 0;
}

static int
gw_list(struct cli_ctx *c, const struct gw_args *a)
{
    static const char *const hdr[] = { "", "NAME", "ENDPOINT", "TYPE", "AUTH" };
    struct cli_gateway *all = NULL;
    char active[CLI_NAME_MAX] = "";
    enum cli_gw_source src;
    size_t n;
    struct err e;

    if (a->pos)
        applet_usage_error(c->prog, "unexpected argument '%s'", a->pos);
    if (!c->cfg || cli_gw_list(c->cfg, &all, &n, &e) < 0)
        return cli_fail(c, CLI_EXIT_FAIL, NULL, "listing gateways: %s",
                        c->cfg ? e.msg : "no configuration directory");
    cli_gw_resolve(c->cfg, c->gateway_flag, getenv("OPENSHELL_GATEWAY"), active, sizeof(active),
                   &src);
    if (a->names) {
        for (size_t i = 0; i < n; i++)
            puts(all[i].name);
    } else if (c->output != CLI_OUT_TABLE) {
        cJSON *arr = cJSON_CreateArray();
        for (size_t i = 0; i < n; i++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "name", all[i].name);
            cJSON_AddStringToObject(o, "endpoint", all[i].endpoint);
            cJSON_AddStringToObject(o, "type",
                                    all[i].state_dir[0] ? "local"
                                    : all[i].is_remote  ? "remote"
                                                        : "local");
            cJSON_AddStringToObject(o, "source", "user");
            cJSON_AddStringToObject(o, "auth", all[i].auth);
            cJSON_AddBoolToObject(o, "active", !strcmp(active, all[i].name));
            cJSON_AddBoolToObject(o, "is_remote", all[i].is_remote);
            if (all[i].unix_socket[0])
                cJSON_AddStringToObject(o, "unix_socket", all[i].unix_socket);
            if (all[i].state_dir[0])
                cJSON_AddStringToObject(o, "state_dir", all[i].state_dir);
            cJSON_AddItemToArray(arr, o);
        }
        cli_print_data(c, arr);
        cJSON_Delete(arr);
    } else if (n == 0) {
        printf("No gateways registered. Start one with: openshell gateway start\n");
    } else {
        struct cli_table *t = cli_table_new(5, hdr);
        struct buf b = BUF_INIT;
        for (size_t i = 0; i < n; i++) {
            bool act = !strcmp(active, all[i].name);
            const char *row[] = { act ? "*" : " ", all[i].name, all[i].endpoint,
                                  all[i].is_remote ? "remote" : "local", all[i].auth };
            cli_table_add(t, row);
            if (act)
                cli_table_color_last(t, 1, "32");
        }
        cli_table_render(t, cli_color_wanted(1), &b);
        fputs(buf_cstr(&b), stdout);
        buf_fini(&b);
        cli_table_free(t);
    }
    free(all);
    return 0;
}

static int
gw_select(struct cli_ctx *c, struct gw_args *a)
{
    struct cli_gateway g;
    struct err e;
    const char *env = getenv("OPENSHELL_GATEWAY");

    if (!a->pos) {
        gw_list(c, a);
        fprintf(stderr, "hint: select one with: openshell gateway select NAME\n");
        return 0;
    }
    if (!c->cfg)
        return cli_fail(c, CLI_EXIT_FAIL, NULL, "no configuration directory");
    if (!cli_gw_name_ok(a->pos) || cli_gw_load(c->cfg, a->pos, &g, &e) < 0)
        return cli_fail(c, CLI_EXIT_FAIL, "list them with: openshell gateway list",
                        "unknown gateway '%s'", a->pos);
    if (cli_active_set(c->cfg, a->pos, &e) < 0)
        return cli_fail(c, CLI_EXIT_FAIL, NULL, "%s", e.msg);
    cli_ok(c, "Active gateway set to '%s'", a->pos);
    if (env && *env && strcmp(env, a->pos) != 0)
        cli_warn(c, "OPENSHELL_GATEWAY=%s overrides the active gateway in this shell", env);
    return 0;
}

static int
gw_remove(struct cli_ctx *c, const struct gw_args *a)
{
    struct err e;
    int rc = pick(c, a->pos);

    if (rc)
        return rc;
    if (c->gw.state_dir[0] && cli_gateway_pid(c->gw.state_dir) > 0)
        cli_warn(c,
                 "gateway '%s' keeps running; stop it with: openshell gateway stop %s "
                 "(before removing, next time)",
                 c->gw.name, c->gw.name);
    if (cli_gw_remove(c->cfg, c->gw.name, &e) < 0)
        return cli_fail(c, CLI_EXIT_FAIL, NULL, "%s", e.msg);
    cli_ok(c, "Gateway '%s' removed", c->gw.name);
    return 0;
}

int
cli_gateway(int argc, char **argv)
{
    static const char *const subs[] = { "start",  "stop", "status", "add",
                                        "select", "list", "remove", "info" };
    struct cli_ctx c;
    struct gw_args a;
    char prog[64];
    int rc;

    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        fputs(gateway_usage, stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        if (strcmp(argv[1], subs[i]) != 0)
            continue;
        snprintf(prog, sizeof(prog), "openshell gateway %s", subs[i]);
        cli_ctx_init(&c, prog);
        parse(&c, argc - 1, argv + 1, &a);
        switch (i) {
        case 0: rc = gw_start(&c, &a); break;
        case 1: rc = gw_stop(&c, &a); break;
        case 2: rc = gw_status(&c, &a, false); break;
        case 3: rc = gw_add(&c, &a); break;
        case 4: rc = gw_select(&c, &a); break;
        case 5: rc = gw_list(&c, &a); break;
        case 6: rc = gw_remove(&c, &a); break;
        default: rc = gw_status(&c, &a, true); break;
        }
        cli_ctx_fini(&c);
        return rc;
    }
    applet_usage_error("openshell gateway", "unknown command '%s'", argv[1]);
}

int
cli_status(int argc, char **argv)
{
    struct cli_ctx c;
    struct gw_args a;
    enum cli_gw_source src;
    char name[CLI_NAME_MAX];
    int rc;

    cli_ctx_init(&c, "openshell status");
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs("Usage: openshell status [-g NAME] [-o table|json]\n"
                  "\n"
                  "Show the selected gateway: endpoint, Connected/Disconnected, version.\n"
                  "Without any gateway: 'No gateway configured.' (exit 0).\n"
                  "\n"
                  "Options:\n" CLI_COMMON_HELP "\n"
                  "Examples:\n"
                  "  openshell status\n"
                  "  openshell status -o json | jq -r .status\n"
                  "\n"
                  "Exit status: 0 connected or nothing configured, 3 not reachable.\n",
                  stdout);
            cli_ctx_fini(&c);
            return 0;
        }
    parse(&c, argc, argv, &a);
    if (a.pos)
        applet_usage_error(c.prog, "unexpected argument '%s'", a.pos);
    if (!c.cfg || cli_gw_resolve(c.cfg, c.gateway_flag, getenv("OPENSHELL_GATEWAY"), name,
                                 sizeof(name), &src) < 0) {
        if (c.output != CLI_OUT_TABLE) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "status", "not_configured");
            cli_print_data(&c, o);
            cJSON_Delete(o);
        } else
            printf("No gateway configured.\nStart one with: openshell gateway start\n");
        cli_ctx_fini(&c);
        return 0;
    }
    rc = gw_status(&c, &a, false);
    cli_ctx_fini(&c);
    return rc;
}
