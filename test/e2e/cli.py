#!/usr/bin/python3
"""E2E: the openshell CLI's gateway and sandbox commands through the real
binary against a real local gateway it starts itself. Each run has its own
HOME and XDG directories under a temporary directory and stops its gateway
at the end, even on failure. Prints TAP."""
import glob
import json
import os
import pty
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import e2elib

BIN = os.environ["OPENSHELL_BIN"]
T = tempfile.mkdtemp(prefix="openshell-cli-e2e.")
ENV = dict(os.environ)
for k in list(ENV):
    if k.startswith("OPENSHELL_") and k not in ("OPENSHELL_BIN", "OPENSHELL_BUILD"):
        del ENV[k]
ENV.update(HOME=T, XDG_CONFIG_HOME=T + "/cfg", XDG_STATE_HOME=T + "/state", NO_COLOR="1")
# Records only: this file tests the CLI's verbs and output, not sandboxes
# (test/e2e/cli_io.py runs real ones).
ENV["OPENSHELL_COMPUTE_DRIVER"] = "none"
ENV.pop("XDG_RUNTIME_DIR", None)
STATE = T + "/state/openshell/gateway"
tap = e2elib.Tap(diag_lines=30)


# The gateway's TLS listener on a port of our own: parallel tests never clash.
ENV["OPENSHELL_SERVER_PORT"] = str(e2elib.free_port())


def osh(*args, env=None, stdin=None, timeout=30):
    e = dict(ENV)
    if env:
        for k, v in env.items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = v
    r = subprocess.run([BIN] + list(args), capture_output=True, text=True, env=e,
                       timeout=timeout, input=stdin, cwd=T)
    return r


def show(r):
    return "rc=%d\nstdout: %s\nstderr: %s" % (r.returncode, r.stdout[-1500:], r.stderr[-1500:])


def jparse(s):
    try:
        return json.loads(s)
    except ValueError:
        return None


def gateway_pid():
    try:
        with open(STATE + "/gateway.lock") as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def alive(pid):
    """Running (a zombie waiting for an absent reaper counts as gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def on_tty(args, env):
    """Run the CLI on a pseudo-terminal; its output."""
    e = dict(ENV)
    e.update(env)
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(T)
        os.execve(BIN, [BIN] + args, e)
    out = b""
    deadline = time.time() + 10
    while time.time() < deadline:
        r, _, _ = select.select([fd], [], [], 0.5)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    os.waitpid(pid, 0)
    os.close(fd)
    return out.decode("utf-8", "replace")


def main():
    # No gateway anywhere.
    r = osh("status")
    tap(r.returncode == 0 and "No gateway configured." in r.stdout, "status without a gateway",
        show(r))
    r = osh("status", "-o", "json")
    tap(r.returncode == 0 and (jparse(r.stdout) or {}).get("status") == "not_configured",
        "status -o json without a gateway", show(r))
    r = osh("status", "-o", "yaml")
    tap(r.returncode == 0 and r.stdout == 'status: "not_configured"\n',
        "status -o yaml without a gateway", show(r))
    r = osh("sandbox", "delete", "x")
    tap(r.returncode == 3 and "no active gateway" in r.stderr and "hint: " in r.stderr,
        "no gateway reachable: exit 3, one line and a hint", show(r))

    # The first sandbox command starts the local gateway and says so.
    r = osh("sandbox", "list")
    tap(r.returncode == 0 and "starting the local one" in r.stderr
        and "No sandboxes found." in r.stdout, "first sandbox command starts the gateway",
        show(r))
    pid = gateway_pid()
    tap(pid > 0 and alive(pid), "the gateway daemon runs (pid %d)" % pid)
    r = osh("gateway", "list", "-o", "json")
    gws = jparse(r.stdout) or []
    tap(r.returncode == 0 and len(gws) == 1 and gws[0].get("name") == "openshell"
        and gws[0].get("active") is True and gws[0].get("type") == "local"
        and os.path.exists(gws[0].get("unix_socket", "/nonexistent")),
        "gateway list -o json: registered, active, local, socket", show(r))
    r = osh("gateway", "start")
    tap(r.returncode == 0 and "already running" in r.stderr and gateway_pid() == pid,
        "gateway start is idempotent", show(r))
    r = osh("status", "-o", "json")
    st = jparse(r.stdout) or {}
    tap(r.returncode == 0 and st.get("status") == "connected" and st.get("version")
        and st.get("pid") == pid and (st.get("authentication") or {}).get("status")
        == "authenticated", "status -o json: connected, authenticated, version, pid", show(r))
    r = osh("gateway", "info")
    tap(r.returncode == 0 and "Status:    Connected" in r.stdout and "API:       v1" in r.stdout,
        "gateway info", show(r))
    with open(T + "/cfg/openshell/active_gateway") as f:
        tap(f.read().strip() == "openshell", "active_gateway file written (XDG config)")

    # Sandboxes.
    r = osh("sandbox", "create", "--name", "alpha", "--label", "team=ml", "--env", "A=1",
            "-o", "json", "--detach", "--", "/bin/echo", "hi")
    sb = jparse(r.stdout) or {}
    tap(r.returncode == 0 and sb.get("name") == "alpha" and sb.get("labels") == {"team": "ml"}
        and sb.get("command") == ["/bin/echo", "hi"] and sb.get("workspace") == "default"
        and len(sb.get("id", "")) == 36 and "Created sandbox: alpha" in r.stderr
        and "structured output on stdout" in r.stderr,
        "sandbox create -o json", show(r))
    r = osh("sandbox", "create", "--name", "alpha")
    tap(r.returncode == 1 and "already exists" in r.stderr
        and "hint: delete it first with: openshell sandbox delete alpha" in r.stderr,
        "name clash: exit 1 with a hint", show(r))
    with open(T + "/bad.yaml", "w") as f:
        f.write("version: 1\nnetwork_policies:\n  x:\n    endpoints:\n      - host: a.com\n"
                "        port: notaport\n    binaries:\n      - path: /usr/bin/curl\n")
    r = osh("sandbox", "create", "--name", "beta", "--policy", "bad.yaml")
    tap(r.returncode == 1 and "bad.yaml:6:15:" in r.stderr and "policy validate" in r.stderr,
        "bad policy file: FILE:LINE:COL reaches the user", show(r))
    r = osh("sandbox", "get", "beta")
    tap(r.returncode == 1, "bad policy: nothing created", show(r))
    pol = osh("policy", "default").stdout
    with open(T + "/good.yaml", "w") as f:
        f.write(pol)
    r = osh("sandbox", "create", "--name", "gamma", "-o", "json",
            env={"OPENSHELL_SANDBOX_POLICY": T + "/good.yaml"})
    sb = jparse(r.stdout) or {}
    tap(r.returncode == 0 and sb.get("current_policy_version") == 0,
        "OPENSHELL_SANDBOX_POLICY: the sandbox's own policy, no revision yet", show(r))
    r = osh("sandbox", "list", "-o", "json")
    items = jparse(r.stdout)
    keys = {"id", "name", "workspace", "labels", "annotations", "resource_version", "created_at",
            "phase", "command", "current_policy_version"}
    tap(r.returncode == 0 and isinstance(items, list) and [i["name"] for i in items]
        == ["alpha", "gamma"] and all(keys <= set(i) for i in items),
        "sandbox list -o json: stable fields", show(r))
    r = osh("sandbox", "list")
    lines = r.stdout.splitlines()
    tap(r.returncode == 0 and lines[0].split() == ["NAME", "CREATED", "PHASE"]
        and lines[1].startswith("alpha ") and len(lines) == 3 and "\033[" not in r.stdout,
        "sandbox list table (no colour off a TTY)", show(r))
    r = osh("sandbox", "list", "--workspace", "nope")
    tap(r.returncode == 1 and "nope" in r.stderr and "hint:" in r.stderr,
        "unknown --workspace: exit 1 with a hint", show(r))
    r = osh("sandbox", "list", "-o", "json", env={"OPENSHELL_WORKSPACE": "nope"})
    tap(r.returncode == 1 and r.stdout == "", "OPENSHELL_WORKSPACE is honoured", show(r))
    r = osh("sandbox", "list", "--all-workspaces", "--names")
    r2 = osh("sandbox", "list", "--all-workspaces")
    tap(r.returncode == 0 and r.stdout == "default/alpha\ndefault/gamma\n"
        and r2.stdout.split("\n")[0].split() == ["WORKSPACE", "NAME", "CREATED", "PHASE"],
        "sandbox list --all-workspaces", show(r) + show(r2))
    r = osh("sandbox", "list", "--selector", "team=ml", "--names")
    tap(r.returncode == 0 and r.stdout == "alpha\n", "sandbox list --selector --names", show(r))
    r = osh("sandbox", "list", "--ids", "--limit", "1", "--offset", "1")
    tap(r.returncode == 0 and r.stdout.strip() == items[1]["id"] if items else False,
        "sandbox list --ids --limit --offset", show(r))
    r = osh("sandbox", "get", "gamma", "-o", "json")
    sb = jparse(r.stdout) or {}
    sp = sb.get("policy") if isinstance(sb.get("policy"), dict) else {}
    tap(r.returncode == 0 and sb.get("policy_source") == "spec" and sb.get("revision") == 0
        and sp.get("version") == 1 and "read_only" in sp.get("filesystem_policy", {})
        and sp.get("landlock", {}).get("compatibility") == "best_effort",
        "sandbox get -o json: the --policy file is the spec policy, as JSON", show(r))
    r = osh("sandbox", "get", "alpha", "-o", "json")
    sb = jparse(r.stdout) or {}
    tap(r.returncode == 0 and sb.get("policy_source") == "default" and sb.get("revision") == 0,
        "sandbox get -o json: no revision, the default policy", show(r))
    r = osh("sandbox", "get")
    tap(r.returncode == 0 and "Using sandbox 'gamma' (last used)" in r.stderr
        and "Name:             gamma" in r.stdout, "sandbox get defaults to the last used",
        show(r))
    r = osh("sandbox", "get", "nope", "-o", "json")
    tap(r.returncode == 1 and "sandbox 'nope' not found" in r.stderr and "hint:" in r.stderr
        and r.stdout == "", "unknown sandbox: exit 1, message, hint", show(r))
    r = osh("sandbox", "delete", "alpha", "nope")
    tap(r.returncode == 1 and "Deleted sandbox alpha" in r.stderr
        and "Sandbox nope not found" in r.stderr, "sandbox delete NAME...", show(r))
    r = osh("sandbox", "delete", "--all")
    r2 = osh("sandbox", "list", "-o", "json")
    tap(r.returncode == 0 and "Deleted sandbox gamma" in r.stderr and jparse(r2.stdout) == [],
        "sandbox delete --all", show(r) + show(r2))
    r = osh("sandbox", "create", "--name", "delta", "--from", "base", "--detach", "--",
            "/bin/true")
    tap(r.returncode == 0 and "[0.0s] Requesting sandbox..." in r.stderr
        and "Phase provisioning: NoComputeDriver" in r.stderr and "record only" in r.stderr
        and r.stdout == "", "sandbox create off a TTY: timestamped progress on stderr", show(r))
    r = osh("sandbox", "get", "delta", "-o", "json")
    sb = jparse(r.stdout) or {}
    tap(r.returncode == 0 and sb.get("command") == ["/bin/true"] and sb.get("image") == "base",
        "sandbox create --from: stored as the image", show(r))
    osh("sandbox", "delete", "delta")
    r = osh("sandbox", "get")
    tap(r.returncode == 2 and "no last used sandbox" in r.stderr,
        "deleting the last used sandbox forgets it", show(r))

    # Registrations and selection precedence.
    sock = gws[0]["unix_socket"] if gws else ""
    r = osh("gateway", "add", "unix://" + sock, "--name", "second")
    tap(r.returncode == 0 and "added and set as active" in r.stderr, "gateway add unix://",
        show(r))
    r = osh("gateway", "add", "unix://" + sock, "--name", "second")
    tap(r.returncode == 1 and "already registered" in r.stderr, "gateway add: name taken",
        show(r))
    r = osh("gateway", "add", "ftp://x")
    tap(r.returncode == 2 and "unsupported scheme" in r.stderr, "gateway add: bad scheme",
        show(r))
    r = osh("gateway", "add", "gw.example.com:8443")
    r2 = osh("sandbox", "list", "-g", "gw.example.com")
    tap(r.returncode == 0 and "Endpoint: https://gw.example.com:8443" in r.stderr
        and "Type:     remote" in r.stderr and r2.returncode == 3
        and "TLS CA is required" in r2.stderr and "hint: place the gateway's client bundle"
        in r2.stderr and "no client TLS bundle yet" in r.stderr,
        "gateway add HOST:PORT (https, named after the host); without its mTLS bundle: exit 3",
        show(r) + show(r2))
    osh("gateway", "remove", "gw.example.com")
    osh("gateway", "add", "unix://" + T + "/nothing.sock", "--name", "dead")
    r = osh("sandbox", "list", "-g", "dead")
    tap(r.returncode == 3 and "cannot reach gateway 'dead'" in r.stderr and "hint:" in r.stderr,
        "no gateway reachable at the selected socket: exit 3", show(r))
    r = osh("sandbox", "list", env={"OPENSHELL_GATEWAY": "dead"})
    tap(r.returncode == 3, "OPENSHELL_GATEWAY beats the active gateway", show(r))
    r = osh("sandbox", "list", "-g", "second", env={"OPENSHELL_GATEWAY": "dead"})
    tap(r.returncode == 0, "-g beats OPENSHELL_GATEWAY", show(r))
    r = osh("sandbox", "list", "-o", "json", env={"OPENSHELL_GATEWAY": "dead",
                                                  "OPENSHELL_GATEWAY_ENDPOINT": "unix://" + sock})
    tap(r.returncode == 0 and jparse(r.stdout) == [],
        "OPENSHELL_GATEWAY_ENDPOINT beats OPENSHELL_GATEWAY", show(r))
    os.rename(sock, sock + ".x")
    os.symlink(sock + ".x", T + "/alias.sock")
    r = osh("sandbox", "list", "--names", "--gateway-endpoint", "unix://" + T + "/alias.sock")
    os.unlink(T + "/alias.sock")
    os.rename(sock + ".x", sock)
    tap(r.returncode == 0 and r.stdout == "", "--gateway-endpoint: an unregistered endpoint",
        show(r))
    r = osh("sandbox", "list", "--gateway-endpoint", "unix://" + T + "/nothing.sock")
    tap(r.returncode == 3 and "cannot reach gateway" in r.stderr,
        "--gateway-endpoint unreachable: exit 3", show(r))
    r = osh("sandbox", "list", env={"OPENSHELL_GATEWAY": "ghost"})
    tap(r.returncode == 3 and "unknown gateway 'ghost'" in r.stderr,
        "unknown gateway name", show(r))
    # A gateway that accepts and never answers: the CLI gives up.
    hang = socket.socket(socket.AF_UNIX)
    hang.bind(T + "/hang.sock")
    hang.listen(4)
    osh("gateway", "add", "unix://" + T + "/hang.sock", "--name", "hang")
    t0 = time.time()
    r = osh("sandbox", "list", "-g", "hang", env={"OPENSHELL_REQUEST_TIMEOUT": "1"})
    tap(r.returncode == 3 and "did not answer in time" in r.stderr and time.time() - t0 < 10,
        "a gateway that never answers: exit 3 after the request timeout", show(r))
    hang.close()
    osh("gateway", "remove", "hang")
    r = osh("gateway", "select", "openshell")
    r2 = osh("gateway", "list", "--names")
    tap(r.returncode == 0 and "Active gateway set to 'openshell'" in r.stderr
        and r2.stdout == "dead\nopenshell\nsecond\n", "gateway select / list --names",
        show(r) + show(r2))
    r = osh("gateway", "remove", "dead")
    r2 = osh("gateway", "list", "-o", "json")
    tap(r.returncode == 0 and [g["name"] for g in jparse(r2.stdout) or []]
        == ["openshell", "second"], "gateway remove", show(r) + show(r2))
    out = on_tty(["gateway", "list"], {"NO_COLOR": "", "TERM": "xterm"})
    out2 = on_tty(["gateway", "list"], {"NO_COLOR": "1", "TERM": "xterm"})
    tap("\033[" in out and "\033[" not in out2, "colour on a TTY only, never with NO_COLOR",
        repr(out) + "\n" + repr(out2))

    # Help, completion, usage errors.
    for cmd in (["gateway"], ["sandbox"], ["status"], ["completion"]):
        r = osh(*(cmd + ["--help"]))
        tap(r.returncode == 0 and "Examples:" in r.stdout, "%s --help has examples" % cmd[0],
            show(r))
    r = osh("completion", "bash")
    b = subprocess.run(["bash", "-n"], input=r.stdout, text=True, capture_output=True)
    tap(r.returncode == 0 and b.returncode == 0 and "complete -F _openshell" in r.stdout,
        "completion bash parses", show(r) + b.stderr)
    r = osh("sandbox", "list", "-o", "xml")
    tap(r.returncode == 2 and "--output" in r.stderr, "bad -o value: usage error", show(r))
    r = osh("gateway", "list", "-o", "yaml")
    tap(r.returncode == 0 and r.stdout.startswith("-\n  name: \"openshell\"\n")
        and "  active: true\n" in r.stdout, "gateway list -o yaml", show(r))

    # The default TLS port taken: the gateway starts on its unix socket only.
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        holder.bind(("127.0.0.1", 17670))
        holder.listen(1)
    except OSError:
        pass  # someone else holds it: the same situation
    r = osh("gateway", "start", "--name", "porttest", env={"OPENSHELL_SERVER_PORT": None})
    holder.close()
    r2 = osh("gateway", "status", "porttest", "-o", "json")
    st = jparse(r2.stdout) or {}
    tap(r.returncode == 0 and "17670 is in use" in r.stderr and st.get("status") == "connected"
        and st.get("server", "").startswith("unix://"),
        "default port taken: started on the unix socket only, with a warning", show(r) + show(r2))
    r = osh("gateway", "stop", "porttest")
    tap(r.returncode == 0 and "stopped" in r.stderr, "gateway stop NAME", show(r))
    osh("gateway", "remove", "porttest")
    osh("gateway", "select", "openshell")

    # Stop.
    r = osh("gateway", "stop")
    tap(r.returncode == 0 and "stopped" in r.stderr and not alive(pid), "gateway stop", show(r))
    r = osh("gateway", "stop")
    tap(r.returncode == 0 and "not running" in r.stderr, "gateway stop when stopped", show(r))
    r = osh("status")
    tap(r.returncode == 3 and "Disconnected" in r.stdout, "status of a stopped gateway: exit 3",
        show(r))
    r = osh("sandbox", "delete", "x")
    tap(r.returncode == 3 and "hint: start it with: openshell gateway start" in r.stderr,
        "stopped gateway: a hint to start it", show(r))
    r = osh("sandbox", "list")
    tap(r.returncode == 0 and "not running: starting it" in r.stderr,
        "a sandbox command restarts the stopped local gateway", show(r))


try:
    main()
finally:
    for lock in glob.glob(T + "/state/openshell/gateway*/gateway.lock"):
        try:
            with open(lock) as f:
                p = int(f.read().strip() or 0)
        except (OSError, ValueError):
            continue
        try:
            with open("/proc/%d/cmdline" % p, "rb") as f:
                mine = T.encode() in f.read()  # our gateway: its --state-dir is under T
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
    shutil.rmtree(T, ignore_errors=True)
sys.exit(tap.plan())
