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

from collections.abc import Callable
from typing import Any

import msgspec
import trio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..hookspecs import AuthResource
from ..models.events import Event, EventStreamAttached, EventStreamDetached
from ..services.events import EventBus, Subscription
from ._context import ApiContext
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
    ctx: ApiContext = request.app.state.ctx
    ctx.auth.check_system(request, "ViewResource", "Events")
    bus: EventBus = ctx.bus
    types = request.query_params.getlist("event_type")
    remote = f"{request.client.host}:{request.client.port}" if request.client else ""
    sub = bus.subscribe(types=types or None, remote_address=remote, view=_visible_events(ctx, request))
    bus.publish(EventStreamAttached(timestamp=bus.now(), remote_address=remote))
    return EventStream(bus, sub)


def _visible_events(ctx: ApiContext, request: Request) -> Callable[[Event], Event | None] | None:
    """Only what the caller may view (SPEC.md 1.1): events about other apps or
    groups are skipped, and a deployment's plan is trimmed to the caller's apps
    (a deployment touching nothing of theirs is skipped)."""
    if not ctx.auth.enabled:
        return None
    can_view_app = ctx.auth.can_view_app_id(request)
    identity = ctx.auth.identity(request)

    def view(event: Event) -> Event | None:
        app_id = getattr(event, "app_id", None) or getattr(event, "run_spec_id", None)
        if app_id:
            return event if can_view_app(app_id) else None
        definition = getattr(event, "app_definition", None)
        if isinstance(definition, dict) and "id" in definition:
            return event if can_view_app(definition["id"]) else None
        plan = getattr(event, "plan", None)
        if isinstance(plan, dict):
            trimmed = trim_plan(plan, can_view_app)
            if trimmed is None:
                return None
            if trimmed is plan:
                return event
            changes: dict = {"plan": trimmed}
            step = getattr(event, "current_step", None)
            if isinstance(step, dict):
                changes["current_step"] = trim_step(step, can_view_app)
            return msgspec.structs.replace(event, **changes)
        group_id = getattr(event, "group_id", None)
        if group_id:
            return event if ctx.auth.allowed(identity, "ViewGroup", AuthResource(kind="group", id=group_id)) else None
        return event

    return view


def trim_step(step: dict, visible: Callable[[str], bool]) -> dict:
    return {**step, "actions": [a for a in step.get("actions", []) if visible(a.get("app", ""))]}


def trim_plan(plan: dict, visible: Callable[[str], bool]) -> dict | None:
    """The plan with only visible apps' actions; itself if all are visible,
    None if none is."""
    apps = [a.get("app", "") for step in plan.get("steps", []) for a in step.get("actions", [])]
    shown = [a for a in apps if visible(a)]
    if not shown:
        return None
    if len(shown) == len(apps):
        return plan
    steps = [trim_step(s, visible) for s in plan.get("steps", [])]
    return {**plan, "steps": [s for s in steps if s["actions"]]}


routes = [Route("/v2/events", event_stream, methods=["GET"])]
