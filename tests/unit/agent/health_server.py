"""A task for the health-check tests: an HTTP(S) server whose health a test controls.

    python health_server.py PORT [CERTFILE KEYFILE]

Serves 127.0.0.1:PORT from its working directory (the task's sandbox):
every request answers 500 while a file `sick` exists there, 200 otherwise,
and appends that status to the file `requests`, so a test can count probes.
With a certificate and key it speaks HTTPS.
"""

from __future__ import annotations

import os
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        code = 500 if os.path.exists("sick") else 200
        with open("requests", "a") as f:
            f.write(f"{code} {self.path}\n")
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    if len(sys.argv) > 3:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[2], sys.argv[3])
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    open("listening", "w").close()
    server.serve_forever()


if __name__ == "__main__":
    main()
