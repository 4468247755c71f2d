"""The embedded agent and remote agents behind one `ClusterDriver`.

`marathon serve` with an agent secret runs tasks both on its own machine
(the embedded `LocalDriver`) and on `marathon agent` machines (the
`RemoteDriver`); everything above sees one driver.  Offers are both
drivers' offers, so the matcher chooses among every machine at once.

Commands are routed by the agent a task was placed on (`agent_of`, read from
the instance tracker), never by guessing: after a restart of the master, a
task of a remote agent that has not subscribed again yet must not be asked
of the embedded agent, which would answer "unknown" and have it replaced
while it still runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import trio

from ..models.agent import AgentInfo, Offer
from ..models.instance import TaskStatus
from ..models.launch import TaskLaunch
from .local import LocalDriver
from .remote import RemoteDriver


class CompositeDriver:
    def __init__(self, local: LocalDriver, remote: RemoteDriver, *,
                 agent_of: Callable[[str], str | None] = lambda _tid: None,
                 update_buffer: int = 100_000) -> None:
        self.local = local
        self.remote = remote
        self._agent_of = agent_of
        self._send, self.updates = trio.open_memory_channel[TaskStatus](update_buffer)

    def set_agent_of(self, agent_of: Callable[[str], str | None]) -> None:
        self._agent_of = agent_of

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.local.run)
            await nursery.start(self.remote.run)
            nursery.start_soon(self._forward, self.local.updates)
            nursery.start_soon(self._forward, self.remote.updates)
            task_status.started()

    async def _forward(self, source: trio.MemoryReceiveChannel[TaskStatus]) -> None:
        async for status in source:
            await self._send.send(status)

    def agents(self) -> list[AgentInfo]:
        return self.local.agents() + self.remote.agents()

    def offers(self) -> list[Offer]:
        return self.local.offers() + self.remote.offers()

    def launch(self, tasks: Sequence[TaskLaunch]) -> None:
        here = self.local.agent_id
        mine = [t for t in tasks if t.agent_id == here]
        if mine:
            self.local.launch(mine)
        if len(mine) < len(tasks):
            self.remote.launch([t for t in tasks if t.agent_id != here])

    def _is_remote(self, task_id: str) -> bool:
        if self.remote.owns(task_id):
            return True
        agent = self._agent_of(task_id)
        return agent is not None and agent != self.local.agent_id

    def _split(self, task_ids: Sequence[str]) -> tuple[list[str], list[str]]:
        """(the embedded agent's, remote agents') task ids, each asked once."""
        local: list[str] = []
        remote: list[str] = []
        for t in task_ids:
            (remote if self._is_remote(t) else local).append(t)
        return local, remote

    def kill(self, task_ids: Sequence[str], *, grace_seconds: float | None = None) -> None:
        local, remote = self._split(task_ids)
        if local:
            self.local.kill(local, grace_seconds=grace_seconds)
        if remote:
            self.remote.kill(remote, grace_seconds=grace_seconds)

    def reconcile(self, task_ids: Sequence[str] | None, *, others: bool = False) -> None:
        if task_ids is None:
            self.local.reconcile(None)
            self.remote.reconcile(None)
            return
        local, remote = self._split(task_ids)
        self.local.reconcile(local, others=others)
        self.remote.reconcile(remote, others=others)

    def acknowledge(self, statuses: Sequence[TaskStatus]) -> None:
        self.remote.acknowledge(statuses)
