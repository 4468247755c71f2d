"""Ordered delivery of an agent's task statuses into its bounded updates channel.

Lifecycle statuses are never dropped: when the consumer falls behind and
the channel is full, they wait in an ordered backlog (a few per task, so
bounded by the number of tasks).  Answers to reconciliation, which can
always be asked again, are dropped instead once that backlog is long.
"""

from __future__ import annotations

import collections
import logging

import trio

from ..models.instance import TaskStatus

log = logging.getLogger("marathon.agent")

DROPPABLE_BACKLOG = 10_000


class Outbox:
    """Ordered delivery of statuses into the bounded updates channel."""

    def __init__(self, send: trio.MemorySendChannel[TaskStatus]) -> None:
        self._send = send
        self._backlog: collections.deque[TaskStatus] = collections.deque()
        self._wakeup = trio.Event()
        self._warned = False

    def put(self, status: TaskStatus, *, droppable: bool = False) -> None:
        if not self._backlog:
            try:
                self._send.send_nowait(status)
                return
            except trio.WouldBlock:
                pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return  # nobody will ever read it
        if droppable and len(self._backlog) >= DROPPABLE_BACKLOG:
            if not self._warned:
                log.warning("status_backlog_full dropping=reconciliation_answers backlog=%d",
                            len(self._backlog))
                self._warned = True
            return
        self._backlog.append(status)
        self._wakeup.set()

    async def pump(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            while self._backlog:
                try:
                    await self._send.send(self._backlog[0])
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self._backlog.clear()
                    return
                self._backlog.popleft()
            self._warned = False
