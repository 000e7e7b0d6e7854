#!/bin/sh
# E2E: openshell-gateway --compute-driver local. A sandbox created with a
# command runs in its own openshell-supervisor (detached): phases ready ->
# exited with the main process's exit status, delete stops it and removes
# its state, and a gateway killed with -9 and restarted finds a running
# sandbox again.
. "$(dirname "$0")/lib.sh"

if ! command -v curl >/dev/null; then
    skip "gateway compute driver" "needs curl"
    done_testing
    exit $?
fi
export HOME="$T/home"
ST=$T/state
S=$T/gw.sock
GW=
trap '[ -n "$GW" ] && kill -9 $GW 2>/dev/null; for p in $(cat $ST/sandboxes/*/monitor 2>/dev/null | cut -d" " -f3); do kill -9 -$p 2>/dev/null; done; rm -rf "$T"' EXIT
start() {
    openshell-gateway --state-dir "$ST" --socket "$S" --listen none --compute-driver local \
        --log-format text 2>>"$T/gw.log" &
    GW=$!
    for _ in $(seq 100); do
        curl -s --unix-socket "$S" --http2-prior-knowledge http://x/healthz >/dev/null 2>&1 && return 0
        kill -0 $GW 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}
U=http://x/v1/workspaces/default/sandboxes
C="curl -sS --unix-socket $S --http2-prior-knowledge"
# phase NAME [WANT]: the sandbox's phase; with WANT, wait (15 s) for it
# (ready needs the supervisor's session, which reconnects with backoff).
cat >"$T/phase" <<EOS
#!/bin/sh
for _ in \$(seq 300); do
    p=\$($C "$U/\$1" | sed -n 's/.*"phase":"\\([a-z]*\\)".*/\\1/p')
    [ -z "\$2" ] || [ "\$p" = "\$2" ] && break
    sleep 0.05
done
echo "\$p"
EOS
chmod +x "$T/phase"
export C U

if start; then tap_ok "gateway starts with the local driver"; else
    tap_not_ok "gateway starts with the local driver" "$(cat "$T/gw.log")"; done_testing; exit 1; fi
testing "the driver is listed" "$C http://x/v1/gateway | grep -o '\"compute_drivers\":\[[^]]*\]'" '"compute_drivers":["local"]'
testing "create with a command: 201" "$C -o /dev/null -w '%{http_code}' -H content-type:application/json -d '{\"name\":\"three\",\"spec\":{\"command\":[\"/bin/sh\",\"-c\",\"exit 3\"]}}' $U" "201"
testing "it exits" "$T/phase three exited" "exited"
testing "with the main process's exit status" "$C $U/three | grep -o '\"exit_code\":[0-9-]*'" '"exit_code":3'
testing "create a long one: 201" "$C -o /dev/null -w '%{http_code}' -H content-type:application/json -d '{\"name\":\"long\",\"spec\":{\"command\":[\"/bin/sleep\",\"30\"]}}' $U" "201"
testing "it is ready (its supervisor connected)" "$T/phase long ready" "ready"
SPID=$($C $U/long | sed -n 's/.*"supervisor_pid":\([0-9]*\).*/\1/p')
export SPID
check "its monitor runs outside the gateway's session" "[ \"\$(ps -o sid= -p $SPID)\" != \"\$(ps -o sid= -p $GW)\" ]"
check "the supervisor runs the command (sleep 30 in the session)" "ps -eo sid,args | grep \"^ *\$(ps -o sid= -p $SPID | tr -d ' ') \" | grep -q 'sleep 30'"
kill -9 $GW; wait $GW 2>/dev/null; GW=
check "the sandbox survives kill -9 of the gateway" "kill -0 $SPID"
if start; then tap_ok "gateway restarts"; else tap_not_ok "gateway restarts" "$(cat "$T/gw.log")"; fi
testing "the restarted gateway finds it running (its supervisor reconnects)" "$T/phase long ready" "ready"
testing "and the exited one exited" "$T/phase three" "exited"
ID=$($C $U/long | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
testing "delete stops it" "$C -X DELETE $U/long" '{"deleted":true}'
check "its processes are gone (or zombies)" "! ps -o stat= -p $SPID | grep -qv Z && ! ps -eo stat,args | grep -v '^Z' | grep -q ' /bin/sleep 30\$'"
check "its state is removed" "[ ! -e $ST/sandboxes/$ID ]"
testing "delete of an exited sandbox" "$C -X DELETE $U/three" '{"deleted":true}'
testing_rc "bad --compute-driver is a usage error" "openshell-gateway --compute-driver docker 2>/dev/null" 2
done_testing
