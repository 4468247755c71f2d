"""The cluster driver boundary: where Marathon meets the machines.

Everything the scheduler knows about agents comes through a `ClusterDriver`:
the in-process agent (`local.py`), agents over the network (`remote.py`) and
simulated agents for scale benchmarks (`sim.py`) all implement it, so the rest
of the pipeline cannot tell them apart.

Contract:

* `offers()` is the free capacity of every usable agent *now*, including the
  effect of every `launch()` already accepted (a launched task's resources are
  taken immediately, not when the agent reports it).  Callers take one
  snapshot, place a batch, launch it, and only then ask again.
* `launch()` and `kill()` never block: they record the request and return.
  Results arrive as `TaskStatus` values on `updates` (TASK_STAGING,
  TASK_STARTING, TASK_RUNNING, then a terminal state), consumed in batches.
* `reconcile(task_ids)` asks for the current state of each task; a task the
  agents do not know is answered with TASK_LOST and the message
  "Reconciliation: Task is unknown to the agent".  `reconcile(None)` reports
  every task the agents run (implicit reconciliation).
  `reconcile(task_ids, others=True)` is both in one round: each listed task,
  then every other task the agents run, each reported once (asked as two
  calls, every known task would be reported twice: 200,000 statuses for a
  reconciliation of 100,000 tasks).
* `run()` starts the driver (and, for the local driver, recovers tasks that
  outlived a previous process) and reports readiness with
  `task_status.started()`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import trio

from ..models.agent import AgentInfo, Offer
from ..models.instance import TaskStatus
from ..models.launch import TaskLaunch


class ClusterDriver(Protocol):
    updates: trio.MemoryReceiveChannel[TaskStatus]

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None: ...

    def agents(self) -> list[AgentInfo]: ...

    def offers(self) -> list[Offer]: ...

    def launch(self, tasks: Sequence[TaskLaunch]) -> None: ...

    def kill(self, task_ids: Sequence[str], *, grace_seconds: float | None = None) -> None: ...

    def reconcile(self, task_ids: Sequence[str] | None, *, others: bool = False) -> None: ...
