#!/bin/sh
# E2E: the gateway built with AddressSanitizer, UBSan and LeakSanitizer
# (host gcc against build/deps-host), driven through bad input, many
# streams, clients that vanish mid-stream and a SIGTERM: it must exit 0
# with no sanitizer report (no leak, no overflow, no UB).
. "$(dirname "$0")/lib.sh"
asan_setup

if ! command -v gcc >/dev/null || [ ! -f "$HOST_DEPS/lib/libnghttp2.a" ] || [ ! -f "$B/gen/version.h" ]; then
    skip "gateway under ASan" "needs gcc, build/deps-host and a built tree"
    done_testing
    exit $?
fi

# The gateway applet with stand-ins for applets/main.c's shared helpers.
cat >"$T/asan_main.c" <<'EOF'
#include "asan_stubs.h"
int main(int argc, char **argv) { return gateway_main(argc, argv); }
EOF
check "build the ASan gateway" "cd '$TOP' && gcc -std=gnu11 -g -O1 $SAN -D_GNU_SOURCE -Iinclude -Iapplets -I'$TOP/test/e2e' \
    -I'$B/gen' -I'$HOST_DEPS/include' -o '$T/openshell-gateway' '$T/asan_main.c' \
    applets/gateway/*.c src/store.c src/h2.c src/api.c src/buf.c src/err.c src/log.c src/loop.c \
    src/xfuncs.c src/tls.c src/seal.c src/driver/*.c src/policy/*.c -L'$HOST_DEPS/lib' -lnghttp2 -lmbedtls -lmbedx509 \
    -lmbedcrypto -levent_core -lcjson -lyaml -lsqlite3 -lpthread -lm"
if [ ! -x "$T/openshell-gateway" ]; then
    done_testing
    exit $?
fi

S=$T/gw.sock
asan_options
PORT=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
HOME=$T/home "$T/openshell-gateway" --state-dir "$T/state" --socket "$S" --listen "127.0.0.1:$PORT" \
    --compute-driver none --log-level warn 2>"$T/gw.err" &
GW=$!
trap 'kill $GW 2>/dev/null; rm -rf "$T"' EXIT
for _ in $(seq 200); do [ -S "$S" ] && break; sleep 0.05; done
C="curl -sS --max-time 10 --http2-prior-knowledge --unix-socket $S"
SB=http://localhost/v1/workspaces/default/sandboxes
J="-H content-type:application/json"
export C SB J

testing "create" "$C -o /dev/null -w '%{http_code}' $J -d '{\"name\":\"a\",\"labels\":{\"k\":\"v\"}}' $SB" "201"
testing "malformed JSON" "$C -o /dev/null -w '%{http_code}' $J -d '{\"name\":' $SB" "400"
testing "duplicate keys deep" "$C -o /dev/null -w '%{http_code}' $J -d '{\"spec\":{\"template\":{\"labels\":{\"a\":\"1\",\"a\":\"2\"}}}}' $SB" "400"
testing "deep nesting" "/usr/bin/python3 -c 'print(\"{\\\"spec\\\":{\\\"policy\\\":\" + \"[\" * 5000 + \"]\" * 5000 + \"}}\")' | $C -o /dev/null -w '%{http_code}' $J --data-binary @- $SB" "400"
testing "oversized body" "head -c 3000000 /dev/zero | tr '\\0' x | $C -o /dev/null -w '%{http_code}' $J --data-binary @- $SB" "413"
testing "bad selector" "$C -o /dev/null -w '%{http_code}' '$SB?label_selector=%00'" "400"
testing "bad percent-encoding in path" "$C -o /dev/null -w '%{http_code}' '$SB/%zz'" "400"
# Watchers: some stay, some vanish mid-stream.
for i in 1 2 3 4 5; do $C -N "$SB/a/watch" >"$T/w$i.out" 2>/dev/null & done
for i in 1 2 3; do $C -N "$SB/a/watch" >/dev/null 2>&1 & echo $! >"$T/k$i.pid"; done
sleep 0.5
for i in 1 2 3; do kill "$(cat "$T/k$i.pid")" 2>/dev/null; done
testing "policy revision" "$C -o /dev/null -w '%{http_code}' -X PUT -H content-type:application/yaml --data-binary 'version: 1
network_policies: {}' $SB/a/policy" "200"
testing "invalid policy" "$C -o /dev/null -w '%{http_code}' -X PUT -H content-type:application/yaml --data-binary 'version: 1
network_policies: {x: [1, {a: *b}]}' $SB/a/policy" "400"
testing "policy revisions" "$C -s $SB/a/policy/revisions | grep -o '\"total\":[0-9]*'" '"total":1'
testing "patch while watched" "$C -o /dev/null -w '%{http_code}' -X PATCH $J -d '{\"labels\":{}}' $SB/a" "200"
if command -v h2load >/dev/null; then
    # 300 concurrent streams on one connection (the limit is 100: queued),
    # and many connections.
    check "300 streams on one connection" "h2load -B unix:$S -n 600 -c 1 -m 300 http://localhost/v1/workspaces/default/sandboxes | grep -q '600 succeeded'"
    check "50 connections" "h2load -B unix:$S -n 500 -c 50 -m 2 http://localhost/readyz | grep -q '500 succeeded'"
else
    skip "300 streams on one connection" "h2load not installed (nghttp2-client)"
    skip "50 connections" "h2load not installed (nghttp2-client)"
fi
check "garbage instead of HTTP/2" "printf 'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n' | timeout 5 /usr/bin/python3 -c '
import socket,sys
s=socket.socket(socket.AF_UNIX); s.connect(\"$S\"); s.sendall(sys.stdin.buffer.read()); s.recv(100); s.close()'"
M=$T/home/.config/openshell/gateways/openshell/mtls
testing "TLS: health over h2" "curl -sS --max-time 10 --http2 --cacert $M/ca.crt -o /dev/null -w '%{http_code} %{http_version}' https://127.0.0.1:$PORT/healthz" "200 2"
testing "TLS: API without identity is 401" "curl -sS --max-time 10 --http2 --cacert $M/ca.crt -o /dev/null -w '%{http_code}' https://127.0.0.1:$PORT/v1/sandboxes" "401"
check "TLS: plain text on the TLS port is dropped" "printf 'GET / HTTP/1.1\\r\\n\\r\\n' | timeout 5 /usr/bin/python3 -c '
import socket,sys
s=socket.create_connection((\"127.0.0.1\", $PORT)); s.sendall(sys.stdin.buffer.read()); s.recv(100); s.close()'"
testing "delete" "$C -o /dev/null -w '%{http_code}' -X DELETE $SB/a" "200"
# Supervisor sessions, relays (exec both forms, files, back-pressure, clients
# and supervisors vanishing, oversized frames, the relay limit), logs and
# restarts: gateway_session.py against this ASan build (it starts and stops
# its own gateway twice and checks each exits 0, so a leak or a sanitizer
# abort fails it).
check "sessions, relays and logs under ASan (gateway_session.py)" "OPENSHELL_BIN='$T/openshell-gateway' GWSESS_QUICK=1 /usr/bin/python3 '$TOP/test/e2e/gateway_session.py' >'$T/sess.tap' 2>&1; rc=\$?; grep -v '^ok' '$T/sess.tap'; exit \$rc"
kill -TERM $GW
wait $GW
rc=$?
testing_rc "SIGTERM: exit 0 under ASan/LSan" "exit $rc" 0
check "no sanitizer report" "! grep -E 'AddressSanitizer|LeakSanitizer|runtime error' '$T/gw.err'"
[ $rc -ne 0 ] && sed 's/^/# /' "$T/gw.err" | head -40
testing "watchers saw the change and the delete" "grep -c '\"type\":\"deleted\"' $T/w1.out" "1"
done_testing
