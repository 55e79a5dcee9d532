"""HTTPS peer for the TLS capture tests, on the standard library only.

server CERT KEY          serve HTTP/1.1 over TLS on 127.0.0.1; prints the
                         port, then answers GET /py/NAME with 200 "hi NAME"
                         and anything else with 404.
client CA PORT PATH...   one keep-alive connection, one GET per path; prints
                         "STATUS BODY" per request.
"""

import http.client
import http.server
import ssl
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path.startswith("/py/"):
            body = ("hi " + self.path[4:]).encode()
            self.send_response(200)
        else:
            body = b"no"
            self.send_response(404)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def server(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print(srv.server_address[1], flush=True)
    srv.serve_forever()


def client(ca, port, paths):
    ctx = ssl.create_default_context(cafile=ca)
    conn = http.client.HTTPSConnection("127.0.0.1", int(port), context=ctx)
    for p in paths:
        conn.request("GET", p)
        resp = conn.getresponse()
        print(resp.status, resp.read().decode(), flush=True)
    conn.close()


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(sys.argv[2], sys.argv[3])
    else:
        client(sys.argv[2], sys.argv[3], sys.argv[4:])
