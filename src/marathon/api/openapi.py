"""The OpenAPI 3.1 document at `/openapi.json`: what every route accepts and answers.

Request schemas come from the msgspec Structs themselves
(`msgspec.json.schema_components`), so they cannot drift from what the server
decodes.  Response schemas are written here after the renderers that produce
them (`_render`, `groups.group_info`, `deployments.deployment_json`, ...);
tests/integration/test_openapi_fuzz.py runs schemathesis against a real
server to keep them true (no undocumented status, content type or shape).

The operations come from the router's route table: a route without an entry
in `_OPS` still appears (with a generic answer), so the document lists every
route of the API (the agent protocol's `/internal/` routes are not part of
it).  `links` say where an answer leads (the app a POST created, the
deployment a change started, a listed version or task), which is what lets a
client, or a stateful fuzzer, follow the objects it creates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, get_args

import msgspec

from .._version import MARATHON_API_VERSION, __version__
from ..models.app import AppDefinition, AppUpdate
from ..models.deployment import ActionName
from ..models.group_update import GroupPartialUpdate, GroupUpdate

_REF = "#/components/schemas/{name}"


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": _REF.format(name=name)}


def _array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def _obj(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = list(required)
    return out


_STR = {"type": "string"}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}
_OBJECT = {"type": "object"}


# -- responses ---------------------------------------------------------------------------

_JSON = "application/json"


def _json(description: str, schema: dict[str, Any], headers: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {_JSON: {"schema": schema}}}
    if headers:
        out["headers"] = {h: _HEADERS[h] for h in headers}
    return out


def _empty(description: str, headers: tuple[str, ...] = ()) -> dict[str, Any]:
    """An answer without a body (no `content`: there is no content type to check)."""
    out: dict[str, Any] = {"description": description}
    if headers:
        out["headers"] = {h: _HEADERS[h] for h in headers}
    return out


_HEADERS = {
    "Marathon-Deployment-Id": {"description": "Id of the deployment the change started.", "schema": _STR},
    "Location": {"description": "URL of the created object.", "schema": _STR},
}

_ERROR_DESCRIPTIONS = {
    400: "Malformed request: the body is not JSON, or a query flag is not a boolean",
    401: "Not authenticated (only with an authentication plugin; the plugin may write its own answer)",
    403: "Not authorized (authorization plugin), or --max_running_deployments deployments already run",
    404: "No such object",
    405: "Not an event stream request (`Accept: text/event-stream` is required)",
    408: "The request body did not arrive in time",
    409: "Conflict: the object exists already, or a running deployment locks it (override with `force=true`)",
    413: "The request body is too large (or what it would store)",
    422: "Invalid JSON or an invalid definition; `details` lists `{path, errors}`",
    431: "The request's path, query and headers are too large",
    502: "The agent that runs the task did not answer",
    503: "Busy with other large bodies (retry after `Retry-After`), or the store refused or failed the change",
}
# Every route but /ping can be refused by the auth plugins.
_AUTH = (401, 403)
# Every request is held to the limits of `_http.RequestLimits`.
_LIMITS = (408, 413, 431, 503)
# What a change of the root group can be refused for, besides its own rules.
_CHANGE = (400, 403, 409, 503)
_WITH_BODY = (400, 422)

_DEPLOYMENT_RESULT = _json("The deployment the change started", _ref("DeploymentResult"), ("Marathon-Deployment-Id",))
_APP_LIST = _obj({"apps": _array(_ref("AppInfo"))}, ("apps",))
_TASK_LIST = _obj({"tasks": _array(_ref("Task"))}, ("tasks",))
_GROUP_INFO = _ref("GroupInfo")
_VERSIONS = _array(_STR)


# -- operations --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Op:
    summary: str
    answers: dict[int | str, dict[str, Any]]  # status (or "default") -> response
    errors: tuple[int, ...] = ()
    body: str | None = None  # component name of the JSON request body
    query: tuple[str, ...] = ()  # names in _QUERY
    auth: bool = True  # refused by the auth plugins like every route but /ping


@dataclass(frozen=True)
class _Link:
    """A link to the operation (method, path); `parameters` as OpenAPI runtime expressions."""

    method: str
    path: str
    parameters: dict[str, str] = field(default_factory=dict)
    description: str = ""


_QUERY: dict[str, tuple[dict[str, Any], str]] = {
    "force": (_BOOL, "Override locks held by running deployments."),
    "partialUpdate": (_BOOL, "Merge the body onto the existing app (default true)."),
    "embed": (
        _array({"type": "string", "enum": [
            "apps.tasks", "apps.counts", "apps.deployments", "apps.readiness", "apps.lastTaskFailure",
            "apps.failures", "apps.taskStats", "app.tasks", "app.counts", "app.deployments",
            "app.readiness", "app.lastTaskFailure", "app.failures", "app.taskStats",
        ]}),
        "Extra data to embed in each AppInfo (repeatable; unknown values are ignored).",
    ),
    "groupEmbed": (
        _array({"type": "string", "enum": [
            "group.groups", "group.apps", "group.pods", "group.apps.tasks", "group.apps.counts",
            "group.apps.deployments", "group.apps.readiness", "group.apps.lastTaskFailure",
            "group.apps.failures", "group.apps.taskStats",
        ]}),
        "Collections to show (default: groups, apps and pods; with `embed`, only those listed),"
        " `group.apps.<x>` embeds <x> in every AppInfo (repeatable; unknown values are ignored).",
    ),
    "queueEmbed": (_array({"type": "string", "enum": ["lastUnusedOffers"]}), "`lastUnusedOffers` adds the offers last declined."),
    "scale": (_BOOL, "Also scale the app down by the killed tasks (answers a deployment)."),
    "wipe": (_BOOL, "Forget the killed instances instead of relaunching them."),
    "host": (_STR, "Only tasks on this agent hostname (`*`: every host)."),
    "cmd": (_STR, "Only apps whose cmd contains this text."),
    "id": (_STR, "Only apps whose id contains this text."),
    "label": (_STR, "Label selector, e.g. `env==prod,tier in (a, b)` (422 if it does not parse)."),
    "status": (_array({"type": "string", "enum": ["running", "staging"]}), "Only tasks in these states (repeatable)."),
    "dryRun": (_BOOL, "Only compute the deployment steps; nothing is stored or deployed."),
    "event_type": (_array(_STR), "Only events of these types (repeatable)."),
    "stream": ({"enum": ["stdout", "stderr"]}, "Which output (default stdout)."),
    "offset": (_INT, "Byte offset to read from (default -1: the tail)."),
    "length": (_INT, "Bytes to read, at most 1 MiB (the default)."),
    "backup": (_STR, "file:///absolute/path: write the whole state there (a tar) before the next leader loads it."),
    "restore": (_STR, "file:///absolute/path: replace the whole state by that backup before the next leader loads it."),
}
# Query names that are documented under another name (`embed` means different things).
_QUERY_NAME = {"groupEmbed": "embed", "queueEmbed": "embed"}

_APP = "/v2/apps/{app_id}"
_GROUP = "/v2/groups/{group_id}"
_KILL_ANSWER = {"oneOf": [_TASK_LIST, _ref("DeploymentResult")]}

_OPS: dict[tuple[str, str], _Op] = {
    # -- /v2/apps
    ("GET", "/v2/apps"): _Op(
        "List apps (counts and deployments always embedded)",
        {200: _json("The apps", _APP_LIST)}, (422,), query=("cmd", "id", "label", "embed"),
    ),
    ("POST", "/v2/apps"): _Op(
        "Create an app", {201: _json("The created app", _ref("AppInfo"), ("Location", "Marathon-Deployment-Id"))},
        (*_CHANGE, *_WITH_BODY), body="AppDefinition", query=("force",),
    ),
    ("PUT", "/v2/apps"): _Op(
        "Create or update many apps in one deployment", {200: _DEPLOYMENT_RESULT},
        (*_CHANGE, *_WITH_BODY), body="AppUpdateList", query=("force", "partialUpdate"),
    ),
    ("PATCH", "/v2/apps"): _Op(
        "Update many existing apps in one deployment", {200: _DEPLOYMENT_RESULT},
        (*_CHANGE, *_WITH_BODY, 404), body="AppUpdateList", query=("force",),
    ),
    ("GET", _APP): _Op(
        "One app as `{app}`, or `{\"*\": [...]}` for every app below a group with `<group>/*`",
        {200: _json("The app", {"oneOf": [
            _obj({"app": _ref("AppInfo")}, ("app",)),
            _obj({"*": _array(_ref("AppInfo"))}, ("*",)),
        ]})},
        (404,), query=("embed",),
    ),
    ("PUT", _APP): _Op(
        "Update (partial by default) or create an app; `{\"version\": ...}` rolls back",
        {200: _DEPLOYMENT_RESULT, 201: _json("The app was created", _ref("DeploymentResult"), ("Location", "Marathon-Deployment-Id"))},
        (*_CHANGE, *_WITH_BODY, 404), body="AppUpdate", query=("force", "partialUpdate"),
    ),
    ("PATCH", _APP): _Op(
        "Partially update an existing app", {200: _DEPLOYMENT_RESULT},
        (*_CHANGE, *_WITH_BODY, 404), body="AppUpdate", query=("force",),
    ),
    ("DELETE", _APP): _Op("Destroy an app (force defaults to true)", {200: _DEPLOYMENT_RESULT}, (*_CHANGE, 404), query=("force",)),
    ("POST", _APP + "/restart"): _Op("Rolling restart of an app", {200: _DEPLOYMENT_RESULT}, (*_CHANGE, 404), query=("force",)),
    ("GET", _APP + "/tasks"): _Op("Tasks of an app (or of every app below a group with `<group>/*`)", {200: _json("The tasks", _TASK_LIST)}, (404,)),
    ("DELETE", _APP + "/tasks"): _Op(
        "Kill tasks of an app: the killed tasks, or with `scale=true` the scale-down deployment",
        {200: _json("The killed tasks, or the deployment", _KILL_ANSWER)},
        (*_CHANGE, 404), query=("host", "scale", "wipe", "force"),
    ),
    ("DELETE", _APP + "/tasks/{task_id}"): _Op(
        "Kill one task: the task, or with `scale=true` the scale-down deployment",
        {200: _json("The killed task, or the deployment", {"oneOf": [_obj({"task": _ref("Task")}, ("task",)), _ref("DeploymentResult")]})},
        (*_CHANGE, 404), query=("scale", "wipe", "force"),
    ),
    ("GET", _APP + "/versions"): _Op("Stored versions of an app, newest first", {200: _json("The versions", _obj({"versions": _VERSIONS}, ("versions",)))}, (404,)),
    ("GET", _APP + "/versions/{version}"): _Op("An app definition at a version", {200: _json("The definition", _ref("AppDefinition"))}, (404,)),
    # -- /v2/groups
    ("GET", "/v2/groups"): _Op("The root group", {200: _json("The root group", _GROUP_INFO)}, query=("groupEmbed",)),
    ("POST", "/v2/groups"): _Op(
        "Create a group (body id relative to /)",
        {201: _json("The deployment creating the group", _ref("DeploymentResult"), ("Location", "Marathon-Deployment-Id"))},
        (*_CHANGE, *_WITH_BODY, 404), body="GroupUpdate", query=("force",),
    ),
    ("PUT", "/v2/groups"): _Op(
        "Update the root group: structural, `scaleBy` or `version` rollback; `dryRun=true` answers `{\"steps\": [...]}` and changes nothing",
        {200: _json("The deployment, or with `dryRun=true` its steps", {"oneOf": [_ref("DeploymentResult"), _ref("DeploymentSteps")]})},
        (*_CHANGE, *_WITH_BODY, 404), body="GroupUpdate", query=("force", "dryRun"),
    ),
    ("DELETE", "/v2/groups"): _Op("Remove every app and group", {200: _DEPLOYMENT_RESULT}, (*_CHANGE, 404), query=("force",)),
    ("GET", "/v2/groups/apps"): _Op("Every app (AppInfo array)", {200: _json("The apps", _array(_ref("AppInfo")))}, query=("groupEmbed",)),
    ("GET", "/v2/groups/versions"): _Op("Stored versions of the root group, newest first", {200: _json("The versions", _VERSIONS)}),
    ("GET", "/v2/groups/versions/{version}"): _Op("The root group at a stored version", {200: _json("The group", _GROUP_INFO)}, (404,), query=("groupEmbed",)),
    ("GET", _GROUP + "/apps"): _Op("Every app below a group (`[]` for an unknown group)", {200: _json("The apps", _array(_ref("AppInfo")))}, query=("groupEmbed",)),
    ("GET", _GROUP + "/versions"): _Op("Stored root versions containing the group, newest first", {200: _json("The versions", _VERSIONS)}, (404,)),
    ("GET", _GROUP + "/versions/{version}"): _Op("A group at a stored version", {200: _json("The group", _GROUP_INFO)}, (404,), query=("groupEmbed",)),
    ("GET", _GROUP): _Op("One group", {200: _json("The group", _GROUP_INFO)}, (404,), query=("groupEmbed",)),
    ("POST", _GROUP): _Op(
        "Create a group (body id relative to the path); 409 if it exists",
        {201: _json("The deployment creating the group", _ref("DeploymentResult"), ("Location", "Marathon-Deployment-Id"))},
        (*_CHANGE, *_WITH_BODY, 404), body="GroupUpdate", query=("force",),
    ),
    ("PUT", _GROUP): _Op(
        "Create or update a group: structural, `scaleBy` or `version` rollback; `dryRun=true` answers `{\"steps\": [...]}` and changes nothing",
        {200: _json("The deployment, or with `dryRun=true` its steps", {"oneOf": [_ref("DeploymentResult"), _ref("DeploymentSteps")]})},
        (*_CHANGE, *_WITH_BODY, 404), body="GroupUpdate", query=("force", "dryRun"),
    ),
    ("PATCH", _GROUP): _Op(
        "Set `enforceRole` of a top-level group, stored at once (no deployment)",
        {200: _empty("Stored; the answer has no body")},
        (*_WITH_BODY, 404), body="GroupPartialUpdate",
    ),
    ("DELETE", _GROUP): _Op("Remove a group and everything below it", {200: _DEPLOYMENT_RESULT}, (*_CHANGE, 404), query=("force",)),
    # -- /v2/tasks, /v2/deployments, /v2/queue, /v2/events, /v2/plugins
    ("GET", "/v2/tasks"): _Op("All tasks", {200: _json("The tasks", _TASK_LIST)}, query=("status",)),
    ("POST", "/v2/tasks/delete"): _Op(
        "Kill tasks by id (unknown ids are ignored): the killed tasks, or with `scale=true` the scale-down deployment",
        {200: _json("The killed tasks, or the deployment", _KILL_ANSWER)},
        (*_CHANGE, *_WITH_BODY, 404), body="TaskIds", query=("scale", "wipe", "force"),
    ),
    ("GET", "/v2/deployments"): _Op("Running deployments, oldest first", {200: _json("The deployments", _array(_ref("Deployment")))}),
    ("DELETE", "/v2/deployments/{deployment_id}"): _Op(
        "Roll a deployment back (a new deployment), or with `force=true` stop it where it is",
        {200: _DEPLOYMENT_RESULT, 202: _empty("Stopped (`force=true`); nothing is undone")},
        (*_CHANGE, 404), query=("force",),
    ),
    ("GET", "/v2/queue"): _Op("What waits to be launched, and why", {200: _json("The queue", _obj({"queue": _array(_ref("QueueItem"))}, ("queue",)))}, query=("queueEmbed",)),
    ("DELETE", "/v2/queue/{app_id}/delay"): _Op("Reset the launch delay of a waiting app", {204: _empty("The delay is reset")}, (404,)),
    ("GET", "/v2/events"): _Op(
        "The event bus as Server-Sent Events (`Accept: text/event-stream`)",
        {200: {"description": "`event: <type>` / `data: <json>` frames, until the client leaves",
               "content": {"text/event-stream": {"schema": _STR}}}},
        (405,), query=("event_type",),
    ),
    ("GET", "/v2/tasks/{task_id}/logs"): _Op(
        "A chunk of a task's stdout or stderr, read where the task runs",
        {200: _json("The chunk", _ref("LogChunk"))}, (400, 404, 502), query=("stream", "offset", "length"),
    ),
    ("GET", "/v2/agents"): _Op("The agents: the embedded one and the remote ones", {200: _json("The agents", _obj({"agents": _array(_OBJECT)}, ("agents",)))}),
    ("DELETE", "/v2/agents/{agent_id}"): _Op(
        "Mark a remote agent gone: its tasks are lost", {200: _json("The agent's new state", _obj({"agentId": _STR, "state": {"const": "GONE"}}, ("agentId", "state")))}, (404,),
    ),
    ("POST", "/v2/agents/{agent_id}/drain"): _Op(
        "Drain a remote agent: nothing new is placed on it", {200: _json("Draining", _ref("AgentDraining"))}, (404,),
    ),
    ("DELETE", "/v2/agents/{agent_id}/drain"): _Op(
        "Stop draining a remote agent", {200: _json("Not draining", _ref("AgentDraining"))}, (404,),
    ),
    ("GET", "/v2/plugins"): _Op("The loaded plugins", {200: _json("The plugins", _obj({"plugins": _array(_ref("PluginInfo"))}, ("plugins",)))}),
    # -- system
    ("GET", "/ping"): _Op(
        "Liveness: `pong` as text/plain (for */*), text/html or application/json, as the client accepts",
        {200: {"description": "pong", "content": {
            "text/plain": {"schema": {"const": "pong"}},
            "text/html": {"schema": {"const": "pong"}},
            _JSON: {"schema": {"const": "pong"}},
        }}, 204: _empty("The client accepts none of those types")},
        auth=False,
    ),
    ("GET", "/v2/info"): _Op("Server information and configuration", {200: _json("The information", _ref("Info"))}),
    ("GET", "/v2/leader"): _Op("The current leader", {
        200: _json("The leader", _obj({"leader": _STR}, ("leader",))),
        404: _json("No leader is known", _obj({"message": _STR}, ("message",)))}),
    ("DELETE", "/v2/leader"): _Op(
        "Abdicate: this leader's term ends 500 ms after the answer and another master (or, alone, this one) leads",
        {200: _json("Abdication scheduled", _obj({"message": _STR}, ("message",))),
         404: _json("This process does not lead", _obj({"message": _STR}, ("message",)))},
        (422,), query=("backup", "restore")),
    ("GET", "/"): _Op("Redirect to the web UI", {302: _empty("To /ui/", ("Location",))}),
    ("GET", "/openapi.json"): _Op("This document", {200: _json("OpenAPI 3.1", _OBJECT)}),
    ("GET", "/metrics"): _Op("Metrics as Dropwizard JSON", {200: _json("The metrics", _ref("Metrics"))}),
    ("GET", "/metrics/prometheus"): _Op(
        "Metrics in the Prometheus text format (404 unless --metrics_prometheus)",
        {200: {"description": "Prometheus text exposition 0.0.4", "content": {"text/plain": {"schema": _STR}}}},
        (404,),
    ),
}
# Routes a plugin serves: whatever its handler answers, 404 without such a plugin.
for _method in ("GET", "POST", "PUT", "DELETE"):
    for _path in ("/v2/plugins/{plugin_id}", "/v2/plugins/{plugin_id}/{path}"):
        _OPS[(_method, _path)] = _Op(
            "A route served by a plugin (`marathon_http_handlers`)",
            {"default": {"description": "The plugin's answer: any status and content type"}}, (404,),
        )


# -- links -------------------------------------------------------------------------------

_BY_BODY_ID = {"app_id": "$response.body#/id"}
_SAME_APP = {"app_id": "$request.path.app_id"}
_CHANGED_APP_VERSION = {"app_id": "$request.path.app_id", "version": "$response.body#/version"}
_TO_DEPLOYMENT = _Link("DELETE", "/v2/deployments/{deployment_id}", {"deployment_id": "$response.body#/deploymentId"}, "Roll back or stop the deployment")


def _app_links(ids: dict[str, str]) -> dict[str, _Link]:
    """Everything one can do to an app whose id `ids["app_id"]` evaluates to."""
    return {
        "GetApp": _Link("GET", _APP, ids),
        "UpdateApp": _Link("PUT", _APP, ids),
        "PatchApp": _Link("PATCH", _APP, ids),
        "DeleteApp": _Link("DELETE", _APP, ids),
        "RestartApp": _Link("POST", _APP + "/restart", ids),
        "AppTasks": _Link("GET", _APP + "/tasks", ids),
        "KillAppTasks": _Link("DELETE", _APP + "/tasks", ids),
        "AppVersions": _Link("GET", _APP + "/versions", ids),
        "ResetDelay": _Link("DELETE", "/v2/queue/{app_id}/delay", ids),
    }


def _group_links(ids: dict[str, str]) -> dict[str, _Link]:
    return {
        "GetGroup": _Link("GET", _GROUP, ids),
        "UpdateGroup": _Link("PUT", _GROUP, ids),
        "PatchGroup": _Link("PATCH", _GROUP, ids),
        "DeleteGroup": _Link("DELETE", _GROUP, ids),
        "GroupApps": _Link("GET", _GROUP + "/apps", ids),
        "GroupVersions": _Link("GET", _GROUP + "/versions", ids),
    }


_LINKS: dict[tuple[str, str, int], dict[str, _Link]] = {
    ("POST", "/v2/apps", 201): {
        **_app_links(_BY_BODY_ID),
        "Deployment": _Link("DELETE", "/v2/deployments/{deployment_id}", {"deployment_id": "$response.body#/deployments/0/id"}),
    },
    ("PUT", _APP, 200): {**_app_links(_SAME_APP), "Version": _Link("GET", _APP + "/versions/{version}", _CHANGED_APP_VERSION), "Deployment": _TO_DEPLOYMENT},
    ("PUT", _APP, 201): {**_app_links(_SAME_APP), "Version": _Link("GET", _APP + "/versions/{version}", _CHANGED_APP_VERSION), "Deployment": _TO_DEPLOYMENT},
    ("PATCH", _APP, 200): {"Version": _Link("GET", _APP + "/versions/{version}", _CHANGED_APP_VERSION), "Deployment": _TO_DEPLOYMENT},
    ("DELETE", _APP, 200): {"Deployment": _TO_DEPLOYMENT},
    ("POST", _APP + "/restart", 200): {"Deployment": _TO_DEPLOYMENT},
    ("PUT", "/v2/apps", 200): {"Deployment": _TO_DEPLOYMENT},
    ("PATCH", "/v2/apps", 200): {"Deployment": _TO_DEPLOYMENT},
    ("GET", "/v2/apps", 200): _app_links({"app_id": "$response.body#/apps/0/id"}),
    ("GET", _APP + "/versions", 200): {
        "Version": _Link("GET", _APP + "/versions/{version}", {"app_id": "$request.path.app_id", "version": "$response.body#/versions/0"}),
    },
    ("GET", _APP + "/tasks", 200): {
        "KillTask": _Link("DELETE", _APP + "/tasks/{task_id}", {"app_id": "$request.path.app_id", "task_id": "$response.body#/tasks/0/id"}),
        "TaskLogs": _Link("GET", "/v2/tasks/{task_id}/logs", {"task_id": "$response.body#/tasks/0/id"}),
    },
    ("GET", "/v2/tasks", 200): {
        "KillTask": _Link("DELETE", _APP + "/tasks/{task_id}", {"app_id": "$response.body#/tasks/0/appId", "task_id": "$response.body#/tasks/0/id"}),
        "TaskLogs": _Link("GET", "/v2/tasks/{task_id}/logs", {"task_id": "$response.body#/tasks/0/id"}),
    },
    ("GET", "/v2/deployments", 200): {
        "Deployment": _Link("DELETE", "/v2/deployments/{deployment_id}", {"deployment_id": "$response.body#/0/id"}),
    },
    ("POST", "/v2/groups", 201): {**_group_links({"group_id": "$request.body#/id"}), "Deployment": _TO_DEPLOYMENT},
    ("POST", _GROUP, 201): {"Deployment": _TO_DEPLOYMENT},
    # (A dry run's answer has no deploymentId: that link is then left unfollowed.)
    ("PUT", _GROUP, 200): {**_group_links({"group_id": "$request.path.group_id"}), "Deployment": _TO_DEPLOYMENT},
    ("PUT", "/v2/groups", 200): {"Deployment": _TO_DEPLOYMENT},
    ("DELETE", _GROUP, 200): {"Deployment": _TO_DEPLOYMENT},
    ("DELETE", "/v2/groups", 200): {"Deployment": _TO_DEPLOYMENT},
    ("GET", "/v2/groups/versions", 200): {
        "Version": _Link("GET", "/v2/groups/versions/{version}", {"version": "$response.body#/0"}),
    },
    ("GET", _GROUP + "/versions", 200): {
        "Version": _Link("GET", _GROUP + "/versions/{version}", {"group_id": "$request.path.group_id", "version": "$response.body#/0"}),
    },
}


# -- components --------------------------------------------------------------------------


class _TaskIds(msgspec.Struct):
    ids: list[str]


def _output_components() -> dict[str, Any]:
    """What the renderers write (hand-written: they build JSON, not Structs)."""
    nullable_str = {"type": ["string", "null"]}
    step = _obj({"actions": _array(_obj({"action": {"enum": list(get_args(ActionName))}, "app": _STR}, ("action", "app")))}, ("actions",))
    counts = {k: _INT for k in ("tasksStaged", "tasksRunning", "tasksHealthy", "tasksUnhealthy")}
    return {
        "Error": _obj(
            {"message": _STR, "details": {"description": "`[{path, errors}]` for 422, a string for malformed JSON"},
             "deployments": _array(_obj({"id": _STR}, ("id",)))},
            ("message",),
        ),
        "DeploymentResult": _obj({"version": _STR, "deploymentId": _STR}, ("version", "deploymentId")),
        "DeploymentStep": step,
        "DeploymentSteps": _obj({"steps": _array(_ref("DeploymentStep"))}, ("steps",)),
        "Deployment": _obj(
            {
                "id": _STR, "version": _STR, "affectedApps": _array(_STR), "affectedPods": _array(_STR),
                "steps": _array(_ref("DeploymentStep")),
                "currentActions": _array(_obj({"action": _STR, "app": _STR, "readinessCheckResults": _array(_OBJECT)}, ("action", "app"))),
                "currentStep": _INT, "totalSteps": _INT,
                "status": {"enum": ["ProgressDeadlineExceeded"], "description": "Present when the deployment made no progress in time."},
            },
            ("id", "version", "affectedApps", "affectedPods", "steps", "currentActions", "currentStep", "totalSteps"),
        ),
        "HealthCheckResult": _obj(
            {"alive": _BOOL, "consecutiveFailures": _INT, "firstSuccess": nullable_str, "lastFailure": nullable_str,
             "lastSuccess": nullable_str, "lastFailureCause": nullable_str, "instanceId": _STR},
            ("alive", "instanceId"),
        ),
        "Task": _obj(
            {
                "appId": _STR, "id": _STR, "host": _STR, "slaveId": _STR, "state": _STR,
                "stagedAt": _STR, "startedAt": _STR, "version": _STR,
                "ports": _array(_INT), "servicePorts": _array(_INT),
                "ipAddresses": _array(_obj({"ipAddress": _STR, "protocol": {"enum": ["IPv4", "IPv6"]}}, ("ipAddress", "protocol"))),
                "healthCheckResults": _array(_ref("HealthCheckResult")),
                "localVolumes": _array(_OBJECT), "region": _STR, "zone": _STR, "role": _STR,
                # The app's Mesos check: one of the three.
                "checkResult": _obj({"http": _obj({"statusCode": _INT}, ("statusCode",)),
                                     "tcp": _obj({"succeeded": {"type": "boolean"}}, ("succeeded",)),
                                     "command": _obj({"exitCode": _INT}, ("exitCode",))}),
            },
            ("appId", "id", "host", "slaveId", "state", "servicePorts", "ipAddresses", "healthCheckResults", "localVolumes", "role"),
        ),
        "TaskFailure": _obj(
            {"appId": _STR, "host": _STR, "message": _STR, "state": _STR, "taskId": _STR, "timestamp": _STR,
             "version": _STR, "slaveId": _STR},
            ("appId", "host", "message", "state", "taskId", "timestamp", "version"),
        ),
        "AppInfo": {
            "allOf": [
                _ref("AppDefinition"),
                _obj({
                    **counts,
                    "deployments": _array(_obj({"id": _STR}, ("id",))),
                    "tasks": _array(_ref("Task")),
                    "lastTaskFailure": _ref("TaskFailure"),
                    "readinessCheckResults": _array(_OBJECT),
                    "tasksStats": _OBJECT,
                }),
            ]
        },
        "GroupInfo": _obj(
            {
                "id": _STR, "apps": _array(_ref("AppInfo")), "pods": _array(_OBJECT),
                "groups": _array(_ref("GroupInfo")), "dependencies": _array(_STR),
                "version": _STR, "enforceRole": _BOOL,
            },
            ("id", "dependencies", "version", "enforceRole"),
        ),
        "QueueItem": _obj(
            {
                "app": {"allOf": [_ref("AppDefinition"), _obj({"lastTaskFailure": _ref("TaskFailure")})]},
                "count": _INT, "role": _STR,
                "delay": _obj({"timeLeftSeconds": _INT, "overdue": _BOOL}, ("timeLeftSeconds", "overdue")),
                "since": _STR,
                "processedOffersSummary": _obj(
                    {"processedOffersCount": _INT, "unusedOffersCount": _INT, "lastUnusedOfferAt": _STR,
                     "rejectSummaryLastOffers": _array(_OBJECT), "rejectSummaryLaunchAttempt": _array(_OBJECT)},
                    ("processedOffersCount", "unusedOffersCount"),
                ),
                "lastUnusedOffers": _array(_OBJECT),
            },
            ("app", "count", "role", "delay", "since", "processedOffersSummary"),
        ),
        "LogChunk": _obj({"data": _STR, "offset": _INT, "size": _INT}, ("data", "offset", "size")),
        "AgentDraining": _obj({"agentId": _STR, "draining": _BOOL}, ("agentId", "draining")),
        "PluginInfo": _obj({"id": _STR, "plugin": _STR, "implementation": _STR, "tags": _array(_STR), "info": _OBJECT}, ("id", "plugin", "implementation")),
        "Info": _obj(
            {"name": _STR, "version": _STR, "buildref": _STR, "elected": _BOOL, "leader": _STR,
             "frameworkId": nullable_str, "marathon_config": _OBJECT, "zookeeper_config": _OBJECT, "http_config": _OBJECT},
            ("name", "version", "elected", "leader", "marathon_config", "zookeeper_config", "http_config"),
        ),
        "Metrics": _obj(
            {k: _OBJECT for k in ("counters", "gauges", "histograms", "meters", "timers")} | {"version": _STR},
            ("version", "counters", "gauges", "histograms", "meters", "timers"),
        ),
    }


# The RAML constraints the decoders check beyond the Structs' own (`app_decode.raml_violations`,
# `group_update._decode_group`): a body breaking them is a 422 `Invalid JSON`.
_LABEL = r"[a-z0-9]([a-z0-9-]*[a-z0-9])?"
_ID_PART = rf"(\.\.|({_LABEL}\.)*{_LABEL})"
_PATH_ID = {"type": "string", "minLength": 1, "pattern": rf"^{_ID_PART}?(/{_ID_PART}?)*$"}
_RESERVED_LAST = r"(^|/)(restart|tasks|versions|\.|\.\.)/*$"
_LEGACY_NAME = {"type": "string", "pattern": rf"^{_LABEL}$"}
_RAML: dict[str, dict[str, dict[str, Any]]] = {
    "AppDefinition": {"id": _PATH_ID, "dependencies": {"items": _PATH_ID}, "uris": {"items": {"minLength": 1, "maxLength": 1024}}},
    "AppUpdate": {"id": _PATH_ID, "dependencies": {"items": _PATH_ID}, "uris": {"items": {"minLength": 1, "maxLength": 1024}}},
    "GroupUpdate": {"id": _PATH_ID, "dependencies": {"items": _PATH_ID}},
    "PortDefinition": {"name": _LEGACY_NAME},
    "PortMapping": {"name": _LEGACY_NAME},
    "Network": {"name": {"type": "string", "maxLength": 63, "pattern": r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$"}},
    "DockerParameter": {"key": {"minLength": 1}},
}


def _with_raml(components: dict[str, Any]) -> None:
    for name, properties in _RAML.items():
        props = components[name]["properties"]
        for prop, extra in properties.items():
            if "items" in extra:
                props[prop] = {**props[prop], "items": {**props[prop]["items"], **extra["items"]}}
            else:
                props[prop] = {**props[prop], **extra}
    # `app_rules`: exactly one of a cmd (2 characters or more) and args, or a container instead;
    # an id must not end with a reserved word.
    apps = components["AppDefinition"]
    apps["anyOf"] = [
        {"required": ["cmd"], "properties": {"cmd": {"type": "string", "minLength": 2}, "args": {"maxItems": 0}}},
        {"required": ["args"], "properties": {"args": {"minItems": 1}, "cmd": {"type": "null"}}},
        {"required": ["container"], "properties": {"container": {"type": "object"}, "cmd": {"type": "null"}, "args": {"maxItems": 0}}},
    ]
    for name in ("AppDefinition", "AppUpdate"):
        components[name]["properties"]["id"]["not"] = {"pattern": _RESERVED_LAST}
    # A nested group must name its id.
    groups = components["GroupUpdate"]["properties"]["groups"]
    groups["items"] = {"allOf": [groups["items"], {"required": ["id"]}]}


@lru_cache(maxsize=1)
def _components() -> dict[str, Any]:
    (_, components) = msgspec.json.schema_components(
        [AppDefinition, AppUpdate, GroupUpdate, GroupPartialUpdate, _TaskIds], ref_template=_REF
    )
    _with_raml(components)
    components["TaskIds"] = components.pop("_TaskIds")
    components["AppUpdateList"] = _array(_ref("AppUpdate"))
    components.update(_output_components())
    return components


# -- the document ------------------------------------------------------------------------


def _clean_path(path: str) -> str:
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", path)


def _operation_id(method: str, path: str) -> str:
    return f"{method.lower()}_{re.sub(r'[^a-z0-9]+', '_', path.lower()).strip('_')}"


# The agent protocol's routes (`api.agents`, CLUSTER.md 3.4): recordio between
# machines holding the agent secret, not part of this API.
_INTERNAL = "/internal/"
_GENERIC = _Op("", {200: {"description": "Success"}})


def _operation(method: str, path: str) -> dict[str, Any]:
    spec = _OPS.get((method, path)) or _GENERIC
    responses: dict[str, Any] = {}
    for status, answer in spec.answers.items():
        links = _LINKS.get((method, path, status))
        if links:
            answer = {**answer, "links": {name: _link(link) for name, link in links.items()}}
        responses[str(status)] = answer
    for status in sorted({*spec.errors, *_LIMITS, *(_AUTH if spec.auth else ())}):
        responses[str(status)] = _json(_ERROR_DESCRIPTIONS[status], _ref("Error"))
    op: dict[str, Any] = {
        "summary": spec.summary or f"{method} {path}",
        "operationId": _operation_id(method, path),
        "responses": responses,
    }
    params: list[dict[str, Any]] = [
        {"name": p, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for p in re.findall(r"\{(\w+)\}", path)
    ]
    for q in spec.query:
        schema, description = _QUERY[q]
        param = {"name": _QUERY_NAME.get(q, q), "in": "query", "required": False, "description": description, "schema": schema}
        if schema.get("type") == "array":
            param.update(style="form", explode=True)
        params.append(param)
    if params:
        op["parameters"] = params
    if spec.body:
        op["requestBody"] = {"required": True, "content": {_JSON: {"schema": _ref(spec.body)}}}
    return op


def _link(link: _Link) -> dict[str, Any]:
    out: dict[str, Any] = {"operationId": _operation_id(link.method, link.path), "parameters": dict(link.parameters)}
    if link.description:
        out["description"] = link.description
    return out


def document(routes: list[Any]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        path = _clean_path(route.path)
        if path.startswith(_INTERNAL):
            continue
        for method in sorted(route.methods or ()):
            if method == "HEAD":
                continue
            paths.setdefault(path, {})[method.lower()] = _operation(method, path)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Marathon REST API",
            "version": MARATHON_API_VERSION,
            "description": f"Marathon {MARATHON_API_VERSION} API served by marathon-trio {__version__}.",
        },
        "paths": paths,
        "components": {"schemas": _components()},
    }
