"""Helpers for the agent tests: task builders, a status recorder, /proc probes."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import trio

from marathon.models.instance import TaskStatus, new_instance_id, task_id_for
from marathon.models.launch import TaskLaunch

# Generous bound on every wait, so a broken test fails instead of hanging;
# tests that need a tighter one wrap the call in their own trio.fail_after.
BOUND = 30.0
TERMINAL = {"TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR", "TASK_LOST"}
_incarnations = itertools.count(1)


def make_task(agent_id: str, *, command: str | None = None, argv: list[str] | None = None,
              app: str = "/test/app", **kw) -> TaskLaunch:
    instance_id = new_instance_id(app)
    return TaskLaunch(
        task_id=task_id_for(instance_id, next(_incarnations)), instance_id=instance_id,
        app_id=app, agent_id=agent_id, shell=command is not None, command=command,
        argv=argv or [], **kw,
    )


class Recorder:
    """Reads a driver's updates in the background and lets a test wait on them."""

    def __init__(self, updates: trio.MemoryReceiveChannel[TaskStatus]) -> None:
        self._updates = updates
        self.statuses: list[TaskStatus] = []
        self._changed = trio.Event()

    async def run(self) -> None:
        async for status in self._updates:
            self.statuses.append(status)
            self._changed.set()
            self._changed = trio.Event()

    def of(self, task_id: str) -> list[TaskStatus]:
        return [s for s in self.statuses if s.task_id == task_id]

    def states(self, task_id: str) -> list[str]:
        return [s.state for s in self.of(task_id)]

    async def wait(self, task_id: str, states: str | set[str], *, after: int = 0) -> TaskStatus:
        """The first status of `task_id` in `states` (at or after index `after`)."""
        wanted = {states} if isinstance(states, str) else states
        with trio.fail_after(BOUND):
            while True:
                for s in self.statuses[after:]:
                    if s.task_id == task_id and s.state in wanted:
                        return s
                await self._changed.wait()

    async def terminal(self, task_id: str) -> TaskStatus:
        return await self.wait(task_id, TERMINAL)

    async def health(self, task_id: str, healthy: bool, *, after: int = 0) -> TaskStatus:
        """The first TASK_RUNNING status of `task_id` reporting `healthy` (at/after `after`)."""
        with trio.fail_after(BOUND):
            while True:
                for s in self.statuses[after:]:
                    if (s.task_id == task_id and s.state == "TASK_RUNNING"
                            and s.healthy is healthy):
                        return s
                await self._changed.wait()

    def healths(self, task_id: str) -> list[bool]:
        """The health changes reported for `task_id`, in order."""
        return [s.healthy for s in self.of(task_id)
                if s.state == "TASK_RUNNING" and s.healthy is not None]


async def wait_until(predicate: Callable[[], object]) -> None:
    """Poll a condition nothing can notify us of (a file, /proc) until it holds."""
    with trio.fail_after(BOUND):
        while not predicate():  # noqa: ASYNC110 - no event exists for these
            await trio.sleep(0.01)


def _environ(pid: int) -> list[bytes]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 :].split()[0] not in (b"Z", b"X")


def pid_alive(pid: int) -> bool:
    """Exists and is not a zombie (a zombie is dead, just not yet reaped)."""
    return _alive(pid)


def task_pids(task_id: str) -> list[int]:
    """Every live process of a task, found by the MESOS_TASK_ID in its environment."""
    needle = f"MESOS_TASK_ID={task_id}".encode()
    return [int(p) for p in os.listdir("/proc")
            if p.isdigit() and needle in _environ(int(p)) and _alive(int(p))]


def pids_with_sandbox_under(root: Path) -> list[int]:
    prefix = f"MESOS_SANDBOX={root}".encode()
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit() and int(p) != os.getpid():
            if any(e.startswith(prefix) for e in _environ(int(p))):
                out.append(int(p))
    return out


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def sandbox_of(work_dir: Path, task_id: str) -> Path:
    return work_dir / "sandboxes" / task_id


DRIVER_PROC = Path(__file__).with_name("driver_proc.py")


async def crash_after_launch(work_dir: Path, task_id: str, *args: str) -> int:
    """Run a driver in a subprocess (driver_proc.py), let it start the task,
    SIGKILL it; the task's pid."""
    argv = [sys.executable, str(DRIVER_PROC), str(work_dir), task_id, *args]
    proc = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE)
    try:
        line = b""
        with trio.fail_after(BOUND):
            while not line.endswith(b"\n"):
                chunk = await proc.stdout.receive_some()
                assert chunk, "the driver process died before its task ran"
                line += chunk
        word, pid = line.decode().split()
        assert word == "RUNNING", line
        return int(pid)
    finally:
        proc.send_signal(signal.SIGKILL)  # the crash (and cleanup if anything failed)
        with trio.CancelScope(shield=True):
            await proc.wait()
        await proc.stdout.aclose()
