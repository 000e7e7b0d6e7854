#ifndef OPENSHELL_APPLETS_H
#define OPENSHELL_APPLETS_H
/*
 * Entry points of every applet (one per line of applets.def) and the small
 * shared helpers every applet's option parsing uses. An entry point gets
 * argv[0] as dispatched (the applet name) and returns the exit status.
 */
#include <stdbool.h>
#include <stdio.h>

#define APPLET(name, entry, flags, summary) int entry(int argc, char **argv);
#include "applets.def"
#undef APPLET

#define APPLET_INTERNAL 0x1

struct applet {
    const char *name;
    int (*main)(int argc, char **argv);
    unsigned flags;
    const char *summary;
};

/* The table from applets.def and its length. */
extern const struct applet applet_table[];
extern const unsigned applet_count;
/* The applet called NAME ("openshell-proxy" or just "proxy"), or NULL. */
const struct applet *applet_find(const char *name);

/* "openshell applet NAME ARGS..." and "openshell applet --list"; argv[0] is
 * "applet". Returns the applet's status, or 127 for an unknown NAME. */
int applet_cmd(int argc, char **argv);
/* "openshell 0.1.0 (git abc123)" style version line on stdout. Returns 0. */
int applet_print_version(const char *prog);
/* One usage error line on stderr, "PROG: MSG (try 'PROG --help')", exit 2. */
void applet_usage_error(const char *prog, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));
/* Handle a shared option (--log-level, --log-format) given as getopt_long's
 * OPT/OPTARG; returns true when OPT was one of them (dies with exit 2 on a
 * bad value). Applets put APPLET_COMMON_OPTIONS in their long option table. */
bool applet_common_option(const char *prog, int opt, const char *arg);
#define APPLET_OPT_LOG_LEVEL 0x1001
#define APPLET_OPT_LOG_FORMAT 0x1002
/* clang-format off */
#define APPLET_COMMON_OPTIONS \
    {"log-level", required_argument, NULL, APPLET_OPT_LOG_LEVEL}, \
    {"log-format", required_argument, NULL, APPLET_OPT_LOG_FORMAT}
/* clang-format on */
#define APPLET_COMMON_HELP                                                                         \
    "      --log-level LEVEL   debug, info, warn or error (default info; OPENSHELL_LOG_LEVEL)\n"   \
    "      --log-format FMT    text, json or auto (default auto: text on a terminal)\n"
/* Report an unknown or malformed option the way getopt_long saw it; exit 2. */
void applet_bad_option(const char *prog, char **argv, int optind_now, int optopt_now)
    __attribute__((noreturn));
/* Say that PROG's function is not built yet (naming the issue that brings
 * it) and return the status to exit with (69, EX_UNAVAILABLE). */
int applet_not_built(const char *prog, const char *what);

#endif
