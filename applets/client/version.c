/*
 * version.c: "openshell version [--deps] [--licenses]".
 *
 * --deps prints each statically linked library twice over: the Debian source
 * package revision it was built from (recorded by vendor/vendor.sh at build
 * time, see build/gen/deps.h) and the version the linked code reports about
 * itself at run time, so a mismatch between the two cannot hide.
 * --licenses prints the notices the binary must carry (COPYING and every
 * library's license text, embedded at build time).
 */
#include <cjson/cJSON.h>
#include <event2/event.h>
#include <getopt.h>
#include <http_parser.h>
#include <mbedtls/version.h>
#include <nghttp2/nghttp2.h>
#include <seccomp.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <yaml.h>

#include "../applets.h"
#include "client.h"
#include "deps.h"
#include "version.h"
#include "xfuncs.h"

extern const char gen_notices[];

/* The version string the linked library reports for NAME (static storage). */
static const char *
dep_runtime_version(const char *name)
{
    static char v[64];

    v[0] = '\0';
    if (strcmp(name, "mbedtls") == 0) {
        mbedtls_version_get_string(v);
    } else if (strcmp(name, "libevent") == 0) {
        buf_copy_fixed(v, sizeof(v), event_get_version());
    } else if (strcmp(name, "nghttp2") == 0) {
        buf_copy_fixed(v, sizeof(v), nghttp2_version(0)->version_str);
    } else if (strcmp(name, "cjson") == 0) {
        buf_copy_fixed(v, sizeof(v), cJSON_Version());
    } else if (strcmp(name, "libyaml") == 0) {
        buf_copy_fixed(v, sizeof(v), yaml_get_version_string());
    } else if (strcmp(name, "libseccomp") == 0) {
        const struct scmp_version *s = seccomp_version();
        buf_fmt_fixed(v, sizeof(v), "%u.%u.%u", s->major, s->minor, s->micro);
    } else if (strcmp(name, "sqlite") == 0) {
        buf_copy_fixed(v, sizeof(v), sqlite3_libversion());
    } else if (strcmp(name, "httpparser") == 0) {
        unsigned long h = http_parser_version();
        buf_fmt_fixed(v, sizeof(v), "%lu.%lu.%lu", (h >> 16) & 255, (h >> 8) & 255, h & 255);
    } else {
        buf_copy_fixed(v, sizeof(v), "-");
    }
    return v;
}

static const char version_usage[] =
    "Usage: openshell version [--deps] [--licenses]\n"
    "\n"
    "Print the version of this binary.\n"
    "\n"
    "Options:\n"
    "      --deps       list every statically linked library: the Debian source\n"
    "                   package and revision it was built from, the version the\n"
    "                   linked code reports, and its license\n"
    "      --licenses   print the license notices this binary carries\n"
    "  -h, --help       show this help\n";

int
cli_version(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "deps", no_argument, NULL, 'd' },
        { "licenses", no_argument, NULL, 'l' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *prog = "openshell version";
    bool deps = false, licenses = false;
    int opt;

    opterr = 0;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'd': deps = true; break;
        case 'l': licenses = true; break;
        case 'h': fputs(version_usage, stdout); return 0;
        default: applet_bad_option(prog, argv, optind, optopt);
        }
    }
    if (optind < argc)
        applet_usage_error(prog, "unexpected argument '%s'", argv[optind]);
    if (!deps && !licenses)
        return applet_print_version("openshell");
    if (deps) {
        printf("%-11s %-13s %-22s %-14s %s\n", "LIBRARY", "SOURCE", "DEBIAN REVISION", "REPORTS",
               "LICENSE");
#define DEP(name, pkg, rev, license)                                                               \
    printf("%-11s %-13s %-22s %-14s %s\n", name, pkg, rev, dep_runtime_version(name), license);
        DEPS_TABLE
#undef DEP
        printf("%-11s %-13s %-22s %-14s %s\n", "musl", "musl", DEPS_MUSL_VERSION, "-", "MIT");
    }
    if (licenses)
        fputs(gen_notices, stdout);
    return 0;
}
