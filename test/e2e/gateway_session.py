#!/usr/bin/python3
"""E2E: the gateway's side of supervisor sessions, relays (exec in both forms,
file upload/download), logs and config pushes, against a scripted supervisor
made of real curl processes speaking HTTP/2 both ways (--compute-driver none:
no real sandbox, so every protocol corner can be driven). Prints TAP."""
import hashlib
import json
import os
import queue
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time

BIN = os.environ["OPENSHELL_BIN"]
T = tempfile.mkdtemp(prefix="openshell-gwsess-e2e.")
STATE = os.path.join(T, "state")
SOCK = os.path.join(T, "gw.sock")
LOG = os.path.join(T, "gateway.log")
BASE = "http://localhost"
SB = "/v1/workspaces/default/sandboxes"
# Pings every second: a session silent for 3 s is cut off (the default is
# 20 s / 60 s); generous enough for a loaded machine or an ASan build.
PING_MS = 1000
n = 0
failed = 0
gw = None
procs = []

INIT, STDIN, STDOUT, STDERR, RESIZE, EXIT, EOF, ERROR = range(1, 9)


def tap(ok, name, diag=""):
    global n, failed
    n += 1
    if not ok:
        failed += 1
    print(("ok" if ok else "not ok") + " %d - %s" % (n, name))
    if not ok and diag:
        for line in str(diag).splitlines()[:20]:
            print("# " + line)
    sys.stdout.flush()


def frame(t, payload=b""):
    if isinstance(payload, str):
        payload = payload.encode()
    return struct.pack(">BI", t, len(payload)) + payload


def parse_frames(data):
    out = []
    while len(data) >= 5:
        t, ln = struct.unpack(">BI", data[:5])
        if len(data) < 5 + ln:
            break
        out.append((t, data[5:5 + ln]))
        data = data[5 + ln:]
    return out, data


CURL = ["curl", "-sS", "--http2-prior-knowledge", "--unix-socket", SOCK]


def curl(method, path, body=None, headers=None, ctype="application/json", timeout=15):
    cmd = CURL + ["-X", method, "-o", "-", "-w", "\n%{http_code}", "--max-time", str(timeout)]
    for k, v in (headers or {}).items():
        cmd += ["-H", "%s: %s" % (k, v)]
    if body is not None:
        cmd += ["-H", "content-type: " + ctype, "--data-binary", "@-"]
    p = subprocess.run(cmd + [BASE + path], input=body if isinstance(body, bytes) else
                       (body.encode() if body is not None else None), capture_output=True)
    out = p.stdout
    i = out.rfind(b"\n")
    try:
        return int(out[i + 1:]), out[:i]
    except ValueError:
        return 0, p.stderr


def jget(path):
    s, b = curl("GET", path)
    try:
        return s, json.loads(b)
    except ValueError:
        return s, None


class Stream:
    """A bidirectional HTTP/2 request through curl: stdin -> request body,
    response body -> a reader thread."""

    def __init__(self, method, path, headers, ctype, upload=True):
        # "-T ." reads stdin without blocking, so responses flow while the
        # request body is idle.
        cmd = CURL + ["-N", "-X", method, "-D", os.path.join(T, "h%d" % id(self))]
        if upload:
            cmd += ["-T", ".", "-H", "content-type: " + ctype]
        for k, v in headers.items():
            cmd += ["-H", "%s: %s" % (k, v)]
        cmd += getattr(self, "extra", [])
        self.p = subprocess.Popen(cmd + [BASE + path], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append(self.p)
        self.data = b""
        self.cv = threading.Condition()
        self.eof = False
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        while True:
            b = self.p.stdout.read1(65536)
            with self.cv:
                if not b:
                    self.eof = True
                    self.cv.notify_all()
                    return
                self.data += b
                self.on_data()
                self.cv.notify_all()

    def on_data(self):
        pass

    def write(self, b):
        with self.lock:
            try:
                self.p.stdin.write(b)
                self.p.stdin.flush()
                return True
            except (BrokenPipeError, ValueError):
                return False

    def close_input(self):
        with self.lock:
            try:
                self.p.stdin.close()
            except (BrokenPipeError, ValueError):
                pass

    def wait_for(self, pred, timeout=10):
        end = time.time() + timeout
        with self.cv:
            while not pred():
                left = end - time.time()
                if left <= 0 or (self.eof and not pred()):
                    return pred()
                self.cv.wait(left)
            return True

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()

    def headers(self):
        try:
            return open(os.path.join(T, "h%d" % id(self))).read()
        except OSError:
            return ""


class Session(Stream):
    """A scripted supervisor session: ndjson lines both ways, pong on ping."""

    def __init__(self, token, pong=True):
        self.pong = pong
        self.lines = []
        super().__init__("POST", "/v1/supervisor/session",
                         {"authorization": "Bearer " + token}, "application/x-ndjson")

    def on_data(self):
        while b"\n" in self.data:
            line, self.data = self.data.split(b"\n", 1)
            try:
                j = json.loads(line)
            except ValueError:
                continue
            self.lines.append(j)
            if self.pong and j.get("type") == "ping":
                threading.Thread(target=self.send, args=({"type": "pong"},), daemon=True).start()

    def send(self, obj):
        return self.write((json.dumps(obj) + "\n").encode())

    def wait_line(self, pred, timeout=10):
        found = []

        def check():
            for j in self.lines:
                if pred(j):
                    found.append(j)
                    self.lines.remove(j)
                    return True
            return False
        self.wait_for(check, timeout)
        return found[0] if found else None


class Frames(Stream):
    def __init__(self, path, token=None, extra=None):
        h = {"authorization": "Bearer " + token} if token else {}
        self.extra = extra or []
        super().__init__("POST", path, h, "application/x-openshell-frames")

    def frames(self):
        return parse_frames(self.data)[0]

    def wait_type(self, t, timeout=10):
        return self.wait_for(lambda: any(f[0] == t for f in self.frames()), timeout)


def start(extra_env=None):
    global gw
    lnk = os.path.join(T, "openshell-gateway")
    if not os.path.exists(lnk):
        os.symlink(BIN, lnk)
    env = dict(os.environ, OPENSHELL_GATEWAY_PING_MS=str(PING_MS))
    log = open(LOG, "a")
    gw = subprocess.Popen([lnk, "--state-dir", STATE, "--socket", SOCK, "--listen", "none",
                           "--compute-driver", "none", "--log-format", "text"],
                          stdout=log, stderr=log, env=env)
    for _ in range(300):
        if os.path.exists(SOCK) and curl("GET", "/healthz")[0] == 200:
            return True
        if gw.poll() is not None:
            return False
        time.sleep(0.02)
    return False


def stop():
    gw.terminate()
    try:
        gw.wait(10)
    except subprocess.TimeoutExpired:
        gw.kill()
        gw.wait()


def create(name):
    s, b = curl("POST", SB, json.dumps({"name": name}))
    sid = json.loads(b)["metadata"]["id"] if s == 201 else None
    s, b = curl("POST", SB + "/" + name + "/token")
    return sid, json.loads(b)["token"] if s == 201 else None


def supervisor(name):
    s, j = jget(SB + "/" + name)
    return (j or {}).get("status", {}).get("supervisor", {})


def claim(token, relay_id):
    return Frames("/v1/supervisor/relay/" + relay_id, token)


def main():
    if not shutil.which("curl"):
        print("1..0 # SKIP curl not installed")
        return 0
    if not start():
        tap(False, "gateway starts", open(LOG).read())
        return 1
    sid_a, tok_a = create("a")
    sid_b, tok_b = create("b")
    tap(bool(tok_a and tok_b), "two sandboxes with tokens")

    # --- session, hello, status
    s, b = curl("POST", "/v1/supervisor/session", "", ctype="application/x-ndjson")
    tap(s == 401, "session without a token: 401", (s, b))
    tap(supervisor("a").get("connected") is False, "before a session: supervisor.connected false",
        supervisor("a"))
    sess = Session(tok_a)
    sess.send({"type": "hello", "supervisor_pid": 4242, "version": "test", "policy_version": 0})
    ok = False
    for _ in range(100):
        sup = supervisor("a")
        if sup.get("connected") and sup.get("pid") == 4242:
            ok = True
            break
        time.sleep(0.05)
    tap(ok and sup.get("since_ms", 0) > 0, "hello: status.supervisor {connected, since_ms, pid}",
        sup)
    s, j = jget("/v1/gateway")
    s2_, m = curl("GET", "/metrics")
    tap(j.get("supervisor_sessions") == 1 and j.get("relays") == 0 and
        b"openshell_gateway_supervisor_sessions 1" in m,
        "GET /v1/gateway and /metrics count the sessions and relays", (j, m[-400:]))
    tap(sess.wait_line(lambda j: j.get("type") == "ping", 10) is not None,
        "the gateway pings the session")

    # --- exec without a supervisor
    s, b = curl("POST", SB + "/b/exec", json.dumps({"command": ["/bin/true"]}))
    tap(s == 503 and b"sandbox b has no connected supervisor" in b,
        "exec without a connected supervisor: 503 unavailable", (s, b))
    s, b = curl("PUT", SB + "/b/files?path=/sandbox", b"x", ctype="application/x-tar")
    tap(s == 503, "upload without a connected supervisor: 503", (s, b))
    s, b = curl("POST", SB + "/nope/exec", json.dumps({"command": ["/bin/true"]}))
    tap(s == 404, "exec on an unknown sandbox: 404", (s, b))
    s, b = curl("POST", SB + "/a/exec", json.dumps({"command": []}))
    tap(s == 400 and b"command" in b, "exec with an empty command: 400", (s, b))
    s, b = curl("POST", SB + "/a/exec", "x", ctype="text/plain")
    tap(s == 415, "exec with another content type: 415", (s, b))

    # --- exec, JSON form
    res = {}

    def run_json():
        res["r"] = curl("POST", SB + "/a/exec", json.dumps(
            {"command": ["/bin/cat"], "stdin": "in-data", "environment": {"K": "v"},
             "workdir": "/sandbox"}))
    th = threading.Thread(target=run_json)
    th.start()
    rl = sess.wait_line(lambda j: j.get("type") == "relay")
    init = (rl or {}).get("init", {})
    tap(rl is not None and len(rl.get("relay_id", "")) == 32 and init.get("op") == "exec" and
        init.get("command") == ["/bin/cat"] and init.get("environment") == {"K": "v"} and
        init.get("workdir") == "/sandbox" and init.get("tty") is False,
        "exec: a relay line with 32 hex id and the INIT on the session", rl)
    rid = (rl or {}).get("relay_id", "0" * 32)
    other = claim(tok_b, rid)
    other.wait_for(lambda: other.eof, 5)
    tap(" 404" in other.headers().splitlines()[0] if other.headers() else False,
        "another sandbox's token cannot claim the relay: 404", other.headers())
    rel = claim(tok_a, rid)
    tap(rel.wait_for(lambda: [f for f in rel.frames() if f[0] == EOF], 5) and
        b"".join(f[1] for f in rel.frames() if f[0] == STDIN) == b"in-data",
        "relay: the supervisor gets STDIN then EOF", rel.frames())
    rel.write(frame(STDOUT, "out:in-data") + frame(STDERR, "err") +
              frame(EXIT, json.dumps({"exit_code": 3})))
    th.join(15)
    s, b = res.get("r", (0, b""))
    j = json.loads(b) if s == 200 else {}
    tap(j == {"exit_code": 3, "stdout": "out:in-data", "stderr": "err", "truncated": False},
        "exec JSON: 200 {exit_code, stdout, stderr, truncated}", (s, b))
    rel.wait_for(lambda: rel.eof, 5)
    rel.kill()
    again = claim(tok_a, rid)
    again.wait_for(lambda: again.eof, 5)
    tap(" 404" in (again.headers().splitlines() or [""])[0],
        "a used relay id: 404", again.headers())
    unk = claim(tok_a, "f" * 32)
    unk.wait_for(lambda: unk.eof, 5)
    tap(" 404" in (unk.headers().splitlines() or [""])[0], "an unknown relay id: 404")

    # --- exec JSON: output cap and timeout
    def run_json2(body, key):
        res[key] = curl("POST", SB + "/a/exec", json.dumps(body), timeout=30)
    th = threading.Thread(target=run_json2, args=({"command": ["x"], "timeout_seconds": 1}, "t"))
    th.start()
    rl = sess.wait_line(lambda j: j.get("type") == "relay")
    rel = claim(tok_a, rl["relay_id"])
    rel.wait_type(EOF, 5)
    rel.write(frame(STDOUT, "partial"))
    th.join(15)
    s, b = res.get("t", (0, b""))
    j = json.loads(b) if s == 200 else {}
    tap(j.get("exit_code") == 124 and j.get("stdout") == "partial",
        "exec JSON timeout_seconds: exit_code 124 with the output so far", (s, b))
    rel.wait_for(lambda: rel.eof, 5)
    tap(rel.eof, "timeout: the supervisor's relay stream is cancelled")
    rel.kill()

    th = threading.Thread(target=run_json2, args=({"command": ["x"]}, "big"))
    th.start()
    rl = sess.wait_line(lambda j: j.get("type") == "relay")
    rel = claim(tok_a, rl["relay_id"])
    chunk = b"y" * (1024 * 1024)
    for _ in range(5):
        rel.write(frame(STDOUT, chunk))
    rel.write(frame(EXIT, '{"exit_code":0}'))
    th.join(30)
    s, b = res.get("big", (0, b""))
    j = json.loads(b) if s == 200 else {}
    tap(j.get("truncated") is True and len(j.get("stdout", "")) == 4 * 1024 * 1024,
        "exec JSON: stdout capped at 4 MiB, truncated true", (s, len(b)))
    rel.kill()

    # --- claim deadline (10 s; skipped by the ASan run, which has its own)
    if os.environ.get("GWSESS_QUICK"):
        return rest(sess, tok_a, tok_b, sid_a, res)
    t0 = time.time()
    th = threading.Thread(target=run_json2, args=({"command": ["x"]}, "late"))
    th.start()
    rl = sess.wait_line(lambda j: j.get("type") == "relay")
    th.join(20)
    s, b = res.get("late", (0, b""))
    tap(s == 503 and b"within 10 s" in b and 9 <= time.time() - t0 < 16,
        "a relay not claimed in 10 s: 503", (s, b, time.time() - t0))
    late = claim(tok_a, rl["relay_id"])
    late.wait_for(lambda: late.eof, 5)
    tap(" 404" in (late.headers().splitlines() or [""])[0], "an expired relay id: 404")
    return rest(sess, tok_a, tok_b, sid_a, res)


def rest(sess, tok_a, tok_b, sid_a, res):

    # --- exec, frames form
    cl = Frames(SB + "/a/exec")
    cl.write(frame(INIT, json.dumps({"command": ["/bin/sh"], "tty": True, "cols": 100,
                                     "rows": 30})))
    rl = sess.wait_line(lambda j: j.get("type") == "relay")
    tap(rl is not None and rl["init"].get("op") == "exec" and rl["init"].get("cols") == 100,
        "frames exec: INIT reaches the session's relay line", rl)
    cl.write(frame(STDIN, "abc") + frame(RESIZE, '{"cols":120,"rows":40}'))
    rel = claim(tok_a, rl["relay_id"])
    tap(rel.wait_for(lambda: [f[0] for f in rel.frames()] == [STDIN, RESIZE], 5),
        "frames exec: STDIN and RESIZE sent before the claim arrive in order", rel.frames())
    cl.write(frame(EOF, b"\x02"))
    rel.wait_type(EOF, 5)
    rel.write(frame(STDOUT, "ABC") + frame(STDERR, "e") + frame(EXIT, '{"exit_code":0}'))
    cl.wait_for(lambda: cl.eof, 5)
    tap([(t, p) for t, p in cl.frames()] ==
        [(STDOUT, b"ABC"), (STDERR, b"e"), (EXIT, b'{"exit_code":0}')],
        "frames exec: STDOUT, STDERR, EXIT reach the client, then the stream ends", cl.frames())
    cl.kill()
    rel.kill()

    # big transfer through back-pressure, both ways
    cl = Frames(SB + "/a/exec")
    cl.write(frame(INIT, json.dumps({"command": ["/bin/cat"]})))
    rl = sess.wait_line(lambda j: j.get("type") == "relay")
    rel = claim(tok_a, rl["relay_id"])
    blob = os.urandom(256 * 1024)
    sent = hashlib.sha256()

    def pump():
        for _ in range(32):
            rel.write(frame(STDOUT, blob))
            sent.update(blob)
        rel.write(frame(EXIT, '{"exit_code":0}'))
    th = threading.Thread(target=pump)
    th.start()
    cl.wait_for(lambda: any(f[0] == EXIT for f in cl.frames()), 60)
    th.join(30)
    got = hashlib.sha256(b"".join(p for t, p in cl.frames() if t == STDOUT)).hexdigest()
    tap(got == sent.hexdigest(), "frames exec: 8 MiB of STDOUT arrive intact")
    cl.kill()
    rel.kill()

    # a slow reader: the gateway holds a bounded amount, the data is intact
    def rss():
        for line in open("/proc/%d/status" % gw.pid):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0
    cl = Frames(SB + "/a/exec", extra=["--limit-rate", "512k"])
    cl.write(frame(INIT, json.dumps({"command": ["/bin/cat"]})))
    rl = sess.wait_line(lambda j: j.get("type") == "relay")
    rel = claim(tok_a, rl["relay_id"])
    before = rss()
    peak = [before]
    done = threading.Event()

    def pump2():
        for _ in range(16):
            rel.write(frame(STDOUT, blob))
            peak[0] = max(peak[0], rss())
        rel.write(frame(EXIT, '{"exit_code":0}'))
        done.set()
    th = threading.Thread(target=pump2)
    th.start()
    while not done.is_set() and not cl.eof:
        peak[0] = max(peak[0], rss())
        time.sleep(0.05)
    cl.wait_for(lambda: any(f[0] == EXIT for f in cl.frames()), 60)
    th.join(30)
    got = b"".join(p for t, p in cl.frames() if t == STDOUT)
    # (Under ASan freed memory sits in quarantine: only the data is checked.)
    bound = 1 << 40 if os.environ.get("GWSESS_QUICK") else 16 * 1024 * 1024
    tap(got == blob * 16 and peak[0] - before < bound,
        "a slow exec reader (512 KiB/s) gets 4 MiB intact; the gateway grows by %d KiB" %
        ((peak[0] - before) // 1024), (len(got), before, peak[0]))
    cl.kill()
    rel.kill()

    # client errors
    cl = Frames(SB + "/a/exec")
    cl.write(frame(STDIN, "x"))
    cl.wait_for(lambda: cl.eof, 5)
    fr = cl.frames()
    tap(len(fr) == 1 and fr[0][0] == ERROR and b"INIT" in fr[0][1],
        "frames exec: a first frame other than INIT gets an ERROR frame", fr)
    cl.kill()
    cl = Frames(SB + "/a/exec")
    cl.write(struct.pack(">BI", INIT, 2 * 1024 * 1024))
    cl.wait_for(lambda: cl.eof, 5)
    fr = cl.frames()
    tap(len(fr) == 1 and fr[0][0] == ERROR and b"bad frame" in fr[0][1],
        "frames exec: an oversized frame gets an ERROR frame", fr)
    cl.kill()
    cl = Frames(SB + "/a/exec")
    cl.write(frame(INIT, '{"command":["x"]}'))
    rl = sess.wait_line(lambda j: j.get("type") == "relay")
    rel = claim(tok_a, rl["relay_id"])
    cl.write(frame(EXIT, '{"exit_code":0}'))
    cl.wait_for(lambda: cl.eof, 5)
    rel.wait_for(lambda: rel.eof, 5)
    fr = cl.frames()
    tap(fr and fr[0][0] == ERROR and rel.eof,
        "frames exec: a client EXIT frame is refused and the relay cancelled", fr)
    cl.kill()
    rel.kill()
    # the client going away cancels the supervisor's side
    cl = Frames(SB + "/a/exec")
    cl.write(frame(INIT, '{"command":["x"]}'))
    rl = sess.wait_line(lambda j: j.get("type") == "relay")
    rel = claim(tok_a, rl["relay_id"])
    time.sleep(0.2)
    cl.kill()
    tap(rel.wait_for(lambda: rel.eof, 5), "the client going away ends the supervisor's relay")
    rel.kill()
    # a supervisor ending without EXIT
    cl = Frames(SB + "/a/exec")
    cl.write(frame(INIT, '{"command":["x"]}'))
    rl = sess.wait_line(lambda j: j.get("type") == "relay")
    rel = claim(tok_a, rl["relay_id"])
    rel.write(frame(STDOUT, "x"))
    time.sleep(0.2)
    rel.kill()
    cl.wait_for(lambda: cl.eof, 5)
    fr = cl.frames()
    tap(fr and fr[-1][0] == ERROR and b"unavailable" in fr[-1][1],
        "a supervisor leaving without EXIT: the client gets an ERROR frame", fr)
    cl.kill()

    # relay limit per sandbox
    pend = []
    for i in range(33):
        pend.append(Frames(SB + "/a/exec"))
        pend[-1].write(frame(INIT, '{"command":["x"]}'))
    time.sleep(1)
    s, b = curl("POST", SB + "/a/exec", json.dumps({"command": ["x"]}))
    tap(s == 429 and b"too many open relays" in b, "more than 32 relays per sandbox: 429", (s, b))
    for p in pend:
        p.kill()
    while sess.wait_line(lambda j: j.get("type") == "relay", 0.5):
        pass

    # --- files
    tarball = os.urandom(300 * 1024)
    res2 = {}

    def up():
        res2["up"] = curl("PUT", SB + "/a/files?path=/sandbox/dst", tarball,
                          ctype="application/x-tar")
    th = threading.Thread(target=up)
    th.start()
    rl = sess.wait_line(lambda j: j.get("type") == "relay")
    tap(rl and rl["init"] == {"op": "untar", "path": "/sandbox/dst"},
        "upload: relay INIT {op: untar, path}", rl)
    rel = claim(tok_a, rl["relay_id"])
    rel.wait_type(EOF, 10)
    got = b"".join(p for t, p in rel.frames() if t == STDIN)
    rel.write(frame(EXIT, '{"exit_code":0}'))
    th.join(15)
    tap(got == tarball and res2.get("up", (0,))[0] == 200 and
        json.loads(res2["up"][1]) == {"ok": True},
        "upload: the tar stream reaches the supervisor intact; 200 {ok:true}",
        (len(got), res2.get("up")))
    rel.kill()

    def down(path, key):
        res2[key] = curl("GET", SB + "/a/files?path=" + path)
    th = threading.Thread(target=down, args=("/sandbox/dst", "down"))
    th.start()
    rl = sess.wait_line(lambda j: j.get("type") == "relay")
    rel = claim(tok_a, rl["relay_id"])
    rel.write(frame(STDOUT, tarball[:100000]) + frame(STDOUT, tarball[100000:]) +
              frame(EXIT, '{"exit_code":0}'))
    th.join(15)
    tap(rl["init"] == {"op": "tar", "path": "/sandbox/dst"} and
        res2.get("down", (0, b""))[0] == 200 and res2["down"][1] == tarball,
        "download: STDOUT frames become the application/x-tar body", rl)
    rel.kill()
    th = threading.Thread(target=down, args=("/nope", "down404"))
    th.start()
    rl = sess.wait_line(lambda j: j.get("type") == "relay")
    rel = claim(tok_a, rl["relay_id"])
    rel.write(frame(ERROR, '{"error":{"code":"not_found","message":"/nope: no such file"}}'))
    th.join(15)
    s, b = res2.get("down404", (0, b""))
    tap(s == 404 and b"/nope: no such file" in b, "download of a missing path: 404 with the "
        "sandbox's message", (s, b))
    rel.kill()
    s, b = curl("GET", SB + "/a/files")
    tap(s == 400, "files without ?path: 400", (s, b))
    s, b = curl("PUT", SB + "/a/files?path=/x", b"x", ctype="text/plain")
    tap(s == 415, "upload that is not application/x-tar: 415", (s, b))

    # --- config pushes
    pol = "version: 1\nnetwork_policies: {}\n"
    s, b = curl("PUT", SB + "/a/policy", pol, ctype="application/yaml")
    tap(s == 200 and sess.wait_line(lambda j: j == {"type": "config", "reason": "policy"}, 5),
        "a policy revision pushes {type: config, reason: policy}", (s, b))
    ver = json.loads(b).get("version") if s == 200 else 0
    s, b = curl("PUT", SB + "/a/settings/ocsf_json_enabled", json.dumps({"value": True}))
    tap(sess.wait_line(lambda j: j == {"type": "config", "reason": "settings"}, 5) is not None,
        "a sandbox setting pushes {type: config, reason: settings}", (s, b))
    wb = Stream("GET", SB + "/b/watch", {}, "", False)
    time.sleep(0.2)
    s2 = Session(tok_b)
    s2.send({"type": "hello", "supervisor_pid": 1, "version": "t", "policy_version": 0})
    tap(wb.wait_for(lambda: b'"connected":true' in wb.data and b'"pid":1' in wb.data, 5),
        "watchers see the supervisor connect (status.supervisor)", wb.data[-300:])
    wb.kill()
    time.sleep(0.3)
    s, b = curl("PUT", "/v1/gateway/settings/ocsf_json_enabled", json.dumps({"value": False}))
    tap(sess.wait_line(lambda j: j.get("type") == "config", 5) is not None and
        s2.wait_line(lambda j: j.get("type") == "config", 5) is not None,
        "a global setting pushes config to every session", (s, b))

    # --- policy_status line
    sess.send({"type": "policy_status", "version": ver, "status": "loaded", "source": "sandbox"})
    ok = False
    for _ in range(50):
        s, j = jget(SB + "/a/policy/revisions")
        items = (j or {}).get("items", [])
        if any(i.get("version") == ver and i.get("status") == "loaded" for i in items):
            ok = True
            break
        time.sleep(0.05)
    tap(ok, "policy_status line: the revision becomes loaded", j)

    # --- logs
    s, follow_cl = 0, Stream("GET", SB + "/a/logs?follow=1&tail=0", {}, "", False)
    watch_cl = Stream("GET", SB + "/a/watch?logs=1", {}, "", False)
    time.sleep(0.3)
    sess.send({"type": "log", "lines": [
        {"ts_ms": 1000, "level": "info", "source": "supervisor", "message": "one"},
        {"ts_ms": 2000, "level": "warn", "source": "proxy", "message": "two",
         "fields": {"host": "example.com"}},
        {"ts_ms": 3000, "level": "error", "source": "agent", "message": "three\nlines"}]})
    time.sleep(0.5)
    s, b = curl("GET", SB + "/a/logs?tail=2")
    lines = [json.loads(x) for x in b.splitlines() if x.strip()]
    tap(s == 200 and [x["message"] for x in lines] == ["two", "three\nlines"] and
        lines[0] == {"type": "log", "ts_ms": 2000, "level": "warn", "source": "proxy",
                     "message": "two", "fields": {"host": "example.com"}},
        "GET logs?tail=2: the last two lines as ndjson", (s, b))
    s, b = curl("GET", SB + "/a/logs?level=warn")
    tap(s == 200 and len(b.splitlines()) == 2, "logs?level=warn: warn and above", (s, b))
    s, b = curl("GET", SB + "/a/logs?source=proxy")
    tap(s == 200 and len(b.splitlines()) == 1 and b"two" in b, "logs?source=proxy", (s, b))
    s, b = curl("GET", SB + "/a/logs?level=loud")
    tap(s == 400, "logs?level=loud: 400", (s, b))
    s, b = curl("GET", SB + "/a/logs?color=1")
    tap(s == 400, "logs with an unknown query parameter: 400", (s, b))
    tap(follow_cl.wait_for(lambda: follow_cl.data.count(b"\n") >= 3, 5),
        "logs?follow=1 gets the lines as they arrive", follow_cl.data)
    follow_cl.kill()
    tap(watch_cl.wait_for(lambda: watch_cl.data.count(b'"type":"log"') >= 3, 5) and
        watch_cl.data.startswith(b'{"type":"sandbox"'),
        "watch?logs=1: the sandbox line, then its log lines", watch_cl.data[:300])
    watch_cl.kill()

    # --- exit line
    sess.send({"type": "exit", "exit_code": 7})
    ok = False
    for _ in range(50):
        s, j = jget(SB + "/a")
        st = (j or {}).get("status", {})
        if st.get("exit_code") == 7 and st.get("phase") == "exited":
            ok = True
            break
        time.sleep(0.05)
    tap(ok, "exit line: status.phase exited, exit_code 7", j)

    # --- replacement
    sess2 = Session(tok_a)
    sess2.send({"type": "hello", "supervisor_pid": 5555, "version": "t", "policy_version": 0})
    tap(sess.wait_for(lambda: sess.eof, 5), "a new session ends the old one")
    ok = False
    for _ in range(50):
        if supervisor("a").get("pid") == 5555:
            ok = True
            break
        time.sleep(0.05)
    tap(ok and supervisor("a").get("connected"), "the new session is the connected one")

    # --- dead link: a session that answers nothing is cut off after 3 pings
    s2.kill()
    mute = Session(tok_b, pong=False)
    mute.send({"type": "hello", "supervisor_pid": 9, "version": "t", "policy_version": 0})
    time.sleep(0.2)
    c1 = supervisor("b").get("connected")

    def pending_exec():
        res["pend"] = curl("POST", SB + "/b/exec", json.dumps({"command": ["x"]}))
    t0 = time.time()
    th = threading.Thread(target=pending_exec)
    th.start()
    th.join(15)
    s, b = res.get("pend", (0, b""))
    tap(s == 503 and b"disconnected" in b and time.time() - t0 < 9.5,
        "a relay waiting on a session that dies fails at once (503), not at the deadline", (s, b))
    tap(c1 and mute.wait_for(lambda: mute.eof, 15) and not supervisor("b").get("connected"),
        "a silent session is cut off after three ping periods", supervisor("b"))
    mute.kill()

    # --- restart keeps logs; the session comes back
    sess2.kill()
    stop()
    if not start():
        tap(False, "gateway restarts", open(LOG).read()[-2000:])
        return 1
    s, b = curl("GET", SB + "/a/logs")
    tap(s == 200 and len(b.splitlines()) == 3, "logs survive a gateway restart", (s, b))
    tap(supervisor("a").get("connected") is False, "after a restart: not connected until the "
        "supervisor reconnects")
    sess3 = Session(tok_a)
    sess3.send({"type": "hello", "supervisor_pid": 1, "version": "t", "policy_version": 0})
    time.sleep(0.3)
    tap(supervisor("a").get("connected") is True, "the supervisor reconnects")
    # --- delete ends the session
    s, b = curl("DELETE", SB + "/a")
    tap(s == 200 and sess3.wait_for(lambda: sess3.eof, 5), "deleting the sandbox ends its session",
        (s, b))
    tap(not os.path.exists(os.path.join(STATE, "sandboxes", sid_a)),
        "deleting the sandbox removes its logs")
    sess3.kill()
    tap(gw.poll() is None, "the gateway is still running")
    stop()
    tap(gw.returncode == 0, "graceful stop", gw.returncode)
    return 0


if __name__ == "__main__":
    rc = 1
    try:
        rc = main()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        if gw and gw.poll() is None:
            gw.kill()
        print("1..%d" % n)
        if failed:
            print("# gateway log:")
            for line in open(LOG, errors="replace").read().splitlines()[-30:]:
                print("# " + line)
        shutil.rmtree(T, ignore_errors=True)
    sys.exit(1 if failed else rc)
