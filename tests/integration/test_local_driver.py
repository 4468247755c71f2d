"""The local driver end to end: a batch of real tasks through their whole lives,
a clean stop that leaves them running, a restart that re-adopts them, and a
final kill that leaves nothing behind (checked in /proc); the same with
health-checked tasks, some of which fall ill and are killed."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import trio

from marathon.agent.checkpoint import read_records
from marathon.cluster.local import LocalDriver
from marathon.models.agent import PortRange
from marathon.models.instance import TaskStatus, new_instance_id, task_id_for
from marathon.models.launch import AgentHealthCheck, TaskLaunch
from marathon.models.resources import Resources

pytestmark = pytest.mark.integration

TERMINAL = {"TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR", "TASK_LOST"}
TOTAL = Resources(cpus=8000, mem=16384, disk=10000)


def _task(agent_id: str, n: int, **kw) -> TaskLaunch:
    instance_id = new_instance_id(f"/it/app{n % 3}")
    return TaskLaunch(task_id=task_id_for(instance_id, 1), instance_id=instance_id,
                      app_id=f"/it/app{n % 3}", agent_id=agent_id, cpus=0.1, mem=32, **kw)


def _pids_under(root: Path) -> list[int]:
    prefix = f"MESOS_SANDBOX={root}".encode()
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if any(e.startswith(prefix) for e in env):
            found.append(int(p))
    return found


class Latest:
    """The latest status of each task, fed from a driver's updates."""

    def __init__(self) -> None:
        self.by_task: dict[str, TaskStatus] = {}
        self.changed = trio.Event()

    async def follow(self, driver: LocalDriver) -> None:
        async for status in driver.updates:
            self.by_task[status.task_id] = status
            self.changed.set()
            self.changed = trio.Event()

    async def until(self, predicate) -> None:
        with trio.fail_after(30):
            while not predicate(self.by_task):
                await self.changed.wait()


@pytest.fixture
def work_dir(tmp_path: Path):
    yield tmp_path / "agent"
    leftovers = _pids_under(tmp_path)
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not leftovers, f"task processes left behind: {leftovers}"


async def test_batch_lifecycle_clean_restart_and_readoption(work_dir: Path):
    ports = [PortRange(42000, 42999)]
    first = LocalDriver(work_dir, hostname="127.0.0.1", resources=TOTAL, port_ranges=ports,
                        kill_tasks_on_exit=False)
    latest = Latest()
    sleepers: list[TaskLaunch] = []
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            await nursery.start(first.run)
            nursery.start_soon(latest.follow, first)
            agent = first.agent_id
            sleepers = [_task(agent, n, shell=True, command='echo "$PORT0" > port; exec sleep 1000',
                              env={"PORT0": str(42000 + n)}, host_ports=[42000 + n])
                        for n in range(12)]
            finishers = [_task(agent, n, shell=True, command="exit 0") for n in range(4)]
            failers = [_task(agent, n, shell=False, argv=["false"]) for n in range(4)]
            first.launch(sleepers + finishers + failers)
            await latest.until(lambda s: all(
                s.get(t.task_id) and s[t.task_id].state == "TASK_RUNNING" for t in sleepers))
            await latest.until(lambda s: all(
                s.get(t.task_id) and s[t.task_id].state in TERMINAL for t in finishers + failers))
            assert {latest.by_task[t.task_id].state for t in finishers} == {"TASK_FINISHED"}
            assert {latest.by_task[t.task_id].exit_code for t in failers} == {1}
            killed, sleepers = sleepers[:4], sleepers[4:]
            first.kill([t.task_id for t in killed], grace_seconds=1)
            await latest.until(lambda s: all(s[t.task_id].state == "TASK_KILLED" for t in killed))
            offer = first.offers()[0]
            assert offer.free.cpus == TOTAL.cpus - 100 * len(sleepers)
            assert offer.free.ports == 1000 - len(sleepers)
            scope.cancel()  # a clean stop that leaves the tasks running

    # Still running, each exactly once.
    for t in sleepers:
        sandbox = work_dir / "sandboxes" / t.task_id
        assert (sandbox / "port").read_text().strip() == t.env["PORT0"]
    assert len(_pids_under(work_dir)) == len(sleepers)

    second = LocalDriver(work_dir, hostname="127.0.0.1", resources=TOTAL, port_ranges=ports)
    assert second.agent_id == first.agent_id
    latest = Latest()
    async with trio.open_nursery() as nursery:
        await nursery.start(second.run)
        nursery.start_soon(latest.follow, second)
        second.reconcile(None)
        await latest.until(lambda s: all(
            s.get(t.task_id) and s[t.task_id].state == "TASK_RUNNING" for t in sleepers))
        offer = second.offers()[0]
        assert offer.free.cpus == TOTAL.cpus - 100 * len(sleepers)
        held = {p for r in offer.port_ranges for p in range(r.begin, r.end + 1)}
        assert not held & {t.host_ports[0] for t in sleepers}
        second.kill([t.task_id for t in sleepers])
        await latest.until(lambda s: all(s[t.task_id].state == "TASK_KILLED" for t in sleepers))
        assert _pids_under(work_dir) == []
        assert second.offers()[0].free.cpus == TOTAL.cpus
        nursery.cancel_scope.cancel()
    assert read_records(work_dir / "checkpoint") == {}


async def test_health_checked_batch_survives_a_restart_and_kills_the_sick(work_dir: Path):
    hc = AgentHealthCheck(protocol="COMMAND", command='test ! -f "$MESOS_SANDBOX/sick"',
                          delay_seconds=0, interval_seconds=0.2, timeout_seconds=5,
                          grace_period_seconds=30, consecutive_failures=2)
    first = LocalDriver(work_dir, hostname="127.0.0.1", resources=TOTAL,
                        kill_tasks_on_exit=False, health_check_concurrency=4)
    latest = Latest()
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            await nursery.start(first.run)
            nursery.start_soon(latest.follow, first)
            tasks = [_task(first.agent_id, n, shell=False, argv=["sleep", "1000"],
                           health_check=hc) for n in range(16)]
            first.launch(tasks)
            await latest.until(lambda s: all(
                s.get(t.task_id) and s[t.task_id].healthy is True for t in tasks))
            sick, tasks = tasks[:4], tasks[4:]
            for t in sick:
                (work_dir / "sandboxes" / t.task_id / "sick").touch()
            await latest.until(lambda s: all(s[t.task_id].state == "TASK_KILLED" for t in sick))
            for t in sick:
                final = latest.by_task[t.task_id]
                assert (final.healthy, final.message, final.reason) == (
                    False, "Task killed because of failed health check",
                    "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED")
            assert all(latest.by_task[t.task_id].healthy is True for t in tasks)
            scope.cancel()  # a clean stop that leaves the healthy tasks running
    assert len(_pids_under(work_dir)) == len(tasks)  # tasks only: no probe left

    second = LocalDriver(work_dir, hostname="127.0.0.1", resources=TOTAL)
    latest = Latest()
    async with trio.open_nursery() as nursery:
        await nursery.start(second.run)
        nursery.start_soon(latest.follow, second)
        second.reconcile(None)
        await latest.until(lambda s: all(
            s.get(t.task_id) and s[t.task_id].state == "TASK_RUNNING" for t in tasks))
        # The health known before the restart, then still healthy: no change reported.
        assert all(latest.by_task[t.task_id].healthy is True for t in tasks)
        (work_dir / "sandboxes" / tasks[0].task_id / "sick").touch()
        await latest.until(lambda s: s[tasks[0].task_id].state == "TASK_KILLED")
        second.kill([t.task_id for t in tasks[1:]])
        await latest.until(lambda s: all(s[t.task_id].state in TERMINAL for t in tasks))
        assert _pids_under(work_dir) == []
        nursery.cancel_scope.cancel()
    assert read_records(work_dir / "checkpoint") == {}
