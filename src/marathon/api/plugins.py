"""`/v2/plugins`: the loaded plugins, and the routes plugins serve (SPEC.md 1.13)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import NotFound
from ..hookspecs import PluginRequest
from ._auth import to_response
from ._context import ApiContext
from ._http import json_response

_ACTIONS = {"GET": "ViewResource", "HEAD": "ViewResource", "PUT": "UpdateResource",
            "POST": "CreateResource", "DELETE": "DeleteResource"}


async def list_plugins(request: Request) -> Response:
    ctx: ApiContext = request.app.state.ctx
    ctx.auth.check_system(request, "ViewResource", "Plugins")
    entries = ctx.plugins.entries if ctx.plugins is not None else []
    return json_response({"plugins": [e.json() for e in entries]})


async def plugin_route(request: Request) -> Response:
    ctx: ApiContext = request.app.state.ctx
    plugin_id = request.path_params["plugin_id"]
    ctx.auth.check_system(request, _ACTIONS.get(request.method, "ViewResource"), "Plugins")
    handler = request.app.state.plugin_handlers.get(plugin_id)
    if handler is None:
        raise NotFound(f"No plugin with this pluginId: {plugin_id}")
    headers: dict[str, list[str]] = {}
    for k, v in request.headers.items():
        if k.lower() in ("authorization", "cookie"):
            continue  # the caller's credentials stay with the server; handlers get `identity`
        headers.setdefault(k.lower(), []).append(v)
    query: dict[str, list[str]] = {}
    for k, v in request.query_params.multi_items():
        query.setdefault(k, []).append(v)
    answer = await handler.handle(
        PluginRequest(
            method=request.method,
            path=request.path_params.get("path", ""),
            headers=headers,
            query=query,
            body=await request.body(),
            identity=ctx.auth.identity(request),
        )
    )
    return to_response(answer)


routes = [
    Route("/v2/plugins", list_plugins, methods=["GET"]),
    Route("/v2/plugins/{plugin_id}", plugin_route, methods=list(_ACTIONS)),
    Route("/v2/plugins/{plugin_id}/{path:path}", plugin_route, methods=list(_ACTIONS)),
]
