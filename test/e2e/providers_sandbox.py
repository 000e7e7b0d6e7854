#!/usr/bin/python3
"""E2E: providers end to end through the gateway (local compute driver):
a provider attached at `sandbox create --provider`, the supervisor fetching
GET /v1/supervisor/credentials and handing it to its proxy. Inside the
sandbox: the environment holds the placeholder, never the value; curl to a
test upstream (in a network namespace this test creates) gets the real key
injected; rotating the credential (`provider update`) reaches the running
sandbox without a restart; `inference update` reaches inference.local
within a second (measured); detach stops the injection. Afterwards the
secrets are looked for in the sandbox's logs and the state directory.
Prints TAP; skips without root or when supervisors do not connect."""
import json
import os
import subprocess
import sys
import time

try:
    import yaml
except ImportError:
    yaml = None

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2elib  # noqa: E402
from cli_lib import Cli  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SECRET = "svc-SECRET-first-41"
SECRET2 = "svc-SECRET-rotated-42"
MKEY = "sk-MODEL-backend-43"
PH = "openshell:resolve:env:SVC_TOKEN"

cli = Cli("openshell-provsb.", driver="local")
T, osh, tap, show = cli.T, cli.osh, cli.tap, cli.show
E = {}


def uplog():
    with open(E["uplog"]) as f:
        return [json.loads(x) for x in f if x.strip()]


def hdr(rec, name):
    for k, v in rec["headers"]:
        if k.lower() == name.lower():
            return v
    return None


def sx(script, timeout=30):
    return osh("sandbox", "exec", "ps", "--", "sh", "-c", script, timeout=timeout)


def wait_until(fn, secs):
    end = time.time() + secs
    while time.time() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    return None


def setup():
    net = e2elib.Netns("pv").create()
    E["net"] = net
    up = net.up
    e2elib.make_test_ca(T, "openshell provsb test CA", ["api.test"], [up])
    E["uplog"] = T + "/upstream.log"
    open(E["uplog"], "w").close()
    E["srv"] = subprocess.Popen(
        ["ip", "netns", "exec", net.ns, "/usr/bin/python3", HERE + "/proxy_cred_servers.py", up,
         T + "/srv.pem", T + "/srv.key", E["uplog"]],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if E["srv"].stdout.readline().strip() != "ready":
        raise RuntimeError("upstreams did not start")
    E["policy"] = T + "/policy.yaml"
    with open(E["policy"], "w") as f:
        base = osh("policy", "default").stdout.replace("network_policies: {}\n", "")
        f.write(base)
        f.write("""network_policies:
  svc:
    endpoints:
      - host: %s
        port: 8080
    binaries:
      - path: /usr/bin/curl
""" % up)
    r = osh("gateway", "start", "--listen", "none")
    tap(r.returncode == 0, "gateway start (local driver)", show(r))
    r = osh("provider", "create", "--name", "svc", "--type", "generic", "--credential",
            "SVC_TOKEN", "--config", "endpoints=%s:8080" % up, env={"SVC_TOKEN": SECRET})
    tap(r.returncode == 0, "provider create (generic, bound to the upstream)", show(r))
    r = osh("provider", "create", "--name", "model", "--type", "openai", "--credential",
            "OPENAI_API_KEY=" + MKEY, "--config", "OPENAI_BASE_URL=http://%s:9080/v1" % up)
    tap(r.returncode == 0, "provider create (openai, a test backend)", show(r))
    r = osh("inference", "set", "--provider", "model", "--model", "model-A")
    tap(r.returncode == 0 and "Validated Endpoints" in r.stdout,
        "inference set: verified against the backend", show(r))
    # Created through the API with the policy in its spec: the CLI's
    # --policy stores it as revision 1 right after the record, and a
    # supervisor starting meanwhile can report that revision loaded while
    # its proxy keeps the policy it started with (seen in ~1 of 4 sandboxes;
    # reported to the session work). The spec path has no such window.
    pol = yaml.safe_load(open(E["policy"]))
    body = json.dumps({"name": "ps", "spec": {"providers": ["svc"], "policy": pol}})
    r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "--unix-socket",
                        T + "/state/openshell/gateway/gateway.sock", "-H",
                        "content-type: application/json", "--data-binary", body,
                        "http://localhost/v1/workspaces/default/sandboxes"],
                       capture_output=True, text=True, timeout=30)
    if '"name":"ps"' not in r.stdout:
        tap(False, "sandbox ps created with spec.providers and spec.policy", r.stdout + r.stderr)
        return False
    # Created without the CLI's wait: exec once it is ready.
    r = wait_until(lambda: (lambda x: x if x.returncode == 0 else None)(sx("true")), 30) or \
        sx("true")
    if r.returncode == 1 and "no connected supervisor" in r.stderr:
        cli.skip("providers in sandboxes", "supervisors do not connect to this gateway")
        return False
    tap(r.returncode == 0, "sandbox create --provider svc, then exec", show(r))
    return r.returncode == 0


def curl_svc(path):
    return sx("curl -sS -o /dev/null -w '%%{http_code}' -H \"Authorization: Bearer $SVC_TOKEN\" "
              "http://%s:8080%s" % (E["net"].up, path))


def injected(path):
    recs = [x for x in uplog() if x["target"] == path]
    return hdr(recs[-1], "Authorization") if recs else None


def tests():
    r = sx("echo \"SVC_TOKEN=$SVC_TOKEN\"; env")
    tap(("SVC_TOKEN=" + PH) in r.stdout and SECRET not in r.stdout,
        "the sandbox's environment holds the placeholder, never the value", show(r))

    # The agent (the sandbox's main process) starts with the placeholder.
    r = osh("sandbox", "create", "--name", "pa", "--provider", "svc", "--policy", E["policy"],
            "--detach", "--", "sh", "-c", "env > /tmp/agent.env; exec sleep 600", timeout=120)
    got = wait_until(lambda: osh("sandbox", "exec", "pa", "--", "cat", "/tmp/agent.env").stdout,
                     20) or ""
    tap(r.returncode == 0 and ("SVC_TOKEN=" + PH) in got and SECRET not in got,
        "the agent's own environment holds the placeholder, never the value", show(r) + got)
    osh("sandbox", "delete", "pa")

    # Fetching the document is asynchronous to create: retry until the
    # proxy has it (bounded).
    last = []

    def first():
        last[:] = [curl_svc("/first")]
        return injected("/first") == "Bearer " + SECRET
    ok = wait_until(first, 15)
    tap(ok, "curl in the sandbox: the proxy injected the real key upstream",
        repr(uplog()[-2:]) + "\n" + (show(last[0]) if last else "") + "\n" +
        "\n".join(x for x in osh("sandbox", "logs", "ps", "--tail", "3000").stdout.splitlines()
                  if "decision" not in x)[-3000:])

    t0 = time.time()
    r = osh("provider", "update", "svc", "--credential", "SVC_TOKEN=" + SECRET2)
    n = [0]

    def rotated():
        n[0] += 1
        curl_svc("/rot%d" % n[0])
        return injected("/rot%d" % n[0]) == "Bearer " + SECRET2
    ok = wait_until(rotated, 15)
    tap(r.returncode == 0 and ok,
        "provider update: the running sandbox injects the new value (no restart, %.2fs)" %
        (time.time() - t0), show(r) + repr(uplog()[-2:]))

    body = json.dumps({"model": "client-model", "messages": [{"role": "user",
                                                              "content": "hi"}]})
    infer = ("curl -sS https://inference.local/v1/chat/completions -H 'Content-Type: "
             "application/json' -H 'Authorization: Bearer nope' -d '%s'" % body)

    def routed(model):
        def f():
            sx(infer)
            recs = [x for x in uplog() if x["port"] == 9080 and x["method"] == "POST"]
            if recs and json.loads(recs[-1]["body"]).get("model") == model:
                return recs[-1]
            return None
        return f
    rec = wait_until(routed("model-A"), 15)
    tap(rec is not None and hdr(rec, "Authorization") == "Bearer " + MKEY,
        "inference.local in the sandbox: the route's model and key", repr(uplog()[-1:]))

    r = osh("inference", "update", "--model", "model-B")
    t0 = time.time()
    # Requests straight to inference.local (one exec each) until the new
    # model shows: the figure includes one exec round trip.
    rec = wait_until(routed("model-B"), 15)
    dt = time.time() - t0
    tap(r.returncode == 0 and rec is not None,
        "inference update reaches the running sandbox (%.2fs, exec round trip included)" % dt,
        show(r))
    print("# figure: route change -> first request with the new model: %.3f s" % dt)
    tap(rec is not None and dt < 1.0 + 2.0,
        "... within a second plus the measuring exec's own latency", "%.3f s" % dt)

    r = osh("sandbox", "provider", "detach", "ps", "svc")
    n2 = [0]

    def refused():
        n2[0] += 1
        out = curl_svc("/gone%d" % n2[0]).stdout.strip()
        return out if out.startswith("5") or out.startswith("4") else None
    code = wait_until(refused, 15)
    tap(r.returncode == 0 and code is not None and
        not any(x["target"].startswith("/gone") and SECRET2 in json.dumps(x)
                for x in uplog()),
        "detach: the placeholder is no longer resolved (status %s), nothing leaks" % code,
        show(r))


def leaks():
    logs = osh("sandbox", "logs", "ps", "--tail", "10000").stdout
    hits = [s for s in (SECRET, SECRET2, MKEY) if s in logs]
    tap(not hits, "no value in the sandbox's logs", hits)
    hits = []
    for root, _, files in os.walk(T + "/state"):
        for f in files:
            p = os.path.join(root, f)
            try:
                data = open(p, "rb").read()
            except OSError:
                continue
            hits += ["%s in %s" % (s, p) for s in (SECRET, SECRET2, MKEY) if s.encode() in data]
    tap(not hits, "no value in clear anywhere under the gateway's state", hits)


def main():
    if os.geteuid() != 0:
        print("1..0 # SKIP needs root (sandboxes and a network namespace)")
        return 0
    if yaml is None:
        print("1..0 # SKIP needs python3-yaml (the policy as JSON for the API)")
        return 0
    try:
        if setup():
            tests()
            leaks()
    finally:
        e2elib.stop(E.get("srv"))
        if "net" in E:
            E["net"].delete()
        cli.finish()


if __name__ == "__main__":
    sys.exit(main())
