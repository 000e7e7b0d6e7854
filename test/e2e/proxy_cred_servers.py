# proxy_cred_servers.py: recording upstreams for the credential and
# inference.local end-to-end tests (not a test itself). Run inside the
# test's network namespace:
#
#   python3 proxy_cred_servers.py ADDR CERT KEY LOG
#
# ADDR:8080  HTTP/1.1 recorder: every request is appended to LOG as one JSON
#            line {"port","method","target","headers":[[k,v]...],"body"}
#            (body as latin-1 text) and answered 200 with that same JSON
# ADDR:8443  the same over TLS (CERT/KEY)
# ADDR:9080  a model backend (OpenAI and Anthropic shapes), recording the
#            same way; what it does depends on the request:
#              GET /v1/models                 a model list
#              POST .../embeddings            one embedding
#              POST .../chat/completions      JSON, or with "stream":true
#                                             5 SSE events 300 ms apart
#              POST .../messages              Anthropic SSE (stream) or JSON
#            and on the last message's content: "BIG" streams 40 MiB,
#            "STALL" sends one event then nothing, "FAST" streams without
#            pauses (bench/inference), "FORGE" answers 500 with
#            a body that looks like SSE frames, "FAIL401" answers 401.
#            Each SSE event carries "t": the backend's send time (s).
# ADDR:9443  the same model backend over TLS (CERT/KEY)
import http.server
import json
import socket
import socketserver
import ssl
import sys
import threading
import time

ADDR, CERT, KEY, LOG = sys.argv[1:5]
lock = threading.Lock()


def record(port, handler, body):
    rec = {"port": port, "method": handler.command, "target": handler.path,
           "headers": [[k, v] for k, v in handler.headers.items()],
           "body": body.decode("latin-1"), "t": time.time()}
    with lock:
        with open(LOG, "a") as f:
            f.write(json.dumps(rec) + "\n")
    return rec


class Base(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        pass

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                n = int(self.rfile.readline().split(b";")[0], 16)
                if n == 0:
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    return out
                out += self.rfile.read(n)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length", "0") or 0)
        return self.rfile.read(n) if n else b""

    def send_json(self, status, obj, extra=()):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


class Recorder(Base):
    def handle_any(self):
        body = self.read_body()
        rec = record(self.server.server_address[1], self, body)
        self.send_json(200, rec)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_any


class Model(Base):
    def do_GET(self):
        record(9080, self, b"")
        if self.path.rstrip("/").endswith("/models"):
            self.send_json(200, {"object": "list", "data": [
                {"id": "backend-model", "object": "model", "created": 0, "owned_by": "test"}]})
        else:
            self.send_json(200, {"id": self.path.rsplit("/", 1)[-1], "object": "model",
                                 "created": 0, "owned_by": "test"})

    def sse_start(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def do_POST(self):
        body = self.read_body()
        record(9080, self, body)
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            req = {}
        msgs = req.get("messages") or [{}]
        last = msgs[-1].get("content") if isinstance(msgs[-1], dict) else ""
        if not isinstance(last, str):
            last = json.dumps(last)
        model = req.get("model")
        pause = 0 if "FAST" in last else 0.3
        if "FAIL401" in last:
            return self.send_json(401, {"error": {"message": "bad key"}})
        if "FORGE" in last:
            data = b'oops\n\ndata: {"forged":true}\n\n'
            self.send_response(500)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if self.path.endswith("/embeddings"):
            return self.send_json(200, {"object": "list", "model": model, "data": [
                {"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
                "usage": {"prompt_tokens": 1, "total_tokens": 1}})
        anthropic = self.path.endswith("/messages")
        if not req.get("stream"):
            if anthropic:
                return self.send_json(200, {
                    "id": "msg_1", "type": "message", "role": "assistant", "model": model,
                    "content": [{"type": "text", "text": "hello from backend"}],
                    "stop_reason": "end_turn", "stop_sequence": None,
                    "usage": {"input_tokens": 1, "output_tokens": 3}})
            return self.send_json(200, {
                "id": "cmpl-1", "object": "chat.completion", "created": 0, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant",
                                                      "content": "hello from backend"},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}})
        self.sse_start()
        if "BIG" in last:
            blob = b"data: " + b"x" * 65530 + b"\n\n"
            try:
                for _ in range(40 * 16):
                    self.chunk(blob)
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass
            return
        if "STALL" in last:
            self.chunk(b'data: {"first":true}\n\n')
            time.sleep(30)
            return
        if anthropic:
            events = [("message_start", {"type": "message_start", "message": {
                "id": "msg_1", "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": 1, "output_tokens": 0}}}),
                ("content_block_start", {"type": "content_block_start", "index": 0,
                                         "content_block": {"type": "text", "text": ""}})]
            for i in range(5):
                events.append(("content_block_delta", {
                    "type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": "w%d " % i}}))
            events += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
                       ("message_delta", {"type": "message_delta",
                                          "delta": {"stop_reason": "end_turn",
                                                    "stop_sequence": None},
                                          "usage": {"output_tokens": 5}}),
                       ("message_stop", {"type": "message_stop"})]
            for name, ev in events:
                ev["t"] = time.time()
                self.chunk(b"event: %s\ndata: %s\n\n" % (name.encode(), json.dumps(ev).encode()))
                if name == "content_block_delta":
                    time.sleep(pause)
        else:
            for i in range(5):
                ev = {"id": "c1", "object": "chat.completion.chunk", "created": 0,
                      "model": model, "t": time.time(),
                      "choices": [{"index": 0, "delta": {"content": "w%d " % i},
                                   "finish_reason": None}]}
                self.chunk(b"data: " + json.dumps(ev).encode() + b"\n\n")
                time.sleep(pause)
            self.chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve(port, handler, tls=False):
    srv = Server((ADDR, port), handler)
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(CERT, KEY)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()


serve(8080, Recorder)
serve(8443, Recorder, tls=True)
serve(9080, Model)
serve(9443, Model, tls=True)
print("ready", flush=True)
while True:
    time.sleep(3600)
