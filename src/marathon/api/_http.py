"""HTTP plumbing shared by the resources: JSON bodies, query flags, errors, limits.

Errors: every `MarathonError` becomes its status and body here and nowhere
else (SPEC.md 1.2).  Unknown routes answer 404 `{"message":"URI not found"}`
(Marathon answers 500; see docs/compatibility.md).

Limits: `RequestLimits` holds every request to the head and body limits of
`marathon.httpserver`, whichever server runs the API, and keeps the bodies
of all requests in flight within one budget of bytes (docs/configuration.md).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec
import trio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..errors import (
    BadRequest,
    Busy,
    HeadersTooLarge,
    MarathonError,
    PayloadTooLarge,
    RequestTimeout,
)
from ..httpserver import MAX_HEADER_BYTES, MAX_REQUEST_BODY

log = logging.getLogger("marathon.api")

_encoder = msgspec.json.Encoder()
JSON = "application/json"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    data = body if isinstance(body, bytes) else _encoder.encode(body)
    return Response(content=data, status_code=status, media_type=JSON, headers=headers)


def deployment_result(plan_id: str, version: str, status: int = 200, location: str | None = None) -> Response:
    headers = {"Marathon-Deployment-Id": plan_id}
    if location:
        headers["Location"] = location
    return json_response({"version": version, "deploymentId": plan_id}, status, headers)


def flag(request: Request, name: str, default: bool) -> bool:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise BadRequest(f"Invalid boolean value '{raw}' for query parameter '{name}'")


def base_url(request: Request) -> str:
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return f"{request.url.scheme}://{host}"


def error_response(exc: MarathonError, headers: dict[str, str] | None = None) -> Response:
    """The status, body and headers of an error.  A `Busy` one says when to
    retry; one about the request itself (408, 413, 431, `Busy`) may leave
    part of the body unread, so it ends the connection."""
    headers = dict(headers or {})
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    if exc.status in (408, 413, 431) or isinstance(exc, Busy):
        headers["Connection"] = "close"
    return json_response(exc.body(), exc.status, headers or None)


async def marathon_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MarathonError)
    plugin_answer = getattr(exc, "response", None)
    if plugin_answer is not None:  # an auth plugin wrote this answer
        return Response(
            content=plugin_answer.body, status_code=plugin_answer.status,
            media_type=plugin_answer.content_type, headers=dict(plugin_answer.headers),
        )
    if exc.status >= 500:
        log.warning("request failed method=%s path=%s status=%d error=%s", request.method, request.url.path, exc.status, exc.message)
    return error_response(exc)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return json_response({"message": "URI not found"}, 404)
    if exc.status_code == 405:
        return json_response({"message": "HTTP 405 Method Not Allowed"}, 405)
    return json_response({"message": exc.detail}, exc.status_code)


async def internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error method=%s path=%s", request.method, request.url.path)
    return json_response({"message": str(exc) or type(exc).__name__}, 500)


class HeadersMiddleware:
    """Marathon's response headers on every response (SPEC.md 1.1)."""

    def __init__(self, app: Any, *, leader: str) -> None:
        self.app = app
        self.extra = [
            (b"x-marathon-leader", f"http://{leader}".encode()),
            (b"x-frame-options", b"DENY"),
            (b"x-xss-protection", b"1; mode=block"),
            (b"cache-control", b"no-cache, no-store, must-revalidate"),
            (b"pragma", b"no-cache"),
            (b"expires", b"0"),
        ]

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self.extra

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        await self.app(scope, receive, send_with_headers)


# -- request limits --------------------------------------------------------------

# Bodies up to this size never wait for the budget: a small POST is not held
# back by large ones (their total is bounded by the number of connections).
SMALL_BODY = 64 * 1024
# A body that does not fit the budget waits this long for room, then 503.
BODY_WAIT_SECONDS = 10.0
# A body that holds part of the budget must arrive within this, then 408:
# a client that sends slowly cannot keep the room from others.
BODY_READ_SECONDS = 60.0
# After a body this large, its garbage is collected at once
# (`RequestLimits._release_memory`): a full collection takes milliseconds to
# tens of them, so not after every request.
RELEASE_AFTER = 1024 * 1024


class ByteBudget:
    """A first-come, first-served budget of bytes (a weighted semaphore)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self._waiting: deque[tuple[int, trio.Event]] = deque()

    async def acquire(self, n: int) -> None:
        """Take `n` bytes (at most `total`), waiting behind earlier takers for room."""
        if not self._waiting and self.used + n <= self.total:
            self.used += n
            return
        entry = (n, trio.Event())
        self._waiting.append(entry)
        try:
            await entry[1].wait()
        except BaseException:
            if entry[1].is_set():  # granted as we were cancelled
                self.release(n)
            else:
                self._waiting.remove(entry)
                self._grant()
            raise

    def release(self, n: int) -> None:
        self.used -= n
        self._grant()

    def _grant(self) -> None:
        while self._waiting and self.used + self._waiting[0][0] <= self.total:
            n, granted = self._waiting.popleft()
            self.used += n
            granted.set()


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None


class RequestLimits:
    """What a request may bring (ASGI middleware; docs/configuration.md):

    * a head (path, query and headers) over `MAX_HEADER_BYTES`: 431;
    * a declared body over `MAX_REQUEST_BODY`: 413 before a byte of it is
      read; a chunked one that grows past it: 413 from `receive`;
    * the bodies of all requests in flight: at most `budget` bytes.  A body
      over `SMALL_BODY` takes its declared length from the budget before it
      is read (a chunked one takes `MAX_REQUEST_BODY` once it is over
      `SMALL_BODY`) and gives it back when the request is answered.  A
      request waits up to `BODY_WAIT_SECONDS` for room, first come first
      served, then gets 503 with `Retry-After`; one holding room must have
      sent its body within `BODY_READ_SECONDS` (408).

    After a body of `RELEASE_AFTER` bytes or more the garbage its request
    left is collected, and when no such body is left in flight glibc is
    asked to give the freed heap back to the system (`malloc_trim`).
    """

    def __init__(self, app: Any, *, budget: int) -> None:
        self.app = app
        self.budget = ByteBudget(budget)
        self._trim = _malloc_trim()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        head = len(scope.get("raw_path") or b"") + len(scope.get("query_string", b""))
        declared: int | None = None
        chunked = False
        for name, value in scope["headers"]:
            head += len(name) + len(value) + 4
            if name == b"content-length" and value.isdigit():
                declared = int(value)
            elif name == b"transfer-encoding":
                chunked = True
        if head > MAX_HEADER_BYTES:
            await _refuse(scope, receive, send, HeadersTooLarge(f"Request header fields too large: over {MAX_HEADER_BYTES} bytes"))
            return
        if not declared and not chunked:  # no body (a GET): nothing to count
            await self.app(scope, receive, send)
            return
        if declared is not None and declared > MAX_REQUEST_BODY:
            await _refuse(scope, receive, send, PayloadTooLarge(_too_large(declared)))
            return
        held = 0
        if declared is not None and declared > SMALL_BODY:
            with trio.move_on_after(BODY_WAIT_SECONDS):
                await self.budget.acquire(declared)
                held = declared
            if not held:
                await _refuse(scope, receive, send, _busy(self.budget))
                return
        deadline = trio.current_time() + BODY_READ_SECONDS
        received = 0
        body_done = False

        async def limited_receive() -> dict:
            nonlocal received, held, deadline, body_done
            with trio.move_on_at(deadline if held and not body_done else math.inf):
                message = await receive()
                if message["type"] != "http.request" or body_done:
                    return message
                body_done = not message.get("more_body", False)
                received += len(message.get("body", b""))
                if received > MAX_REQUEST_BODY:
                    raise PayloadTooLarge(_too_large(None))
                if received > max(held, SMALL_BODY) and held < MAX_REQUEST_BODY:
                    # A chunked body (no declared length) past SMALL_BODY
                    # may be as long as any: room for the longest.
                    need = MAX_REQUEST_BODY - held
                    with trio.move_on_after(BODY_WAIT_SECONDS):
                        await self.budget.acquire(need)
                        held += need
                        deadline = trio.current_time() + BODY_READ_SECONDS
                    if held < MAX_REQUEST_BODY:
                        raise _busy(self.budget)
                return message
            raise RequestTimeout(f"Request body not received within {BODY_READ_SECONDS:.0f} seconds")

        try:
            await self.app(scope, limited_receive, send)
        finally:
            if held:
                self.budget.release(held)
                if received >= RELEASE_AFTER:
                    self._release_memory(trim=self.budget.used == 0)

    def _release_memory(self, *, trim: bool) -> None:
        """After a large body: collect the reference cycles its request left
        (recursive closures of the tree operations hold the definition; the
        server's collector thresholds would let them sit until the next full
        collection), and once no large body is in flight, hand the freed heap
        back to the system."""
        started = time.perf_counter()
        gc.collect()
        if trim and self._trim is not None:
            self._trim(0)
        log.debug("memory released after a large request body trim=%s ms=%.1f", trim, (time.perf_counter() - started) * 1000)


def _too_large(size: int | None) -> str:
    shown = f"{size} bytes" if size is not None else "more"
    return f"Request body too large: {shown}, the limit is {MAX_REQUEST_BODY} bytes"


def _busy(budget: ByteBudget) -> Busy:
    return Busy(
        f"Too many request bodies in flight: the server holds at most {budget.total} bytes of them "
        "(--http_max_body_bytes_in_flight); retry shortly"
    )


async def _refuse(scope: dict, receive: Any, send: Any, exc: MarathonError) -> None:
    """Answer `exc` without reading the body: the connection ends with the answer."""
    await error_response(exc)(scope, receive, send)


class ConcurrencyLimit:
    """`--http_max_concurrent_requests` (Marathon's flag): a request beyond
    that many being answered at once gets 503 with `Retry-After: 1` at once,
    instead of queueing behind the others.  Streams that stay open for as
    long as their client listens (`/v2/events`, the agents' subscriptions)
    do not count: each would hold a slot for hours."""

    STREAMS = ("/v2/events", "/internal/v1/agents/subscribe")

    def __init__(self, app: Any, *, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.active = 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") in self.STREAMS:
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            body = _encoder.encode({"message": f"Too many concurrent requests (the limit is {self.limit})"})
            await send({"type": "http.response.start", "status": 503, "headers": [
                (b"content-type", JSON.encode()), (b"retry-after", b"1"),
                (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1

