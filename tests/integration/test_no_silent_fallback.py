"""A definition asking for what the agent cannot give is accepted, and fails
its launch with a reason; its command never runs on the host.

Counted with `ps` (every process of the machine), not only through the API:
before this was fixed, a DOCKER app's `cmd` ran on the host's Debian, a
`fetch` downloaded nothing, volumes and secrets were silently absent.
"""

from __future__ import annotations

import random
import subprocess

import pytest

from marathon.testing import wait_for

pytestmark = pytest.mark.integration


def ps_count(marker: str) -> int:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return sum(1 for line in out.splitlines() if marker in line and "ps -eo" not in line)


def _marker() -> str:
    # `sleep 3600.<n>`: a command line no other process on the machine has.
    return f"3600.{random.randrange(10**8, 10**9)}"


def _apps(marker: str) -> dict[str, tuple[dict, str]]:
    """app id -> (definition, what its failure message must name)."""
    cmd = f"cat /etc/os-release; sleep {marker}"
    base = {"cmd": cmd, "cpus": 0.01, "mem": 8, "instances": 1, "backoffSeconds": 1,
            "backoffFactor": 1.0}
    return {
        # Images are pulled for real now (tests/integration/test_containers.py):
        # from a registry that is not there, the pull fails and nothing runs.
        "/docker": ({**base, "container": {"type": "DOCKER", "docker": {"image": "127.0.0.1:9/alpine"}}},
                    "Failed to pull image '127.0.0.1:9/alpine'"),
        "/mesos-image": ({**base, "container": {"type": "MESOS", "docker": {"image": "127.0.0.1:9/busybox:1.36"}}},
                         "Failed to pull image '127.0.0.1:9/busybox:1.36'"),
        # Fetched for real now: the fetch itself fails, and nothing runs.
        "/fetch": ({**base, "fetch": [{"uri": "http://127.0.0.1:9/nothing-here.tgz"}]},
                   "Failed to fetch 'http://127.0.0.1:9/nothing-here.tgz': ConnectError"),
        "/uris": ({**base, "uris": ["file:///nonexistent/artifact.tgz"]},
                  "Failed to fetch 'file:///nonexistent/artifact.tgz': No such file or directory"),
        "/host-volume": ({**base, "container": {"type": "MESOS", "volumes": [
            {"containerPath": "/data", "hostPath": "/var/tmp", "mode": "RO"}]}}, "host volume '/var/tmp'"),
        "/stateful/persistent": ({**base, "role": "stateful", "container": {"type": "MESOS", "volumes": [
            {"containerPath": "data", "mode": "RW", "persistent": {"size": 10}}]}}, "persistent volume"),
        "/secret-volume": ({**base, "secrets": {"pw": {"source": "/db/password"}},
                            "container": {"type": "MESOS", "volumes": [
                                {"containerPath": "pw", "secret": "pw"}]}}, "secret volume of 'pw'"),
        "/secret-env": ({**base, "secrets": {"pw": {"source": "/db/password"}},
                         "env": {"DB_PASSWORD": {"secret": "pw"}}}, "DB_PASSWORD"),
        "/network": ({**base, "networks": [{"mode": "container", "name": "dcos"}],
                      "container": {"type": "MESOS"}}, "container network 'dcos'"),
    }


def test_what_the_agent_cannot_provide_fails_the_launch_and_never_runs_on_the_host(marathon_factory):
    m = marathon_factory(args=["--enable_features", "secrets"]).start()
    marker = _marker()
    apps = _apps(marker)
    for app_id, (definition, _) in apps.items():
        r = m.client.post("/v2/apps", json={"id": app_id, **definition})
        assert r.status_code == 201, (app_id, r.text)

    def failures() -> dict[str, str] | None:
        out = {}
        for app_id in apps:
            app = m.client.get(f"/v2/apps{app_id}").json()["app"]
            failure = app.get("lastTaskFailure")
            if failure is None:
                return None
            out[app_id] = failure
        return out

    seen = wait_for(failures, timeout=60, message="every app's launch to fail")
    for app_id, (_, named) in apps.items():
        failure = seen[app_id]
        assert failure["state"] == "TASK_FAILED", (app_id, failure)
        if not named.startswith(("Failed to fetch", "Failed to pull")):
            assert failure["message"].startswith("Cannot launch the task: it asks for"), (app_id, failure)
        assert named in failure["message"], (app_id, failure["message"])
    # Each kept failing with backoff, and not once did its command run.
    assert ps_count(marker) == 0
    assert "Debian" not in m.log()
    queue = m.client.get("/v2/queue").json()["queue"]
    queued = {item["app"]["id"]: item for item in queue}
    assert set(queued) == set(apps), "every app waits to be launched again"
    for app_id, (_, named) in apps.items():
        assert named in queued[app_id]["app"]["lastTaskFailure"]["message"]
    # The definitions stay as they were accepted.
    assert m.client.get("/v2/apps/stateful/persistent").json()["app"]["residency"]
    docker = m.client.get("/v2/apps/docker").json()["app"]
    assert docker["container"]["docker"]["image"] == "127.0.0.1:9/alpine"
    assert ps_count(marker) == 0


def test_a_plain_app_next_to_them_runs(marathon):
    marker = _marker()
    r = marathon.client.post("/v2/apps", json={
        "id": "/plain", "cmd": f"sleep {marker}", "cpus": 0.01, "mem": 8,
        "container": {"type": "MESOS", "volumes": []}})
    assert r.status_code == 201
    wait_for(lambda: ps_count(marker) == 1, timeout=30, message="the plain MESOS app to run")
    assert "lastTaskFailure" not in marathon.client.get("/v2/apps/plain").json()["app"]
