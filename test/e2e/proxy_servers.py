# proxy_servers.py: upstream servers for the proxy end-to-end tests (not a
# test itself: not executable). Run inside the test's network namespace:
#
#   python3 proxy_servers.py ADDR CERT KEY LOG
#
# ADDR:8080  HTTP/1.1 echo (keep-alive): answers every request with a JSON
#            description of what arrived (method, target, Host, body length)
# ADDR:8443  the same over TLS (CERT/KEY from the test CA)
# ADDR:8081  accepts, reads, then resets the connection (RST)
# ADDR:8082  accepts, reads, and never answers (a stalled upstream)
# ADDR:8090  TCP echo
# ADDR:8091  byte source: reads "N\n", sends N bytes, closes (bench/proxy)
# ADDR:8093  speaks first ("220 ready\r\n"), then echoes (SMTP-like)
# ADDR:8092  TCP echo for many connections at once (one thread, selectors)
# ADDR:5353  DNS over UDP: dns.test has one A record (ADDR); other names
#            are NXDOMAIN (the proxy's evdns path)
#
# Every request line that reaches the HTTP servers is appended to LOG, so a
# test can prove that a refused request never went upstream.
import base64
import hashlib
import http.server
import json
import socket
import ssl
import struct
import sys
import threading

ADDR, CERT, KEY, LOG = sys.argv[1:5]
log_lock = threading.Lock()


class Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes

    def log_message(self, fmt, *args):
        pass

    def websocket(self):
        # The opening handshake (RFC 6455 4.2.2), then a raw byte echo: the
        # proxy relays upgraded connections without parsing frames.
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(
            hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept.decode())
        self.end_headers()
        self.wfile.flush()
        while True:
            d = self.connection.recv(65536)
            if not d:
                break
            self.connection.sendall(d)
        self.close_connection = True

    def handle_any(self):
        if self.headers.get("Upgrade", "").lower() == "websocket":
            with log_lock, open(LOG, "a") as f:
                f.write("%s %s %s\n" % (self.command, self.path, self.headers.get("Host")))
            return self.websocket()
        n = int(self.headers.get("Content-Length") or 0)
        body = b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        elif n:
            body = self.rfile.read(n)
        with log_lock, open(LOG, "a") as f:
            f.write("%s %s %s\n" % (self.command, self.path, self.headers.get("Host")))
        if self.path.startswith("/big/"):
            size = int(self.path[5:])
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            chunk = b"x" * 65536
            while size > 0:
                self.wfile.write(chunk[: min(size, len(chunk))])
                size -= len(chunk)
            return
        out = json.dumps(
            {
                "method": self.command,
                "target": self.path,
                "host": self.headers.get("Host"),
                "body": len(body),
                "connection": self.headers.get("Connection"),
                "via": self.headers.get("Via"),
                "proxy_authorization": self.headers.get("Proxy-Authorization"),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = handle_any


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve_http(port, tls):
    srv = Server((ADDR, port), Echo)
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(CERT, KEY)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.serve_forever()


def raw_server(port, handler):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ADDR, port))
    s.listen(64)
    while True:
        c, _ = s.accept()
        threading.Thread(target=handler, args=(c,), daemon=True).start()


def resetter(c):
    try:
        c.recv(4096)
    except OSError:
        pass
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


def staller(c):
    try:
        while c.recv(4096):
            pass
    except OSError:
        pass


def echo(c):
    try:
        while True:
            d = c.recv(262144)
            if not d:
                break
            c.sendall(d)
    except OSError:
        pass
    c.close()


def source(c):
    f = c.makefile("rb")
    try:
        n = int(f.readline())
        chunk = memoryview(b"\x5a" * (1 << 20))
        while n > 0:
            k = min(n, len(chunk))
            c.sendall(chunk[:k])
            n -= k
    except (OSError, ValueError):
        pass
    c.close()


def greeter(c):
    try:
        c.sendall(b"220 ready\r\n")
    except OSError:
        return
    echo(c)


def many_echo(port):
    import selectors
    sel = selectors.DefaultSelector()
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((ADDR, port))
    ls.listen(4096)
    ls.setblocking(False)
    sel.register(ls, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            if key.fileobj is ls:
                try:
                    c, _ = ls.accept()
                except OSError:
                    continue
                c.setblocking(False)
                sel.register(c, selectors.EVENT_READ)
                continue
            c = key.fileobj
            try:
                d = c.recv(65536)
            except OSError:
                d = b""
            if d:
                try:
                    c.send(d)
                except OSError:
                    pass
            else:
                sel.unregister(c)
                c.close()


def dns_server(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ADDR, port))
    while True:
        q, peer = s.recvfrom(512)
        if len(q) < 17:
            continue
        i, labels = 12, []
        while i < len(q) and q[i]:
            labels.append(q[i + 1:i + 1 + q[i]].decode("ascii", "replace"))
            i += 1 + q[i]
        qtype = struct.unpack("!H", q[i + 1:i + 3])[0]
        question = q[12:i + 5]
        name = ".".join(labels).lower()
        answers = b""
        rcode = 0
        if name != "dns.test":
            rcode = 3
        elif qtype == 1:
            answers = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(ADDR)
        flags = 0x8180 | rcode | (struct.unpack("!H", q[2:4])[0] & 0x0100)
        head = q[:2] + struct.pack("!HHHHH", flags, 1, 1 if answers else 0, 0, 0)
        s.sendto(head + question + answers, peer)


for target, args in (
    (serve_http, (8080, False)),
    (serve_http, (8443, True)),
    (raw_server, (8081, resetter)),
    (raw_server, (8082, staller)),
    (raw_server, (8090, echo)),
    (raw_server, (8091, source)),
    (dns_server, (5353,)),
    (many_echo, (8092,)),
    (raw_server, (8093, greeter)),
):
    threading.Thread(target=target, args=args, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
