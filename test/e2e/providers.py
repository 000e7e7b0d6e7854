#!/usr/bin/python3
"""E2E: providers and the inference route through the real binary and a
real gateway (doc/providers.md, gateway/CLI half): the CLI verbs and their
errors, the API's strictness, attach/detach, delete while attached (412),
GET /v1/supervisor/credentials (only with the sandbox's own token, revision
growing on every change), values never in an API answer, a log line or the
state directory in clear, key-file tampering refused with a clear error,
and `inference set` verification against a python backend on loopback
(200 ok, 401 refused, unreachable refused, --no-verify). Prints TAP."""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2elib  # noqa: E402

BIN = os.environ["OPENSHELL_BIN"]
# providers_asan.sh runs this file against a gateway built with ASan/LSan.
GW_BIN = os.environ.get("PROVIDERS_GATEWAY_BIN")
T = tempfile.mkdtemp(prefix="openshell-prov-e2e.")
STATE = os.path.join(T, "state")
SOCK = os.path.join(T, "gw.sock")
LOG = os.path.join(T, "gateway.log")
KEY = os.path.join(STATE, "provider.key")
WS = "/v1/workspaces/default"
# Secret values: none may appear anywhere but the credentials document.
S_OPENAI = "sk-openai-Zq8Kp2VvT4"
S_ROTATED = "sk-rotated-Jw7Nn3Xx1"
S_GH = "ghp_githubSecret9Mm4Rr"
S_GENERIC = "gen-secret-Ll5Tt6Yy"
S_GOOD = "sk-backend-good-Hh2Uu8"
S_BAD = "sk-backend-bad-Pp0Oo9"
S_ANTH = "sk-ant-anthro-Cc3Dd4"
S_TEAM = "team-key"
S_AUTO = "sk-ant-auto-Vv5Ww6"
SECRETS = [S_OPENAI, S_ROTATED, S_GH, S_GENERIC, S_GOOD, S_BAD, S_ANTH, S_TEAM, S_AUTO]
tap = e2elib.Tap()
gw = None
gw_status = []  # exit statuses of the gateways stopped by SIGTERM
answers = []  # every API/CLI answer text, searched for secrets at the end


def start(expect_fail=False):
    global gw
    lnk = os.path.join(T, "openshell-gateway")
    if not os.path.exists(lnk):
        os.symlink(GW_BIN or BIN, lnk)
    log = open(LOG, "a")
    # The verification probe trusts the test CA (https backends below).
    env = dict(os.environ, SSL_CERT_FILE=T + "/tls/ca.pem")
    gw = subprocess.Popen([lnk, "--state-dir", STATE, "--socket", SOCK, "--listen", "none",
                           "--compute-driver", "none", "--log-format", "text",
                           "--log-level", "debug"],
                          stdout=log, stderr=log, env=env)
    for _ in range(250):
        if gw.poll() is not None:
            return False
        if os.path.exists(SOCK) and curl("GET", "/healthz")[0] == 200:
            return True
        time.sleep(0.02)
    return False


def stop():
    global gw
    if gw and gw.poll() is None:
        gw.terminate()
        try:
            gw_status.append(gw.wait(20))
        except subprocess.TimeoutExpired:
            gw.kill()
            gw.wait()
            gw_status.append("killed")
    gw = None
    if os.path.exists(SOCK):
        os.unlink(SOCK)


def curl(method, path, body=None, headers=None, timeout=30):
    """(status, parsed JSON or None, text)."""
    cmd = ["curl", "-sS", "--http2-prior-knowledge", "--unix-socket", SOCK, "-X", method,
           "-o", "-", "-w", "\n%{http_code}", "--max-time", str(timeout)]
    for k, v in (headers or {}).items():
        cmd += ["-H", "%s: %s" % (k, v)]
    if body is not None:
        cmd += ["-H", "content-type: application/json", "--data-binary", "@-"]
        if not isinstance(body, str):
            body = json.dumps(body)
    p = subprocess.run(cmd + ["http://localhost" + path], input=body, capture_output=True,
                       text=True, timeout=timeout + 5)
    text, _, code = p.stdout.rpartition("\n")
    try:
        j = json.loads(text)
    except ValueError:
        j = None
    if path != "/v1/supervisor/credentials":
        answers.append(text)
    return (int(code) if code.isdigit() else 0, j, text)


def cli(*args, env=None):
    e = dict(os.environ)
    e.update({"HOME": T, "XDG_CONFIG_HOME": os.path.join(T, "cfg"),
              "OPENSHELL_GATEWAY_ENDPOINT": "unix://" + SOCK, "NO_COLOR": "1"})
    for k in ("OPENAI_API_KEY", "GITHUB_TOKEN", "GH_TOKEN", "ANTHROPIC_API_KEY",
              "CLAUDE_API_KEY", "OPENSHELL_GATEWAY", "OPENSHELL_WORKSPACE"):
        e.pop(k, None)
    e.update(env or {})
    p = subprocess.run([BIN] + list(args), capture_output=True, text=True, env=e, timeout=60)
    answers.append(p.stdout + p.stderr)
    return p


def err_is(r, status, code, contains=None):
    return (r[0] == status and isinstance(r[1], dict) and
            r[1].get("error", {}).get("code") == code and
            (contains is None or contains in r[1]["error"].get("message", "")))


def token(sandbox):
    r = curl("POST", WS + "/sandboxes/%s/token" % sandbox)
    return r[1]["token"] if r[0] == 201 else None


def creds(tok):
    return curl("GET", "/v1/supervisor/credentials",
                headers={"authorization": "Bearer " + tok} if tok else None)


# ------------------------------------------------------------------ backend

class Backend(BaseHTTPRequestHandler):
    seen = []

    def log_message(self, *a):
        pass

    def _answer(self, ok):
        body = b'{"data":[]}' if ok else b'{"error":"bad key"}'
        self.send_response(200 if ok else 401)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        Backend.seen.append(("GET", self.path, dict(self.headers)))
        self._answer(self.path == "/v1/models" and
                     self.headers.get("authorization") == "Bearer " + S_GOOD)

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode()
        Backend.seen.append(("POST", self.path, dict(self.headers), body))
        self._answer(self.path == "/v1/messages" and
                     self.headers.get("x-api-key") == S_ANTH)


# ------------------------------------------------------------------ tests

def test_cli_crud():
    p = cli("provider", "create", "--name", "oa", "--type", "codex", "--credential",
            "OPENAI_API_KEY", env={"OPENAI_API_KEY": S_OPENAI})
    tap(p.returncode == 0 and "Created provider oa" in p.stderr,
        "provider create --credential KEY reads $KEY (alias codex)", p.stderr)
    p = cli("provider", "create", "--name", "oa", "--type", "openai", "--credential",
            "OPENAI_API_KEY=x")
    tap(p.returncode == 1 and "already exists" in p.stderr, "duplicate name: exit 1, says so",
        p.stderr)
    p = cli("provider", "create", "--name", "zz", "--type", "nope", "--credential", "A=b")
    tap(p.returncode == 1 and "unsupported provider type" in p.stderr,
        "unknown type: exit 1 naming the known ones", p.stderr)
    p = cli("provider", "create", "--name", "zz", "--type", "openai")
    tap(p.returncode == 2 and "missing credential" in p.stderr, "no credential source: exit 2",
        p.stderr)
    p = cli("provider", "create", "--name", "zz", "--type", "openai", "--credential",
            "OPENAI_API_KEY")
    tap(p.returncode == 1 and "$OPENAI_API_KEY is not set" in p.stderr,
        "--credential KEY with $KEY unset: exit 1", p.stderr)
    p = cli("provider", "create", "--name", "zz", "--type", "github", "--from-existing")
    tap(p.returncode == 1 and "GITHUB_TOKEN, GH_TOKEN" in p.stderr,
        "--from-existing with nothing set: exit 1, names the variables", p.stderr)
    p = cli("provider", "create", "--name", "gh", "--type", "gh", "--from-existing",
            env={"GH_TOKEN": S_GH})
    tap(p.returncode == 0, "--from-existing finds GH_TOKEN (alias gh)", p.stderr)
    p = cli("provider", "create", "--name", "gen", "--type", "generic", "--credential",
            "SVC_TOKEN=" + S_GENERIC)
    tap(p.returncode == 1 and "endpoints" in p.stderr,
        "generic without --config endpoints: refused", p.stderr)
    p = cli("provider", "create", "--name", "gen", "--type", "generic", "--credential",
            "SVC_TOKEN=" + S_GENERIC, "--config", "endpoints=API.example.com:8443,files.example.com",
            "-o", "json")
    j = json.loads(p.stdout) if p.returncode == 0 else {}
    tap(j.get("endpoints") == [{"host": "api.example.com", "port": 8443},
                               {"host": "files.example.com", "port": 443}] and
        j.get("credential_keys") == ["SVC_TOKEN"],
        "generic binds to its --config endpoints (port 443 by default)", p.stdout + p.stderr)
    p = cli("provider", "list")
    lines = p.stdout.splitlines()
    tap(p.returncode == 0 and lines[0].split() == ["NAME", "TYPE", "CREDENTIAL_KEYS",
                                                   "CONFIG_KEYS"] and
        lines[1].split() == ["oa", "openai", "1", "0"] and len(lines) == 4,
        "provider list: the reference's table", p.stdout)
    p = cli("provider", "list", "-o", "json")
    j = json.loads(p.stdout)
    tap([x["name"] for x in j] == ["oa", "gh", "gen"] and j[1]["type"] == "github" and
        j[1]["credential_keys"] == ["GH_TOKEN"] and
        {"host": "api.github.com", "port": 443} in j[1]["endpoints"],
        "provider list -o json: names, types, key names, endpoint bindings", p.stdout)
    p = cli("provider", "get", "oa")
    tap(p.returncode == 0 and "Credential keys:  OPENAI_API_KEY" in p.stdout and
        "api.openai.com:443" in p.stdout, "provider get: key names and endpoints", p.stdout)
    p = cli("provider", "get", "nope")
    tap(p.returncode == 1 and "not found" in p.stderr, "provider get of an unknown: exit 1")
    p = cli("provider", "list-types")
    tap(p.returncode == 0 and "ANTHROPIC_API_KEY" in p.stdout and "claude" in p.stdout,
        "provider list-types", p.stdout)


def test_api_strict():
    base = {"name": "x1", "spec": {"type": "openai", "credentials": {"OPENAI_API_KEY": "v"}}}
    cases = [
        ("credentials not an object", {"name": "x1", "spec": {"type": "openai",
                                                               "credentials": ["a"]}}),
        ("a value that is a number", {"name": "x1", "spec": {"type": "openai",
                                                             "credentials": {"K": 5}}}),
        ("type not a string", {"name": "x1", "spec": {"type": 3, "credentials": {"K": "v"}}}),
        ("unknown field", dict(base, extra=1)),
        ("bad name", dict(base, name="Bad_Name")),
        ("empty credentials", {"name": "x1", "spec": {"type": "openai", "credentials": {}}}),
        ("bad key name", {"name": "x1", "spec": {"type": "openai",
                                                 "credentials": {"1A": "v"}}}),
        ("reserved key", {"name": "x1", "spec": {"type": "openai",
                                                 "credentials": {"OPENSHELL_X": "v"}}}),
        ("a v<digits>_ key", {"name": "x1", "spec": {"type": "openai",
                                                    "credentials": {"v12_KEY": "v"}}}),
        ("an s<64 hex>_ key", {"name": "x1", "spec": {"type": "openai", "credentials": {
            "s" + "ab" * 32 + "_KEY": "v"}}}),
        ("a base URL path over 499 bytes", {"name": "x1", "spec": {
            "type": "openai", "credentials": {"K": "v"},
            "config": {"OPENAI_BASE_URL": "https://x.example/" + "p" * 600}}}),
        ("CR/LF in a value", {"name": "x1", "spec": {"type": "openai",
                                                     "credentials": {"K": "a\r\nX-Evil: 1"}}}),
        ("bad base URL", {"name": "x1", "spec": {"type": "openai", "credentials": {"K": "v"},
                                                 "config": {"OPENAI_BASE_URL": "ftp://x"}}}),
        ("bad endpoint", {"name": "x1", "spec": {"type": "generic", "credentials": {"K": "v"},
                                                 "config": {"endpoints": "a b:99999"}}}),
        ("33 credentials", {"name": "x1", "spec": {"type": "openai", "credentials": {
            "K%d" % i: "v" for i in range(33)}}}),
        ("65 config entries", {"name": "x1", "spec": {"type": "openai", "credentials": {"K": "v"},
                                                      "config": {"C%d" % i: "v"
                                                                 for i in range(65)}}}),
        ("a 16 KiB + 1 value", {"name": "x1", "spec": {"type": "openai",
                                                       "credentials": {"K": "v" * 16385}}}),
        ("17 endpoints", {"name": "x1", "spec": {"type": "generic", "credentials": {"K": "v"},
                                                 "config": {"endpoints": ",".join(
                                                     "h%d.example.com" % i for i in range(17))}}}),
    ]
    for name, body in cases:
        r = curl("POST", WS + "/providers", body)
        tap(err_is(r, 400, "invalid_argument"), "create with %s: 400" % name, r[2])
    r = curl("POST", WS + "/providers", '{"name": "x1", "spec": {"type": "openai", '
             '"credentials": {"K": "a\\u0000b"}}}')
    tap(err_is(r, 400, "invalid_argument", "NUL"),
        "a value with an escaped NUL: 400 (never stored cut short)", r[2])
    r = curl("PATCH", WS + "/providers/oa", '{"spec": {"credentials": '
             '{"OPENAI_API_KEY": "x\\u0000"}}}')
    tap(err_is(r, 400, "invalid_argument", "NUL"), "... nor through PATCH", r[2])
    r = curl("POST", WS + "/providers", "{not json")
    tap(err_is(r, 400, "invalid_argument"), "malformed JSON: 400", r[2])
    r = curl("PATCH", WS + "/providers/oa", {"spec": {"type": "anthropic"}})
    tap(err_is(r, 400, "invalid_argument", "cannot change"), "PATCH changing the type: 400",
        r[2])
    r = curl("GET", "/v1/workspaces/nope/providers")
    tap(r[0] == 404, "providers of an unknown workspace: 404", r[2])
    r = curl("DELETE", WS + "/providers/nope")
    tap(err_is(r, 404, "not_found"), "delete of an unknown provider: 404", r[2])


def test_doc_budget():
    def big(name, n, ch):
        return curl("POST", WS + "/providers", {"name": name, "spec": {
            "type": "generic", "config": {"endpoints": "big.example.com"},
            "credentials": {"BIG_%s_%d" % (name.upper(), i): ch * 16384 for i in range(n)}}})
    r1, r2, r3 = big("big1", 32, "a"), big("big2", 32, "b"), big("big3", 2, "c")
    tap(r1[0] == 201 and r2[0] == 201 and r3[0] == 201, "providers of 32 x 16 KiB values",
        (r1[0], r2[0], r3[0]))
    r = curl("POST", WS + "/sandboxes", {"name": "sb-big", "spec": {"providers": ["big1",
                                                                                  "big2"]}})
    tap(err_is(r, 400, "invalid_argument", "over the"),
        "two of them in one sandbox: its document would pass 1 MiB: 400 before creating", r[2])
    r = curl("POST", WS + "/sandboxes", {"name": "sb-big", "spec": {"providers": ["big1",
                                                                                  "big3"]}})
    tap(r[0] == 201, "one of them and a small one: created", r[2])
    r = curl("PATCH", WS + "/providers/big3", {"spec": {"credentials": {
        "MORE_%d" % i: "d" * 16384 for i in range(28)}}})
    tap(err_is(r, 400, "invalid_argument", "sandbox sb-big"),
        "a PATCH growing an attached provider past the budget: 400 naming the sandbox", r[2][:300])
    tb = token("sb-big")
    r = creds(tb)
    tap(r[0] == 200 and len(r[2]) < 1024 * 1024 and len(r[1]["credentials"]) == 34,
        "the document stays under 1 MiB (%d bytes)" % len(r[2]), r[0])
    curl("DELETE", WS + "/sandboxes/sb-big")
    for n in ("big1", "big2", "big3"):
        curl("DELETE", WS + "/providers/" + n)


def test_attach_and_document():
    p = cli("sandbox", "create", "--name", "sb-x", "--provider", "nope", "--detach")
    tap(p.returncode == 1 and "provider 'nope' not found" in p.stderr,
        "sandbox create --provider naming no provider: refused (400)", p.stderr)
    r = curl("POST", WS + "/sandboxes", {"name": "sb-y", "spec": {"providers": "oa"}})
    tap(err_is(r, 400, "invalid_argument"), "spec.providers not an array: 400", r[2])
    # Two providers setting the same key cannot be attached together.
    curl("POST", WS + "/providers", {"name": "oa2", "spec": {
        "type": "openai", "credentials": {"OPENAI_API_KEY": "other"}}})
    r = curl("POST", WS + "/sandboxes", {"name": "sb-y", "spec": {"providers": ["oa", "oa2"]}})
    tap(err_is(r, 400, "invalid_argument", "both set credential OPENAI_API_KEY"),
        "two providers with one key: 400", r[2])
    curl("DELETE", WS + "/providers/oa2")
    p = cli("sandbox", "create", "--name", "sb-a", "--provider", "oa", "--detach")
    tap(p.returncode == 0, "sandbox create --provider oa", p.stderr)
    curl("POST", WS + "/sandboxes", {"name": "sb-b"})
    r = curl("GET", WS + "/sandboxes/sb-a")
    tap(r[0] == 200 and r[1]["spec"].get("providers") == ["oa"], "spec.providers stored", r[2])

    p = cli("provider", "delete", "oa")
    tap(p.returncode == 1 and "attached to sandbox sb-a" in p.stderr,
        "provider delete while attached: refused, names the sandbox", p.stderr)
    r = curl("DELETE", WS + "/providers/oa")
    tap(err_is(r, 412, "failed_precondition"), "DELETE while attached: 412", r[2])

    ta, tb = token("sb-a"), token("sb-b")
    r = creds(None)
    tap(r[0] == 401, "credentials without a token: 401", r[2])
    r = curl("GET", "/v1/supervisor/credentials", headers={"authorization": "Bearer osb_x"})
    tap(r[0] == 401, "credentials with a malformed token: 401", r[2])
    r = curl("GET", WS + "/providers/oa", headers={"authorization": "Bearer " + ta})
    # A user endpoint does not take a sandbox token as a user (unix peer is
    # the owner here, so the request passes as the owner): it never shows a
    # value either way.
    tap(S_OPENAI not in r[2], "a user endpoint never shows a value", r[2])
    ra = creds(ta)
    doc = ra[1] or {}
    c = doc.get("credentials") or [{}]
    tap(ra[0] == 200 and doc.get("environment") == {
        "OPENAI_API_KEY": "openshell:resolve:env:OPENAI_API_KEY"} and
        c[0].get("value") == S_OPENAI and c[0].get("key") == "OPENAI_API_KEY" and
        c[0].get("provider") == "oa" and
        c[0].get("endpoints") == [{"host": "api.openai.com", "port": 443}] and
        doc.get("inference") is None and isinstance(doc.get("revision"), int),
        "credentials document: placeholder env, value, endpoints (the sandbox's token)", ra[2])
    rb = creds(tb)
    tap(rb[0] == 200 and rb[1]["credentials"] == [] and rb[1]["environment"] == {} and
        S_OPENAI not in rb[2], "another sandbox's token sees none of it", rb[2])
    rev0 = doc.get("revision", 0)

    p = cli("provider", "update", "oa", "--credential", "OPENAI_API_KEY=" + S_ROTATED)
    r = creds(ta)
    tap(p.returncode == 0 and r[1]["credentials"][0]["value"] == S_ROTATED and
        r[1]["revision"] > rev0 and S_OPENAI not in r[2],
        "provider update rotates the value; the revision grows", p.stderr + r[2])
    rev1 = r[1]["revision"]

    p = cli("provider", "update", "oa", "--config", "OPENAI_BASE_URL=https://llm.example.net/v1")
    r = creds(ta)
    tap(p.returncode == 0 and r[1]["environment"].get("OPENAI_BASE_URL") ==
        "https://llm.example.net/v1" and
        {"host": "llm.example.net", "port": 443} in r[1]["credentials"][0]["endpoints"] and
        r[1]["credentials"][0]["value"] == S_ROTATED,
        "a config change: plain config in the environment, its base URL host bound",
        p.stderr + r[2])
    cli("provider", "update", "oa", "--remove-config", "OPENAI_BASE_URL")
    rev1 = creds(ta)[1]["revision"]
    p = cli("sandbox", "provider", "attach", "sb-a", "gh")
    r = creds(ta)
    keys = sorted(x["key"] for x in r[1]["credentials"])
    gh = [x for x in r[1]["credentials"] if x["key"] == "GH_TOKEN"]
    tap(p.returncode == 0 and "Attached provider gh to sandbox sb-a" in p.stderr and
        keys == ["GH_TOKEN", "OPENAI_API_KEY"] and r[1]["revision"] > rev1 and
        gh and {"host": "github.com", "port": 443} in gh[0]["endpoints"],
        "sandbox provider attach: the document gains it", p.stderr + r[2])
    p = cli("sandbox", "provider", "attach", "sb-a", "gh")
    tap(p.returncode == 0 and "already attached" in p.stderr, "attach again: idempotent",
        p.stderr)
    p = cli("sandbox", "provider", "list", "sb-a")
    tap(p.returncode == 0 and "gh" in p.stdout and "oa" in p.stdout,
        "sandbox provider list", p.stdout)
    r = curl("PUT", WS + "/sandboxes/sb-a/providers/nope")
    tap(err_is(r, 404, "not_found"), "attach of an unknown provider: 404", r[2])
    r = curl("PUT", WS + "/sandboxes/sb-a/providers/gen", headers={"if-match": '"1"'})
    tap(err_is(r, 409, "aborted"), "attach with a stale If-Match: 409", r[2])
    p = cli("sandbox", "provider", "detach", "sb-a", "gh")
    r = creds(ta)
    tap(p.returncode == 0 and [x["key"] for x in r[1]["credentials"]] == ["OPENAI_API_KEY"] and
        S_GH not in r[2], "detach: its credentials leave the document", p.stderr + r[2])
    p = cli("provider", "delete", "gh", "nope")
    tap(p.returncode == 1 and "Deleted provider gh" in p.stderr and
        "Provider nope not found" in p.stderr, "provider delete A B: per-name lines", p.stderr)


def test_inferred():
    p = cli("sandbox", "create", "--name", "sb-c", "--detach", "--no-auto-providers", "--",
            "claude", "--help")
    r = curl("GET", WS + "/sandboxes/sb-c")
    tap(p.returncode == 0 and r[0] == 200 and "providers" not in r[1]["spec"],
        "sandbox create --no-auto-providers -- claude: nothing inferred", p.stderr)
    p = cli("sandbox", "create", "--name", "sb-d", "--detach", "--", "claude")
    tap(p.returncode == 1 and "needs a provider of type anthropic" in p.stderr and
        "--from-existing" in p.stderr and curl("GET", WS + "/sandboxes/sb-d")[0] == 404,
        "-- claude without a provider, not on a terminal: refused before creating", p.stderr)
    p = cli("sandbox", "create", "--name", "sb-d", "--detach", "--auto-providers", "--",
            "claude", env={"ANTHROPIC_API_KEY": S_AUTO})
    r = curl("GET", WS + "/sandboxes/sb-d")
    tap(p.returncode == 0 and "Missing provider: anthropic" in p.stderr and
        "Created provider anthropic (anthropic) from existing local state" in p.stderr and
        r[1]["spec"].get("providers") == ["anthropic"],
        "--auto-providers -- claude: created from $ANTHROPIC_API_KEY and attached", p.stderr)
    p = cli("sandbox", "create", "--name", "sb-e", "--detach", "--", "/usr/local/bin/claude")
    r = curl("GET", WS + "/sandboxes/sb-e")
    tap(p.returncode == 0 and "Using provider 'anthropic'" in p.stderr and
        r[1]["spec"].get("providers") == ["anthropic"],
        "-- claude with an anthropic provider present: it is attached", p.stderr)
    p = cli("sandbox", "create", "--name", "sb-f", "--detach", "--auto-providers", "--", "gh")
    r = curl("GET", WS + "/sandboxes/sb-f")
    tap(p.returncode == 0 and "No existing local credentials/config found for 'github'" in
        p.stderr and "providers" not in r[1]["spec"],
        "--auto-providers -- gh with nothing in the environment: a warning, no provider",
        p.stderr)
    for sb in ("sb-c", "sb-d", "sb-e", "sb-f"):
        curl("DELETE", WS + "/sandboxes/" + sb)


def test_inference():
    port = e2elib.free_port()
    srv = ThreadingHTTPServer(("127.0.0.1", port), Backend)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = "http://127.0.0.1:%d/v1" % port
    try:
        cli("provider", "create", "--name", "good", "--type", "openai", "--credential",
            "OPENAI_API_KEY=" + S_GOOD, "--config", "OPENAI_BASE_URL=" + url)
        cli("provider", "create", "--name", "bad", "--type", "openai", "--credential",
            "OPENAI_API_KEY=" + S_BAD, "--config", "OPENAI_BASE_URL=" + url)
        p = cli("inference", "get")
        tap(p.returncode == 0 and "Not configured" in p.stdout, "inference get: Not configured",
            p.stdout + p.stderr)
        Backend.seen.clear()
        p = cli("inference", "set", "--provider", "good", "--model", "m-1")
        seen = [s for s in Backend.seen if s[0] == "GET"]
        tap(p.returncode == 0 and "Inference configured:" in p.stdout and
            url + "/models (openai)" in p.stdout and seen and seen[0][1] == "/v1/models" and
            seen[0][2].get("Authorization") == "Bearer " + S_GOOD,
            "inference set: the backend is asked GET /models with the provider's key",
            p.stdout + p.stderr + repr(Backend.seen))
        p = cli("inference", "set", "--provider", "bad", "--model", "m-1")
        tap(p.returncode == 1 and "refused the credential (HTTP 401)" in p.stderr and
            "--no-verify" in p.stderr, "a backend answering 401: refused, says why",
            p.stderr)
        r = curl("GET", WS + "/inference")
        tap(r[0] == 200 and r[1]["provider"] == "good", "a refused set keeps the old route",
            r[2])
        dead = "http://127.0.0.1:%d/v1" % e2elib.free_port()
        t0 = time.time()
        p = cli("inference", "set", "--provider", "good", "--model", "m-2", "--base-url", dead)
        tap(p.returncode == 1 and "cannot connect" in p.stderr and time.time() - t0 < 20,
            "an unreachable backend: refused", p.stderr)
        p = cli("inference", "set", "--provider", "good", "--model", "m-2", "--base-url", dead,
                "--no-verify")
        tap(p.returncode == 0 and "none (--no-verify)" in p.stdout,
            "--no-verify stores it unchecked", p.stdout + p.stderr)
        p = cli("inference", "update", "--model", "m-3", "--base-url", url)
        tap(p.returncode == 0 and "Inference updated:" in p.stdout and "m-3" in p.stdout,
            "inference update (verified again)", p.stdout + p.stderr)
        p = cli("inference", "get", "-o", "json")
        j = json.loads(p.stdout) if p.returncode == 0 else {}
        tap(j.get("model") == "m-3" and j.get("api") == "openai" and j.get("base_url") == url and
            j.get("verified_at_ms"), "inference get -o json", p.stdout)
        tb = token("sb-b")
        r = creds(tb)
        inf = r[1].get("inference") or {}
        tap(inf.get("api_key") == S_GOOD and inf.get("model") == "m-3" and
            inf.get("auth") == "bearer" and inf.get("base_url") == url,
            "the document's inference: route, model and the backend key", r[2])
        rev = r[1]["revision"]
        p = cli("provider", "delete", "good")
        tap(p.returncode == 1 and "inference route" in p.stderr,
            "deleting the route's provider: refused", p.stderr)
        # Anthropic: a minimal messages call with x-api-key.
        Backend.seen.clear()
        cli("provider", "create", "--name", "an", "--type", "claude", "--credential",
            "ANTHROPIC_API_KEY=" + S_ANTH, "--config", "ANTHROPIC_BASE_URL=" + url)
        p = cli("inference", "set", "--provider", "an", "--model", "claude-x")
        post = [s for s in Backend.seen if s[0] == "POST"]
        body = json.loads(post[0][3]) if post else {}
        tap(p.returncode == 0 and post and post[0][1] == "/v1/messages" and
            post[0][2].get("x-api-key") == S_ANTH and body.get("model") == "claude-x" and
            body.get("max_tokens") == 1, "anthropic: a one-token messages call with x-api-key",
            p.stdout + p.stderr + repr(Backend.seen))
        r = creds(tb)
        tap(r[1]["inference"]["auth"] == "x-api-key" and r[1]["revision"] > rev,
            "route change: new revision, anthropic auth", r[2])
        r = curl("PUT", WS + "/inference", {"provider": "gen", "model": "x", "no_verify": True})
        tap(err_is(r, 400, "invalid_argument", "base_url"), "generic without base_url: 400",
            r[2])
        r = curl("PUT", WS + "/inference", {"provider": "nope", "model": "x"})
        tap(err_is(r, 404, "not_found", "provider 'nope' not found"), "unknown provider: 404",
            r[2])
        r = curl("PUT", WS + "/inference", {"provider": "an"})
        tap(err_is(r, 400, "invalid_argument", "model"), "model missing: 400", r[2])
        # https backends: one with a certificate from the CA the gateway
        # trusts, one from another CA.
        tls_servers = []
        for d in ("tls", "tls-other"):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(T + "/%s/srv.pem" % d, T + "/%s/srv.key" % d)
            tport = e2elib.free_port()
            tsrv = ThreadingHTTPServer(("127.0.0.1", tport), Backend)
            tsrv.socket = ctx.wrap_socket(tsrv.socket, server_side=True)
            threading.Thread(target=tsrv.serve_forever, daemon=True).start()
            tls_servers.append((tsrv, tport))
        try:
            good_url = "https://127.0.0.1:%d/v1" % tls_servers[0][1]
            Backend.seen.clear()
            p = cli("inference", "set", "--provider", "good", "--model", "m-tls", "--base-url",
                    good_url)
            tap(p.returncode == 0 and good_url + "/models (openai)" in p.stdout and
                any(x[2].get("Authorization") == "Bearer " + S_GOOD for x in Backend.seen),
                "an https backend: verified over TLS against the trusted CA",
                p.stdout + p.stderr)
            p = cli("inference", "set", "--provider", "good", "--model", "m-tls", "--base-url",
                    "https://localhost:%d/v1" % tls_servers[0][1])
            tap(p.returncode == 0, "an https backend by name (certificate SAN)", p.stderr)
            p = cli("inference", "set", "--provider", "good", "--model", "m-tls", "--base-url",
                    "https://127.0.0.1:%d/v1" % tls_servers[1][1])
            tap(p.returncode == 1 and "does not verify" in p.stderr,
                "an https backend with a certificate from another CA: refused", p.stderr)
        finally:
            for tsrv, _ in tls_servers:
                tsrv.shutdown()
        # A backend that accepts and never answers: the probe gives up
        # after its read limit; a client that leaves first gets nothing
        # stored, and the gateway carries on.
        mute = socket.socket()
        mute.bind(("127.0.0.1", 0))
        mute.listen(8)
        mute_url = "http://127.0.0.1:%d/v1" % mute.getsockname()[1]
        before = curl("GET", WS + "/inference")[1]
        r = curl("PUT", WS + "/inference", {"provider": "good", "model": "gone-client",
                                            "base_url": mute_url}, timeout=1)
        t0 = time.time()
        p = cli("inference", "set", "--provider", "good", "--model", "m-mute", "--base-url",
                mute_url)
        dt = time.time() - t0
        tap(p.returncode == 1 and "did not answer within 10s" in p.stderr and 8 < dt < 20,
            "a backend that never answers: refused after the probe's 10 s limit (%.1fs)" % dt,
            p.stderr)
        time.sleep(0.5)
        after = curl("GET", WS + "/inference")
        tap(r[0] == 0 and after[0] == 200 and after[1]["model"] == before["model"] and
            curl("GET", "/healthz")[0] == 200,
            "a client gone during verification: nothing stored, the gateway carries on",
            (r, after[2]))
        mute.close()
        p = cli("inference", "delete")
        r = creds(tb)
        tap(p.returncode == 0 and r[1]["inference"] is None, "inference delete: no route",
            p.stderr + r[2])
    finally:
        srv.shutdown()


def test_workspace():
    r = curl("POST", "/v1/workspaces", {"name": "team"})
    ok = r[0] in (200, 201)
    r = curl("POST", "/v1/workspaces/team/providers", {"name": "tp", "spec": {
        "type": "openai", "credentials": {"OPENAI_API_KEY": S_TEAM}}})
    r2 = curl("PUT", "/v1/workspaces/team/inference", {"provider": "tp", "model": "m",
                                                          "no_verify": True})
    r3 = curl("DELETE", "/v1/workspaces/team")
    tap(ok and r[0] == 201 and r2[0] == 200 and
        err_is(r3, 412, "failed_precondition", "provider"),
        "a workspace holding providers cannot be deleted (412)", r3[2])
    r = curl("GET", WS + "/providers/tp")
    tap(r[0] == 404, "providers are per workspace", r[2])
    curl("DELETE", "/v1/workspaces/team/inference")
    r = curl("DELETE", "/v1/workspaces/team/providers/tp")
    r2 = curl("DELETE", "/v1/workspaces/team")
    tap(r[0] == 200 and r2[0] == 200, "once its providers are gone it can", r2[2])


def grep_state(needle):
    hits = []
    for root, _, files in os.walk(STATE):
        for f in files:
            path = os.path.join(root, f)
            try:
                if needle.encode() in open(path, "rb").read():
                    hits.append(path)
            except OSError:
                pass
    return hits


def test_no_leaks():
    blob = "\n".join(answers)
    leaked = [s for s in SECRETS if s in blob]
    tap(not leaked, "no value in any API answer or CLI output (%d answers)" % len(answers),
        leaked)
    log = open(LOG, errors="replace").read()
    leaked = [s for s in SECRETS if s in log]
    tap(not leaked and "provider created" in log, "no value in the gateway log", leaked)
    leaked = [(s, grep_state(s)) for s in SECRETS if grep_state(s)]
    tap(not leaked, "no value in clear anywhere in the state directory", leaked)
    st = os.stat(KEY)
    tap(st.st_size == 32 and (st.st_mode & 0o777) == 0o600, "provider.key: 32 bytes, 0600",
        oct(st.st_mode))


def test_tampering():
    stop()
    good = open(KEY, "rb").read()
    os.chmod(KEY, 0o644)
    ok = start()
    log = open(LOG, errors="replace").read()
    tap(not ok and "must be 0600" in log, "a key file readable by others: the gateway refuses",
        log[-400:])
    stop()
    os.rename(KEY, KEY + ".away")
    ok = start()
    log = open(LOG, errors="replace").read()
    tap(not ok and "is missing but" in log and not os.path.exists(KEY),
        "a missing key file while providers exist: refused, never replaced by a new one",
        log[-400:])
    stop()
    os.rename(KEY + ".away", KEY)
    os.chmod(KEY, 0o600)
    with open(KEY, "ab") as f:
        f.write(b"x")
    ok = start()
    log = open(LOG, errors="replace").read()
    tap(not ok and "33 bytes, expected 32" in log, "a key file of the wrong size: refused",
        log[-400:])
    stop()
    with open(KEY, "wb") as f:
        f.write(os.urandom(32))
    ok = start()
    r = creds(token("sb-a"))
    tap(ok and r[0] == 500 and "do not open" in r[2] and "provider.key" in r[2],
        "a replaced key: the document is refused with a clear error", r[2])
    r = curl("GET", WS + "/providers/oa")
    tap(r[0] == 200, "reads that need no value still work", r[2])
    with open(KEY, "wb") as f:
        f.write(good)
    stop()
    ok = start()
    r = creds(token("sb-a"))
    tap(ok and r[0] == 200 and r[1]["credentials"][0]["value"] == S_ROTATED,
        "the right key again: the values open (restart keeps them)", r[2])


def main():
    if not shutil.which("curl"):
        print("1..0 # SKIP curl not installed")
        return 0
    if not shutil.which("openssl"):
        print("1..0 # SKIP openssl not installed (test certificates)")
        return 0
    for d, cn in (("tls", "openshell providers test CA"), ("tls-other", "another CA")):
        os.mkdir(T + "/" + d)
        e2elib.make_test_ca(T + "/" + d, cn, ["localhost"], ["127.0.0.1"])
    if not start():
        print("1..0 # SKIP the gateway did not start: " + open(LOG).read()[-300:])
        return 0
    try:
        test_cli_crud()
        test_api_strict()
        test_attach_and_document()
        test_doc_budget()
        test_inferred()
        test_inference()
        test_workspace()
        test_no_leaks()
        test_tampering()
    finally:
        stop()
    if GW_BIN:
        log = open(LOG, errors="replace").read()
        bad = [x for x in ("Sanitizer", "runtime error", "LeakSanitizer") if x in log]
        tap(not bad and gw_status and all(x == 0 for x in gw_status),
            "the ASan gateway: exit 0 at every SIGTERM, no sanitizer report",
            "statuses %s\n%s" % (gw_status, log[-3000:]))
    rc = tap.plan()
    shutil.rmtree(T, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
