"""`--http_max_concurrent_requests`: beyond the limit, 503 at once."""

from __future__ import annotations

import trio
import trio.testing

from marathon.api._http import ConcurrencyLimit


async def test_requests_beyond_the_limit_get_503_and_streams_do_not_count():
    release = trio.Event()
    answered: list[int] = []

    async def slow_app(scope, receive, send):
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    limited = ConcurrencyLimit(slow_app, limit=2)

    async def request(path: str) -> None:
        async def send(message):
            if message["type"] == "http.response.start":
                answered.append(message["status"])
                if message["status"] == 503:
                    assert (b"retry-after", b"1") in message["headers"]

        await limited({"type": "http", "path": path}, None, send)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(request, "/v2/apps")
        nursery.start_soon(request, "/v2/apps")
        nursery.start_soon(request, "/v2/events")  # a stream: never counted
        await trio.testing.wait_all_tasks_blocked()
        await request("/v2/info")
        assert answered == [503], "the third concurrent request is shed at once"
        release.set()
    assert sorted(answered) == [200, 200, 200, 503]
    assert limited.active == 0
    await request("/v2/info")
    assert answered[-1] == 200
