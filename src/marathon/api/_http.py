"""HTTP plumbing shared by the resources: JSON bodies, query flags, errors.

Errors: every `MarathonError` becomes its status and body here and nowhere
else (SPEC.md 1.2).  Unknown routes answer 404 `{"message":"URI not found"}`
(Marathon answers 500; see docs/compatibility.md).
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..errors import BadRequest, MarathonError

log = logging.getLogger("marathon.api")

_encoder = msgspec.json.Encoder()
JSON = "application/json"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    data = body if isinstance(body, bytes) else _encoder.encode(body)
    return Response(content=data, status_code=status, media_type=JSON, headers=headers)


def deployment_result(plan_id: str, version: str, status: int = 200, location: str | None = None) -> Response:
    headers = {"Marathon-Deployment-Id": plan_id}
    if location:
        headers["Location"] = location
    return json_response({"version": version, "deploymentId": plan_id}, status, headers)


def flag(request: Request, name: str, default: bool) -> bool:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise BadRequest(f"Invalid boolean value '{raw}' for query parameter '{name}'")


def base_url(request: Request) -> str:
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return f"{request.url.scheme}://{host}"


async def marathon_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MarathonError)
    plugin_answer = getattr(exc, "response", None)
    if plugin_answer is not None:  # an auth plugin wrote this answer
        return Response(
            content=plugin_answer.body, status_code=plugin_answer.status,
            media_type=plugin_answer.content_type, headers=dict(plugin_answer.headers),
        )
    if exc.status >= 500:
        log.warning("request failed method=%s path=%s status=%d error=%s", request.method, request.url.path, exc.status, exc.message)
    return json_response(exc.body(), exc.status)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return json_response({"message": "URI not found"}, 404)
    if exc.status_code == 405:
        return json_response({"message": "HTTP 405 Method Not Allowed"}, 405)
    return json_response({"message": exc.detail}, exc.status_code)


async def internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error method=%s path=%s", request.method, request.url.path)
    return json_response({"message": str(exc) or type(exc).__name__}, 500)


class HeadersMiddleware:
    """Marathon's response headers on every response (SPEC.md 1.1)."""

    def __init__(self, app: Any, *, leader: str) -> None:
        self.app = app
        self.extra = [
            (b"x-marathon-leader", f"http://{leader}".encode()),
            (b"x-frame-options", b"DENY"),
            (b"x-xss-protection", b"1; mode=block"),
            (b"cache-control", b"no-cache, no-store, must-revalidate"),
            (b"pragma", b"no-cache"),
            (b"expires", b"0"),
        ]

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self.extra

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        await self.app(scope, receive, send_with_headers)
