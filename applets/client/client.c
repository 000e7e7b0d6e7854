/*
 * client.c: the openshell command-line client. Global options, then a
 * command from the table below. Commands whose machinery is not built yet are
 * listed (so --help tells the truth about the tree) and say so when run.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../applets.h"
#include "cli.h"
#include "client.h"
#include "log.h"
#include "xfuncs.h"

struct cli_cmd {
    const char *name;
    int (*run)(int argc, char **argv); /* NULL: not built yet */
    const char *summary;
};

static const struct cli_cmd cli_cmds[] = {
    { "applet", applet_cmd, "run another applet of this binary (see 'openshell applet --help')" },
    { "completion", cli_completion, "print a shell completion script (bash, zsh, fish)" },
    { "gateway", cli_gateway, "start, stop, add and select gateways" },
    { "gw", cli_gateway, "alias of gateway" },
    { "inference", cli_inference, "configure inference.local model routes" },
    { "lg", cli_logs, "alias of logs" },
    { "logs", cli_logs, "a sandbox's log lines (-n N, --tail to stream)" },
    { "pol", cli_policy, "alias of policy" },
    { "policy", cli_policy, "validate, check and manage sandbox policies" },
    { "provider", cli_provider, "manage provider credentials" },
    { "run", cli_run, "run a command in a sandbox without a gateway" },
    { "sandbox", cli_sandbox, "create, list, get and delete sandboxes" },
    { "sb", cli_sandbox, "alias of sandbox" },
    { "status", cli_status, "show the selected gateway's status" },
    { "version", cli_version,
      "print the version, linked libraries (--deps), notices (--licenses)" },
};

static const char cli_usage_head[] =
    "Usage: openshell [OPTIONS] COMMAND [ARGS...]\n"
    "\n"
    "openshell runs AI agents in sandboxes governed by a YAML policy.\n"
    "\n"
    "Commands:\n";

static const char cli_usage_tail[] =
    "\n"
    "Options:\n"
    "  -h, --help              show this help\n"
    "  -V, --version           print the version\n"
    "  -g, --gateway NAME      use this registered gateway (OPENSHELL_GATEWAY)\n"
    "      --gateway-endpoint URL\n"
    "                          talk to URL directly (OPENSHELL_GATEWAY_ENDPOINT)\n"
    "      --workspace NAME    workspace (OPENSHELL_WORKSPACE; default 'default')\n"
    "  -o, --output FORMAT     table, json or yaml\n"
    "                          (also accepted after the command, where they "
    "win)\n" APPLET_COMMON_HELP "\n"
    "Run 'openshell COMMAND --help' for a command's options.\n"
    "Exit status: 0 success, 1 failure, 2 usage error, 69 not available in this\n"
    "build yet, 127 no such applet.\n";

static void
cli_usage(void)
{
    fputs(cli_usage_head, stdout);
    for (size_t i = 0; i < sizeof(cli_cmds) / sizeof(cli_cmds[0]); i++)
        printf("  %-10s %s%s\n", cli_cmds[i].name, cli_cmds[i].summary,
               cli_cmds[i].run ? "" : " [not built yet]");
    fputs(cli_usage_tail, stdout);
}

int
client_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        { "version", no_argument, NULL, 'V' },
        APPLET_COMMON_OPTIONS,
        { NULL, 0, NULL, 0 },
    };
    const char *prog = "openshell";
    /* The global options, checked as after a command, into cli_globals. */
    struct cli_ctx g = { .prog = prog };
    int opt;

    opterr = 0;
    /* '+': stop at the command; its options are its own. */
    while ((opt = getopt_long(argc, argv, "+hVg:o:", longopts, NULL)) != -1) {
        if (applet_common_option(prog, opt, optarg))
            continue;
        if (cli_common_opt(&g, opt, optarg)) {
            if (opt == CLI_OPT_OUTPUT)
                cli_globals.output = (int)g.output;
            continue;
        }
        switch (opt) {
        case 'h': cli_usage(); return 0;
        case 'V': return applet_print_version(prog);
        default: applet_bad_option(prog, argv, optind, optopt);
        }
    }
    cli_globals.gateway = g.gateway_flag;
    cli_globals.endpoint = g.endpoint_flag;
    cli_globals.workspace = g.workspace;
    if (optind >= argc) {
        cli_usage();
        return EXIT_USAGE;
    }
    for (size_t i = 0; i < sizeof(cli_cmds) / sizeof(cli_cmds[0]); i++) {
        const struct cli_cmd *c = &cli_cmds[i];
        if (strcmp(c->name, argv[optind]) != 0)
            continue;
        if (!c->run) {
            fprintf(stderr, "openshell: '%s' is not available in this build yet\n", c->name);
            return 69;
        }
        {
            int first = optind;
            /* optind = 0 fully resets getopt (musl and glibc) for the command's
             * own parse, which sees argv[0] = the command name. */
            optind = 0;
            return c->run(argc - first, argv + first);
        }
    }
    applet_usage_error(prog, "unknown command '%s'", argv[optind]);
}
