"""A small HTTP server on 127.0.0.1 that serves bytes from a dict, for tests
of what agents download (artifacts, and later images' blobs)."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator
from typing import NamedTuple


class Served(NamedTuple):
    url: str  # http://127.0.0.1:<port>
    content: dict[str, bytes]  # path -> body; anything else is a 404
    hits: list[str]  # every path asked for, in order


@contextlib.contextmanager
def serve_bytes() -> Iterator[Served]:
    """Serve `content` (filled by the caller) until the block ends."""
    content: dict[str, bytes] = {}
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            hits.append(self.path)
            body = content.get(self.path)
            if body is None:
                self.send_error(404, "Not Found")
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Served(f"http://127.0.0.1:{httpd.server_address[1]}", content, hits)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)
