#!/usr/bin/python3
# inference.py: https://inference.local served by the standalone
# openshell-proxy (doc/providers.md "Proxy: inference.local"), with curl,
# python over a raw TLS tunnel, and node running the official `openai` and
# `@anthropic-ai/sdk` npm packages (installed by this test with npm into a
# temporary directory). The model backend (proxy_cred_servers.py, port
# 9080) runs in a network namespace this test creates and records exactly
# what it received.
#
# Covers: caller credentials and unknown headers stripped, the route's key
# injected (Bearer for openai, x-api-key + anthropic-version for
# anthropic), the model forced, /v1 de-duplication, SSE relayed chunk by
# chunk as the backend writes it (timestamps), buffered paths (models,
# embeddings), keep-alive; reference attack cases 42 (other paths, on a
# fresh and on a used connection) and 43 (11 MiB body, 5000 chunks, a
# 40 MiB stream, a stalled stream, backend text shaped like SSE); no route;
# an api mismatch; a route swap taking effect without a restart; no key in
# the proxy's log.
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time

import e2elib
import proxy_cred_lib

BIN = os.environ.get("OPENSHELL_BIN", "")
PROXY = [BIN, "applet", "openshell-proxy"]  # or the ASan build (second round)
point = e2elib.Tap(diag_lines=30)
KEY = "sk-BACKEND-KEY-1234"
AKEY = "ant-BACKEND-KEY-5678"


class Env:
    pass


E = Env()


def route_doc(api="openai", rev=1, model="route-model"):
    if api is None:
        inf = None
    elif api == "openai-tls":
        inf = {"provider": "openai", "api": "openai", "base_url": "https://api.test:9443/v1/",
               "model": model, "api_key": KEY}
    elif api == "openai":
        inf = {"provider": "openai", "api": "openai", "base_url": "http://%s:9080/v1" % E.up,
               "model": model, "api_key": KEY}
    else:
        inf = {"provider": "anthropic", "api": "anthropic", "base_url": "http://%s:9080" % E.up,
               "model": model, "api_key": AKEY}
    return {"revision": rev, "environment": {}, "credentials": [], "inference": inf}


def write_doc(doc):
    tmp = E.cred + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.rename(tmp, E.cred)
    time.sleep(0.5)  # the watch debounces 100 ms


def setup():
    E.tmp = tempfile.mkdtemp(prefix="openshell-infer-e2e.")
    E.net = e2elib.Netns("pi").create()
    E.ns, E.up = E.net.ns, E.net.up
    t = E.tmp
    e2elib.make_test_ca(t, "openshell infer test CA", ["api.test"], [E.up])
    E.uplog = t + "/upstream.log"
    open(E.uplog, "w").close()
    E.servers = e2elib.start_server(
        E.ns, ["proxy_cred_servers.py", E.up, t + "/srv.pem", t + "/srv.key", E.uplog],
        "backend")
    with open(t + "/policy.yaml", "w") as f:
        f.write("version: 1\n")  # no network policies: only inference.local works
    E.cred = t + "/creds.json"
    with open(E.cred, "w") as f:
        json.dump(route_doc(), f)
    E.log = t + "/proxy.log"
    E.proxy = subprocess.Popen(
        PROXY + ["--policy", t + "/policy.yaml", "--listen",
         "127.0.0.1:0", "--port-file", t + "/port", "--credentials", E.cred,
         "--bundle-out", t + "/bundle.pem", "--ca-out", t + "/sandbox-ca.pem",
         "--inference-idle-timeout", "2", "--log-format", "text", "--log-level", "debug",
         "--resolve", "api.test:" + E.up, "--resolve", "evil.test:" + E.up,
         "--upstream-ca", t + "/ca.pem"],
        stdout=subprocess.DEVNULL, stderr=open(E.log, "w"),
        env=dict(os.environ, **proxy_cred_lib.ENV))
    for _ in range(200):
        if os.path.exists(t + "/port") and open(t + "/port").read().strip():
            break
        time.sleep(0.05)
    E.port = int(open(t + "/port").read())


def teardown():
    e2elib.stop(getattr(E, "proxy", None), getattr(E, "servers", None))
    if hasattr(E, "net"):
        E.net.delete()
    if hasattr(E, "tmp"):
        shutil.rmtree(E.tmp, ignore_errors=True)


def uplog():
    with open(E.uplog) as f:
        return [json.loads(x) for x in f if x.strip()]


def hdr(rec, name):
    for k, v in rec.get("headers", []):
        if k.lower() == name.lower():
            return v
    return None


class Tunnel:
    """CONNECT inference.local:443 through the proxy, TLS with the bundle."""

    def __init__(self):
        s = socket.create_connection(("127.0.0.1", E.port), timeout=10)
        s.sendall(b"CONNECT inference.local:443 HTTP/1.1\r\nHost: inference.local:443\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            d = s.recv(1)
            if not d:
                raise RuntimeError("proxy closed during CONNECT")
            head += d
        self.connect_status = int(head.split(b" ")[1])
        ctx = ssl.create_default_context(cafile=E.tmp + "/sandbox-ca.pem")
        self.s = ctx.wrap_socket(s, server_hostname="inference.local")
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def recv(self, timeout=10):
        self.s.settimeout(timeout)
        try:
            d = self.s.recv(65536)
        except (socket.timeout, ConnectionResetError, ssl.SSLError):
            return None
        return d

    def response(self, timeout=15, on_data=None):
        """(status, headers, body) of one response; body de-chunked.
        ON_DATA(t, bytes) sees every decoded piece as it arrives."""
        end = time.time() + timeout
        while b"\r\n\r\n" not in self.buf:
            d = self.recv(max(0.1, end - time.time()))
            if not d:
                return 0, {}, self.buf
            self.buf += d
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        body = bytearray()
        if hdrs.get("transfer-encoding", "").lower() == "chunked":
            while True:
                while b"\r\n" not in self.buf:
                    d = self.recv(max(0.1, end - time.time()))
                    if not d:
                        return status, hdrs, bytes(body)
                    self.buf += d
                line, _, self.buf = self.buf.partition(b"\r\n")
                n = int(line.split(b";")[0], 16)
                while len(self.buf) < n + 2:
                    d = self.recv(max(0.1, end - time.time()))
                    if not d:
                        return status, hdrs, bytes(body)
                    self.buf += d
                piece, self.buf = self.buf[:n], self.buf[n + 2:]
                if n == 0:
                    return status, hdrs, bytes(body)
                if on_data:
                    on_data(time.time(), piece)
                body += piece
        n = int(hdrs.get("content-length", "0"))
        while len(self.buf) < n:
            d = self.recv(max(0.1, end - time.time()))
            if not d:
                break
            self.buf += d
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, hdrs, body

    def closed(self, timeout=3):
        d = self.recv(timeout)
        return not d

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def post(path, obj, extra=b""):
    body = json.dumps(obj).encode()
    return (b"POST %s HTTP/1.1\r\nHost: inference.local\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n%s\r\n%s" % (path.encode(), len(body), extra, body))


def curl(path, data=None, headers=(), stream=False):
    cmd = ["curl", "-sS", "-D", "-", "--max-time", "20", "-x", "http://127.0.0.1:%d" % E.port,
           "--cacert", E.tmp + "/bundle.pem", "https://inference.local" + path]
    if stream:
        cmd.append("-N")
    if data is not None:
        cmd += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(data)]
    for h in headers:
        cmd += ["-H", h]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    # Drop the proxy's "200 Connection Established" head: keep the last response.
    out = r.stdout
    if out.startswith("HTTP/1.1 200 Connection"):
        out = out[out.find("\n\n") + 2:]  # text mode: CRLF became LF
    return out, r.stderr


def tests_curl():
    n0 = len(uplog())
    out, err = curl("/v1/chat/completions",
                    {"model": "gpt-expensive", "messages": [{"role": "user", "content": "hi"}]},
                    ["Authorization: Bearer caller-key", "x-api-key: caller-xkey",
                     "Cookie: session=abc", "X-Forwarded-For: 1.2.3.4",
                     "OpenAI-Organization: org-1", "X-Custom: drop-me"])
    recs = uplog()[n0:]
    r = recs[-1] if recs else {}
    body = json.loads(r.get("body") or "{}")
    point(" 200" in out.split("\n")[0] and "hello from backend" in out,
          "curl: POST /v1/chat/completions answered through the route", out + err)
    point(r.get("target") == "/v1/chat/completions",
          "backend URL: base .../v1 + /v1/chat/completions with /v1 once", r.get("target"))
    point(hdr(r, "Authorization") == "Bearer " + KEY, "the route's key injected as Bearer",
          r.get("headers"))
    point(hdr(r, "x-api-key") is None and hdr(r, "Cookie") is None and
          hdr(r, "X-Forwarded-For") is None and hdr(r, "X-Custom") is None,
          "attack 42: caller auth, cookies, X-Forwarded-For and unknown headers stripped",
          r.get("headers"))
    point(hdr(r, "OpenAI-Organization") == "org-1" and hdr(r, "Content-Type"),
          "allow-listed headers kept (content-type, openai-organization)", r.get("headers"))
    point(body.get("model") == "route-model" and body.get("messages"),
          "attack 42: model forced to the route's model, the rest of the body intact", body)

    out, err = curl("/v1/models")
    point(" 200" in out.split("\n")[0] and "backend-model" in out and
          "content-length" in out.lower(), "GET /v1/models buffered with Content-Length", out)
    n0 = len(uplog())
    out, err = curl("/v1/embeddings", {"model": "x", "input": "hello"})
    r = uplog()[n0:][-1] if uplog()[n0:] else {}
    point(" 200" in out.split("\n")[0] and '"embedding"' in out and
          json.loads(r.get("body", "{}")).get("model") == "route-model",
          "POST /v1/embeddings routed, model forced", out)
    out, err = curl("/admin")
    point(" 403" in out.split("\n")[0] and '{"error":"connection not allowed by policy"}' in out,
          "attack 42: GET /admin -> 403 connection not allowed by policy", out + err)
    out, err = curl("/v1/messages", {"model": "x", "max_tokens": 5, "messages": []})
    point(" 400" in out.split("\n")[0] and "no compatible inference route available" in out,
          "anthropic path on an openai route -> 400 no compatible route", out)


def tests_tunnel():
    t = Tunnel()
    point(t.connect_status == 200, "CONNECT inference.local:443 answered 200 with no policy")
    arrivals = []
    t.send(post("/v1/chat/completions", {"model": "m", "stream": True,
                                          "messages": [{"role": "user", "content": "go"}]}))
    st, h, body = t.response(on_data=lambda ts, p: arrivals.append((ts, p)))
    events = [json.loads(x[6:]) for x in body.decode().split("\n\n")
              if x.startswith("data: {")]
    sent = [e["t"] for e in events if "t" in e]
    point(st == 200 and h.get("content-type", "").startswith("text/event-stream") and
          h.get("transfer-encoding") == "chunked" and len(events) == 5 and
          body.strip().endswith(b"data: [DONE]"),
          "SSE stream relayed (chunked, text/event-stream, all events)", body[:400])
    first_arrival = arrivals[0][0] if arrivals else 1e18
    point(len(arrivals) >= 5 and sent and first_arrival < sent[-1],
          "chunk by chunk: the first event arrived before the backend sent the last "
          "(%d pieces, first after %.0f ms, backend spread %.0f ms)" %
          (len(arrivals), (first_arrival - sent[0]) * 1000 if sent else -1,
           (sent[-1] - sent[0]) * 1000 if sent else -1),
          arrivals[:3])
    # Keep-alive: a second request on the same connection, then a bad path.
    t.send(post("/v1/chat/completions", {"model": "m",
                                          "messages": [{"role": "user", "content": "again"}]}))
    st, h, body = t.response()
    point(st == 200 and b"hello from backend" in body, "a second request on the kept-alive "
          "connection (stream:false also relayed)", body[:200])
    t.send(b"GET /etc/passwd HTTP/1.1\r\nHost: inference.local\r\n\r\n")
    st, h, body = t.response()
    point(st == 403 and body == b'{"error":"connection not allowed by policy"}' and t.closed(),
          "attack 42: a bad path after good ones -> 403 and the connection closed", body)
    t.close()

    # Expect: 100-continue: the proxy is the server here, it says go on.
    t = Tunnel()
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    t.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: inference.local\r\n"
           b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
           b"Content-Length: %d\r\n\r\n" % len(body))
    st, h, _ = t.response(timeout=5)
    if st == 100:
        t.send(body)
        st, h, b2 = t.response()
        ok = st == 200 and b"hello from backend" in b2
    else:
        ok, b2 = False, b""
    point(ok, "Expect: 100-continue answered 100, then the request is routed", (st, b2[:200]))
    t.close()

    # Attack 43: limits.
    t = Tunnel()
    big = b"x" * (11 * 1024 * 1024)
    t.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: inference.local\r\n"
           b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(big))
    st, h, body = t.response()
    point(st == 413, "attack 43: 11 MiB body (Content-Length) -> 413", body[:200])
    t.close()
    t = Tunnel()
    t.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: inference.local\r\n"
           b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    try:
        for i in range(0, 5000, 500):
            t.send(b"1\r\n \r\n" * 500)
    except OSError:
        pass
    st, h, body = t.response()
    point(st == 400, "attack 43: chunked body with 5000 tiny chunks -> 400", body[:200])
    t.close()
    t = Tunnel()
    chunked_big = b"".join([b"100000\r\n" + b"y" * 0x100000 + b"\r\n"] * 11)
    t.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: inference.local\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n")
    try:
        t.send(chunked_big)
    except OSError:
        pass
    st, h, body = t.response()
    point(st == 413, "attack 43: 11 MiB chunked body -> 413", body[:200])
    t.close()

    t = Tunnel()
    t.send(post("/v1/chat/completions", {"model": "m", "stream": True,
                                          "messages": [{"role": "user", "content": "BIG"}]}))
    st, h, body = t.response(timeout=60)
    tail = body[-300:]
    point(st == 200 and 31 * 1024 * 1024 <= len(body) <= 32 * 1024 * 1024 + 200 and
          tail.count(b"proxy_stream_error") == 1 and b"response truncated" in tail,
          "attack 43: a 40 MiB stream is cut at 32 MiB with one SSE error event "
          "(got %d bytes)" % len(body), tail)
    t.close()
    t = Tunnel()
    t0 = time.time()
    t.send(post("/v1/chat/completions", {"model": "m", "stream": True,
                                          "messages": [{"role": "user", "content": "STALL"}]}))
    st, h, body = t.response(timeout=30)
    frames = [x for x in body.split(b"\n\n") if x.strip()]
    point(st == 200 and len(frames) == 2 and b"proxy_stream_error" in frames[-1] and
          time.time() - t0 < 20,
          "attack 43: a stalled stream ends with an SSE error event after the idle limit",
          body[:400])
    t.close()
    t = Tunnel()
    t.send(post("/v1/chat/completions", {"model": "m",
                                          "messages": [{"role": "user", "content": "FORGE"}]}))
    st, h, body = t.response()
    point(st == 500 and not h.get("content-type", "").startswith("text/event-stream"),
          "attack 43: backend error text shaped like SSE stays a plain 500 body "
          "(no event-stream is forged)", (h, body[:200]))
    t.close()


def tests_anthropic_and_swap():
    write_doc(route_doc("anthropic", rev=2, model="claude-route"))
    n0 = len(uplog())
    out, err = curl("/v1/messages", {"model": "claude-caller", "max_tokens": 5,
                                     "messages": [{"role": "user", "content": "hi"}]},
                    ["x-api-key: caller", "anthropic-beta: b1", "Authorization: Bearer c"])
    r = uplog()[n0:][-1] if uplog()[n0:] else {}
    point(" 200" in out.split("\n")[0] and hdr(r, "x-api-key") == AKEY and
          hdr(r, "Authorization") is None and hdr(r, "anthropic-version") == "2023-06-01" and
          hdr(r, "anthropic-beta") == "b1" and
          json.loads(r.get("body", "{}")).get("model") == "claude-route" and
          r.get("target") == "/v1/messages",
          "route swapped to anthropic without a restart: x-api-key injected, "
          "anthropic-version defaulted, model forced", (out, r))
    out, err = curl("/v1/chat/completions", {"model": "x", "messages": []})
    point(" 400" in out.split("\n")[0], "openai path on an anthropic route -> 400", out)
    write_doc(route_doc("openai-tls", rev=3, model="tls-model"))
    n0 = len(uplog())
    out, err = curl("/v1/chat/completions", {"model": "x", "messages": [
        {"role": "user", "content": "hi"}]})
    r = uplog()[n0:][-1] if uplog()[n0:] else {}
    point(out.startswith("HTTP/1.1 200") and hdr(r, "Authorization") == "Bearer " + KEY and
          json.loads(r.get("body", "{}")).get("model") == "tls-model" and
          r.get("target") == "/v1/chat/completions",
          "an https backend: verified TLS to the route's host, key and model injected", (out, r))
    doc = route_doc("openai-tls", rev=4)
    doc["inference"]["base_url"] = "https://evil.test:9443/v1"
    write_doc(doc)
    n0 = len(uplog())
    out, err = curl("/v1/chat/completions", {"model": "x", "messages": []})
    point(out.startswith("HTTP/1.1 503") and "inference service unavailable" in out and
          len(uplog()) == n0,
          "an https backend whose certificate does not name the host -> 503, nothing sent "
          "(the key never leaves)", out)
    write_doc(route_doc(None, rev=5))
    out, err = curl("/v1/chat/completions", {"model": "x", "messages": []})
    point(" 503" in out.split("\n")[0] and "cluster inference is not configured" in out,
          "no route -> 503 cluster inference is not configured", out)


NODE_OPENAI = r"""
const { ProxyAgent, fetch } = require('undici');
const OpenAI = require('openai');
const fs = require('fs');
const agent = new ProxyAgent({ uri: process.env.PX, requestTls: { ca: fs.readFileSync(process.env.CA) } });
const client = new OpenAI({ baseURL: 'https://inference.local/v1', apiKey: 'unused',
  fetch: (u, o) => fetch(u, { ...o, dispatcher: agent }) });
(async () => {
  const r = await client.chat.completions.create({ model: 'gpt-whatever',
    messages: [{ role: 'user', content: 'hi' }] });
  const out = { text: r.choices[0].message.content, model: r.model, deltas: [] };
  const s = await client.chat.completions.create({ model: 'gpt-whatever', stream: true,
    messages: [{ role: 'user', content: 'stream' }] });
  for await (const ch of s) out.deltas.push([Date.now() / 1000, ch.t, ch.choices[0].delta.content]);
  const m = await client.models.list();
  out.models = m.data.map(x => x.id);
  console.log(JSON.stringify(out));
})().catch(e => { console.error(String(e)); process.exit(1); });
"""

NODE_ANTHROPIC = r"""
const { ProxyAgent, fetch } = require('undici');
const Anthropic = require('@anthropic-ai/sdk');
const fs = require('fs');
const agent = new ProxyAgent({ uri: process.env.PX, requestTls: { ca: fs.readFileSync(process.env.CA) } });
const client = new Anthropic({ baseURL: 'https://inference.local', apiKey: 'unused',
  fetch: (u, o) => fetch(u, { ...o, dispatcher: agent }) });
(async () => {
  const r = await client.messages.create({ model: 'claude-x', max_tokens: 10,
    messages: [{ role: 'user', content: 'hi' }] });
  const out = { text: r.content[0].text, deltas: [] };
  const s = await client.messages.create({ model: 'claude-x', max_tokens: 10, stream: true,
    messages: [{ role: 'user', content: 'stream' }] });
  for await (const ev of s) if (ev.type === 'content_block_delta')
    out.deltas.push([Date.now() / 1000, ev.t, ev.delta.text]);
  console.log(JSON.stringify(out));
})().catch(e => { console.error(String(e)); process.exit(1); });
"""


def tests_node():
    if not shutil.which("node") or not shutil.which("npm"):
        point.skip("node SDKs", "node/npm not installed")
        return
    d = E.tmp + "/npm"
    os.makedirs(d)
    r = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent", "--prefix", d,
                        "openai@6", "@anthropic-ai/sdk", "undici@6"],
                       capture_output=True, text=True, timeout=300)
    if r.returncode:
        point.skip("node SDKs", "npm install failed: " + r.stderr.strip()[-200:])
        return
    env = dict(os.environ, PX="http://127.0.0.1:%d" % E.port, CA=E.tmp + "/sandbox-ca.pem",
               NODE_PATH=d + "/node_modules")
    write_doc(route_doc("openai", rev=4, model="route-model"))
    n0 = len(uplog())
    r = subprocess.run(["node", "-e", NODE_OPENAI], capture_output=True, text=True, timeout=60,
                       env=env, cwd=d)
    try:
        out = json.loads(r.stdout)
    except ValueError:
        out = {}
    recs = uplog()[n0:]
    point(out.get("text") == "hello from backend" and out.get("model") == "route-model",
          "node openai SDK: chat.completions.create through inference.local", r.stdout + r.stderr)
    ds = out.get("deltas", [])
    point(len(ds) == 5 and "".join(x[2] for x in ds) == "w0 w1 w2 w3 w4 " and ds[0][0] < ds[-1][1],
          "node openai SDK: streamed deltas arrive as the backend sends them", ds)
    point(out.get("models") == ["backend-model"], "node openai SDK: models.list", out)
    point(recs and all(hdr(x, "Authorization") == "Bearer " + KEY for x in recs) and
          all(x["method"] == "GET" or json.loads(x["body"]).get("model") == "route-model"
              for x in recs),
          "node openai SDK: backend saw the route's key and model on every call (%d)" % len(recs),
          recs[:1])
    write_doc(route_doc("anthropic", rev=5, model="claude-route"))
    n0 = len(uplog())
    r = subprocess.run(["node", "-e", NODE_ANTHROPIC], capture_output=True, text=True,
                       timeout=60, env=env, cwd=d)
    try:
        out = json.loads(r.stdout)
    except ValueError:
        out = {}
    recs = uplog()[n0:]
    ds = out.get("deltas", [])
    point(out.get("text") == "hello from backend" and len(ds) == 5 and ds[0][0] < ds[-1][1],
          "node @anthropic-ai/sdk: messages.create, plain and streamed", r.stdout + r.stderr)
    point(recs and all(hdr(x, "x-api-key") == AKEY and hdr(x, "anthropic-version") and
                       json.loads(x["body"]).get("model") == "claude-route" for x in recs),
          "node @anthropic-ai/sdk: backend saw x-api-key, anthropic-version, the route's model",
          recs[:1])


def tests_log():
    log = open(E.log).read()
    leaked = [s for s in (KEY, AKEY, "caller-key", "caller-xkey") if s in log]
    point(not leaked and "inference " in log,
          "the proxy log has inference records and no key", leaked)


def asan_round():
    """The same tests (but node) against the proxy built with ASan/UBSan/LSan;
    then it must stop cleanly on SIGTERM with no sanitizer report."""
    global PROXY
    build = tempfile.mkdtemp(prefix="openshell-infer-asan.")
    try:
        exe, why = proxy_cred_lib.build_asan_proxy(build)
        if not exe:
            point.skip("inference.local under ASan", why)
            return
        PROXY = [exe]
        point.prefix = "asan: "
        try:
            setup()
            tests_curl()
            tests_tunnel()
            tests_anthropic_and_swap()
            E.proxy.terminate()
            rc = E.proxy.wait(30)
            report = proxy_cred_lib.sanitizer_report(E.log)
            point(rc == 0 and not report,
                  "the proxy exits 0 on SIGTERM with no sanitizer report (rc %d)" % rc, report)
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
        tests_curl()
        tests_tunnel()
        tests_anthropic_and_swap()
        tests_node()
        tests_log()
    except Exception:
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
