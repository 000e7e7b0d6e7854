#!/usr/bin/python3
"""E2E: the supervisor's side of the gateway session (doc/sandbox.md,
"Gateway session"), through the real binary against a real gateway.

A gateway (--compute-driver none) runs on a unix socket in a temporary state
directory; a sandbox record gets a token and a real openshell-supervisor
--gateway is started for it with the local driver's command line, with a main process that prints a
tick and the HTTP status of a curl through the sandbox's proxy every 200 ms.
An upstream HTTP server lives in a network namespace this test creates (a
veth pair with private 10.x addresses; removed on exit).

Covers: the session (connected, hello's pid and policy version), exec
through the JSON API and the frames API (via `openshell sandbox exec`):
identity, hostname, Landlock (writes outside /sandbox denied), exit codes
and signals (128+N), stdin, environment and workdir, a tty with resize;
a policy PUT reaching the running proxy (403 -> 200, revision `loaded`); a
revision changing a fixed section turning `failed` with the last good still
enforced; the main process's output and the proxy's decisions in the
sandbox's logs; kill -9 of the gateway and a restart: the supervisor
reconnects, keeps enforcing meanwhile, and what it logged during the outage
arrives; the main process's exit reported; bad command lines refused.
Prints TAP."""
import json
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time

import e2elib

BIN = os.environ["OPENSHELL_BIN"]
BINDIR = os.environ.get("OPENSHELL_BINDIR", os.path.dirname(BIN) + "/bin")
SV = os.path.join(BINDIR, "openshell-supervisor")
GWB = os.path.join(BINDIR, "openshell-gateway")
CLI = os.path.join(BINDIR, "openshell")
T = tempfile.mkdtemp(prefix="openshell-svsess-e2e.")
STATE = os.path.join(T, "state")
SOCK = os.path.join(T, "gw.sock")
SB = "/v1/workspaces/default/sandboxes"
tap = e2elib.Tap(diag_lines=30)
gw = None
sv = None
net = None
srv = None


def skip_all(reason):
    print("1..1\nok 1 - supervisor session # SKIP %s" % reason)
    sys.exit(0)


def curl(method, path, body=None, ctype="application/json", timeout=30):
    cmd = ["curl", "-sS", "--unix-socket", SOCK, "--http2-prior-knowledge", "-X", method,
           "-o", "-", "-w", "\n%{http_code}", "--max-time", str(timeout)]
    if body is not None:
        cmd += ["-H", "content-type: " + ctype, "--data-binary", "@-"]
    r = subprocess.run(cmd + ["http://x" + path], input=body if body is not None else None,
                       capture_output=True, text=True, timeout=timeout + 5)
    out, _, code = r.stdout.rpartition("\n")
    try:
        return int(code), out
    except ValueError:
        return 0, r.stderr


def curl_bytes(method, path, body=None, ctype=None, timeout=30):
    cmd = ["curl", "-sS", "--unix-socket", SOCK, "--http2-prior-knowledge", "-X", method,
           "-o", "-", "-w", "\n%{http_code}", "--max-time", str(timeout)]
    if body is not None:
        cmd += ["-H", "content-type: " + ctype, "--data-binary", "@-"]
    r = subprocess.run(cmd + ["http://x" + path], input=body, capture_output=True,
                       timeout=timeout + 5)
    out, _, code = r.stdout.rpartition(b"\n")
    try:
        return int(code), out
    except ValueError:
        return 0, r.stderr


def jget(path):
    code, out = curl("GET", path)
    try:
        return code, json.loads(out)
    except ValueError:
        return code, None


def exec_json(cmd, **kw):
    body = dict(command=cmd, **kw)
    code, out = curl("POST", SB + "/box/exec", json.dumps(body))
    try:
        return code, json.loads(out)
    except ValueError:
        return code, {"raw": out}


INIT, STDIN, STDOUT, STDERR, RESIZE, EXIT, EOF, ERROR = range(1, 9)


def frame(t, payload=b""):
    if isinstance(payload, str):
        payload = payload.encode()
    return struct.pack(">BI", t, len(payload)) + payload


class FrameStream:
    """POST PATH with content-type application/x-openshell-frames through
    curl, both bodies streaming (-T . reads stdin without blocking)."""

    def __init__(self, path):
        self.p = subprocess.Popen(["curl", "-sS", "-N", "--http2-prior-knowledge",
                                   "--unix-socket", SOCK, "-X", "POST", "-T", ".", "-H",
                                   "content-type: application/x-openshell-frames",
                                   "--max-time", "120", "http://x" + path],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL)
        self.buf = b""
        os.set_blocking(self.p.stdout.fileno(), False)

    def send(self, t, payload=b""):
        try:
            self.p.stdin.write(frame(t, payload))
            self.p.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass

    def _pump(self, timeout):
        r, _, _ = select.select([self.p.stdout], [], [], timeout)
        if not r:
            return True
        try:
            d = os.read(self.p.stdout.fileno(), 1 << 20)
        except BlockingIOError:
            return True
        if not d:
            return False
        self.buf += d
        return True

    def wait_for(self, needle, timeout=10):
        end = time.time() + timeout
        while needle not in self.buf and time.time() < end:
            if not self._pump(0.2):
                break
        return needle in self.buf

    def finish(self, timeout=20):
        try:
            self.p.stdin.close()
        except (BrokenPipeError, ValueError):
            pass
        end = time.time() + timeout
        while time.time() < end and self._pump(0.2):
            if self.p.poll() is not None and not select.select([self.p.stdout], [], [], 0)[0]:
                break
        self.p.kill()
        self.p.wait()
        out, data = [], self.buf
        while len(data) >= 5:
            t, ln = struct.unpack(">BI", data[:5])
            if len(data) < 5 + ln:
                break
            out.append((t, data[5:5 + ln]))
            data = data[5 + ln:]
        return out


def landlock_abi():
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    # landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)
    v = libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return v if v > 0 else 0


def wait_for(pred, timeout=10.0, step=0.05):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def start_gateway():
    global gw
    log = open(os.path.join(T, "gw.log"), "a")
    # No compute driver: the test starts the supervisor itself, with the
    # command line the local driver uses (test/e2e/gateway_exec.* covers
    # the driver starting it).
    gw = subprocess.Popen([GWB, "--state-dir", STATE, "--socket", SOCK, "--listen", "none",
                           "--compute-driver", "none", "--log-format", "text"],
                          stdout=log, stderr=log)
    return wait_for(lambda: curl("GET", "/healthz", timeout=2)[0] == 200, 10)


def connected():
    code, j = jget(SB + "/box")
    sup = (j or {}).get("status", {}).get("supervisor", {})
    return sup if sup.get("connected") else None


def revision_status(v):
    code, j = jget(SB + "/box/policy/revisions")
    for it in (j or {}).get("items", []):
        if it.get("version") == v:
            return it
    return None


def in_sandbox_curl():
    return ("curl -s -o /dev/null -w %%{http_code} --max-time 5 http://%s:%d/" %
            (net.up, 8080))


def policy_allow(extra=""):
    return ("version: 1\n%snetwork_policies:\n  up:\n    endpoints:\n      - host: %s\n"
            "        port: 8080\n        allowed_ips: [%s/32]\n    binaries:\n"
            "      - path: /usr/bin/curl\n" % (extra, net.up, net.up))


def cleanup():
    for p in (sv, gw, srv):
        if p and p.poll() is None:
            p.kill()
            p.wait()
    if net:
        net.delete()
    shutil.rmtree(T, ignore_errors=True)


def main():
    global sv, net, srv, SOCK
    if os.geteuid() != 0:
        skip_all("needs root (network namespace for the upstream)")
    for tool in ("curl", "ip"):
        if not shutil.which(tool):
            skip_all("needs " + tool)
    if not os.path.exists("/usr/bin/curl"):
        skip_all("needs /usr/bin/curl inside the sandbox")
    os.makedirs(STATE)
    net = e2elib.Netns("sv").create()
    srv = subprocess.Popen(["ip", "netns", "exec", net.ns, "python3", "-m", "http.server",
                            "--bind", net.up, "8080"], cwd=T, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    if not start_gateway():
        tap(False, "gateway starts", open(os.path.join(T, "gw.log")).read())
        return
    code, j = curl("POST", SB, json.dumps({"name": "box", "spec": {}}))
    sid = json.loads(j)["metadata"]["id"]
    code, j = curl("POST", SB + "/box/token")
    tok = json.loads(j)["token"]
    sdir = os.path.join(T, "sb", sid)
    os.makedirs(sdir)
    tokf = os.path.join(sdir, "token")
    fd = os.open(tokf, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, tok.encode())
    os.close(fd)
    wd = os.path.join(T, "work")
    os.makedirs(wd)
    os.chmod(wd, 0o777)

    # Bad command lines: refused before anything starts.
    base = [SV, "--gateway", "unix:" + SOCK, "--sandbox-id", sid, "--token-file", tokf,
            "--name", "box", "--workdir", wd]
    r = subprocess.run(base + ["--idle", "--", "true"], capture_output=True, text=True)
    tap(r.returncode == 2 and "exclude" in r.stderr, "--idle with a command: exit 2", r.stderr)
    os.chmod(tokf, 0o644)
    r = subprocess.run(base + ["--idle"], capture_output=True, text=True)
    os.chmod(tokf, 0o600)
    tap(r.returncode == 2 and "owner only" in r.stderr, "a token file others can read: exit 2",
        r.stderr)
    r = subprocess.run(base[:4] + ["--idle"], capture_output=True, text=True)
    tap(r.returncode == 2 and "--token-file" in r.stderr, "--gateway without --token-file: exit 2",
        r.stderr)
    badtok = os.path.join(sdir, "bad")
    fd = os.open(badtok, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"osb_not-a-real-token")
    os.close(fd)
    r = subprocess.run(base[:5] + ["--token-file", badtok, "--idle"], capture_output=True,
                       text=True, timeout=40)
    tap(r.returncode == 125 and "401" in r.stderr, "a refused token: exit 125 with the reason",
        r.stderr)

    # The sandbox: a main process printing a tick and the proxy's answer.
    agent = ("id -u >/sandbox/agent.uid; while [ ! -e /sandbox/stop ]; do "
             "if [ -e /sandbox/flood ]; then rm -f /sandbox/flood; i=0; "
             "while [ $i -lt 2500 ]; do printf 'flood %%01000d\\n' $i; i=$((i+1)); done; fi; "
             "echo tick $(date +%%s%%3N) $(%s); sleep 0.2; done; exit 3" % in_sandbox_curl())
    sv = subprocess.Popen(base + ["--", "/bin/sh", "-c", agent],
                          stdout=open(os.path.join(T, "sv.out"), "w"),
                          stderr=open(os.path.join(T, "sv.err"), "w"))
    sup = wait_for(connected, 15)
    tap(sup and sup.get("pid") == sv.pid, "the supervisor holds a session (hello with its pid)",
        "popen pid %d: " % sv.pid + json.dumps(sup) + open(os.path.join(T, "sv.err")).read() +
        subprocess.run(["ps", "-eo", "pid,ppid,args"], capture_output=True, text=True).stdout)
    tap(sup and sup.get("policy_version") == 0, "hello carries the policy version (0: default)")

    # The token lives in the outer supervisor only: scan the memory of every
    # process of the sandbox (PID 1, the proxy, the agent) for it.
    def scan(pid):
        hits = 0
        try:
            maps = open("/proc/%d/maps" % pid).read().splitlines()
            mem = open("/proc/%d/mem" % pid, "rb", 0)
        except OSError:
            return -1
        with mem:
            for line in maps:
                f = line.split()
                if "r" not in f[1]:
                    continue
                a, b = [int(x, 16) for x in f[0].split("-")]
                try:
                    mem.seek(a)
                    d = mem.read(b - a)
                except (OSError, OverflowError, ValueError):
                    continue
                hits += d.count(tok.encode()) + d.count(tok[4:24].encode())
        return hits

    def descendants(pid):
        out, todo = [], [pid]
        while todo:
            p = todo.pop()
            try:
                kids = [int(k) for k in
                        open("/proc/%d/task/%d/children" % (p, p)).read().split()]
            except OSError:
                kids = []
            out += kids
            todo += kids
        return out
    procs = descendants(sv.pid)
    found = {p: scan(p) for p in procs}
    # A short-lived child of the agent (its loop's sleep or curl) that ended
    # between the listing and its scan held nothing; one still there but
    # unreadable keeps failing the check.
    found = {p: v for p, v in found.items() if v != -1 or os.path.exists("/proc/%d" % p)}
    tap(scan(sv.pid) > 0 and len(procs) >= 3 and all(v == 0 for v in found.values()),
        "the token is in no sandbox process's memory (%d scanned)" % len(procs), repr(found))

    # exec through the JSON API.
    code, j = exec_json(["/bin/sh", "-c", "id -u; hostname; pwd"])
    lines = j.get("stdout", "").split()
    tap(code == 200 and j.get("exit_code") == 0 and len(lines) == 3 and lines[0] != "0"
        and lines[1] == "box" and lines[2] == "/sandbox",
        "exec: not root, hostname is the sandbox's, cwd /sandbox", json.dumps(j))
    agent_uid = lines[0] if lines else None
    auid = open(os.path.join(wd, "agent.uid")).read().strip()
    tap(auid == agent_uid, "exec runs as the agent's uid", "%s vs %s" % (auid, agent_uid))
    code, j = exec_json(["/bin/sh", "-c", "grep -E '^(Seccomp|NoNewPrivs|CapEff)' "
                         "/proc/self/status"])
    out = j.get("stdout", "")
    tap("Seccomp:\t2" in out and "NoNewPrivs:\t1" in out and "CapEff:\t0000000000000000" in out,
        "exec: seccomp filter, no_new_privs, no capabilities", out)
    code, j = exec_json(["/bin/sh", "-c", "touch /usr/x 2>&1; touch /etc/x 2>&1; "
                         "touch /sandbox/ok && echo wrote"])
    tap("wrote" in j.get("stdout", "") and j["stdout"].count("touch:") == 2
        and not os.path.exists("/usr/x") and os.path.exists(os.path.join(wd, "ok")),
        "exec: writes outside /sandbox denied, /sandbox writable", json.dumps(j))
    code, j = exec_json(["/bin/sh", "-c", "exit 7"])
    tap(j.get("exit_code") == 7, "exec: exit status passes through", json.dumps(j))
    code, j = exec_json(["/bin/sh", "-c", "kill -TERM $$"])
    tap(j.get("exit_code") == 143, "exec: killed by SIGTERM is 143", json.dumps(j))
    code, j = exec_json(["no-such-command-xyz"])
    tap(j.get("exit_code") == 127, "exec: command not found is 127", json.dumps(j))
    code, j = exec_json(["/usr/bin/wc", "-c"], stdin="hello world\n")
    tap(j.get("stdout", "").strip() == "12", "exec: stdin reaches the process", json.dumps(j))
    code, j = exec_json(["/bin/sh", "-c", "echo $FOO; pwd; echo $HTTPS_PROXY"],
                        environment={"FOO": "bar"}, workdir="/tmp")
    tap(j.get("stdout", "").split() == ["bar", "/tmp", "http://127.0.0.1:3128"],
        "exec: environment added to the agent's, workdir honoured", json.dumps(j))
    if os.path.isdir("/root") and (os.stat("/root").st_mode & 0o005) == 0:
        code, j = exec_json(["/bin/pwd"], workdir="/root")
        tap(j.get("exit_code") == 125 and "workdir /root" in j.get("stderr", ""),
            "exec: a workdir the agent's user may not enter is refused", json.dumps(j))
    code, j = exec_json(["/bin/sh", "-c", "ls /proc | grep -c '^[0-9]'"])
    tap(code == 200 and 0 < int(j.get("stdout", "0").strip() or 0) < 20,
        "exec: in the sandbox's pid namespace", json.dumps(j))

    # The frames API (what `openshell sandbox exec` speaks): stdin piped,
    # stdout/stderr split, EOF frames, the status last.
    st = FrameStream(SB + "/box/exec")
    st.send(INIT, json.dumps({"command": ["/bin/sh", "-c", "tr a-z A-Z; echo oops >&2; exit 5"]}))
    st.send(STDIN, b"abc\n")
    st.send(EOF, bytes([STDIN]))
    fr = st.finish()
    outs = b"".join(p for t, p in fr if t == STDOUT)
    errs = b"".join(p for t, p in fr if t == STDERR)
    tap(outs == b"ABC\n" and errs == b"oops\n" and fr and fr[-1][0] == EXIT and
        json.loads(fr[-1][1]) == {"exit_code": 5} and (EOF, bytes([STDOUT])) in fr,
        "frames exec: stdin, stdout, stderr, EOF frames, EXIT last", repr(fr[:10]))
    big = os.urandom(3 << 20)
    st = FrameStream(SB + "/box/exec")

    def feed():
        st.send(INIT, json.dumps({"command": ["/bin/cat"]}))
        for i in range(0, len(big), 60000):
            st.send(STDIN, big[i:i + 60000])
        st.send(EOF, bytes([STDIN]))
    # Written while the output is read: curl's pipes are small.
    th = threading.Thread(target=feed, daemon=True)
    th.start()
    while th.is_alive() and st._pump(0.1):
        pass
    fr = st.finish(60)
    outs = b"".join(p for t, p in fr if t == STDOUT)
    tap(outs == big and fr[-1][0] == EXIT, "frames exec: 3 MiB through cat unchanged",
        "%d bytes back" % len(outs))

    # A tty, then a resize while it runs.
    st = FrameStream(SB + "/box/exec")
    st.send(INIT, json.dumps({"command": ["/bin/sh", "-c", "stty size; tty; touch tty.ready; "
                                          "read x; stty size"],
                              "tty": True, "cols": 100, "rows": 30}))
    # (curl hands on output only as its upload moves: wait on a file.)
    first = wait_for(lambda: os.path.exists(os.path.join(wd, "tty.ready")), 10)
    st.send(RESIZE, json.dumps({"cols": 120, "rows": 40}))
    time.sleep(0.2)
    st.send(STDIN, b"go\n")
    fr = st.finish()
    text = b"".join(p for t, p in fr if t == STDOUT).decode(errors="replace")
    tap(first and "/dev/pts/" in text and text.find("40 120") > text.find("30 100") >= 0 and
        fr[-1] == (EXIT, b'{"exit_code":0}'),
        "tty exec: a pty in the sandbox, a resize reaches it (stty size)", repr(text))

    # A client that goes away: its process does not outlive the relay.
    st = FrameStream(SB + "/box/exec")
    st.send(INIT, json.dumps({"command": ["/bin/sh", "-c",
                                          "echo $$ >/sandbox/orphan.pid; exec sleep 300"]}))
    pidf = os.path.join(wd, "orphan.pid")
    started = wait_for(lambda: os.path.exists(pidf) and open(pidf).read().strip(), 10)
    st.p.kill()
    st.p.wait()
    opid = open(pidf).read().strip() if started else "0"
    gone = wait_for(lambda: exec_json(["/bin/sh", "-c", "test -e /proc/%s && echo alive || "
                                       "echo gone" % opid])[1].get("stdout") == "gone\n", 10)
    tap(started and gone, "a client that disconnects: its process is killed")

    # Many at once.
    res = {}

    def one(i):
        res[i] = exec_json(["/bin/sh", "-c", "sleep 0.3; echo n%d; exit %d" % (i, i % 5)])[1]
    ths = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    t0 = time.time()
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    tap(all(res[i].get("stdout") == "n%d\n" % i and res[i].get("exit_code") == i % 5
            for i in range(16)) and time.time() - t0 < 4,
        "16 concurrent execs, each with its own output and status (%.1f s)" % (time.time() - t0),
        repr(res))

    # Files: untar / tar run inside the sandbox, as the agent.
    src = os.path.join(T, "up")
    os.makedirs(os.path.join(src, "d"))
    with open(os.path.join(src, "d", "f"), "w") as f:
        f.write("payload\n")
    tarball = subprocess.run(["tar", "-C", src, "-cf", "-", "d"], capture_output=True).stdout
    code, out = curl_bytes("PUT", SB + "/box/files?path=/sandbox/in", tarball,
                           "application/x-tar")
    dst = os.path.join(wd, "in", "d", "f")
    tap(code == 200 and os.path.exists(dst) and open(dst).read() == "payload\n" and
        str(os.stat(dst).st_uid) == agent_uid,
        "upload: extracted into the sandbox, owned by the agent's uid", out)
    code, out = curl_bytes("PUT", SB + "/box/files?path=/usr/share/evil", tarball,
                           "application/x-tar")
    tap(code != 200 and not os.path.exists("/usr/share/evil"),
        "upload outside the writable paths is refused (Landlock)", out)
    code, out = curl_bytes("GET", SB + "/box/files?path=/sandbox/in/d")
    names = subprocess.run(["tar", "-tf", "-"], input=out, capture_output=True).stdout
    tap(code == 200 and names.split() == [b"d/", b"d/f"], "download: a tar of the directory",
        repr(names))
    code, out = curl_bytes("GET", SB + "/box/files?path=/sandbox/nonexistent")
    tap(code != 200 and b"nonexistent" in out, "download of a missing path: the error says so",
        out)

    # Policy: denied by default, a PUT reaches the running proxy.
    code, j = exec_json(["/bin/sh", "-c", in_sandbox_curl()])
    tap(j.get("stdout") == "403", "egress denied under the default policy", json.dumps(j))
    code, out = curl("PUT", SB + "/box/policy", policy_allow(), "application/yaml")
    v1 = json.loads(out).get("version") if code == 200 else None
    st = wait_for(lambda: (revision_status(v1) or {}).get("status") == "loaded", 15)
    tap(st, "the revision turns loaded", json.dumps(revision_status(v1)))
    ok = wait_for(lambda: exec_json(["/bin/sh", "-c", in_sandbox_curl()])[1].get("stdout")
                  == "200", 5)
    tap(ok, "the running proxy allows the upstream now (403 -> 200)")
    # A revision changing a fixed section: failed, the last good enforced.
    code, out = curl("PUT", SB + "/box/policy",
                     policy_allow("filesystem_policy:\n  read_only: [/usr]\n"),
                     "application/yaml")
    v2 = json.loads(out).get("version") if code == 200 else None
    st = wait_for(lambda: (revision_status(v2) or {}).get("status") == "failed", 15)
    rs = revision_status(v2) or {}
    tap(st and "filesystem_policy" in (rs.get("load_error") or ""),
        "a revision changing filesystem_policy turns failed, saying why", json.dumps(rs))
    code, j = exec_json(["/bin/sh", "-c", in_sandbox_curl()])
    tap(j.get("stdout") == "200", "the last good revision stays in force", json.dumps(j))

    # Logs: the main process's output and the proxy's decisions arrive.
    def logs(q):
        c, out = curl("GET", SB + "/box/logs?tail=2000" + q)
        return [json.loads(x) for x in out.splitlines() if x.startswith("{")] if c == 200 else []
    got = wait_for(lambda: [x for x in logs("&source=agent") if "tick" in x["message"]], 10)
    tap(got, "the main process's output is in the sandbox's logs (source agent)")
    got = wait_for(lambda: logs("&source=proxy"), 10)
    tap(got, "the proxy's log lines are in the sandbox's logs (source proxy)")
    dec = [x for x in got or [] if (x.get("fields") or {}).get("action") == "deny" and
           (x.get("fields") or {}).get("host") == net.up]
    tap(dec and dec[0]["level"] == "warn",
        "the proxy's decision records arrive with their fields (action, host, ...)",
        repr((got or [])[-3:]))

    # kill -9 of the gateway; the sandbox keeps enforcing; a restart.
    gw.kill()
    gw.wait()
    t_down = int(time.time() * 1000)
    # 2.5 MB of output while the gateway is away: past the 1 MiB queue.
    open(os.path.join(wd, "flood"), "w").close()
    time.sleep(3)
    t_up = int(time.time() * 1000)
    if not start_gateway():
        tap(False, "gateway restarts", open(os.path.join(T, "gw.log")).read())
        return
    sup = wait_for(connected, 20, 0.1)
    tap(sup and sup.get("pid") == sv.pid, "the supervisor reconnects after kill -9 + restart",
        open(os.path.join(T, "sv.err")).read()[-2000:])

    def outage_ticks():
        out = []
        for x in logs("&source=agent"):
            f = x["message"].split()
            if len(f) == 3 and f[0] == "tick" and t_down + 300 < int(f[1]) < t_up - 300:
                out.append(f[2])
        return out
    ticks = wait_for(outage_ticks, 10)
    tap(ticks and all(c == "200" for c in ticks),
        "logs from the outage arrive, and the policy was enforced meanwhile (%d ticks)" %
        len(ticks or []), repr(ticks))
    got = wait_for(lambda: [x for x in logs("&source=supervisor") if "dropped" in x["message"]],
                   10)
    tap(got and int(got[0]["message"].split()[0]) > 0,
        "past the 1 MiB queue the oldest records go, and the drop is reported",
        repr(got[:1]))
    code, j = exec_json(["/bin/echo", "again"])
    tap(j.get("stdout") == "again\n", "exec works after the reconnect", json.dumps(j))

    # Credentials: a provider attached while the sandbox runs; exec'd
    # processes get its placeholder, never the secret.
    code, out = curl("POST", "/v1/workspaces/default/providers", json.dumps(
        {"name": "oa", "spec": {"type": "openai",
                                "credentials": {"OPENAI_API_KEY": "sk-e2e-secret-123"}}}))
    code2, out2 = curl("PUT", SB + "/box/providers/oa", "{}")
    if code == 201 and code2 == 200:
        def env_has():
            j = exec_json(["/bin/sh", "-c", "echo $OPENAI_API_KEY"])[1]
            return j.get("stdout", "").strip()
        got = wait_for(lambda: env_has().startswith("openshell:resolve:"), 10)
        val = env_has()
        tap(got and "sk-e2e" not in val,
            "credentials attached while running: exec gets the placeholder", val)
        code, j = exec_json(["/bin/sh", "-c", "grep -rs sk-e2e-secret /proc/*/environ "
                             "/proc/*/cmdline /sandbox /tmp | head -1; echo end"])
        tap(j.get("stdout") == "end\n", "the secret is nowhere in the sandbox", json.dumps(j))
    elif code == 404 and "no such endpoint" in out:
        for what in ("credentials attached while running", "the secret is nowhere"):
            tap.skip(what, "this gateway has no providers")
    else:
        tap(False, "credentials: provider setup", out + out2)

    # fail_closed: an inapplicable revision now denies all egress.
    code, out = curl("PUT", SB + "/box/settings/policy_validation_failure_mode",
                     json.dumps({"value": "fail_closed"}))
    code, out = curl("PUT", SB + "/box/policy",
                     policy_allow("process:\n  run_as_user: \"4242\"\n"), "application/yaml")
    v3 = json.loads(out).get("version") if code == 200 else None
    st = wait_for(lambda: (revision_status(v3) or {}).get("status") == "failed", 15)
    tap(st, "with fail_closed, a revision changing process turns failed",
        json.dumps(revision_status(v3)))
    ok = wait_for(lambda: exec_json(["/bin/sh", "-c", in_sandbox_curl()])[1].get("stdout")
                  == "403", 5)
    tap(ok, "fail_closed: all egress denied after the failure")
    curl("PUT", SB + "/box/settings/policy_validation_failure_mode",
         json.dumps({"value": "retain_last_valid"}))
    ok = wait_for(lambda: exec_json(["/bin/sh", "-c", in_sandbox_curl()])[1].get("stdout")
                  == "200", 10)
    tap(ok, "back to retain_last_valid: the last good policy is in force again")
    curl("PUT", SB + "/box/settings/policy_validation_failure_mode",
         json.dumps({"value": "fail_closed"}))
    ok = wait_for(lambda: exec_json(["/bin/sh", "-c", in_sandbox_curl()])[1].get("stdout")
                  == "403", 10)
    tap(ok, "fail_closed set again while the failed revision is newest: denied again")
    code, out = curl("PUT", SB + "/box/policy", policy_allow(), "application/yaml")
    v4 = json.loads(out).get("version") if code == 200 else None
    st = wait_for(lambda: (revision_status(v4) or {}).get("status") == "loaded", 15)
    ok = wait_for(lambda: exec_json(["/bin/sh", "-c", in_sandbox_curl()])[1].get("stdout")
                  == "200", 5)
    tap(st and ok, "a good revision afterwards restores egress")

    # Cut off, then back: a revision stored meanwhile is caught up on.
    gw.kill()
    gw.wait()
    real = SOCK
    SOCK = real + ".2"  # the gateway is up, but not where the supervisor looks
    if not start_gateway():
        tap(False, "gateway restarts elsewhere", open(os.path.join(T, "gw.log")).read())
        return
    code, out = curl("PUT", SB + "/box/policy", "# caught up\n" + policy_allow(),
                     "application/yaml")
    v5 = json.loads(out).get("version") if code == 200 else None
    time.sleep(1)
    pending = (revision_status(v5) or {}).get("status") == "pending"
    os.rename(SOCK, real)
    SOCK = real
    st = wait_for(lambda: (revision_status(v5) or {}).get("status") == "loaded", 20, 0.1)
    tap(pending and st, "a revision stored while the supervisor was cut off is loaded once it "
        "reconnects", json.dumps(revision_status(v5)))

    # The main process ends: exit reported, the supervisor exits with it.
    # (An exec'd process cannot signal the agent: each has its own Landlock
    # domain, and ABI 6 scopes signals to the domain.)
    if landlock_abi() >= 6:
        code, j = exec_json(["/bin/sh", "-c", "kill -TERM $(pgrep -o -x sh) || echo refused"])
        tap("refused" in j.get("stdout", ""),
            "exec cannot signal the agent (Landlock signal scope)", json.dumps(j))
    else:
        tap.skip("exec cannot signal the agent", "Landlock ABI < 6")
    code, j = exec_json(["/usr/bin/touch", "/sandbox/stop"])
    try:
        rc = sv.wait(15)
    except subprocess.TimeoutExpired:
        rc = None
    tap(rc == 3, "the supervisor exits with the main process's status", repr(rc))
    got = wait_for(lambda: [x for x in logs("&source=supervisor") if "main process ended"
                            in x["message"]], 5)
    tap(got, "its last log lines reach the gateway")
    left = [d for d in os.listdir(sdir) if d.startswith("policy.")]
    tap(not left, "the private policy directory is removed", repr(left))

    # Its stdout closed under it (a reader that went away): the sandbox
    # lives on.
    code, j = curl("POST", SB, json.dumps({"name": "box2", "spec": {}}))
    sid2 = json.loads(j)["metadata"]["id"]
    tok2 = json.loads(curl("POST", SB + "/box2/token")[1])["token"]
    d2 = os.path.join(T, "sb", sid2)
    os.makedirs(d2)
    fd = os.open(os.path.join(d2, "token"), os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, tok2.encode())
    os.close(fd)
    p2 = subprocess.Popen([SV, "--gateway", "unix:" + SOCK, "--sandbox-id", sid2, "--token-file",
                           os.path.join(d2, "token"), "--name", "box2", "--workdir", wd, "--",
                           "/bin/sh", "-c", "while :; do echo line; sleep 0.05; done"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    p2.stdout.read(5)
    p2.stdout.close()
    time.sleep(0.5)

    def box2_exec():
        c, o = curl("POST", SB + "/box2/exec", json.dumps({"command": ["/bin/echo", "alive"]}))
        return o if '"alive\\n"' in o else None
    out = wait_for(box2_exec, 10, 0.2)
    tap(p2.poll() is None and out,
        "a closed stdout does not end the supervisor (SIGPIPE ignored)",
        "status %r: %s" % (p2.poll(), out))
    # Its token file gone while the gateway is away (the gateway deleted
    # the sandbox's state, or the state directory was removed): the
    # sandbox stops rather than run unreachable forever.
    gw.kill()
    gw.wait()
    shutil.rmtree(d2)
    try:
        rc2 = p2.wait(30)
    except subprocess.TimeoutExpired:
        rc2 = None
        p2.kill()
        p2.wait()
    tap(rc2 is not None, "a supervisor whose token file is gone stops its sandbox and exits",
        "still running after 30 s")


if __name__ == "__main__":
    try:
        main()
    except Exception as ex:  # a crash is a failure, never a pass
        import traceback
        tap(False, "unexpected exception", traceback.format_exc())
    finally:
        cleanup()
    sys.exit(tap.plan())
