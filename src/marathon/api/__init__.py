"""The REST API: Marathon's `/v2` resources as an ASGI application.

`build_app(ctx)` assembles the resources (one module per resource family),
the error mapping (`_http`) and the response-header middleware.  The ASGI app
is served by hypercorn's trio worker (`marathon.server`).
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException

from ..errors import MarathonError
from . import apps, deployments, events, groups, metrics, plugins, queue, system, tasks
from ._auth import AuthMiddleware
from ._context import ApiContext
from ._http import HeadersMiddleware, http_error, internal_error, marathon_error


def build_app(ctx: ApiContext) -> Any:
    routes = (
        apps.routes + groups.routes + tasks.routes + deployments.routes + events.routes
        + queue.routes + plugins.routes + system.routes + metrics.routes
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
    asgi = HeadersMiddleware(asgi, leader=ctx.config.leader_address)
    if ctx.metrics is not None:
        asgi = metrics.HttpMetricsMiddleware(asgi, ctx.metrics)
    return asgi


__all__ = ["ApiContext", "build_app"]
