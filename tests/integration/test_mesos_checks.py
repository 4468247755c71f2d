"""The app's Mesos `check` (informational) run by the agent next to the
task and shown in `Task.checkResult` as Marathon shows it."""

from __future__ import annotations

import pytest

from marathon.testing import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.containers]


def _result(m, app_id: str):
    tasks = m.tasks(app_id)
    return tasks[0].get("checkResult") if tasks else None


def test_http_tcp_and_command_checks_are_reported_and_never_kill(marathon):
    c = marathon.client
    serve = "exec python3 -m http.server $PORT0 --bind 127.0.0.1"
    common = {"cpus": 0.01, "mem": 32, "portDefinitions": [{"port": 0}]}
    apps = {
        "/chk/http": {**common, "cmd": serve,
                      "check": {"http": {"portIndex": 0, "path": "/"}, "intervalSeconds": 1, "delaySeconds": 0}},
        "/chk/http404": {**common, "cmd": serve,
                         "check": {"http": {"portIndex": 0, "path": "/missing"}, "intervalSeconds": 1,
                                   "delaySeconds": 0}},
        "/chk/tcp": {**common, "cmd": "exec sleep 3600",
                     "check": {"tcp": {"portIndex": 0}, "intervalSeconds": 1, "delaySeconds": 0}},
        "/chk/exec": {**common, "cmd": "exec sleep 3600",
                      "check": {"exec": {"command": {"value": "exit 3"}}, "intervalSeconds": 1,
                                "delaySeconds": 0}},
    }
    for app_id, body in apps.items():
        r = c.post("/v2/apps", json={"id": app_id, **body})
        assert r.status_code == 201, (app_id, r.text)
    # (The first results may come before a server listens: statusCode 0.)
    expected = {"/chk/http": {"http": {"statusCode": 200}}, "/chk/http404": {"http": {"statusCode": 404}},
                "/chk/tcp": {"tcp": {"succeeded": False}}, "/chk/exec": {"command": {"exitCode": 3}}}
    for app_id, result in expected.items():
        wait_for(lambda app_id=app_id, result=result: _result(marathon, app_id) == result, timeout=120,
                 message=f"{app_id}'s check result {result}")
    # Informational: failing checks kill nothing.
    for app_id in apps:
        assert [t["state"] for t in marathon.tasks(app_id)] == ["TASK_RUNNING"]
