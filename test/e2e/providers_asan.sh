#!/bin/sh
# E2E: providers.py (providers, sealing, the credentials document, the
# inference route with its forked verification probe, key-file refusals)
# against the gateway built with AddressSanitizer, UBSan and LeakSanitizer:
# every test passes and no sanitizer report appears.
. "$(dirname "$0")/lib.sh"
asan_setup

if ! command -v gcc >/dev/null || ! command -v curl >/dev/null ||
    [ ! -f "$HOST_DEPS/lib/libnghttp2.a" ] || [ ! -f "$B/gen/version.h" ]; then
    skip "providers under ASan" "needs gcc, curl, build/deps-host and a built tree"
    done_testing
    exit $?
fi
cat >"$T/asan_main.c" <<'EOC'
#include "asan_stubs.h"
int main(int argc, char **argv) { return gateway_main(argc, argv); }
EOC
check "build the ASan gateway" "cd '$TOP' && gcc -std=gnu11 -g -O1 $SAN -D_GNU_SOURCE -Iinclude -Iapplets -I'$TOP/test/e2e' \
    -I'$B/gen' -I'$HOST_DEPS/include' -o '$T/openshell-gateway' '$T/asan_main.c' \
    applets/gateway/*.c src/*.c src/driver/*.c src/policy/*.c src/sandbox/*.c \
    -L'$HOST_DEPS/lib' -lnghttp2 -lmbedtls -lmbedx509 -lmbedcrypto -levent_extra -levent_core \
    -lcjson -lseccomp -lyaml -lsqlite3 -lhttp_parser -lpthread -lm"
if [ ! -x "$T/openshell-gateway" ]; then
    done_testing
    exit $?
fi
asan_options
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
