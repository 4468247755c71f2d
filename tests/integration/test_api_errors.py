"""Bad input gets Marathon's status codes and bodies, and the store is unchanged."""

from __future__ import annotations

import pytest

from .state_dump import dump_state

KEEP = {"id": "/keep", "cmd": "sleep 1000", "cpus": 0.01, "mem": 8, "instances": 0}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from marathon.testing import MarathonProcess

    m = MarathonProcess(tmp_path_factory.mktemp("errors"), args=["--agent_resources", "cpus:4;mem:1024;disk:1024"])
    m.start()
    assert m.client.post("/v2/apps", json=KEEP).status_code == 201
    m.wait_deployments_done()
    yield m
    m.stop()


BAD = [
    # (method, path, body bytes, status, message, details check)
    ("POST", "/v2/apps", b'{"id": "/web", "cmd":', 400, "Invalid JSON", lambda d: isinstance(d, str) and d),
    ("POST", "/v2/apps", b"", 400, "Please specify data in JSON format", lambda d: isinstance(d, str)),
    # Marathon's RAML parser checks the id pattern, so a bad id is "Invalid JSON" (see docs/compatibility.md).
    ("POST", "/v2/apps", b'{"id": "/Bad_Id", "cmd": "sleep 1"}', 422, "Invalid JSON",
     lambda d: d == [{"path": "/id", "errors": ["error.pattern"]}]),
    ("POST", "/v2/apps", b'{"id": "/a/tasks", "cmd": "sleep 1"}', 422, "Object is not valid",
     lambda d: d[0]["path"] == "/id" and "reserved keywords" in d[0]["errors"][0]),
    ("POST", "/v2/apps", b'{"id": "/both", "cmd": "sleep 1", "args": ["sleep", "1"]}', 422, "Object is not valid",
     lambda d: d == [{"path": "/", "errors": ["AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'."]}]),
    ("POST", "/v2/apps", b'{"id": "/neither"}', 422, "Object is not valid",
     lambda d: d[0]["errors"] == ["AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'."]),
    ("POST", "/v2/apps", b'{"id": "/neg", "cmd": "sleep 1", "instances": -1}', 422, "Invalid JSON",
     lambda d: d == [{"path": "/instances", "errors": ["error.min"]}]),
    ("POST", "/v2/apps", b'{"id": "/typ", "cmd": 5}', 422, "Invalid JSON",
     lambda d: d == [{"path": "/cmd", "errors": ["error.expected.jsstring"]}]),
    ("POST", "/v2/apps", b'{"id": "/typ", "cmd": "x1", "instances": "two"}', 422, "Invalid JSON",
     lambda d: d == [{"path": "/instances", "errors": ["error.expected.jsnumber"]}]),
    ("POST", "/v2/apps", b'{"id": "/enum", "cmd": "sleep 1", "killSelection": "RANDOM"}', 422, "Invalid JSON",
     lambda d: d == [{"path": "/killSelection", "errors": ["error.unknown.enum.literal"]}]),
    ("POST", "/v2/apps", b'{"id": "/uhc", "cmd": "sleep 1", "upgradeStrategy": {"minimumHealthCapacity": 1.5, "maximumOverCapacity": 0}}', 422, "Invalid JSON",
     lambda d: d == [{"path": "/upgradeStrategy/minimumHealthCapacity", "errors": ["error.max"]}]),
    ("POST", "/v2/apps", b'{"cmd": "sleep 1"}', 422, "Invalid JSON",
     lambda d: d == [{"path": "/id", "errors": ["error.path.missing"]}]),
    ("POST", "/v2/apps", b'{"id": "/keep", "cmd": "sleep 1"}', 409, "An app with id [/keep] already exists.", None),
    ("PUT", "/v2/apps/keep", b'{"version": "2020-01-01T00:00:00.000Z", "cmd": "x"}', 422,
     "The 'version' field may only be combined with the 'id' field.", None),
    ("PUT", "/v2/apps/keep", b'{"version": "2020-01-01T00:00:00.000Z"}', 404, None, None),
    ("PUT", "/v2/apps/keep", b'{"instances": -3}', 422, "Invalid JSON", None),
    ("PATCH", "/v2/apps/missing", b'{"instances": 1}', 404, "App '/missing' does not exist", None),
    ("DELETE", "/v2/apps/missing", b"", 404, "App '/missing' does not exist", None),
    ("GET", "/v2/apps/missing", b"", 404, "App '/missing' does not exist", None),
    ("DELETE", "/v2/apps/keep/tasks?scale=true&wipe=true", b"", 400, "You cannot use scale and wipe at the same time.", None),
    ("DELETE", "/v2/apps/keep/tasks/nonsense", b"", 404, "Task 'nonsense' does not exist", None),
    ("POST", "/v2/tasks/delete", b'{"ids": ["nonsense"]}', 400, None, None),
    ("GET", "/v2/no/such/route", b"", 404, "URI not found", None),
    ("GET", "/v2/apps?label=a===b", b"", 422, None, None),
]


@pytest.mark.parametrize("method,path,body,status,message,details", BAD, ids=[f"{b[0]} {b[1]} {b[3]}" for b in BAD])
def test_bad_request_gets_marathon_error_and_changes_nothing(server, method, path, body, status, message, details):
    before = dump_state(server)
    apps_before = server.client.get("/v2/apps").json()
    r = server.client.request(method, path, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    payload = r.json()
    if message is not None:
        assert payload["message"] == message
    if details is not None:
        assert details(payload["details"]), payload
    assert server.client.get("/v2/apps").json() == apps_before
    assert dump_state(server) == before
