"""Deployments against a real server with real processes (issue 4)."""

from __future__ import annotations

import pytest

from marathon.testing import wait_for

from .conftest import pids_matching
from .state_dump import dump_state

SMALL = ["--agent_resources", "cpus:1;mem:1024;disk:1024"]
# Three instances of half a cpu on a one-cpu agent: the third never fits, so
# the deployment stays running until someone intervenes.
STUCK = {"id": "/stuck", "cmd": "sleep 1000", "cpus": 0.5, "mem": 16, "instances": 3}


@pytest.fixture
def small(marathon_factory):
    return marathon_factory("small", args=SMALL).start()


def deployment_ids(m) -> list[str]:
    return [d["id"] for d in m.deployments()]


def running_count(m, app_id: str) -> int:
    return len(m.running_tasks(app_id))


def test_locked_app_gets_409_and_store_unchanged_then_force_wins(small):
    r = small.client.post("/v2/apps", json=STUCK)
    first = r.headers["Marathon-Deployment-Id"]
    wait_for(lambda: running_count(small, "/stuck") == 2, message="two of three running")
    assert deployment_ids(small) == [first]

    before = dump_state(small)
    r = small.client.put("/v2/apps/stuck", json={"instances": 2})
    assert r.status_code == 409
    body = r.json()
    assert body["deployments"] == [{"id": first}]
    assert body["message"].startswith("App is locked by one or more deployments.")
    assert dump_state(small) == before

    r = small.client.put("/v2/apps/stuck", json={"instances": 2}, params={"force": "true"})
    assert r.status_code == 200
    second = r.json()["deploymentId"]
    small.wait_deployments_done()
    assert first != second
    assert small.client.get("/v2/apps/stuck").json()["app"]["instances"] == 2
    assert running_count(small, "/stuck") == 2


def test_delete_deployment_rolls_back_a_new_app(small):
    r = small.client.post("/v2/apps", json=STUCK)
    first = r.headers["Marathon-Deployment-Id"]
    wait_for(lambda: running_count(small, "/stuck") == 2, message="two running")
    r = small.client.delete(f"/v2/deployments/{first}")
    assert r.status_code == 200
    rollback = r.json()["deploymentId"]
    assert rollback != first and r.headers["Marathon-Deployment-Id"] == rollback
    small.wait_deployments_done()
    assert small.client.get("/v2/apps/stuck").status_code == 404
    assert small.client.get("/v2/tasks").json()["tasks"] == []


def test_forced_delete_stops_the_deployment_and_keeps_the_app(small):
    first = small.client.post("/v2/apps", json=STUCK).headers["Marathon-Deployment-Id"]
    wait_for(lambda: running_count(small, "/stuck") == 2, message="two running")
    r = small.client.delete(f"/v2/deployments/{first}", params={"force": "true"})
    assert r.status_code == 202 and r.content == b""
    assert small.deployments() == []
    app = small.client.get("/v2/apps/stuck").json()["app"]
    assert app["instances"] == 3 and app["tasksRunning"] == 2
    assert small.client.delete("/v2/deployments/no-such-id").status_code == 404


def test_scale_only_put_restarts_nothing(marathon):
    marathon.client.post("/v2/apps", json={"id": "/s", "cmd": "sleep 1000", "cpus": 0.01, "mem": 8, "instances": 2})
    marathon.wait_deployments_done()
    before = marathon.client.get("/v2/apps/s").json()["app"]
    ids = {t["id"] for t in marathon.tasks("/s")}
    r = marathon.client.put("/v2/apps/s", json={"instances": 3})
    assert r.status_code == 200
    marathon.wait_deployments_done()
    after = marathon.client.get("/v2/apps/s").json()["app"]
    assert ids <= {t["id"] for t in after["tasks"]} and len(after["tasks"]) == 3
    assert after["versionInfo"]["lastConfigChangeAt"] == before["versionInfo"]["lastConfigChangeAt"]
    assert after["versionInfo"]["lastScalingAt"] != before["versionInfo"]["lastScalingAt"]
    # An identical re-PUT is an empty plan, but still a deployment id.
    r = marathon.client.put("/v2/apps/s", json={"instances": 3})
    assert r.status_code == 200 and r.json()["deploymentId"]
    marathon.wait_deployments_done()
    assert marathon.client.get("/v2/apps/s").json()["app"]["version"] == after["version"]


def queue_entry(m, app_id: str) -> dict | None:
    for entry in m.client.get("/v2/queue").json()["queue"]:
        if entry["app"]["id"] == app_id:
            return entry
    return None


def incarnation(m, app_id: str) -> int:
    failure = m.client.get(f"/v2/apps{app_id}").json()["app"].get("lastTaskFailure")
    return int(failure["taskId"].rsplit(".", 1)[1]) if failure else 0


def test_crash_loop_backs_off_and_resets(marathon):
    app = {"id": "/crash", "cmd": "exit 1", "cpus": 0.01, "mem": 8, "instances": 1,
           "backoffSeconds": 1, "backoffFactor": 2, "maxLaunchDelaySeconds": 3600}
    assert marathon.client.post("/v2/apps", json=app).status_code == 201
    # After a few failures the delay has grown to several seconds ...
    entry = wait_for(
        lambda: (e := queue_entry(marathon, "/crash")) and e["delay"]["timeLeftSeconds"] >= 4 and e,
        timeout=60, message="the launch delay to grow",
    )
    assert entry["delay"]["overdue"] is False and entry["count"] == 1
    # ... so the app has failed a handful of times, not hundreds.
    assert incarnation(marathon, "/crash") <= 5
    failure = marathon.client.get("/v2/apps/crash").json()["app"]["lastTaskFailure"]
    assert failure["state"] == "TASK_FAILED" and "status 1" in failure["message"]

    # Resetting the delay launches again at once.
    before = incarnation(marathon, "/crash")
    assert marathon.client.delete("/v2/queue/crash/delay").status_code == 204
    wait_for(lambda: incarnation(marathon, "/crash") > before, timeout=10, message="a relaunch right after the reset")

    # A config change starts without delay; scaling keeps the delay.
    wait_for(lambda: (e := queue_entry(marathon, "/crash")) and e["delay"]["timeLeftSeconds"] >= 1, timeout=30, message="delay again")
    marathon.client.put("/v2/apps/crash", json={"cmd": "exit 2"}, params={"force": "true"})
    entry = wait_for(lambda: queue_entry(marathon, "/crash"), timeout=30, message="queue entry")
    assert entry["delay"]["timeLeftSeconds"] <= 1
    assert marathon.client.delete("/v2/queue/nothing/delay").status_code == 404


SLOW_WEB = (
    "sleep 1 && exec python3 -m http.server $PORT0 --bind 127.0.0.1 --directory $MESOS_SANDBOX"
)


def test_deployment_resumes_after_kill_9(marathon_factory):
    m = marathon_factory("resume").start()
    app = {
        "id": "/roll", "cmd": SLOW_WEB, "cpus": 0.05, "mem": 32, "instances": 4,
        "portDefinitions": [{"port": 0, "name": "http"}],
        "upgradeStrategy": {"minimumHealthCapacity": 1.0, "maximumOverCapacity": 0.0},
        "readinessChecks": [{"name": "ready", "portName": "http", "path": "/", "intervalSeconds": 2, "timeoutSeconds": 1}],
    }
    assert m.client.post("/v2/apps", json=app).status_code == 201
    m.wait_deployments_done(timeout=120)
    marker = str(m.data_dir / "agent" / "sandboxes")
    assert len(pids_matching(marker)) == 4

    assert m.client.put("/v2/apps/roll", json={"env": {"VERSION": "2"}}).status_code == 200
    new_version = None

    def one_replaced() -> bool:
        nonlocal new_version
        new_version = m.client.get("/v2/apps/roll").json()["app"]["version"]
        tasks = m.running_tasks("/roll")
        return sum(1 for t in tasks if t["version"] == new_version) >= 1 and bool(m.deployments())

    wait_for(one_replaced, timeout=120, message="the first new instance")
    m.kill()
    m.start()
    m.wait_deployments_done(timeout=180)
    tasks = m.tasks("/roll")
    assert len(tasks) == 4
    assert all(t["state"] == "TASK_RUNNING" and t["version"] == new_version for t in tasks)
    assert len({t["id"].rsplit(".", 2)[0] for t in tasks}) == 4, "no duplicate instance"
    wait_for(lambda: len(pids_matching(marker)) == 4, timeout=30, message="exactly four task processes")
