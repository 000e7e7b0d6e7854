#!/usr/bin/python3
# sandbox_net.py: the egress proxy wired into `openshell run`, with real
# clients INSIDE the sandbox (curl, git, /usr/bin/python3 urllib, node)
# against upstream servers in a network namespace this test creates (a veth
# pair with private 10.x addresses on both ends; only those addresses are
# used, everything is removed on exit). The policy declares the test's
# hosts; `--proxy-arg=--resolve=HOST:ADDR` maps them to the upstream, and
# the upstream's TLS certificate comes from a test CA (--upstream-ca).
#
# Covers: HTTPS through CONNECT (TLS terminated with the sandbox CA the
# agent trusts through the injected variables) and plain-HTTP forwarding;
# allowed and denied hosts, ports and binaries; ancestor authorisation
# (bash -> curl with only bash listed, and the reverse); argv spoofing
# (exec -a); a socket shared with another program; a binary swapped at the same path after its first use; SSRF
# (loopback, metadata, a wildcard name resolving to a private address);
# GET allowed and POST denied on one host with the exact deny body; git
# clone over HTTPS (smart HTTP, protocol v2); python urllib; node fetch with
# undici's EnvHttpProxyAgent (from npm); node (through
# an explicit CONNECT, and fetch without proxy support failing at once); a
# policy edit picked up within a second, closing a kept-alive tunnel; an
# invalid edit (kept, or deny-all); the [::1] listener;
# direct connects failing at once (ENETUNREACH); the proxy ending with the
# sandbox.
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import e2elib

BIN = os.environ.get("OPENSHELL_BIN", "")
point = e2elib.Tap(diag_lines=40)


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=kw.pop("timeout", 60), **kw)


class Env:
    pass


E = Env()

POLICY = """version: 1
network_policies:
  plain:
    endpoints:
      - host: api.test
        port: 8080
    binaries:
      - path: /usr/bin/curl
  inspected:
    endpoints:
      - host: api.test
        port: 8443
        protocol: rest
        enforcement: enforce
        access: read-only
    binaries:
      - path: /usr/bin/curl
      - path: /usr/bin/python3
      - path: /usr/bin/node
  py:
    endpoints:
      - host: py.test
        port: 8080
    binaries:
      - path: /usr/bin/python3
  anc:
    endpoints:
      - host: anc.test
        port: 8080
    binaries:
      - path: /usr/bin/bash
  git:
    endpoints:
      - host: api.test
        port: 9443
    binaries:
      - path: /usr/bin/git
  swap:
    endpoints:
      - host: swap.test
        port: 8080
    binaries:
      - path: /sandbox/tools/**
  ssrf:
    endpoints:
      - host: loop.test
        port: 8080
      - host: metadata.test
        port: 80
      - host: "*.wild.test"
        port: 8080
    binaries:
      - path: /usr/bin/curl
%(keep)s"""

KEEP = """  keep:
    endpoints:
      - host: keep.test
        port: 8080
    binaries:
      - path: /usr/bin/python3
"""


def write_policy(keep=True):
    # Editors write a new file and rename it over the old one.
    tmp = E.policy + ".tmp"
    with open(tmp, "w") as f:
        f.write(POLICY % {"keep": KEEP if keep else ""})
    os.rename(tmp, E.policy)


def setup():
    # Outside /tmp: the sandbox has a private /tmp, but the proxy (inside the
    # sandbox's mount namespace) must read the test CA.
    E.tmp = tempfile.mkdtemp(prefix="openshell-sbnet.", dir="/var/tmp")
    os.chmod(E.tmp, 0o755)
    E.wd = E.tmp + "/wd"
    os.mkdir(E.wd)
    os.chmod(E.wd, 0o777)
    E.net = e2elib.Netns("sn").create()
    E.ns, E.up = E.net.ns, E.net.up
    t = E.tmp
    e2elib.make_test_ca(t, "openshell sandbox test CA", ["api.test"])
    # A git repository to clone.
    src = t + "/src"
    gitenv = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
                  GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t", HOME=t)
    for c in (["git", "init", "-q", src],
              ["sh", "-c", "echo 'hello from the test repository' > %s/README" % src],
              ["git", "-C", src, "add", "README"],
              ["git", "-C", src, "commit", "-q", "-m", "first"],
              ["git", "clone", "-q", "--bare", src, t + "/git/repo.git"]):
        r = run(c, env=gitenv)
        if r.returncode:
            raise RuntimeError("%s: %s" % (" ".join(c), r.stderr))
    E.uplog = t + "/upstream.log"
    open(E.uplog, "w").close()
    E.servers = e2elib.start_server(
        E.ns, ["proxy_servers.py", E.up, t + "/srv.pem", t + "/srv.key", E.uplog],
        "upstream servers")
    E.git = e2elib.start_server(
        E.ns, ["git_server.py", E.up, "9443", t + "/srv.pem", t + "/srv.key", t + "/git"],
        "git server")
    E.policy = t + "/policy.yaml"
    write_policy()


def teardown():
    e2elib.stop(getattr(E, "servers", None), getattr(E, "git", None))
    if hasattr(E, "net"):
        E.net.delete()
    if hasattr(E, "tmp"):
        shutil.rmtree(E.tmp, ignore_errors=True)


def sandbox(*cmd, timeout=30, policy=None, extra=()):
    """openshell run CMD with the test's policy and resolver map."""
    args = [BIN, "run", "--policy", policy or E.policy, "--workdir", E.wd, "--timeout",
            str(timeout - 5)]
    for h in ("api.test", "py.test", "anc.test", "swap.test", "keep.test", "priv.wild.test"):
        args.append("--proxy-arg=--resolve=%s:%s" % (h, E.up))
    args += ["--proxy-arg=--resolve=loop.test:127.0.0.1",
             "--proxy-arg=--resolve=metadata.test:169.254.169.254",
             "--proxy-arg=--upstream-ca=" + E.tmp + "/ca.pem",
             "--log-format", "text"]
    args += list(extra)
    args += ["--"] + list(cmd)
    return run(args, timeout=timeout)


def curl_in(url, *opts):
    """curl inside the sandbox; stdout is the body then a last line STATUS."""
    r = sandbox("curl", "-sS", "-w", "\n%{http_code}", *opts, url)
    body, _, status = r.stdout.rpartition("\n")
    return status.strip(), body, r


PY_GET = """
import sys, urllib.request, urllib.error
try:
    r = urllib.request.urlopen(sys.argv[1], timeout=10)
    print(r.status); print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode())
"""


def upstream_saw(marker):
    time.sleep(0.2)
    with open(E.uplog) as f:
        return marker in f.read()


# ------------------------------------------------------------ tests

def t_curl():
    st, body, r = curl_in("https://api.test:8443/hello-tls")
    ok = st == "200" and '"target": "/hello-tls"' in body
    point(ok, "curl HTTPS through CONNECT: TLS terminated with the sandbox CA, 200 from upstream",
          (st, body, r.stderr[-1500:]))
    st, body, r = curl_in("http://api.test:8080/hello-plain")
    ok = st == "200" and '"target": "/hello-plain"' in body and "openshell-sandbox" in body
    point(ok, "curl plain HTTP through the forward proxy", (st, body, r.stderr[-1500:]))
    point("action=allow" in r.stderr and "binary=/usr/bin/curl" in r.stderr
          and "decision sandbox=openshell " in r.stderr,
          "the decision log names the sandbox and the calling binary", r.stderr[-1500:])


def t_denials():
    st, body, r = curl_in("http://other.test:8080/")
    point(st == "403" and json.loads(body or "{}").get("error") == "policy_denied"
          and "endpoint other.test:8080 is not allowed by any policy" in r.stderr,
          "undeclared host: 403 policy_denied", (st, body, r.stderr[-800:]))
    st, body, r = curl_in("http://api.test:8081/")
    point(st == "403" and "policy_denied" in body,
          "undeclared port on a declared host: 403", (st, body))
    st, body, r = curl_in("https://other.test:443/")
    point(st in ("000", "403") and "403" in r.stderr + st,
          "undeclared host through CONNECT: 403", (st, body, r.stderr[-600:]))


def t_binaries():
    r = sandbox("/usr/bin/python3", "-c", PY_GET, "http://api.test:8080/py-denied")
    lines = r.stdout.split("\n", 1)
    point(lines[0] == "403" and "binary '/usr/bin/python3.11' not allowed in policy 'plain'"
          in r.stderr and not upstream_saw("/py-denied"),
          "python3 where only curl is allowed: 403 naming the resolved binary",
          (r.stdout, r.stderr[-800:]))
    r = sandbox("/usr/bin/python3", "-c", PY_GET, "http://py.test:8080/py-ok")
    point(r.stdout.startswith("200") and '"/py-ok"' in r.stdout,
          "python3 urllib (listed as the symlink /usr/bin/python3): allowed", r.stdout + r.stderr[-600:])
    r = sandbox("/usr/bin/python3", "-c", PY_GET, "https://api.test:8443/py-tls")
    point(r.stdout.startswith("200") and '"/py-tls"' in r.stdout,
          "python3 urllib HTTPS trusts the sandbox CA through SSL_CERT_FILE",
          r.stdout + r.stderr[-600:])


def t_ancestors():
    r = sandbox("/usr/bin/bash", "-c",
                "curl -sS -w '\\n%{http_code}' http://anc.test:8080/anc-child; true")
    point(r.stdout.rstrip().endswith("200") and "ancestors=/usr/bin/bash" in r.stderr,
          "ancestor authorisation: curl run by bash, only bash listed: allowed",
          (r.stdout, r.stderr[-800:]))
    st, body, r = curl_in("http://anc.test:8080/anc-direct")
    point(st == "403", "the same curl not started by bash: 403", (st, body))
    r = sandbox("/usr/bin/bash", "-c",
                "/usr/bin/python3 -c \"$0\" http://api.test:8080/rev; true", PY_GET)
    point(r.stdout.startswith("403") and not upstream_saw("/rev"),
          "the reverse: python3 run by bash where only curl is listed: 403",
          (r.stdout, r.stderr[-800:]))


def t_argv_spoof():
    r = sandbox("/usr/bin/bash", "-c",
                "exec -a /usr/bin/curl /usr/bin/python3 -c \"$0\" http://api.test:8080/spoof",
                PY_GET)
    point(r.stdout.startswith("403") and "binary=/usr/bin/python3.11" in r.stderr
          and "cmdline: [/usr/bin/curl]" in r.stderr and not upstream_saw("/spoof"),
          "argv spoofing (exec -a /usr/bin/curl python3): identity is /proc/PID/exe, 403; "
          "the argv path is only logged",
          (r.stdout, r.stderr[-800:]))


SHARED = r"""
import os, socket, time
s = socket.create_connection(("127.0.0.1", 3128))
os.set_inheritable(s.fileno(), True)
kid = os.fork()
if kid == 0:
    os.execv("/usr/bin/sleep", ["sleep", "5"])
time.sleep(0.3)
s.sendall(b"CONNECT api.test:8443 HTTP/1.1\r\nHost: api.test:8443\r\n\r\n")
resp = b""
while True:
    d = s.recv(4096)
    if not d:
        break
    resp += d
print(resp.decode().split("\r\n")[0])
print(resp.decode().partition("\r\n\r\n")[2])
os.kill(kid, 9)
"""


def t_shared_socket():
    r = sandbox("/usr/bin/python3", "-c", SHARED)
    lines = r.stdout.splitlines()
    try:
        body = json.loads(lines[1])
    except (IndexError, ValueError):
        body = {}
    point(r.stdout.startswith("HTTP/1.1 403") and "ambiguous shared socket ownership" in r.stderr
          and body.get("error") == "policy_denied"
          and body.get("detail") == "CONNECT api.test:8443 not permitted by policy"
          and "ambiguous shared socket ownership" in body.get("reason", ""),
          "a socket held by two programs (python3 and an inheriting sleep): 403 ambiguous",
          (r.stdout, r.stderr[-800:]))


def t_swapped_binary():
    script = ("mkdir -p /sandbox/tools && cp /usr/bin/curl /sandbox/tools/a && "
              "/sandbox/tools/a -sS -o /dev/null -w '%{http_code}\\n' http://swap.test:8080/s1; "
              "printf x >> /sandbox/tools/a; "
              "/sandbox/tools/a -sS -o /dev/null -w '%{http_code}\\n' http://swap.test:8080/s2; "
              "true")
    r = sandbox("/usr/bin/bash", "-c", script)
    codes = r.stdout.split()
    point(codes == ["200", "403"] and "Binary integrity violation" in r.stderr
          and "/sandbox/tools/a" in r.stderr and not upstream_saw("/s2"),
          "a binary changed at the same path after its first use is denied (pinned SHA-256)",
          (r.stdout, r.stderr[-1200:]))
    # A new sandbox pins afresh.
    r = sandbox("/sandbox/tools/a", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                "http://swap.test:8080/s3")
    point(r.stdout.strip() == "200", "pins are per sandbox: a new sandbox trusts it on first use",
          (r.stdout, r.stderr[-600:]))


def t_ssrf():
    for url, name in (("http://loop.test:8080/", "a declared name resolving to loopback"),
                      ("http://metadata.test/latest/meta-data/",
                       "the metadata address 169.254.169.254"),
                      ("http://priv.wild.test:8080/",
                       "a wildcard name resolving to an undeclared private address")):
        st, body, r = curl_in(url)
        point(st == "403" and json.loads(body or "{}").get("error") == "ssrf_denied",
              "SSRF: %s: 403 ssrf_denied" % name, (st, body, r.stderr[-600:]))


def t_l7():
    st, body, r = curl_in("https://api.test:8443/items/1")
    point(st == "200" and '"method": "GET"' in body, "inspected endpoint: GET allowed", (st, body))
    r = sandbox("curl", "-sS", "-i", "-X", "POST", "-d", "a=b", "https://api.test:8443/items/1")
    out = r.stdout.replace("\r\n", "\n")
    # curl -i prints the CONNECT answer too: the response is the last head.
    head, _, body = out[out.rfind("HTTP/1.1 "):].partition("\n\n")
    try:
        got = json.loads(body)
    except ValueError:
        got = None
    want = {
        "error": "policy_denied", "policy": "inspected", "rule": "POST /items/1",
        "detail": "POST /items/1 not permitted by policy", "layer": "l7", "protocol": "rest",
        "method": "POST", "path": "/items/1", "host": "api.test", "port": 8443,
        "binary": "/usr/bin/curl",
        "rule_missing": {"type": "rest_allow", "layer": "l7", "method": "POST",
                         "path": "/items/1", "host": "api.test", "port": 8443,
                         "binary": "/usr/bin/curl"},
        "next_steps": [],
    }
    point(got == want and head.startswith("HTTP/1.1 403")
          and "X-OpenShell-Policy: inspected" in head and not upstream_saw("POST /items/1"),
          "inspected endpoint: POST denied with the exact deny body, nothing sent upstream",
          (r.stdout, r.stderr[-800:]))


def t_git():
    r = sandbox("/usr/bin/bash", "-c",
                "git clone -q https://api.test:9443/repo.git /sandbox/clone && "
                "cat /sandbox/clone/README", timeout=60)
    point(r.returncode == 0 and "hello from the test repository" in r.stdout
          and "binary=/usr/lib/git-core/git-remote-http" in r.stderr,
          "git clone over HTTPS (smart HTTP through CONNECT, TLS terminated)",
          (r.returncode, r.stdout, r.stderr[-1500:]))
    shutil.rmtree(E.wd + "/clone", ignore_errors=True)


NODE_TUNNEL = r"""
const http = require('http'), https = require('https'), tls = require('tls');
const proxy = new URL(process.env.HTTPS_PROXY);
const req = http.request({host: proxy.hostname, port: proxy.port, method: 'CONNECT',
                          path: 'api.test:8443', headers: {host: 'api.test:8443'}});
req.on('connect', (res, sock) => {
  if (res.statusCode !== 200) { console.log('connect', res.statusCode); return; }
  https.get({host: 'api.test', port: 8443, path: '/node',
             createConnection: () => tls.connect({socket: sock, servername: 'api.test'})},
            (r) => { let b = ''; r.on('data', (d) => b += d);
                     r.on('end', () => console.log(r.statusCode, b)); })
       .on('error', (e) => console.log('error', e.code || e.message));
});
req.on('error', (e) => console.log('error', e.code || e.message));
req.end();
"""

NODE_FETCH = r"""
const t0 = Date.now();
fetch('https://api.test:8443/node-fetch').then(async (r) => console.log('status', r.status, await r.text()))
  .catch((e) => console.log('error', (e.cause && e.cause.code) || e.message, Date.now() - t0));
"""


def t_node():
    if not shutil.which("node"):
        point.skip("node through the proxy", "node not installed")
        return
    r = sandbox("/usr/bin/node", "-e", NODE_TUNNEL)
    point(r.stdout.startswith("200") and '"/node"' in r.stdout,
          "node https through an explicit CONNECT tunnel (NODE_EXTRA_CA_CERTS trusted)",
          (r.stdout, r.stderr[-800:]))
    r = sandbox("/usr/bin/node", "-e", NODE_FETCH)
    ver = run(["node", "--version"]).stdout.strip()
    if r.stdout.startswith("status 200"):
        point(True, "node %s fetch honours HTTPS_PROXY (NODE_USE_ENV_PROXY)" % ver)
    else:
        # Node 20's fetch has no proxy support without npm packages: it must
        # fail at once (no DNS, no route), never reach anything.
        parts = r.stdout.split()
        ms = int(parts[-1]) if parts and parts[-1].isdigit() else 99999
        point(r.stdout.startswith("error") and ms < 3000 and not upstream_saw("/node-fetch"),
              "node %s fetch ignores HTTPS_PROXY: fails at once (%s), nothing leaves"
              % (ver, " ".join(parts[1:2])), (r.stdout, r.stderr[-600:]))


# node's own fetch (undici inside node 18/20) reads no proxy variables; the
# usual way agents get it through a proxy is undici's EnvHttpProxyAgent from
# npm, which honours HTTPS_PROXY/NO_PROXY. Installed by the test from the npm
# registry into the sandbox's workdir.
NODE_UNDICI = r"""
const {fetch, EnvHttpProxyAgent, setGlobalDispatcher} = require('/sandbox/node_modules/undici');
setGlobalDispatcher(new EnvHttpProxyAgent());
(async () => {
  for (const method of ['GET', 'POST']) {
    try {
      const r = await fetch('https://api.test:8443/node-undici-' + method, {method, body: method === 'POST' ? 'x' : undefined});
      console.log(method, r.status, (await r.text()).replace(/\s+/g, ' '));
    } catch (e) { console.log(method, 'error', (e.cause && e.cause.code) || e.message); }
  }
})();
"""


def t_node_fetch_undici():
    name = "node fetch (undici EnvHttpProxyAgent) through the proxy"
    if not shutil.which("node") or not shutil.which("npm"):
        point.skip(name, "node or npm not installed")
        return
    r = run(["npm", "install", "--no-audit", "--no-fund", "--no-save", "--prefix", E.wd,
             "undici@6"], timeout=180)
    if r.returncode or not os.path.exists(E.wd + "/node_modules/undici/package.json"):
        point.skip(name, "npm could not install undici: " + (r.stderr.strip().splitlines() or ["?"])[-1])
        return
    r = sandbox("/usr/bin/node", "-e", NODE_UNDICI)
    lines = dict((l.split(" ", 1) + [""])[:2] for l in r.stdout.splitlines() if l)
    point(lines.get("GET", "").startswith("200") and upstream_saw("/node-undici-GET"),
          name + ": GET allowed, TLS terminated and trusted", (r.stdout, r.stderr[-800:]))
    point(lines.get("POST", "").startswith("403") and "policy_denied" in lines.get("POST", "")
          and not upstream_saw("/node-undici-POST"),
          name + ": POST denied by the L7 rule with the deny body", (r.stdout, r.stderr[-800:]))
    shutil.rmtree(E.wd + "/node_modules", ignore_errors=True)

KEEPALIVE = r"""
import http.client, os, time
c = http.client.HTTPConnection("127.0.0.1", 3128, timeout=10)
c.set_tunnel("keep.test", 8080)
c.request("GET", "/ka-one"); r = c.getresponse(); r.read(); print("one", r.status, flush=True)
open("/sandbox/edit-now", "w").close()
for _ in range(500):
    if os.path.exists("/sandbox/edited"):
        break
    time.sleep(0.02)
try:
    c.request("GET", "/ka-two"); r = c.getresponse(); r.read(); print("two", r.status)
except Exception as e:
    print("two closed", type(e).__name__)
c2 = http.client.HTTPConnection("127.0.0.1", 3128, timeout=10)
c2.set_tunnel("keep.test", 8080)
try:
    c2.request("GET", "/ka-three"); r = c2.getresponse(); print("three", r.status)
except OSError as e:
    print("three refused", str(e)[:80])
"""


def t_live_policy():
    for f in ("edit-now", "edited"):
        try:
            os.unlink(E.wd + "/" + f)
        except FileNotFoundError:
            pass
    p = subprocess.Popen(
        [BIN, "run", "--policy", E.policy, "--workdir", E.wd, "--timeout", "25",
         "--proxy-arg=--resolve=keep.test:" + E.up, "--log-format", "text", "--",
         "/usr/bin/python3", "-c", KEEPALIVE],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(500):
            if os.path.exists(E.wd + "/edit-now"):
                break
            time.sleep(0.02)
        write_policy(keep=False)
        time.sleep(1.0)  # the promise: edits apply within a second
        open(E.wd + "/edited", "w").close()
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        write_policy(keep=True)
    lines = out.splitlines()
    point(lines[:1] == ["one 200"] and len(lines) == 3 and lines[1].startswith("two closed")
          and lines[2].startswith("three refused") and "403" in lines[2]
          and not upstream_saw("/ka-two")
          and "policy reloaded" in err,
          "openshell run --policy FILE: an edit applies within a second; the kept-alive tunnel "
          "opened under the old policy is closed, a new one is denied", (out, err[-1500:]))


INVALID = r"""
import os, subprocess, time
def get():
    return subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                           "http://api.test:8080/inv"], capture_output=True, text=True).stdout
print("before", get(), flush=True)
open("/sandbox/edit-now", "w").close()
while not os.path.exists("/sandbox/edited"):
    time.sleep(0.02)
print("after", get())
"""


def edit_midway(script, new_text, extra):
    """Run SCRIPT in a sandbox; when it signals, write NEW_TEXT over the policy
    (in place), wait a second, signal back. Returns (stdout, stderr)."""
    for f in ("edit-now", "edited"):
        try:
            os.unlink(E.wd + "/" + f)
        except FileNotFoundError:
            pass
    p = subprocess.Popen(
        [BIN, "run", "--policy", E.policy, "--workdir", E.wd, "--timeout", "25",
         "--proxy-arg=--resolve=api.test:" + E.up, "--log-format", "text"] + extra +
        ["--", "/usr/bin/python3", "-c", script],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(500):
            if os.path.exists(E.wd + "/edit-now"):
                break
            time.sleep(0.02)
        with open(E.policy, "w") as f:
            f.write(new_text)
        time.sleep(1.0)
        open(E.wd + "/edited", "w").close()
        return p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        write_policy(keep=True)


def t_invalid_edit():
    bad = "version: 1\nnetwork_policies:\n  plain: [\n"
    out, err = edit_midway(INVALID, bad, [])
    point(out.split() == ["before", "200", "after", "200"]
          and "keeping the last good policy" in err,
          "an invalid edit keeps the last good policy and says why", (out, err[-800:]))
    out, err = edit_midway(INVALID, bad, ["--on-invalid-policy", "deny-all"])
    point(out.split() == ["before", "200", "after", "403"]
          and "denying every connection" in err,
          "openshell run --on-invalid-policy deny-all: an invalid edit denies everything",
          (out, err[-800:]))


def t_ipv6_listener():
    st, body, r = curl_in("http://api.test:8080/v6", "-x", "http://[::1]:3128")
    point(st == "200" and "binary=/usr/bin/curl" in r.stderr,
          "the [::1]:3128 listener: identity and forwarding over IPv6", (st, body, r.stderr[-600:]))


DIRECT = r"""
import socket, sys, time, errno
t0 = time.monotonic()
try:
    socket.create_connection((sys.argv[1], 8080), timeout=10)
    print("connected")
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno), int((time.monotonic() - t0) * 1000))
"""


def t_direct():
    r = sandbox("/usr/bin/python3", "-c", DIRECT, E.up)
    parts = r.stdout.split()
    point(len(parts) == 2 and parts[0] == "ENETUNREACH" and int(parts[1]) < 1000,
          "a direct connect ignoring the proxy fails at once with ENETUNREACH (%s ms)"
          % (parts[1] if len(parts) == 2 else "?"), (r.stdout, r.stderr[-400:]))


def proxies_of_this_test():
    n = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0] == b"openshell-proxy" and any(E.up.encode() in a for a in cmd):
            n += 1
    return n


def t_unprivileged():
    if not shutil.which("setpriv"):
        point.skip("unprivileged sandbox through the proxy", "setpriv not installed")
        return
    args = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", BIN, "run",
            "--policy", E.policy, "--workdir", E.wd, "--timeout", "20",
            "--proxy-arg=--resolve=api.test:" + E.up,
            "--proxy-arg=--upstream-ca=" + E.tmp + "/ca.pem", "--log-format", "text", "--",
            "/usr/bin/bash", "-c",
            "curl -sS -w '\\n%{http_code}\\n' https://api.test:8443/userns; "
            "/usr/bin/python3 -c \"$0\" http://api.test:8080/userns-py", PY_GET]
    r = run(args, timeout=30)
    out = r.stdout.splitlines()
    point(len(out) >= 3 and out[1] == "200" and out[2] == "403"
          and "binary=/usr/bin/curl" in r.stderr and "binary=/usr/bin/python3.11" in r.stderr,
          "unprivileged (user namespace): TLS through the proxy, identity enforced",
          (r.stdout, r.stderr[-800:]))


def t_explain():
    r = run([BIN, "run", "--policy", E.policy, "--workdir", E.wd, "--explain"])
    r2 = run([BIN, "run", "--workdir", E.wd, "--explain"])
    point("egress:     openshell-proxy on 127.0.0.1:3128 and [::1]:3128 (8 network policies"
          in r.stdout and "egress:     none (no network_policies)" in r2.stdout,
          "--explain says whether the egress proxy runs", r.stdout[:600] + r2.stdout[:300])


def t_lifetime():
    r = sandbox("/usr/bin/bash", "-c", "sleep 0.3")
    time.sleep(0.2)
    point(r.returncode == 0 and proxies_of_this_test() == 0,
          "the proxy ends with the sandbox", (r.returncode, proxies_of_this_test()))
    r = sandbox("/usr/bin/bash", "-c", "env")
    env = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    want = {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy",
            "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE",
            "GIT_SSL_CAINFO", "PIP_CERT"}
    point(want <= set(env) and env.get("NO_PROXY") == "" and env.get("no_proxy") == ""
          and env["HTTPS_PROXY"] == "http://127.0.0.1:3128",
          "the agent's environment carries the proxy and trust variables",
          sorted(want - set(env)))
    r = sandbox("/usr/bin/bash", "-c", "test -w /tmp/.openshell-tls/ca-bundle.pem && echo w; "
                "grep -c 'BEGIN CERTIFICATE' /tmp/.openshell-tls/ca-bundle.pem")
    point(r.stdout.strip().isdigit() and int(r.stdout.strip()) > 1,
          "the trust bundle holds the system CAs plus the sandbox CA, read-only for the agent",
          r.stdout)


def main():
    if os.geteuid() != 0:
        point.skip_all("sandbox network", "needs root for network namespaces")
    for tool in ("ip", "openssl", "curl", "git", "bash"):
        if not shutil.which(tool):
            point.skip_all("sandbox network", "%s not installed" % tool)
    if not os.path.exists("/usr/bin/python3") or not BIN or not os.path.exists(BIN):
        point.skip_all("sandbox network", "needs /usr/bin/python3 and OPENSHELL_BIN")
    try:
        setup()
    except Exception as e:  # noqa: BLE001
        teardown()
        point.skip_all("sandbox network", "cannot set up the network namespace: %s" % e)
    try:
        for t in (t_curl, t_denials, t_binaries, t_ancestors, t_argv_spoof, t_shared_socket,
                  t_swapped_binary,
                  t_ssrf, t_l7, t_git, t_node, t_node_fetch_undici, t_live_policy, t_invalid_edit, t_ipv6_listener,
                  t_direct, t_unprivileged, t_explain, t_lifetime):
            try:
                t()
            except Exception as e:  # noqa: BLE001
                point(False, t.__name__ + " raised", repr(e))
    finally:
        teardown()
    sys.exit(point.plan())


if __name__ == "__main__":
    main()
