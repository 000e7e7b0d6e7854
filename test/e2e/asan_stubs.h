/* test/e2e/asan_stubs.h: stand-ins for applets/main.c's shared helpers, for
 * the e2e tests that build an applet with AddressSanitizer, UBSan and
 * LeakSanitizer by host gcc (gateway_asan.sh, providers_asan.sh,
 * supervisor_session_asan.sh, proxy_cred_lib.py). Included once by the
 * test's own asan_main.c, which adds main(). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include "applets.h"
#include "log.h"

int
applet_print_version(const char *prog)
{
    printf("%s asan\n", prog);
    return 0;
}

void
applet_usage_error(const char *prog, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

void
applet_bad_option(const char *prog, char **argv, int i, int o)
{
    (void)argv;
    (void)i;
    (void)o;
    fprintf(stderr, "%s: bad option\n", prog);
    exit(2);
}

bool
applet_common_option(const char *prog, int opt, const char *arg)
{
    enum log_level l;
    enum log_format f;
    (void)prog;
    if (opt == APPLET_OPT_LOG_LEVEL && log_parse_level(arg, &l) == 0) {
        log_set_level(l);
        return true;
    }
    if (opt == APPLET_OPT_LOG_FORMAT && log_parse_format(arg, &f) == 0) {
        log_set_format(f);
        return true;
    }
    return false;
}
