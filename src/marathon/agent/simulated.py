"""A simulated executor: `marathon agent --simulate`, the remote twin of `cluster/sim.py`.

It stands where `executor.Executor` stands in the agent daemon, with the
same methods, but runs no process: a launch is TASK_STAGING at once and
TASK_RUNNING `start_delay` seconds later, a kill is TASK_KILLED after
`kill_delay`.  Everything else is real: the protocol, the update journal,
acknowledgements, epochs.  It is how a benchmark puts 100,000 tasks on 20
agent processes (S8) on one machine; it checkpoints nothing, so a restarted
simulated agent has no tasks.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Sequence
from pathlib import Path

import trio

from ..models.instance import TaskStatus
from ..models.launch import TaskLaunch
from ..models.resources import Resources
from .capabilities import LAUNCH_FAILED_REASON, PLAIN_PROCESSES, Capabilities, refusal

UNKNOWN_TASK_MESSAGE = "Reconciliation: Task is unknown to the agent"
_DONE_LIMIT = 10_000  # ended tasks remembered (as the real executor does)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class SimulatedExecutor:
    def __init__(self, work_dir: Path, *, agent_id: str, send: trio.MemorySendChannel[TaskStatus],
                 answers: trio.MemorySendChannel[TaskStatus] | None = None, start_delay: float = 0.0,
                 kill_delay: float = 0.0, capabilities: Capabilities = PLAIN_PROCESSES) -> None:
        self.work_dir = work_dir
        self.sandboxes = work_dir / "sandboxes"
        self.agent_id = agent_id
        self.capabilities = capabilities
        self._send = send
        self._answers = answers or send
        self._start_delay = start_delay
        self._kill_delay = kill_delay
        self._live: dict[str, tuple[TaskLaunch, str, Resources]] = {}
        self._done: collections.OrderedDict[str, TaskStatus] = collections.OrderedDict()
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def live_tasks(self) -> list[tuple[TaskLaunch, str, bool | None, Resources]]:
        return [(launch, state, None, res) for launch, state, res in self._live.values()]

    def _status(self, task_id: str, state: str, message: str = "", reason: str | None = None) -> TaskStatus:
        return TaskStatus(task_id=task_id, state=state, agent_id=self.agent_id, message=message, reason=reason,
                          timestamp=_now_ms())

    def _remember(self, status: TaskStatus) -> None:
        self._done[status.task_id] = status
        while len(self._done) > _DONE_LIMIT:
            self._done.popitem(last=False)

    def _emit(self, statuses: list[TaskStatus]) -> None:
        for s in statuses:
            self._send.send_nowait(s)

    def launch(self, tasks: Sequence[TaskLaunch]) -> None:
        staged: list[TaskStatus] = []
        ids: list[str] = []
        for t in tasks:
            if t.task_id in self._live or t.task_id in self._done:
                continue
            why = refusal(t, self.capabilities)
            if why is not None:
                s = self._status(t.task_id, "TASK_FAILED", why, LAUNCH_FAILED_REASON)
                self._remember(s)
                staged.append(s)
                continue
            res = Resources.of(cpus=t.cpus, mem=t.mem, disk=t.disk, gpus=t.gpus, ports=len(t.host_ports))
            self._live[t.task_id] = (t, "TASK_STAGING", res)
            staged.append(self._status(t.task_id, "TASK_STAGING"))
            ids.append(t.task_id)
        self._emit(staged)
        if ids and self._nursery is not None:
            self._nursery.start_soon(self._later, self._start_delay, "TASK_RUNNING", ids)

    def kill(self, task_ids: Sequence[str], *, grace_seconds: float | None = None) -> None:
        known = [tid for tid in task_ids if tid in self._live]
        unknown = [self._status(tid, "TASK_LOST", UNKNOWN_TASK_MESSAGE, "REASON_TASK_UNKNOWN")
                   for tid in task_ids if tid not in self._live and tid not in self._done]
        for s in unknown:
            self._remember(s)
        self._emit(unknown)
        if known and self._nursery is not None:
            self._nursery.start_soon(self._later, self._kill_delay, "TASK_KILLED", known)

    async def _later(self, delay: float, state: str, ids: list[str]) -> None:
        if delay > 0:
            await trio.sleep(delay)
        out = []
        for tid in ids:
            entry = self._live.get(tid)
            if entry is None:
                continue
            launch, current, res = entry
            if state == "TASK_RUNNING":
                if current != "TASK_STAGING":
                    continue
                self._live[tid] = (launch, state, res)
                out.append(self._status(tid, state))
            else:
                del self._live[tid]
                s = self._status(tid, state)
                self._remember(s)
                out.append(s)
        self._emit(out)

    def reconcile(self, task_ids: Sequence[str] | None, *, others: bool = False) -> None:
        listed = list(self._live) if task_ids is None else list(task_ids)
        out = []
        for tid in listed:
            entry = self._live.get(tid)
            if entry is not None:
                out.append(self._status(tid, entry[1]))
            else:
                out.append(self._done.get(tid) or self._status(tid, "TASK_LOST", UNKNOWN_TASK_MESSAGE,
                                                                 "REASON_TASK_UNKNOWN"))
        if others and task_ids is not None:
            seen = set(task_ids)
            out.extend(self._status(tid, e[1]) for tid, e in self._live.items() if tid not in seen)
        for s in out:
            try:
                self._answers.send_nowait(s)
            except trio.WouldBlock:
                pass
