#!/bin/sh
# supervisor_session_userns.sh: the gateway session run by an unprivileged
# user (uid/gid 65534 through setpriv when we are root): gateway and
# supervisor as that user, the sandbox in a user namespace; exec runs as the
# user, inside the sandbox's restrictions, and upload/download work.
. "$(dirname "$0")/lib.sh"

if [ "$(id -u)" != 0 ]; then
    U=""
elif ! command -v setpriv >/dev/null 2>&1; then
    skip "unprivileged gateway session" "setpriv (util-linux) not installed"
    done_testing
    exit
else
    U="setpriv --reuid=65534 --regid=65534 --clear-groups"
fi
if ! $U unshare -U true 2>/dev/null; then
    skip "unprivileged gateway session" "unprivileged user namespaces are disabled"
    done_testing
    exit
fi
if ! command -v curl >/dev/null; then
    skip "unprivileged gateway session" "needs curl"
    done_testing
    exit
fi
ME=$($U id -u)
chmod 755 "$T"
D="$T/u"
mkdir -p "$D/sb" "$D/w"
[ -z "$U" ] || chown -R 65534:65534 "$D"
S="$D/gw.sock"
GW= SV=
stop() {
    [ -n "$SV" ] && kill "$SV" 2>/dev/null
    [ -n "$GW" ] && kill "$GW" 2>/dev/null
    sleep 0.2
    rm -rf "$T"
}
trap stop EXIT
HOME=$D $U openshell-gateway --state-dir "$D/st" --socket "$S" --listen none \
    --compute-driver none --log-format text 2>"$D/gw.log" &
GW=$!
C="$U curl -sS --unix-socket $S --http2-prior-knowledge"
URL=http://x/v1/workspaces/default/sandboxes
for _ in $(seq 100); do $C http://x/healthz >/dev/null 2>&1 && break; sleep 0.05; done
ID=$($C -H content-type:application/json -d '{"name":"u","spec":{}}' $URL |
    sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
$C -X POST $URL/u/token | sed -n 's/.*"token":"\([^"]*\)".*/\1/p' >"$D/sb/token"
chmod 600 "$D/sb/token"
[ -z "$U" ] || chown 65534:65534 "$D/sb/token"
$U openshell-supervisor --gateway "unix:$S" --sandbox-id "$ID" --token-file "$D/sb/token" \
    --name u --workdir "$D/w" --idle >"$D/sv.out" 2>"$D/sv.err" &
SV=$!
for _ in $(seq 100); do $C $URL/u | grep -q '"connected":true' && break; sleep 0.05; done
export C URL
x() { echo "$C -H content-type:application/json -d '{\"command\":$1}' $URL/u/exec"; }

check "the unprivileged supervisor holds a session" "$C $URL/u | grep -q '\"connected\":true'"
testing "exec runs as the invoking user" \
    "$(x '["/usr/bin/id","-u"]') | sed -n 's/.*\"stdout\":\"\([0-9]*\).*/\1/p'" "$ME"
testing "exec is in the sandbox (hostname, /sandbox)" \
    "$(x '["/bin/sh","-c","hostname; pwd"]') | sed -n 's/.*\"stdout\":\"\([^\"]*\)\".*/\1/p'" \
    'u\n/sandbox\n'
testing "writes outside /sandbox fail" \
    "$(x '["/bin/sh","-c","touch /usr/x 2>/dev/null || echo denied"]') | grep -o denied" "denied"
testing "no capabilities in the exec'd process" \
    "$(x '["/bin/sh","-c","grep CapEff /proc/self/status"]') | grep -o 'CapEff:\\\\t[0-9a-f]*'" \
    'CapEff:\t0000000000000000'
mkdir -p "$D/src/d" && echo data >"$D/src/d/f"
tar -C "$D/src" -cf "$D/up.tar" d
[ -z "$U" ] || chown -R 65534:65534 "$D/src" "$D/up.tar"
testing "upload as the unprivileged user" \
    "$C -X PUT -H content-type:application/x-tar --data-binary @$D/up.tar '$URL/u/files?path=/sandbox/in' && cat $D/w/in/d/f" \
    '{"ok":true}
data'
testing "download as the unprivileged user" "$C '$URL/u/files?path=/sandbox/in/d' | tar -tf -" \
    "d/
d/f"
kill "$SV"
wait "$SV"
rc=$?
SV=
if [ $rc -eq 0 ]; then tap_ok "SIGTERM ends an idle sandbox with status 0"; else
    tap_not_ok "SIGTERM ends an idle sandbox" "status $rc" "$(tail -5 "$D/sv.err")"; fi
done_testing
