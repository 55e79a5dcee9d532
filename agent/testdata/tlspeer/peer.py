"""HTTPS peer for the TLS capture tests, on the standard library only.

server CERT KEY            serve HTTP/1.1 over TLS on 127.0.0.1; prints the
                           port, then answers GET /py/NAME with 200 "hi NAME",
                           POST with 201 "got N" (N body bytes) and anything
                           else with 404.
client CA PORT REQ...      one keep-alive connection, one request per REQ;
                           prints "STATUS BODY" per request. REQ is a path
                           (GET) or post:PATH:N (POST of N bytes).
pipeline CA PORT REQ...    the same, but every request is written at once
                           (HTTP/1.1 pipelining) before any response is read;
                           the last one asks the server to close.
hold CA PORT REQ...        load the TLS library, print "ready", wait for a
                           line on stdin, then run as client.
idle                       load the TLS library, print "ready", wait for
                           stdin to close.
"""

import http.client
import http.server
import socket
import ssl
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.startswith("/py/"):
            self.reply(200, ("hi " + self.path[4:]).encode())
        else:
            self.reply(404, b"no")

    def do_POST(self):
        n = len(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        self.reply(201, ("got %d" % n).encode())

    def log_message(self, *args):
        pass


def server(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print(srv.server_address[1], flush=True)
    srv.serve_forever()


def parse(req):
    """Returns method, path and body of one REQ argument."""
    if req.startswith("post:"):
        _, path, n = req.split(":")
        return "POST", path, b"x" * int(n)
    return "GET", req, None


def client(ca, port, reqs):
    ctx = ssl.create_default_context(cafile=ca)
    conn = http.client.HTTPSConnection("127.0.0.1", int(port), context=ctx)
    for r in reqs:
        method, path, body = parse(r)
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        print(resp.status, resp.read().decode(), flush=True)
    conn.close()


class _Shared:
    """Lets several HTTPResponse objects read one buffered stream in turn:
    each gets the same file, and closing it (as a response does once its
    body is read) is left to the caller."""

    def __init__(self, f):
        self.f = f

    def makefile(self, *args, **kwargs):
        return self

    def close(self):
        pass

    def __getattr__(self, name):
        return getattr(self.f, name)


def pipeline(ca, port, reqs):
    ctx = ssl.create_default_context(cafile=ca)
    raw = socket.create_connection(("127.0.0.1", int(port)))
    s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    out = b""
    for i, r in enumerate(reqs):
        method, path, body = parse(r)
        head = "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n" % (method, path)
        if body is not None:
            head += "Content-Length: %d\r\n" % len(body)
        if i == len(reqs) - 1:
            head += "Connection: close\r\n"
        out += head.encode() + b"\r\n" + (body or b"")
    s.sendall(out)
    shared = _Shared(s.makefile("rb"))
    for r in reqs:
        resp = http.client.HTTPResponse(shared, method=parse(r)[0])
        resp.begin()
        print(resp.status, resp.read().decode(), flush=True)
    s.close()


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "server":
        server(*args)
    elif cmd == "client":
        client(args[0], args[1], args[2:])
    elif cmd == "pipeline":
        pipeline(args[0], args[1], args[2:])
    elif cmd == "hold":
        print("ready", flush=True)
        sys.stdin.readline()
        client(args[0], args[1], args[2:])
    elif cmd == "idle":
        print("ready", flush=True)
        sys.stdin.read()
    else:
        sys.exit("unknown command " + cmd)
