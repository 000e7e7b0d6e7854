#!/bin/sh
# bench: create-to-agent-running latency through the API with the local
# compute driver: from sending POST /v1/workspaces/default/sandboxes (curl
# over the unix socket) until the sandboxed command has written its first
# output (it runs inside its openshell-supervisor). Prints p50/p90/max over
# N creates (default 50). Usage: bench/gateway_driver_latency.sh BINARY [N]
set -eu
BIN=$(readlink -f "$1")
N=${2:-50}
T=$(mktemp -d /tmp/openshell-bench.XXXXXX)
ln -s "$BIN" "$T/openshell-gateway"
GW=
cleanup() {
    [ -n "$GW" ] && kill -9 "$GW" 2>/dev/null
    for p in $(cat "$T"/st/sandboxes/*/monitor 2>/dev/null | cut -d' ' -f3); do kill -9 -"$p" 2>/dev/null || true; done
    rm -rf "$T"
}
trap cleanup EXIT
HOME=$T "$T/openshell-gateway" --state-dir "$T/st" --socket "$T/s" --listen none \
    --compute-driver local --log-level warn 2>"$T/log" &
GW=$!
for _ in $(seq 100); do
    curl -s --unix-socket "$T/s" --http2-prior-knowledge http://x/healthz >/dev/null 2>&1 && break
    sleep 0.05
done
/usr/bin/python3 - "$T" "$N" <<'EOF2'
import glob, json, os, subprocess, sys, time
t, n = sys.argv[1], int(sys.argv[2])
u = "http://x/v1/workspaces/default/sandboxes"
curl = ["curl", "-sS", "--unix-socket", t + "/s", "--http2-prior-knowledge"]
lat = []
for i in range(n):
    body = json.dumps({"name": "b%d" % i, "spec": {"command": ["/bin/sh", "-c", "echo up; sleep 30"]}})
    t0 = time.monotonic()
    out = subprocess.run(curl + ["-H", "content-type: application/json", "-d", body, u],
                         capture_output=True, text=True).stdout
    sid = json.loads(out)["metadata"]["id"]
    path = "%s/st/sandboxes/%s/output" % (t, sid)
    while True:
        try:
            if os.path.getsize(path) > 0:
                break
        except OSError:
            pass
        if time.monotonic() - t0 > 10:
            sys.exit("sandbox %s never ran" % sid)
        time.sleep(0.0005)
    lat.append((time.monotonic() - t0) * 1000)
    subprocess.run(curl + ["-X", "DELETE", u + "/b%d" % i], capture_output=True)
lat.sort()
print("create-to-agent-running over %d creates: p50 %.1f ms, p90 %.1f ms, max %.1f ms (budget p50 < 50 ms)"
      % (n, lat[n // 2], lat[int(n * 0.9)], lat[-1]))
EOF2
