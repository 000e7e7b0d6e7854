#!/usr/bin/python3
"""E2E: kill -9 of openshell-gateway while clients create, patch and delete
sandbox records, then restart: every acknowledged write is there, nothing
unacknowledged is half-there, and the SQLite file passes integrity_check.
Prints TAP."""
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

BIN = os.environ["OPENSHELL_BIN"]
T = tempfile.mkdtemp(prefix="openshell-gw-crash.")
STATE = os.path.join(T, "state")
SOCK = os.path.join(T, "gw.sock")
LOG = os.path.join(T, "gateway.log")
SB = "/v1/workspaces/default/sandboxes"
n = 0
failed = 0
gw = None


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


def start():
    global gw
    lnk = os.path.join(T, "openshell-gateway")
    if not os.path.exists(lnk):
        os.symlink(BIN, lnk)
    log = open(LOG, "a")
    gw = subprocess.Popen([lnk, "--state-dir", STATE, "--socket", SOCK, "--listen", "none",
                           "--compute-driver", "none",
                           "--log-format", "text"],
                          stdout=log, stderr=log)
    for _ in range(250):
        if os.path.exists(SOCK) and curl("GET", "/readyz")[0] == 200:
            return True
        if gw.poll() is not None:
            return False
        time.sleep(0.02)
    return False


def curl(method, path, body=None, headers=()):
    cmd = ["curl", "-sS", "--http2-prior-knowledge", "--unix-socket", SOCK, "-X", method,
           "--max-time", "5", "-w", "\n%{http_code}"]
    for h in headers:
        cmd += ["-H", h]
    if body is not None:
        cmd += ["-H", "content-type: application/json", "--data-binary", body]
    p = subprocess.run(cmd + ["http://localhost" + path], capture_output=True)
    out = p.stdout.decode(errors="replace")
    text, _, code = out.rpartition("\n")
    try:
        return int(code), text
    except ValueError:
        return 0, out


class Writer(threading.Thread):
    """Creates w<k>-<i> records; patches every other one with If-Match 1
    and deletes every third; remembers what was acknowledged."""

    def __init__(self, k):
        super().__init__(daemon=True)
        self.k = k
        self.created = {}   # name -> labels acknowledged last
        self.deleted = set()
        self.delete_sent = set()  # a DELETE went out (acknowledged or not)
        self.stop = False

    def run(self):
        i = 0
        while not self.stop:
            name = "w%d-%d" % (self.k, i)
            i += 1
            code, _ = curl("POST", SB, json.dumps({"name": name, "labels": {"gen": "1"},
                                                   "spec": {"command": ["/bin/true"]}}))
            if code != 201:
                continue
            self.created[name] = "1"
            if i % 2 == 0:
                code, _ = curl("PATCH", SB + "/" + name, '{"labels":{"gen":"2"}}',
                               headers=['if-match: "1"'])
                if code == 200:
                    self.created[name] = "2"
            if i % 3 == 0:
                self.delete_sent.add(name)
                code, _ = curl("DELETE", SB + "/" + name)
                if code == 200:
                    self.deleted.add(name)


class PolicyWriter(threading.Thread):
    """Writes policy revisions to sandbox "pol"; remembers the highest
    revision acknowledged."""

    def __init__(self):
        super().__init__(daemon=True)
        self.acked = 0
        self.stop = False

    def run(self):
        while not self.stop:
            code, text = curl("PUT", SB + "/pol/policy",
                              json.dumps({"version": 1, "network_policies": {}}))
            if code == 200:
                self.acked = max(self.acked, json.loads(text)["version"])


def main():
    if not shutil.which("curl"):
        print("1..0 # SKIP curl not installed")
        return
    if not start():
        tap(False, "gateway starts", open(LOG).read())
        return
    code, _ = curl("POST", SB, '{"name":"pol"}')
    tap(code == 201, "sandbox for policy writes")
    pw = PolicyWriter()
    writers = [Writer(k) for k in range(3)]
    for w in writers + [pw]:
        w.start()
    time.sleep(2.0)
    gw.send_signal(signal.SIGKILL)
    gw.wait()
    for w in writers + [pw]:
        w.stop = True
    for w in writers + [pw]:
        w.join(10)
    acked = sum(len(w.created) for w in writers)
    tap(acked >= 10, "clients had writes acknowledged before the kill (%d)" % acked)

    db = os.path.join(STATE, "openshell.db")
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    res = con.execute("PRAGMA integrity_check").fetchall()
    con.close()
    tap(res == [("ok",)], "database passes integrity_check after kill -9", res)

    if not start():
        tap(False, "gateway restarts after kill -9", open(LOG).read())
        return
    tap(True, "gateway restarts after kill -9")
    code, text = curl("GET", SB + "?limit=1000")
    items = json.loads(text).get("items", []) if code == 200 else []
    stored = {i["metadata"]["name"]: i for i in items}
    missing, wrong, resurrected, bad_rv = [], [], [], []
    for w in writers:
        for name, gen in w.created.items():
            if name in w.deleted:
                if name in stored:
                    resurrected.append(name)
                continue
            it = stored.get(name)
            if it is None:
                # A DELETE cut off by the kill may have committed without
                # its answer reaching us: absent is then fine too.
                if name not in w.delete_sent:
                    missing.append(name)
                continue
            # An acknowledged patch must be there; an unacknowledged one may
            # or may not have landed, but then fully (rv 2 with gen 2).
            lab = it["metadata"]["labels"].get("gen")
            rv = it["metadata"]["resource_version"]
            if gen == "2" and lab != "2":
                wrong.append(name)
            if (lab, rv) not in (("1", 1), ("2", 2)):
                bad_rv.append((name, lab, rv))
    tap(code == 200 and not missing, "every acknowledged create survived", missing)
    tap(not wrong, "every acknowledged patch survived", wrong)
    tap(not resurrected, "every acknowledged delete stayed deleted", resurrected)
    tap(not bad_rv, "labels and resource_version moved together", bad_rv)
    # Policy revisions and their sandbox moved together.
    code, text = curl("GET", SB + "/pol/policy/revisions")
    revs = json.loads(text).get("items", []) if code == 200 else []
    code2, text2 = curl("GET", SB + "/pol")
    sbj = json.loads(text2) if code2 == 200 else {}
    latest = sbj.get("status", {}).get("policy", {})
    versions = sorted(r["version"] for r in revs)
    statuses = [r["status"] for r in sorted(revs, key=lambda r: r["version"])]
    tap(pw.acked > 0 and len(revs) >= pw.acked,
        "every acknowledged policy revision survived (%d acked, %d stored)" % (pw.acked,
                                                                             len(revs)))
    tap(versions == list(range(1, len(revs) + 1)), "revision numbers are 1..N without gaps",
        versions)
    tap(latest.get("latest_version") == len(revs) and
        sbj["metadata"]["resource_version"] == len(revs) + 1,
        "the sandbox names the last stored revision (same transaction)", (latest, len(revs)))
    tap(statuses[:-1] == ["superseded"] * (len(revs) - 1) and statuses[-1:] == ["pending"],
        "only the latest revision is pending", statuses)
    # The restarted gateway takes writes again.
    code, _ = curl("POST", SB, '{"name":"after-crash"}')
    tap(code == 201, "writes work after the restart", code)
    gw.send_signal(signal.SIGTERM)
    tap(gw.wait(timeout=10) == 0, "clean exit")


try:
    main()
except Exception:
    import traceback
    tap(False, "test raised", traceback.format_exc())
finally:
    if gw and gw.poll() is None:
        gw.kill()
        gw.wait()
    if failed and os.path.exists(LOG):
        for line in open(LOG).read().splitlines()[-30:]:
            print("# " + line)
    shutil.rmtree(T, ignore_errors=True)
print("1..%d" % n)
sys.exit(1 if failed else 0)
