#!/usr/bin/python3
"""E2E: the CLI's gateway-facing verbs that need no running sandbox, through
the real binary against a real local gateway it starts (records only, no
compute driver): global options before the command, https gateways with the
mTLS client bundle, policy set|get|list|update, and the error paths of
exec/connect/upload/download/logs and of create attaching. Prints TAP."""
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cli_lib import Cli  # noqa: E402

cli = Cli("openshell-cli-gw.", driver="none")
T, osh, tap, show, jparse = cli.T, cli.osh, cli.tap, cli.show, cli.jparse
PORT = cli.ENV["OPENSHELL_SERVER_PORT"]

GOOD = None
BAD = ("version: 1\nnetwork_policies:\n  x:\n    endpoints:\n      - host: a.com\n"
       "        port: notaport\n    binaries:\n      - path: /usr/bin/curl\n")


def write(name, text):
    with open(T + "/" + name, "w") as f:
        f.write(text)
    return T + "/" + name


def global_options():
    r = osh("gateway", "start")
    tap(r.returncode == 0, "gateway start (records only, TLS on a port of our own)", show(r))
    r = osh("-o", "json", "sandbox", "list")
    tap(r.returncode == 0 and jparse(r.stdout) == [], "-o json before the command", show(r))
    r = osh("-o", "json", "status", "-o", "yaml")
    tap(r.returncode == 0 and r.stdout.startswith('gateway: "openshell"\n'),
        "an option after the command wins over the one before", show(r))
    r = osh("--workspace", "nope", "sandbox", "list")
    tap(r.returncode == 1 and "nope" in r.stderr, "--workspace before the command", show(r))
    r = osh("-g", "ghost", "sandbox", "list")
    tap(r.returncode == 3 and "unknown gateway 'ghost'" in r.stderr,
        "-g before the command selects the gateway", show(r))
    r = osh("--gateway", "openshell", "-o", "json", "status")
    tap(r.returncode == 0 and (jparse(r.stdout) or {}).get("gateway") == "openshell",
        "--gateway NAME -o json status", show(r))
    r = osh("-o", "xml", "status")
    tap(r.returncode == 2 and "--output" in r.stderr, "bad global -o: usage error", show(r))
    r = osh("--help")
    tap(r.returncode == 0 and "--gateway NAME" in r.stdout and "--workspace" in r.stdout,
        "openshell --help lists the global options", show(r))


def tls():
    ep = "https://127.0.0.1:%s" % PORT
    r = osh("gateway", "add", ep, "--name", "tls")
    tap(r.returncode == 0 and "Imported the client TLS bundle" in r.stderr
        and os.path.exists(T + "/cfg/openshell/gateways/tls/mtls/tls.key")
        and (os.stat(T + "/cfg/openshell/gateways/tls/mtls/tls.key").st_mode & 0o777) == 0o600,
        "gateway add https://127.0.0.1:PORT imports the local client bundle (0600)", show(r))
    r = osh("-g", "tls", "status", "-o", "json")
    st = jparse(r.stdout) or {}
    tap(r.returncode == 0 and st.get("status") == "connected"
        and (st.get("authentication") or {}).get("mode") == "mtls" and st.get("version"),
        "status over TLS: connected, authenticated by mTLS", show(r))
    r = osh("-g", "tls", "sandbox", "create", "--name", "viatls", "--detach")
    r2 = osh("sandbox", "list", "--names")
    tap(r.returncode == 0 and "viatls" in r2.stdout.split(),
        "sandbox create over TLS lands in the same gateway", show(r) + show(r2))
    r = osh("-g", "tls", "sandbox", "delete", "viatls")
    tap(r.returncode == 0, "sandbox delete over TLS", show(r))
    # A CA that did not sign the gateway's certificate: refused.
    other = tempfile.mkdtemp(dir=T)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", other + "/k", "-out",
                    other + "/ca.crt", "-days", "1", "-subj", "/CN=other"],
                   capture_output=True, check=True)
    osh("gateway", "add", ep, "--name", "badca")
    shutil.copy(other + "/ca.crt", T + "/cfg/openshell/gateways/badca/mtls/ca.crt")
    r = osh("-g", "badca", "sandbox", "list")
    tap(r.returncode == 3 and "TLS handshake failed" in r.stderr and "hint:" in r.stderr,
        "a server certificate from another CA: exit 3, handshake failed", show(r))
    # No client certificate: the gateway does not know us.
    osh("gateway", "add", ep, "--name", "nocert")
    os.unlink(T + "/cfg/openshell/gateways/nocert/mtls/tls.crt")
    r = osh("-g", "nocert", "sandbox", "list")
    tap(r.returncode == 3 and r.stdout == "", "no client certificate: refused, exit 3", show(r))
    r = osh("gateway", "add", "https://127.0.0.1:1", "--name", "closed")
    r = osh("-g", "closed", "sandbox", "list")
    tap(r.returncode == 3 and "cannot reach gateway 'closed'" in r.stderr,
        "https endpoint not listening: exit 3", show(r))
    r = osh("gateway", "add", "https://127.0.0.1:9", "--name", "far", "--local",
            env={"OPENSHELL_LOCAL_TLS_DIR": T + "/nothing", "XDG_STATE_HOME": T + "/empty"})
    tap(r.returncode == 1 and "no client TLS bundle found" in r.stderr,
        "gateway add --local without a bundle anywhere: exit 1", show(r))
    for g in ("tls", "badca", "nocert", "closed"):
        osh("gateway", "remove", g)
    osh("gateway", "select", "openshell")


def policies():
    global GOOD
    GOOD = osh("policy", "default").stdout
    good = write("good.yaml", GOOD)
    bad = write("bad.yaml", BAD)
    osh("sandbox", "create", "--name", "pol", "--detach")
    r = osh("policy", "set", "pol", "--policy", good)
    tap(r.returncode == 0 and "Policy version 1 submitted (hash: " in r.stderr,
        "policy set: version 1 submitted", show(r))
    r = osh("policy", "set", "pol", "--policy", good)
    tap(r.returncode == 0 and "Policy unchanged (version 1" in r.stderr,
        "policy set of the same text: unchanged", show(r))
    r = osh("policy", "set", "pol", "--policy", bad)
    tap(r.returncode == 1 and "bad.yaml:6:15:" in r.stderr and "nothing was changed" in r.stderr,
        "policy set of a bad file: FILE:LINE:COL, exit 1", show(r))
    r = osh("policy", "set", "pol", "--policy", T + "/missing.yaml")
    tap(r.returncode == 1 and "missing.yaml" in r.stderr, "policy set of a missing file",
        show(r))
    r = osh("policy", "get", "pol", "-o", "json")
    j = jparse(r.stdout) or {}
    tap(r.returncode == 0 and j.get("version") == 1 and j.get("scope") == "sandbox"
        and j.get("revision_status") == "pending" and j.get("policy_source") == "sandbox"
        and j.get("hash", "").startswith("sha256:") and j.get("policy") == GOOD,
        "policy get -o json", show(r))
    r = osh("policy", "get", "pol", "--full")
    tap(r.returncode == 0 and "Version:     1" in r.stdout and "\n---\n" in r.stdout
        and "network_policies" in r.stdout, "policy get --full: metadata, ---, the YAML",
        show(r))
    r = osh("policy", "get", "pol", "--rev", "9")
    tap(r.returncode == 1 and "no policy revision 9" in r.stderr, "policy get --rev unknown",
        show(r))
    write("two.yaml", GOOD + "# two\n")
    r = osh("policy", "set", "pol", "--policy", T + "/two.yaml", "--wait", "--timeout", "1")
    tap(r.returncode == 124 and "Policy version 2 submitted" in r.stderr
        and "not loaded after 1s" in r.stderr,
        "policy set --wait without a supervisor: 124 after --timeout", show(r))
    r = osh("policy", "list", "pol", "-o", "json")
    j = jparse(r.stdout) or []
    tap(r.returncode == 0 and [x.get("version") for x in j] == [2, 1]
        and j[1].get("status") == "superseded", "policy list -o json: newest first", show(r))
    r = osh("policy", "list")
    lines = r.stdout.splitlines()
    tap(r.returncode == 0 and lines and lines[0].split() == ["VERSION", "HASH", "STATUS",
                                                             "CREATED", "ERROR"]
        and "Using sandbox 'pol' (last used)" in r.stderr,
        "policy list table, NAME from the last used sandbox", show(r))
    r = osh("policy", "get", "nope")
    tap(r.returncode == 1 and "not found" in r.stderr, "policy get of an unknown sandbox",
        show(r))
    # update --dry-run: the flags become PATCH operations; the gateway merges.
    r = osh("policy", "update", "pol", "--add-endpoint",
            "api.github.com:443:read-only:rest:enforce:allowed-ip=10.0.0.0/8", "--binary",
            "/usr/bin/curl", "--binary", "/usr/bin/git", "--add-deny",
            "api.github.com:443:POST:/repos/**", "--dry-run", "-o", "json")
    j = jparse(r.stdout) or {}
    rule = ((j.get("policy") or {}).get("network_policies") or {}).get(
        "allow_api_github_com_443") or {}
    ep = (rule.get("endpoints") or [{}])[0]
    tap(r.returncode == 0 and ep.get("host") == "api.github.com" and ep.get("port") == 443
        and ep.get("access") == "read-only" and ep.get("protocol") == "rest"
        and ep.get("enforcement") == "enforce" and ep.get("allowed_ips") == ["10.0.0.0/8"]
        and [b.get("path") for b in rule.get("binaries") or []] == ["/usr/bin/curl",
                                                                    "/usr/bin/git"]
        and any(d.get("method") == "POST" and d.get("path") == "/repos/**"
                for d in ep.get("deny_rules") or []),
        "policy update --dry-run -o json: endpoint, access, protocol, allowed-ip, binaries, "
        "deny rule", show(r))
    r = osh("policy", "update", "pol", "--add-endpoint", "h.example.com:8443::rest",
            "--rule-name", "mine", "--binary", "/usr/bin/curl", "--add-allow",
            "h.example.com:8443:GET:/zen/**", "--dry-run")
    tap(r.returncode == 0 and "mine:" in r.stdout and '"/zen/**"' in r.stdout
        and "h.example.com" in r.stdout, "policy update --dry-run: --rule-name, --add-allow, "
        "YAML out", show(r))
    r = osh("policy", "list", "pol", "-o", "json")
    tap(len(jparse(r.stdout) or []) == 2, "--dry-run wrote nothing", show(r))
    r = osh("policy", "update", "pol", "--add-endpoint", "api.github.com:443", "--binary",
            "/usr/bin/curl")
    r2 = osh("policy", "list", "pol", "-o", "json")
    tap(r.returncode == 0 and "Policy version 3 submitted" in r.stderr
        and len(jparse(r2.stdout) or []) == 3, "policy update: one new revision", show(r))
    r = osh("policy", "update", "pol", "--remove-rule", "no_such_rule")
    tap(r.returncode in (0, 1) and ("!" in r.stderr or "error" in r.stderr),
        "policy update of something absent: a warning or an error", show(r))
    r = osh("policy", "update", "pol", "--add-endpoint", "*:443", "--binary", "/usr/bin/curl")
    tap(r.returncode == 1 and "error" in r.stderr, "policy update to an invalid policy: the "
        "engine's refusal reaches the user", show(r))

    r = osh("policy", "set", "--global", "--policy", good)
    tap(r.returncode == 2 and "--yes" in r.stderr, "policy set --global wants --yes",
        show(r))
    r = osh("policy", "set", "--global", "--policy", good, "--yes")
    tap(r.returncode == 0 and "Global policy configured" in r.stderr, "policy set --global --yes",
        show(r))
    r = osh("policy", "get", "pol", "-o", "json")
    j = jparse(r.stdout) or {}
    tap(r.returncode == 0 and j.get("policy_source") == "global"
        and j.get("global_policy_version") == 1, "a global policy is what is in force",
        show(r))
    r = osh("policy", "list", "--global", "-o", "json")
    tap(r.returncode == 0 and len(jparse(r.stdout) or []) == 1, "policy list --global", show(r))
    r = osh("policy", "set", "--global", "--policy", good, "--wait", "--yes")
    tap(r.returncode == 2, "policy set --global --wait: usage error", show(r))

    # update: flags checked before anything is sent.
    for args, what in (
        ([], "no operation"),
        (["--add-endpoint", "a.com"], "no port"),
        (["--add-endpoint", "a.com:99999"], "bad port"),
        (["--add-endpoint", "a.com:443:sideways"], "bad access"),
        (["--add-endpoint", "a.com:443:read-only:ftp"], "bad protocol"),
        (["--add-endpoint", "a.com:443", "--add-endpoint", "b.com:443", "--rule-name", "x"],
         "--rule-name with two endpoints"),
        (["--add-allow", "a.com:443:GET"], "--add-allow without a glob"),
        (["--binary", "/usr/bin/curl", "--remove-rule", "x"], "--binary without --add-endpoint"),
        (["--remove-rule", "x", "--dry-run", "--wait"], "--dry-run with --wait"),
        (["--binary", "curl", "--add-endpoint", "a.com:443"], "relative --binary"),
    ):
        r = osh("policy", "update", "pol", *args)
        tap(r.returncode == 2 and r.stderr.count("\n") <= 2,
            "policy update usage error: " + what, show(r))
    r = osh("policy", "update", "pol", "--add-endpoint",
            "api.github.com:443:read-only:rest:enforce:allowed-ip=10.0.0.0/8", "--binary",
            "/usr/bin/curl", "--add-deny", "api.github.com:443:POST:/repos/**", "--dry-run")
    tap(r.returncode == 1 and "hint: a global policy is in force" in r.stderr,
        "policy update while a global policy is in force: exit 1 with a hint", show(r))


def io_errors():
    r = osh("sandbox", "exec", "pol", "--", "/bin/true")
    tap(r.returncode == 1 and "is not ready (phase: provisioning" in r.stderr,
        "exec in a sandbox that is not ready: exit 1 with its phase", show(r))
    r = osh("sandbox", "exec", "nope", "--", "/bin/true")
    tap(r.returncode == 1 and "'nope' not found" in r.stderr, "exec in an unknown sandbox",
        show(r))
    r = osh("sandbox", "exec", "pol")
    tap(r.returncode == 2 and "CMD" in r.stderr, "exec without a command: usage error", show(r))
    r = osh("sandbox", "connect", "nope")
    tap(r.returncode == 1 and "not found" in r.stderr, "connect to an unknown sandbox", show(r))
    r = osh("sandbox", "upload", "pol", T + "/no-such-file")
    tap(r.returncode == 1 and "cannot upload" in r.stderr and "No such file" in r.stderr,
        "upload of a missing file: exit 1", show(r))
    r = osh("sandbox", "upload", "pol")
    tap(r.returncode == 2, "upload without SRC: usage error", show(r))
    write("plain", "x")
    r = osh("sandbox", "download", "pol", "/sandbox/f", T + "/plain/sub/f")
    tap(r.returncode == 1 and "cannot download into" in r.stderr and "hint:" in r.stderr,
        "download into an unwritable place: exit 1", show(r))
    r = osh("sandbox", "download", "pol", "/")
    tap(r.returncode == 2, "download of '/': usage error", show(r))
    left = [f for f in os.listdir(T) if f.startswith(".openshell-download")]
    tap(not left, "nothing half-written in the destination", repr(left))
    r = osh("sandbox", "logs", "nope")
    tap(r.returncode == 1 and r.stdout == "", "logs of an unknown sandbox: exit 1", show(r))
    r = osh("sandbox", "logs", "pol", "--level", "loud")
    tap(r.returncode == 2, "logs --level bad: usage error", show(r))
    # create attaching without a compute driver: refused; --no-keep cleans up.
    r = osh("sandbox", "create", "--name", "att", "--no-keep", "--", "/bin/true")
    r2 = osh("sandbox", "get", "att")
    tap(r.returncode == 1 and "no compute driver" in r.stderr and r2.returncode == 1,
        "create -- CMD without a compute driver: exit 1, --no-keep deleted it",
        show(r) + show(r2))
    r = osh("sandbox", "create", "--detach", "--no-keep", "--", "/bin/true")
    tap(r.returncode == 2, "--detach with --no-keep: usage error", show(r))
    r = osh("sandbox", "create", "--name", "pol", "--", "/bin/true")
    tap(r.returncode == 1 and "already exists" in r.stderr, "create name clash: exit 1",
        show(r))
    for sub in ("exec", "connect", "upload", "download", "logs"):
        r = osh("sandbox", sub, "--help")
        tap(r.returncode == 0 and "Examples:" in r.stdout, "sandbox %s --help" % sub, show(r))
    r = osh("policy", "update", "--help")
    tap(r.returncode == 0 and "--add-endpoint" in r.stdout and "Examples:" in r.stdout,
        "policy update --help", show(r))


try:
    global_options()
    tls()
    policies()
    io_errors()
finally:
    cli.finish()
