#!/usr/bin/python3
"""E2E: PATCH .../policy incremental operations against a real gateway on its
unix socket, through curl (HTTP/2 prior knowledge): each operation, merges,
combined batches (one revision, all or nothing), dry_run, If-Match conflicts,
invalid operations (400 naming the operation and field), the engine's
validation, the spec/YAML/default bases, the global policy (412 for sandbox
updates while it is active, PATCH of the global one). The merged revision is
checked with the policy engine (`openshell policy validate` and `policy
check`). Prints TAP."""
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

import e2elib

BIN = os.environ["OPENSHELL_BIN"]
# The gateway may be another build of the applet (e.g. one under ASan).
GW_BIN = os.environ.get("OPENSHELL_GATEWAY_BIN", BIN)
T = tempfile.mkdtemp(prefix="openshell-polops-e2e.")
STATE = os.path.join(T, "state")
SOCK = os.path.join(T, "gw.sock")
LOG = os.path.join(T, "gateway.log")
SB = "/v1/workspaces/default/sandboxes"
tap = e2elib.Tap()
gw = None


def curl(method, path, body=None, headers=None, ctype="application/json", timeout=10):
    """(status, headers, body text)."""
    hfile, bfile = os.path.join(T, "h.txt"), os.path.join(T, "b.txt")
    cmd = ["curl", "-sS", "--http2-prior-knowledge", "--unix-socket", SOCK, "-X", method,
           "-D", hfile, "-o", bfile, "-w", "%{http_code}", "--max-time", str(timeout)]
    for k, v in (headers or {}).items():
        cmd += ["-H", "%s: %s" % (k, v)]
    if body is not None:
        if not isinstance(body, str):
            body = json.dumps(body)
        cmd += ["-H", "content-type: " + ctype, "--data-binary", "@-"]
    p = subprocess.run(cmd + ["http://localhost" + path], capture_output=True, timeout=timeout + 5,
                       input=body.encode() if body is not None else None)
    try:
        code = int(p.stdout.decode())
    except ValueError:
        return (0, {}, p.stderr.decode())
    hdrs = {}
    for line in open(hfile, errors="replace") if os.path.exists(hfile) else []:
        if ":" in line and not line.startswith("HTTP"):
            k, v = line.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
    text = open(bfile, errors="replace").read() if os.path.exists(bfile) else ""
    for f in (hfile, bfile):
        if os.path.exists(f):
            os.unlink(f)
    return (code, hdrs, text)


def jb(r):
    try:
        return json.loads(r[2])
    except ValueError:
        return {}


def expect_error(name, r, status, code, contains=None):
    j = jb(r).get("error", {})
    tap(r[0] == status and j.get("code") == code and
        (contains is None or contains in j.get("message", "")),
        name, "status %s body %s" % (r[0], r[2][:600]))


def start():
    global gw
    lnk = os.path.join(T, "openshell-gateway")
    if not os.path.lexists(lnk):
        os.symlink(GW_BIN, lnk)
    log = open(LOG, "a")
    gw = subprocess.Popen([lnk, "--state-dir", STATE, "--socket", SOCK, "--listen", "none",
                           "--log-format", "text"], stdout=log, stderr=log)
    for _ in range(500):
        if os.path.exists(SOCK) and curl("GET", "/healthz")[0] == 200:
            return True
        if gw.poll() is not None:
            return False
        time.sleep(0.02)
    return False


def patch(name, ops, dry_run=None, headers=None):
    body = {"operations": ops}
    if dry_run is not None:
        body["dry_run"] = dry_run
    return curl("PATCH", SB + "/" + name + "/policy", body, headers=headers)


def revisions(name):
    return jb(curl("GET", SB + "/" + name + "/policy/revisions")).get("total")


def latest(name):
    """The latest revision's policy as a dict (and its raw text)."""
    j = jb(curl("GET", SB + "/" + name + "/policy"))
    text = j.get("policy", "")
    try:
        return json.loads(text), text, j
    except ValueError:
        return {}, text, j


def engine(text, *args):
    """Run `openshell policy ARGS` on TEXT saved to a file: (rc, output)."""
    f = os.path.join(T, "pol.json")
    with open(f, "w") as fh:
        fh.write(text)
    p = subprocess.run([BIN, "policy"] + [a if a != "FILE" else f for a in args],
                       capture_output=True, text=True, timeout=20)
    return p.returncode, p.stdout + p.stderr


def ep(host, port, **kw):
    d = {"host": host, "port": port}
    d.update(kw)
    return d


def add_rule(name, endpoints, binaries=(), rule_name=True):
    op = {"op": "add_rule", "rule": {"endpoints": endpoints,
                                     "binaries": [{"path": b} for b in binaries]}}
    if rule_name:
        op["name"] = name
    return op


class Session:
    """A scripted supervisor session through curl (request body from our
    stdin, response lines collected by a thread)."""

    def __init__(self, token):
        self.lines = []
        self.cv = threading.Condition()
        self.p = subprocess.Popen(
            ["curl", "-sS", "--http2-prior-knowledge", "--unix-socket", SOCK, "-N", "-X", "POST",
             "-T", ".", "-H", "content-type: application/x-ndjson", "-H",
             "authorization: Bearer " + token, "http://localhost/v1/supervisor/session"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        buf = b""
        while True:
            b = self.p.stdout.read1(65536)
            if not b:
                return
            buf += b
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    j = json.loads(line)
                except ValueError:
                    continue
                with self.cv:
                    self.lines.append(j)
                    self.cv.notify_all()

    def send(self, obj):
        self.p.stdin.write((json.dumps(obj) + "\n").encode())
        self.p.stdin.flush()

    def wait_line(self, pred, timeout=10):
        end = time.time() + timeout
        with self.cv:
            while True:
                for j in self.lines:
                    if pred(j):
                        self.lines.remove(j)
                        return j
                if time.time() >= end:
                    return None
                self.cv.wait(end - time.time())

    def close(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()


def main():
    if not shutil.which("curl"):
        print("1..0 # SKIP curl not installed")
        return 0
    if not start():
        tap(False, "gateway starts", open(LOG).read())
        return 1
    tap(True, "gateway starts")
    r = curl("POST", SB, {"name": "ops"})
    tap(r[0] == 201, "create sandbox ops (no spec.policy: the default policy is the base)", r)

    # --- dry run: merged policy back, nothing written
    r = patch("ops", [add_rule(None, [ep("api.github.com", 443)], ["/usr/bin/curl"],
                               rule_name=False)], dry_run=True)
    j = jb(r)
    np = j.get("policy", {}).get("network_policies", {})
    tap(r[0] == 200 and list(np) == ["allow_api_github_com_443"] and
        j.get("base") == "default" and j.get("warnings") == [] and
        j["policy"].get("filesystem_policy", {}).get("read_only", [None])[0] == "/usr" and
        j["policy"].get("version") == 1,
        "dry_run: the default policy plus a rule named allow_api_github_com_443", r)
    tap(revisions("ops") == 0, "dry_run writes no revision")

    # --- add_rule
    r = patch("ops", [add_rule("allow_api_github_com_443", [ep("api.github.com", 443)],
                               ["/usr/bin/curl"])])
    j = jb(r)
    rv = r[1].get("etag")
    tap(r[0] == 200 and j.get("version") == 1 and j.get("status") == "pending" and
        j.get("policy_hash", "").startswith("sha256:") and j.get("warnings") == [] and rv,
        "add_rule: revision 1 pending, with the sandbox's new ETag", r)
    pol, text, rev = latest("ops")
    tap(rev.get("format") == "json" and
        pol.get("network_policies", {}).get("allow_api_github_com_443", {}).get("binaries") ==
        [{"path": "/usr/bin/curl"}], "the revision is the merged policy as JSON", rev)
    rc, out = engine(text, "validate", "FILE")
    tap(rc == 0, "the merged revision loads in the policy engine (policy validate)", out)
    rc1, out1 = engine(text, "check", "--binary", "/usr/bin/curl", "--host", "api.github.com",
                       "--port", "443", "FILE")
    rc2, out2 = engine(text, "check", "--binary", "/usr/bin/wget", "--host", "api.github.com",
                       "--port", "443", "FILE")
    tap(rc1 == 0 and rc2 == 1, "policy check: curl may reach api.github.com:443, wget may not",
        out1 + out2)
    sb = jb(curl("GET", SB + "/ops"))
    tap(sb.get("status", {}).get("policy", {}).get("latest_version") == 1,
        "the sandbox's status.policy names revision 1", sb.get("status"))

    # --- add_rule into the same rule: endpoints deduped, binaries appended once
    r = patch("ops", [add_rule("allow_api_github_com_443",
                               [ep("api.github.com", 443), ep("github.com", 443)],
                               ["/usr/bin/git", "/usr/bin/curl"])])
    pol, text, _ = latest("ops")
    blk = pol.get("network_policies", {}).get("allow_api_github_com_443", {})
    tap(r[0] == 200 and jb(r).get("version") == 2 and
        [e["host"] for e in blk.get("endpoints", [])] == ["api.github.com", "github.com"] and
        [b["path"] for b in blk.get("binaries", [])] == ["/usr/bin/curl", "/usr/bin/git"],
        "add_rule merges into the rule of that name (endpoints by host+port, binaries deduped)",
        json.dumps(blk))

    # --- ports unioned, then one removed
    r = patch("ops", [add_rule("allow_api_github_com_443",
                               [{"host": "API.github.com", "ports": [443, 8443]}])])
    expect_error("a new port without the rule's binaries declared: 400 (no silent widening)", r,
                 400, "invalid_argument", "adding API.github.com:8443 to rule "
                 "allow_api_github_com_443 would also grant it to /usr/bin/curl")
    r = patch("ops", [add_rule("allow_api_github_com_443", [ep("api.github.com", 443)],
                               ["/usr/bin/wget"])])
    expect_error("a new binary without the rule's endpoints declared: 400", r, 400,
                 "invalid_argument", "adding binary /usr/bin/wget to rule allow_api_github_com_443 "
                 "would also grant it github.com:443")
    r = patch("ops", [add_rule("allow_api_github_com_443",
                               [{"host": "API.github.com", "ports": [443, 8443]}],
                               ["/usr/bin/curl", "/usr/bin/git"])])
    pol, _, _ = latest("ops")
    e0 = pol["network_policies"]["allow_api_github_com_443"]["endpoints"][0]
    tap(r[0] == 200 and e0.get("ports") == [443, 8443] and "port" not in e0,
        "add_rule: an overlapping endpoint (host case-insensitive) gets the union of ports", e0)
    r = patch("ops", [add_rule("allow_api_github_com_443",
                               [ep("api.github.com", 443, allowed_ips=["10.1.0.0/16"])],
                               ["/usr/bin/curl", "/usr/bin/git"])])
    expect_error("changing allowed_ips of a multi-port endpoint without all its ports: 400", r,
                 400, "invalid_argument", "the endpoint also serves port 8443")
    r = patch("ops", [add_rule("ws", [ep("ws.example.com", 443, protocol="rest",
                                         access="read-only")], ["/bin/sh"]),
                      add_rule("ws", [{"host": "ws.example.com", "ports": [443, 8443],
                                       "protocol": "rest", "access": "read-only"}], ["/bin/sh"]),
                      {"op": "add_allow_rules", "host": "ws.example.com", "port": 443,
                       "rules": [{"allow": {"method": "GET", "path": "/x"}}]}])
    expect_error("add_allow_rules on a multi-port endpoint: 400", r, 400, "invalid_argument",
                 "operations[2]: endpoint ws.example.com:443 serves several ports")
    r = patch("ops", [{"op": "remove_endpoint", "host": "api.github.com", "port": 8443}])
    pol, _, _ = latest("ops")
    e0 = pol["network_policies"]["allow_api_github_com_443"]["endpoints"][0]
    tap(r[0] == 200 and e0.get("port") == 443 and "ports" not in e0 and jb(r)["warnings"] == [],
        "remove_endpoint takes one port off a multi-port endpoint", e0)

    # --- L7: an access preset expanded, allow and deny rules added
    r = patch("ops", [add_rule("example", [ep("api.example.com", 443, protocol="rest",
                                              access="read-only")], ["/usr/bin/curl"]),
                      {"op": "add_allow_rules", "host": "api.example.com", "port": 443,
                       "rules": [{"allow": {"method": "post", "path": "/v1/**"}}]},
                      {"op": "add_deny_rules", "host": "api.example.com", "port": 443,
                       "deny_rules": [{"method": "post", "path": "/v1/admin/**"}]}])
    j = jb(r)
    pol, text, _ = latest("ops")
    e0 = pol.get("network_policies", {}).get("example", {}).get("endpoints", [{}])[0]
    methods = [x["allow"]["method"] for x in e0.get("rules", [])]
    tap(r[0] == 200 and j.get("version") == 5 and "access" not in e0 and
        methods == ["GET", "HEAD", "OPTIONS", "POST"] and
        e0.get("deny_rules") == [{"method": "POST", "path": "/v1/admin/**"}],
        "one batch (add_rule, add_allow_rules, add_deny_rules) = one revision; the preset is "
        "expanded, methods upper-cased", r[2] + json.dumps(e0))

    def l7(method, path):
        return engine(text, "check", "--binary", "/usr/bin/curl", "--host", "api.example.com",
                      "--port", "443", "--method", method, "--path", path, "FILE")[0]
    tap(l7("GET", "/anything") == 0 and l7("POST", "/v1/x") == 0 and
        l7("POST", "/v1/admin/x") == 1 and l7("DELETE", "/v1/x") == 1,
        "policy check on the merged revision: GET and POST /v1/** allowed, the deny rule and "
        "DELETE denied")
    r = patch("ops", [{"op": "add_allow_rules", "host": "api.example.com", "port": 443,
                       "rules": [{"allow": {"method": "POST", "path": "/v1/**"}}]}])
    pol, _, _ = latest("ops")
    tap(r[0] == 200 and len(pol["network_policies"]["example"]["endpoints"][0]["rules"]) == 4,
        "add_allow_rules does not duplicate an existing rule", r)

    # --- remove_binary, remove_rule, remove_endpoint (and their no-op warnings)
    before = revisions("ops")
    r = patch("ops", [{"op": "remove_binary", "name": "allow_api_github_com_443",
                       "path": "/usr/bin/git"},
                      {"op": "remove_binary", "name": "allow_api_github_com_443",
                       "path": "/bin/nope"},
                      {"op": "remove_rule", "name": "no_such_rule"},
                      {"op": "remove_endpoint", "host": "nowhere.example", "port": 1}])
    j = jb(r)
    pol, _, _ = latest("ops")
    w = j.get("warnings", [])
    tap(r[0] == 200 and revisions("ops") == before + 1 and
        [b["path"] for b in pol["network_policies"]["allow_api_github_com_443"]["binaries"]] ==
        ["/usr/bin/curl"] and len(w) == 3 and "operations[1]" in w[0] and
        "operations[2]" in w[1] and "operations[3]" in w[2],
        "remove_binary; removals of absent things are warnings naming the operation", r)
    r = patch("ops", [{"op": "remove_endpoint", "host": "api.example.com", "port": 443}])
    pol, _, _ = latest("ops")
    tap(r[0] == 200 and "example" not in pol["network_policies"] and
        any("no endpoint left" in x for x in jb(r).get("warnings", [])),
        "remove_endpoint of a rule's last endpoint removes the rule (with a warning)", r)
    r = patch("ops", [{"op": "remove_rule", "name": "allow_api_github_com_443"}])
    pol, _, _ = latest("ops")
    tap(r[0] == 200 and pol.get("network_policies") == {}, "remove_rule", r)

    # --- atomicity: a failing operation leaves nothing behind
    before = revisions("ops")
    r = patch("ops", [add_rule("x", [ep("a.example.com", 443)], ["/bin/sh"]),
                      {"op": "add_allow_rules", "host": "b.example.com", "port": 443,
                       "rules": [{"allow": {"method": "GET", "path": "/x"}}]}])
    expect_error("a batch with a failing operation: 400 naming it", r, 400, "invalid_argument",
                 "operations[1]: no endpoint b.example.com:443")
    tap(revisions("ops") == before and "x" not in latest("ops")[0].get("network_policies", {}),
        "... and nothing of the batch was written")

    # --- invalid operations: 400 naming the operation index and field
    bad = [
        ([{"op": "frobnicate"}], "operations[0].op: unknown operation 'frobnicate'"),
        ([{"name": "x"}], "operations[0].op: required"),
        ([{"op": "remove_rule"}], "operations[0].name: required"),
        ([{"op": "remove_rule", "name": "a"}, {"op": "remove_endpoint", "port": 443}],
         "operations[1].host: required"),
        ([{"op": "remove_endpoint", "host": "h", "port": 70000}], "operations[0].port"),
        ([{"op": "remove_endpoint", "host": "h", "port": "443"}], "operations[0].port"),
        ([{"op": "remove_rule", "name": "a", "bogus": 1}], "operations[0].bogus: unknown field"),
        ([{"op": "add_rule", "name": "r", "rule": {"endpoints": []}}],
         "operations[0].rule.endpoints: required"),
        ([{"op": "add_rule", "name": "r", "rule": {"endpoints": [{"port": 1}]}}],
         "operations[0].rule.endpoints[0].host"),
        ([{"op": "add_rule", "name": "r", "rule": {"endpoints": [{"host": "h"}]}}],
         "operations[0].rule.endpoints[0].port: required"),
        ([{"op": "add_rule", "name": "r", "rule": {"endpoints": [ep("h.example.com", 1)],
                                                   "binaries": ["/bin/sh"]}}],
         "operations[0].rule.binaries[0]"),
        ([add_rule("_provider_x", [ep("h.example.com", 1)])],
         "operations[0].name: names starting with _provider_ are reserved"),
        ([{"op": "add_allow_rules", "host": "h", "port": 1,
           "rules": [{"allow": {"method": "GET", "path": "x"}}]}],
         "operations[0].rules[0].allow.path: must start with '/'"),
        ([{"op": "add_deny_rules", "host": "h", "port": 1, "deny_rules": [{"path": "/x"}]}],
         "operations[0].deny_rules[0].method: required"),
        ([], "operations: required"),
        ("notalist", "operations: expected an array"),
        ([{"op": "add_rule", "name": "w", "rule": {"endpoints": [ep("*", 443)],
                                                   "binaries": [{"path": "/bin/sh"}]}}],
         "the operations give an invalid policy"),
    ]
    for ops, msg in bad:
        r = curl("PATCH", SB + "/ops/policy", {"operations": ops})
        expect_error("invalid: %s" % msg, r, 400, "invalid_argument", msg)
    expect_error("unknown top-level field: 400",
                 curl("PATCH", SB + "/ops/policy", {"operations": [], "force": True}), 400,
                 "invalid_argument", "force: unknown field")
    expect_error("dry_run not a boolean: 400",
                 curl("PATCH", SB + "/ops/policy", {"operations": [{"op": "remove_rule",
                                                                    "name": "a"}],
                                                    "dry_run": "yes"}), 400,
                 "invalid_argument", "dry_run")
    expect_error("not JSON: 415", curl("PATCH", SB + "/ops/policy", "x", ctype="text/plain"),
                 415, "unsupported_media_type")
    # --- always-blocked destinations are refused in merges (as the reference)
    for host, ips, msg in [
        ("localhost", None, "endpoints[0].host: localhost is always blocked"),
        ("METADATA.google.internal", None, "always blocked"),
        ("127.0.0.1", None, "endpoints[0].host: 127.0.0.1 is an always-blocked address"),
        ("169.254.169.254", None, "always-blocked address"),
        ("::1", None, "always-blocked address"),
        ("db.example.com", ["10.0.0.0/8", "127.0.0.0/16"],
         "endpoints[0].allowed_ips[1]: 127.0.0.0/16 overlaps loopback"),
        ("db.example.com", ["0.0.0.0/0"], "allowed_ips[0]: 0.0.0.0/0 overlaps"),
        ("db.example.com", ["::ffff:169.254.1.1"], "overlaps"),
        ("db.example.com", ["fe80::1/64"], "overlaps"),
        ("db.example.com", ["not-an-ip"], "allowed_ips[0]: not-an-ip is not an IP or CIDR"),
    ]:
        e = ep(host, 5432)
        if ips:
            e["allowed_ips"] = ips
        expect_error("add_rule to %s %s: 400" % (host, ips or ""),
                     patch("ops", [add_rule("db", [e], ["/usr/bin/psql"])]), 400,
                     "invalid_argument", msg)
    r = patch("ops", [add_rule("db", [ep("db.example.com", 5432,
                                         allowed_ips=["10.0.5.0/24", "192.168.1.7"])],
                               ["/usr/bin/psql"])], dry_run=True)
    tap(r[0] == 200, "add_rule with private (not always-blocked) allowed_ips is accepted", r)

    pad = "p" * 80
    big = [add_rule("big", [ep("big.example.com", 443)],
                    ["/usr/local/bin/%s-%02d-%03d" % (pad, j, i) for i in range(250)])
           for j in range(12)]
    expect_error("a merged policy over 256 KiB: 413", patch("ops", big), 413,
                 "payload_too_large", "over 262144 bytes")
    expect_error("unknown sandbox: 404",
                 patch("nosuch", [{"op": "remove_rule", "name": "a"}]), 404, "not_found")
    r = patch("ops", [{"op": "add_allow_rules", "host": "h", "port": 1,
                       "rules": [{"allow": {"method": "GET", "path": "/x"}}]}])
    expect_error("add_allow_rules on a missing endpoint: 400", r, 400, "invalid_argument",
                 "no endpoint h:1")
    patch("ops", [add_rule("plain", [ep("plain.example.com", 443)], ["/bin/sh"])])
    r = patch("ops", [{"op": "add_allow_rules", "host": "plain.example.com", "port": 443,
                       "rules": [{"allow": {"method": "GET", "path": "/x"}}]}])
    expect_error("add_allow_rules on an uninspected endpoint: 400", r, 400, "invalid_argument",
                 "rules need protocol rest or websocket")
    patch("ops", [add_rule("ambig", [ep("plain.example.com", 443)], ["/bin/true"])])
    r = patch("ops", [{"op": "add_deny_rules", "host": "plain.example.com", "port": 443,
                       "deny_rules": [{"method": "GET", "path": "/x"}]}])
    expect_error("host:port served by two endpoints: 400 ambiguous", r, 400, "invalid_argument",
                 "ambiguous")

    # --- If-Match
    etag = curl("GET", SB + "/ops")[1].get("etag", "")
    r = patch("ops", [{"op": "remove_rule", "name": "ambig"}], headers={"If-Match": '"1"'})
    expect_error("a stale If-Match: 409 aborted", r, 409, "aborted", "resource_version is")
    before = revisions("ops")
    r = patch("ops", [{"op": "remove_rule", "name": "ambig"}], headers={"If-Match": etag})
    tap(r[0] == 200 and revisions("ops") == before + 1 and
        r[1].get("etag") == '"%d"' % (int(etag.strip('"')) + 1),
        "the current If-Match: written, ETag advanced", r)

    # --- a YAML revision as the base (numbers stay numbers)
    yaml_pol = ("version: 1\nnetwork_policies:\n  pypi:\n    endpoints:\n"
                "      - host: pypi.org\n        port: 443\n    binaries:\n"
                "      - path: /usr/bin/pip\n")
    r = curl("PUT", SB + "/ops/policy", yaml_pol, ctype="application/yaml")
    tap(r[0] == 200, "PUT a YAML policy", r)
    r = patch("ops", [add_rule("pypi", [ep("files.pythonhosted.org", 443)], ["/usr/bin/pip"])])
    pol, text, _ = latest("ops")
    blk = pol.get("network_policies", {}).get("pypi", {})
    tap(r[0] == 200 and jb(r).get("base") == "sandbox" and
        blk.get("endpoints") == [{"host": "pypi.org", "port": 443},
                                 {"host": "files.pythonhosted.org", "port": 443}] and
        blk.get("binaries") == [{"path": "/usr/bin/pip"}] and pol.get("version") == 1,
        "PATCH on a YAML revision: converted to JSON and merged", text)

    # --- a stored endpoint with more ports than one API array may hold
    many = ("version: 1\nnetwork_policies:\n  wide:\n    endpoints:\n"
            "      - host: wide.example.com\n        ports: [%s]\n    binaries:\n"
            "      - path: /bin/sh\n" % ", ".join(str(p) for p in range(1000, 1300)))
    r = curl("PUT", SB + "/ops/policy", many, ctype="application/yaml")
    r2 = patch("ops", [{"op": "remove_endpoint", "host": "wide.example.com", "port": 1100}])
    pol, _, _ = latest("ops")
    ports = pol.get("network_policies", {}).get("wide", {}).get("endpoints", [{}])[0].get(
        "ports", [])
    tap(r[0] == 200 and r2[0] == 200 and len(ports) == 299 and 1100 not in ports and
        ports[0] == 1000 and ports[-1] == 1299,
        "remove_endpoint on a 300-port endpoint keeps the other 299 (nothing truncated)",
        "%s %s %d" % (r[0], r2[2][:300], len(ports)))

    # --- spec.policy as the base
    spec_pol = {"version": 1, "network_policies": {"npm": {
        "endpoints": [{"host": "registry.npmjs.org", "port": 443}],
        "binaries": [{"path": "/usr/bin/npm"}]}}}
    r = curl("POST", SB, {"name": "specpol", "spec": {"policy": spec_pol}})
    tap(r[0] == 201, "create sandbox specpol with a spec.policy", r)
    r = patch("specpol", [add_rule("npm", [ep("registry.yarnpkg.com", 443)], ["/usr/bin/npm"])])
    pol, text, _ = latest("specpol")
    tap(r[0] == 200 and jb(r).get("base") == "spec" and jb(r).get("version") == 1 and
        [e["host"] for e in pol["network_policies"]["npm"]["endpoints"]] ==
        ["registry.npmjs.org", "registry.yarnpkg.com"], "PATCH with spec.policy as the base", r)

    # --- a connected supervisor is told, and its config is the merged policy
    tok = jb(curl("POST", SB + "/ops/token")).get("token", "")
    sess = Session(tok)
    try:
        sess.send({"type": "hello", "supervisor_pid": 1, "version": "test", "policy_version": 0})
        up = False
        for _ in range(200):
            if jb(curl("GET", SB + "/ops")).get("status", {}).get("supervisor", {}).get(
                    "connected"):
                up = True
                break
            time.sleep(0.05)
        r = patch("ops", [add_rule("pushed", [ep("push.example.com", 443)], ["/bin/sh"])])
        line = sess.wait_line(lambda j: j.get("type") == "config") if up else None
        tap(r[0] == 200 and line == {"type": "config", "reason": "policy"},
            "a PATCH pushes {type: config, reason: policy} to the sandbox's supervisor",
            "%s %s up=%s" % (r, line, up))
        out = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "--unix-socket", SOCK,
                              "-H", "authorization: Bearer " + tok,
                              "http://localhost/v1/supervisor/config"], capture_output=True,
                             timeout=10).stdout
        cfg = json.loads(out or b"{}").get("policy", {})
        tap(cfg.get("source") == "sandbox" and cfg.get("format") == "json" and
            cfg.get("version") == jb(r).get("version") and
            "pushed" in json.loads(cfg.get("policy", "{}")).get("network_policies", {}),
            "GET /v1/supervisor/config serves the merged revision", out[:600])
    finally:
        sess.close()

    # --- a history past one page (1,000 revisions): the latest is the base
    r = curl("POST", SB, {"name": "hist"})
    r = curl("PUT", SB + "/hist/policy", json.dumps(spec_pol))
    sid = jb(curl("GET", SB + "/hist")).get("metadata", {}).get("id")
    rc = stop()
    db = sqlite3.connect(os.path.join(STATE, "openshell.db"))
    (payload,) = db.execute("SELECT payload FROM objects WHERE scope=? AND version=1",
                            (sid,)).fetchone()
    newest = {"version": 1, "network_policies": {"newest": {
        "endpoints": [{"host": "newest.example.com", "port": 443}],
        "binaries": [{"path": "/bin/sh"}]}}}
    last = json.dumps({"format": "json", "hash": "sha256:" + "0" * 64,
                       "policy": json.dumps(newest), "load_error": None})
    now = int(time.time() * 1000)
    with db:
        for v in range(2, 1206):
            db.execute("INSERT INTO objects(id, object_type, workspace, resource_version, payload,"
                       " created_at_ms, updated_at_ms, scope, version, status) VALUES"
                       " (?, 'sandbox_policy', 'default', 1, ?, ?, ?, ?, ?, 'superseded')",
                       ("00000000-0000-4000-8000-%012d" % v, last if v == 1205 else payload,
                        now, now, sid, v))
    db.close()
    tap(rc == 0 and start(), "gateway restarted over 1,205 revisions of sandbox hist")
    rev = jb(curl("GET", SB + "/hist/policy"))
    lst = jb(curl("GET", SB + "/hist/policy/revisions"))
    r3 = jb(curl("GET", SB + "/hist/policy/revisions/3"))
    items = lst.get("items", [])
    tap(rev.get("version") == 1205 and "newest" in rev.get("policy", "") and
        lst.get("total") == 1205 and len(items) == 1000 and items[0]["version"] == 1205 and
        items[-1]["version"] == 206 and r3.get("version") == 3,
        "GET policy is revision 1205; the list is the newest 1,000; revision 3 still reads",
        "%s %s %s" % (rev.get("version"), lst.get("total"), [i["version"] for i in items[:2]]))
    r = curl("PATCH", SB + "/hist/policy", {"operations": [
        add_rule("newest", [ep("newest.example.com", 443)], ["/bin/bash", "/bin/sh"])]})
    pol, _, _ = latest("hist")
    tap(r[0] == 200 and jb(r).get("version") == 1206 and
        [b["path"] for b in pol.get("network_policies", {}).get("newest", {}).get(
            "binaries", [])] == ["/bin/sh", "/bin/bash"] and "npm" not in pol["network_policies"],
        "PATCH past 1,000 revisions merges into the latest one (not the 1,000th)", r)
    tok = jb(curl("POST", SB + "/hist/token")).get("token", "")
    out = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "--unix-socket", SOCK, "-H",
                          "authorization: Bearer " + tok, "http://localhost/v1/supervisor/config"],
                         capture_output=True, timeout=10).stdout
    cfg = json.loads(out or b"{}").get("policy", {})
    tap(cfg.get("version") == 1206, "... and the supervisor's config is revision 1206",
        out[:300])

    # --- the global policy
    GP = "/v1/gateway/policy"
    expect_error("PATCH of the global policy while there is none: 404",
                 curl("PATCH", GP, {"operations": [{"op": "remove_rule", "name": "a"}]}), 404,
                 "not_found", "no global policy")
    r = curl("PUT", GP, json.dumps(spec_pol))
    tap(r[0] == 200, "PUT a global policy", r)
    before = revisions("ops")
    expect_error("a sandbox PATCH while a global policy is active: 412",
                 patch("ops", [{"op": "remove_rule", "name": "pypi"}]), 412,
                 "failed_precondition", "global policy is active")
    tap(revisions("ops") == before, "... and nothing was written")
    r = curl("PATCH", GP, {"operations": [add_rule("pip", [ep("pypi.org", 443)],
                                                   ["/usr/bin/pip"])]})
    g = jb(curl("GET", GP))
    gp = json.loads(g.get("policy", "{}"))
    tap(r[0] == 200 and jb(r).get("version") == 2 and jb(r).get("base") == "global" and
        sorted(gp.get("network_policies", {})) == ["npm", "pip"],
        "PATCH of the global policy: revision 2 with the rule added", r)

    rc = stop()
    tap(rc == 0, "the gateway exits 0 on SIGTERM (no sanitizer report under ASan)",
        "exit %s\n%s" % (rc, open(LOG).read()[-3000:]))
    return tap.plan()


def stop():
    """Stop the gateway; its exit status."""
    if gw and gw.poll() is None:
        gw.terminate()
        try:
            gw.wait(timeout=20)
        except subprocess.TimeoutExpired:
            gw.kill()
            gw.wait()
    return gw.returncode if gw else None


if __name__ == "__main__":
    try:
        rc = main()
    finally:
        stop()
        shutil.rmtree(T, ignore_errors=True)
    sys.exit(rc)
