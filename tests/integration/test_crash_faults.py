"""kill -9 of `marathon serve` at the worst moments, counted with `ps`.

Each scenario is a fault the harness found: the server killed during a
scale-down (the tasks to be killed kept running forever), and during a
launch burst (the interrupted launches were charged to the app's backoff).
What is counted is what runs on the machine, not only what the API says.
"""

from __future__ import annotations

import errno
import os
import random
import subprocess
import time

import pytest

from marathon.cli._exits import EXIT_STORAGE
from marathon.testing import wait_for

pytestmark = pytest.mark.integration

RESOURCES = ["--agent_resources", "cpus:16;mem:8192;disk:4096"]


def ps_count(marker: str) -> int:
    out = subprocess.run(["ps", "-eo", "stat=,args="], capture_output=True, text=True, check=True).stdout
    return sum(1 for line in out.splitlines()
               if marker in line and not line.startswith("Z") and "ps -eo" not in line)


def sleeper(app_id: str, instances: int) -> tuple[dict, str]:
    marker = f"3600.{random.randrange(10**8, 10**9)}"
    return {"id": app_id, "cmd": f"sleep {marker}", "cpus": 0.01, "mem": 8, "instances": instances,
            "portDefinitions": [], "backoffSeconds": 5, "backoffFactor": 2.0,
            "maxLaunchDelaySeconds": 300}, marker


def settled(m, app_id: str, count: int, marker: str) -> bool:
    """`count` processes run, the API agrees, and no deployment is left."""
    if ps_count(marker) != count or m.deployments():
        return False
    tasks = m.tasks(app_id)
    return len(tasks) == count and all(t["state"] == "TASK_RUNNING" for t in tasks)


@pytest.mark.parametrize("delay_ms", [10, 30, 50])
def test_kill_9_during_a_scale_down_still_kills_the_surplus(marathon_factory, delay_ms):
    m = marathon_factory(args=RESOURCES).start()
    app, marker = sleeper("/shrink", 300)
    assert m.client.post("/v2/apps", json=app).status_code == 201
    wait_for(lambda: settled(m, "/shrink", 300, marker), timeout=120, message="300 tasks running")

    r = m.client.put("/v2/apps/shrink", json={"instances": 100})
    assert r.status_code == 200
    time.sleep(delay_ms / 1000)  # the fault's timing is the scenario, not synchronisation
    m.kill()
    m.start()

    wait_for(lambda: settled(m, "/shrink", 100, marker), timeout=120,
             message="exactly 100 processes and the scale-down finished")
    assert m.client.delete("/v2/apps/shrink").status_code == 200
    wait_for(lambda: ps_count(marker) == 0 and not m.deployments(), timeout=120,
             message="every process of the deleted app stopped")


def test_kill_9_during_a_launch_burst_is_not_charged_to_the_app(marathon_factory):
    m = marathon_factory(args=RESOURCES).start()
    app, marker = sleeper("/burst", 300)
    assert m.client.post("/v2/apps", json=app).status_code == 201
    wait_for(lambda: ps_count(marker) >= 20, timeout=60, interval=0.002, message="the burst to start")
    m.kill()
    m.start()
    # With backoffSeconds 5 and factor 2, one charged failure already holds
    # the launches back for 5 s, and a dozen for the 300 s maximum.
    wait_for(lambda: settled(m, "/burst", 300, marker), timeout=120, message="all 300 running")
    queue = m.client.get("/v2/queue").json()["queue"]
    assert queue == []
    # The launch delay was never raised: a new instance starts at once.
    assert m.client.put("/v2/apps/burst", json={"instances": 301}).status_code == 200
    wait_for(lambda: settled(m, "/burst", 301, marker), timeout=4, message="a scale-up without backoff")
    assert "launch delayed app=/burst" not in m.log()


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs of our own, so that filling it harms nothing else."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    path = tmp_path / "disk"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path) -> None:
    with open(path / "filler", "wb") as f:
        block = b"\0" * (1 << 20)
        try:
            while True:
                f.write(block)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC


def test_a_restart_on_a_full_disk_exits_with_one_line_and_leaves_the_tasks(marathon_factory, small_disk):
    from marathon.testing import MarathonProcess, private_port_range

    m = MarathonProcess(small_disk / "m", args=RESOURCES, agent_ports=private_port_range())
    try:
        m.start()
        app, marker = sleeper("/full", 20)
        assert m.client.post("/v2/apps", json=app).status_code == 201
        wait_for(lambda: settled(m, "/full", 20, marker), timeout=60, message="20 tasks running")
        pids = {t["id"] for t in m.tasks("/full")}
        m.kill()
        fill(small_disk)
        done = subprocess.run(m.command(), capture_output=True, text=True, timeout=120)
        assert done.returncode == EXIT_STORAGE, done.stderr
        lines = [line for line in done.stderr.splitlines() if line.startswith("marathon:")]
        assert len(lines) == 1 and "No space left on device" in lines[0], done.stderr
        assert "Traceback" not in done.stderr
        assert ps_count(marker) == 20, "the tasks were left alone"

        os.unlink(small_disk / "filler")
        m.start()
        wait_for(lambda: settled(m, "/full", 20, marker), timeout=60, message="the same 20 tasks")
        assert {t["id"] for t in m.tasks("/full")} == pids
    finally:
        m.stop()
    assert ps_count(marker) == 0
