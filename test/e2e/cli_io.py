#!/usr/bin/python3
"""E2E: the CLI against real sandboxes (local compute driver, supervisors
connected to the gateway): exec (exit status, stdout/stderr, stdin both
ways, signals, timeout), connect through tmux (pty, resize, exit 3),
upload/download (files, trees, symlinks, a large file, cp-style placement,
failures and Ctrl-C leaving nothing half-written), logs, policy set --wait
and update, and create attaching (--no-keep, --detach). Prints TAP; skips
when sandboxes cannot run here (not root) or supervisors do not connect."""
import hashlib
import os
import select
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cli_lib import BIN, Cli  # noqa: E402

cli = Cli("openshell-cli-io.", driver="local")
T, osh, tap, show, jparse = cli.T, cli.osh, cli.tap, cli.show, cli.jparse


def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def tmux_available():
    return shutil.which("tmux") is not None


class Tmux:
    """A private tmux server running one command in a WxH window."""

    count = 0

    def __init__(self, cmd, w=100, h=30):
        # One server per session: a server being killed never takes the next.
        Tmux.count += 1
        self.sock = "oscli%d-%d" % (os.getpid(), Tmux.count)
        envs = " ".join("%s=%s" % (k, cli.ENV[k]) for k in
                        ("HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "NO_COLOR"))
        self.run("new-session", "-d", "-x", str(w), "-y", str(h),
                 "env %s TERM=xterm %s; echo EXIT=$?; sleep 60" % (envs, cmd))

    def run(self, *args):
        return subprocess.run(["tmux", "-L", self.sock, "-f", "/dev/null"] + list(args),
                              capture_output=True, text=True, timeout=10)

    def keys(self, text):
        self.run("send-keys", "-l", text)
        self.run("send-keys", "Enter")

    def screen(self):
        return self.run("capture-pane", "-p").stdout

    def wait_for(self, what, secs=15):
        end = time.time() + secs
        while time.time() < end:
            s = self.screen()
            if what in s:
                return s
            time.sleep(0.1)
        return self.screen()

    def resize(self, w, h):
        self.run("resize-window", "-x", str(w), "-y", str(h))

    def kill(self):
        self.run("kill-server")


def setup():
    r = osh("gateway", "start")
    tap(r.returncode == 0, "gateway start --compute-driver local (TLS on a port of our own)",
        show(r))
    r = osh("sandbox", "create", "--name", "io", "--detach")
    if r.returncode != 0:
        tap(False, "sandbox create --detach", show(r))
        return False
    r = osh("sandbox", "exec", "io", "--", "/bin/true", timeout=30)
    if r.returncode == 1 and "no connected supervisor" in r.stderr:
        cli.skip("sandboxes over the gateway", "supervisors do not connect to this gateway")
        return False
    tap(r.returncode == 0, "sandbox create --detach, then exec /bin/true", show(r))
    return r.returncode == 0


def exec_tests():
    r = osh("sandbox", "exec", "io", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    tap(r.returncode == 3 and r.stdout == "out\n" and r.stderr == "err\n",
        "exec: stdout and stderr apart, exit status 3", show(r))
    r = osh("sandbox", "exec", "io", "--", "sh", "-c", "kill -9 $$")
    tap(r.returncode == 137, "exec: killed by SIGKILL is 137", show(r))
    r = osh("sandbox", "exec", "io", "--", "/no/such/cmd")
    tap(r.returncode in (126, 127) or (r.returncode == 1 and r.stderr),
        "exec: a missing command fails with a reason", show(r))
    data = os.urandom(3 * 1024 * 1024)
    r = osh("sandbox", "exec", "io", "--", "sha256sum", stdin=data, binary=True, timeout=60)
    tap(r.returncode == 0 and r.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest(),
        "exec: 3 MiB of stdin arrive intact", show(r))
    r = osh("sandbox", "exec", "io", "--", "sh", "-c", "head -c 5000000 /dev/zero",
            binary=True, timeout=60)
    tap(r.returncode == 0 and len(r.stdout) == 5000000 and r.stdout.count(b"\0") == 5000000,
        "exec: 5 MB of stdout arrive intact", "rc=%d len=%d" % (r.returncode, len(r.stdout)))
    r = osh("sandbox", "exec", "io", "--env", "GREETING=hi there", "--workdir", "/tmp", "--",
            "sh", "-c", 'echo "$GREETING"; pwd')
    tap(r.returncode == 0 and r.stdout == "hi there\n/tmp\n", "exec --env --workdir", show(r))
    t0 = time.time()
    r = osh("sandbox", "exec", "io", "--timeout", "1", "--", "sleep", "30")
    tap(r.returncode == 124 and "timed out" in r.stderr and time.time() - t0 < 15,
        "exec --timeout: 124", show(r))
    r = osh("sandbox", "exec", "--", "echo", "again")
    tap(r.returncode == 0 and r.stdout == "again\n" and "Using sandbox 'io' (last used)"
        in r.stderr, "exec without NAME: the last used sandbox", show(r))
    r = osh("sandbox", "exec", "io", "-i", "--", "cat", stdin="typed\n")
    tap(r.returncode == 0 and r.stdout == "typed\n", "exec -i forwards stdin", show(r))


def connect_tests():
    if not tmux_available():
        cli.skip("sandbox connect through tmux", "tmux not installed")
        return
    tm = Tmux("%s sandbox connect io" % BIN)
    try:
        s = tm.wait_for("$ ")
        tm.keys("stty size")
        s = tm.wait_for("30 100")
        tap("30 100" in s, "connect: a pty of the window's size", s)
        tm.resize(120, 40)
        time.sleep(0.5)
        tm.keys("stty size")
        s = tm.wait_for("40 120")
        tap("40 120" in s, "connect: a resize reaches the sandbox (SIGWINCH -> RESIZE)", s)
        tm.keys("tty; exit 3")
        s = tm.wait_for("EXIT=")
        tap("EXIT=3" in s and "/dev/" in s, "connect: exit 3 gives status 3", s)
        # the local terminal is back to cooked mode
        tm.keys("stty -a | grep -o -- '-icanon\\|icanon' | head -1")
    finally:
        tm.kill()
    tm = Tmux("%s sandbox exec -t io -- sh -c 'stty size; printf ready:; read x; echo got:$x; "
              "exit 4'" % BIN, w=90, h=25)
    try:
        s = tm.wait_for("ready:")
        tm.keys("line")
        s = tm.wait_for("EXIT=")
        tap("25 90" in s and "got:line" in s and "EXIT=4" in s,
            "exec -t: pty size, typed input, exit status", s)
    finally:
        tm.kill()


def file_tests():
    src = T + "/tree"
    os.makedirs(src + "/sub/deep")
    with open(src + "/a.txt", "w") as f:
        f.write("alpha\n")
    with open(src + "/sub/deep/b.bin", "wb") as f:
        f.write(os.urandom(200000))
    open(src + "/empty", "w").close()
    os.symlink("a.txt", src + "/link")
    os.chmod(src + "/a.txt", 0o640)
    r = osh("sandbox", "upload", "io", src, "/tmp/up")
    r2 = osh("sandbox", "exec", "io", "--", "sh", "-c",
             "cat /tmp/up/tree/a.txt; readlink /tmp/up/tree/link; "
             "sha256sum /tmp/up/tree/sub/deep/b.bin; stat -c %a /tmp/up/tree/a.txt; "
             "test -f /tmp/up/tree/empty && echo empty-ok")
    tap(r.returncode == 0 and "Upload complete" in r.stderr
        and r2.stdout.split("\n")[:2] == ["alpha", "a.txt"]
        and sha(src + "/sub/deep/b.bin") in r2.stdout and "640" in r2.stdout
        and "empty-ok" in r2.stdout,
        "upload of a tree: contents, symlink, mode, empty file (into a new directory)",
        show(r) + show(r2))
    out = T + "/out"
    os.mkdir(out)
    r = osh("sandbox", "download", "io", "/tmp/up/tree", out)
    tap(r.returncode == 0 and os.readlink(out + "/tree/link") == "a.txt"
        and sha(out + "/tree/sub/deep/b.bin") == sha(src + "/sub/deep/b.bin")
        and open(out + "/tree/a.txt").read() == "alpha\n"
        and not [f for f in os.listdir(out) if f.startswith(".openshell")],
        "download of a tree into a directory", show(r))
    r = osh("sandbox", "download", "io", "/tmp/up/tree/a.txt", out + "/renamed.txt")
    tap(r.returncode == 0 and open(out + "/renamed.txt").read() == "alpha\n",
        "download of a file to a new name (cp-style)", show(r))
    r = osh("sandbox", "download", "io", "/tmp/up/tree", out)
    tap(r.returncode == 1 and "cannot place" in r.stderr
        and not [f for f in os.listdir(out) if f.startswith(".openshell")],
        "download onto an existing non-empty directory: exit 1, nothing half-written",
        show(r))
    r = osh("sandbox", "download", "io", "/tmp/no-such-thing", out + "/x")
    tap(r.returncode == 1 and not os.path.exists(out + "/x")
        and not [f for f in os.listdir(out) if f.startswith(".openshell")],
        "download of a missing path: exit 1, nothing written", show(r))
    r = osh("sandbox", "upload", "io", src + "/a.txt", "/proc/sys")
    tap(r.returncode != 0 and r.stderr.strip() != "", "upload to a place the sandbox cannot "
        "write: refused with a reason", show(r))
    # A large file both ways, checked by hash.
    big = T + "/big.bin"
    with open(big, "wb") as f:
        for _ in range(64):
            f.write(os.urandom(1 << 20))
    r = osh("sandbox", "upload", "io", big, "/tmp", timeout=120)
    r2 = osh("sandbox", "exec", "io", "--", "sha256sum", "/tmp/big.bin", timeout=60)
    tap(r.returncode == 0 and sha(big) in r2.stdout, "upload of 64 MiB, hash equal",
        show(r) + show(r2))
    os.mkdir(T + "/dl")
    r = osh("sandbox", "download", "io", "/tmp/big.bin", T + "/dl", timeout=120)
    tap(r.returncode == 0 and sha(T + "/dl/big.bin") == sha(big),
        "download of 64 MiB, hash equal", show(r))
    # Interrupted: Ctrl-C in the middle of a download leaves nothing behind.
    osh("sandbox", "exec", "io", "--", "sh", "-c",
        "head -c 1500000000 /dev/zero > /tmp/huge.bin", timeout=120)
    os.mkdir(T + "/int")
    p = subprocess.Popen([BIN, "sandbox", "download", "io", "/tmp/huge.bin", T + "/int"],
                         env=cli.env(), cwd=T, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    try:
        out_, err = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        out_, err = p.communicate()
    tap(p.returncode == 130 and "interrupted" in err and os.listdir(T + "/int") == [],
        "download interrupted by Ctrl-C: exit 130, nothing half-written",
        "rc=%s err=%s left=%s" % (p.returncode, err, os.listdir(T + "/int")))
    osh("sandbox", "exec", "io", "--", "rm", "-f", "/tmp/huge.bin", "/tmp/big.bin")


def tls_tests():
    """The same verbs over HTTP/2 + mTLS instead of the unix socket."""
    ep = "https://127.0.0.1:%s" % cli.ENV["OPENSHELL_SERVER_PORT"]
    r = osh("gateway", "add", ep, "--name", "tls")
    osh("gateway", "select", "openshell")
    if r.returncode != 0:
        tap(False, "gateway add https://127.0.0.1:PORT", show(r))
        return
    data = os.urandom(2 * 1024 * 1024)
    r = osh("-g", "tls", "sandbox", "exec", "io", "--", "sha256sum", stdin=data, binary=True)
    tap(r.returncode == 0 and r.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest(),
        "exec over mTLS: 2 MiB of stdin intact", show(r))
    r = osh("-g", "tls", "sandbox", "exec", "io", "--", "sh", "-c", "exit 7")
    tap(r.returncode == 7, "exec over mTLS: exit status", show(r))
    with open(T + "/tls.bin", "wb") as f:
        f.write(os.urandom(8 * 1024 * 1024))
    r = osh("-g", "tls", "sandbox", "upload", "io", T + "/tls.bin", "/tmp/tls")
    os.mkdir(T + "/tlsdl")
    r2 = osh("-g", "tls", "sandbox", "download", "io", "/tmp/tls/tls.bin", T + "/tlsdl")
    tap(r.returncode == 0 and r2.returncode == 0
        and sha(T + "/tlsdl/tls.bin") == sha(T + "/tls.bin"),
        "upload and download over mTLS: 8 MiB round trip", show(r) + show(r2))
    r = osh("-g", "tls", "sandbox", "logs", "io", "--tail", "3", "-o", "json")
    tap(r.returncode == 0 and len(r.stdout.splitlines()) == 3, "logs over mTLS", show(r))


def log_tests():
    r = osh("sandbox", "logs", "io", "--tail", "50")
    tap(r.returncode == 0 and "[proxy" in r.stdout, "logs: the proxy's lines", show(r))
    r = osh("sandbox", "logs", "io", "--tail", "50", "-o", "json")
    lines = [jparse(x) for x in r.stdout.splitlines()]
    tap(r.returncode == 0 and lines and all(isinstance(x, dict) and x.get("type") == "log"
                                            and "ts_ms" in x and "level" in x for x in lines),
        "logs -o json: one JSON object per line", show(r))
    r = osh("sandbox", "logs", "io", "--source", "proxy", "-o", "json")
    lines = [jparse(x) for x in r.stdout.splitlines()]
    tap(r.returncode == 0 and lines and all(x.get("source") == "proxy" for x in lines),
        "logs --source proxy", show(r))
    r = osh("sandbox", "logs", "io", "--tail", "2", "-o", "json")
    tap(r.returncode == 0 and len(r.stdout.splitlines()) == 2, "logs --tail 2", show(r))
    r = osh("logs", "io", "-n", "1", "-o", "json")
    tap(r.returncode == 0 and len(r.stdout.splitlines()) == 1,
        "openshell logs NAME -n 1 (the reference's top-level form)", show(r))
    r = osh("logs", "io", "--since", "1h", "-o", "json")
    r2 = osh("logs", "io", "--since", "1s", "-o", "json")
    tap(r.returncode == 0 and len(r.stdout.splitlines()) >= 2 and r2.returncode == 0
        and len(r2.stdout.splitlines()) < len(r.stdout.splitlines()),
        "logs --since keeps only recent lines", show(r) + show(r2))
    p = subprocess.Popen([BIN, "sandbox", "logs", "io", "--follow", "--tail", "0"],
                         env=cli.env(), cwd=T, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    time.sleep(0.5)
    good = T + "/good.yaml"
    with open(good, "w") as f:
        f.write(osh("policy", "default").stdout + "# follow\n")
    osh("policy", "set", "io", "--policy", good, "--wait")
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    out_, err = p.communicate(timeout=10)
    tap(out_.strip() != "", "logs --follow streams new lines as they come", out_ + err)


def policy_tests():
    good = T + "/p1.yaml"
    with open(good, "w") as f:
        f.write(osh("policy", "default").stdout)
    r = osh("policy", "set", "io", "--policy", good, "--wait", "--timeout", "20")
    tap(r.returncode == 0 and "loaded (active version:" in r.stderr,
        "policy set --wait: loaded, exit 0", show(r))
    r = osh("policy", "update", "io", "--add-endpoint", "api.github.com:443:read-only:rest",
            "--binary", "/usr/bin/curl", "--dry-run")
    tap(r.returncode == 0 and "allow_api_github_com_443" in r.stdout
        and "api.github.com" in r.stdout and "dry run" in r.stderr,
        "policy update --dry-run prints the merged YAML", show(r))
    before = jparse(osh("policy", "list", "io", "-o", "json").stdout) or []
    r = osh("policy", "update", "io", "--add-endpoint", "api.github.com:443:read-only:rest",
            "--binary", "/usr/bin/curl", "--add-deny", "api.github.com:443:POST:/repos/**",
            "--wait", "--timeout", "20")
    after = jparse(osh("policy", "list", "io", "-o", "json").stdout) or []
    tap(r.returncode == 0 and "loaded" in r.stderr and len(after) == len(before) + 1,
        "policy update: one new revision, loaded", show(r))
    r = osh("policy", "get", "io", "--full")
    tap(r.returncode == 0 and "allow_api_github_com_443" in r.stdout and "/repos/**" in r.stdout,
        "policy get --full shows the merged rule", show(r))
    r = osh("policy", "update", "io", "--remove-rule", "allow_api_github_com_443", "--wait",
            "--timeout", "20")
    r2 = osh("policy", "get", "io", "--full")
    tap(r.returncode == 0 and "allow_api_github_com_443" not in r2.stdout,
        "policy update --remove-rule", show(r) + show(r2))
    r = osh("policy", "update", "io", "--remove-endpoint", "nothing.example.com:443")
    tap(r.returncode in (0, 1) and r.stderr.strip() != "",
        "policy update removing what is not there: a warning or an error", show(r))


def create_tests():
    r = osh("sandbox", "create", "--no-keep", "--", "sh", "-c", "echo hi; exit 5", timeout=60)
    names = osh("sandbox", "list", "--names").stdout.split()
    tap(r.returncode == 5 and r.stdout == "hi\n" and "Sandbox ready" in r.stderr
        and names == ["io"], "create --no-keep -- CMD: output, status 5, sandbox gone",
        show(r) + repr(names))
    r = osh("sandbox", "create", "--no-keep", "--", "cat", stdin="piped in\n", timeout=60)
    tap(r.returncode == 0 and r.stdout == "piped in\n", "create --no-keep -- cat: stdin flows",
        show(r))
    with open(T + "/note.txt", "w") as f:
        f.write("uploaded first\n")
    r = osh("sandbox", "create", "--no-keep", "--upload", T + "/note.txt:/tmp/in", "--", "cat",
            "/tmp/in/note.txt", timeout=60)
    tap(r.returncode == 0 and r.stdout == "uploaded first\n",
        "create --upload LOCAL:DEST lands before the command runs", show(r))
    p = subprocess.Popen([BIN, "sandbox", "create", "--name", "intr", "--no-keep", "--",
                          "sh", "-c", "echo started; sleep 60"], env=cli.env(), cwd=T,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Ctrl-C once the command runs (its first line is out).
    ready, _, _ = select.select([p.stdout], [], [], 60)
    first = p.stdout.readline() if ready else ""
    p.send_signal(signal.SIGINT)
    try:
        pout, perr = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        pout, perr = p.communicate()
    r2 = osh("sandbox", "get", "intr")
    pout = first + pout
    tap(p.returncode == 130 and "started" in pout and "interrupted" in perr
        and "Deleted sandbox intr" in perr and r2.returncode == 1,
        "create --no-keep interrupted by Ctrl-C: exit 130, the sandbox is deleted",
        "rc=%s out=%s err=%s" % (p.returncode, pout, perr) + show(r2))
    # Ctrl-C while it provisions: --no-keep deletes it all the same.
    p = subprocess.Popen([BIN, "sandbox", "create", "--name", "intr2", "--no-keep", "--",
                          "true"], env=cli.env({"OPENSHELL_COMPUTE_DRIVER": None}), cwd=T,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(300):
        if osh("sandbox", "get", "intr2").returncode == 0:
            break
        time.sleep(0.01)
    p.send_signal(signal.SIGINT)
    pout, perr = p.communicate(timeout=30)
    r2 = osh("sandbox", "get", "intr2")
    tap(p.returncode in (0, 130) and r2.returncode == 1,
        "create --no-keep interrupted at any point: the sandbox does not stay",
        "rc=%s err=%s" % (p.returncode, perr) + show(r2))
    r = osh("sandbox", "create", "--name", "kept", "--", "sh", "-c", "exit 0", timeout=60)
    r2 = osh("sandbox", "get", "-o", "json")
    tap(r.returncode == 0 and (jparse(r2.stdout) or {}).get("name") == "kept",
        "create -- CMD keeps the sandbox and makes it the last used", show(r) + show(r2))
    r = osh("sandbox", "create", "--name", "det", "--detach", "--", "sleep", "300", timeout=60)
    r2 = osh("sandbox", "get", "det", "-o", "json")
    tap(r.returncode == 0 and (jparse(r2.stdout) or {}).get("command") == ["sleep", "300"],
        "create --detach -- CMD: the main process, not attached", show(r) + show(r2))
    osh("sandbox", "delete", "kept", "det")
    if tmux_available():
        tm = Tmux("%s sandbox create --no-keep" % BIN)
        try:
            s = tm.wait_for("$ ", 30)
            tm.keys("exit 4")
            s = tm.wait_for("EXIT=", 20)
            tap("Sandbox ready" in s and "EXIT=4" in s and "Deleted sandbox" in s,
                "create on a terminal attaches a login shell; --no-keep deletes after", s)
        finally:
            tm.kill()
    r = osh("sandbox", "delete", "io")
    r2 = osh("sandbox", "exec", "io", "--", "true")
    tap(r.returncode == 0 and r2.returncode == 1 and "not found" in r2.stderr,
        "exec after delete: unknown sandbox", show(r2))


def gateway_pid():
    try:
        with open(T + "/state/openshell/gateway/gateway.lock") as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def lost_tests():
    """The gateway killed in the middle: clear errors, nothing half-written."""
    r = osh("sandbox", "create", "--name", "lost", "--detach")
    osh("sandbox", "exec", "lost", "--", "sh", "-c",
        "head -c 1500000000 /dev/zero > /tmp/huge.bin", timeout=120)
    os.mkdir(T + "/lost")
    p = subprocess.Popen([BIN, "sandbox", "download", "lost", "/tmp/huge.bin", T + "/lost"],
                         env=cli.env(), cwd=T, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    q = subprocess.Popen([BIN, "sandbox", "exec", "lost", "--", "sh", "-c",
                          "while :; do echo tick; sleep 0.1; done"],
                         env=cli.env(), cwd=T, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    time.sleep(1.0)
    pid = gateway_pid()
    if pid > 0:
        os.kill(pid, signal.SIGKILL)
    try:
        _, err = p.communicate(timeout=30)
        qout, qerr = q.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        q.kill()
        tap(False, "the gateway killed mid-transfer: the CLI does not hang")
        return
    tap(pid > 0 and p.returncode == 3 and "cut off" in err and os.listdir(T + "/lost") == [],
        "gateway killed during a download: exit 3, nothing half-written",
        "rc=%s err=%s left=%s" % (p.returncode, err, os.listdir(T + "/lost")))
    tap(q.returncode == 255 and "tick" in qout and "lost" in qerr,
        "gateway killed during an exec: exit 255, the connection was lost",
        "rc=%s err=%s" % (q.returncode, qerr))


try:
    if os.geteuid() != 0:
        cli.skip("sandboxes over the gateway", "needs root for the local driver")
    elif setup():
        exec_tests()
        connect_tests()
        file_tests()
        tls_tests()
        log_tests()
        policy_tests()
        create_tests()
        lost_tests()
finally:
    cli.finish()
