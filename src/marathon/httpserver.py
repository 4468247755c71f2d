"""A small ASGI server for HTTP/1.1 on trio, with h11 doing the HTTP.

Why not hypercorn (the server we started with): measured in the same run on
this 2-core machine, hypercorn served our `/ping` at ~800 requests/s, this
server serves it at several times that (benchmarks/test_s5_api.py), and
hypercorn shields socket writes from cancellation, so a Server-Sent Events
client that stops reading could not be disconnected (docs/compatibility.md).
What this server does not do, because Marathon's API does not need it:
HTTP/2, TLS (the leader proxy issue will add it), WebSockets, the lifespan
protocol.

Per connection: h11 parses requests (keep-alive, pipelining, chunked bodies);
each request runs the ASGI app with `receive` (the body, then
`http.disconnect` when the client goes away: a streaming answer watches the
socket through it) and `send` (the response, chunked when no length is
known; a complete answer goes out in one write).  Writes are plain
`send_all` calls and can be cancelled.

Limits (docs/configuration.md): a request head (request line and headers)
over `MAX_HEADER_BYTES` is answered 431; a body over `MAX_REQUEST_BODY`
makes `receive` raise `BodyTooLarge` (a 413 `MarathonError`, which the API
maps like any other error) - at once when the declared Content-Length is
over it, without reading a byte of the body, or when a chunked body grows
past it.  The connection is then closed after the answer, gracefully: our
side is shut down for writing and what the client still sends is read and
dropped for a few seconds (a "lingering close", as nginx does), so the
client reads the answer instead of a connection reset.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

import h11
import trio

from .config import HTTP_MAX_REQUEST_BODY
from .errors import PayloadTooLarge

log = logging.getLogger("marathon.http")

MAX_REQUEST_BODY = HTTP_MAX_REQUEST_BODY
MAX_HEADER_BYTES = 64 * 1024
KEEP_ALIVE_SECONDS = 75.0
# How long a connection closed with request bytes still unread drains them.
LINGER_SECONDS = 5.0
READ_CHUNK = 65536

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


class _ClientGone(Exception):
    pass


class BodyTooLarge(PayloadTooLarge):
    """The request body is over `MAX_REQUEST_BODY` (raised by `receive`)."""

    def __init__(self, size: int | None = None) -> None:
        shown = f"{size} bytes" if size is not None else "more"
        super().__init__(f"Request body too large: {shown}, the limit is {MAX_REQUEST_BODY} bytes")


class _Connection:
    def __init__(self, app: ASGIApp, stream: trio.SocketStream, server: tuple[str, int]) -> None:
        self.app = app
        self.stream = stream
        self.server = server
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        # Set when we answer before the client has sent all of its request:
        # the close then drains what is still on its way (see `_linger`).
        self.linger = False
        try:
            peer = stream.socket.getpeername()
            self.client = (str(peer[0]), int(peer[1]))
        except OSError:
            self.client = ("", 0)

    async def _read_event(self) -> Any:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await self.stream.receive_some(READ_CHUNK)
            self.conn.receive_data(data)  # b"" means the peer closed

    async def _write(self, event: Any) -> None:
        data = self.conn.send(event)
        if data:
            await self.stream.send_all(data)

    async def serve(self) -> None:
        try:
            while True:
                with trio.move_on_after(KEEP_ALIVE_SECONDS) as idle:
                    event = await self._read_event()
                if idle.cancelled_caught or isinstance(event, h11.ConnectionClosed):
                    return
                if isinstance(event, h11.Request):
                    if _head_size(event) > MAX_HEADER_BYTES:
                        self.linger = True
                        await self._simple_error(431, "request header fields too large")
                        return
                    keep_going = await self._handle(event)
                    if not keep_going:
                        return
                    self.conn.start_next_cycle()
        except h11.RemoteProtocolError as exc:
            # h11 says 431 for a head longer than MAX_HEADER_BYTES.
            self.linger = True
            await self._simple_error(exc.error_status_hint, f"bad request: {exc}")
        except h11.LocalProtocolError as exc:
            await self._simple_error(400, f"bad request: {exc}")
        except (trio.BrokenResourceError, trio.ClosedResourceError, _ClientGone, ConnectionError):
            pass
        finally:
            try:
                if self.linger:
                    await self._linger()
            finally:
                with trio.move_on_after(1) as scope:
                    scope.shield = True
                    try:
                        await self.stream.aclose()
                    except trio.BrokenResourceError:
                        pass

    async def _linger(self) -> None:
        """Shut our side down and drop what the client still sends, for at
        most LINGER_SECONDS: closing a socket with unread bytes would send a
        reset, and the client could lose our answer with it."""
        with trio.move_on_after(LINGER_SECONDS):
            try:
                await self.stream.send_eof()
                while await self.stream.receive_some(READ_CHUNK):
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
                pass

    async def _simple_error(self, status: int, text: str) -> None:
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = text.encode()
        try:
            await self._write(h11.Response(status_code=status, headers=[("content-length", str(len(body))), ("connection", "close")]))
            await self._write(h11.Data(data=body))
            await self._write(h11.EndOfMessage())
        except Exception:  # the connection is going away anyway
            pass

    async def _handle(self, request: h11.Request) -> bool:
        target = request.target
        path, _, query = target.partition(b"?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": request.http_version.decode(),
            "method": request.method.decode(),
            "scheme": "http",
            "path": unquote(path.decode("latin-1")),
            "raw_path": path,
            "query_string": query,
            "root_path": "",
            "headers": [(k.lower(), v) for k, v in request.headers],
            "client": self.client,
            "server": self.server,
            "state": {},
        }
        has_body = _has_body(request)
        declared = _content_length(request)
        # Declared too long: refused without reading it, and the connection
        # ends after the answer, whoever gives it.
        oversized = declared is not None and declared > MAX_REQUEST_BODY
        is_head = request.method == b"HEAD"
        if not has_body:
            await self._read_event()  # h11's EndOfMessage for a request without a body
        final_delivered = False
        disconnected = False
        response_started = False
        response_done = False
        too_large = False
        size = 0
        start: dict[str, Any] = {}

        async def receive() -> dict:
            nonlocal final_delivered, size, disconnected, too_large
            if not final_delivered:
                if not has_body:
                    final_delivered = True
                    return {"type": "http.request", "body": b"", "more_body": False}
                if oversized:
                    too_large = True
                    raise BodyTooLarge(declared)
                event = await self._read_event()
                if isinstance(event, h11.Data):
                    size += len(event.data)
                    if size > MAX_REQUEST_BODY:
                        too_large = True
                        raise BodyTooLarge()
                    return {"type": "http.request", "body": bytes(event.data), "more_body": True}
                if isinstance(event, h11.EndOfMessage):
                    final_delivered = True
                    return {"type": "http.request", "body": b"", "more_body": False}
                raise _ClientGone()
            # The request is read: the socket is only watched now (a streaming
            # answer waits here).  Bytes that arrive are a pipelined request,
            # kept for h11; end of stream means the client left.
            while not disconnected:
                try:
                    data = await self.stream.receive_some(READ_CHUNK)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if not data:
                    disconnected = True
                else:
                    self.conn.receive_data(data)
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            nonlocal response_started, response_done
            kind = message["type"]
            if kind == "http.response.start":
                response_started = True
                start["status"] = message["status"]
                start["headers"] = list(message.get("headers", []))
                return
            if kind != "http.response.body" or response_done:
                return
            body = message.get("body", b"")
            more = message.get("more_body", False)
            out = b""
            if "status" in start:
                headers = start.pop("headers")
                status = start.pop("status")
                if not more and not any(bytes(k).lower() in (b"content-length", b"transfer-encoding") for k, _ in headers):
                    headers.append((b"content-length", str(len(body)).encode()))
                if too_large or oversized:  # the rest of the body is not read: the connection ends here
                    headers.append((b"connection", b"close"))
                out = self.conn.send(h11.Response(status_code=status, headers=headers)) or b""
            if body and not is_head:  # a HEAD answer has the headers of a GET, no body
                out += self.conn.send(h11.Data(data=body)) or b""
            if not more:
                response_done = True
                out += self.conn.send(h11.EndOfMessage()) or b""
            if out:
                # One write per message: a small answer is one system call.
                await self.stream.send_all(out)

        try:
            await self.app(scope, receive, send)
        except BodyTooLarge as exc:  # the app did not answer it itself
            self.linger = True
            if not response_started:
                await self._simple_error(413, exc.message)
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError, _ClientGone):
            return False
        except Exception:
            log.exception("application error method=%s path=%s", scope["method"], scope["path"])
            if not response_started:
                await self._simple_error(500, "internal error")
            return False
        if disconnected or not response_done:
            return False  # the client left, or the app returned without finishing its answer
        if self.conn.their_state is h11.SEND_BODY and (too_large or oversized or self.conn.our_state is h11.MUST_CLOSE):
            # Answered (a 413, or an answer that closes the connection): the
            # rest of the body is not worth reading.
            self.linger = True
            return False
        if not final_delivered and self.conn.their_state is h11.SEND_BODY:
            # The app answered without reading the body (a 401, a 404): read
            # the rest so the connection stays usable for the next request.
            with trio.move_on_after(KEEP_ALIVE_SECONDS):
                while self.conn.their_state is h11.SEND_BODY:
                    event = await self._read_event()
                    if isinstance(event, h11.Data):
                        size += len(event.data)
                        if size > MAX_REQUEST_BODY:
                            self.linger = True
                            return False
                    elif not isinstance(event, h11.EndOfMessage):
                        return False
        return self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE


def _head_size(request: h11.Request) -> int:
    """Bytes of the request line and headers, about as they came."""
    return len(request.method) + len(request.target) + 12 + sum(len(k) + len(v) + 4 for k, v in request.headers)


def _content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)  # h11 accepts only digits here
    return None


def _has_body(request: h11.Request) -> bool:
    for name, value in request.headers:
        if name == b"content-length" and value != b"0":
            return True
        if name == b"transfer-encoding":
            return True
    return False


async def serve(
    app: ASGIApp, host: str, port: int, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve `app` on host:port until cancelled; reports the bound addresses."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = [listener.socket.getsockname() for listener in listeners]
    server = (host, bound[0][1])

    async def handler(stream: trio.SocketStream) -> None:
        await _Connection(app, stream, server).serve()

    async with trio.open_nursery() as nursery:
        task_status.started(bound)
        await trio.serve_listeners(handler, listeners, handler_nursery=nursery)
