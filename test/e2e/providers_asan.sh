#!/bin/sh
# E2E: providers.py (providers, sealing, the credentials document, the
# inference route with its forked verification probe, key-file refusals)
# against the gateway built with AddressSanitizer, UBSan and LeakSanitizer:
# every test passes and no sanitizer report appears.
. "$(dirname "$0")/lib.sh"
TOP=${OPENSHELL_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
HOST_DEPS=$TOP/build/deps-host
B=${OPENSHELL_BUILD:-$TOP/build}

if ! command -v gcc >/dev/null || ! command -v curl >/dev/null ||
    [ ! -f "$HOST_DEPS/lib/libnghttp2.a" ] || [ ! -f "$B/gen/version.h" ]; then
    skip "providers under ASan" "needs gcc, curl, build/deps-host and a built tree"
    done_testing
    exit $?
fi
cat >"$T/asan_main.c" <<'EOC'
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include "applets.h"
#include "log.h"
int applet_print_version(const char *prog) { printf("%s asan\n", prog); return 0; }
void applet_usage_error(const char *prog, const char *fmt, ...)
{ va_list ap; va_start(ap, fmt); fprintf(stderr, "%s: ", prog); vfprintf(stderr, fmt, ap);
  va_end(ap); fputc('\n', stderr); exit(2); }
void applet_bad_option(const char *prog, char **argv, int i, int o)
{ (void)argv; (void)i; (void)o; fprintf(stderr, "%s: bad option\n", prog); exit(2); }
bool applet_common_option(const char *prog, int opt, const char *arg)
{ enum log_level l; enum log_format f; (void)prog;
  if (opt == APPLET_OPT_LOG_LEVEL && log_parse_level(arg, &l) == 0) { log_set_level(l); return true; }
  if (opt == APPLET_OPT_LOG_FORMAT && log_parse_format(arg, &f) == 0) { log_set_format(f); return true; }
  return false; }
int main(int argc, char **argv) { return gateway_main(argc, argv); }
EOC
SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
check "build the ASan gateway" "cd '$TOP' && gcc -std=gnu11 -g -O1 $SAN -D_GNU_SOURCE -Iinclude -Iapplets \
    -I'$B/gen' -I'$HOST_DEPS/include' -o '$T/openshell-gateway' '$T/asan_main.c' \
    applets/gateway/*.c src/*.c src/driver/*.c src/policy/*.c src/sandbox/*.c \
    -L'$HOST_DEPS/lib' -lnghttp2 -lmbedtls -lmbedx509 -lmbedcrypto -levent_extra -levent_core \
    -lcjson -lseccomp -lyaml -lsqlite3 -lhttp_parser -lpthread -lm"
if [ ! -x "$T/openshell-gateway" ]; then
    done_testing
    exit $?
fi
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:exitcode=86"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
# providers.py prints its own TAP points: renumbered after ours, one plan.
PROVIDERS_GATEWAY_BIN=$T/openshell-gateway /usr/bin/python3 "$(dirname "$0")/providers.py" \
    >"$T/out" 2>&1
status=$?
awk -v base="$TAP_N" '
/^ok [0-9]+ / { n++; sub(/^ok [0-9]+/, "ok " base + n); print; next }
/^not ok [0-9]+ / { n++; sub(/^not ok [0-9]+/, "not ok " base + n); print; next }
/^1\.\.[0-9]+/ { next }
{ print }
END { print "1.." base + n }' "$T/out"
exit $status
