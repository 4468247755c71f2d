"""`RequestLimits`, the API's limits on what a request brings (whichever
HTTP server runs it): head and body size, and one budget for the bodies of
all requests in flight.  Plain ASGI calls in virtual time."""

from __future__ import annotations

import gc
import json
import weakref

import pytest
import trio
import trio.testing

from marathon.api._http import (
    BODY_READ_SECONDS,
    BODY_WAIT_SECONDS,
    SMALL_BODY,
    ByteBudget,
    RequestLimits,
)
from marathon.httpserver import MAX_HEADER_BYTES, MAX_REQUEST_BODY

MiB = 1024 * 1024


class Reader:
    """An ASGI app that reads its whole body, then answers with its length
    after `hold` (an event the test sets, or None)."""

    def __init__(self) -> None:
        self.hold: dict[str, trio.Event] = {}
        self.started: list[str] = []

    async def __call__(self, scope, receive, send):
        name = scope["path"]
        self.started.append(name)
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        if name in self.hold:
            await self.hold[name].wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(size).encode()})


async def call(app, path: str, body: bytes, *, length: bool = True, headers=(), pause: float = 0.0, chunk: int = MiB):
    """Run one request through `app`; returns (status, headers, body, bytes the app was handed)."""
    head = [(b"content-length", str(len(body)).encode())] if length else [(b"transfer-encoding", b"chunked")]
    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": head + list(headers)}
    parts = [body[i:i + chunk] for i in range(0, len(body), chunk)] or [b""]
    handed = 0
    out: dict = {}

    async def receive():
        nonlocal handed
        if pause:
            await trio.sleep(pause)
        if not parts:
            await trio.sleep_forever()
        part = parts.pop(0)
        handed += len(part)
        return {"type": "http.request", "body": part, "more_body": bool(parts)}

    async def send(message):
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
            out["headers"] = {k.decode().lower(): v.decode() for k, v in message["headers"]}
        else:
            out["body"] = out.get("body", b"") + message.get("body", b"")

    await app(scope, receive, send)
    return out["status"], out["headers"], out.get("body", b""), handed


async def test_a_declared_body_over_the_limit_is_413_before_any_of_it_is_read():
    app = RequestLimits(Reader(), budget=16 * MiB)
    status, headers, body, handed = await call(app, "/big", b"x" * (MAX_REQUEST_BODY + 1))
    assert (status, handed) == (413, 0)
    assert json.loads(body)["message"] == f"Request body too large: {MAX_REQUEST_BODY + 1} bytes, the limit is {MAX_REQUEST_BODY} bytes"
    assert headers["connection"] == "close"


async def test_a_chunked_body_that_grows_past_the_limit_stops_being_read():
    with pytest.raises(Exception) as exc:  # the API's error mapping turns it into its 413
        await call(RequestLimits(Reader(), budget=16 * MiB), "/c", b"x" * (MAX_REQUEST_BODY + 2 * MiB), length=False)
    assert exc.value.status == 413


async def test_headers_over_the_limit_are_431():
    app = RequestLimits(Reader(), budget=16 * MiB)
    status, headers, _, handed = await call(app, "/h", b"{}", headers=[(b"x-big", b"a" * MAX_HEADER_BYTES)])
    assert (status, handed) == (431, 0) and headers["connection"] == "close"


async def test_large_bodies_wait_their_turn_in_the_budget_and_small_ones_never_wait(autojump_clock):
    reader = Reader()
    app = RequestLimits(reader, budget=16 * MiB)
    reader.hold["/first"] = trio.Event()
    results: dict[str, tuple] = {}

    async def run(path: str, size: int) -> None:
        results[path] = await call(app, path, b"x" * size)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, "/first", 9 * MiB)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(run, "/second", 9 * MiB)
        nursery.start_soon(run, "/small", SMALL_BODY)
        await trio.testing.wait_all_tasks_blocked()
        # The second large body is not read while the first holds the room.
        assert reader.started == ["/first", "/small"] and app.budget.used == 9 * MiB
        await trio.sleep(BODY_WAIT_SECONDS / 2)
        reader.hold["/first"].set()
    assert [results[p][0] for p in ("/first", "/second", "/small")] == [200, 200, 200]
    assert app.budget.used == 0


async def test_a_body_that_finds_no_room_in_time_gets_503_with_retry_after(autojump_clock):
    reader = Reader()
    app = RequestLimits(reader, budget=16 * MiB)
    reader.hold["/first"] = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, app, "/first", b"x" * (9 * MiB))
        await trio.testing.wait_all_tasks_blocked()
        started = trio.current_time()
        status, headers, body, handed = await call(app, "/late", b"x" * (9 * MiB))
        assert trio.current_time() - started == pytest.approx(BODY_WAIT_SECONDS)
        reader.hold["/first"].set()
    assert (status, handed) == (503, 0)
    assert headers["retry-after"] == "1" and headers["connection"] == "close"
    assert "--http_max_body_bytes_in_flight" in json.loads(body)["message"]
    assert app.budget.used == 0


async def test_a_slow_sender_cannot_keep_the_room_408(autojump_clock):
    app = RequestLimits(Reader(), budget=16 * MiB)
    with pytest.raises(Exception) as exc:
        await call(app, "/slow", b"x" * (2 * MiB), chunk=64 * 1024, pause=BODY_READ_SECONDS / 10)
    assert exc.value.status == 408
    assert app.budget.used == 0


async def test_a_chunked_body_past_small_takes_room_for_the_largest(autojump_clock):
    reader = Reader()
    app = RequestLimits(reader, budget=16 * MiB)
    reader.hold["/chunked"] = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: call(app, "/chunked", b"x" * (2 * MiB), length=False))
        await trio.testing.wait_all_tasks_blocked()
        assert app.budget.used == MAX_REQUEST_BODY
        reader.hold["/chunked"].set()
    assert app.budget.used == 0


async def test_the_garbage_a_large_request_leaves_is_collected_when_it_is_answered():
    left: list[weakref.ref] = []

    class Node:
        pass

    async def cyclic(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        node = Node()
        node.me = node  # a reference cycle, as a recursive closure makes one
        node.payload = bytearray(8 * MiB)
        left.append(weakref.ref(node))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    gc.disable()  # only the middleware may collect it
    try:
        await call(RequestLimits(cyclic, budget=16 * MiB), "/big", b"x" * (2 * MiB))
        assert left[0]() is None
    finally:
        gc.enable()


async def test_the_budget_serves_in_order_and_forgets_a_waiter_that_gives_up(autojump_clock):
    budget = ByteBudget(10)
    await budget.acquire(6)
    order: list[str] = []

    async def take(name: str, n: int, patience: float) -> None:
        with trio.move_on_after(patience):
            await budget.acquire(n)
            order.append(name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take, "impatient", 8, 1)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(take, "next", 4, 100)
        await trio.testing.wait_all_tasks_blocked()
        assert order == []  # 4 would fit, but not ahead of an earlier waiter
        await trio.sleep(2)  # the first gives up: the next one gets its turn
        assert order == ["next"]
    budget.release(6)
    budget.release(4)
    assert budget.used == 0
