#!/usr/bin/python3
"""E2E: openshell-gateway's API on its unix socket, through real curl (HTTP/2
prior knowledge): every endpoint of the slice, every error status, strict
JSON, 413, CAS conflicts, label selectors, watch streams, peer-credential
checks, graceful shutdown and restart with the state kept. Prints TAP."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import e2elib

BIN = os.environ["OPENSHELL_BIN"]
T = tempfile.mkdtemp(prefix="openshell-gw-e2e.")
os.chmod(T, 0o755)  # the uid-65534 test must reach the socket
STATE = os.path.join(T, "state")
SOCK = os.path.join(T, "gw.sock")
LOG = os.path.join(T, "gateway.log")
BASE = "http://localhost"
tap = e2elib.Tap()
gw = None


def start():
    global gw
    lnk = os.path.join(T, "openshell-gateway")
    if not os.path.exists(lnk):
        os.symlink(BIN, lnk)
    log = open(LOG, "a")
    gw = subprocess.Popen([lnk, "--state-dir", STATE, "--socket", SOCK, "--listen", "none",
                           "--compute-driver", "none",
                           "--idle-timeout", "1", "--log-format", "text"],
                          stdout=log, stderr=log)
    for _ in range(200):
        if os.path.exists(SOCK):
            r = curl("GET", "/healthz")
            if r[0] == 200:
                return True
        if gw.poll() is not None:
            return False
        time.sleep(0.02)
    return False


def curl(method, path, body=None, headers=None, ctype="application/json", user=None,
         timeout=10):
    """Returns (status, headers dict, body text, http_version)."""
    out = os.path.join(T, "out")
    if not os.path.isdir(out):
        os.mkdir(out)
        os.chmod(out, 0o777)
    hfile = os.path.join(out, "h.txt")
    bfile = os.path.join(out, "b.txt")
    cmd = ["curl", "-sS", "--http2-prior-knowledge", "--unix-socket", SOCK, "-X", method,
           "-D", hfile, "-o", bfile, "-w", "%{http_code} %{http_version}",
           "--max-time", str(timeout)]
    for k, v in (headers or {}).items():
        cmd += ["-H", "%s: %s" % (k, v)]
    if body is not None:
        if ctype:
            cmd += ["-H", "content-type: " + ctype]
        cmd += ["--data-binary", "@-"]
    if user is not None:
        cmd = ["setpriv", "--reuid=%d" % user, "--regid=%d" % user, "--clear-groups"] + cmd
    p = subprocess.run(cmd + [BASE + path], input=(body.encode() if isinstance(body, str)
                                                   else body), capture_output=True)
    try:
        code, ver = p.stdout.decode().split()
        code = int(code)
    except ValueError:
        return (0, {}, p.stderr.decode(), "")
    hdrs = {}
    if os.path.exists(hfile):
        for line in open(hfile, errors="replace"):
            if ":" in line and not line.startswith("HTTP"):
                k, v = line.split(":", 1)
                hdrs[k.strip().lower()] = v.strip()
    text = open(bfile, errors="replace").read() if os.path.exists(bfile) else ""
    for f in (hfile, bfile):
        if os.path.exists(f):
            os.unlink(f)
    return (code, hdrs, text, ver)


def jbody(r):
    try:
        return json.loads(r[2])
    except ValueError:
        return None


def expect_error(name, r, status, code, contains=None):
    j = jbody(r)
    ok = (r[0] == status and isinstance(j, dict) and "error" in j and
          j["error"].get("code") == code and isinstance(j["error"].get("message"), str) and
          (contains is None or contains in j["error"]["message"]))
    tap(ok, name, "status %s body %s" % (r[0], r[2][:500]))


SB = "/v1/workspaces/default/sandboxes"


def main():
    if not shutil.which("curl"):
        print("1..0 # SKIP curl not installed")
        return 0
    if not start():
        tap(False, "gateway starts", open(LOG).read())
        return 1
    tap(True, "gateway starts and answers /healthz")

    # --- one gateway per state directory
    p = subprocess.run([os.path.join(T, "openshell-gateway"), "--state-dir", STATE, "--socket",
                        SOCK + "2", "--listen", "none"], capture_output=True, timeout=10)
    tap(p.returncode == 1 and b"another openshell-gateway (pid %d)" % gw.pid in p.stderr and
        curl("GET", "/healthz")[0] == 200,
        "a second gateway on the same state directory is refused; the first keeps serving",
        p.stderr)

    # --- health, info
    r = curl("GET", "/healthz")
    tap(r[0] == 200 and jbody(r) == {"status": "ok"} and r[3] == "2", "GET /healthz over HTTP/2",
        r)
    r = curl("GET", "/readyz")
    j = jbody(r) or {}
    tap(r[0] == 200 and j.get("status") == "healthy" and
        j["checks"]["database"]["status"] == "healthy", "GET /readyz: database healthy", r)
    r = curl("GET", "/v1/health")
    tap(r[0] == 200 and (jbody(r) or {}).get("status") == "healthy", "GET /v1/health", r)
    r = curl("GET", "/v1/gateway")
    j = jbody(r) or {}
    tap(r[0] == 200 and j.get("compute_drivers") == [] and j.get("schema_version") == 2 and
        j.get("api") == "v1", "GET /v1/gateway: info, no compute driver", r)

    # --- create
    r = curl("POST", SB, json.dumps({"name": "alpha", "labels": {"env": "prod", "team": "a"},
                                     "annotations": {"note": "x"},
                                     "spec": {"environment": {"FOO": "bar"},
                                              "log_level": "debug",
                                              "template": {"image": "base"}}}))
    j = jbody(r) or {}
    md = j.get("metadata", {})
    tap(r[0] == 201 and r[1].get("etag") == '"1"' and md.get("name") == "alpha" and
        md.get("resource_version") == 1 and md.get("labels") == {"env": "prod", "team": "a"} and
        j["status"]["phase"] == "provisioning" and
        "command" not in j["spec"] and "tty" not in j["spec"],
        "POST sandbox: 201, ETag, provisioning, no command (an idle sandbox)", r)
    alpha_id = md.get("id", "")
    for name, labels in (("beta", {"env": "dev", "team": "a"}),
                         ("gamma", {"env": "prod", "team": "b", "example.com/tier": "1"})):
        r = curl("POST", SB, json.dumps({"name": name, "labels": labels,
                                         "spec": {"command": ["/bin/echo", "hi"]}}))
        tap(r[0] == 201 and jbody(r)["spec"]["command"] == ["/bin/echo", "hi"],
            "POST sandbox %s" % name, r)
    r = curl("POST", SB, "{}")
    j = jbody(r) or {}
    gen = j.get("metadata", {}).get("name", "")
    tap(r[0] == 201 and gen.startswith("sandbox-") and len(gen) <= 19,
        "POST sandbox without a name gets a generated one", r)
    expect_error("POST duplicate name: 409 already_exists",
                 curl("POST", SB, '{"name":"alpha"}'), 409, "already_exists", "alpha")

    # --- get
    r = curl("GET", SB + "/alpha")
    tap(r[0] == 200 and r[1].get("etag") == '"1"' and
        jbody(r)["metadata"]["annotations"] == {"note": "x"}, "GET sandbox: 200 with ETag", r)
    expect_error("GET unknown sandbox: 404", curl("GET", SB + "/nope"), 404, "not_found", "nope")
    expect_error("GET in an unknown workspace: 404",
                 curl("GET", "/v1/workspaces/other/sandboxes/alpha"), 404, "not_found",
                 "workspace")

    # --- list
    r = curl("GET", SB)
    j = jbody(r) or {}
    names = [i["metadata"]["name"] for i in j.get("items", [])]
    tap(r[0] == 200 and names[:3] == ["alpha", "beta", "gamma"] and j.get("total") == 4,
        "GET list: all, creation order, total", r)
    r = curl("GET", SB + "?label_selector=env%3Dprod")
    names = [i["metadata"]["name"] for i in (jbody(r) or {}).get("items", [])]
    tap(r[0] == 200 and names == ["alpha", "gamma"], "list label_selector env=prod", r)
    r = curl("GET", SB + "?label_selector=env%3Dprod%2Cteam%3Db")
    names = [i["metadata"]["name"] for i in (jbody(r) or {}).get("items", [])]
    tap(r[0] == 200 and names == ["gamma"], "list label_selector env=prod,team=b", r)
    r = curl("GET", SB + "?label_selector=example.com%2Ftier%3D1")
    names = [i["metadata"]["name"] for i in (jbody(r) or {}).get("items", [])]
    tap(r[0] == 200 and names == ["gamma"], "list label_selector with a prefixed key", r)
    r = curl("GET", SB + "?limit=2&offset=1")
    j = jbody(r) or {}
    names = [i["metadata"]["name"] for i in j.get("items", [])]
    tap(r[0] == 200 and names == ["beta", "gamma"] and j.get("total") == 4,
        "list limit/offset keeps the total", r)
    r = curl("GET", "/v1/sandboxes")
    tap(r[0] == 200 and len((jbody(r) or {}).get("items", [])) == 4,
        "GET /v1/sandboxes: every workspace", r)
    expect_error("list: bad selector 400", curl("GET", SB + "?label_selector=env"), 400,
                 "invalid_argument", "label selector")
    expect_error("list: injection-looking selector 400",
                 curl("GET", SB + "?label_selector=a%3D%27%29%20OR%201%3D1"), 400,
                 "invalid_argument")
    expect_error("list: limit over 1000 is 400", curl("GET", SB + "?limit=5000"), 400,
                 "invalid_argument", "limit")
    expect_error("list: negative offset is 400", curl("GET", SB + "?offset=-1"), 400,
                 "invalid_argument", "offset")
    expect_error("list: unknown query parameter is 400", curl("GET", SB + "?colour=red"), 400,
                 "invalid_argument", "colour")

    # --- strict bodies
    bad = [
        ("malformed JSON", '{"name": "x",', "not valid JSON"),
        ("trailing data", '{"name":"x"} {}', "after the JSON"),
        ("not an object", '["x"]', "JSON object"),
        ("empty body", "", "empty"),
        ("duplicate key", '{"name":"a","name":"b"}', "duplicate"),
        ("nested duplicate key", '{"spec":{"tty":true,"tty":false}}', "duplicate"),
        ("unknown field", '{"name":"x","colour":"red"}', "colour: unknown field"),
        ("unknown spec field", '{"spec":{"cmd":["ls"]}}', "spec.cmd: unknown field"),
        ("unknown template field", '{"spec":{"template":{"img":"x"}}}', "spec.template.img"),
        ("name wrong type", '{"name":5}', "name: expected a string"),
        ("labels wrong type", '{"labels":"env=prod"}', "labels: expected an object"),
        ("label value wrong type", '{"labels":{"env":1}}', "labels.env: expected a string"),
        ("command wrong type", '{"spec":{"command":"ls -l"}}', "expected an array"),
        ("command item wrong type", '{"spec":{"command":["ls",1]}}', "spec.command[1]"),
        ("tty wrong type", '{"spec":{"tty":"yes"}}', "spec.tty: expected true or false"),
        ("environment value wrong type", '{"spec":{"environment":{"A":1}}}',
         "spec.environment.A"),
        ("environment bad name", '{"spec":{"environment":{"1A":"x"}}}', "not a valid variable"),
        ("NUL escape in a value", '{"spec":{"environment":{"A":"x\\u0000y"}}}', "u0000"),
        ("NUL escape in a label", '{"labels":{"env":"a\\u0000"}}', "u0000"),
        ("bad log level", '{"spec":{"log_level":"loud"}}', "log_level"),
        ("policy not an object", '{"spec":{"policy":"allow all"}}', "spec.policy"),
        ("invalid name", '{"name":"Bad_Name"}', "name"),
        ("name too long", '{"name":"abcdefghijklmnopqrstu"}', "1-19"),
        ("name with --", '{"name":"a--b"}', "--"),
        ("bad label key", '{"labels":{"-x":"1"}}', "label key"),
        ("bad label value", '{"labels":{"x":"a b"}}', "value"),
        ("gpu count", '{"spec":{"resource_requirements":{"gpu":{"count":1.5}}}}', "gpu.count"),
    ]
    for name, body, msg in bad:
        expect_error("400 for %s" % name, curl("POST", SB, body), 400, "invalid_argument", msg)
    expect_error("415 for a non-JSON content type",
                 curl("POST", SB, '{"name":"x"}', ctype="text/plain"), 415,
                 "unsupported_media_type")
    big = '{"name":"big","annotations":{"a":"' + "x" * (2 * 1024 * 1024) + '"}}'
    expect_error("413 for a 2 MiB body", curl("POST", SB, big), 413, "payload_too_large")
    r = curl("GET", SB + "/big")
    tap(r[0] == 404, "nothing was created by the oversized request", r)
    tap(gw.poll() is None, "the gateway survived every bad request")

    # --- routing errors
    r = curl("PUT", "/v1/sandboxes", "{}")
    tap(r[0] == 405 and "GET" in r[1].get("allow", "") and
        (jbody(r) or {}).get("error", {}).get("code") == "method_not_allowed",
        "405 with Allow for a wrong method", r)
    expect_error("404 for an unknown path", curl("GET", "/v1/nothing"), 404, "not_found")

    # --- CAS
    r = curl("PATCH", SB + "/alpha", '{"labels":{"env":"staging"}}', headers={"if-match": '"1"'})
    tap(r[0] == 200 and r[1].get("etag") == '"2"' and
        jbody(r)["metadata"]["labels"] == {"env": "staging"}, "PATCH with If-Match: 200, ETag 2",
        r)
    expect_error("PATCH with a stale If-Match: 409 aborted",
                 curl("PATCH", SB + "/alpha", '{"labels":{}}', headers={"if-match": '"1"'}), 409,
                 "aborted", "resource_version is 2")
    expect_error("PATCH with a weak ETag: 400",
                 curl("PATCH", SB + "/alpha", '{"labels":{}}', headers={"if-match": 'W/"2"'}),
                 400, "invalid_argument", "If-Match")
    expect_error("PATCH of an unknown field: 400",
                 curl("PATCH", SB + "/alpha", '{"spec":{}}'), 400, "invalid_argument", "spec")
    r = curl("PATCH", SB + "/alpha", '{"annotations":{"k":"v"}}')
    tap(r[0] == 200 and r[1].get("etag") == '"3"' and
        jbody(r)["metadata"]["annotations"] == {"k": "v"}, "PATCH without If-Match", r)
    expect_error("DELETE with a stale If-Match: 409",
                 curl("DELETE", SB + "/alpha", headers={"if-match": '"2"'}), 409, "aborted")

    # --- watch
    w = subprocess.Popen(["curl", "-sS", "-N", "--http2-prior-knowledge", "--unix-socket", SOCK,
                          "--max-time", "10", BASE + SB + "/alpha/watch"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.3)
    r1 = curl("PATCH", SB + "/alpha", '{"labels":{"env":"w1"}}')
    time.sleep(0.1)
    r2 = curl("DELETE", SB + "/alpha", headers={"if-match": '"4"'})
    try:
        out, err = w.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        w.kill()
        out, err = w.communicate()
    lines = [json.loads(x) for x in out.decode().splitlines() if x.strip()]
    types = [x.get("type") for x in lines]
    tap(r1[0] == 200 and r2[0] == 200 and jbody(r2) == {"deleted": True},
        "PATCH then DELETE with the right If-Match", (r1, r2))
    tap(types == ["sandbox", "sandbox", "deleted"] and
        lines[0]["sandbox"]["metadata"]["resource_version"] == 3 and
        lines[1]["sandbox"]["metadata"]["labels"] == {"env": "w1"} and w.returncode == 0,
        "watch: snapshot, change, deleted, then the stream ends", out.decode() + err.decode())
    r = curl("GET", SB + "/alpha")
    tap(r[0] == 404, "deleted sandbox is gone", r)
    expect_error("DELETE again: 404", curl("DELETE", SB + "/alpha"), 404, "not_found")
    r = curl("GET", SB + "/beta/watch?follow=0")
    lines = r[2].splitlines()
    tap(r[0] == 200 and r[1].get("content-type") == "application/x-ndjson" and
        len(lines) == 1 and json.loads(lines[0])["sandbox"]["metadata"]["name"] == "beta",
        "watch follow=0: one ndjson snapshot", r)
    beta_id = json.loads(lines[0])["sandbox"]["metadata"]["id"] if lines else ""
    r = curl("GET", "/v1/sandboxes/%s/watch?follow=0" % beta_id)
    tap(r[0] == 200 and '"name":"beta"' in r[2], "watch by id", r)
    r = curl("GET", "/v1/sandboxes/%s" % beta_id)
    tap(r[0] == 200 and (jbody(r) or {}).get("metadata", {}).get("name") == "beta" and
        r[1].get("etag"), "GET by id", r)
    expect_error("GET by an unknown id: 404", curl("GET", "/v1/sandboxes/%s" % alpha_id), 404,
                 "not_found")
    expect_error("watch of an unknown id: 404",
                 curl("GET", "/v1/sandboxes/%s/watch" % alpha_id), 404, "not_found")

    # --- policy revisions
    pol = subprocess.run([BIN, "policy", "default"], capture_output=True).stdout.decode()
    P = SB + "/gamma/policy"
    expect_error("GET policy before any revision: 404", curl("GET", P), 404, "not_found",
                 "no policy revision yet")
    r = curl("PUT", P, pol, ctype="application/yaml", headers={"if-match": '"1"'})
    j = jbody(r) or {}
    tap(r[0] == 200 and j.get("version") == 1 and j.get("status") == "pending" and
        j.get("policy_hash", "").startswith("sha256:") and r[1].get("etag") == '"2"',
        "PUT policy (YAML, If-Match): revision 1 pending, sandbox ETag 2", r)
    r = curl("PUT", P, json.dumps({"version": 1, "network_policies": {}}))
    tap(r[0] == 200 and (jbody(r) or {}).get("version") == 2, "PUT policy as JSON: revision 2",
        r)
    expect_error("PUT policy with a stale If-Match: 409", curl("PUT", P, pol,
                 ctype="application/yaml", headers={"if-match": '"2"'}), 409, "aborted")
    expect_error("PUT an invalid policy: 400 with the engine's diagnostic",
                 curl("PUT", P, "version: 1\nfilesystem_policy: {bogus: 1}\n",
                      ctype="application/yaml"), 400, "invalid_argument", "bogus")
    expect_error("PUT a policy as text/plain: 415", curl("PUT", P, pol, ctype="text/plain"), 415,
                 "unsupported_media_type")
    expect_error("PUT a policy over 256 KiB: 413",
                 curl("PUT", P, "# " + "x" * (300 * 1024) + "\n" + pol,
                      ctype="application/yaml"), 413, "payload_too_large")
    r = curl("GET", P + "/revisions")
    j = jbody(r) or {}
    tap(r[0] == 200 and [(i["version"], i["status"]) for i in j.get("items", [])] ==
        [(2, "pending"), (1, "superseded")] and j.get("total") == 2,
        "revisions: newest first, older pending superseded", r)
    r = curl("GET", P + "/revisions/1")
    j = jbody(r) or {}
    tap(r[0] == 200 and j.get("policy") == pol and j.get("format") == "yaml",
        "revision 1 returns the policy as sent", r)
    r = curl("GET", P)
    tap(r[0] == 200 and (jbody(r) or {}).get("version") == 2, "GET policy: the latest", r)
    expect_error("revision 9: 404", curl("GET", P + "/revisions/9"), 404, "not_found")
    expect_error("revision x: 400", curl("GET", P + "/revisions/x"), 400, "invalid_argument")
    r = curl("GET", SB + "/gamma")
    st = (jbody(r) or {}).get("status", {}).get("policy", {})
    tap(r[0] == 200 and st.get("latest_version") == 2 and r[1].get("etag") == '"3"',
        "the sandbox records the latest revision in the same transaction", r)
    expect_error("create with an invalid spec.policy: 400",
                 curl("POST", SB, json.dumps({"name": "badpol", "spec": {"policy": {
                     "version": 1, "network_policies": {"x": {"bad": 1}}}}})), 400,
                 "invalid_argument", "spec.policy")
    r = curl("POST", SB, json.dumps({"name": "goodpol", "spec": {"policy": {
        "version": 1, "network_policies": {}}}}))
    tap(r[0] == 201, "create with a valid spec.policy", r)

    # --- a watcher that reads slowly: changes are coalesced, memory stays bounded
    r = curl("POST", SB, '{"name":"slow"}')
    slow = subprocess.Popen(["curl", "-sS", "-N", "--limit-rate", "4k", "--http2-prior-knowledge",
                             "--unix-socket", SOCK, BASE + SB + "/slow/watch"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)

    def rss():
        for line in open("/proc/%d/status" % gw.pid):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0
    before = rss()
    big = "y" * (400 * 1024)
    codes = set()
    for i in range(40):
        codes.add(curl("PATCH", SB + "/slow", json.dumps({"annotations": {"i": str(i), "a": big}}))
                  [0])
    after = rss()
    j = jbody(curl("GET", "/v1/gateway")) or {}
    tap(codes == {200} and j.get("watch_streams", 0) >= 1 and after - before < 8 * 1024,
        "40 x 400 KiB changes to a slow watcher: RSS grew %d KiB (uncoalesced: 16 MiB)" %
        (after - before), (codes, before, after))
    slow.kill()
    slow.wait()
    time.sleep(0.3)
    j = jbody(curl("GET", "/v1/gateway")) or {}
    tap(j.get("watch_streams") == 0, "the slow watcher is gone once its client is", j)
    r = curl("GET", SB + "/slow/watch?follow=0")
    tap(r[0] == 200 and '"i":"39"' in r[2], "a new watcher sees the latest state", r[0])
    curl("DELETE", SB + "/slow")

    # --- the global policy
    GP = "/v1/gateway/policy"
    expect_error("no global policy yet: 404", curl("GET", GP), 404, "not_found", "global")
    r = curl("PUT", GP, pol, ctype="application/yaml")
    tap(r[0] == 200 and (jbody(r) or {}).get("version") == 1, "PUT the global policy", r)
    etag = r[1].get("etag", "")
    expect_error("global policy with a stale If-Match: 409",
                 curl("PUT", GP, pol, ctype="application/yaml", headers={"if-match": '"1"'}),
                 409, "aborted", "global")
    r = curl("PUT", GP, pol, ctype="application/yaml", headers={"if-match": etag})
    tap(r[0] == 200 and (jbody(r) or {}).get("version") == 2, "PUT it again with its ETag", r)
    r = curl("GET", GP + "/revisions")
    tap([(i["version"], i["status"]) for i in (jbody(r) or {}).get("items", [])] ==
        [(2, "pending"), (1, "superseded")], "global revisions", r)
    r = curl("GET", GP + "/revisions/1")
    tap(r[0] == 200 and (jbody(r) or {}).get("policy") == pol, "global revision 1", r)
    r = curl("GET", SB + "/gamma/policy/revisions")
    tap((jbody(r) or {}).get("total") == 2, "sandbox revisions are separate from global ones", r)

    # --- sandbox tokens and the supervisor endpoints
    r = curl("POST", SB + "/gamma/token")
    tok = (jbody(r) or {}).get("token", "")
    tap(r[0] == 201 and tok.startswith("osb_") and len(tok) == 47 and
        jbody(r).get("sandbox_id"), "mint a sandbox token", r)
    bearer = {"authorization": "Bearer " + tok}
    expect_error("supervisor config without a token: 401", curl("GET", "/v1/supervisor/config"),
                 401, "unauthenticated", "Bearer")
    expect_error("supervisor config with a bad token: 401",
                 curl("GET", "/v1/supervisor/config",
                      headers={"authorization": "Bearer osb_" + "A" * 43}), 401,
                 "unauthenticated", "revoked")
    r = curl("GET", "/v1/supervisor/config", headers=bearer)
    j = jbody(r) or {}
    tap(r[0] == 200 and j.get("sandbox_name") == "gamma" and
        j.get("policy", {}).get("source") == "global" and j["policy"].get("version") == 2 and
        j["policy"].get("policy") == pol, "supervisor config: the global policy wins", r)
    expect_error("policy-status with a bad status: 400",
                 curl("POST", "/v1/supervisor/policy-status",
                      '{"version":2,"status":"maybe","source":"global"}', headers=bearer), 400,
                 "invalid_argument", "loaded or failed")
    expect_error("policy-status for an unknown revision: 404",
                 curl("POST", "/v1/supervisor/policy-status",
                      '{"version":99,"status":"loaded"}', headers=bearer), 404, "not_found")
    r = curl("POST", "/v1/supervisor/policy-status", '{"version":2,"status":"loaded",'
             '"source":"global"}', headers=bearer)
    tap(r[0] == 200, "policy-status loaded", r)
    r = curl("GET", "/v1/gateway/policy/revisions")
    tap([i["status"] for i in (jbody(r) or {}).get("items", [])] == ["loaded", "superseded"],
        "the reported revision is loaded", r)
    r = curl("POST", "/v1/supervisor/policy-status", '{"version":2,"status":"failed",'
             '"load_error":"rule x: boom"}', headers=bearer)
    r2 = curl("GET", SB + "/gamma/policy/revisions/2")
    j = jbody(r2) or {}
    tap(r[0] == 200 and j.get("status") == "failed" and j.get("load_error") == "rule x: boom",
        "policy-status failed records the load error", (r, r2))
    r = curl("POST", SB + "/gamma/token")
    tok2 = (jbody(r) or {}).get("token", "")
    expect_error("minting again revokes the old token",
                 curl("GET", "/v1/supervisor/config", headers=bearer), 401, "unauthenticated")
    r = curl("GET", "/v1/supervisor/config", headers={"authorization": "Bearer " + tok2})
    tap(r[0] == 200, "the new token works", r)
    r = curl("DELETE", SB + "/gamma/token")
    tap(r[0] == 200 and jbody(r) == {"revoked": True}, "revoke", r)
    expect_error("a revoked token: 401", curl("GET", "/v1/supervisor/config",
                                              headers={"authorization": "Bearer " + tok2}),
                 401, "unauthenticated")
    curl("POST", SB, '{"name":"tokbox"}')
    r = curl("POST", SB + "/tokbox/token")
    tok3 = (jbody(r) or {}).get("token", "")

    # --- settings
    G = "/v1/gateway/settings"
    r = curl("GET", G)
    tap(r[0] == 200 and jbody(r) == {"settings": {}, "revision": 0}, "no global settings", r)
    r = curl("PUT", G + "/ocsf_json_enabled", '{"value":true}')
    tap(r[0] == 200 and jbody(r) == {"revision": 1}, "PUT a global setting", r)
    for name, path, body, msg in (
            ("unknown key", G + "/colour", '{"value":true}', "unknown"),
            ("reserved key policy", G + "/policy", '{"value":true}', "reserved"),
            ("wrong type", G + "/ocsf_json_enabled", '{"value":"yes"}', "true or false"),
            ("bad choice", G + "/proposal_approval_mode", '{"value":"often"}', "manual, auto"),
            ("missing value", G + "/ocsf_json_enabled", '{}', "value: required"),
            ("unknown field", G + "/ocsf_json_enabled", '{"value":true,"x":1}', "x: unknown")):
        expect_error("setting: 400 for %s" % name, curl("PUT", path, body), 400,
                     "invalid_argument", msg)
    S = SB + "/gamma/settings"
    r = curl("PUT", S + "/policy_validation_failure_mode", '{"value":"retain_last_valid"}',
             headers={"if-match": '"3"'})
    tap(r[0] == 200 and r[1].get("etag") == '"4"', "PUT a sandbox setting with If-Match", r)
    expect_error("sandbox setting with a stale If-Match: 409",
                 curl("PUT", S + "/ocsf_json_enabled", '{"value":false}',
                      headers={"if-match": '"3"'}), 409, "aborted")
    curl("PUT", S + "/ocsf_json_enabled", '{"value":false}')
    r = curl("GET", S)
    j = jbody(r) or {}
    tap(r[0] == 200 and j.get("settings") == {
        "ocsf_json_enabled": {"value": True, "scope": "global"},
        "policy_validation_failure_mode": {"value": "retain_last_valid", "scope": "sandbox"}},
        "effective settings: the global value wins over the sandbox's", r)
    r = curl("DELETE", G + "/ocsf_json_enabled")
    tap(r[0] == 200 and jbody(r) == {"revision": 2}, "DELETE a global setting", r)
    r = curl("GET", S)
    tap((jbody(r) or {}).get("settings", {}).get("ocsf_json_enabled") ==
        {"value": False, "scope": "sandbox"}, "then the sandbox's own value applies", r)
    r = curl("GET", SB + "/gamma")
    tap(r[0] == 200 and r[1].get("etag") == '"5"' and
        jbody(r)["status"]["policy"]["latest_version"] == 2,
        "settings writes keep the rest of the sandbox", r)

    curl("PUT", "/v1/gateway/settings/proposal_approval_mode", '{"value":"auto"}')
    r = curl("GET", "/v1/supervisor/config", headers={"authorization": "Bearer " + tok3})
    j = jbody(r) or {}
    tap(r[0] == 200 and j.get("sandbox_name") == "tokbox" and
        j.get("settings", {}).get("proposal_approval_mode") == {"value": "auto",
                                                                "scope": "global"},
        "supervisor config carries the effective settings", r)
    tap(curl("DELETE", SB + "/tokbox")[0] == 200, "delete its sandbox")
    expect_error("its token died with it", curl("GET", "/v1/supervisor/config",
                                                headers={"authorization": "Bearer " + tok3}),
                 401, "unauthenticated")

    # --- workspaces
    r = curl("GET", "/v1/workspaces")
    names = [i["metadata"]["name"] for i in (jbody(r) or {}).get("items", [])]
    tap(r[0] == 200 and names == ["default"], "the default workspace exists", r)
    r = curl("POST", "/v1/workspaces", '{"name":"team-a","labels":{"org":"x"}}')
    tap(r[0] == 201 and jbody(r)["metadata"]["name"] == "team-a" and r[1].get("etag") == '"1"',
        "POST workspace: 201", r)
    expect_error("duplicate workspace: 409", curl("POST", "/v1/workspaces", '{"name":"team-a"}'),
                 409, "already_exists")
    expect_error("bad workspace name: 400", curl("POST", "/v1/workspaces", '{"name":"Team_A"}'),
                 400, "invalid_argument")
    expect_error("workspace without a name: 400", curl("POST", "/v1/workspaces", '{}'), 400,
                 "invalid_argument", "required")
    WS = "/v1/workspaces/team-a/sandboxes"
    r = curl("POST", WS, '{"name":"beta"}')
    tap(r[0] == 201 and jbody(r)["metadata"]["workspace"] == "team-a",
        "a sandbox name is per workspace (beta in team-a too)", r)
    r = curl("GET", WS)
    tap(r[0] == 200 and [i["metadata"]["name"] for i in jbody(r)["items"]] == ["beta"],
        "list per workspace", r)
    expect_error("delete a workspace that holds sandboxes: 412",
                 curl("DELETE", "/v1/workspaces/team-a"), 412, "failed_precondition",
                 "1 sandbox")
    expect_error("delete the default workspace: 412", curl("DELETE", "/v1/workspaces/default"),
                 412, "failed_precondition")
    tap(curl("DELETE", WS + "/beta")[0] == 200, "delete its sandbox")
    r = curl("DELETE", "/v1/workspaces/team-a")
    tap(r[0] == 200 and jbody(r) == {"deleted": True}, "then the workspace", r)
    expect_error("GET a deleted workspace: 404", curl("GET", "/v1/workspaces/team-a"), 404,
                 "not_found")
    expect_error("create in a deleted workspace: 404", curl("POST", WS, '{"name":"x"}'), 404,
                 "not_found", "workspace team-a")

    # --- metrics
    import re
    r = curl("GET", "/metrics")
    lines = [x for x in r[2].splitlines() if x and not x.startswith("#")]
    vals = {}
    for x in lines:
        m = re.match(r'^([a-z_]+(?:\{[a-z]+="[^"]*"\})?) ([0-9]+)$', x)
        if m:
            vals[m.group(1)] = int(m.group(2))
    total = (jbody(curl("GET", SB)) or {}).get("total")
    tap(r[0] == 200 and r[1].get("content-type", "").startswith("text/plain; version=0.0.4") and
        len(vals) == len(lines) and vals.get('openshell_gateway_http_responses_total{class="4xx"}',
                                             0) >= 40 and
        vals.get("openshell_gateway_sandboxes") == total and
        vals.get("openshell_gateway_database_healthy") == 1 and
        vals.get("openshell_gateway_http_requests_total", 0) > 100,
        "GET /metrics: Prometheus text with request, response and store figures", r[2][:1500])

    # --- a raw client ignoring SETTINGS_MAX_CONCURRENT_STREAMS: 150 streams at once
    import socket
    import struct

    def frame(ftype, flags, sid, payload=b""):
        return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
            struct.pack(">I", sid) + payload

    def lit(idx, value):
        return bytes([idx, len(value)]) + value
    hdrs = b"\x82\x86" + lit(4, b"/healthz") + lit(1, b"localhost")
    sk = socket.socket(socket.AF_UNIX)
    sk.connect(SOCK)
    out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0)
    for i in range(150):
        out += frame(1, 0x5, 1 + 2 * i, hdrs)
    sk.sendall(out)
    sk.settimeout(3)
    data = b""
    try:
        while True:
            d = sk.recv(65536)
            if not d:
                break
            data += d
    except socket.timeout:
        pass
    sk.close()
    ok_streams, refused, goaway, off = set(), 0, 0, 0
    while off + 9 <= len(data):
        ln = struct.unpack(">I", b"\0" + data[off:off + 3])[0]
        ft, sid = data[off + 3], struct.unpack(">I", data[off + 5:off + 9])[0] & 0x7fffffff
        body = data[off + 9:off + 9 + ln]
        if ft == 1:
            ok_streams.add(sid)
        elif ft == 3 and struct.unpack(">I", body)[0] == 7:
            refused += 1
        elif ft == 7:
            goaway += 1
        off += 9 + ln
    tap(len(ok_streams) >= 1 and len(ok_streams) < 150 and (refused + goaway) > 0 and
        curl("GET", "/healthz")[0] == 200,
        "150 streams at once: %d answered, %d refused (REFUSED_STREAM), %d GOAWAY; the gateway "
        "carries on" % (len(ok_streams), refused, goaway))

    # --- an idle connection (connects, says nothing) is closed
    import socket
    sk = socket.socket(socket.AF_UNIX)
    sk.connect(SOCK)
    sk.settimeout(6)
    t0 = time.time()
    got = b""
    try:
        while True:
            d = sk.recv(4096)
            if not d:
                break
            got += d
    except socket.timeout:
        got = None
    sk.close()
    tap(got is not None and time.time() - t0 < 4, "an idle connection is closed (GOAWAY, EOF)",
        "after %.1fs" % (time.time() - t0))

    # --- peer credentials
    if os.geteuid() == 0 and shutil.which("setpriv"):
        expect_error("another uid gets 401 on /v1/gateway", curl("GET", "/v1/gateway", user=65534),
                     401, "unauthenticated")
        expect_error("another uid gets 401 on sandboxes", curl("GET", SB, user=65534), 401,
                     "unauthenticated")
        expect_error("another uid gets 401 on /metrics", curl("GET", "/metrics", user=65534), 401,
                     "unauthenticated")
        expect_error("another uid's upload is refused with 401 before its body is read",
                     curl("POST", SB, '{"name":"intruder","annotations":{"a":"' + "z" * 500000 +
                          '"}}', user=65534), 401, "unauthenticated")
        tap(curl("GET", SB + "/intruder")[0] == 404, "nothing was created for the other uid")
        r = curl("GET", "/healthz", user=65534)
        tap(r[0] == 200, "another uid may still probe /healthz", r)
    else:
        for i in range(6):
            tap(True, "peer credential check # SKIP needs root and setpriv")

    # --- graceful shutdown with an open watch, then restart
    w = subprocess.Popen(["curl", "-sS", "-N", "--http2-prior-knowledge", "--unix-socket", SOCK,
                          "--max-time", "10", BASE + SB + "/beta/watch"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.3)
    gw.send_signal(signal.SIGTERM)
    try:
        rc = gw.wait(timeout=8)
    except subprocess.TimeoutExpired:
        gw.kill()
        rc = -1
    out, _ = w.communicate(timeout=10)
    lines = [json.loads(x) for x in out.decode().splitlines() if x.strip()]
    tap(rc == 0 and not os.path.exists(SOCK), "SIGTERM: clean exit, socket removed", rc)
    tap(len(lines) == 2 and lines[-1].get("type") == "error" and
        lines[-1]["error"]["code"] == "unavailable", "open watch ends with an error line",
        out.decode())
    if start():
        r = curl("GET", SB)
        names = [i["metadata"]["name"] for i in (jbody(r) or {}).get("items", [])]
        tap(r[0] == 200 and names[:2] == ["beta", "gamma"] and len(names) == 4,
            "after restart the records are there", r)
        r = curl("GET", SB + "/gamma")
        tap(r[0] == 200 and r[1].get("etag") == '"5"', "ETag survives the restart", r)
        r = curl("GET", SB + "/gamma/policy/revisions")
        tap(r[0] == 200 and (jbody(r) or {}).get("total") == 2, "revisions survive the restart",
            r)
    else:
        tap(False, "restart", open(LOG).read())
        tap(False, "restart ETag")
    st = os.stat(os.path.join(STATE, "openshell.db"))
    tap(st.st_mode & 0o777 == 0o600 and os.stat(STATE).st_mode & 0o777 == 0o700,
        "state dir 0700, database 0600")
    return 0


try:
    main()
except Exception as ex:  # a crash in the test is a failure, not a pass
    import traceback
    tap(False, "test raised", traceback.format_exc())
finally:
    if gw and gw.poll() is None:
        gw.kill()
        gw.wait()
    if tap.failed:
        print("# gateway log:")
        for line in open(LOG).read().splitlines()[-30:]:
            print("# " + line)
    shutil.rmtree(T, ignore_errors=True)
sys.exit(tap.plan())
