"""The OpenAPI 3.1 document at `/openapi.json`, generated from the models.

Schemas come from the msgspec Structs themselves (`msgspec.json.schema_components`),
so they cannot drift from what the server accepts; the operations come from
the router's route table, annotated below with summaries, bodies and
responses.  A route without an annotation still appears (with a generic
response), so the document always lists every route the server has.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import msgspec

from .._version import MARATHON_API_VERSION, __version__
from ..models.app import AppDefinition, AppUpdate
from ..models.group_update import GroupPartialUpdate, GroupUpdate

_REF = "#/components/schemas/{name}"
_ERROR = {"$ref": "#/components/schemas/Error"}

# (method, path) -> (summary, request schema name or None, success status, response schema)
_OPS: dict[tuple[str, str], tuple[str, str | None, int, dict]] = {
    ("GET", "/v2/apps"): ("List apps", None, 200, {"type": "object", "properties": {"apps": {"type": "array", "items": {"$ref": "#/components/schemas/AppInfo"}}}}),
    ("POST", "/v2/apps"): ("Create an app", "AppDefinition", 201, {"$ref": "#/components/schemas/AppInfo"}),
    ("PUT", "/v2/apps"): ("Create or update many apps in one deployment", "AppUpdateList", 200, {"$ref": "#/components/schemas/DeploymentResult"}),
    ("PATCH", "/v2/apps"): ("Update many existing apps in one deployment", "AppUpdateList", 200, {"$ref": "#/components/schemas/DeploymentResult"}),
    ("GET", "/v2/apps/{app_id}"): ("One app (or `group/*` for all apps under a group)", None, 200, {"type": "object", "properties": {"app": {"$ref": "#/components/schemas/AppInfo"}}}),
    ("PUT", "/v2/apps/{app_id}"): ("Update (partial by default) or create an app; `{\"version\":...}` rolls back", "AppUpdate", 200, {"$ref": "#/components/schemas/DeploymentResult"}),
    ("PATCH", "/v2/apps/{app_id}"): ("Partially update an existing app", "AppUpdate", 200, {"$ref": "#/components/schemas/DeploymentResult"}),
    ("DELETE", "/v2/apps/{app_id}"): ("Destroy an app (force defaults to true)", None, 200, {"$ref": "#/components/schemas/DeploymentResult"}),
    ("POST", "/v2/apps/{app_id}/restart"): ("Rolling restart of an app", None, 200, {"$ref": "#/components/schemas/DeploymentResult"}),
    ("GET", "/v2/apps/{app_id}/tasks"): ("Tasks of an app", None, 200, {"type": "object", "properties": {"tasks": {"type": "array", "items": {"$ref": "#/components/schemas/Task"}}}}),
    ("DELETE", "/v2/apps/{app_id}/tasks"): ("Kill tasks of an app (scale, wipe, host)", None, 200, {"type": "object"}),
    ("DELETE", "/v2/apps/{app_id}/tasks/{task_id}"): ("Kill one task", None, 200, {"type": "object"}),
    ("GET", "/v2/apps/{app_id}/versions"): ("Stored versions of an app", None, 200, {"type": "object", "properties": {"versions": {"type": "array", "items": {"type": "string"}}}}),
    ("GET", "/v2/apps/{app_id}/versions/{version}"): ("An app definition at a version", None, 200, {"$ref": "#/components/schemas/AppDefinition"}),
    ("GET", "/v2/tasks"): ("All tasks (status=running|staging filters)", None, 200, {"type": "object", "properties": {"tasks": {"type": "array", "items": {"$ref": "#/components/schemas/Task"}}}}),
    ("POST", "/v2/tasks/delete"): ("Kill tasks by id", "TaskIds", 200, {"type": "object"}),
    ("GET", "/v2/deployments"): ("Running deployments", None, 200, {"type": "array", "items": {"type": "object"}}),
    ("GET", "/v2/info"): ("Server information and configuration", None, 200, {"type": "object"}),
    ("GET", "/v2/leader"): ("The current leader", None, 200, {"type": "object", "properties": {"leader": {"type": "string"}}}),
    ("GET", "/ping"): ("Liveness", None, 200, {"type": "string"}),
}

_QUERY = {
    "force": ("boolean", "Override locks held by running deployments."),
    "partialUpdate": ("boolean", "Merge the body onto the existing app (default true)."),
    "embed": ("string", "Extra data to embed (tasks, counts, deployments, lastTaskFailure, readiness, taskStats)."),
    "scale": ("boolean", "Also scale the app down by the killed tasks."),
    "wipe": ("boolean", "Forget the killed instances instead of relaunching them."),
    "host": ("string", "Only tasks on this agent hostname."),
    "cmd": ("string", "Only apps whose cmd contains this text."),
    "id": ("string", "Only apps whose id contains this text."),
    "label": ("string", "Label selector, e.g. `env==prod,tier in (a, b)`."),
    "status": ("string", "running | staging"),
}
_PARAMS_OF = {
    ("GET", "/v2/apps"): ["cmd", "id", "label", "embed"],
    ("POST", "/v2/apps"): ["force"],
    ("PUT", "/v2/apps"): ["force", "partialUpdate"],
    ("PATCH", "/v2/apps"): ["force"],
    ("GET", "/v2/apps/{app_id}"): ["embed"],
    ("PUT", "/v2/apps/{app_id}"): ["force", "partialUpdate"],
    ("PATCH", "/v2/apps/{app_id}"): ["force"],
    ("DELETE", "/v2/apps/{app_id}"): ["force"],
    ("POST", "/v2/apps/{app_id}/restart"): ["force"],
    ("DELETE", "/v2/apps/{app_id}/tasks"): ["host", "scale", "wipe", "force"],
    ("DELETE", "/v2/apps/{app_id}/tasks/{task_id}"): ["scale", "wipe", "force"],
    ("GET", "/v2/tasks"): ["status"],
    ("POST", "/v2/tasks/delete"): ["scale", "wipe", "force"],
}


# -- /v2/groups ----------------------------------------------------------------------------

_GROUP_INFO = {"$ref": "#/components/schemas/GroupInfo"}
_GROUP_RESULT = {"$ref": "#/components/schemas/DeploymentResult"}
_GROUP_VERSIONS = {"type": "array", "items": {"type": "string"}}
_GROUP_APPS = {"type": "array", "items": {"$ref": "#/components/schemas/AppInfo"}}
_GROUP_DRY_RUN = "; `dryRun=true` answers `{\"steps\": [...]}` and changes nothing"
_OPS.update({
    ("GET", "/v2/groups"): ("The root group", None, 200, _GROUP_INFO),
    ("POST", "/v2/groups"): ("Create a group (body id relative to /)", "GroupUpdate", 201, _GROUP_RESULT),
    ("PUT", "/v2/groups"): ("Update the root group: structural, `scaleBy` or `version` rollback" + _GROUP_DRY_RUN, "GroupUpdate", 200, _GROUP_RESULT),
    ("DELETE", "/v2/groups"): ("Remove every app and group", None, 200, _GROUP_RESULT),
    ("GET", "/v2/groups/apps"): ("Every app (AppInfo array)", None, 200, _GROUP_APPS),
    ("GET", "/v2/groups/versions"): ("Stored versions of the root group, newest first", None, 200, _GROUP_VERSIONS),
    ("GET", "/v2/groups/versions/{version}"): ("The root group at a stored version", None, 200, _GROUP_INFO),
    ("GET", "/v2/groups/{group_id}/apps"): ("Every app below a group (AppInfo array)", None, 200, _GROUP_APPS),
    ("GET", "/v2/groups/{group_id}/versions"): ("Stored root versions containing the group, newest first", None, 200, _GROUP_VERSIONS),
    ("GET", "/v2/groups/{group_id}/versions/{version}"): ("A group at a stored version", None, 200, _GROUP_INFO),
    ("GET", "/v2/groups/{group_id}"): ("One group", None, 200, _GROUP_INFO),
    ("POST", "/v2/groups/{group_id}"): ("Create a group (body id relative to the path); 409 if it exists", "GroupUpdate", 201, _GROUP_RESULT),
    ("PUT", "/v2/groups/{group_id}"): ("Create or update a group: structural, `scaleBy` or `version` rollback" + _GROUP_DRY_RUN, "GroupUpdate", 200, _GROUP_RESULT),
    ("PATCH", "/v2/groups/{group_id}"): ("Set `enforceRole` of a top-level group (no deployment, empty 200)", "GroupPartialUpdate", 200, {}),
    ("DELETE", "/v2/groups/{group_id}"): ("Remove a group and everything below it", None, 200, _GROUP_RESULT),
})
_QUERY["dryRun"] = ("boolean", "Only compute the deployment steps; nothing is stored or deployed.")
_QUERY["embed"] = (
    _QUERY["embed"][0],
    _QUERY["embed"][1] + " Groups: group.groups, group.apps, group.pods, group.apps.<app embed>"
    " (default: groups, apps and pods).",
)
_PARAMS_OF.update({
    ("GET", "/v2/groups"): ["embed"],
    ("GET", "/v2/groups/{group_id}"): ["embed"],
    ("GET", "/v2/groups/apps"): ["embed"],
    ("GET", "/v2/groups/{group_id}/apps"): ["embed"],
    ("POST", "/v2/groups"): ["force"],
    ("POST", "/v2/groups/{group_id}"): ["force"],
    ("PUT", "/v2/groups"): ["force", "dryRun"],
    ("PUT", "/v2/groups/{group_id}"): ["force", "dryRun"],
    ("DELETE", "/v2/groups"): ["force"],
    ("DELETE", "/v2/groups/{group_id}"): ["force"],
})


def _group_components() -> dict[str, Any]:
    """GroupUpdate, GroupPartialUpdate (generated) and GroupInfo (output)."""
    (_, components) = msgspec.json.schema_components([GroupUpdate, GroupPartialUpdate], ref_template=_REF)
    components["GroupInfo"] = {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "apps": {"type": "array", "items": {"$ref": _REF.format(name="AppInfo")}},
            "pods": {"type": "array", "items": {"type": "object"}},
            "groups": {"type": "array", "items": {"$ref": _REF.format(name="GroupInfo")}},
            "dependencies": {"type": "array", "items": {"type": "string"}},
            "version": {"type": "string"},
            "enforceRole": {"type": "boolean"},
        },
        "required": ["id", "dependencies", "version", "enforceRole"],
    }
    return components


def _clean_path(path: str) -> str:
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", path)


class _TaskIds(msgspec.Struct):
    ids: list[str]


@lru_cache(maxsize=1)
def _components() -> dict[str, Any]:
    (_, components) = msgspec.json.schema_components([AppDefinition, AppUpdate, _TaskIds], ref_template=_REF)
    for name, schema in _group_components().items():
        components.setdefault(name, schema)
    components["TaskIds"] = components.pop("_TaskIds")
    components["AppUpdateList"] = {"type": "array", "items": {"$ref": _REF.format(name="AppUpdate")}}
    components["Error"] = {
        "type": "object",
        "properties": {"message": {"type": "string"}, "details": {}},
        "required": ["message"],
    }
    components["DeploymentResult"] = {
        "type": "object",
        "properties": {"version": {"type": "string"}, "deploymentId": {"type": "string"}},
        "required": ["version", "deploymentId"],
    }
    components["Task"] = {
        "type": "object",
        "properties": {
            k: {"type": t}
            for k, t in {
                "appId": "string", "id": "string", "host": "string", "slaveId": "string",
                "state": "string", "stagedAt": "string", "startedAt": "string", "version": "string",
                "ports": "array", "servicePorts": "array", "ipAddresses": "array",
                "healthCheckResults": "array", "role": "string",
            }.items()
        },
    }
    counts = {k: {"type": "integer"} for k in ("tasksStaged", "tasksRunning", "tasksHealthy", "tasksUnhealthy")}
    components["AppInfo"] = {
        "allOf": [
            {"$ref": _REF.format(name="AppDefinition")},
            {"type": "object", "properties": {**counts, "deployments": {"type": "array"}, "tasks": {"type": "array", "items": {"$ref": _REF.format(name="Task")}}, "lastTaskFailure": {"type": "object"}}},
        ]
    }
    return components


def document(routes: list[Any]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        path = _clean_path(route.path)
        for method in sorted(route.methods or ()):
            if method == "HEAD":
                continue
            summary, body, status, schema = _OPS.get((method, path), (f"{method} {path}", None, 200, {}))
            op: dict[str, Any] = {
                "summary": summary,
                "operationId": f"{method.lower()}_{re.sub(r'[^a-z0-9]+', '_', path.lower()).strip('_')}",
                "responses": {
                    str(status): {"description": "Success", "content": {"application/json": {"schema": schema}}},
                    "400": {"description": "Malformed request", "content": {"application/json": {"schema": _ERROR}}},
                    "404": {"description": "Not found", "content": {"application/json": {"schema": _ERROR}}},
                    "409": {"description": "Locked by a deployment", "content": {"application/json": {"schema": _ERROR}}},
                    "422": {"description": "Invalid definition", "content": {"application/json": {"schema": _ERROR}}},
                },
            }
            params = [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                for p in re.findall(r"\{(\w+)\}", path)
            ]
            for q in _PARAMS_OF.get((method, path), []):
                tp, desc = _QUERY[q]
                params.append({"name": q, "in": "query", "required": False, "description": desc, "schema": {"type": tp}})
            if params:
                op["parameters"] = params
            if body:
                op["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": _REF.format(name=body)}}},
                }
            paths.setdefault(path, {})[method.lower()] = op
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
