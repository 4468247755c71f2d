"""System endpoints: `/ping`, `/v2/info`, `/v2/leader`, `/` and the OpenAPI document."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import msgspec
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from .._version import MARATHON_API_VERSION, __version__
from ..config import Config
from ..errors import ValidationFailed, Violation
from ..leadership import Abdication, Leadership
from ._http import json_response


def _accepts(request: Request) -> str | None:
    """Pick the /ping representation: text/plain for */* (SPEC.md 1.14)."""
    accept = request.headers.get("accept", "*/*")
    offered = [a.split(";")[0].strip().lower() for a in accept.split(",") if a.strip()]
    for media in offered:
        if media in ("*/*", "text/plain", "text/*"):
            return "text/plain"
        if media == "text/html":
            return "text/html"
        if media == "application/json":
            return "application/json"
    return None


async def ping(request: Request) -> Response:
    media = _accepts(request)
    if media is None:
        return Response(status_code=204)
    if media == "application/json":
        return json_response("pong")
    return Response("pong", media_type=media)


def _leadership(ctx: Any) -> Leadership | None:
    return getattr(ctx, "leadership", None)


def info_json(ctx: Any) -> dict:
    cfg: Config = ctx.config
    lead = _leadership(ctx)
    return {
        "name": "marathon",
        "version": MARATHON_API_VERSION,
        "buildref": f"marathon-trio {__version__}",
        "elected": lead.leading if lead is not None else True,
        "leader": lead.leader_address() if lead is not None else cfg.leader_address,
        "frameworkId": None,
        "marathon_config": {
            "access_control_allow_origin": cfg.access_control_allow_origin,
            "checkpoint": True,
            "decline_offer_duration": 120000,
            "default_network_name": cfg.default_network_name,
            "env_vars_prefix": cfg.env_vars_prefix,
            "executor": "//cmd",
            "failover_timeout": 604800,
            "features": sorted(cfg.features),
            "framework_name": cfg.framework_name,
            "ha": cfg.ha,
            "hostname": cfg.hostname,
            "launch_token": cfg.launch_tokens,
            "launch_token_refresh_interval": cfg.launch_token_refresh_interval,
            "leader_proxy_connection_timeout_ms": cfg.leader_proxy_connection_timeout,
            "leader_proxy_read_timeout_ms": cfg.leader_proxy_read_timeout,
            "local_port_max": cfg.local_port_max,
            "local_port_min": cfg.local_port_min,
            "master": cfg.master,
            "max_instances_per_offer": 5,
            "mesos_bridge_name": cfg.mesos_bridge_name,
            "mesos_heartbeat_failure_threshold": 5,
            "mesos_heartbeat_interval": 15000,
            "mesos_leader_ui_url": None,
            "mesos_role": cfg.mesos_role,
            "mesos_user": None,
            "new_group_enforce_role": cfg.new_group_enforce_role,
            "min_revive_offers_interval": 5000,
            "offer_matching_timeout": 3000,
            "on_elected_prepare_timeout": 180000,
            "reconciliation_initial_delay": cfg.reconciliation_initial_delay,
            "reconciliation_interval": cfg.reconciliation_interval,
            "scale_apps_initial_delay": cfg.scale_apps_initial_delay,
            "scale_apps_interval": cfg.scale_apps_interval,
            "store_cache": True,
            "task_launch_confirm_timeout": cfg.task_launch_confirm_timeout,
            "task_launch_timeout": cfg.task_launch_timeout,
            "task_lost_expunge_initial_delay": 300000,
            "task_lost_expunge_interval": 30000,
            "task_reservation_timeout": 20000,
            "webui_url": cfg.webui_url,
            "maintenance_mode": True,
        },
        "zookeeper_config": {
            "zk": cfg.redacted_zk,
            "zk_compression": cfg.zk_compression,
            "zk_compression_threshold": cfg.zk_compression_threshold,
            "zk_connection_timeout": cfg.zk_connection_timeout,
            "zk_max_node_size": cfg.zk_max_node_size,
            "zk_max_versions": cfg.zk_max_versions,
            "zk_session_timeout": cfg.zk_session_timeout,
            "zk_timeout": cfg.zk_timeout,
        },
        "http_config": {"http_port": cfg.http_port, "https_port": None},
    }


async def info(request: Request) -> Response:
    ctx = request.app.state.ctx
    ctx.auth.check_system(request, "ViewResource", "SystemConfig")
    # Fixed for the life of the process but for who leads: encoded once per leader.
    lead = _leadership(ctx)
    key = (lead.leading, lead.leader_address()) if lead is not None else None
    cached = getattr(request.app.state, "info_body", None)
    if cached is None or cached[0] != key:
        cached = request.app.state.info_body = (key, msgspec.json.encode(info_json(ctx)))
    return json_response(cached[1])


async def leader(request: Request) -> Response:
    ctx = request.app.state.ctx
    ctx.auth.check_system(request, "ViewResource", "Leader")
    lead = _leadership(ctx)
    address = lead.leader_address() if lead is not None else ctx.config.leader_address
    if address is None:
        return json_response({"message": "There is no leader"}, 404)
    return json_response({"leader": address})


async def abdicate(request: Request) -> Response:
    """DELETE /v2/leader: end this leader's term after the answer; with
    `backup=file:///...` the state is written there first (Marathon's tar
    backup), with `restore=file:///...` it is replaced by that backup
    before the next leader loads it."""
    ctx = request.app.state.ctx
    ctx.auth.check_system(request, "UpdateResource", "Leader")
    params = request.query_params
    violations = [Violation(f"/{name}", problem) for name in ("backup", "restore")
                  if (value := params.get(name)) is not None and (problem := _uri_problem(value))]
    if violations:
        raise ValidationFailed(violations)
    lead = _leadership(ctx)
    if lead is None or not lead.abdicate(Abdication(backup=params.get("backup"), restore=params.get("restore"))):
        return json_response({"message": "There is no leader"}, 404)
    return json_response({"message": "Leadership abdicated"})


def _uri_problem(uri: str) -> str | None:
    parts = urlsplit(uri)
    if parts.scheme != "file":
        return f"Only file:///absolute/path is supported here (got {uri!r}); s3 is not"
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        return f"A file URI needs an absolute path: file:///path (got {uri!r})"
    return None


async def root(request: Request) -> Response:
    return RedirectResponse("/ui/", status_code=302)


async def openapi(request: Request) -> Response:
    from .openapi import document

    return json_response(document(request.app.state.openapi_routes))


routes = [
    Route("/ping", ping, methods=["GET", "HEAD"]),
    Route("/v2/info", info, methods=["GET"]),
    Route("/v2/leader", leader, methods=["GET"]),
    Route("/v2/leader", abdicate, methods=["DELETE"]),
    Route("/", root, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]
