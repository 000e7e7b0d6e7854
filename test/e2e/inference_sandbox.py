#!/usr/bin/python3
# inference_sandbox.py: credentials and inference.local inside a real
# sandbox (`openshell run`), the proxy started by the supervisor and given
# the credentials document with --proxy-arg=--credentials=FILE (a root-only
# file the agent cannot read; the gateway path sends the same document over
# the control channel). Clients run inside the sandbox as the agent: curl
# with the placeholder from its environment, curl and node (the official
# `openai` npm package, installed by this test into the sandbox's workdir)
# against https://inference.local. The upstreams (proxy_cred_servers.py)
# run in a network namespace this test creates and record what they got.
#
# Then the secrets are looked for everywhere: the agent's environment and
# /proc, every file the agent can read (/sandbox, /tmp, /etc), the run's
# output and logs (the proxy's decision log included) and the workdir.
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import e2elib

BIN = os.environ.get("OPENSHELL_BIN", "")
point = e2elib.Tap(diag_lines=30)
SECRET = "ghp-SANDBOX-SECRET-77"
KEY = "sk-SANDBOX-BACKEND-88"
PH = "openshell:resolve:env:GITHUB_TOKEN"


class Env:
    pass


E = Env()


def setup():
    # Outside /tmp: the proxy runs in the sandbox's mount namespace.
    E.tmp = tempfile.mkdtemp(prefix="openshell-infsb.", dir="/var/tmp")
    os.chmod(E.tmp, 0o755)
    E.wd = E.tmp + "/wd"
    os.mkdir(E.wd)
    os.chmod(E.wd, 0o777)
    E.net = e2elib.Netns("is").create()
    E.ns, E.up = E.net.ns, E.net.up
    t = E.tmp
    e2elib.make_test_ca(t, "openshell infsb test CA", ["api.test"], [E.up])
    E.uplog = t + "/upstream.log"
    open(E.uplog, "w").close()
    E.servers = e2elib.start_server(
        E.ns, ["proxy_cred_servers.py", E.up, t + "/srv.pem", t + "/srv.key", E.uplog],
        "upstreams")
    E.policy = t + "/policy.yaml"
    with open(E.policy, "w") as f:
        f.write("""version: 1
network_policies:
  api:
    endpoints:
      - host: api.test
        port: 8080
      - host: other.test
        port: 8080
    binaries:
      - path: /usr/bin/curl
""")
    # The secret file: root only, in a root-only directory.
    sec = t + "/secret"
    os.mkdir(sec, 0o700)
    E.cred = sec + "/creds.json"
    doc = {"revision": 1, "environment": {"GITHUB_TOKEN": PH},
           "credentials": [{"provider": "github", "key": "GITHUB_TOKEN", "value": SECRET,
                            "endpoints": [{"host": "api.test", "port": 8080}]}],
           "inference": {"provider": "openai", "api": "openai",
                         "base_url": "http://%s:9080/v1" % E.up, "model": "route-model",
                         "api_key": KEY}}
    fd = os.open(E.cred, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, json.dumps(doc).encode())
    os.close(fd)
    E.outputs = []


def teardown():
    e2elib.stop(getattr(E, "servers", None))
    if hasattr(E, "net"):
        E.net.delete()
    if hasattr(E, "tmp"):
        shutil.rmtree(E.tmp, ignore_errors=True)


def sandbox(script, timeout=60):
    args = [BIN, "run", "--policy", E.policy, "--workdir", E.wd, "--timeout", str(timeout - 5),
            "--env", "GITHUB_TOKEN=" + PH,
            "--proxy-arg=--resolve=api.test:" + E.up,
            "--proxy-arg=--resolve=other.test:" + E.up,
            "--proxy-arg=--credentials=" + E.cred, "--log-format", "text",
            "--", "sh", "-c", script]
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    E.outputs.append(r.stdout + r.stderr)
    return r


def uplog():
    with open(E.uplog) as f:
        return [json.loads(x) for x in f if x.strip()]


def hdr(rec, name):
    for k, v in rec.get("headers", []):
        if k.lower() == name.lower():
            return v
    return None


def split(s):
    """S quoted in two halves for sh: the script itself never holds S."""
    return "'%s''%s'" % (s[:5], s[5:])


def tests():
    n0 = len(uplog())
    # The recorder echoes what it got (the secret): that answer is not shown.
    r = sandbox('curl -sS -o /dev/null -H "Authorization: Bearer $GITHUB_TOKEN" '
                'http://api.test:8080/user; echo; curl -sS -o /dev/null -w "%{http_code}\\n" '
                '-H "Authorization: Bearer $GITHUB_TOKEN" http://other.test:8080/leak; '
                'echo "env=$GITHUB_TOKEN"')
    recs = uplog()[n0:]
    point(recs and hdr(recs[0], "Authorization") == "Bearer " + SECRET and
          recs[0]["target"] == "/user",
          "in a sandbox: curl's placeholder from the environment is replaced upstream",
          (r.stdout, r.stderr[-800:]))
    point("\n403\n" in r.stdout and not any(x["target"] == "/leak" for x in recs),
          "in a sandbox: the same placeholder to an unbound host -> 403, nothing sent",
          r.stdout)
    point("env=" + PH in r.stdout, "the agent's environment holds the placeholder", r.stdout)

    n0 = len(uplog())
    r = sandbox("curl -sS https://inference.local/v1/chat/completions "
                "-H 'Content-Type: application/json' -H 'Authorization: Bearer nope' "
                "-d '{\"model\":\"x\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'")
    recs = uplog()[n0:]
    point("hello from backend" in r.stdout and recs and
          hdr(recs[-1], "Authorization") == "Bearer " + KEY and
          json.loads(recs[-1]["body"]).get("model") == "route-model",
          "in a sandbox: curl https://inference.local (proxy CA trusted through the bundle)",
          (r.stdout, r.stderr[-800:]))

    if shutil.which("node") and shutil.which("npm"):
        inst = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent",
                               "--prefix", E.wd, "openai@6", "undici@6"],
                              capture_output=True, text=True, timeout=300)
        if inst.returncode:
            point.skip("in a sandbox: node openai SDK", "npm install failed")
        else:
            subprocess.run(["chmod", "-R", "a+rX", E.wd])
            with open(E.wd + "/t.js", "w") as f:
                f.write(r"""
const { fetch, EnvHttpProxyAgent } = require('/sandbox/node_modules/undici');
const OpenAI = require('/sandbox/node_modules/openai');
const agent = new EnvHttpProxyAgent();
const client = new OpenAI({ baseURL: 'https://inference.local/v1', apiKey: 'unused',
  fetch: (u, o) => fetch(u, { ...o, dispatcher: agent }) });
(async () => {
  const s = await client.chat.completions.create({ model: 'm', stream: true,
    messages: [{ role: 'user', content: 'stream' }] });
  const d = [];
  for await (const ch of s) d.push([Date.now() / 1000, ch.t, ch.choices[0].delta.content]);
  console.log(JSON.stringify(d));
})().catch(e => { console.error(String(e)); process.exit(1); });
""")
            r = sandbox("node /sandbox/t.js")
            try:
                d = json.loads(r.stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                d = []
            point(len(d) == 5 and d[0][0] < d[-1][1],
                  "in a sandbox: node openai SDK streams from inference.local chunk by chunk",
                  (r.stdout[-500:], r.stderr[-800:]))
    else:
        point.skip("in a sandbox: node openai SDK", "node/npm not installed")

    # Where could the secrets be? Look from inside, as the agent.
    r = sandbox("cat /proc/self/environ | tr '\\0' '\\n'; env; "
                "cat %s 2>&1; ls -la %s 2>&1; "
                "grep -rIl -e %s -e %s /sandbox /tmp /etc /var/tmp 2>/dev/null; "
                "for p in /proc/[0-9]*; do cat $p/environ $p/cmdline 2>/dev/null | "
                "tr '\\0' '\\n'; done; echo done"
                % (E.cred, os.path.dirname(E.cred), split(SECRET), split(KEY)))
    point("done" in r.stdout and SECRET not in r.stdout and KEY not in r.stdout,
          "the agent finds no secret in its environment, /proc, or any file it can read",
          r.stdout[-1500:])
    everything = "\n".join(E.outputs)
    leaks = [s for s in (SECRET, KEY) if s in everything]
    for s in leaks:
        i = everything.index(s)
        print("# context: " + repr(everything[max(0, i - 300):i + 100]))
    point(not leaks, "no secret in any run's output or logs (decision log included)", leaks)
    found = subprocess.run(["grep", "-rIl", "-e", SECRET, "-e", KEY, E.wd],
                           capture_output=True, text=True).stdout.strip()
    point(not found, "no secret in the sandbox's workdir after the runs", found)


def main():
    if not BIN or not os.access(BIN, os.X_OK):
        print("1..0 # SKIP OPENSHELL_BIN not set")
        return 0
    if os.geteuid() != 0 or not shutil.which("curl"):
        print("1..0 # SKIP needs root and curl")
        return 0
    try:
        setup()
        tests()
    except Exception:
        import traceback
        point(False, "test harness", traceback.format_exc())
    finally:
        teardown()
    return point.plan()


if __name__ == "__main__":
    sys.exit(main())
