"""Shared scaffolding for the CLI's python end-to-end tests (imported, not
run): a private HOME and XDG directories under a temporary directory, the
openshell binary run with them, TAP output, and a teardown that stops every
gateway started under that directory (even on failure)."""
import glob
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


def alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class Cli:
    def __init__(self, prefix, driver=None):
        self.T = tempfile.mkdtemp(prefix=prefix)
        os.chmod(self.T, 0o755)
        env = dict(os.environ)
        for k in list(env):
            if k.startswith("OPENSHELL_") and k not in ("OPENSHELL_BIN", "OPENSHELL_BUILD"):
                del env[k]
        env.update(HOME=self.T, XDG_CONFIG_HOME=self.T + "/cfg",
                   XDG_STATE_HOME=self.T + "/state", NO_COLOR="1")
        env.pop("XDG_RUNTIME_DIR", None)
        env["OPENSHELL_SERVER_PORT"] = str(e2elib.free_port())
        if driver:
            env["OPENSHELL_COMPUTE_DRIVER"] = driver
        self.ENV = env
        self.n = 0
        self.failed = 0

    def tap(self, ok, name, diag=""):
        self.n += 1
        if not ok:
            self.failed += 1
        print(("ok" if ok else "not ok") + " %d - %s" % (self.n, name))
        if not ok and diag:
            for line in str(diag).splitlines()[:40]:
                print("# " + line)
        sys.stdout.flush()

    def skip(self, name, why):
        self.n += 1
        print("ok %d - %s # SKIP %s" % (self.n, name, why))
        sys.stdout.flush()

    def env(self, extra=None):
        e = dict(self.ENV)
        for k, v in (extra or {}).items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = v
        return e

    def osh(self, *args, env=None, stdin=None, timeout=60, cwd=None, binary=False):
        return subprocess.run([BIN] + list(args), capture_output=True, text=not binary,
                              env=self.env(env), timeout=timeout, input=stdin,
                              cwd=cwd or self.T)

    @staticmethod
    def show(r):
        out, err = r.stdout, r.stderr
        if isinstance(out, bytes):
            out = out.decode("utf-8", "replace")
            err = err.decode("utf-8", "replace")
        return "rc=%d\nstdout: %s\nstderr: %s" % (r.returncode, out[-1500:], err[-1500:])

    @staticmethod
    def jparse(s):
        try:
            return json.loads(s)
        except ValueError:
            return None

    def finish(self):
        """Stop our gateways (and what they started), remove the directory,
        print the plan, exit."""
        for lock in glob.glob(self.T + "/state/openshell/gateway*/gateway.lock"):
            try:
                with open(lock) as f:
                    p = int(f.read().strip() or 0)
            except (OSError, ValueError):
                continue
            try:
                with open("/proc/%d/cmdline" % p, "rb") as f:
                    mine = self.T.encode() in f.read()
            except OSError:
                mine = False
            if p <= 0 or not alive(p) or not mine:
                continue
            os.kill(p, signal.SIGTERM)
            for _ in range(100):
                if not alive(p):
                    break
                time.sleep(0.05)
            if alive(p):
                os.kill(p, signal.SIGKILL)
        # Sandboxes of the local driver live in their own sessions: any
        # process still running from our state directory goes too.
        for d in glob.glob("/proc/[0-9]*"):
            try:
                with open(d + "/cmdline", "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if self.T.encode() in cmd and b"openshell" in cmd:
                try:
                    os.kill(int(d[6:]), signal.SIGKILL)
                except OSError:
                    pass
        shutil.rmtree(self.T, ignore_errors=True)
        print("1..%d" % self.n)
        sys.exit(1 if self.failed else 0)
