"""The REST API: Marathon's `/v2` resources as an ASGI application.

`build_app(ctx)` assembles the resources (one module per resource family),
the error mapping and the request limits (`_http`), and the response-header
middleware.  The ASGI app is served by `marathon.httpserver` or hypercorn's
trio worker (`marathon.server`, `--http_server`).
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException

from ..errors import MarathonError
from . import agents, apps, deployments, events, groups, metrics, plugins, queue, system, tasks
from ._auth import AuthMiddleware
from ._context import ApiContext
from ._http import (
    ConcurrencyLimit,
    HeadersMiddleware,
    RequestLimits,
    http_error,
    internal_error,
    marathon_error,
)


def build_app(ctx: ApiContext) -> Any:
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


__all__ = ["ApiContext", "build_app"]
