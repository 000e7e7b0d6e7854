/*
 * main.c: the one binary's entry point. Dispatches on basename(argv[0]) to an
 * applet from applets.def; "openshell applet NAME ARGS..." reaches an applet
 * without a symlink and "openshell applet --list" lists them. A name that
 * matches no applet exits 127, like a shell's "command not found".
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "applets.h"
#include "buf.h"
#include "log.h"
#include "version.h"
#include "xfuncs.h"

const struct applet applet_table[] = {
#define APPLET(name, entry, flags, summary) { name, entry, flags, summary },
#include "applets.def"
#undef APPLET
};
const unsigned applet_count = sizeof(applet_table) / sizeof(applet_table[0]);

const struct applet *
applet_find(const char *name)
{
    for (unsigned i = 0; i < applet_count; i++) {
        const char *n = applet_table[i].name;
        if (strcmp(n, name) == 0)
            return &applet_table[i];
        /* "proxy" is short for "openshell-proxy". */
        if (strncmp(n, "openshell-", 10) == 0 && strcmp(n + 10, name) == 0)
            return &applet_table[i];
    }
    return NULL;
}

int
applet_print_version(const char *prog)
{
    printf("%s %s\n", prog, OPENSHELL_VERSION);
    return 0;
}

void
applet_usage_error(const char *prog, const char *fmt, ...)
{
    struct buf b = BUF_INIT;
    va_list ap;

    buf_printf(&b, "%s: ", prog);
    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    buf_printf(&b, " (try '%s --help')\n", prog);
    fputs(buf_cstr(&b), stderr);
    buf_fini(&b);
    exit(EXIT_USAGE);
}

void
applet_bad_option(const char *prog, char **argv, int optind_now, int optopt_now)
{
    const char *arg = argv[optind_now - 1];

    if (optopt_now && optopt_now < 0x100 && arg && arg[0] == '-' && arg[1] != '-')
        applet_usage_error(prog, "option '-%c' is unknown or needs a value", optopt_now);
    applet_usage_error(prog, "option '%s' is unknown or needs a value", arg ? arg : "?");
}

bool
applet_common_option(const char *prog, int opt, const char *arg)
{
    enum log_level lvl;
    enum log_format fmt;

    switch (opt) {
    case APPLET_OPT_LOG_LEVEL:
        if (log_parse_level(arg, &lvl) < 0)
            applet_usage_error(prog, "--log-level '%s': expected debug, info, warn or error", arg);
        log_set_level(lvl);
        return true;
    case APPLET_OPT_LOG_FORMAT:
        if (log_parse_format(arg, &fmt) < 0)
            applet_usage_error(prog, "--log-format '%s': expected text, json or auto", arg);
        log_set_format(fmt);
        return true;
    default: return false;
    }
}

int
applet_not_built(const char *prog, const char *what)
{
    fprintf(stderr, "%s: %s is not available in this build yet\n", prog, what);
    return 69;
}

static void
applet_list(void)
{
    for (unsigned i = 0; i < applet_count; i++)
        if (!(applet_table[i].flags & APPLET_INTERNAL))
            printf("%-22s %s\n", applet_table[i].name, applet_table[i].summary);
}

static const char applet_usage[] =
    "Usage: openshell applet NAME [ARGS...]\n"
    "       openshell applet --list\n"
    "\n"
    "Run applet NAME of this binary without a symlink (NAME may omit the\n"
    "'openshell-' prefix: 'openshell applet proxy --help').\n";

int
applet_cmd(int argc, char **argv)
{
    const struct applet *a;

    if (argc < 2)
        applet_usage_error("openshell applet", "missing applet name");
    if (strcmp(argv[1], "--list") == 0 || strcmp(argv[1], "-l") == 0) {
        applet_list();
        return 0;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(applet_usage, stdout);
        return 0;
    }
    if (argv[1][0] == '-')
        applet_usage_error("openshell applet", "option '%s' is unknown", argv[1]);
    a = applet_find(argv[1]);
    if (!a) {
        fprintf(stderr, "openshell: no such applet: %s (see 'openshell applet --list')\n", argv[1]);
        return EXIT_NOAPPLET;
    }
    argv[1] = (char *)a->name;
    log_init(a->name);
    return a->main(argc - 1, argv + 1);
}

int
main(int argc, char **argv)
{
    const char *name = argc > 0 && argv[0] ? argv[0] : "openshell";
    const char *slash = strrchr(name, '/');
    const struct applet *a;

    if (slash)
        name = slash + 1;
    /* Anything not named like an applet is the client (e.g. a renamed copy). */
    a = strncmp(name, "openshell-", 10) == 0 ? applet_find(name) : applet_find("openshell");
    if (!a) {
        fprintf(stderr, "openshell: no such applet: %s (see 'openshell applet --list')\n", name);
        return EXIT_NOAPPLET;
    }
    log_init(a->name);
    argv[0] = (char *)a->name;
    return a->main(argc, argv);
}
