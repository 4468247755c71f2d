"""A task's sandbox files, read by offset and length (like Mesos' `/files/read`).

`read_sandbox_file` is what both the embedded agent (called by the master
in-process) and `marathon agent`'s HTTP endpoint answer with:
`{"data": <text>, "offset": <where data starts>, "size": <file size>}`.
An offset of -1 (or none) reads the last `length` bytes: a tail.  Only the
task's own `stdout` and `stderr` are served; a task id that would leave the
sandboxes directory is refused.

`files_app` is the agent's endpoint: `GET /files/read?task_id=&file=&offset=
&length=`, `GET /health` and `GET /stats[?samples=1]` (the status-update
outbox's counters and ack latencies, for benchmarks), behind the agent secret
(the master presents it as a bearer token).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from pathlib import Path

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

FILES = ("stdout", "stderr")
MAX_LENGTH = 1024 * 1024


def read_sandbox_file(sandboxes: Path, task_id: str, file: str, offset: int = -1,
                      length: int = MAX_LENGTH) -> dict | None:
    """`length` bytes of a task's stdout or stderr from `offset` (-1: its tail);
    None if the task has no such file here."""
    if file not in FILES or not task_id or "/" in task_id or task_id in (".", "..") or "\0" in task_id:
        return None
    length = max(0, min(length, MAX_LENGTH))
    try:
        fd = os.open(sandboxes / task_id / file, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        start = max(0, size - length) if offset < 0 else min(offset, size)
        data = os.pread(fd, length, start)
    finally:
        os.close(fd)
    return {"data": data.decode("utf-8", errors="replace"), "offset": start, "size": size}


def files_app(sandboxes: Path, secret: bytes | None,
              stats: Callable[[bool], dict] | None = None) -> Starlette:
    """The agent's HTTP endpoint; `stats(samples)` answers `GET /stats`."""

    def authorized(request: Request) -> bool:
        if secret is None:
            return True
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), secret)

    async def read(request: Request) -> Response:
        if not authorized(request):
            return JSONResponse({"message": "Wrong or missing agent secret"}, status_code=401)
        q = request.query_params
        try:
            offset = int(q.get("offset", "-1"))
            length = int(q.get("length", str(MAX_LENGTH)))
        except ValueError:
            return JSONResponse({"message": "offset and length must be integers"}, status_code=400)
        found = await trio.to_thread.run_sync(
            read_sandbox_file, sandboxes, q.get("task_id", ""), q.get("file", "stdout"), offset, length)
        if found is None:
            return JSONResponse({"message": "No such file"}, status_code=404)
        return JSONResponse(found)

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def stats_route(request: Request) -> Response:
        if not authorized(request):
            return JSONResponse({"message": "Wrong or missing agent secret"}, status_code=401)
        if stats is None:
            return JSONResponse({"message": "No stats here"}, status_code=404)
        return JSONResponse(stats(request.query_params.get("samples") in ("1", "true")))

    return Starlette(routes=[Route("/files/read", read), Route("/health", health), Route("/stats", stats_route)])
