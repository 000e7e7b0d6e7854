#!/bin/sh
# E2E: the supervisor (outer process, PID 1 and the proxy) built with
# AddressSanitizer, UBSan and LeakSanitizer (host gcc against
# build/deps-host), serving a gateway session: JSON and frames execs, a tty,
# a client that vanishes mid-exec, a policy reload, the gateway killed -9
# and restarted, then SIGTERM: it must exit 0 with no sanitizer report.
. "$(dirname "$0")/lib.sh"
asan_setup

if [ "$(id -u)" != 0 ]; then
    skip "supervisor under ASan" "needs root (the sandbox without a user namespace)"
    done_testing
    exit $?
fi
if ! command -v gcc >/dev/null || ! command -v curl >/dev/null ||
    [ ! -f "$HOST_DEPS/lib/libnghttp2.a" ] || [ ! -f "$B/gen/version.h" ]; then
    skip "supervisor under ASan" "needs gcc, curl, build/deps-host and a built tree"
    done_testing
    exit $?
fi

# The supervisor and proxy applets with stand-ins for applets/main.c.
cat >"$T/asan_main.c" <<'EOF'
#include <string.h>
#include "asan_stubs.h"
int main(int argc, char **argv)
{
    const char *b = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    if (strcmp(b, "openshell-proxy") == 0) { log_init("openshell-proxy"); return proxy_main(argc, argv); }
    log_init("openshell-supervisor");
    return supervisor_main(argc, argv);
}
EOF
SRCS=$(cd "$TOP" && ls src/*.c src/sandbox/*.c src/policy/*.c | grep -v -e '^src/store.c' -e '^src/cli_' | tr '\n' ' ')
mkdir -p "$T/asan"
if (cd "$TOP" && gcc -std=gnu11 -g -O1 $SAN -D_GNU_SOURCE -Iinclude -Iapplets -I"$TOP/test/e2e" \
    -I"$B/gen" -I"$HOST_DEPS/include" -o "$T/asan/openshell-supervisor" "$T/asan_main.c" \
    applets/supervisor/*.c applets/proxy/*.c $SRCS -L"$HOST_DEPS/lib" -lnghttp2 -lmbedtls \
    -lmbedx509 -lmbedcrypto -levent_extra -levent_core -lcjson -lseccomp -lyaml -lhttp_parser \
    -lpthread -lm) 2>"$T/build.err"; then
    tap_ok "build the ASan supervisor"
else
    tap_not_ok "build the ASan supervisor" "$(head -20 "$T/build.err")"
    done_testing
    exit $?
fi

S=$T/gw.sock
GW= SV=
stop() {
    [ -n "$SV" ] && kill -9 "$SV" 2>/dev/null
    [ -n "$GW" ] && kill "$GW" 2>/dev/null
    sleep 0.2
    rm -rf "$T"
}
trap stop EXIT
start_gw() {
    openshell-gateway --state-dir "$T/st" --socket "$S" --listen none --compute-driver none \
        --log-level warn 2>>"$T/gw.err" &
    GW=$!
    for _ in $(seq 100); do
        curl -s --unix-socket "$S" --http2-prior-knowledge http://x/healthz >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    return 1
}
C="curl -sS --max-time 20 --unix-socket $S --http2-prior-knowledge"
URL=http://x/v1/workspaces/default/sandboxes
export C URL
start_gw
ID=$($C -H content-type:application/json -d '{"name":"a","spec":{}}' $URL |
    sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
mkdir -p "$T/sb" "$T/w"
chmod 777 "$T/w"
(umask 077 && $C -X POST $URL/a/token | sed -n 's/.*"token":"\([^"]*\)".*/\1/p' >"$T/sb/token")
asan_options
"$T/asan/openshell-supervisor" --gateway "unix:$S" --sandbox-id "$ID" --token-file "$T/sb/token" \
    --name a --workdir "$T/w" --idle >"$T/sv.out" 2>"$T/sv.err" &
SV=$!
for _ in $(seq 200); do $C $URL/a | grep -q '"connected":true' && break; sleep 0.05; done
x() { echo "$C -H content-type:application/json -d '$1' $URL/a/exec"; }

testing "exec under ASan" "$(x '{"command":["/bin/sh","-c","echo out; echo err >&2; exit 3"]}')" \
    '{"exit_code":3,"stdout":"out\n","stderr":"err\n","truncated":false}'
testing "stdin and a missing command" \
    "$(x '{"command":["/usr/bin/wc","-c"],"stdin":"abc"}') | grep -o '\"stdout\":\"[0-9]*'; $(x '{"command":["nope-xyz"]}') | grep -o '\"exit_code\":[0-9]*'" \
    '"stdout":"3
"exit_code":127'
testing "a bad INIT is answered with an error" \
    "$(x '{"command":[]}') | grep -c error" "1"
# Frames: a tty shell fed a line, then EOF.
/usr/bin/python3 -c '
import json, struct, sys
def f(t, p): return struct.pack(">BI", t, len(p)) + p
i = json.dumps({"command": ["/bin/sh"], "tty": True, "cols": 90, "rows": 20}).encode()
sys.stdout.buffer.write(f(1, i) + f(5, b"{\"cols\":91,\"rows\":21}") + f(2, b"stty size; exit 4\n") + f(7, b"\x02"))
' >"$T/tty.bin"
testing "a tty exec with a resize" \
    "$C -H content-type:application/x-openshell-frames --data-binary @$T/tty.bin $URL/a/exec | tr -d '\\000-\\010' | grep -ao -e '21 91' -e 'exit_code\":4' | sort -u" \
    '21 91
exit_code":4'
# A client that vanishes mid-exec.
/usr/bin/python3 -c '
import json, struct, sys
i = json.dumps({"command": ["/bin/sleep", "30"]}).encode()
sys.stdout.buffer.write(struct.pack(">BI", 1, len(i)) + i)' >"$T/sleep.bin"
$C --max-time 1 -H content-type:application/x-openshell-frames --data-binary @"$T/sleep.bin" \
    $URL/a/exec >/dev/null 2>&1
check "the vanished client's process is gone" \
    "for _ in \$(seq 50); do ! pgrep -f '^/bin/sleep 30' >/dev/null && exit 0; sleep 0.1; done; exit 1"
# A policy reload.
printf 'version: 1\nnetwork_policies:\n  x:\n    endpoints:\n      - host: example.com\n        port: 443\n    binaries:\n      - path: /usr/bin/curl\n' >"$T/p.yaml"
$C -X PUT -H content-type:application/yaml --data-binary @"$T/p.yaml" $URL/a/policy >/dev/null
check "the revision loads" \
    "for _ in \$(seq 100); do $C $URL/a/policy/revisions | grep -q '\"status\":\"loaded\"' && exit 0; sleep 0.1; done; exit 1"
# The gateway killed and restarted.
kill -9 "$GW"
wait "$GW" 2>/dev/null
sleep 1
start_gw
check "it reconnects after kill -9 of the gateway" \
    "for _ in \$(seq 200); do $C $URL/a | grep -q '\"connected\":true' && exit 0; sleep 0.1; done; exit 1"
testing "exec after the reconnect" "$(x '{"command":["/bin/echo","again"]}') | grep -o again" "again"
kill -TERM "$SV"
wait "$SV"
rc=$?
SV=
if [ $rc -eq 0 ] && ! grep -q -e Sanitizer -e 'runtime error' "$T/sv.err"; then
    tap_ok "SIGTERM: exit 0, no sanitizer report (leaks included)"
else
    tap_not_ok "SIGTERM: exit 0, no sanitizer report" "status $rc" \
        "$(grep -A30 -e Sanitizer -e 'runtime error' "$T/sv.err" | head -40)"
fi
done_testing
