"""Starting tasks in worker threads, many per thread hand-off (see `Spawner`)."""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

import trio

log = logging.getLogger("marathon.agent")


class _Spawnable(Protocol):
    pid: int | None


T = TypeVar("T", bound=_Spawnable)


class Spawner(Generic[T]):
    """Spawns in worker threads, many tasks per thread hand-off.

    A burst of launches queues here; each worker thread (at most the
    limiter's count at once) takes a share of the queue, up to `chunk`,
    and spawns it in turn.  The spawn itself runs without the GIL, so the
    event loop keeps going meanwhile, and the thread hand-off is paid per
    share.  (Telling each task as soon as it is spawned, rather than at the
    end of its share, measured slower: the statuses then reach the rest of
    the pipeline in smaller batches.)
    """

    def __init__(self, spawn_share: Callable[[list[T], dict[T, BaseException]], None],
                 limiter: trio.CapacityLimiter, chunk: int = 32) -> None:
        self._spawn_share = spawn_share
        self._limiter = limiter
        self._chunk = chunk
        self._queue: collections.deque[T] = collections.deque()
        self._waiting: dict[T, tuple[trio.Event, list[BaseException | None]]] = {}
        self._wakeup = trio.Event()

    async def spawn(self, t: T) -> None:
        """Spawn `t`; raises what spawning it raised."""
        done, verdict = self._waiting[t] = (trio.Event(), [])
        self._queue.append(t)
        self._wakeup.set()
        try:
            await done.wait()
        except trio.Cancelled:
            if t in self._queue:  # not started yet: withdraw it
                self._queue.remove(t)
                del self._waiting[t]
                raise
            # A thread is spawning it: wait for the verdict (as a cancelled
            # `to_thread.run_sync` would), then go on being cancelled.
            with trio.CancelScope(shield=True):
                await done.wait()
            raise
        if verdict[0] is not None:
            raise verdict[0]

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                while self._queue:
                    token = object()
                    await self._limiter.acquire_on_behalf_of(token)
                    if not self._queue:  # withdrawn meanwhile
                        self._limiter.release_on_behalf_of(token)
                        break
                    share = -(-len(self._queue) // max(1, int(self._limiter.total_tokens)))
                    take = max(1, min(self._chunk, share))
                    batch = [self._queue.popleft() for _ in range(min(take, len(self._queue)))]
                    nursery.start_soon(self._run_batch, batch, token)

    async def _run_batch(self, batch: list[T], token: object) -> None:
        errors: dict[T, BaseException] = {}
        try:
            with trio.CancelScope(shield=True):
                # (At most `limiter`'s count of these run at once, well under
                # trio's default thread limit.)
                await trio.to_thread.run_sync(self._spawn_all, batch, errors)
        finally:
            self._limiter.release_on_behalf_of(token)
            for t in batch:
                done, verdict = self._waiting.pop(t)
                verdict.append(errors.get(t))
                done.set()

    def _spawn_all(self, batch: list[T], errors: dict[T, BaseException]) -> None:
        try:
            self._spawn_share(batch, errors)
        except Exception as e:  # a bug: every task of the share not started hears it
            log.exception("spawn_share_failed tasks=%d", len(batch))
            for t in batch:
                if t.pid is None:
                    errors.setdefault(t, e)
