"""`GET /v2/events`: the event bus as Server-Sent Events (SPEC.md 1.9).

The client must accept `text/event-stream` (else 405).  `event_type` may be
repeated to filter.  Each event is one frame, `event: <type>\\ndata: <json>\\n\\n`;
a blank line every `KEEPALIVE_SECONDS` keeps proxies from timing out.  On
connect the bus publishes `event_stream_attached` (which the new client sees
too, if its filter allows), on disconnect `event_stream_detached`.

A consumer that falls `--event_stream_max_outstanding_messages` events behind
is disconnected at once: the bus closes its subscription, and this response
then ends the connection even while blocked writing to a socket the client
no longer reads.
"""

from __future__ import annotations

from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..models.events import EventStreamAttached, EventStreamDetached
from ..services.events import EventBus, Subscription
from ._http import json_response

KEEPALIVE_SECONDS = 10.0


class EventStream(Response):
    """A raw ASGI response streaming one subscription."""

    def __init__(self, bus: EventBus, sub: Subscription) -> None:
        self.bus = bus
        self.sub = sub
        self.status_code = 200
        self.background = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        bus, sub = self.bus, self.sub
        try:
            await send({
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
            })
            async with trio.open_nursery() as nursery:

                async def until_disconnect() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    nursery.cancel_scope.cancel()

                async def until_dropped() -> None:
                    await sub.closed.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(until_disconnect)
                nursery.start_soon(until_dropped)
                await send({"type": "http.response.body", "body": b"\n", "more_body": True})
                while True:
                    with trio.move_on_after(KEEPALIVE_SECONDS):
                        try:
                            first = await sub.events.receive()
                        except trio.EndOfChannel:
                            break
                        # Whatever else is already buffered goes out in the same write.
                        frames = [first]
                        while True:
                            try:
                                frames.append(sub.events.receive_nowait())
                            except (trio.WouldBlock, trio.EndOfChannel):
                                break
                        body = b"".join(
                            b"event: " + t.encode() + b"\ndata: " + d + b"\n\n" for t, d in frames
                        )
                        await send({"type": "http.response.body", "body": body, "more_body": True})
                        continue
                    await send({"type": "http.response.body", "body": b"\n", "more_body": True})
                nursery.cancel_scope.cancel()
        finally:
            sub.close()
            bus.publish(EventStreamDetached(timestamp=bus.now(), remote_address=sub.remote_address))


async def event_stream(request: Request) -> Response:
    accept = request.headers.get("accept", "")
    if "text/event-stream" not in accept:
        return json_response({"message": "HTTP 405 Method Not Allowed: use Accept: text/event-stream"}, 405)
    bus: EventBus = request.app.state.ctx.bus
    types = request.query_params.getlist("event_type")
    remote = f"{request.client.host}:{request.client.port}" if request.client else ""
    sub = bus.subscribe(types=types or None, remote_address=remote)
    bus.publish(EventStreamAttached(timestamp=bus.now(), remote_address=remote))
    return EventStream(bus, sub)


routes = [Route("/v2/events", event_stream, methods=["GET"])]
