"""Issue 2's acceptance, end to end: a real server runs real processes.

Every test starts its own `marathon serve` (tests/integration/conftest.py)
with a private data directory and host-port range, and stops it by PID.
"""

from __future__ import annotations

import os
import signal

import httpx

from marathon.agent.checkpoint import Checkpoint
from marathon.testing import pid_alive, wait_for

from .conftest import descendants, pids_matching

WEB = {
    "id": "/web",
    "cmd": "python3 -m http.server $PORT0 --bind 127.0.0.1",
    "cpus": 0.1,
    "mem": 32,
    "instances": 2,
}


def serves_http(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_running(m, app_id: str, n: int, timeout: float = 60) -> list[dict]:
    """Exactly `n` tasks, all running."""

    def check() -> list[dict] | None:
        tasks = m.tasks(app_id)
        running = [t for t in tasks if t["state"] == "TASK_RUNNING"]
        return running if len(tasks) == n and len(running) == n else None

    return wait_for(check, timeout=timeout, message=f"{n} running tasks of {app_id}")


def task_pid(port: int) -> int:
    """The one process serving `port` (python3 may pass through pyenv's shim first)."""

    def single() -> int | None:
        pids = pids_matching(f"http.server {port} ")
        return pids.pop() if len(pids) == 1 and serves_http(port) else None

    return wait_for(single, timeout=30, message=f"one process serving {port}")


def test_post_scale_delete_runs_real_http_servers(marathon):
    r = marathon.client.post("/v2/apps", json=WEB)
    assert r.status_code == 201, r.text
    deployment_id = r.headers["Marathon-Deployment-Id"]
    assert r.headers["Location"].endswith("/web")
    body = r.json()
    assert body["id"] == "/web" and body["instances"] == 2
    assert body["deployments"] == [{"id": deployment_id}]
    assert (body["tasksRunning"], body["tasksStaged"]) == (0, 0)

    tasks = wait_running(marathon, "/web", 2)
    for t in tasks:
        assert t["host"] == "127.0.0.1" and len(t["ports"]) == 1
        assert t["ipAddresses"] == [{"ipAddress": "127.0.0.1", "protocol": "IPv4"}]
        wait_for(lambda p=t["ports"][0]: serves_http(p), timeout=30, message="task to serve HTTP")
    first_ids = {t["id"] for t in tasks}

    r = marathon.client.put("/v2/apps/web", json={"instances": 5})
    assert r.status_code == 200, r.text
    assert r.json()["deploymentId"] == r.headers["Marathon-Deployment-Id"]
    tasks = wait_running(marathon, "/web", 5)
    assert first_ids <= {t["id"] for t in tasks}, "scaling up must not restart running tasks"
    for t in tasks:
        wait_for(lambda p=t["ports"][0]: serves_http(p), timeout=30, message="task to serve HTTP")
    marathon.wait_deployments_done()
    app = marathon.client.get("/v2/apps/web").json()["app"]
    assert app["tasksRunning"] == 5 and len(app["tasks"]) == 5

    task_pids = {task_pid(t["ports"][0]) for t in tasks}
    assert task_pids <= descendants(marathon.proc.pid)
    r = marathon.client.delete("/v2/apps/web")
    assert r.status_code == 200, r.text
    wait_for(lambda: marathon.client.get("/v2/apps/web").status_code == 404, message="app gone")
    marathon.wait_deployments_done()
    wait_for(lambda: not any(pid_alive(p) for p in task_pids), timeout=30, message="task processes to exit")
    assert marathon.client.get("/v2/tasks").json() == {"tasks": []}


def test_process_killed_from_outside_is_reported_and_relaunched(marathon):
    app = dict(WEB, id="/crashy", instances=1)
    assert marathon.client.post("/v2/apps", json=app).status_code == 201
    (task,) = wait_running(marathon, "/crashy", 1)
    assert task["id"].endswith("._app.1")
    os.kill(task_pid(task["ports"][0]), signal.SIGKILL)

    def relaunched():
        ts = marathon.running_tasks("/crashy")
        return ts if ts and ts[0]["id"] != task["id"] else None

    (new_task,) = wait_for(relaunched, timeout=60, message="a relaunched task")
    instance_of = lambda tid: tid.rsplit(".", 2)[0]  # noqa: E731
    assert instance_of(new_task["id"]) == instance_of(task["id"]), "same instance, next incarnation"
    assert new_task["id"].endswith("._app.2")
    failure = marathon.client.get("/v2/apps/crashy").json()["app"]["lastTaskFailure"]
    assert failure["taskId"] == task["id"]
    assert failure["state"] == "TASK_FAILED"
    assert failure["appId"] == "/crashy"
    assert "signal" in failure["message"].lower() or "status" in failure["message"].lower()


def test_restart_keeps_apps_and_versions_and_runs_instances_again(marathon):
    assert marathon.client.post("/v2/apps", json=WEB).status_code == 201
    wait_running(marathon, "/web", 2)
    marathon.wait_deployments_done()
    r = marathon.client.put("/v2/apps/web", json={"cmd": WEB["cmd"] + " --directory /tmp"})
    assert r.status_code == 200
    wait_running(marathon, "/web", 2)
    marathon.wait_deployments_done()
    before_app = marathon.client.get("/v2/apps/web").json()["app"]
    versions = marathon.client.get("/v2/apps/web/versions").json()["versions"]
    assert len(versions) == 2

    marathon.stop()
    marathon.start()
    after_app = marathon.client.get("/v2/apps/web").json()["app"]
    assert after_app["version"] == before_app["version"]
    assert after_app["cmd"] == before_app["cmd"]
    assert after_app["versionInfo"] == before_app["versionInfo"]
    assert marathon.client.get("/v2/apps/web/versions").json()["versions"] == versions
    old = marathon.client.get(f"/v2/apps/web/versions/{versions[-1]}").json()
    assert old["cmd"] == WEB["cmd"]
    for t in wait_running(marathon, "/web", 2):
        wait_for(lambda p=t["ports"][0]: serves_http(p), timeout=30, message="task to serve HTTP")


def test_kill_9_and_restart_readopts_tasks_without_duplicates(marathon):
    assert marathon.client.post("/v2/apps", json=WEB).status_code == 201
    tasks = wait_running(marathon, "/web", 2)
    marathon.wait_deployments_done()
    pids = {t["id"]: task_pid(t["ports"][0]) for t in tasks}

    marathon.kill()
    assert all(pid_alive(p) for p in pids.values()), "a crash of the server must not kill its tasks"
    marathon.start()
    again = wait_running(marathon, "/web", 2)
    assert {t["id"] for t in again} == set(pids), "the same tasks, re-adopted"
    assert all(pid_alive(p) for p in pids.values())
    for t in again:
        assert pids_matching(f"http.server {t['ports'][0]} ") == {pids[t["id"]]}, "no duplicate process"

    assert marathon.client.delete("/v2/apps/web").status_code == 200
    wait_for(lambda: not any(pid_alive(p) for p in pids.values()), timeout=30, message="re-adopted tasks killed")


def test_reconciliation_restores_a_task_lost_behind_marathons_back(marathon):
    """The task's process dies and the agent forgets it (its checkpoint is gone,
    as after a machine reset): reconciliation finds the task unknown and
    relaunches it exactly once."""
    app = dict(WEB, id="/lost", instances=2)
    assert marathon.client.post("/v2/apps", json=app).status_code == 201
    tasks = wait_running(marathon, "/lost", 2)
    marathon.wait_deployments_done()
    victim, survivor = tasks
    victim_pid = task_pid(victim["ports"][0])

    marathon.kill()
    os.kill(victim_pid, signal.SIGKILL)
    journal = Checkpoint(marathon.data_dir / "agent" / "checkpoint")
    journal.delete_many([victim["id"]])
    journal.close()
    marathon.start()

    def restored() -> list[dict] | None:
        ts = marathon.running_tasks("/lost")
        return ts if len(ts) == 2 and victim["id"] not in {t["id"] for t in ts} else None

    again = wait_for(restored, timeout=60, message="the lost task relaunched")
    ids = {t["id"] for t in again}
    assert survivor["id"] in ids, "the surviving task was re-adopted, not replaced"
    (new,) = ids - {survivor["id"]}
    assert new == victim["id"].rsplit(".", 1)[0] + ".2", "the same instance, relaunched once"
    failure = marathon.client.get("/v2/apps/lost").json()["app"]["lastTaskFailure"]
    assert failure["taskId"] == victim["id"] and "unknown" in failure["message"].lower()
    # Exactly the target: one process serves each task, no duplicates.
    assert len({task_pid(t["ports"][0]) for t in again}) == 2
    assert len(marathon.tasks("/lost")) == 2
