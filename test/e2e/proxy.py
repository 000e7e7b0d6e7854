#!/usr/bin/python3
# proxy.py: the standalone openshell-proxy against real clients (curl,
# python urllib and raw sockets) and real upstream servers (proxy_servers.py)
# running in a network namespace this test creates (a veth pair with private
# 10.x addresses on both ends; only those addresses are used, everything is
# removed on exit). Upstream TLS uses a test CA made with the openssl CLI.
#
# Covers: allowed and denied hosts and ports with the exact deny bodies,
# CONNECT tunnels (cleartext HTTP, TLS terminated, raw bytes), plain-HTTP
# forwarding, GET allowed and POST denied on one inspected host, keep-alive
# with each request decided, pipelining, each smuggling shape, oversized
# heads (431), domain fronting (Host and SNI), SSRF, upstreams that reset,
# stall, refuse, or present a certificate for another name.
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import e2elib

BIN = os.environ.get("OPENSHELL_BIN", "")
point = e2elib.Tap(diag_lines=30)


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=kw.pop("timeout", 30), **kw)


class Env:
    pass


E = Env()


def setup():
    E.tmp = tempfile.mkdtemp(prefix="openshell-proxy-e2e.")
    E.net = e2elib.Netns("px").create()
    E.ns, E.up = E.net.ns, E.net.up
    # Test CA and the upstream's certificate (api.test and the IP).
    t = E.tmp
    e2elib.make_test_ca(t, "openshell test CA", ["api.test"], [E.up])
    E.uplog = t + "/upstream.log"
    open(E.uplog, "w").close()
    E.servers = e2elib.start_server(
        E.ns, ["proxy_servers.py", E.up, t + "/srv.pem", t + "/srv.key", E.uplog],
        "upstream servers")
    with open(t + "/policy.yaml", "w") as f:
        f.write("""version: 1
network_policies:
  plain:
    endpoints:
      - host: api.test
        ports: [8080, 8081, 8082, 8090, 8093, 8099]
      - host: %(up)s
        port: 8080
      - host: loop.test
        port: 8080
      - host: dns.test
        port: 8080
      - host: nx.test
        port: 8080
    binaries:
      - path: /usr/bin/curl
  inspected:
    endpoints:
      - host: api.test
        port: 8443
        protocol: rest
        enforcement: enforce
        access: read-only
      - host: bad.test
        port: 8443
        protocol: rest
        enforcement: enforce
        access: read-only
    binaries:
      - path: /usr/bin/curl
""" % {"up": E.up})
    shutil.copy(t + "/policy.yaml", t + "/policy.yaml.orig")
    E.proxy_log = t + "/proxy.log"
    E.proxy = subprocess.Popen(
        [BIN, "applet", "openshell-proxy",
         ] + [
            "--policy", t + "/policy.yaml", "--listen", "127.0.0.1:0", "--port-file",
            t + "/port", "--resolve", "api.test:" + E.up, "--resolve", "other.test:" + E.up,
            "--resolve", "bad.test:" + E.up, "--resolve", "loop.test:127.0.0.1",
            "--dns-server", E.up + ":5353",
            "--upstream-ca", t + "/ca.pem", "--ca-out", t + "/sandbox-ca.pem",
            "--bundle-out", t + "/bundle.pem", "--response-timeout", "2",
            "--header-timeout", "2",
            "--log-format", "text"],
        stdout=subprocess.DEVNULL, stderr=open(E.proxy_log, "w"))
    for _ in range(100):
        if os.path.exists(t + "/port") and open(t + "/port").read().strip():
            break
        time.sleep(0.05)
    E.port = int(open(t + "/port").read())
    E.proxy_url = "http://127.0.0.1:%d" % E.port


def teardown():
    e2elib.stop(getattr(E, "proxy", None), getattr(E, "servers", None))
    if hasattr(E, "net"):
        E.net.delete()
    if hasattr(E, "tmp"):
        shutil.rmtree(E.tmp, ignore_errors=True)


# ------------------------------------------------------------ client helpers

def connect():
    s = socket.create_connection(("127.0.0.1", E.port), timeout=10)
    return s


def read_all(s, timeout=5):
    s.settimeout(timeout)
    data = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
    except (socket.timeout, ConnectionResetError, ssl.SSLError):
        pass
    return data


def read_response(s, timeout=5):
    """One HTTP/1.1 response framed by Content-Length (or until close)."""
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        d = s.recv(65536)
        if not d:
            return data
        data += d
    head, _, rest = data.partition(b"\r\n\r\n")
    n = None
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            n = int(v)
    if n is None:
        return head + b"\r\n\r\n" + rest + read_all(s, timeout)
    while len(rest) < n:
        d = s.recv(65536)
        if not d:
            break
        rest += d
    return head + b"\r\n\r\n" + rest


def parse(resp):
    head, _, body = resp.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        status = 0
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, body


def exchange(data, timeout=5):
    s = connect()
    s.sendall(data)
    r = read_all(s, timeout)
    s.close()
    return parse(r)


def tunnel(host, port):
    s = connect()
    s.sendall(b"CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (host.encode(), port,
                                                                  host.encode(), port))
    head = b""
    while b"\r\n\r\n" not in head:
        d = s.recv(1)
        if not d:
            break
        head += d
    return s, parse(head)[0]


def tls_tunnel(host, port, sni=None):
    s, st = tunnel(host, port)
    if st != 200:
        raise RuntimeError("CONNECT answered %d" % st)
    ctx = ssl.create_default_context(cafile=E.tmp + "/sandbox-ca.pem")
    return ctx.wrap_socket(s, server_hostname=sni or host)


def upstream_saw(marker):
    time.sleep(0.2)
    with open(E.uplog) as f:
        return marker in f.read()


def curl(*args, timeout=20):
    return run(["curl", "-sS", "--max-time", "10", "-x", E.proxy_url] + list(args),
               timeout=timeout)


def proxy_log():
    with open(E.proxy_log) as f:
        return f.read()


# ------------------------------------------------------------ tests

def t_forward_and_deny_bodies():
    r = curl("-U", "user:secret", "--proxy-basic", "http://api.test:8080/hello?x=1")
    j = json.loads(r.stdout or "{}")
    point(j.get("target") == "/hello?x=1" and j.get("host") == "api.test:8080"
          and j.get("via") == "1.1 openshell-sandbox" and j.get("proxy_authorization") is None,
          "forward: GET allowed reaches the upstream (origin-form, Via added, Proxy-Authorization "
          "stripped)", r.stdout + r.stderr)
    st, h, body = exchange(b"GET http://api.test:9999/x?secret=1 HTTP/1.1\r\nHost: api.test:9999\r\n\r\n")
    point(st == 403 and body == b'{"error":"policy_denied","detail":"GET api.test:9999/x not '
          b'permitted by policy"}' and h.get("content-type") == "application/json"
          and h.get("connection") == "close",
          "forward: denied port gets the exact 403 policy_denied body", (st, h, body))
    st, h, body = exchange(b"CONNECT other.test:8080 HTTP/1.1\r\nHost: other.test:8080\r\n\r\n")
    point(st == 403 and body == b'{"error":"policy_denied","detail":"CONNECT other.test:8080 not '
          b'permitted by policy","reason":"endpoint other.test:8080 is not allowed by any policy"}',
          "CONNECT: denied host gets the exact 403 policy_denied body", (st, body))
    r = curl("-p", "http://other.test:8080/")
    point(r.returncode == 56 and "403" in r.stderr, "curl: denied CONNECT reports 403 from proxy",
          r.stderr)
    st, h, body = exchange(b"GET https://api.test:8443/ HTTP/1.1\r\nHost: api.test:8443\r\n\r\n")
    point(st == 400 and body == b"Use CONNECT for HTTPS URLs", "forward: https:// URL gets 400",
          (st, body))


def t_dns():
    r = curl("http://dns.test:8080/resolved")
    point('"/resolved"' in r.stdout and '"dns.test:8080"' in r.stdout,
          "DNS: a name resolved through evdns (test resolver) is reached", r.stdout + r.stderr)
    st, _, body = exchange(b"GET http://nx.test:8080/ HTTP/1.1\r\nHost: nx.test:8080\r\n\r\n")
    point(st == 502 and b'"upstream_unreachable"' in body and b"nx.test:8080" in body,
          "DNS: NXDOMAIN answers 502 upstream_unreachable", (st, body))


def t_tunnels():
    r = curl("-p", "http://api.test:8080/tunnel")
    point('"target": "/tunnel"' in r.stdout, "CONNECT: cleartext HTTP inside a tunnel", r.stderr)
    s, st = tunnel("api.test", 8090)
    s.sendall(b"\x00\x01raw-bytes-through")
    s.settimeout(5)
    got = b""
    while len(got) < 19:
        d = s.recv(100)
        if not d:
            break
        got += d
    s.close()
    point(st == 200 and got == b"\x00\x01raw-bytes-through", "CONNECT: raw bytes relayed both ways",
          (st, got))
    # A server that speaks first gets its greeting through.
    s, st = tunnel("api.test", 8093)
    s.settimeout(5)
    try:
        greet = s.recv(64)
        s.sendall(b"EHLO x\r\n")
        back = s.recv(64)
    except OSError as e:
        greet, back = repr(e), b""
    s.close()
    point(st == 200 and greet == b"220 ready\r\n" and back == b"EHLO x\r\n",
          "CONNECT: a server-speaks-first protocol is relayed (no stall)", (st, greet, back))
    # Half-close: the client ends its side, the echo still comes back whole.
    s, st = tunnel("api.test", 8090)
    blob = os.urandom(1 << 20)
    s.sendall(blob)
    s.shutdown(socket.SHUT_WR)
    got = read_all(s, 10)
    s.close()
    point(st == 200 and got == blob, "CONNECT: half-close relays the rest of the reply",
          (st, len(got)))
    r = curl("-p", "http://api.test:8099/")
    st, h, body = exchange(b"CONNECT api.test:8099 HTTP/1.1\r\nHost: api.test:8099\r\n\r\n")
    point(st == 502 and b'"upstream_unreachable"' in body and b"api.test:8099" in body,
          "CONNECT: refused upstream gets 502 upstream_unreachable", (st, body))


def t_inspected():
    cacert = E.tmp + "/sandbox-ca.pem"
    r = curl("--cacert", cacert, "https://api.test:8443/repos/x/y?page=2")
    j = json.loads(r.stdout or "{}")
    point(j.get("method") == "GET" and j.get("target") == "/repos/x/y?page=2",
          "inspected HTTPS: GET allowed (curl trusts the sandbox CA)", r.stdout + r.stderr)
    r = curl("--cacert", cacert, "--tls-max", "1.2", "-w", "%{http_code}", "-o", "/dev/null",
             "https://api.test:8443/tls12")
    point(r.stdout == "200" and upstream_saw("GET /tls12 "),
          "inspected HTTPS with a TLS 1.2-only client", r.stdout + r.stderr)
    r = curl("--cacert", cacert, "-i", "--suppress-connect-headers", "-X", "POST", "-d", "a=b", "https://api.test:8443/repos/x/issues")
    st, h, body = parse(r.stdout.replace("\r\n", "\n").replace("\n", "\r\n").encode())
    want = {
        "error": "policy_denied", "policy": "inspected", "rule": "POST /repos/x/issues",
        "detail": "POST /repos/x/issues not permitted by policy", "layer": "l7",
        "protocol": "rest", "method": "POST", "path": "/repos/x/issues", "host": "api.test",
        "port": 8443, "binary": "-",
        "rule_missing": {"type": "rest_allow", "layer": "l7", "method": "POST",
                         "path": "/repos/x/issues", "host": "api.test", "port": 8443,
                         "binary": "-"},
        "next_steps": [],
    }
    try:
        got = json.loads(body)
    except ValueError:
        got = None
    point(st == 403 and got == want and h.get("x-openshell-policy") == "inspected",
          "inspected HTTPS: POST denied with the exact L7 body and X-OpenShell-Policy",
          r.stdout + r.stderr)
    point(not upstream_saw("POST /repos/x/issues"), "inspected HTTPS: the denied POST never "
          "reached the upstream")
    # python urllib with the bundle (system CAs + sandbox CA), as an agent would.
    ctx = ssl.create_default_context(cafile=E.tmp + "/bundle.pem")
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"https": E.proxy_url, "http": E.proxy_url}),
        urllib.request.HTTPSHandler(context=ctx))
    try:
        j = json.loads(opener.open("https://api.test:8443/py/get", timeout=10).read())
        ok = j.get("target") == "/py/get"
    except Exception as e:  # noqa: BLE001 - report anything as the diagnostic
        ok, j = False, repr(e)
    point(ok, "python urllib: HTTPS GET through the proxy", j)
    try:
        opener.open(urllib.request.Request("https://api.test:8443/py/post", data=b"x=1"),
                    timeout=10)
        ok, why = False, "POST succeeded"
    except urllib.error.HTTPError as e:
        b = json.loads(e.read())
        ok, why = e.code == 403 and b.get("rule") == "POST /py/post", b
    except Exception as e:  # noqa: BLE001
        ok, why = False, repr(e)
    point(ok, "python urllib: HTTPS POST denied with 403 JSON", why)
    try:
        j = json.loads(opener.open("http://api.test:8080/py/plain", timeout=10).read())
        ok = j.get("target") == "/py/plain"
    except Exception as e:  # noqa: BLE001
        ok, j = False, repr(e)
    point(ok, "python urllib: plain HTTP forwarded", j)
    # Canonical path: what is checked is what is forwarded.
    s = tls_tunnel("api.test", 8443)
    s.sendall(b"GET /a/./b/../c//d HTTP/1.1\r\nHost: api.test:8443\r\n\r\n")
    st, h, body = parse(read_response(s))
    s.close()
    point(st == 200 and json.loads(body or b"{}").get("target") == "/a/c/d",
          "inspected: the canonical path is what goes upstream", body)


def t_bodies():
    body = E.tmp + "/body.bin"
    with open(body, "wb") as f:
        f.write(os.urandom(300000))
    r = curl("--data-binary", "@" + body, "http://api.test:8080/upload")
    j = json.loads(r.stdout or "{}")
    point(j.get("method") == "POST" and j.get("body") == 300000,
          "forward: 300 kB POST body (Expect: 100-continue) arrives whole", r.stdout + r.stderr)
    r = curl("-p", "-H", "Transfer-Encoding: chunked", "--data-binary", "@" + body,
             "http://api.test:8080/chunked")
    j = json.loads(r.stdout or "{}")
    point(j.get("body") == 300000, "tunnel: chunked upload re-framed and delivered whole",
          r.stdout + r.stderr)
    r = curl("--cacert", E.tmp + "/sandbox-ca.pem", "-o", "/dev/null", "-w", "%{size_download}",
             "https://api.test:8443/big/20000000", "https://api.test:8443/after-big")
    point(r.stdout.startswith("20000000") and r.returncode == 0,
          "inspected: 20 MB response relayed, then the next request on the same tunnel",
          r.stdout + r.stderr)
    r = curl("-o", "/dev/null", "-w", "%{size_download}", "http://api.test:8080/big/5000000")
    point(r.stdout == "5000000", "forward: 5 MB response relayed", r.stdout + r.stderr)


def t_websocket():
    s = tls_tunnel("api.test", 8443)
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: api.test:8443\r\nConnection: Upgrade\r\n"
              b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    head = b""
    s.settimeout(5)
    while b"\r\n\r\n" not in head:
        d = s.recv(1)
        if not d:
            break
        head += d
    st, h, _ = parse(head)
    s.sendall(b"\x81\x85frame")
    got = b""
    while len(got) < 7:
        d = s.recv(64)
        if not d:
            break
        got += d
    s.close()
    point(st == 101 and h.get("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
          and got == b"\x81\x85frame",
          "WebSocket upgrade on an allowed GET is relayed (inspected endpoint)", (st, h, got))


def t_websocket_forward():
    s = connect()
    s.sendall(b"GET http://api.test:8080/wsf HTTP/1.1\r\nHost: api.test:8080\r\n"
              b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    head = b""
    s.settimeout(5)
    while b"\r\n\r\n" not in head:
        d = s.recv(1)
        if not d:
            break
        head += d
    st = parse(head)[0]
    s.sendall(b"\x81\x82hi")
    got = b""
    while len(got) < 4:
        d = s.recv(64)
        if not d:
            break
        got += d
    s.close()
    point(st == 101 and got == b"\x81\x82hi", "WebSocket upgrade on the forward path is relayed",
          (st, got))


def t_keepalive():
    cacert = E.tmp + "/sandbox-ca.pem"
    r = curl("-v", "--cacert", cacert, "https://api.test:8443/k1", "https://api.test:8443/k2")
    point("Re-using existing connection" in r.stderr and r.stdout.count('"GET"') == 2,
          "keep-alive: curl reuses the inspected tunnel", r.stderr[-2000:])
    r = curl("-v", "http://api.test:8080/k1", "http://api.test:8080/k2")
    # A second request head trickling in on a kept-alive tunnel is cut at
    # the header timeout (2 s for this proxy), not the idle timeout.
    s2 = tls_tunnel("api.test", 8443)
    s2.sendall(b"GET /slow1 HTTP/1.1\r\nHost: api.test:8443\r\n\r\n")
    first = parse(read_response(s2))[0]
    t0 = time.time()
    s2.sendall(b"GET /slow2 HTTP/1.1\r\n")
    try:
        for _ in range(8):
            time.sleep(0.5)
            s2.sendall(b"X-Slow: 1\r\n")
        cut = False
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
        cut = True
    if not cut:
        cut = read_all(s2, 3) == b""
    took = time.time() - t0
    s2.close()
    point(first == 200 and cut and took < 5, "slow request head on a kept-alive tunnel is cut "
          "at the header timeout", (first, cut, took))
    point("Re-using existing connection" in r.stderr and r.stdout.count('"GET"') == 2,
          "keep-alive: curl reuses the forward connection", r.stderr[-2000:])
    # Each request on a kept-alive connection is decided on its own.
    s = connect()
    s.sendall(b"GET http://api.test:8080/ka1 HTTP/1.1\r\nHost: api.test:8080\r\n\r\n")
    st1 = parse(read_response(s))[0]
    s.sendall(b"GET http://api.test:9999/ka2 HTTP/1.1\r\nHost: api.test:9999\r\n\r\n")
    st2, _, b2 = parse(read_response(s))
    s.close()
    point(st1 == 200 and st2 == 403 and b"policy_denied" in b2,
          "keep-alive forward: second request (other port) denied on its own", (st1, st2, b2))
    s = tls_tunnel("api.test", 8443)
    s.sendall(b"GET /ka/get HTTP/1.1\r\nHost: api.test:8443\r\n\r\n")
    st1 = parse(read_response(s))[0]
    s.sendall(b"DELETE /ka/del HTTP/1.1\r\nHost: api.test:8443\r\n\r\n")
    st2, _, b2 = parse(read_response(s))
    s.close()
    point(st1 == 200 and st2 == 403 and b'"rule":"DELETE /ka/del"' in b2
          and not upstream_saw("DELETE /ka/del"),
          "keep-alive inspected: GET then DELETE on one tunnel, DELETE denied", (st1, st2, b2))
    # Pipelined: two requests in one write, each answered in order.
    s = tls_tunnel("api.test", 8443)
    s.sendall(b"GET /pipe/1 HTTP/1.1\r\nHost: api.test:8443\r\n\r\nGET /pipe/2 HTTP/1.1\r\nHost: "
              b"api.test:8443\r\n\r\n")
    r1 = parse(read_response(s))
    r2 = parse(read_response(s))
    s.close()
    point(b"/pipe/1" in r1[2] and b"/pipe/2" in r2[2], "pipelined requests answered in order",
          (r1, r2))


SMUGGLING = [
    ("Content-Length with Transfer-Encoding",
     b"POST /smuggle/cl-te HTTP/1.1\r\nHost: api.test:8443\r\nContent-Length: 4\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("duplicate Content-Length",
     b"POST /smuggle/dup-cl HTTP/1.1\r\nHost: api.test:8443\r\nContent-Length: 4\r\n"
     b"Content-Length: 5\r\n\r\nabcde"),
    ("bare LF", b"GET /smuggle/bare-lf HTTP/1.1\nHost: api.test:8443\n\n"),
    ("obs-fold", b"GET /smuggle/obs-fold HTTP/1.1\r\nHost: api.test:8443\r\nX-A: b\r\n c\r\n\r\n"),
    ("Transfer-Encoding other than chunked",
     b"POST /smuggle/te HTTP/1.1\r\nHost: api.test:8443\r\nTransfer-Encoding: chunked, identity\r\n\r\n"),
]


def t_smuggling():
    for name, req in SMUGGLING:
        marker = req.split(b" ")[1].decode()
        # Inside an inspected TLS tunnel (origin-form).
        s = tls_tunnel("api.test", 8443)
        s.sendall(req)
        st, _, _ = parse(read_all(s, 3))
        s.close()
        # On the forward path (absolute-form).
        fwd = req.replace(b" /smuggle", b" http://api.test:8080/smuggle", 1)
        fwd = fwd.replace(b"Host: api.test:8443", b"Host: api.test:8080")
        st2, _, _ = exchange(fwd, 3)
        point(st == 400 and st2 == 400 and not upstream_saw(marker),
              "smuggling refused before upstream: " + name, (st, st2))
    s = tls_tunnel("api.test", 8443)
    s.sendall(b"GET /smuggle/h2c HTTP/1.1\r\nHost: api.test:8443\r\nConnection: Upgrade, HTTP2-Settings"
              b"\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
    st, _, body = parse(read_all(s, 3))
    s.close()
    point(st == 403 and b"unsupported_l7_protocol" in body and not upstream_saw("/smuggle/h2c"),
          "h2c upgrade on a rest endpoint: 403 unsupported_l7_protocol", (st, body))
    s, st0 = tunnel("api.test", 8443)
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    st, _, body = parse(read_all(s, 3))
    s.close()
    point(st0 == 200 and st == 403 and b"unsupported_l7_protocol" in body,
          "HTTP/2 preface on a rest endpoint: 403 unsupported_l7_protocol", (st0, st, body))
    s = tls_tunnel("api.test", 8443)
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    st, _, body = parse(read_all(s, 3))
    s.close()
    point(st == 403 and b"unsupported_l7_protocol" in body,
          "HTTP/2 preface inside TLS on a rest endpoint: 403", (st, body))


def t_oversized():
    big = b"X-Big: " + b"a" * 9000 + b"\r\n"
    st, _, body = exchange(b"GET http://api.test:8080/big HTTP/1.1\r\nHost: api.test:8080\r\n" +
                           big + b"\r\n")
    point(st == 431 and body == b"", "oversized head at the proxy's door: 431", st)
    s = tls_tunnel("api.test", 8443)
    s.sendall(b"GET /big HTTP/1.1\r\nHost: api.test:8443\r\nX-Big: " + b"a" * 17000 + b"\r\n\r\n")
    st, _, _ = parse(read_all(s, 3))
    s.close()
    point(st == 431, "oversized head inside a tunnel: 431", st)


def t_fronting():
    s = tls_tunnel("api.test", 8443)
    s.sendall(b"GET /front HTTP/1.1\r\nHost: other.test\r\n\r\n")
    st, _, body = parse(read_all(s, 3))
    s.close()
    point(st == 403 and b"request_authority_mismatch" in body and not upstream_saw("/front"),
          "domain fronting: Host differing from the CONNECT authority is denied", (st, body))
    s, st0 = tunnel("api.test", 8080)
    s.sendall(b"PROPFIND /front2 HTTP/1.1\r\nHost: other.test\r\n\r\n")
    st, _, body = parse(read_all(s, 3))
    s.close()
    point(st0 == 200 and st == 403 and b"request_authority_mismatch" in body
          and not upstream_saw("/front2"),
          "domain fronting with an unlisted method in a cleartext tunnel is denied", (st, body))
    try:
        s = tls_tunnel("api.test", 8443, sni="other.test")
        s.close()
        ok = False
    except (ssl.SSLError, OSError):
        ok = True
    time.sleep(0.2)
    point(ok and "stage=tls" in proxy_log() and "other.test" in proxy_log(),
          "domain fronting: SNI differing from the CONNECT authority fails the handshake")


def t_ssrf_and_upstream_faults():
    st, _, body = exchange(b"GET http://loop.test:8080/ HTTP/1.1\r\nHost: loop.test:8080\r\n\r\n")
    point(st == 403 and body.startswith(b'{"error":"ssrf_denied","detail":"GET loop.test:8080 '
                                        b'blocked: '),
          "SSRF: a declared name resolving to loopback is blocked", (st, body))
    st, _, body = exchange(b"CONNECT loop.test:8080 HTTP/1.1\r\nHost: loop.test:8080\r\n\r\n")
    point(st == 403 and body.startswith(b'{"error":"ssrf_denied","detail":"CONNECT loop.test:8080'
                                        b' blocked: '),
          "SSRF: CONNECT to a loopback answer is blocked", (st, body))
    r = curl("http://%s:8080/by-ip" % E.up)
    point('"/by-ip"' in r.stdout, "IP-literal endpoint declared in the policy is reachable",
          r.stdout + r.stderr)
    t0 = time.time()
    st, _, body = exchange(b"GET http://api.test:8081/reset HTTP/1.1\r\nHost: api.test:8081\r\n\r\n")
    point(st == 502 and b"upstream_unreachable" in body, "upstream reset: 502", (st, body))
    t0 = time.time()
    st, _, body = exchange(b"GET http://api.test:8082/stall HTTP/1.1\r\nHost: api.test:8082\r\n\r\n",
                           15)
    took = time.time() - t0
    point(st == 504 and b"upstream_timeout" in body and took < 10,
          "upstream stall: 504 after the response timeout", (st, body, took))
    r = curl("--cacert", E.tmp + "/sandbox-ca.pem", "-i", "--suppress-connect-headers",
             "https://bad.test:8443/x")
    point(r.stdout.startswith("HTTP/1.1 502") and '"upstream_tls_failed"' in r.stdout
          and "certificate verify failed" in r.stdout and not upstream_saw("GET /x "),
          "upstream certificate for another name: refused, 502 with the reason",
          r.stdout + r.stderr)


def t_many_idle():
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2000
    if hard < want + 100:
        point(True, "2000 idle connections # SKIP descriptor limit %d" % hard)
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # A proxy of its own, with the default 30 s header timeout (the shared
    # one cuts unfinished heads after 2 s).
    pf = E.tmp + "/port-idle"
    px = subprocess.Popen(
        [BIN, "applet", "openshell-proxy", "--policy", E.tmp + "/policy.yaml", "--listen",
         "127.0.0.1:0", "--port-file", pf, "--resolve", "api.test:" + E.up],
        stderr=subprocess.DEVNULL)
    for _ in range(100):
        if os.path.exists(pf) and open(pf).read().strip():
            break
        time.sleep(0.05)
    saved = E.port, E.proxy_url
    E.port = int(open(pf).read())
    E.proxy_url = "http://127.0.0.1:%d" % E.port
    idle = []
    t0 = time.time()
    try:
        for i in range(want):
            c = connect()
            if i % 2:
                c.sendall(b"GET http://api.test:8080/partial")  # an unfinished head
            idle.append(c)
        r = curl("http://api.test:8080/while-busy")
        ok = '"/while-busy"' in r.stdout
        s, st = tunnel("api.test", 8090)
        s.sendall(b"ping")
        s.settimeout(5)
        ok2 = st == 200 and s.recv(4) == b"ping"
        s.close()
        took = time.time() - t0
        # They were still held open: none was closed by the proxy meanwhile.
        alive = 0
        for c in idle[:50]:
            c.setblocking(False)
            try:
                alive += c.recv(1) != b""
            except BlockingIOError:
                alive += 1
    finally:
        for c in idle:
            c.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        E.port, E.proxy_url = saved
        px.send_signal(signal.SIGTERM)
        px.wait(10)
    point(ok and ok2 and alive == 50, "2000 idle connections do not stop new requests",
          (r.stderr, alive, took))


def t_cli():
    proxy = [BIN, "applet", "openshell-proxy"]
    r = run(proxy + ["--help"])
    point(r.returncode == 0 and "--upstream-ca FILE" in r.stdout and "--listen-fd" in r.stdout,
          "--help documents --upstream-ca and --listen-fd")
    r = run(proxy + ["--listen", "127.0.0.1:0"])
    point(r.returncode == 2 and "--policy" in r.stderr, "missing --policy: usage error (2)",
          r.stderr)
    bad = E.tmp + "/bad.yaml"
    with open(bad, "w") as f:
        f.write("network_policies:\n  x:\n    endpoints: 3\n")
    r = run(proxy + ["--policy", bad, "--listen", "127.0.0.1:0"])
    point(r.returncode == 1 and "bad.yaml" in r.stderr, "invalid policy: refuses to start",
          r.stderr)
    # The supervisor's hand-off: a listening socket and a pipe for the CA.
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    rfd, wfd = os.pipe()
    p = subprocess.Popen(proxy + ["--policy", E.tmp + "/policy.yaml", "--listen-fd",
                                  str(ls.fileno()), "--ca-pem-fd", str(wfd)],
                         pass_fds=(ls.fileno(), wfd), stderr=subprocess.DEVNULL)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        pem = f.read()
    s = socket.create_connection(ls.getsockname(), timeout=5)
    ls.close()
    s.sendall(b"CONNECT nope.test:443 HTTP/1.1\r\nHost: nope.test:443\r\n\r\n")
    st, _, body = parse(read_all(s, 5))
    s.close()
    p.send_signal(signal.SIGTERM)
    rc = p.wait(5)
    point(pem.startswith(b"-----BEGIN CERTIFICATE-----\n") and st == 403
          and b"nope.test:443" in body and rc == 0,
          "--listen-fd serves a socket made by the caller; --ca-pem-fd hands over the CA; "
          "SIGTERM exits 0", (pem[:40], st, body, rc))
    point(E.proxy.poll() is None, "the proxy survived every test")


def t_reload():
    # An open tunnel decided under the old policy, then SIGHUP with 8080 removed.
    s, st = tunnel("api.test", 8090)
    pol = E.tmp + "/policy.yaml"
    with open(pol) as f:
        text = f.read()
    with open(pol, "w") as f:
        f.write(text.replace("ports: [8080, 8081, 8082, 8090, 8093, 8099]", "ports: [8081]"))
    E.proxy.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    closed = read_all(s, 3) == b""
    s.close()
    st2, _, body = exchange(b"GET http://api.test:8080/after-reload HTTP/1.1\r\n"
                            b"Host: api.test:8080\r\n\r\n")
    point(st == 200 and closed and st2 == 403 and b"policy_denied" in body,
          "SIGHUP reload: new policy applies, tunnels under the old one are closed",
          (st, closed, st2, body))
    with open(pol, "w") as f:
        f.write("network_policies: [")
    E.proxy.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    st3, _, _ = exchange(b"GET http://api.test:8081/still HTTP/1.1\r\nHost: api.test:8081\r\n\r\n")
    point(st3 == 502 and "keeping the last good policy" in proxy_log() and E.proxy.poll() is None,
          "SIGHUP with an invalid policy keeps the last good one", st3)


def wait_status(req, want, limit=3.0):
    """Send REQ until it is answered WANT; returns the seconds it took or None."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        st, _, _ = exchange(req)
        if st == want:
            return time.monotonic() - t0
        time.sleep(0.02)
    return None


def t_inotify():
    # Edits are picked up without a signal: an editor's rename-replace, then an
    # in-place invalid edit (last good policy kept), within a second each.
    pol = E.tmp + "/policy.yaml"
    with open(E.tmp + "/policy.yaml.orig") as f:
        text = f.read()
    req = (b"GET http://api.test:8080/inotify HTTP/1.1\r\nHost: api.test:8080\r\n"
           b"Connection: close\r\n\r\n")
    st0, _, _ = exchange(req)
    with open(pol + ".tmp", "w") as f:
        f.write(text)
    os.rename(pol + ".tmp", pol)
    took = wait_status(req, 200)
    point(st0 == 403 and took is not None and took < 1.0,
          "inotify: a rename-replaced policy applies within a second (%s s)"
          % (took if took is None else "%.2f" % took), (st0, took))
    before = proxy_log().count("keeping the last good policy")
    with open(pol, "w") as f:
        f.write("network_policies: {bad: [")
    time.sleep(0.6)
    st1, _, _ = exchange(req)
    log = proxy_log()
    point(st1 == 200 and log.count("keeping the last good policy") > before
          and "file changed" in log,
          "inotify: an invalid edit keeps the last good policy and says why", st1)
    with open(pol, "w") as f:
        f.write(text)
    # --on-invalid-policy deny-all: a second proxy on its own file.
    d = E.tmp + "/denyall"
    os.mkdir(d)
    with open(d + "/p.yaml", "w") as f:
        f.write(text)
    log2 = open(d + "/log", "w")
    p = subprocess.Popen([BIN, "applet", "openshell-proxy", "--policy", d + "/p.yaml",
                          "--listen", "127.0.0.1:0", "--port-file", d + "/port",
                          "--resolve", "api.test:" + E.up, "--on-invalid-policy", "deny-all",
                          "--log-format", "text"], stdout=subprocess.DEVNULL, stderr=log2)
    try:
        for _ in range(100):
            if os.path.exists(d + "/port") and open(d + "/port").read().strip():
                break
            time.sleep(0.05)
        port = int(open(d + "/port").read())

        def ask():
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(req)
            r = parse(read_all(s, 5))[0]
            s.close()
            return r
        a = ask()
        with open(d + "/p.yaml", "w") as f:
            f.write("version: 1\nnetwork_policies: {x: {endpoints: [{host: a, port: 0}]}}\n")
        t0 = time.monotonic()
        b = a
        # A request caught by the swap itself is closed unanswered (status
        # 0: connections made under the old policy are cut); ask again.
        while time.monotonic() - t0 < 3 and b in (a, 0):
            time.sleep(0.02)
            b = ask()
        took = time.monotonic() - t0
        with open(d + "/log") as f:
            l2 = f.read()
        point(a == 200 and b == 403 and took < 1.0 and "denying every connection" in l2,
              "--on-invalid-policy deny-all: an invalid edit denies everything (%.2f s)" % took,
              (a, b, took, l2[-600:]))
    finally:
        p.terminate()
        p.wait(5)
        log2.close()


def t_log_hygiene():
    log = proxy_log()
    leaks = [x for x in ("secret=1", "dXNlcjpzZWNyZXQ=", "user:secret", "page=2", "a=b")
             if x in log]
    decisions = log.count(" decision ")
    point(not leaks and decisions > 40,
          "decision log: one record per decision, no query strings, credentials or bodies",
          (leaks, decisions))
    # Allowed connections end with an accounting record (bytes, duration)
    # joined to their decision by conn id.
    allowed = set()
    closes = {}
    for line in log.splitlines():
        m = re.search(r" conn=(\d+) ", line + " ")
        if not m:
            continue
        if " decision " in line and " action=allow " in line:
            allowed.add(m.group(1))
        elif " close " in line and " policy=" in line:
            closes[m.group(1)] = line
    bad = [l for l in closes.values()
           if not re.search(r" bytes_up=\d+ bytes_down=\d+ duration_ms=\d+ ", l + " ")]
    missing = allowed - set(closes)
    point(allowed and closes and not bad and len(missing) <= len(allowed) // 10,
          "decision log: allowed connections end with bytes and duration (%d allowed, %d closed)"
          % (len(allowed), len(closes)), (bad[:3], sorted(missing)[:10]))


def main():
    if os.geteuid() != 0:
        point.skip_all("proxy e2e", "needs root for network namespaces")
    for tool in ("ip", "openssl", "curl"):
        if not shutil.which(tool):
            point.skip_all("proxy e2e", "%s not installed" % tool)
    if not BIN or not os.path.exists(BIN):
        point.skip_all("proxy e2e", "OPENSHELL_BIN not set")
    try:
        setup()
    except Exception as e:  # noqa: BLE001
        teardown()
        point.skip_all("proxy e2e", "cannot set up the network namespace: %s" % e)
    try:
        for t in (t_forward_and_deny_bodies, t_dns, t_tunnels, t_inspected, t_bodies, t_websocket, t_websocket_forward,
                  t_keepalive,
                  t_smuggling,
                  t_oversized, t_fronting, t_ssrf_and_upstream_faults, t_many_idle, t_cli, t_reload, t_inotify,
                  t_log_hygiene):
            try:
                t()
            except Exception as e:  # noqa: BLE001
                point(False, t.__name__ + " raised", repr(e))
    finally:
        if point.failed:
            print("# proxy log tail:")
            for line in proxy_log().splitlines()[-25:]:
                print("# " + line)
        teardown()
    sys.exit(point.plan())


if __name__ == "__main__":
    main()
