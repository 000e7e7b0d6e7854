#!/usr/bin/python3
# proxy_cred.py: credential injection by the standalone openshell-proxy
# (doc/providers.md), with curl and raw sockets as clients and recording
# upstreams (proxy_cred_servers.py) in a network namespace this test
# creates. The upstream log shows exactly what left the proxy.
#
# Covers: each injection point (exact header, Bearer, Basic, query value,
# path segment, revisioned placeholder) on the forward path and inside a
# TLS-terminated tunnel; reference attack cases 36 (unbound host), 37
# (placeholder in a body: raw, split across writes, percent-encoded),
# 38 (tls: skip endpoint with a credential), 39 (CR/LF and path-breaking
# values), 40 (unknown and malformed placeholders); rotation through the
# watched file and through the control channel without a restart; a bad
# document keeping the previous one; no secret or placeholder in the log.
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import e2elib
import proxy_cred_lib

BIN = os.environ.get("OPENSHELL_BIN", "")
PROXY = [BIN, "applet", "openshell-proxy"]  # or the ASan build (second round)
point = e2elib.Tap(diag_lines=30)

SECRETS = ["ghp-SECRET-one", "pathSECRETtwo", "SECRET-rotated-3", "SECRET-ctl-4",
           'body"SECRET']
PH = "openshell:resolve:env:"


class Env:
    pass


E = Env()


def creds_doc(github="ghp-SECRET-one", rev=1):
    return {
        "revision": rev,
        "environment": {"GITHUB_TOKEN": PH + "GITHUB_TOKEN"},
        "credentials": [
            {"provider": "github", "key": "GITHUB_TOKEN", "value": github,
             "endpoints": [{"host": "api.test", "port": 8080},
                           {"host": "api.test", "port": 8443}]},
            {"provider": "body", "key": "BODYKEY", "value": "body\"SECRET",
             "endpoints": [{"host": "body.test", "port": 8080},
                           {"host": "body.test", "port": 8443}]},
            {"provider": "tg", "key": "BOT", "value": "pathSECRETtwo",
             "endpoints": [{"host": "api.test", "port": 8080},
                           {"host": "api.test", "port": 8443}]},
            {"provider": "evil", "key": "EVIL_CRLF", "value": "abc\r\nX-Evil: 1",
             "endpoints": [{"host": "api.test", "port": 8080}]},
            {"provider": "evil", "key": "EVIL_PATH", "value": "../admin",
             "endpoints": [{"host": "api.test", "port": 8080}]},
            {"provider": "skip", "key": "SKIPKEY", "value": "skip-SECRET",
             "endpoints": [{"host": "skip.test", "port": 8443}]},
        ],
        "inference": None,
    }


def write_creds(path, doc):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.rename(tmp, path)


def start_proxy(extra, log):
    port_file = E.tmp + "/port.%d" % len(E.procs)
    p = subprocess.Popen(
        PROXY + ["--policy", E.tmp + "/policy.yaml",
         "--listen", "127.0.0.1:0", "--port-file", port_file,
         "--resolve", "api.test:" + E.up, "--resolve", "uploads.test:" + E.up,
         "--resolve", "skip.test:" + E.up, "--resolve", "body.test:" + E.up, "--upstream-ca", E.tmp + "/ca.pem",
         "--bundle-out", E.tmp + "/bundle.pem", "--log-format", "text",
         "--log-level", "debug"] + extra,
        stdout=subprocess.DEVNULL, stderr=open(log, "w"), pass_fds=E.pass_fds,
        env=dict(os.environ, **proxy_cred_lib.ENV))
    E.procs.append(p)
    E.logs.append(log)
    for _ in range(200):
        if os.path.exists(port_file) and open(port_file).read().strip():
            break
        time.sleep(0.05)
    return int(open(port_file).read())


def setup():
    E.tmp = tempfile.mkdtemp(prefix="openshell-cred-e2e.")
    E.logs = []
    E.procs = []
    E.pass_fds = ()
    E.net = e2elib.Netns("pc").create()
    E.ns, E.up = E.net.ns, E.net.up
    t = E.tmp
    e2elib.make_test_ca(t, "openshell cred test CA", ["api.test", "skip.test", "body.test"],
                        [E.up])
    E.uplog = t + "/upstream.log"
    open(E.uplog, "w").close()
    E.servers = e2elib.start_server(
        E.ns, ["proxy_cred_servers.py", E.up, t + "/srv.pem", t + "/srv.key", E.uplog],
        "upstream servers")
    with open(t + "/policy.yaml", "w") as f:
        f.write("""version: 1
network_policies:
  api:
    endpoints:
      - host: api.test
        port: 8080
      - host: uploads.test
        port: 8080
      - host: skip.test
        port: 8443
        tls: skip
    binaries:
      - path: /usr/bin/curl
  inspected:
    endpoints:
      - host: api.test
        port: 8443
        protocol: rest
        enforcement: enforce
        access: full
    binaries:
      - path: /usr/bin/curl
  bodies:
    endpoints:
      - host: body.test
        ports: [8080, 8443]
        protocol: rest
        enforcement: enforce
        access: full
        request_body_credential_rewrite: true
    binaries:
      - path: /usr/bin/curl
""")
    E.cred = t + "/creds.json"
    write_creds(E.cred, creds_doc())
    E.log = t + "/proxy.log"
    E.port = start_proxy(["--credentials", E.cred], E.log)
    E.proxy = "http://127.0.0.1:%d" % E.port


def teardown():
    e2elib.stop(*(getattr(E, "procs", []) + [getattr(E, "servers", None)]))
    if hasattr(E, "net"):
        E.net.delete()
    if hasattr(E, "tmp"):
        shutil.rmtree(E.tmp, ignore_errors=True)


def uplog_lines():
    with open(E.uplog) as f:
        return [json.loads(x) for x in f if x.strip()]


def curl(url, *args, port=None):
    """(status, body) through the proxy."""
    cmd = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", "10",
           "-x", "http://127.0.0.1:%d" % (port or E.port), "--cacert", E.tmp + "/bundle.pem",
           url] + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    body, _, code = r.stdout.rpartition("\n")
    try:
        return int(code), body
    except ValueError:
        return 0, r.stdout + r.stderr


def got(body):
    try:
        return json.loads(body)
    except ValueError:
        return {}


def hdr(rec, name):
    for k, v in rec.get("headers", []):
        if k.lower() == name.lower():
            return v
    return None


def raw(data_parts, pause=0.2, timeout=5):
    s = socket.create_connection(("127.0.0.1", E.port), timeout=timeout)
    for i, d in enumerate(data_parts):
        if i:
            time.sleep(pause)
        s.sendall(d)
    s.settimeout(timeout)
    out = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
    except (socket.timeout, ConnectionResetError):
        pass
    s.close()
    return out


def status_of(resp):
    try:
        return int(resp.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0


def body_json(resp):
    try:
        return json.loads(resp.partition(b"\r\n\r\n")[2])
    except ValueError:
        return {}


def tests():
    tok = PH + "GITHUB_TOKEN"
    # Injection points, forward path.
    st, b = curl("http://api.test:8080/user", "-H", "Authorization: Bearer " + tok)
    r = got(b)
    point(st == 200 and hdr(r, "Authorization") == "Bearer ghp-SECRET-one",
          "forward: Bearer placeholder replaced", b)
    st, b = curl("http://api.test:8080/x", "-H", "X-Api-Key: " + tok)
    point(st == 200 and hdr(got(b), "X-Api-Key") == "ghp-SECRET-one",
          "forward: a header that is exactly a placeholder", b)
    st, b = curl("http://api.test:8080/x", "-u", "user:" + tok)
    import base64
    a = hdr(got(b), "Authorization") or ""
    dec = base64.b64decode(a[6:]).decode() if a.startswith("Basic ") else ""
    point(st == 200 and dec == "user:ghp-SECRET-one", "forward: Basic auth decoded, rewritten, re-encoded", b)
    st, b = curl("http://api.test:8080/search?q=1&token=" + tok + "&x=y")
    point(st == 200 and got(b).get("target") == "/search?q=1&token=ghp-SECRET-one&x=y",
          "forward: query parameter value", b)
    st, b = curl("http://api.test:8080/bot" + PH + "BOT/sendMessage")
    point(st == 200 and got(b).get("target") == "/botpathSECRETtwo/sendMessage",
          "forward: inside a path segment", b)
    st, b = curl("http://api.test:8080/x", "-H", "Authorization: token " + PH + "v7_GITHUB_TOKEN")
    point(st == 200 and hdr(got(b), "Authorization") == "token ghp-SECRET-one",
          "forward: revisioned placeholder vREV_KEY", b)
    # Inside a TLS-terminated tunnel (inspected endpoint).
    st, b = curl("https://api.test:8443/user?access_token=" + tok, "-H",
                 "Authorization: Bearer " + tok)
    r = got(b)
    point(st == 200 and hdr(r, "Authorization") == "Bearer ghp-SECRET-one" and
          r.get("target") == "/user?access_token=ghp-SECRET-one",
          "tunnel (TLS terminated): header and query injected", b)

    # Attack 36: credential to an unbound host.
    before = len(uplog_lines())
    st, b = curl("http://uploads.test:8080/up", "-H", "Authorization: Bearer " + tok)
    point(st == 403 and got(b).get("error") == "credential_endpoint_mismatch" and
          len(uplog_lines()) == before,
          "attack 36: unbound host -> 403 credential_endpoint_mismatch, nothing sent", b)

    # Attack 37: placeholder in a body (no rewrite opt-in).
    before = len(uplog_lines())
    body = ('{"token":"%s"}' % tok).encode()
    head = (b"POST http://api.test:8080/p HTTP/1.1\r\nHost: api.test:8080\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
    resp = raw([head + body])
    ups = [x for x in uplog_lines()[before:] if PH in x.get("body", "")]
    point(status_of(resp) == 403 and body_json(resp).get("error") == "credential_in_body" and
          not ups, "attack 37: placeholder in the body refused, never upstream", resp[:300])
    cut = body.index(b"resolve") + 3
    resp = raw([head + body[:cut], body[cut:]], pause=0.3)
    ups = [x for x in uplog_lines()[before:] if PH in x.get("body", "")]
    point(status_of(resp) == 403 and not ups,
          "attack 37: split across two writes refused", resp[:300])
    before = len(uplog_lines())
    enc = "".join("%%%02X" % ord(ch) for ch in tok)
    body2 = ("token=" + enc).encode()
    head2 = (b"POST http://api.test:8080/p HTTP/1.1\r\nHost: api.test:8080\r\n"
             b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n"
             % len(body2))
    resp = raw([head2 + body2])
    ups = [x for x in uplog_lines()[before:] if "resolve" in x.get("body", "").lower()]
    point(status_of(resp) == 403 and not ups,
          "attack 37: fully percent-encoded placeholder refused", resp[:300])
    chunked = (b"POST http://api.test:8080/p HTTP/1.1\r\nHost: api.test:8080\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")
    half = tok.encode()
    resp = raw([chunked + b"%x\r\n%s\r\n" % (10, half[:10]),
                b"%x\r\n%s\r\n0\r\n\r\n" % (len(half) - 10, half[10:])], pause=0.3)
    ups = [x for x in uplog_lines()[before:] if PH in x.get("body", "")]
    point(status_of(resp) == 403 and not ups,
          "attack 37: split across chunks refused", resp[:300])

    # Bodies, where the endpoint opted in (request_body_credential_rewrite).
    bph = PH + "BODYKEY"
    st, b = curl("http://body.test:8080/p", "-H", "Content-Type: application/json",
                 "--data-binary", '{"k":"%s","n":1}' % bph)
    r = got(b)
    point(st == 200 and r.get("body") == '{"k":"body\\"SECRET","n":1}' and
          hdr(r, "Content-Length") == str(len(r.get("body", ""))),
          "opt-in body rewrite (forward, JSON): value JSON-escaped, Content-Length fixed", b)
    st, b = curl("https://body.test:8443/p", "-H", "Content-Type: application/x-www-form-urlencoded",
                 "-H", "Transfer-Encoding: chunked", "--data-binary", "a=1&k=" + bph)
    r = got(b)
    point(st == 200 and r.get("body") == "a=1&k=body%22SECRET" and
          hdr(r, "Transfer-Encoding") is None,
          "opt-in body rewrite (TLS tunnel, chunked form): de-chunked, percent-encoded", b)
    st, b = curl("http://body.test:8080/p", "-H", "Content-Type: application/octet-stream",
                 "--data-binary", bph)
    point(st == 500, "opt-in body rewrite: an unsupported body type keeps the marker -> 500", b)
    big = E.tmp + "/big.json"
    with open(big, "w") as f:
        f.write('{"k":"%s","pad":"%s"}' % (bph, "x" * 300000))
    st, b = curl("http://body.test:8080/p", "-H", "Content-Type: application/json",
                 "--data-binary", "@" + big)
    point(st == 413, "opt-in body rewrite: a body over 256 KiB -> 413", b[:200])

    # Attack 38: a credentialed endpoint with tls: skip.
    resp = raw([b"CONNECT skip.test:8443 HTTP/1.1\r\nHost: skip.test:8443\r\n\r\n"])
    point(status_of(resp) == 403 and body_json(resp).get("error") == "uninspected_credentials",
          "attack 38: CONNECT to a credentialed tls: skip endpoint -> 403", resp[:300])

    # Attack 39: values that would inject.
    before = len(uplog_lines())
    st, b = curl("http://api.test:8080/x", "-H", "Authorization: Bearer " + PH + "EVIL_CRLF")
    point(st == 500 and got(b).get("error") == "credential_injection_failed" and
          len(uplog_lines()) == before,
          "attack 39: value with CR/LF refused (500), nothing upstream", b)
    st, b = curl("http://api.test:8080/files/" + PH + "EVIL_PATH/x")
    point(st == 500 and len(uplog_lines()) == before,
          "attack 39: path value with .. refused (500)", b)
    st, b = curl("https://api.test:8443/x", "-H", "Authorization: Bearer " + PH + "NOPE")
    point(st == 500 and got(b).get("error") == "credential_unavailable",
          "attack 39/40: tunnel answers 500 credential_unavailable", b)

    # Attack 40: unknown / malformed placeholders.
    st, b = curl("http://api.test:8080/x", "-H", "Authorization: Bearer " + PH + "NOPE")
    point(st == 500 and got(b).get("error") == "credential_injection_failed",
          "attack 40: unknown key -> 500", b)
    st, b = curl("http://api.test:8080/x", "-H", "Authorization: Bearer " + PH)
    point(st == 500, "attack 40: truncated placeholder in a header -> 500", b)
    st, b = curl("http://api.test:8080/x?k=" + PH + "-")
    point(st == 400 and got(b).get("error") == "invalid_credential_placeholder",
          "attack 40: malformed placeholder in the target -> 400", b)
    st, b = curl("http://api.test:8080/x", "-H", "X-Note: see " + tok + " here")
    point(st == 500, "a placeholder embedded in other header text is refused", b)
    st, b = curl("http://api.test:8080/x", "-H", "X-A: OPENSHELL-RESOLVE-ENV-GITHUB_TOKEN")
    point(st == 500, "alias form of the marker is never forwarded verbatim", b)
    ups = [x for x in uplog_lines() if PH in json.dumps(x) or "RESOLVE-ENV" in json.dumps(x)]
    point(not ups, "no placeholder ever reached an upstream", ups[:2])

    # Rotation through the watched file (no restart).
    write_creds(E.cred, creds_doc(github="SECRET-rotated-3", rev=2))
    ok = False
    for _ in range(40):
        time.sleep(0.1)
        st, b = curl("http://api.test:8080/x", "-H", "Authorization: Bearer " + tok)
        if hdr(got(b), "Authorization") == "Bearer SECRET-rotated-3":
            ok = True
            break
    point(ok, "rotation: an edited credentials file takes effect without a restart", b)
    with open(E.cred, "w") as f:
        f.write('{"revision": 3, "credentials": [{"key": "bad key", "value": "x"}]}')
    time.sleep(0.6)
    st, b = curl("http://api.test:8080/x", "-H", "Authorization: Bearer " + tok)
    log = open(E.log).read()
    point(hdr(got(b), "Authorization") == "Bearer SECRET-rotated-3" and
          "credentials from" in log and "refused" in log,
          "an invalid document is refused and the previous one stays", b)

    # The control channel (the supervisor's path): agent pid and the document.
    rfd, wfd = os.pipe()
    E.pass_fds = (rfd,)
    log2 = E.tmp + "/proxy2.log"
    port2 = start_proxy(["--control-fd", str(rfd)], log2)
    os.close(rfd)
    os.write(wfd, b"agent %d\n" % os.getpid())
    doc = creds_doc(github="SECRET-ctl-4", rev=9)
    os.write(wfd, json.dumps({"type": "credentials", "doc": doc}).encode() + b"\n")
    time.sleep(0.3)
    st, b = curl("http://api.test:8080/x", "-H", "Authorization: Bearer " + tok, port=port2)
    point(st == 200 and hdr(got(b), "Authorization") == "Bearer SECRET-ctl-4",
          "control channel: {\"type\":\"credentials\"} line installs the document", b)
    os.write(wfd, b'{"type":"credentials","doc":{"revision":"x"}}\n')
    time.sleep(0.2)
    st, b = curl("http://api.test:8080/x", "-H", "Authorization: Bearer " + tok, port=port2)
    point(st == 200 and hdr(got(b), "Authorization") == "Bearer SECRET-ctl-4",
          "control channel: a bad document keeps the previous one", b)
    os.close(wfd)
    time.sleep(0.3)

    # Nothing secret in the logs.
    logs = open(E.log).read() + open(log2).read()
    leaked = [s for s in SECRETS + ["skip-SECRET", PH, "GITHUB_TOKEN", "EVIL_CRLF"] if s in logs]
    point(not leaked and "[CREDENTIAL]" in logs,
          "logs hold no secret, no placeholder, no key name; paths show [CREDENTIAL]", leaked)


def asan_round():
    """The same tests against the proxy built with ASan/UBSan/LSan; each
    proxy must then stop cleanly on SIGTERM with no sanitizer report."""
    global PROXY
    build = tempfile.mkdtemp(prefix="openshell-cred-asan.")
    try:
        exe, why = proxy_cred_lib.build_asan_proxy(build)
        if not exe:
            point.skip("credentials under ASan", why)
            return
        PROXY = [exe]
        point.prefix = "asan: "
        try:
            setup()
            tests()
            rcs, reports = [], []
            for p, log in zip(E.procs, E.logs):
                if p.poll() is None:
                    p.terminate()
                rcs.append(p.wait(30))
                reports.append(proxy_cred_lib.sanitizer_report(log))
            point(rcs[0] == 0 and not any(reports),
                  "the proxies end with no sanitizer report (rc %s)" % rcs, reports)
        finally:
            teardown()
    finally:
        shutil.rmtree(build, ignore_errors=True)


def main():
    if not BIN or not os.access(BIN, os.X_OK):
        print("1..0 # SKIP OPENSHELL_BIN not set")
        return 0
    if os.geteuid() != 0 or not shutil.which("curl"):
        print("1..0 # SKIP needs root (network namespaces) and curl")
        return 0
    try:
        setup()
        tests()
    except Exception:  # report, then clean up
        import traceback
        point(False, "test harness", traceback.format_exc())
    finally:
        teardown()
    try:
        asan_round()
    except Exception:
        import traceback
        point(False, "test harness (asan)", traceback.format_exc())
    return point.plan()


if __name__ == "__main__":
    sys.exit(main())
