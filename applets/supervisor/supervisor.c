/*
 * supervisor.c: the openshell-supervisor applet: the sandbox supervisor.
 * Not built yet: it parses its options honestly and says so, rather than
 * pretending to run. The "Sandbox runtime" issue builds it.
 */
#include <getopt.h>
#include <stdio.h>

#include "../applets.h"
#include "xfuncs.h"

static const char supervisor_usage[] =
    "Usage: openshell-supervisor [OPTIONS]\n"
    "\n"
    "openshell-supervisor is the sandbox supervisor.\n"
    "It is not available in this build yet.\n"
    "\n"
    "Options:\n"
    "  -h, --help              show this help\n"
    "  -V, --version           print the version\n" APPLET_COMMON_HELP;

int
supervisor_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        APPLET_COMMON_OPTIONS,
        { NULL, 0, NULL, 0 },
    };
    const char *prog = "openshell-supervisor";
    int opt;

    opterr = 0;
    while ((opt = getopt_long(argc, argv, "hV", longopts, NULL)) != -1) {
        if (applet_common_option(prog, opt, optarg))
            continue;
        switch (opt) {
        case 'h': fputs(supervisor_usage, stdout); return 0;
        case 'V': return applet_print_version(prog);
        default: applet_bad_option(prog, argv, optind, optopt);
        }
    }
    return applet_not_built(prog, "the sandbox supervisor");
}
