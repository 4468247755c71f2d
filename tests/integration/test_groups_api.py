"""`/v2/groups` against a real server running real processes (SPEC.md 1.5, 3).

One server serves the whole module; every test works in its own top-level
group so the tests do not see each other's apps.  Refused requests are
checked to leave the store exactly as it was (state_dump.py).
"""

from __future__ import annotations

import pytest

from marathon.testing import MarathonProcess, private_port_range, wait_for

from .state_dump import dump_state


def app(app_id: str, **kw) -> dict:
    return {"id": app_id, "cmd": "sleep 1000", "cpus": 0.01, "mem": 8, **kw}


def _server(tmp_path_factory, name: str, resources: str):
    m = MarathonProcess(
        tmp_path_factory.mktemp(name),
        args=["--agent_resources", resources],
        agent_ports=private_port_range(),
    )
    m.start()
    return m


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    m = _server(tmp_path_factory, "groups", "cpus:8;mem:4096;disk:4096")
    yield m
    m.stop()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    m = _server(tmp_path_factory, "groups-small", "cpus:1;mem:1024;disk:1024")
    yield m
    m.stop()


def running_ids(m: MarathonProcess, app_id: str, n: int) -> set[str]:
    """Wait until `app_id` has exactly `n` tasks, all running; their ids."""

    def check() -> set[str] | None:
        tasks = m.tasks(app_id)
        ids = {t["id"] for t in tasks if t["state"] == "TASK_RUNNING"}
        return ids if len(tasks) == n and len(ids) == n else None

    return wait_for(check, timeout=30, message=f"{n} running tasks of {app_id}")


def tasks_of(m: MarathonProcess, app_id: str) -> list[dict]:
    return [t for t in m.client.get("/v2/tasks").json()["tasks"] if t["appId"] == app_id]


def settled(m: MarathonProcess) -> dict:
    """The store fingerprint once nothing is deploying."""
    m.wait_deployments_done(timeout=30)
    return dump_state(m)


def assert_refused(m: MarathonProcess, method: str, path: str, status: int, **kw) -> dict:
    before = settled(m)
    r = m.client.request(method, path, **kw)
    assert r.status_code == status, r.text
    assert dump_state(m) == before
    return r.json()


# -- create and read ---------------------------------------------------------------


def test_create_an_empty_group(server):
    r = server.client.post("/v2/groups", json={"id": "/empty"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"version", "deploymentId"}
    assert r.headers["Marathon-Deployment-Id"] == body["deploymentId"]
    assert r.headers["Location"].endswith("/empty")
    group = server.client.get("/v2/groups/empty").json()
    assert group == {
        "id": "/empty", "apps": [], "groups": [], "pods": [], "dependencies": [],
        "version": body["version"], "enforceRole": False,
    }
    root = server.client.get("/v2/groups").json()
    assert root["id"] == "/" and "/empty" in [g["id"] for g in root["groups"]]


def test_nested_create_with_relative_ids_dependencies_and_embeds(server):
    body = {
        "id": "store",  # relative to the URL path /shop
        "groups": [
            {"id": "db", "apps": [app("pg")]},
            {"id": "api", "dependencies": ["../db"], "apps": [app("rest", dependencies=["../db/pg"])]},
        ],
    }
    r = server.client.post("/v2/groups/shop", json=body)
    assert r.status_code == 201, r.text
    assert r.headers["Location"].endswith("/shop/store")
    running_ids(server, "/shop/store/db/pg", 1)
    running_ids(server, "/shop/store/api/rest", 1)

    full = server.client.get("/v2/groups/shop/store").json()
    assert set(full) == {"id", "apps", "groups", "pods", "dependencies", "version", "enforceRole"}
    assert [g["id"] for g in full["groups"]] == ["/shop/store/api", "/shop/store/db"]
    api = full["groups"][0]
    assert api["dependencies"] == ["/shop/store/db"]
    assert api["apps"][0]["id"] == "/shop/store/api/rest"
    assert api["apps"][0]["dependencies"] == ["/shop/store/db/pg"]
    assert "tasks" not in api["apps"][0]

    only_groups = server.client.get("/v2/groups/shop/store", params={"embed": "group.groups"}).json()
    assert set(only_groups) == {"id", "groups", "dependencies", "version", "enforceRole"}
    assert set(only_groups["groups"][0]) == {"id", "groups", "dependencies", "version", "enforceRole"}

    with_tasks = server.client.get(
        "/v2/groups/shop/store/db", params=[("embed", "group.apps"), ("embed", "group.apps.tasks")]
    ).json()
    assert set(with_tasks) == {"id", "apps", "dependencies", "version", "enforceRole"}
    (pg,) = with_tasks["apps"]
    assert len(pg["tasks"]) == 1 and pg["deployments"] == []

    apps = server.client.get("/v2/groups/shop/store/apps").json()
    assert [a["id"] for a in apps] == ["/shop/store/api/rest", "/shop/store/db/pg"]
    assert server.client.get("/v2/groups/no/such/apps").json() == []
    every = [a["id"] for a in server.client.get("/v2/groups/apps").json()]
    assert {"/shop/store/api/rest", "/shop/store/db/pg"} <= set(every) and every == sorted(every)
    r = server.client.get("/v2/groups/no/such")
    assert r.status_code == 404 and r.json() == {"message": "Group '/no/such' does not exist"}


# -- structural updates --------------------------------------------------------------


def test_update_replaces_apps_and_identical_re_put_restarts_nothing(server):
    r = server.client.put("/v2/groups/swap", json={"apps": [app("a"), app("b")]})
    assert r.status_code == 200, r.text
    a_ids = running_ids(server, "/swap/a", 1)
    running_ids(server, "/swap/b", 1)
    a_version = server.client.get("/v2/apps/swap/a").json()["app"]["version"]

    r = server.client.put("/v2/groups/swap", json={"apps": [app("a")]})
    assert r.status_code == 200, r.text
    wait_for(lambda: tasks_of(server, "/swap/b") == [], timeout=30, message="b's task to go")
    assert server.client.get("/v2/apps/swap/b").status_code == 404
    assert running_ids(server, "/swap/a", 1) == a_ids

    r = server.client.put("/v2/groups/swap", json={"id": "/swap", "apps": [app("/swap/a")]})
    assert r.status_code == 200, r.text
    assert r.json()["deploymentId"] == r.headers["Marathon-Deployment-Id"]
    server.wait_deployments_done(timeout=30)
    assert running_ids(server, "/swap/a", 1) == a_ids
    assert server.client.get("/v2/apps/swap/a").json()["app"]["version"] == a_version


def test_scale_by_multiplies_instances_and_keeps_running_tasks(server):
    server.client.put("/v2/groups/scale", json={"apps": [app("a", instances=1)], "groups": [{"id": "s", "apps": [app("b", instances=2)]}]})
    first = running_ids(server, "/scale/a", 1)
    r = server.client.put("/v2/groups/scale", json={"scaleBy": 1.5})
    assert r.status_code == 200, r.text
    assert first <= running_ids(server, "/scale/a", 2)
    running_ids(server, "/scale/s/b", 3)
    assert server.client.get("/v2/apps/scale/s/b").json()["app"]["instances"] == 3


def test_dry_run_answers_the_steps_and_changes_nothing(server):
    server.client.put("/v2/groups/dry", json={"apps": [app("old")]})
    running_ids(server, "/dry/old", 1)
    before = settled(server)
    r = server.client.put(
        "/v2/groups/dry", params={"dryRun": "true"}, json={"apps": [app("new", dependencies=["dep"]), app("dep")]}
    )
    assert r.status_code == 200, r.text
    assert "Marathon-Deployment-Id" not in r.headers
    assert r.json() == {
        "steps": [
            {"actions": [{"action": "StopApplication", "app": "/dry/old"}]},
            {"actions": [{"action": "StartApplication", "app": "/dry/dep"}, {"action": "StartApplication", "app": "/dry/new"}]},
            {"actions": [{"action": "ScaleApplication", "app": "/dry/dep"}]},
            {"actions": [{"action": "ScaleApplication", "app": "/dry/new"}]},
        ]
    }
    assert dump_state(server) == before
    assert server.client.get("/v2/deployments").json() == []


def test_rollback_to_an_older_version_and_version_lists(server):
    r = server.client.put("/v2/groups/rb", json={"apps": [app("a")]})
    v1 = r.json()["version"]
    old_ids = running_ids(server, "/rb/a", 1)
    server.client.put("/v2/groups/rb", json={"apps": [app("a", cmd="sleep 2000")]})
    wait_for(lambda: running_ids(server, "/rb/a", 1).isdisjoint(old_ids), timeout=30, message="restart")
    server.wait_deployments_done(timeout=30)

    versions = server.client.get("/v2/groups/rb/versions").json()
    assert v1 in versions and versions == sorted(versions, reverse=True)
    root_versions = server.client.get("/v2/groups/versions").json()
    assert set(versions) < set(root_versions) and root_versions == sorted(root_versions, reverse=True)
    snapshot = server.client.get(f"/v2/groups/rb/versions/{v1}").json()
    assert snapshot["id"] == "/rb" and snapshot["apps"][0]["cmd"] == "sleep 1000"
    assert server.client.get(f"/v2/groups/versions/{v1}").json()["id"] == "/"
    assert server.client.get("/v2/groups/rb/versions/2001-01-01T00:00:00.000Z").status_code == 404

    r = server.client.put("/v2/groups/rb", json={"version": v1})
    assert r.status_code == 200, r.text
    wait_for(lambda: server.client.get("/v2/apps/rb/a").json()["app"]["cmd"] == "sleep 1000", timeout=10)
    running_ids(server, "/rb/a", 1)
    server.wait_deployments_done(timeout=30)

    oldest = root_versions[-1]  # the empty root the server started with
    body = assert_refused(server, "PUT", "/v2/groups/rb", 422, json={"version": oldest})
    assert body == {"message": f"Group /rb not available in version {oldest}"}


# -- enforceRole -------------------------------------------------------------------------


def test_patch_enforce_role_top_level_only(server):
    server.client.post("/v2/groups", json={"id": "/team", "groups": [{"id": "sub"}]})
    r = server.client.patch("/v2/groups/team", json={"enforceRole": True})
    assert r.status_code == 200 and r.content == b""
    assert "Marathon-Deployment-Id" not in r.headers
    assert server.client.get("/v2/groups/team").json()["enforceRole"] is True
    # Omitted: the --new_group_enforce_role default (off).
    assert server.client.patch("/v2/groups/team", json={}).status_code == 200
    assert server.client.get("/v2/groups/team").json()["enforceRole"] is False

    body = assert_refused(server, "PATCH", "/v2/groups/team/sub", 422, json={"enforceRole": True})
    assert body == {"message": "Object is not valid", "details": [{"path": "/", "errors": ["Path needs to be top-level"]}]}
    body = assert_refused(server, "PATCH", "/v2/groups/nope", 404, json={"enforceRole": True})
    assert body == {"message": "Group '/nope' does not exist"}
    body = assert_refused(
        server, "PUT", "/v2/groups/team/sub", 422, json={"enforceRole": True}
    )
    assert body["details"] == [
        {"path": "/enforceRole", "errors": ["enforceRole can only be set for top-level groups, and /team/sub is not top-level"]}
    ]


# -- delete ------------------------------------------------------------------------------


def test_delete_group_stops_its_apps_and_unknown_is_404(server):
    server.client.put("/v2/groups/del", json={"groups": [{"id": "x", "apps": [app("a")]}], "apps": [app("b")]})
    running_ids(server, "/del/x/a", 1)
    running_ids(server, "/del/b", 1)
    r = server.client.delete("/v2/groups/del")
    assert r.status_code == 200, r.text
    assert r.headers["Marathon-Deployment-Id"] == r.json()["deploymentId"]
    wait_for(lambda: not tasks_of(server, "/del/x/a") and not tasks_of(server, "/del/b"), timeout=30, message="tasks gone")
    assert server.client.get("/v2/groups/del").status_code == 404

    body = assert_refused(server, "DELETE", "/v2/groups/del", 404)
    assert body == {"message": "Group '/del' does not exist"}


# -- refusals that change nothing ---------------------------------------------------------


def test_create_conflicts_are_409_and_change_nothing(server):
    server.client.post("/v2/groups", json={"id": "/conf", "apps": [app("app")]})
    running_ids(server, "/conf/app", 1)
    body = assert_refused(server, "POST", "/v2/groups", 409, json={"id": "/conf"})
    assert body == {"message": "Group /conf is already created. Use PUT to change this group."}
    body = assert_refused(server, "POST", "/v2/groups/conf", 409, json={"id": "app"})
    assert body == {"message": "An app with the path /conf/app already exists."}


def test_circular_dependencies_are_refused_and_change_nothing(server):
    cyclic = {"apps": [app("a", dependencies=["b"]), app("b", dependencies=["a"])]}
    body = assert_refused(server, "PUT", "/v2/groups/cyc", 422, json=cyclic)
    assert body == {"message": "Object is not valid", "details": [{"path": "/", "errors": ["Dependency graph has cyclic dependencies."]}]}
    via_groups = {"groups": [{"id": "x", "dependencies": ["../y"], "apps": [app("a")]},
                             {"id": "y", "dependencies": ["../x"], "apps": [app("b")]}]}
    assert_refused(server, "POST", "/v2/groups/cyc", 422, json=via_groups)
    assert server.client.get("/v2/groups/cyc").status_code == 404


def test_bad_bodies_are_refused_and_change_nothing(server):
    body = assert_refused(server, "PUT", "/v2/groups/bad", 422, json={"scaleBy": 2, "apps": []})
    assert body["details"] == [{"path": "/scaleBy", "errors": ["not allowed in conjunction with other properties."]}]
    body = assert_refused(server, "PUT", "/v2/groups/bad", 422, json={"apps": [{"id": "a", "cmd": 5}]})
    assert body == {"message": "Invalid JSON", "details": [{"path": "/apps(0)/cmd", "errors": ["error.expected.jsstring"]}]}
    body = assert_refused(server, "POST", "/v2/groups/bad", 422, json={"apps": [{"id": "../elsewhere", "cmd": "sleep 1"}]})
    assert body["details"] == [{"path": "/apps(0)/id", "errors": ["Identifier is not child of '/bad'"]}]
    body = assert_refused(server, "PUT", "/v2/groups/bad", 400, content=b'{"apps": [')
    assert body["message"] == "Invalid JSON" and isinstance(body["details"], str)


def test_a_group_with_a_running_deployment_is_locked_until_forced(small):
    # Five half-cpu instances on a one-cpu agent: three never fit, so the
    # deployment keeps running.
    r = small.client.put("/v2/groups/busy", json={"apps": [app("a", cpus=0.5, instances=5)]})
    first = r.json()["deploymentId"]
    wait_for(lambda: len(small.running_tasks("/busy/a")) == 2, timeout=30, message="two of five running")
    before = dump_state(small)
    r = small.client.put("/v2/groups/busy", json={"scaleBy": 0.4})
    assert r.status_code == 409, r.text
    body = r.json()
    assert body["deployments"] == [{"id": first}]
    assert body["message"].startswith("App is locked by one or more deployments.")
    assert small.client.delete("/v2/groups/busy").status_code == 409
    assert dump_state(small) == before

    r = small.client.put("/v2/groups/busy", json={"scaleBy": 0.4}, params={"force": "true"})
    assert r.status_code == 200, r.text
    small.wait_deployments_done(timeout=30)
    assert small.client.get("/v2/apps/busy/a").json()["app"]["instances"] == 2
    assert len(small.running_tasks("/busy/a")) == 2
