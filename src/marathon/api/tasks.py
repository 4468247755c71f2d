"""`/v2/tasks`: every task of every app, and killing tasks by id across apps."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import BadRequest
from ..models.app_rules import decode_json
from ..models.instance import Instance, parse_task_id
from ._auth import app_resource
from ._context import ApiContext
from ._http import flag, json_response
from ._render import placed, task_json
from .apps import kill_instances, scale_down

_STATUS_FILTER = {"running": "Running", "staging": "Staging"}


async def list_tasks(request: Request) -> Response:
    ctx: ApiContext = request.app.state.ctx
    wanted = {
        _STATUS_FILTER[s.lower()]
        for s in request.query_params.getlist("status") + request.query_params.getlist("status[]")
        if s.lower() in _STATUS_FILTER
    }
    tasks = []
    visible = ctx.auth.can_view_app(request)
    for app in sorted(ctx.groups.root.transitive_apps(), key=lambda a: a.id):
        if not visible(app):
            continue
        for inst in placed(ctx.tracker.of_app(app.id)):
            if wanted and inst.condition not in wanted:
                continue
            tasks.append(task_json(ctx, inst, app))
    return json_response({"tasks": tasks})


async def delete_tasks(request: Request) -> Response:
    ctx: ApiContext = request.app.state.ctx
    scale = flag(request, "scale", False)
    wipe = flag(request, "wipe", False)
    force = flag(request, "force", False)
    if scale and wipe:
        raise BadRequest("You cannot use scale and wipe at the same time.")
    body = decode_json(await request.body())
    ids = body.get("ids") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise BadRequest("Request body must be {\"ids\": [\"<taskId>\", ...]}")
    by_app: dict[str, list[Instance]] = {}
    for task_id in ids:
        try:
            parsed = parse_task_id(task_id)
        except ValueError:
            raise BadRequest(f"Invalid task id '{task_id}'. [{task_id}]") from None
        inst = ctx.tracker.get(parsed.instance_id)
        if inst is None or inst.task is None:
            continue  # unknown instances are ignored
        by_app.setdefault(inst.run_spec_id, []).append(inst)
    for app_id in by_app:  # every app is authorized before anything is killed
        app = ctx.groups.app(app_id)
        if app is not None:
            ctx.auth.check(request, "UpdateRunSpec", app_resource(app))
    if scale:
        return await scale_down(ctx, request, by_app, force=force)
    out = []
    for app_id, instances in by_app.items():
        killed, _ = await kill_instances(ctx, request, app_id, instances, scale=False, wipe=wipe, force=force)
        app = ctx.groups.app(app_id)
        out.extend(task_json(ctx, i, app) for i in killed)
    return json_response({"tasks": out})


routes = [
    Route("/v2/tasks", list_tasks, methods=["GET"]),
    Route("/v2/tasks/delete", delete_tasks, methods=["POST"]),
]
