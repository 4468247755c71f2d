"""Authentication and authorization through the auth hooks (SPEC.md 1.1, 12.2).

* `AuthMiddleware` authenticates every request except `/ping`, when a plugin
  implements `marathon_auth_authenticate`: no identity is a 401 (the plugin's
  answer or Marathon's default), a failing identity provider a 503.  The
  identity is kept in the request's state.
* `Auth` answers "may the caller do this?" for the resources: single objects
  raise `NotAuthorized` (403, the plugin's answer or the default), lists are
  filtered with `allowed`.  With no authorizer every action is allowed.
* `Auth.guard(request)` is the check applied to whatever a root-group change
  creates (CreateRunSpec, CreateGroup), modifies (Update*) or removes
  (Delete*), so every endpoint that changes apps or groups is covered alike.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

import msgspec
import pluggy
from starlette.requests import Request
from starlette.responses import Response

from ..errors import Forbidden
from ..hookspecs import AuthResource, Identity, PluginResponse, RequestInfo
from ..models.app import AppDefinition
from ..planning import RootChanges

log = logging.getLogger("marathon.auth")

NOT_AUTHENTICATED = PluginResponse(status=401, body=b'{"message":"Not Authenticated!"}')
NOT_AUTHORIZED = PluginResponse(status=403, body=b'{"message":"Not Authorized to perform this action!"}')
UNAUTHENTICATED_PATHS = frozenset({"/ping"})
# The agent protocol authenticates agents by the agent secret itself
# (api/agents.py): agents are machines, not the plugins' users.
AGENT_PATHS = "/internal/v1/agents/"


class NotAuthorized(Forbidden):
    """403 with the authorizer's answer."""

    def __init__(self, response: PluginResponse) -> None:
        super().__init__("Not Authorized to perform this action!")
        self.response = response


def to_response(r: PluginResponse) -> Response:
    return Response(content=r.body, status_code=r.status, media_type=r.content_type, headers=dict(r.headers))


def request_info(scope: dict) -> RequestInfo:
    headers: dict[str, list[str]] = {}
    for k, v in scope.get("headers", ()):
        headers.setdefault(k.decode("latin-1").lower(), []).append(v.decode("latin-1"))
    query: dict[str, list[str]] = {}
    from urllib.parse import parse_qsl

    for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True):
        query.setdefault(k, []).append(v)
    client = scope.get("client") or ("", 0)
    return RequestInfo(
        method=scope.get("method", "GET"),
        path=scope.get("path", "/"),
        headers=headers,
        query=query,
        remote_addr=client[0] or "",
        remote_port=client[1] or 0,
    )


class AuthMiddleware:
    def __init__(self, app: Any, pm: pluggy.PluginManager) -> None:
        self.app = app
        self.pm = pm

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in UNAUTHENTICATED_PATHS or path.startswith(AGENT_PATHS):
            await self.app(scope, receive, send)
            return
        info = request_info(scope)
        try:
            identity = self.pm.hook.marathon_auth_authenticate(request=info)
            if inspect.isawaitable(identity):  # an `async def` hook (slow checks off the loop)
                identity = await identity
        except Exception:
            log.exception("authentication plugin failed path=%s", info.path)
            await Response(status_code=503)(scope, receive, send)
            return
        if identity is None:
            answer = self.pm.hook.marathon_auth_not_authenticated(request=info) or NOT_AUTHENTICATED
            await to_response(answer)(scope, receive, send)
            return
        scope.setdefault("state", {})["identity"] = identity
        await self.app(scope, receive, send)


class Auth:
    """Authorization decisions for one server (all requests share it)."""

    def __init__(self, pm: pluggy.PluginManager | None) -> None:
        self.pm = pm
        self.enabled = pm is not None and bool(pm.hook.marathon_auth_authorize.get_hookimpls())

    @staticmethod
    def identity(request: Request) -> Identity | None:
        return request.scope.get("state", {}).get("identity")

    def allowed(self, identity: Identity | None, action: str, resource: AuthResource) -> bool:
        if not self.enabled:
            return True
        answer = self.pm.hook.marathon_auth_authorize(identity=identity, action=action, resource=resource)  # type: ignore[union-attr]
        return answer is not False

    def check(self, request: Request, action: str, resource: AuthResource) -> None:
        identity = self.identity(request)
        if not self.allowed(identity, action, resource):
            answer = self.pm.hook.marathon_auth_not_authorized(identity=identity, request=request_info(request.scope))  # type: ignore[union-attr]
            raise NotAuthorized(answer or NOT_AUTHORIZED)

    # -- conveniences --------------------------------------------------------------

    def can_view_app(self, request: Request) -> Callable[[AppDefinition], bool]:
        identity = self.identity(request)
        return lambda app: self.allowed(identity, "ViewRunSpec", app_resource(app))

    def can_view_app_id(self, request: Request) -> Callable[[str], bool]:
        identity = self.identity(request)
        return lambda app_id: self.allowed(identity, "ViewRunSpec", AuthResource(kind="app", id=app_id))

    def check_system(self, request: Request, action: str, resource: str) -> None:
        self.check(request, action, AuthResource(kind="system", id=resource))

    def guard(self, request: Request) -> Callable[[RootChanges], None] | None:
        """The check of a root-group change made by this request."""
        if not self.enabled:
            return None

        def check(changes: RootChanges) -> None:
            for app in changes.created_apps:
                self.check(request, "CreateRunSpec", app_resource(app))
            for app in changes.updated_apps:
                self.check(request, "UpdateRunSpec", app_resource(app))
            for app in changes.removed_apps:
                self.check(request, "DeleteRunSpec", app_resource(app))
            for group in changes.created_groups:
                self.check(request, "CreateGroup", AuthResource(kind="group", id=group.id))
            for group in changes.updated_groups:
                self.check(request, "UpdateGroup", AuthResource(kind="group", id=group.id))
            for group in changes.removed_groups:
                self.check(request, "DeleteGroup", AuthResource(kind="group", id=group.id))

        return check


def app_resource(app: AppDefinition) -> AuthResource:
    return AuthResource(kind="app", id=app.id, app=app)


def plugin_response_json(message: str, status: int) -> PluginResponse:
    return PluginResponse(status=status, body=msgspec.json.encode({"message": message}))
