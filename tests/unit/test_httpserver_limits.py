"""The built-in server's limits over real sockets: an oversized head is 431,
an oversized body a 413 that the application's own error mapping answers
(not its catch-all 500), refused before it is read, and the connection then
ends in a way the client reads the answer rather than a reset."""

from __future__ import annotations

import json

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from marathon import httpserver
from marathon.api._http import internal_error, marathon_error
from marathon.errors import MarathonError


async def read_body(request: Request) -> Response:
    body = await request.body()
    return Response(f"read {len(body)}".encode())


# The API's error mapping: MarathonError -> its status, anything else -> 500.
APP = Starlette(
    routes=[Route("/read", read_body, methods=["POST", "GET"])],
    exception_handlers={MarathonError: marathon_error, Exception: internal_error},
)


async def serve(nursery: trio.Nursery) -> int:
    bound = await nursery.start(httpserver.serve, APP, "127.0.0.1", 0)
    return bound[0][1]


async def read_answer(stream: trio.SocketStream) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """Status line, headers and the content-length body of one answer."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = await stream.receive_some(65536)
        assert more, f"connection closed; got {data!r}"
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {k.lower(): v for k, v in (line.split(b": ", 1) for line in lines)}
    while len(body) < int(headers[b"content-length"]):
        body += await stream.receive_some(65536)
    return status, headers, body


async def read_to_end(stream: trio.SocketStream) -> bytes:
    """What comes until the server closes (raises on a reset)."""
    rest = b""
    while chunk := await stream.receive_some(65536):
        rest += chunk
    return rest


async def test_a_head_over_the_limit_is_431(nursery):
    port = await serve(nursery)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    big = b"a" * (httpserver.MAX_HEADER_BYTES + 40_000)  # arrives in more than one read
    await stream.send_all(b"GET /read HTTP/1.1\r\nHost: x\r\nX-Big: " + big + b"\r\n\r\n")
    with trio.fail_after(10):
        status, _, _ = await read_answer(stream)
        assert status.startswith(b"HTTP/1.1 431")
        assert await read_to_end(stream) == b""


async def test_a_declared_body_over_the_limit_is_413_before_a_byte_is_sent(nursery):
    port = await serve(nursery)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    size = httpserver.MAX_REQUEST_BODY + 1
    await stream.send_all(f"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode())
    with trio.fail_after(10):  # not a byte of the body is sent: the answer must not wait for it
        status, headers, body = await read_answer(stream)
    assert status.startswith(b"HTTP/1.1 413"), (status, body)
    assert headers[b"connection"] == b"close"
    assert json.loads(body) == {"message": f"Request body too large: {size} bytes, the limit is {httpserver.MAX_REQUEST_BODY} bytes"}
    await stream.send_all(b"x" * 1_000_000)  # the client goes on sending: no reset, an orderly end
    await stream.send_eof()
    with trio.fail_after(10):
        assert await read_to_end(stream) == b""


async def test_a_chunked_body_that_grows_past_the_limit_is_413_and_read_no_further(nursery):
    port = await serve(nursery)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(b"POST /read HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (65536, b"y" * 65536)
    answer: list = []

    async def write() -> None:
        try:
            for _ in range(httpserver.MAX_REQUEST_BODY // 65536 + 64):
                await stream.send_all(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async with trio.open_nursery() as writer:
        writer.start_soon(write)
        with trio.fail_after(30):
            answer.append(await read_answer(stream))
            answer.append(await read_to_end(stream))
    (status, headers, body), rest = answer
    assert status.startswith(b"HTTP/1.1 413") and headers[b"connection"] == b"close"
    assert json.loads(body)["message"].startswith("Request body too large")
    assert rest == b""


async def test_bodies_within_the_limit_still_work_on_a_kept_alive_connection(nursery):
    port = await serve(nursery)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    body = b"z" * httpserver.MAX_REQUEST_BODY
    async with trio.open_nursery() as writer:
        writer.start_soon(stream.send_all, b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        with trio.fail_after(30):
            status, headers, answer = await read_answer(stream)
    assert status.startswith(b"HTTP/1.1 200") and answer == b"read %d" % len(body)
    await stream.send_all(b"GET /read HTTP/1.1\r\nHost: x\r\n\r\n")
    with trio.fail_after(10):
        assert (await read_answer(stream))[2] == b"read 0"
