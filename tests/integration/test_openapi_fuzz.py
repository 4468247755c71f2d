"""`/openapi.json` tells the truth: schemathesis against a real `marathon serve`.

Every documented operation is called with requests generated from the
document, valid and invalid ones, and every answer is checked: no 5xx, a
documented status, the documented content type, a body of the documented
schema.  A short stateful run then follows the document's `links`: from a
listed or created app to its reads, updates, tasks and versions, from a
change to its deployment, from a version list to a version.

Bounded for CI (about half a minute on two cores): a few examples per
operation, derandomized so every run sends the same requests, against a
server with simulated agents (`--master sim://3`), where a deployment ends at
once unless nothing can take it.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import marathon.api
from marathon.api.openapi import document
from marathon.testing import MarathonProcess, wait_for

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
FUZZ = settings(
    max_examples=10,
    derandomize=True,
    database=None,
    deadline=None,
    # Generated cases only: the explicit phase would add schemathesis' coverage cases,
    # thousands of them (minutes).
    phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
)
WALK = settings(FUZZ, max_examples=8, stateful_step_count=6)

# Bounds the generated bodies are kept within, so that the test stays quick: each
# instance of an app is a record the server keeps and launches, and the 200,000 an
# app may have cost seconds and hundreds of MiB.  Resource demands are left as
# generated (a demand beyond any machine, even beyond int64, simply waits).
_CAPS = {"instances": 3, "scaleBy": 2.0}


def _tame(value: Any) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            cap = _CAPS.get(key)
            if cap is not None and isinstance(item, int | float) and not isinstance(item, bool) and item > cap:
                item = cap
            out[key] = _tame(item)
        return out
    if isinstance(value, list):
        return [_tame(item) for item in value]
    return value


def api_routes() -> list:
    """Every route of `marathon.api`'s resource modules, as `build_app` serves them."""
    routes: list = []
    for info in pkgutil.iter_modules(marathon.api.__path__):
        if not info.name.startswith("_") and info.name != "openapi":
            routes += getattr(importlib.import_module(f"marathon.api.{info.name}"), "routes", [])
    return routes


def _as_served(doc: dict) -> dict:
    """The document as a client reads it (and a copy schemathesis may change)."""
    return msgspec.json.decode(msgspec.json.encode(doc))


# The document is built here, from the routes the server serves it for (the first
# test checks that they agree), so that the operations are known when pytest
# collects the tests and each one is reported on its own.
DOCUMENT = _as_served(document(api_routes()))
# The event stream never ends: its answer cannot be read to the end.
api = schemathesis.openapi.from_dict(_as_served(DOCUMENT)).exclude(path="/v2/events")
# The stateful run follows the links the document declares, not inferred ones.
api.config.phases.stateful.inference.algorithms = []
api.hook("map_body")(lambda context, body: _tame(body))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    m = MarathonProcess(
        tmp_path_factory.mktemp("openapi"),
        args=["--master", "sim://3", "--store", "memory", "--metrics_prometheus"],
    )
    m.start()
    # Something for reads, links and kills to find from the start, and a deployment
    # that stays (no agent has 1,000 cpus) for /v2/deployments and /v2/queue to show.
    for app in (
        {"id": "/fuzz/web", "cmd": "sleep 1000", "cpus": 0.01, "mem": 8, "instances": 2},
        {"id": "/fuzz/idle", "cmd": "sleep 1000", "cpus": 0.01, "mem": 8, "instances": 0},
        {"id": "/fuzz/stuck", "cmd": "sleep 1000", "cpus": 1000, "mem": 8, "instances": 1},
    ):
        r = m.client.post("/v2/apps", json=app)
        assert r.status_code == 201, r.text
    wait_for(lambda: len(m.deployments()) == 1, message="only the stuck deployment to remain")
    yield m
    m.stop()


def test_the_served_document_is_the_one_under_test(server):
    assert server.client.get("/openapi.json").json() == DOCUMENT


@api.parametrize()
@FUZZ
def test_answers_match_the_document(case, server):
    case.call_and_validate(base_url=server.url, checks=CHECKS)


def test_links_lead_where_the_document_says(server):
    class Walk(api.as_state_machine()):
        def get_call_kwargs(self, case):
            return {"base_url": server.url}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs or None)

    Walk.run(settings=WALK)
