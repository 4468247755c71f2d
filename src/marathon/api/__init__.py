"""The REST API: Marathon's `/v2` resources as an ASGI application.

`build_app(ctx)` assembles the resources (one module per resource family),
the error mapping and the request limits (`_http`), and the response-header
middleware.  The ASGI app is served by `marathon.httpserver` or hypercorn's
trio worker (`marathon.server`, `--http_server`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException

from ..config import Config
from ..errors import MarathonError
from ..leadership import Leadership
from ..plugins import Plugins
from ..services.metrics import MetricsRegistry
from . import agents, apps, deployments, events, groups, metrics, plugins, queue, system, tasks
from ._auth import Auth, AuthMiddleware
from ._context import ApiContext
from ._http import (
    ConcurrencyLimit,
    HeadersMiddleware,
    RequestLimits,
    http_error,
    internal_error,
    marathon_error,
)
from .leader_proxy import LeaderFront


def build_app(ctx: ApiContext) -> Any:
    """The term's API: what the leader serves."""
    routes = (
        apps.routes + groups.routes + tasks.routes + deployments.routes + events.routes
        + queue.routes + plugins.routes + system.routes + metrics.routes + agents.routes
    )
    app = Starlette(
        routes=routes,
        exception_handlers={
            MarathonError: marathon_error,
            HTTPException: http_error,
            Exception: internal_error,
        },
    )
    app.state.ctx = ctx
    app.state.openapi_routes = routes
    pm = ctx.plugins.pm if ctx.plugins is not None else None
    handlers: dict = {}
    if pm is not None:
        for provided in reversed(pm.hook.marathon_http_handlers()):
            handlers.update(provided or {})
    app.state.plugin_handlers = handlers
    asgi: Any = app
    if pm is not None and pm.hook.marathon_auth_authenticate.get_hookimpls():
        asgi = AuthMiddleware(asgi, pm)
    # Outside authentication: an oversized request is refused before anyone
    # looks at it; inside the headers, so its answer has Marathon's.
    asgi = RequestLimits(asgi, budget=ctx.config.http_max_body_bytes_in_flight)
    if ctx.config.http_max_concurrent_requests is not None:
        asgi = ConcurrencyLimit(asgi, limit=ctx.config.http_max_concurrent_requests)
    asgi = HeadersMiddleware(asgi, leader=ctx.config.leader_address)
    if ctx.metrics is not None:
        asgi = metrics.HttpMetricsMiddleware(asgi, ctx.metrics)
    return asgi


@dataclass
class StandbyContext:
    """What the endpoints a standby answers itself need."""

    config: Config
    leadership: Leadership
    auth: Auth
    metrics: MetricsRegistry
    plugins: Plugins | None = None


def build_front(config: Config, leadership: Leadership, plugins: Plugins | None) -> LeaderFront:
    """The process's ASGI app: the leader's term app when this process
    leads, else the standby's own answers and the proxy to the leader."""
    ctx = StandbyContext(config=config, leadership=leadership, auth=Auth(plugins.pm if plugins else None),
                         metrics=MetricsRegistry(prefix=config.metrics_name_prefix), plugins=plugins)
    routes = [r for r in system.routes + metrics.routes
              if getattr(r, "path", None) in ("/ping", "/v2/info", "/v2/leader", "/metrics", "/metrics/prometheus")]
    app = Starlette(routes=routes, exception_handlers={
        MarathonError: marathon_error, HTTPException: http_error, Exception: internal_error})
    app.state.ctx = ctx
    standby: Any = app
    if plugins is not None and plugins.pm.hook.marathon_auth_authenticate.get_hookimpls():
        standby = AuthMiddleware(standby, plugins.pm)
    return LeaderFront(config, leadership, standby)


__all__ = ["ApiContext", "StandbyContext", "build_app", "build_front"]
