"""Bad input gets a 4xx, never a 5xx, and cannot take the server down: huge
numbers, too many instances, deep JSON and ids, oversized bodies and headers,
definitions too large to store, many large bodies at once, and a stored app
that asks for more instances than the server allows (docs/configuration.md,
*Request limits*).  Both HTTP servers."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import zlib

import httpx
import msgspec
import pytest

from marathon.testing import MarathonProcess, wait_for

from .state_dump import dump_state

LIMIT = 50
AGENT = ["--agent_resources", "cpus:4;mem:1024;disk:1024"]
KEEP = {"id": "/keep", "cmd": "sleep 1000", "cpus": 0.01, "mem": 8, "instances": 0}
GROUP_APP = {"id": "/kg/one", "cmd": "sleep 1000", "cpus": 0.01, "mem": 8, "instances": 1}


@pytest.fixture(scope="module", params=["builtin", "hypercorn"])
def server(request, tmp_path_factory):
    m = MarathonProcess(
        tmp_path_factory.mktemp(f"limits-{request.param}"),
        args=[*AGENT, "--max_instances_per_app", str(LIMIT), "--http_server", request.param],
    )
    m.start()
    assert m.client.post("/v2/apps", json=KEEP).status_code == 201
    assert m.client.post("/v2/apps", json=GROUP_APP).status_code == 201
    m.wait_deployments_done()
    yield m
    m.stop()


def over(n: int) -> list[str]:
    return [f"got {n}, expected {LIMIT} or less (the server's --max_instances_per_app)"]


def deep(n: int = 10_000) -> bytes:
    return b"[" * n + b"]" * n


TOO_DEEP = "Document nesting depth exceeds the maximum allowed (128)"
DEEP_ID = "/" + "/".join(["d"] * 300)
BIG = b"1" + b"0" * 400

BAD = [
    # (method, path, body, status, message, details)
    ("POST", "/v2/apps", b'{"id": "/a", "cmd": "sleep 1", "instances": 9223372036854775808}', 422, "Invalid JSON",
     [{"path": "/instances", "errors": ["error.max"]}]),
    ("POST", "/v2/apps", b'{"id": "/a", "cmd": "sleep 1", "instances": ' + BIG + b"}", 422, "Invalid JSON",
     [{"path": "/instances", "errors": ["error.max"]}]),
    ("POST", "/v2/apps", b'{"id": "/a", "cmd": "sleep 1", "backoffSeconds": ' + BIG + b"}", 422, "Invalid JSON",
     [{"path": "/backoffSeconds", "errors": ["error.max"]}]),
    ("PUT", "/v2/apps/keep", b'{"instances": ' + BIG + b"}", 422, "Invalid JSON",
     [{"path": "/instances", "errors": ["error.max"]}]),
    ("POST", "/v2/apps", json.dumps({**KEEP, "id": "/many", "instances": LIMIT + 1}).encode(), 422,
     "Object is not valid", [{"path": "/instances", "errors": over(LIMIT + 1)}]),
    ("PUT", "/v2/apps/keep", b'{"instances": 1000000000}', 422, "Object is not valid",
     [{"path": "/instances", "errors": over(1_000_000_000)}]),
    ("PATCH", "/v2/apps/keep", b'{"instances": 51}', 422, "Object is not valid",
     [{"path": "/instances", "errors": over(51)}]),
    ("PUT", "/v2/apps/keep?partialUpdate=false", json.dumps({**KEEP, "instances": 51}).encode(), 422,
     "Object is not valid", [{"path": "/instances", "errors": over(51)}]),
    ("PUT", "/v2/apps", json.dumps([{"id": "/keep", "instances": 51}]).encode(), 422, "Object is not valid",
     [{"path": "/instances", "errors": over(51)}]),
    ("PATCH", "/v2/apps", json.dumps([{"id": "/keep", "instances": 51}]).encode(), 422, "Object is not valid",
     [{"path": "/instances", "errors": over(51)}]),
    ("PUT", "/v2/groups/g", json.dumps({"apps": [{**KEEP, "id": "x", "instances": 51}]}).encode(), 422,
     "Object is not valid", [{"path": "/apps(0)/instances", "errors": over(51)}]),
    ("POST", "/v2/groups", json.dumps({"id": "/h", "groups": [{"id": "i", "apps": [{**KEEP, "id": "y", "instances": 99}]}]}).encode(),
     422, "Object is not valid", [{"path": "/groups(0)/apps(0)/instances", "errors": over(99)}]),
    ("PUT", "/v2/groups/kg", b'{"scaleBy": 1000000}', 422, "Object is not valid",
     [{"path": "/apps//kg/one/instances", "errors": over(1_000_000)}]),
    ("PUT", "/v2/groups/kg", b'{"scaleBy": ' + BIG + b"}", 422, "Invalid JSON",
     [{"path": "/scaleBy", "errors": ["error.max"]}]),
    ("POST", "/v2/apps", deep(), 400, "Invalid JSON", TOO_DEEP),
    ("PUT", "/v2/apps/keep", b'{"env": ' + b'{"a":' * 10_000 + b"1" + b"}" * 10_001, 400, "Invalid JSON", TOO_DEEP),
    ("PUT", "/v2/groups/g", b'{"groups": ' + deep() + b"}", 400, "Invalid JSON", TOO_DEEP),
    ("POST", "/v2/groups", deep(), 400, "Invalid JSON", TOO_DEEP),
    ("POST", "/v2/tasks/delete", b'{"ids": ' + deep() + b"}", 400, "Invalid JSON", TOO_DEEP),
    # Ids nested deeper than the tree walks can go (at 300 levels GET /v2/groups failed).
    ("POST", "/v2/apps", json.dumps({**KEEP, "id": DEEP_ID}).encode(), 422, "Object is not valid",
     [{"path": "/id", "errors": ["must not be more than 100 levels deep (is 300)"]}]),
    ("PUT", "/v2/groups" + DEEP_ID, b"{}", 422, "Object is not valid",
     [{"path": "/id", "errors": ["must not be more than 100 levels deep (is 300)"]}]),
]


@pytest.mark.parametrize("method,path,body,status,message,details", BAD, ids=[f"{b[0]} {b[1]} {b[3]} {i}" for i, b in enumerate(BAD)])
def test_bad_input_is_a_4xx_with_a_path_and_changes_nothing(server, method, path, body, status, message, details):
    before = dump_state(server)
    r = server.client.request(method, path, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert r.json() == {"message": message, "details": details}
    assert dump_state(server) == before


def test_a_body_over_10_mib_is_413_declared_or_chunked(server):
    before = dump_state(server)
    size = 10 * 1024 * 1024 + 1
    r = server.client.post("/v2/apps", content=b" " * size)
    assert r.status_code == 413, r.text
    assert r.json() == {"message": f"Request body too large: {size} bytes, the limit is 10485760 bytes"}

    def chunks():
        for _ in range(12):
            yield b" " * (1024 * 1024)

    r = server.client.post("/v2/apps", content=chunks())
    assert r.status_code == 413, r.text
    assert r.json()["message"].startswith("Request body too large")
    assert dump_state(server) == before
    assert server.client.get("/ping").status_code == 200


def test_headers_over_64_kib_are_431(server):
    r = server.client.get("/v2/apps", headers={"X-Big": "a" * 100_000})
    assert r.status_code == 431
    assert server.client.get("/ping").status_code == 200


def test_a_definition_too_large_to_store_is_413_naming_the_limit(server):
    before = dump_state(server)
    env = {f"E{i:06d}": os.urandom(8).hex() for i in range(100_000)}  # random: compression cannot save it
    r = server.client.post("/v2/apps", json={**KEEP, "id": "/envs", "env": env})
    assert r.status_code == 413, r.text
    message = r.json()["message"]
    assert message.startswith("Too large to store") and "(--zk_max_node_size)" in message and "1024000 bytes" in message
    r = server.client.patch("/v2/apps/keep", json={"env": env})
    assert r.status_code == 413
    assert dump_state(server) == before
    assert server.client.get("/v2/apps/keep").json()["app"]["env"] == {}


# -- memory --------------------------------------------------------------------------------


def _memory_mb(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) // 1024
    return out


def test_twenty_large_bodies_at_once_are_bounded_and_their_memory_is_given_back(tmp_path):
    with MarathonProcess(tmp_path / "m", args=AGENT) as m:
        start = _memory_mb(m.proc.pid)["VmRSS"]
        n = int(9.9 * 1024 * 1024) // 32
        env = {f"K{i:08d}": os.urandom(7).hex() for i in range(n)}  # about 9.6 MB, too large to store
        template = json.dumps({"id": "/big-{}", "cmd": "sleep 1", "env": env}).encode()
        statuses: list[int] = []

        def post(i: int) -> None:
            with httpx.Client(base_url=m.url, timeout=120) as client:
                statuses.append(client.post("/v2/apps", content=template.replace(b"{}", str(i).encode(), 1)).status_code)

        threads = [threading.Thread(target=post, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # Each is refused: too large to store (413), or shed for lack of room (503).
        assert len(statuses) == 20 and set(statuses) <= {413, 503} and 413 in statuses
        peak = _memory_mb(m.proc.pid)["VmHWM"]
        assert peak - start < 400, f"{start} MB -> peak {peak} MB"  # without a budget: over 1,100 MB
        wait_for(lambda: _memory_mb(m.proc.pid)["VmRSS"] < start + 60, timeout=30,
                 message=f"memory back near {start} MB (is {_memory_mb(m.proc.pid)})")
        assert m.client.get("/ping").status_code == 200


# -- what is stored ------------------------------------------------------------------------


def _rewrite_as_before_the_limits(data_dir, app_id: str) -> None:
    """Store `app_id` with 2**63 instances, and a deployment scaling it to as
    many, as the server did before the limits (both were accepted)."""
    from marathon.models.deployment import DeploymentAction, DeploymentPlan, DeploymentStep
    from marathon.storage.repository import ROOT_POINTER, Codec

    db = sqlite3.connect(data_dir / "state.db")
    try:
        ((key, value),) = db.execute("SELECT key, value FROM kv WHERE key LIKE ?", (f"apps/{app_id.strip('/')}/%",))
        raw = zlib.decompress(value[1:]) if value[:1] == b"\x01" else value[1:]
        app = msgspec.msgpack.decode(raw)
        app["instances"] = 2**63
        db.execute("UPDATE kv SET value = ? WHERE key = ?", (b"\x00" + msgspec.msgpack.encode(app), key))
        ((root,),) = db.execute("SELECT value FROM kv WHERE key = ?", (ROOT_POINTER,))
        version = root.decode()
        plan = DeploymentPlan(id="before-the-limits", version=version, original_version=version, target_version=version,
                              steps=[DeploymentStep(actions=[DeploymentAction(action="ScaleApplication", app=app_id, scale_to=2**63)])])
        db.execute("INSERT INTO kv (key, value, version) VALUES (?, ?, 1)", (f"deployments/{plan.id}", Codec().encode(plan)))
        db.commit()
    finally:
        db.close()


def test_a_stored_app_over_the_limit_cannot_crash_loop_the_server(tmp_path):
    m = MarathonProcess(tmp_path / "m", args=AGENT)
    m.start()
    assert m.client.post("/v2/apps", json={**KEEP, "id": "/many"}).status_code == 201
    m.wait_deployments_done()
    m.stop()
    _rewrite_as_before_the_limits(m.data_dir, "/many")

    m.args = [*AGENT, "--max_instances_per_app", "3"]
    try:
        m.start()  # starts, resumes the stored deployment with its target bounded
        assert m.client.get("/v2/apps/many").json()["app"]["instances"] == 3
        wait_for(lambda: len(m.running_tasks("/many")) == 3, timeout=60, message="3 tasks of /many")
        m.wait_deployments_done()
        assert len(m.tasks("/many")) == 3
        assert "app=/many" in m.log() and "instances=9223372036854775808 limit=3" in m.log()
        assert _memory_mb(m.proc.pid)["VmHWM"] < 300
        # Any change of it must now ask for at most the limit.
        assert m.client.patch("/v2/apps/many", json={"cmd": "sleep 999"}).status_code == 200
        assert m.client.patch("/v2/apps/many", json={"instances": 4}).status_code == 422
    finally:
        m.stop()
