"""The OpenAPI document: every route described, every link pointing somewhere real.

What the server really answers is checked against the document by
tests/integration/test_openapi_fuzz.py; these are the cheap structural checks.
"""

from __future__ import annotations

import importlib
import pkgutil
import re

import pytest

import marathon.api
from marathon.api.openapi import document


def api_routes() -> list:
    """Every route of `marathon.api`'s resource modules, as `build_app` serves them."""
    routes: list = []
    for info in pkgutil.iter_modules(marathon.api.__path__):
        if not info.name.startswith("_") and info.name != "openapi":
            routes += getattr(importlib.import_module(f"marathon.api.{info.name}"), "routes", [])
    return routes


@pytest.fixture(scope="module")
def doc():
    return document(api_routes())


def operations(doc):
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            yield method.upper(), path, op


def test_every_route_has_its_own_description(doc):
    generic = [(m, p) for m, p, op in operations(doc) if op["summary"] == f"{m} {p}"]
    assert generic == []
    assert len(list(operations(doc))) >= 50


def test_links_name_real_operations_and_parameters(doc):
    by_id = {op["operationId"]: (m, p, op) for m, p, op in operations(doc)}
    assert len(by_id) == len(list(operations(doc))), "operationIds are unique"
    checked = 0
    for _, path, op in operations(doc):
        source_params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        for response in op["responses"].values():
            for name, link in response.get("links", {}).items():
                assert link["operationId"] in by_id, name
                _, target_path, target = by_id[link["operationId"]]
                target_params = {p["name"] for p in target.get("parameters", [])}
                assert set(re.findall(r"\{(\w+)\}", target_path)) <= set(link["parameters"]), (path, name)
                for param, expression in link["parameters"].items():
                    assert param in target_params, (path, name, param)
                    if m := re.match(r"\$request\.path\.(\w+)$", expression):
                        assert m[1] in source_params, (path, name, expression)
                checked += 1
    assert checked >= 30


def test_plain_text_and_bodiless_answers_are_documented_as_such(doc):
    paths = doc["paths"]
    assert "text/plain" in paths["/ping"]["get"]["responses"]["200"]["content"]
    assert "204" in paths["/ping"]["get"]["responses"]
    assert list(paths["/metrics/prometheus"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    assert "content" not in paths["/v2/groups/{group_id}"]["patch"]["responses"]["200"]
    assert "content" not in paths["/v2/deployments/{deployment_id}"]["delete"]["responses"]["202"]
    dry_run = paths["/v2/groups/{group_id}"]["put"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert {"$ref": "#/components/schemas/DeploymentSteps"} in dry_run["oneOf"]
    assert "/ping" not in [p for m, p, op in operations(doc) if "401" in op["responses"]]


def test_the_agent_protocol_is_not_part_of_the_api(doc):
    internal = [r.path for r in api_routes() if r.path.startswith("/internal/")]
    assert [p for p in doc["paths"] if p.startswith("/internal/")] == []
    assert len(doc["paths"]) == len({r.path for r in api_routes()}) - len(internal)


def test_created_app_links_to_its_reads_changes_and_deployment(doc):
    links = doc["paths"]["/v2/apps"]["post"]["responses"]["201"]["links"]
    assert links["GetApp"] == {"operationId": "get_v2_apps_app_id", "parameters": {"app_id": "$response.body#/id"}}
    assert {"UpdateApp", "DeleteApp", "AppTasks", "AppVersions", "Deployment"} <= set(links)
    assert links["Deployment"]["operationId"] == "delete_v2_deployments_deployment_id"
