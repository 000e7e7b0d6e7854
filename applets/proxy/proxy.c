/*
 * proxy.c: the openshell-proxy applet: the egress proxy.
 * Not built yet: it parses its options honestly and says so, rather than
 * pretending to run. The "Egress proxy" issue builds it.
 */
#include <getopt.h>
#include <stdio.h>

#include "../applets.h"
#include "xfuncs.h"

static const char proxy_usage[] =
    "Usage: openshell-proxy [OPTIONS]\n"
    "\n"
    "openshell-proxy is the egress proxy.\n"
    "It is not available in this build yet.\n"
    "\n"
    "Options:\n"
    "  -h, --help              show this help\n"
    "  -V, --version           print the version\n" APPLET_COMMON_HELP;

int
proxy_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        APPLET_COMMON_OPTIONS,
        { NULL, 0, NULL, 0 },
    };
    const char *prog = "openshell-proxy";
    int opt;

    opterr = 0;
    while ((opt = getopt_long(argc, argv, "hV", longopts, NULL)) != -1) {
        if (applet_common_option(prog, opt, optarg))
            continue;
        switch (opt) {
        case 'h': fputs(proxy_usage, stdout); return 0;
        case 'V': return applet_print_version(prog);
        default: applet_bad_option(prog, argv, optind, optopt);
        }
    }
    return applet_not_built(prog, "the egress proxy");
}
