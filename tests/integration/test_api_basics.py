"""The read side of the API and the system endpoints, against a real server."""

from __future__ import annotations

import pytest

from marathon.testing import MarathonProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    m = MarathonProcess(tmp_path_factory.mktemp("basics"), args=["--agent_resources", "cpus:4;mem:1024;disk:1024"])
    m.start()
    for app in (
        {"id": "/prod/web", "cmd": "sleep 1000", "cpus": 0.01, "mem": 8, "instances": 0, "labels": {"tier": "web", "env": "prod"}},
        {"id": "/prod/db", "cmd": "sleep 2000", "cpus": 0.01, "mem": 8, "instances": 0, "labels": {"tier": "db", "env": "prod"}},
        {"id": "/dev/web", "args": ["sleep", "3000"], "cpus": 0.01, "mem": 8, "instances": 0, "labels": {"tier": "web"}},
    ):
        r = m.client.post("/v2/apps", json=app)
        assert r.status_code == 201, r.text
    m.wait_deployments_done()
    yield m
    m.stop()


def ids(resp) -> list[str]:
    return [a["id"] for a in resp.json()["apps"]]


def test_list_apps_with_filters(server):
    c = server.client
    assert ids(c.get("/v2/apps")) == ["/dev/web", "/prod/db", "/prod/web"]
    assert ids(c.get("/v2/apps", params={"id": "PROD"})) == ["/prod/db", "/prod/web"]
    assert ids(c.get("/v2/apps", params={"cmd": "sleep 2"})) == ["/prod/db"]
    assert ids(c.get("/v2/apps", params={"label": "tier==web,env"})) == ["/prod/web"]
    assert ids(c.get("/v2/apps", params={"label": "tier in (db, web)"})) == ["/dev/web", "/prod/db", "/prod/web"]


def test_list_always_embeds_counts_and_deployments(server):
    app = server.client.get("/v2/apps").json()["apps"][0]
    for key in ("tasksStaged", "tasksRunning", "tasksHealthy", "tasksUnhealthy", "deployments"):
        assert key in app
    assert "tasks" not in app
    app = server.client.get("/v2/apps", params={"embed": "apps.tasks"}).json()["apps"][0]
    assert app["tasks"] == []


def test_canonical_app_json_has_marathon_defaults(server):
    app = server.client.get("/v2/apps/prod/web").json()["app"]
    assert app["portDefinitions"] == [{"port": 10000, "protocol": "tcp", "name": "default"}]
    assert app["networks"] == [{"mode": "host"}]
    assert app["upgradeStrategy"] == {"minimumHealthCapacity": 1.0, "maximumOverCapacity": 1.0}
    assert app["unreachableStrategy"] == {"inactiveAfterSeconds": 0, "expungeAfterSeconds": 0}
    assert app["killSelection"] == "YOUNGEST_FIRST" and app["role"] == "*"
    assert app["backoffSeconds"] == 1 and app["backoffFactor"] == 1.15 and app["maxLaunchDelaySeconds"] == 300
    assert app["versionInfo"]["lastConfigChangeAt"] == app["version"]
    assert app["version"].endswith("Z") and len(app["version"]) == 24
    for absent in ("ports", "uris", "ipAddress"):
        assert absent not in app


def test_group_listing_with_star(server):
    r = server.client.get("/v2/apps/prod/*")
    assert r.status_code == 200
    assert [a["id"] for a in r.json()["*"]] == ["/prod/db", "/prod/web"]


def test_versions(server):
    versions = server.client.get("/v2/apps/prod/web/versions").json()["versions"]
    assert len(versions) == 1
    app = server.client.get(f"/v2/apps/prod/web/versions/{versions[0]}").json()
    assert app["id"] == "/prod/web" and "tasksRunning" not in app
    assert server.client.get("/v2/apps/prod/web/versions/2001-01-01T00:00:00.000Z").status_code == 404


def test_ping_negotiates(server):
    c = server.client
    r = c.get("/ping")
    assert r.status_code == 200 and r.text == "pong" and r.headers["content-type"].startswith("text/plain")
    r = c.get("/ping", headers={"Accept": "application/json"})
    assert r.json() == "pong"
    assert c.get("/ping", headers={"Accept": "image/png"}).status_code == 204


def test_info_and_leader(server):
    info = server.client.get("/v2/info").json()
    assert info["name"] == "marathon" and info["elected"] is True
    assert info["leader"] == f"127.0.0.1:{server.port}"
    assert info["http_config"]["http_port"] == server.port
    config = info["marathon_config"]
    assert (config["launch_token"], config["launch_token_refresh_interval"]) == (100, 30000)
    assert server.client.get("/v2/leader").json() == {"leader": f"127.0.0.1:{server.port}"}


def test_root_redirects_to_ui(server):
    r = server.client.get("/", follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == "/ui/"


def test_marathon_headers_on_every_response(server):
    r = server.client.get("/v2/apps")
    assert r.headers["x-marathon-leader"] == f"http://127.0.0.1:{server.port}"
    assert r.headers["cache-control"] == "no-cache, no-store, must-revalidate"
    assert r.headers["x-frame-options"] == "DENY"


def test_openapi_document_lists_every_route(server):
    doc = server.client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    for path in ("/v2/apps", "/v2/apps/{app_id}", "/v2/apps/{app_id}/tasks", "/v2/tasks", "/v2/deployments", "/v2/info"):
        assert path in doc["paths"], path
    assert "AppDefinition" in doc["components"]["schemas"]
    post = doc["paths"]["/v2/apps"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/AppDefinition")


def test_tasks_endpoint_empty_and_status_filter(server):
    assert server.client.get("/v2/tasks").json() == {"tasks": []}
    assert server.client.get("/v2/tasks", params={"status": "running"}).json() == {"tasks": []}
