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
from . import apps, deployments, events, groups, queue, system, tasks
from ._context import ApiContext
from ._http import HeadersMiddleware, http_error, internal_error, marathon_error


def build_app(ctx: ApiContext) -> Any:
    routes = apps.routes + groups.routes + tasks.routes + deployments.routes + events.routes + queue.routes + system.routes
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
    return HeadersMiddleware(app, leader=ctx.config.leader_address)


__all__ = ["ApiContext", "build_app"]
