"""Remote agents: the agent protocol's routes, `/v2/agents`, and task logs.

* `POST /internal/v1/agents/subscribe` and `POST /internal/v1/agents/{id}/calls`
  carry the agent protocol (`models.agent_protocol`; CLUSTER.md 3.4).  They
  are authenticated by the agent secret (a bearer token), not by the API's
  auth plugins: agents are machines, not users.  The driver behind them is
  `cluster.remote.RemoteDriver`.
* `GET /v2/agents`, `DELETE /v2/agents/{id}` (mark gone) and
  `POST|DELETE /v2/agents/{id}/drain`: operating agents (our additions,
  docs/compatibility.md).
* `GET /v2/tasks/{task_id}/logs?stream=stdout|stderr&offset=&length=&tail=`:
  a task's output, read where the task runs (the embedded agent's sandbox,
  or a remote agent's files endpoint).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import httpx
import msgspec
import trio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import BadRequest, NotFound
from ..models import agent_protocol as proto
from ..models.instance import parse_task_id
from ._context import ApiContext
from ._http import json_response

log = logging.getLogger("marathon.agents")

MAX_CALL_BYTES = 8 * 1024 * 1024
LOG_CHUNK_MAX = 1024 * 1024


def _refusal(exc: Any) -> Response:
    return Response(content=proto.record(proto.Error(code=exc.code, message=exc.message)),
                    status_code=exc.status, media_type="application/recordio")


async def _body(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ValueError(f"message over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class _AgentStream(Response):
    """The leader-to-agent stream: SUBSCRIBED, then every record the driver queues."""

    def __init__(self, first: bytes, records: trio.MemoryReceiveChannel[bytes], stream_id: str,
                 on_close: Callable[[], None]) -> None:
        self.first, self.records, self.stream_id, self.on_close = first, records, stream_id, on_close
        self.status_code = 200
        self.background = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"application/recordio"),
                (proto.STREAM_HEADER.lower().encode(), self.stream_id.encode()),
            ]})
            await send({"type": "http.response.body", "body": self.first, "more_body": True})
            async with trio.open_nursery() as nursery:

                async def until_disconnect() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    nursery.cancel_scope.cancel()

                nursery.start_soon(until_disconnect)
                async for data in self.records:
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                nursery.cancel_scope.cancel()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass
        finally:
            self.on_close()


async def subscribe(request: Request) -> Response:
    ctx: ApiContext = request.app.state.ctx
    driver = ctx.agents
    if driver is None:
        raise NotFound("This master runs no remote agents")
    from ..cluster.remote import AgentRefused

    try:
        driver.check_secret(request.headers.get("authorization"))
        try:
            sub = proto.decode_subscribe(await _body(request, MAX_CALL_BYTES))
        except (msgspec.DecodeError, ValueError) as e:
            raise AgentRefused("BAD_MESSAGE", f"Malformed SUBSCRIBE: {e}", 400) from None
        subscribed, records = driver.subscribe(sub)
    except AgentRefused as e:
        log.warning("agent_refused code=%s remote=%s message=%s", e.code,
                    request.client.host if request.client else "?", e.message)
        return _refusal(e)
    return _AgentStream(proto.record(subscribed), records, subscribed.stream_id,
                        lambda: driver.stream_closed(subscribed.agent_id, subscribed.stream_id))


async def calls(request: Request) -> Response:
    ctx: ApiContext = request.app.state.ctx
    driver = ctx.agents
    if driver is None:
        raise NotFound("This master runs no remote agents")
    from ..cluster.remote import AgentRefused

    agent_id = request.path_params["agent_id"]
    stream_id = request.headers.get(proto.STREAM_HEADER)
    try:
        driver.check_secret(request.headers.get("authorization"))
        try:
            decoded = proto.decode_calls(await _body(request, MAX_CALL_BYTES))
        except (msgspec.DecodeError, ValueError) as e:
            # A malformed message changes nothing; the agent's stream is
            # closed so that it subscribes again from a clean state.
            if stream_id:
                driver.stream_closed(agent_id, stream_id)
            raise AgentRefused("BAD_MESSAGE", f"Malformed call: {e}", 400) from None
        driver.calls(agent_id, stream_id, decoded)
    except AgentRefused as e:
        return _refusal(e)
    return Response(status_code=202)


async def list_agents(request: Request) -> Response:
    ctx: ApiContext = request.app.state.ctx
    ctx.auth.check_system(request, "ViewResource", "Agents")
    out = []
    local = ctx.local_agent
    if local is not None:
        out.append(local)
    if ctx.agents is not None:
        out.extend(ctx.agents.agent_views())
    return json_response({"agents": out})


def _remote_or_404(ctx: ApiContext, agent_id: str) -> Any:
    if ctx.agents is None or ctx.agents.endpoint_of(agent_id) is None:
        raise NotFound(f"Agent {agent_id} not found")
    return ctx.agents


async def agent_gone(request: Request) -> Response:
    ctx: ApiContext = request.app.state.ctx
    ctx.auth.check_system(request, "UpdateResource", "Agents")
    agent_id = request.path_params["agent_id"]
    _remote_or_404(ctx, agent_id).mark_gone(agent_id)
    return json_response({"agentId": agent_id, "state": "GONE"})


async def agent_drain(request: Request) -> Response:
    """POST: no new placements on the agent, and its instances replaced
    elsewhere by one deployment within each app's upgradeStrategy (apps with
    a deployment running are listed as `skipped`: drain again later).
    DELETE: the agent takes placements again."""
    ctx: ApiContext = request.app.state.ctx
    ctx.auth.check_system(request, "UpdateResource", "Agents")
    agent_id = request.path_params["agent_id"]
    draining = request.method == "POST"
    _remote_or_404(ctx, agent_id).set_draining(agent_id, draining)
    if not draining:
        return json_response({"agentId": agent_id, "draining": False})
    by_app: dict[str, list[str]] = {}
    for inst in ctx.tracker.all():
        if inst.agent_id == agent_id and inst.state.goal == "Running" and not inst.is_terminal:
            by_app.setdefault(inst.run_spec_id, []).append(inst.instance_id)
    plan, skipped = await ctx.groups.drain(by_app)
    headers = {"Marathon-Deployment-Id": plan.id} if plan is not None else None
    return json_response({"agentId": agent_id, "draining": True,
                          "deploymentId": plan.id if plan is not None else None,
                          "instances": sum(len(v) for v in by_app.values()), "skipped": skipped},
                         headers=headers)


async def task_logs(request: Request) -> Response:
    """A task's stdout or stderr, from where it runs."""
    ctx: ApiContext = request.app.state.ctx
    task_id = request.path_params["task_id"]
    try:
        parsed = parse_task_id(task_id)
    except ValueError:
        raise NotFound(f"Task '{task_id}' does not exist") from None
    inst = ctx.tracker.get(parsed.instance_id)
    if inst is None or inst.task is None or inst.agent_id is None:
        raise NotFound(f"Task '{task_id}' does not exist")
    app = ctx.groups.app(inst.run_spec_id)
    if app is not None:
        from ._auth import app_resource

        ctx.auth.check(request, "ViewRunSpec", app_resource(app))
    stream = request.query_params.get("stream", "stdout")
    if stream not in ("stdout", "stderr"):
        raise BadRequest("stream must be stdout or stderr")
    try:
        offset = int(request.query_params.get("offset", "-1"))
        length = min(int(request.query_params.get("length", str(LOG_CHUNK_MAX))), LOG_CHUNK_MAX)
    except ValueError:
        raise BadRequest("offset and length must be integers") from None
    endpoint = ctx.agents.endpoint_of(inst.agent_id) if ctx.agents is not None else None
    if endpoint:
        try:
            async with httpx.AsyncClient(timeout=10.0) as client:
                r = await client.get(f"{endpoint}/files/read", params={
                    "task_id": task_id, "file": stream, "offset": offset, "length": length},
                    headers=ctx.agent_auth_headers)
        except httpx.HTTPError as e:
            return json_response({"message": f"Agent {inst.agent_id} did not answer: {e}"}, 502)
        return Response(content=r.content, status_code=r.status_code, media_type="application/json")
    if ctx.read_sandbox_file is None:
        raise NotFound(f"Task '{task_id}' runs on no agent this master can read")
    data = await trio.to_thread.run_sync(ctx.read_sandbox_file, task_id, stream, offset, length)
    if data is None:
        raise NotFound(f"No {stream} for task '{task_id}'")
    return json_response(data)


routes = [
    Route(proto.SUBSCRIBE_PATH, subscribe, methods=["POST"]),
    Route("/internal/v1/agents/{agent_id}/calls", calls, methods=["POST"]),
    Route("/v2/agents", list_agents, methods=["GET"]),
    Route("/v2/agents/{agent_id}", agent_gone, methods=["DELETE"]),
    Route("/v2/agents/{agent_id}/drain", agent_drain, methods=["POST", "DELETE"]),
    Route("/v2/tasks/{task_id}/logs", task_logs, methods=["GET"]),
]
