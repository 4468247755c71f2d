"""`/v2/apps`: create, read, update, delete, restart apps; their tasks and versions.

Request semantics follow SPEC.md 1.4: PUT is a partial update by default and
creates a missing app; a body with `version` is a rollback; DELETE defaults to
`force=true`.  Every change is a function of the current root group run by
the groups service under its lock, so concurrent requests never lose updates
and a refused request changes nothing.
"""

from __future__ import annotations

from typing import Any

from msgspec import UNSET, structs
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import AppNotFound, BadRequest, Conflict, InvalidJson, TaskNotFound, Violation
from ..hookspecs import AuthResource
from ..instance_update import ChangeGoal
from ..models import pathid
from ..models.app import AppDefinition
from ..models.app_rules import (
    AppContext,
    check_rollback_only,
    decode_app,
    decode_app_update,
    decode_json,
    is_rollback,
    merge_update,
    normalize_app,
)
from ..models.events import ApiPostEvent
from ..models.group import Group, remove_app
from ..models.group import put_app as store_app
from ..models.instance import ACTIVE, Condition, Goal, Instance, parse_task_id
from ..models.timestamp import canonical, is_timestamp
from . import _selector
from ._auth import app_resource
from ._context import ApiContext
from ._http import base_url, deployment_result, flag, json_response
from ._render import app_info, join_array, parse_embeds, placed, splice, task_json

LIST_EMBEDS = {"counts", "deployments"}
SINGLE_EMBEDS = {"counts", "tasks", "lastTaskFailure", "deployments"}


def _ctx(request: Request) -> ApiContext:
    return request.app.state.ctx


def _app_id(request: Request) -> str:
    return pathid.resolve(request.path_params["app_id"], "/")


def app_context(ctx: ApiContext, app_id: str, existing: AppDefinition | None, base: str = "/") -> AppContext:
    cfg = ctx.config
    return AppContext(
        mesos_role=cfg.mesos_role,
        enforce_role=ctx.groups.enforce_role_for(app_id),
        existing_role=existing.role if existing is not None and existing.role is not UNSET else None,  # type: ignore[arg-type]
        default_network_name=cfg.default_network_name,
        mesos_bridge_name=cfg.mesos_bridge_name,
        features=cfg.features,
        base=base,
        max_instances=cfg.max_instances_per_app,
    )


def _publish_post(ctx: ApiContext, request: Request, app: AppDefinition | None) -> None:
    if app is None:
        return
    import msgspec

    ctx.bus.publish(
        ApiPostEvent(
            timestamp=ctx.bus.now(),
            client_ip=request.client.host if request.client else "",
            uri=request.url.path,
            app_definition=msgspec.to_builtins(app),
        )
    )


# -- reading -------------------------------------------------------------------


async def list_apps(request: Request) -> Response:
    ctx = _ctx(request)
    q = request.query_params
    embeds = parse_embeds(q.getlist("embed")) | LIST_EMBEDS
    cmd = (q.get("cmd") or "").lower()
    ident = (q.get("id") or "").lower()
    label = q.get("label")
    matcher = _selector.parse(label) if label else None
    items = []
    visible = ctx.auth.can_view_app(request)
    for app in sorted(ctx.groups.root.transitive_apps(), key=lambda a: a.id):
        if not visible(app):
            continue
        if cmd and cmd not in (app.cmd or "").lower():  # type: ignore[operator]
            continue
        if ident and ident not in app.id.lower():
            continue
        if matcher is not None and not matcher(app.labels):
            continue
        items.append(app_info(ctx, app, embeds))
    return json_response(b'{"apps":' + join_array(items) + b"}")


def _group_apps(ctx: ApiContext, request: Request, group_path: str) -> list[AppDefinition]:
    gid = pathid.resolve(group_path, "/")
    group = ctx.groups.root.group(gid)
    if group is None:
        raise AppNotFound(gid)
    ctx.auth.check(request, "ViewGroup", AuthResource(kind="group", id=gid))
    visible = ctx.auth.can_view_app(request)
    return sorted((a for a in group.transitive_apps() if visible(a)), key=lambda a: a.id)


def _viewable_app(ctx: ApiContext, request: Request, app_id: str) -> AppDefinition:
    app = ctx.groups.app(app_id)
    if app is None:
        raise AppNotFound(app_id)
    ctx.auth.check(request, "ViewRunSpec", app_resource(app))
    return app


async def get_app(request: Request) -> Response:
    ctx = _ctx(request)
    raw = request.path_params["app_id"]
    embeds = parse_embeds(request.query_params.getlist("embed"))
    if raw.endswith("*"):
        apps = _group_apps(ctx, request, raw.rstrip("*"))
        items = [app_info(ctx, a, embeds | LIST_EMBEDS) for a in apps]
        return json_response(b'{"*":' + join_array(items) + b"}")
    app = _viewable_app(ctx, request, _app_id(request))
    return json_response(b'{"app":' + app_info(ctx, app, embeds | SINGLE_EMBEDS) + b"}")


async def list_versions(request: Request) -> Response:
    ctx = _ctx(request)
    app_id = _viewable_app(ctx, request, _app_id(request)).id
    versions = sorted(await ctx.repo.app_versions(app_id), reverse=True)
    return json_response({"versions": versions})


async def get_version(request: Request) -> Response:
    ctx = _ctx(request)
    app_id = _viewable_app(ctx, request, _app_id(request)).id
    raw = request.path_params["version"]
    if not is_timestamp(raw):
        raise AppNotFound(app_id, raw)
    app = await ctx.repo.app_at(app_id, canonical(raw))
    if app is None:
        raise AppNotFound(app_id, raw)
    return json_response(app)


# -- changing -------------------------------------------------------------------


async def create_app(request: Request) -> Response:
    ctx = _ctx(request)
    force = flag(request, "force", False)
    obj = decode_json(await request.body())
    decoded = decode_app(obj)
    app_id = pathid.resolve(decoded.id, "/") if decoded.id else "/"
    app = normalize_app(decoded, app_context(ctx, app_id, None))

    def change(root: Group, version: str) -> Group:
        if root.app(app.id) is not None:
            raise Conflict(f"An app with id [{app.id}] already exists.")
        if root.group(app.id) is not None:
            raise Conflict(f"A group with id [{app.id}] already exists.")
        return store_app(root, app, version=version, new_group=ctx.groups.new_group_factory(version))

    plan = await ctx.groups.update(
        change, force=force, guard=ctx.auth.guard(request),
        announce=lambda root: _publish_post(ctx, request, root.app(app.id)),
    )
    shown = structs.replace(app, version=plan.version)
    body = splice(
        app_info(ctx, shown, set(), stored=False),
        {"tasksStaged": 0, "tasksRunning": 0, "tasksHealthy": 0, "tasksUnhealthy": 0, "deployments": [{"id": plan.id}]},
    )
    headers = {"Location": f"{base_url(request)}{app.id}", "Marathon-Deployment-Id": plan.id}
    return json_response(body, 201, headers)


def _updated_app(
    ctx: ApiContext, app_id: str, current: AppDefinition | None, obj: Any, *, partial: bool
) -> AppDefinition:
    """The new definition of `app_id` from a PUT/PATCH body (not a rollback)."""
    if current is not None and partial:
        update = decode_app_update(obj)
        merged = merge_update(current, update)
        merged = structs.replace(merged, id=app_id)
        return normalize_app(merged, app_context(ctx, app_id, current))
    body = dict(obj) if isinstance(obj, dict) else obj
    if isinstance(body, dict):
        body["id"] = app_id
    return normalize_app(decode_app(body), app_context(ctx, app_id, current))


async def _rollback_target(ctx: ApiContext, app_id: str, update: Any) -> AppDefinition:
    check_rollback_only(update)
    version = update.version
    if not is_timestamp(version):
        raise AppNotFound(app_id, version)
    app = await ctx.repo.app_at(app_id, canonical(version))
    if app is None:
        raise AppNotFound(app_id, version)
    return app


async def put_app(request: Request) -> Response:
    return await _update_one(request, partial_default=True, allow_create=True)


async def patch_app(request: Request) -> Response:
    return await _update_one(request, partial_default=True, allow_create=False, force_partial=True)


async def _update_one(request: Request, *, partial_default: bool, allow_create: bool, force_partial: bool = False) -> Response:
    ctx = _ctx(request)
    app_id = _app_id(request)
    force = flag(request, "force", False)
    partial = True if force_partial else flag(request, "partialUpdate", partial_default)
    obj = decode_json(await request.body())
    update = decode_app_update(obj)
    rollback = await _rollback_target(ctx, app_id, update) if is_rollback(update) else None
    created = False

    def change(root: Group, version: str) -> Group:
        nonlocal created
        current = root.app(app_id)
        if current is None and not allow_create:
            raise AppNotFound(app_id)
        if rollback is not None:
            new = rollback
        else:
            new = _updated_app(ctx, app_id, current, obj, partial=partial)
        if current is None and root.group(app_id) is not None:
            raise Conflict(f"A group with id [{app_id}] already exists.")
        created = current is None
        return store_app(root, new, version=version, new_group=ctx.groups.new_group_factory(version))

    plan = await ctx.groups.update(
        change, force=force, guard=ctx.auth.guard(request),
        announce=lambda root: _publish_post(ctx, request, root.app(app_id)),
    )
    if created:
        return deployment_result(plan.id, plan.version, 201, location=f"{base_url(request)}{app_id}")
    return deployment_result(plan.id, plan.version)


async def _update_many(request: Request, *, allow_create: bool) -> Response:
    ctx = _ctx(request)
    force = flag(request, "force", False)
    partial = flag(request, "partialUpdate", True)
    obj = decode_json(await request.body())
    if not isinstance(obj, list):
        raise InvalidJson([Violation("/", "error.expected.jsarray")])
    for i, item in enumerate(obj):
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise InvalidJson([Violation(f"({i})/id", "requirement failed: App Update must have app id set")])

    def change(root: Group, version: str) -> Group:
        for item in obj:
            app_id = pathid.resolve(item["id"], "/")
            current = root.app(app_id)
            if current is None and not allow_create:
                raise AppNotFound(app_id)
            new = _updated_app(ctx, app_id, current, item, partial=partial)
            root = store_app(root, new, version=version, new_group=ctx.groups.new_group_factory(version))
        return root

    plan = await ctx.groups.update(change, force=force, guard=ctx.auth.guard(request))
    return deployment_result(plan.id, plan.version)


async def put_apps(request: Request) -> Response:
    return await _update_many(request, allow_create=True)


async def patch_apps(request: Request) -> Response:
    return await _update_many(request, allow_create=False)


async def delete_app(request: Request) -> Response:
    ctx = _ctx(request)
    app_id = _app_id(request)
    force = flag(request, "force", True)

    def change(root: Group, version: str) -> Group:
        if root.app(app_id) is None:
            raise AppNotFound(app_id)
        return remove_app(root, app_id, version=version)

    plan = await ctx.groups.update(change, force=force, guard=ctx.auth.guard(request))
    return deployment_result(plan.id, plan.version)


async def restart_app(request: Request) -> Response:
    ctx = _ctx(request)
    app_id = _app_id(request)
    force = flag(request, "force", False)

    def change(root: Group, version: str) -> Group:
        if root.app(app_id) is None:
            raise AppNotFound(app_id)
        return root

    plan = await ctx.groups.update(change, force=force, restart=[app_id], guard=ctx.auth.guard(request))
    return deployment_result(plan.id, plan.version)


# -- tasks of an app -------------------------------------------------------------------


async def app_tasks(request: Request) -> Response:
    ctx = _ctx(request)
    raw = request.path_params["app_id"]
    if raw.endswith("*"):
        apps = _group_apps(ctx, request, raw.rstrip("*"))
    else:
        apps = [_viewable_app(ctx, request, _app_id(request))]
    tasks = [task_json(ctx, i, a) for a in apps for i in placed(ctx.tracker.of_app(a.id))]
    return json_response({"tasks": tasks})


def _kill_flags(request: Request) -> tuple[bool, bool, bool]:
    scale = flag(request, "scale", False)
    wipe = flag(request, "wipe", False)
    force = flag(request, "force", False)
    if scale and wipe:
        raise BadRequest("You cannot use scale and wipe at the same time.")
    return scale, wipe, force


async def kill_instances(
    ctx: ApiContext, request: Request, app_id: str, instances: list[Instance], *, scale: bool, wipe: bool, force: bool
) -> tuple[Any, Response | None]:
    """Kill, wipe or kill-and-scale `instances` of one app (shared with /v2/tasks/delete)."""
    if scale:
        return None, await scale_down(ctx, request, {app_id: instances}, force=force)
    if wipe:
        now = ctx.time_ms()
        await ctx.tracker.process(
            [ChangeGoal(instance_id=i.instance_id, goal=Goal.DECOMMISSIONED, now=now) for i in instances]
        )
    else:
        ctx.tracker.kill_tasks(instances)
    return instances, None


async def scale_down(ctx: ApiContext, request: Request, victims: dict[str, list[Instance]], *, force: bool) -> Response:
    """One deployment scaling every app down by its killed instances (SPEC.md 1.4)."""
    to_kill = {
        app_id: [i.instance_id for i in insts if i.condition in ACTIVE and i.condition != Condition.KILLING]
        for app_id, insts in victims.items()
    }

    def change(root: Group, version: str) -> Group:
        for app_id, ids in to_kill.items():
            app = root.app(app_id)
            if app is None:
                raise AppNotFound(app_id)
            root = store_app(root, structs.replace(app, instances=max(0, app.instances - len(ids))), version=version)
        return root

    plan = await ctx.groups.update(change, force=force, to_kill=to_kill, guard=ctx.auth.guard(request))
    return deployment_result(plan.id, plan.version)


async def kill_app_tasks(request: Request) -> Response:
    ctx = _ctx(request)
    app_id = _app_id(request)
    scale, wipe, force = _kill_flags(request)
    app = ctx.groups.app(app_id)
    if app is None:
        raise AppNotFound(app_id)
    ctx.auth.check(request, "UpdateRunSpec", app_resource(app))
    host = request.query_params.get("host")
    instances = placed(ctx.tracker.of_app(app_id))
    if host and host != "*":
        instances = [i for i in instances if i.hostname == host]
    killed, response = await kill_instances(ctx, request, app_id, instances, scale=scale, wipe=wipe, force=force)
    if response is not None:
        return response
    return json_response({"tasks": [task_json(ctx, i, app) for i in killed]})


async def kill_app_task(request: Request) -> Response:
    ctx = _ctx(request)
    app_id = _app_id(request)
    task_id = request.path_params["task_id"]
    scale, wipe, force = _kill_flags(request)
    app = ctx.groups.app(app_id)
    if app is None:
        raise AppNotFound(app_id)
    ctx.auth.check(request, "UpdateRunSpec", app_resource(app))
    try:
        parsed = parse_task_id(task_id)
    except ValueError:
        raise TaskNotFound(task_id) from None
    inst = ctx.tracker.get(parsed.instance_id)
    if inst is None or inst.run_spec_id != app_id or inst.task is None:
        raise TaskNotFound(task_id)
    _, response = await kill_instances(ctx, request, app_id, [inst], scale=scale, wipe=wipe, force=force)
    if response is not None:
        return response
    return json_response({"task": task_json(ctx, inst, app)})


routes = [
    Route("/v2/apps", list_apps, methods=["GET"]),
    Route("/v2/apps", create_app, methods=["POST"]),
    Route("/v2/apps", put_apps, methods=["PUT"]),
    Route("/v2/apps", patch_apps, methods=["PATCH"]),
    Route("/v2/apps/{app_id:path}/tasks/{task_id}", kill_app_task, methods=["DELETE"]),
    Route("/v2/apps/{app_id:path}/tasks", app_tasks, methods=["GET"]),
    Route("/v2/apps/{app_id:path}/tasks", kill_app_tasks, methods=["DELETE"]),
    Route("/v2/apps/{app_id:path}/versions/{version}", get_version, methods=["GET"]),
    Route("/v2/apps/{app_id:path}/versions", list_versions, methods=["GET"]),
    Route("/v2/apps/{app_id:path}/restart", restart_app, methods=["POST"]),
    Route("/v2/apps/{app_id:path}", get_app, methods=["GET"]),
    Route("/v2/apps/{app_id:path}", put_app, methods=["PUT"]),
    Route("/v2/apps/{app_id:path}", patch_app, methods=["PATCH"]),
    Route("/v2/apps/{app_id:path}", delete_app, methods=["DELETE"]),
]

