#!/bin/sh
# bench/exec: exec through the gateway into a running sandbox (supervisor
# session + relay + PID 1 spawn), over the gateway's unix socket. The
# sandbox is started by the gateway's local compute driver (no command: an
# idle supervisor).
#   * round trip of `exec /bin/true` (JSON API): p50/p90/max of curl's own
#     time_total over N calls (default 200; curl's process start excluded);
#   * relay throughput: 256 MiB of stdout (head -c from /dev/zero inside the
#     sandbox) through the frames API, MiB/s from request to the last frame.
# Usage: bench/exec/exec_bench.sh BUILD_DIR [N]   (needs root: a sandbox)
set -eu
B=$(readlink -f "$1")
N=${2:-200}
T=$(mktemp -d /tmp/openshell-bench-exec.XXXXXX)
GW=
cleanup() {
    [ -n "$GW" ] && kill -9 "$GW" 2>/dev/null
    # The driver's monitors outlive the gateway by design.
    for m in "$T"/st/sandboxes/*/monitor; do
        [ -f "$m" ] || continue
        set -- $(cat "$m")
        kill -9 "$1" 2>/dev/null || true
        kill -9 -"$3" 2>/dev/null || true
    done
    sleep 0.2
    rm -rf "$T"
}
trap cleanup EXIT
"$B/bin/openshell-gateway" --state-dir "$T/st" --socket "$T/s" --listen none \
    --compute-driver local --log-level warn 2>"$T/gw.log" &
GW=$!
C="curl -sS --unix-socket $T/s --http2-prior-knowledge"
U=http://x/v1/workspaces/default/sandboxes
for _ in $(seq 100); do $C http://x/healthz >/dev/null 2>&1 && break; sleep 0.05; done
$C -H content-type:application/json -d '{"name":"b","spec":{}}' $U >/dev/null
for _ in $(seq 100); do
    $C $U/b | grep -q '"connected":true' && break
    sleep 0.05
done
/usr/bin/python3 - "$T" "$N" <<'PY'
import json, struct, subprocess, sys, time
t, n = sys.argv[1], int(sys.argv[2])
u = "http://x/v1/workspaces/default/sandboxes/b/exec"
curl = ["curl", "-sS", "--unix-socket", t + "/s", "--http2-prior-knowledge"]
lat = []
for i in range(n + 5):
    r = subprocess.run(curl + ["-o", "/dev/null", "-w", "%{http_code} %{time_total}",
                               "-H", "content-type: application/json",
                               "-d", '{"command":["/bin/true"]}', u],
                       capture_output=True, text=True)
    code, secs = r.stdout.split()
    assert code == "200", r
    if i >= 5:
        lat.append(float(secs) * 1000)
lat.sort()
print("exec /bin/true round trip (JSON API, %d calls): p50 %.2f ms  p90 %.2f ms  max %.2f ms"
      % (n, lat[n // 2], lat[n * 9 // 10], lat[-1]))
size = 256 << 20
init = json.dumps({"command": ["/usr/bin/head", "-c", str(size), "/dev/zero"]}).encode()
body = struct.pack(">BI", 1, len(init)) + init + struct.pack(">BI", 7, 1) + b"\x02"
t0 = time.monotonic()
p = subprocess.Popen(curl + ["-H", "content-type: application/x-openshell-frames",
                             "--data-binary", "@-", "-o", "-", u],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
p.stdin.write(body)
p.stdin.close()
got, last = 0, b""
buf = b""
while True:
    d = p.stdout.read1(1 << 20)
    if not d:
        break
    got += len(d)
    last = (last + d)[-64:]
p.wait()
dt = time.monotonic() - t0
ok = b'{"exit_code":0}' in last
print("relay throughput: %d MiB of stdout in %.2f s = %.0f MiB/s (%s)"
      % (size >> 20, dt, (size >> 20) / dt, "EXIT 0" if ok else "NO EXIT FRAME"))
PY
$C -X DELETE $U/b >/dev/null
