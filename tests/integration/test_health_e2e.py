"""Marathon-level health checks and readiness against real processes (issue 5)."""

from __future__ import annotations

import sys
from pathlib import Path

from marathon.models.timestamp import parse_ms
from marathon.testing import wait_for

HEALTHSRV = Path(__file__).parent / "apps" / "healthsrv.py"
SERVE = f"exec {sys.executable} {HEALTHSRV} $PORT0"


def sandbox(m, task_id: str) -> Path:
    return m.data_dir / "agent" / "sandboxes" / task_id


def probes(m, task_id: str, path: str = "/health") -> list[tuple[float, int]]:
    try:
        lines = (sandbox(m, task_id) / "requests.log").read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        t, p, status = line.split()
        if p.startswith(path):
            out.append((float(t), int(status)))
    return out


def health_check(**kw) -> dict:
    check = {"protocol": "HTTP", "path": "/health", "portIndex": 0, "gracePeriodSeconds": 30,
             "intervalSeconds": 1, "timeoutSeconds": 1, "maxConsecutiveFailures": 3}
    check.update(kw)
    return check


def app_of(m, app_id: str) -> dict:
    return m.client.get(f"/v2/apps{app_id}").json()["app"]


def relaunched(m, app_id: str, old_task_id: str):
    def check():
        tasks = m.running_tasks(app_id)
        return tasks[0] if tasks and tasks[0]["id"] != old_task_id else None

    return check


def test_failing_http_check_kills_after_exactly_max_failures(marathon):
    app = {"id": "/h", "cmd": SERVE, "cpus": 0.05, "mem": 32, "instances": 1, "healthChecks": [health_check()]}
    assert marathon.client.post("/v2/apps", json=app).status_code == 201
    wait_for(lambda: app_of(marathon, "/h")["tasksHealthy"] == 1, timeout=60, message="healthy")
    (task,) = marathon.tasks("/h")
    (result,) = task["healthCheckResults"]
    assert result["alive"] is True and result["consecutiveFailures"] == 0 and result["firstSuccess"]

    (sandbox(marathon, task["id"]) / "fail").touch()
    new = wait_for(relaunched(marathon, "/h", task["id"]), timeout=60, message="a relaunch")
    assert new["id"].rsplit(".", 2)[0] == task["id"].rsplit(".", 2)[0], "same instance, next incarnation"
    failed = [p for p in probes(marathon, task["id"]) if p[1] == 500]
    assert len(failed) == 4, "killed on the 4th consecutive failure with maxConsecutiveFailures 3"
    failure = app_of(marathon, "/h")["lastTaskFailure"]
    assert failure["taskId"] == task["id"] and "health check" in failure["message"]
    wait_for(lambda: app_of(marathon, "/h")["tasksHealthy"] == 1, timeout=60, message="healthy again")


def test_failures_inside_the_grace_period_are_not_counted(marathon):
    app = {
        "id": "/g", "cmd": "touch fail && " + SERVE, "cpus": 0.05, "mem": 32, "instances": 1,
        "healthChecks": [health_check(gracePeriodSeconds=4, maxConsecutiveFailures=1)],
    }
    assert marathon.client.post("/v2/apps", json=app).status_code == 201
    (task,) = wait_for(lambda: marathon.running_tasks("/g"), timeout=60, message="running")
    wait_for(relaunched(marathon, "/g", task["id"]), timeout=60, message="the unhealthy task replaced")
    started = parse_ms(task["startedAt"]) / 1000
    failed = [t for t, status in probes(marathon, task["id"]) if status == 500]
    counted = [t for t in failed if t >= started + 4]
    assert len(failed) > len(counted), "some failures fell inside the grace period"
    assert len(counted) == 2, "killed on the 2nd counted failure with maxConsecutiveFailures 1"
    kill_at = parse_ms(app_of(marathon, "/g")["lastTaskFailure"]["timestamp"]) / 1000
    assert kill_at >= started + 4


def test_tcp_check_reports_healthy(marathon):
    app = {"id": "/t", "cmd": SERVE, "cpus": 0.05, "mem": 32, "instances": 1,
           "healthChecks": [{"protocol": "TCP", "portIndex": 0, "intervalSeconds": 1, "timeoutSeconds": 1}]}
    assert marathon.client.post("/v2/apps", json=app).status_code == 201
    wait_for(lambda: app_of(marathon, "/t")["tasksHealthy"] == 1, timeout=60, message="healthy by TCP")
    assert marathon.tasks("/t")[0]["healthCheckResults"][0]["alive"] is True
    assert marathon.client.get("/v2/apps/t/tasks").json()["tasks"][0]["healthCheckResults"]


def test_health_and_readiness_gate_a_rolling_upgrade(marathon):
    ready_check = {"name": "ready", "portName": "http", "path": "/ready", "intervalSeconds": 2, "timeoutSeconds": 1}
    app = {
        "id": "/up", "cmd": "touch ready && " + SERVE, "cpus": 0.05, "mem": 32, "instances": 2,
        "portDefinitions": [{"port": 0, "name": "http"}],
        "healthChecks": [health_check()],
        "readinessChecks": [ready_check],
        "upgradeStrategy": {"minimumHealthCapacity": 1.0, "maximumOverCapacity": 0.0},
    }
    assert marathon.client.post("/v2/apps", json=app).status_code == 201
    marathon.wait_deployments_done(timeout=90)
    old = {t["id"] for t in marathon.tasks("/up")}

    # v2 tasks do not create `ready` themselves: each waits for us.
    assert marathon.client.put("/v2/apps/up", json={"cmd": SERVE}).status_code == 200
    replaced: set[str] = set()
    for round_ in range(2):
        def new_task_waiting():
            tasks = marathon.tasks("/up")
            healthy = [t for t in tasks if t["healthCheckResults"] and t["healthCheckResults"][0]["alive"]]
            assert len(healthy) >= 2, "never fewer than 2 healthy tasks during the upgrade"
            fresh = [t for t in tasks if t["id"] not in old and t["id"] not in replaced and t in healthy]
            return fresh[0] if fresh else None

        fresh = wait_for(new_task_waiting, timeout=60, message="a new healthy task waiting for readiness")

        def readiness_result(task_id: str = fresh["id"]) -> list[dict]:
            results = marathon.deployments()[0]["currentActions"][0]["readinessCheckResults"]
            return [r for r in results if r["taskId"] == task_id]

        (result,) = wait_for(readiness_result, timeout=30, message="the new task's readiness result")
        assert result["ready"] is False and result["name"] == "ready"
        still_old = old & {t["id"] for t in marathon.tasks("/up")}
        assert len(still_old) == len(old) - round_, "an old task stops only after a new one is ready"
        (sandbox(marathon, fresh["id"]) / "ready").touch()
        replaced.add(fresh["id"])
        old_left = len(old) - len(replaced)
        wait_for(lambda n=old_left: len(old & {t["id"] for t in marathon.tasks("/up")}) <= n, timeout=60, message="one old task stopped")
    marathon.wait_deployments_done(timeout=60)
    assert {t["id"] for t in marathon.tasks("/up")} == replaced


def test_command_check_run_by_the_agent(marathon):
    app = {"id": "/cmd", "cmd": "touch ok && exec sleep 1000", "cpus": 0.01, "mem": 8, "instances": 1,
           "healthChecks": [{"protocol": "COMMAND", "command": {"value": "test -f $MESOS_SANDBOX/ok"},
                             "intervalSeconds": 1, "timeoutSeconds": 2, "delaySeconds": 0,
                             # Failures before the first success are forgiven for 10 s: a
                             # relaunch on a loaded machine may be probed before `touch` ran.
                             "gracePeriodSeconds": 10, "maxConsecutiveFailures": 2}]}
    assert marathon.client.post("/v2/apps", json=app).status_code == 201
    wait_for(lambda: app_of(marathon, "/cmd")["tasksHealthy"] == 1, timeout=60, message="healthy by command")
    (task,) = marathon.tasks("/cmd")
    assert task["healthCheckResults"][0]["alive"] is True
    marathon.wait_deployments_done()

    (sandbox(marathon, task["id"]) / "ok").unlink()
    wait_for(lambda: app_of(marathon, "/cmd")["tasksUnhealthy"] == 1 or relaunched(marathon, "/cmd", task["id"])(),
             timeout=60, message="reported unhealthy")
    new = wait_for(relaunched(marathon, "/cmd", task["id"]), timeout=60, message="killed by the agent and relaunched")
    assert new["id"].endswith("._app.2")
    failure = app_of(marathon, "/cmd")["lastTaskFailure"]
    assert failure["taskId"] == task["id"] and failure["state"] == "TASK_KILLED"
    wait_for(lambda: app_of(marathon, "/cmd")["tasksHealthy"] == 1, timeout=60, message="healthy again")
