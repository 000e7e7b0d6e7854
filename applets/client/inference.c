/*
 * inference.c: "openshell inference set|update|get|delete" (doc/cli.md,
 * doc/providers.md): the route `https://inference.local` inside the
 * workspace's sandboxes reaches.
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
#include "client.h"
#include "xfuncs.h"

static const char inference_usage[] =
    "Usage: openshell inference COMMAND [OPTIONS]\n"
    "\n"
    "Code in a sandbox calls https://inference.local/v1/...; the sandbox's proxy\n"
    "sends the call to the workspace's route: one provider and one model, with\n"
    "the provider's key (the sandbox never sees it) and the route's model.\n"
    "\n"
    "Commands:\n"
    "  set --provider P --model M [--api openai|anthropic] [--base-url URL]\n"
    "      [--timeout SECS] [--no-verify]\n"
    "                      set the route; the gateway first checks that the\n"
    "                      backend answers with the provider's key\n"
    "  update [--provider P] [--model M] [--api A] [--base-url URL]\n"
    "         [--timeout SECS] [--no-verify]\n"
    "                      change some fields (checked again)\n"
    "  get                 show the route\n"
    "  delete              remove the route\n"
    "\n"
    "Options:\n" CLI_COMMON_HELP "\n"
    "The api defaults to the provider type's (anthropic for anthropic, openai\n"
    "otherwise), the base URL to the provider's *_BASE_URL config, else the\n"
    "type's public endpoint; a generic provider needs --base-url.\n"
    "Exit status: 0 ok, 1 failed (verification refused, not found), 2 usage\n"
    "error, 3 no gateway reachable.\n";

enum {
    OPT_PROVIDER = 0x100,
    OPT_MODEL,
    OPT_API,
    OPT_BASE_URL,
    OPT_TIMEOUT,
    OPT_NO_VERIFY,
};

struct inf_args {
    const char *provider, *model, *api, *base_url;
    long timeout_s; /* -1: not given */
    bool no_verify;
    int npos;
    char **pos;
};

static void
parse(struct cli_ctx *c, int argc, char **argv, struct inf_args *a)
{
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        { "provider", required_argument, NULL, OPT_PROVIDER },
        { "model", required_argument, NULL, OPT_MODEL },
        { "api", required_argument, NULL, OPT_API },
        { "base-url", required_argument, NULL, OPT_BASE_URL },
        { "timeout", required_argument, NULL, OPT_TIMEOUT },
        { "no-verify", no_argument, NULL, OPT_NO_VERIFY },
        { NULL, 0, NULL, 0 },
    };
    int opt;

    memset(a, 0, sizeof(*a));
    a->timeout_s = -1;
    optind = 0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, CLI_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
        if (cli_common_opt(c, opt, optarg))
            continue;
        switch (opt) {
        case 'h': fputs(inference_usage, stdout); exit(0);
        case OPT_PROVIDER: a->provider = optarg; break;
        case OPT_MODEL: a->model = optarg; break;
        case OPT_API:
            if (strcmp(optarg, "openai") != 0 && strcmp(optarg, "anthropic") != 0)
                applet_usage_error(c->prog, "--api '%s': expected openai or anthropic", optarg);
            a->api = optarg;
            break;
        case OPT_BASE_URL: a->base_url = optarg; break;
        case OPT_TIMEOUT: {
            char *end;
            errno = 0;
            a->timeout_s = strtol(optarg, &end, 10);
            if (!*optarg || *end || errno || a->timeout_s < 0 || a->timeout_s > 3600)
                applet_usage_error(c->prog, "--timeout '%s': expected seconds 0-3600 (0: 60)",
                                   optarg);
            break;
        }
        case OPT_NO_VERIFY: a->no_verify = true; break;
        default: applet_bad_option(c->prog, argv, optind, optopt);
        }
    }
    a->pos = argv + optind;
    a->npos = argc - optind;
    if (a->npos)
        applet_usage_error(c->prog, "unexpected argument '%s'", a->pos[0]);
}

static const char *
jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double
jnum(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static void
print_route(const char *title, const cJSON *r)
{
    bool color = isatty(1) == 1 && !getenv("NO_COLOR");
    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(r, "validated_endpoints"), *it;
    const char *err = jstr(r, "error");

    printf("%s%s:%s\n", color ? "\033[1m" : "", title, color ? "\033[0m" : "");
    printf("  Workspace:  %s\n", jstr(r, "workspace") ? jstr(r, "workspace") : "");
    printf("  Route:      %s\n", jstr(r, "name") ? jstr(r, "name") : "inference.local");
    printf("  Provider:   %s\n", jstr(r, "provider") ? jstr(r, "provider") : "");
    printf("  Model:      %s\n", jstr(r, "model") ? jstr(r, "model") : "");
    printf("  Api:        %s\n", jstr(r, "api") ? jstr(r, "api") : "-");
    printf("  Base URL:   %s\n", jstr(r, "base_url") ? jstr(r, "base_url") : "-");
    printf("  Version:    %.0f\n", jnum(r, "resource_version"));
    printf("  Timeout:    %.0fs%s\n", jnum(r, "timeout_seconds"),
           jnum(r, "timeout_seconds") == 60 ? " (default)" : "");
    if (err)
        printf("  Error:      %s\n", err);
    if (cJSON_IsArray(eps)) {
        if (!cJSON_GetArraySize(eps)) {
            printf("  Validated Endpoints: none (--no-verify)\n");
        } else {
            printf("  Validated Endpoints:\n");
            cJSON_ArrayForEach(it, eps)
                printf("    - %s (%s)\n", jstr(it, "url") ? jstr(it, "url") : "?",
                       jstr(it, "api") ? jstr(it, "api") : "?");
        }
    }
}

static int
inf_set(struct cli_ctx *c, struct inf_args *a, bool update)
{
    cJSON *req = cJSON_CreateObject(), *ans = NULL;
    char *path = NULL;
    int status, rc;

    if (!update && (!a->provider || !a->model))
        applet_usage_error(c->prog, "--provider and --model are required");
    if (update && !a->provider && !a->model && !a->api && !a->base_url && a->timeout_s < 0)
        applet_usage_error(c->prog, "nothing to update: give --provider, --model, --api, "
                                    "--base-url or --timeout");
    if ((rc = cli_connect(c, false)) != 0)
        goto out;
    if (a->provider)
        cJSON_AddStringToObject(req, "provider", a->provider);
    if (a->model)
        cJSON_AddStringToObject(req, "model", a->model);
    if (a->api)
        cJSON_AddStringToObject(req, "api", a->api);
    if (a->base_url)
        cJSON_AddStringToObject(req, "base_url", a->base_url);
    if (a->timeout_s >= 0)
        cJSON_AddNumberToObject(req, "timeout_seconds", (double)a->timeout_s);
    if (a->no_verify)
        cJSON_AddBoolToObject(req, "no_verify", true);
    path = cli_ws_path(c, "/inference");
    if (!a->no_verify && c->output == CLI_OUT_TABLE)
        fprintf(stderr, "Configuring inference (checking the backend)...\n");
    if ((rc = cli_call_json(c, update ? "PATCH" : "PUT", path, req, &status, &ans)) != 0)
        goto out;
    if (status != 200) {
        rc = cli_api_fail(c, status, ans,
                          status == 404 && update
                              ? "set one first: openshell inference set --provider P --model M"
                              : NULL);
        goto out;
    }
    if (c->output != CLI_OUT_TABLE)
        cli_print_data(c, ans);
    else
        print_route(update ? "Inference updated" : "Inference configured", ans);
out:
    cJSON_Delete(req);
    cJSON_Delete(ans);
    free(path);
    return rc;
}

static int
inf_get(struct cli_ctx *c)
{
    cJSON *ans = NULL;
    char *path;
    int status, rc;

    if ((rc = cli_connect(c, false)) != 0)
        return rc;
    path = cli_ws_path(c, "/inference");
    rc = cli_call(c, "GET", path, NULL, NULL, 0, &status, &ans);
    free(path);
    if (rc)
        goto out;
    if (status == 404) {
        /* The route is missing (the workspace exists: the message says). */
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(ans, "error"), "message");
        if (cJSON_IsString(m) && strstr(m->valuestring, "is not configured")) {
            if (c->output != CLI_OUT_TABLE) {
                cJSON *n = cJSON_CreateNull();
                cli_print_data(c, n);
                cJSON_Delete(n);
            } else {
                printf("Inference:\n  Not configured\n");
            }
            goto out;
        }
    }
    if (status != 200) {
        rc = cli_api_fail(c, status, ans, NULL);
        goto out;
    }
    if (c->output != CLI_OUT_TABLE)
        cli_print_data(c, ans);
    else
        print_route("Inference", ans);
out:
    cJSON_Delete(ans);
    return rc;
}

static int
inf_delete(struct cli_ctx *c)
{
    cJSON *ans = NULL;
    char *path;
    int status, rc;

    if ((rc = cli_connect(c, false)) != 0)
        return rc;
    path = cli_ws_path(c, "/inference");
    rc = cli_call(c, "DELETE", path, NULL, NULL, 0, &status, &ans);
    free(path);
    if (rc == 0) {
        if (status == 200)
            fprintf(stderr, "Inference route deleted.\n");
        else if (status == 404)
            fprintf(stderr, "Inference route not found (already deleted).\n");
        else
            rc = cli_api_fail(c, status, ans, NULL);
    }
    cJSON_Delete(ans);
    return rc;
}

int
cli_inference(int argc, char **argv)
{
    static const char *const subs[] = { "set", "update", "get", "delete" };
    struct cli_ctx c;
    struct inf_args a;
    char prog[64];
    int rc;

    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        fputs(inference_usage, stdout);
        return 0; /* a group without a command: its help, as the reference */
    }
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        if (strcmp(argv[1], subs[i]) != 0)
            continue;
        snprintf(prog, sizeof(prog), "openshell inference %s", subs[i]);
        cli_ctx_init(&c, prog);
        parse(&c, argc - 1, argv + 1, &a);
        switch (i) {
        case 0: rc = inf_set(&c, &a, false); break;
        case 1: rc = inf_set(&c, &a, true); break;
        case 2: rc = inf_get(&c); break;
        default: rc = inf_delete(&c); break;
        }
        cli_ctx_fini(&c);
        return rc;
    }
    applet_usage_error("openshell inference", "unknown command '%s'", argv[1]);
}
