#!/usr/bin/python3
"""run_tty.py: `openshell run --tty` gives the agent a real pseudo-terminal.

Drives `openshell run --tty -- bash` from a pty of our own (as a user's
terminal would): the agent sees a tty with our window size, job control
works, a window-size change reaches it, Ctrl-C interrupts the foreground
job inside (not the sandbox), and exit ends the run with the shell's status.
Also runs two sandboxes at once to show runs do not interfere.
"""
import fcntl
import os
import pty
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import termios
import time

BIN = os.environ["OPENSHELL_BIN"]
results = []


def tap(ok, name, diag=""):
    results.append((ok, name, diag))


def skip(name, why):
    results.append((None, name, why))


def finish():
    for i, (ok, name, diag) in enumerate(results, 1):
        if ok is None:
            print(f"ok {i} - {name} # SKIP {diag}")
        else:
            print(f"{'ok' if ok else 'not ok'} {i} - {name}")
            if not ok and diag:
                for line in diag.splitlines():
                    print(f"# {line}")
    print(f"1..{len(results)}")
    sys.exit(0)


class Term:
    """A child process on a pty we hold the master of."""

    def __init__(self, argv, cwd, rows=30, cols=100):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.chdir(cwd)
            os.execv(argv[0], argv)
        self.set_size(rows, cols)
        self.buf = b""

    def set_size(self, rows, cols):
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def send(self, s):
        os.write(self.fd, s.encode() if isinstance(s, str) else s)

    def expect(self, needle, timeout=10.0):
        end = time.time() + timeout
        while needle.encode() not in self.buf:
            left = end - time.time()
            if left <= 0:
                return False
            r, _, _ = select.select([self.fd], [], [], left)
            if r:
                try:
                    data = os.read(self.fd, 4096)
                except OSError:
                    return needle.encode() in self.buf
                if not data:
                    break
                self.buf += data
        return needle.encode() in self.buf

    def wait(self, timeout=10.0):
        end = time.time() + timeout
        while time.time() < end:
            try:
                r, _, _ = select.select([self.fd], [], [], 0.1)
                if r:
                    self.buf += os.read(self.fd, 4096)
            except OSError:
                pass
            pid, st = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(st)
        os.kill(self.pid, 9)
        os.waitpid(self.pid, 0)
        return None


def main():
    if os.geteuid() != 0:
        skip("openshell run --tty", "needs root (CI runs as root)")
        finish()
    if not shutil.which("bash"):
        skip("openshell run --tty", "bash not installed")
        finish()
    work = tempfile.mkdtemp(prefix="openshell-tty.")
    os.chmod(work, 0o777)
    try:
        t = Term([BIN, "run", "--tty", "--", "bash", "--norc", "--noprofile", "-i"], work, 30, 100)
        # Type only once bash is reading (it drops earlier typeahead); the
        # quotes keep the echoed command line from matching the prompt.
        started = t.expect("$ ")
        t.send("PS1='P''$ '\n")
        tap(started and t.expect("P$ "), "an interactive bash starts",
            t.buf.decode(errors="replace"))
        t.send("tty; stty size; echo ok-$((6*7))\n")
        ok = t.expect("ok-42")
        out = t.buf.decode(errors="replace")
        tap(ok and "/dev/pts/" in out, "the agent has a pty of its own", out)
        tap("30 100" in out, "with the user's window size", out)
        t.buf = b""
        t.set_size(40, 120)
        # SIGWINCH reaches openshell run, which resizes the agent's pty.
        os.kill(t.pid, 28)
        time.sleep(0.3)
        t.send("stty size; echo sz-$((1+1))\n")
        t.expect("sz-2")
        tap("40 120" in t.buf.decode(errors="replace"), "a window size change reaches the agent",
            t.buf.decode(errors="replace"))
        t.buf = b""
        t.send("sleep 30\n")
        time.sleep(0.5)
        t.send("\x03")  # Ctrl-C: raw mode passes it to the pty, the pty interrupts sleep
        time.sleep(0.2)
        t.send("echo after-$?\n")
        tap(t.expect("after-130"), "Ctrl-C interrupts the foreground job inside",
            t.buf.decode(errors="replace"))
        t.buf = b""
        t.send("sleep 30 &\njobs; kill %1; wait; echo jobs-done\n")
        tap(t.expect("jobs-done"), "job control works", t.buf.decode(errors="replace"))
        t.send("exit 7\n")
        rc = t.wait()
        tap(rc == 7, "exit ends the run with the shell's status", f"status {rc}")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    # Two sandboxes at once: each sees only its own processes and /tmp.
    work = tempfile.mkdtemp(prefix="openshell-par.")
    os.chmod(work, 0o777)
    try:
        cmd = [BIN, "run", "--", "sh", "-c",
               "echo $$ >/tmp/me; sleep 0.5; ls /tmp; ls -d /proc/[0-9]* >/tmp/l; wc -l </tmp/l"]
        procs = [subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(2)]
        outs = [p.communicate(timeout=20) for p in procs]
        good = all(p.returncode == 0 for p in procs) and all(
            o[0].decode().split() == ["me", "2"] for o in outs)
        tap(good, "two concurrent sandboxes do not see each other",
            repr([(p.returncode, o) for p, o in zip(procs, outs)]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    finish()


main()
