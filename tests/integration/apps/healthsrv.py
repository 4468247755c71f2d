"""A task for health-check tests: serves /health on the port given as argv[1].

`/health` answers 200 until a file named `fail` exists in the working
directory (the task's sandbox), then 500; if `ready` is required (argv[2] ==
"readiness"), `/ready` answers 200 only once a file named `ready` exists.
Every request is appended to `requests.log` as "<unix time> <path> <status>".
"""

import http.server
import os
import sys
import time


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (stdlib naming)
        if self.path.startswith("/health"):
            status = 500 if os.path.exists("fail") else 200
        elif self.path.startswith("/ready"):
            status = 200 if os.path.exists("ready") else 503
        else:
            status = 200
        with open("requests.log", "a") as log:
            log.write(f"{time.time():.3f} {self.path} {status}\n")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"ok\n" if status == 200 else b"no\n")

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
