"""The built-in ASGI server (`marathon.httpserver`) over real sockets on 127.0.0.1."""

from __future__ import annotations

import pytest
import trio

from marathon import httpserver


async def echo_app(scope, receive, send):
    """Answers with what it was asked; `/unread` answers without reading the body."""
    body = b""
    if scope["path"] != "/unread":
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
    if scope["path"] == "/boom":
        raise RuntimeError("boom")
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for part in (b"one,", b"two,", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    if scope["path"] == "/forever":
        # A streaming answer that ends only when the client leaves.
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x", "more_body": True})
        assert (await receive())["type"] == "http.disconnect"
        scope["state"]["left"].set()
        return
    answer = f"{scope['method']} {scope['path']} q={scope['query_string'].decode()} n={len(body)}".encode()
    await send({"type": "http.response.start", "status": 201, "headers": [(b"x-test", b"1")]})
    await send({"type": "http.response.body", "body": answer})


class Server:
    def __init__(self, port: int) -> None:
        self.port = port

    async def connect(self) -> trio.SocketStream:
        return await trio.open_tcp_stream("127.0.0.1", self.port)


async def start(nursery: trio.Nursery, app=echo_app) -> Server:
    bound = await nursery.start(httpserver.serve, app, "127.0.0.1", 0)
    return Server(bound[0][1])


@pytest.fixture
async def server(nursery):
    """The echo app served on 127.0.0.1 for the test (pytest-trio's nursery
    is cancelled when the test ends)."""
    return await start(nursery)


async def read_response(stream: trio.SocketStream, buffer: bytearray, *, head_request: bool = False) -> tuple[bytes, bytes]:
    """One response with a content-length (or chunked) from `buffer` + the stream."""
    while b"\r\n\r\n" not in buffer:
        data = await stream.receive_some(65536)
        assert data, f"connection closed; got {bytes(buffer)!r}"
        buffer += data
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    del buffer[:]
    buffer += rest
    headers = {k.lower(): v for k, v in (line.split(b": ", 1) for line in head.split(b"\r\n")[1:])}
    if b"content-length" in headers:
        length = int(headers[b"content-length"])
        if head_request:
            length = 0
        while len(buffer) < length:
            buffer += await stream.receive_some(65536)
        body = bytes(buffer[:length])
        del buffer[:length]
        return head, body
    assert headers[b"transfer-encoding"] == b"chunked"
    while not buffer.endswith(b"0\r\n\r\n"):
        buffer += await stream.receive_some(65536)
    body, parts = b"", bytes(buffer)
    del buffer[:]
    while True:
        size_line, _, parts = parts.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return head, body
        body += parts[:size]
        parts = parts[size + 2:]


async def test_keep_alive_pipelining_and_bodies(server):
    stream = await server.connect()
    buffer = bytearray()
    # Two pipelined requests in one write, the second with a body.
    await stream.send_all(
        b"GET /v2/apps?embed=apps.tasks HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /v2/apps HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    )
    head, body = await read_response(stream, buffer)
    assert head.startswith(b"HTTP/1.1 201") and b"x-test: 1" in head
    assert body == b"GET /v2/apps q=embed=apps.tasks n=0"
    head, body = await read_response(stream, buffer)
    assert body == b"POST /v2/apps q= n=5"
    # A chunked request body on the same connection.
    await stream.send_all(b"PUT /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    head, body = await read_response(stream, buffer)
    assert body == b"PUT /x q= n=5"
    # Percent-escapes are decoded in `path`.
    await stream.send_all(b"GET /v2/apps/a%2Fb HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await read_response(stream, buffer))[1] == b"GET /v2/apps/a/b q= n=0"
    await stream.aclose()


async def test_an_unread_body_does_not_break_the_connection(server):
    stream = await server.connect()
    buffer = bytearray()
    await stream.send_all(b"POST /unread HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789")
    assert (await read_response(stream, buffer))[1] == b"POST /unread q= n=0"
    await stream.send_all(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await read_response(stream, buffer))[1] == b"GET /after q= n=0"


async def test_head_has_the_headers_of_get_and_no_body(server):
    stream = await server.connect()
    buffer = bytearray()
    await stream.send_all(b"HEAD /v2/info HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    head, body = await read_response(stream, buffer, head_request=True)
    assert b"content-length: 20" in head and body == b""
    assert (await read_response(stream, buffer))[1] == b"GET /next q= n=0"


async def test_streaming_answer_is_chunked(server):
    stream = await server.connect()
    await stream.send_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    head, body = await read_response(stream, bytearray())
    assert b"transfer-encoding: chunked" in head.lower() and body == b"one,two,three"


async def test_errors_too_large_malformed_and_app_failure(server):
    stream = await server.connect()
    await stream.send_all(b"this is not http\r\n\r\n")
    head, body = await read_response(stream, bytearray())
    assert head.startswith(b"HTTP/1.1 400") and body.startswith(b"bad request")
    assert await stream.receive_some(10) == b""  # and the connection is closed

    stream = await server.connect()
    size = httpserver.MAX_REQUEST_BODY + 1
    await stream.send_all(f"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode())
    chunk = b"a" * 65536
    head = b""
    with trio.move_on_after(30):
        sent = 0
        async with trio.open_nursery() as writer:
            async def write():
                nonlocal sent
                try:
                    while sent < size:
                        await stream.send_all(chunk)
                        sent += len(chunk)
                except trio.BrokenResourceError:
                    pass
            writer.start_soon(write)
            head, _ = await read_response(stream, bytearray())
            writer.cancel_scope.cancel()
    assert head.startswith(b"HTTP/1.1 413")

    stream = await server.connect()
    await stream.send_all(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
    head, body = await read_response(stream, bytearray())
    assert head.startswith(b"HTTP/1.1 500") and body == b"internal error"


async def test_a_client_that_leaves_is_seen_by_a_streaming_answer(nursery):
    left = trio.Event()

    async def app(scope, receive, send):
        scope["state"]["left"] = left
        await echo_app(scope, receive, send)

    server = await start(nursery, app)
    stream = await server.connect()
    await stream.send_all(b"GET /forever HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"HTTP/1.1 200" in await stream.receive_some(65536)
    await stream.aclose()
    with trio.fail_after(30):
        await left.wait()


async def test_a_blocked_write_to_a_client_that_stopped_reading_can_be_cancelled(nursery):
    cancelled = trio.Event()

    async def flood(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        with trio.move_on_after(0.5):
            while True:  # the client reads nothing: the socket buffers fill and send blocks
                await send({"type": "http.response.body", "body": b"z" * 65536, "more_body": True})
        cancelled.set()

    server = await start(nursery, flood)
    stream = await server.connect()
    await stream.send_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    with trio.fail_after(30):
        await cancelled.wait()
    await stream.aclose()
