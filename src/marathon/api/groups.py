"""`/v2/groups`: read, create, update, scale, roll back and delete group trees.

Request semantics follow SPEC.md 1.5 and 3: a body is a `GroupUpdate`
(`marathon.models.group_update`) whose `id` is resolved against the URL path;
PUT creates or updates (rollback, scaleBy or a structural update), POST only
creates, PATCH changes `enforceRole` of a top-level group without a
deployment.  Every change is a function of the current root run by the
groups service under its lock, so a refused request changes nothing.

GroupInfo is assembled from the cached AppInfo bytes of its apps, so a large
tree is rendered without re-encoding every app definition.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import Conflict, GroupNotFound, ValidationFailed, Violation
from ..hookspecs import AuthResource
from ..models import pathid
from ..models.app_rules import AppContext, decode_json
from ..models.deployment import steps_json
from ..models.group import Group, update_group
from ..models.group_update import (
    apply_update,
    decode_group_partial_update,
    decode_group_update,
    remove_group,
    update_mode,
)
from ..models.timestamp import canonical, is_timestamp
from ._context import ApiContext
from ._http import base_url, deployment_result, flag, json_response
from ._render import app_info, join_array, parse_embeds
from .apps import app_context

EMBED_GROUPS = "group.groups"
EMBED_APPS = "group.apps"
EMBED_PODS = "group.pods"
DEFAULT_EMBEDS = frozenset({EMBED_GROUPS, EMBED_APPS, EMBED_PODS})
_APP_EMBED_PREFIX = "group.apps."

_encoder = msgspec.json.Encoder()


def _ctx(request: Request) -> ApiContext:
    return request.app.state.ctx


def _group_id(request: Request) -> str:
    return pathid.resolve(request.path_params.get("group_id", "") or "/", "/")


def _checked_group_id(request: Request) -> str:
    """The URL's group id for a change: it must be a valid path id (422 otherwise)."""
    raw = request.path_params.get("group_id", "") or ""
    problems = [Violation("/", msg) for msg in pathid.segment_errors(raw)]
    if problems:
        raise ValidationFailed(problems)
    return pathid.resolve(raw or "/", "/")


# -- rendering -------------------------------------------------------------------


def _embeds(request: Request) -> tuple[set[str], set[str]]:
    """(app embeds, group embeds) of the `embed` parameters, as Marathon splits them.

    Without `embed` a group shows its groups, apps and pods; with `embed`
    only the listed collections appear.  `group.apps.<x>` values embed `<x>`
    in every AppInfo.
    """
    values = request.query_params.getlist("embed")
    if not values:
        return set(), set(DEFAULT_EMBEDS)
    app_values = [v for v in values if v.startswith(_APP_EMBED_PREFIX)]
    group_values = {v for v in values if not v.startswith(_APP_EMBED_PREFIX)}
    return parse_embeds(app_values), group_values & DEFAULT_EMBEDS


def group_info(
    ctx: ApiContext,
    group: Group,
    app_embeds: set[str],
    group_embeds: set[str],
    request: Request | None = None,
) -> bytes:
    """GroupInfo JSON: `{id, dependencies, version, enforceRole, apps?, groups?, pods?}`.

    With `request`, apps and subgroups the caller may not view are left out.
    """
    head = _encoder.encode(
        {
            "id": group.id,
            "dependencies": list(group.dependencies),
            "version": group.version,
            "enforceRole": group.enforce_role,
        }
    )
    parts: list[bytes] = []
    view_app = ctx.auth.can_view_app(request) if request is not None and ctx.auth.enabled else None
    identity = ctx.auth.identity(request) if request is not None else None
    if EMBED_APPS in group_embeds:
        apps = sorted((a for a in group.apps.values() if view_app is None or view_app(a)), key=lambda a: a.id)
        parts.append(b'"apps":' + join_array(app_info(ctx, a, app_embeds) for a in apps))
    if EMBED_GROUPS in group_embeds:
        children = sorted(
            (
                g for g in group.groups.values()
                if view_app is None or ctx.auth.allowed(identity, "ViewGroup", AuthResource(kind="group", id=g.id))
            ),
            key=lambda g: g.id,
        )
        parts.append(b'"groups":' + join_array(group_info(ctx, g, app_embeds, group_embeds, request) for g in children))
    if EMBED_PODS in group_embeds:
        parts.append(b'"pods":[]')
    if not parts:
        return head
    return head[:-1] + b"," + b",".join(parts) + b"}"


# -- reading -------------------------------------------------------------------


def _check_view(ctx: ApiContext, request: Request, group_id: str) -> None:
    ctx.auth.check(request, "ViewGroup", AuthResource(kind="group", id=group_id))



async def get_group(request: Request) -> Response:
    ctx = _ctx(request)
    gid = _group_id(request)
    app_embeds, group_embeds = _embeds(request)
    group = ctx.groups.root.group(gid)
    if group is None:
        raise GroupNotFound(gid)
    _check_view(ctx, request, gid)
    return json_response(group_info(ctx, group, app_embeds, group_embeds, request))


async def group_apps(request: Request) -> Response:
    """Every app below the group (transitively); `[]` for an unknown group, as in Marathon."""
    ctx = _ctx(request)
    gid = _group_id(request)
    app_embeds, _ = _embeds(request)
    group = ctx.groups.root.group(gid)
    _check_view(ctx, request, gid)
    visible = ctx.auth.can_view_app(request)
    apps = sorted((a for a in group.transitive_apps() if visible(a)), key=lambda a: a.id) if group is not None else []
    return json_response(join_array(app_info(ctx, a, app_embeds) for a in apps))


async def group_versions(request: Request) -> Response:
    """Versions of the stored root groups that contain the group, newest first."""
    ctx = _ctx(request)
    gid = _group_id(request)
    if ctx.groups.root.group(gid) is None:
        raise GroupNotFound(gid)
    _check_view(ctx, request, gid)
    versions = sorted(await ctx.repo.root_versions(), reverse=True)
    if not pathid.is_root(gid):
        kept = []
        for v in versions:
            snapshot = await ctx.repo.root_at(v)
            if snapshot is not None and snapshot.group(gid) is not None:
                kept.append(v)
        versions = kept
    return json_response(versions)


async def group_version(request: Request) -> Response:
    """The group as it was in a stored root version (apps without live data)."""
    ctx = _ctx(request)
    gid = _group_id(request)
    raw = request.path_params["version"]
    _, group_embeds = _embeds(request)
    _check_view(ctx, request, gid)
    if not is_timestamp(raw):
        raise GroupNotFound(gid)
    snapshot = await ctx.repo.root_at(canonical(raw))
    group = snapshot.group(gid) if snapshot is not None else None
    if group is None:
        raise GroupNotFound(gid)
    return json_response(group_info(ctx, group, set(), group_embeds, request))


# -- changing -------------------------------------------------------------------


async def _change_for(request: Request, url_id: str) -> tuple[str, Callable[[Group, str], Group]]:
    """The effective group id of a POST/PUT body and the change function applying it."""
    ctx = _ctx(request)
    force = flag(request, "force", False)
    update = decode_group_update(decode_json(await request.body()))
    effective = pathid.resolve(update.id, url_id) if isinstance(update.id, str) else url_id
    snapshot = None
    if update_mode(update) == "rollback":
        snapshot = await ctx.repo.root_at(update.version)  # type: ignore[arg-type]

    def change(root: Group, version: str) -> Group:
        def context_for(app_id: str, base: str) -> AppContext:
            return dataclasses.replace(app_context(ctx, app_id, root.app(app_id), base), force=force)

        return apply_update(
            root,
            effective,
            update,
            version=version,
            app_context_for=context_for,
            new_group=ctx.groups.new_group_factory(version),
            snapshot_root=snapshot,
            max_instances=ctx.config.max_instances_per_app,
        )

    return effective, change


async def create_group(request: Request) -> Response:
    ctx = _ctx(request)
    force = flag(request, "force", False)
    url_id = _checked_group_id(request)
    effective, apply = await _change_for(request, url_id)

    def change(root: Group, version: str) -> Group:
        target = apply(root, version)
        if root.group(effective) is not None:
            raise Conflict(f"Group {effective} is already created. Use PUT to change this group.")
        if root.app(effective) is not None:
            raise Conflict(f"An app with the path {effective} already exists.")
        return target

    plan = await ctx.groups.update(change, force=force, guard=ctx.auth.guard(request))
    return deployment_result(plan.id, plan.version, 201, location=f"{base_url(request)}{effective}")


async def put_group(request: Request) -> Response:
    ctx = _ctx(request)
    force = flag(request, "force", False)
    dry_run = flag(request, "dryRun", False)
    url_id = _checked_group_id(request)
    _, change = await _change_for(request, url_id)
    plan = await ctx.groups.update(change, force=force, dry_run=dry_run, guard=ctx.auth.guard(request))
    if dry_run:
        return json_response({"steps": steps_json(plan.steps)})
    return deployment_result(plan.id, plan.version)


async def patch_group(request: Request) -> Response:
    """`{"enforceRole": bool}` for a top-level group, stored at once (no deployment)."""
    ctx = _ctx(request)
    update = decode_group_partial_update(decode_json(await request.body()))
    gid = _group_id(request)
    if len(pathid.segments(gid)) != 1:
        raise ValidationFailed([Violation("/", "Path needs to be top-level")])
    enforce = update.enforce_role
    if not isinstance(enforce, bool):
        enforce = ctx.groups.new_group_enforces_role()

    def with_enforce_role(group: Group | None) -> Group:
        if group is None:
            raise GroupNotFound(gid)
        return msgspec.structs.replace(group, enforce_role=enforce)

    def change(root: Group, version: str) -> Group:
        if root.group(gid) is None:
            raise GroupNotFound(gid)
        return update_group(root, gid, with_enforce_role, version=version)

    ctx.auth.check(request, "UpdateGroup", AuthResource(kind="group", id=gid))
    await ctx.groups.update_without_deployment(change)
    return Response(status_code=200)


async def delete_group(request: Request) -> Response:
    ctx = _ctx(request)
    gid = _group_id(request)
    force = flag(request, "force", False)

    def change(root: Group, version: str) -> Group:
        return remove_group(root, gid, version)

    plan = await ctx.groups.update(change, force=force, guard=ctx.auth.guard(request))
    return deployment_result(plan.id, plan.version)


# Starlette tries routes in order and `{group_id:path}` matches anything, so
# the routes with a fixed suffix come first.
routes = [
    Route("/v2/groups", get_group, methods=["GET"]),
    Route("/v2/groups", create_group, methods=["POST"]),
    Route("/v2/groups", put_group, methods=["PUT"]),
    Route("/v2/groups", delete_group, methods=["DELETE"]),
    Route("/v2/groups/apps", group_apps, methods=["GET"]),
    Route("/v2/groups/versions", group_versions, methods=["GET"]),
    Route("/v2/groups/versions/{version}", group_version, methods=["GET"]),
    Route("/v2/groups/{group_id:path}/apps", group_apps, methods=["GET"]),
    Route("/v2/groups/{group_id:path}/versions/{version}", group_version, methods=["GET"]),
    Route("/v2/groups/{group_id:path}/versions", group_versions, methods=["GET"]),
    Route("/v2/groups/{group_id:path}", get_group, methods=["GET"]),
    Route("/v2/groups/{group_id:path}", create_group, methods=["POST"]),
    Route("/v2/groups/{group_id:path}", put_group, methods=["PUT"]),
    Route("/v2/groups/{group_id:path}", patch_group, methods=["PATCH"]),
    Route("/v2/groups/{group_id:path}", delete_group, methods=["DELETE"]),
]
