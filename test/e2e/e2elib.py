"""Shared scaffolding for the python end-to-end tests (imported, not run).

Upstream servers for proxy tests live in a network namespace the test
creates: a veth pair with a private /30 (10.x.y.1 on the host side, 10.x.y.2
inside), picked so that it clashes with no address or route already on the
machine, and removed on teardown. Tests talk only to those two addresses.
"""
import os
import random
import signal
import socket
import subprocess
import sys


def run(cmd, timeout=30, **kw):
    """Run CMD, capturing text output; never raises on a non-zero status."""
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def _check(cmd, what=None):
    r = run(cmd)
    if r.returncode:
        raise RuntimeError("%s: %s" % (what or " ".join(cmd), r.stderr))
    return r


class Netns:
    """A network namespace NAME joined to the host by a veth pair.

    host_ip is the host end, up the address inside the namespace."""

    def __init__(self, prefix):
        tag = "%05d" % (os.getpid() % 100000)
        self.ns = "os%s%s" % (prefix, tag)
        self.veth_a = "v%s%sa" % (prefix, tag)
        self.veth_b = "v%s%sb" % (prefix, tag)
        used = run(["ip", "-o", "addr"]).stdout + run(["ip", "route"]).stdout
        for _ in range(50):
            net = "10.%d.%d." % (random.randint(100, 250), random.randint(0, 250))
            if net not in used:
                break
        self.host_ip, self.up = net + "1", net + "2"
        self.created = False

    def create(self):
        inside = ["ip", "netns", "exec", self.ns]
        _check(["ip", "netns", "add", self.ns])
        self.created = True
        for cmd in (
            ["ip", "link", "add", self.veth_a, "type", "veth", "peer", "name", self.veth_b],
            ["ip", "link", "set", self.veth_b, "netns", self.ns],
            ["ip", "addr", "add", self.host_ip + "/30", "dev", self.veth_a],
            ["ip", "link", "set", self.veth_a, "up"],
            inside + ["ip", "addr", "add", self.up + "/30", "dev", self.veth_b],
            inside + ["ip", "link", "set", self.veth_b, "up"],
            inside + ["ip", "link", "set", "lo", "up"],
        ):
            _check(cmd)
        return self

    def delete(self):
        if self.created:
            run(["ip", "netns", "del", self.ns])
            run(["ip", "link", "del", self.veth_a])
            self.created = False


def make_test_ca(d, ca_cn, dns_names, ips=()):
    """A test CA (d/ca.pem, d/ca.key) and a server certificate it signs
    (d/srv.pem, d/srv.key) for DNS_NAMES and IPS; keys are mode 0600."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _check(["openssl", "req", "-x509"] + ec + ["-keyout", d + "/ca.key", "-out", d + "/ca.pem",
                                               "-days", "2", "-subj", "/CN=" + ca_cn],
           "openssl req (CA)")
    _check(["openssl", "req"] + ec + ["-keyout", d + "/srv.key", "-out", d + "/srv.csr",
                                      "-subj", "/CN=" + dns_names[0]], "openssl req (server)")
    sans = ["DNS:" + n for n in dns_names] + ["IP:" + i for i in ips]
    with open(d + "/ext.cnf", "w") as f:
        f.write("subjectAltName=%s\nbasicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n" % ",".join(sans))
    _check(["openssl", "x509", "-req", "-in", d + "/srv.csr", "-CA", d + "/ca.pem", "-CAkey",
            d + "/ca.key", "-CAcreateserial", "-out", d + "/srv.pem", "-days", "2",
            "-extfile", d + "/ext.cnf"], "openssl x509")
    for p in ("ca.key", "srv.key"):
        os.chmod(d + "/" + p, 0o600)


def free_port():
    """A loopback TCP port free at the time of the call."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start_server(ns, args, what):
    """Run the python server ARGS[0] (a file next to this one) with ARGS[1:]
    inside network namespace NS; its Popen once it printed "ready" (its
    first line). Otherwise it is killed and RuntimeError("WHAT did not
    start") raised."""
    here = os.path.dirname(os.path.abspath(__file__))
    p = subprocess.Popen(["ip", "netns", "exec", ns, "/usr/bin/python3",
                          os.path.join(here, args[0])] + list(args[1:]),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.stdout.readline().strip() != "ready":
        stop(p)
        raise RuntimeError("%s did not start" % what)
    return p


def stop(*procs):
    """SIGTERM each running process, SIGKILL it if it lingers past 5 s."""
    for p in procs:
        if p and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class Tap:
    """The TAP lines of one test script.

    tap(ok, name, diag) prints "ok N - name" or "not ok N - name" and, under a
    failure, up to diag_lines lines of DIAG as "# " comments; skip(name, why)
    prints a passing line marked "# SKIP why". n counts the lines, failed the
    failures; plan() prints the closing "1..N" and returns the exit status."""

    def __init__(self, diag_lines=20):
        self.n = 0
        self.failed = 0
        self.diag_lines = diag_lines
        self.prefix = ""  # put before every name (e.g. "asan: " for a second round)

    def __call__(self, ok, name, diag=""):
        self.n += 1
        if not ok:
            self.failed += 1
        print(("ok" if ok else "not ok") + " %d - %s%s" % (self.n, self.prefix, name))
        if not ok and diag:
            for line in str(diag).splitlines()[:self.diag_lines]:
                print("# " + line)
        sys.stdout.flush()

    def skip(self, name, why):
        self.n += 1
        print("ok %d - %s%s # SKIP %s" % (self.n, self.prefix, name, why), flush=True)

    @staticmethod
    def skip_all(name, why):
        """The whole script skipped: one SKIP line, its plan, exit 0."""
        print("1..1")
        print("ok 1 - %s # SKIP %s" % (name, why))
        sys.exit(0)

    def plan(self):
        print("1..%d" % self.n, flush=True)
        return 1 if self.failed else 0
