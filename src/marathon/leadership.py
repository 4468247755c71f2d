"""Leadership: who leads, and the leader term (CLUSTER.md 3.1-3.3).

A master process outlives its terms.  The HTTP server, the ZooKeeper
session and (on one machine) the embedded agent belong to the process; a
*term* is everything a leader runs (state loaded from the store, the
scheduler, deployments, health checks, the agents' sessions, plugins'
background services), started in a trio nursery of its own that dies
whole when leadership ends.  A process elected again starts a new term
from the store: nothing of the old one survives.

    CANDIDATE -> ELECTED -> LOADING -> LEADING <-> SUSPENDED -> CANDIDATE

`Leadership` is what the HTTP front reads (`api.leader_proxy`): this
process's role, the leader it knows, the running term's ASGI app, whether
the term is suspended.  `run_terms` runs the loop: win (ZooKeeper's
election with `--zk`, at once on one machine), run a term until it ends
(session lost, fence moved, a store write fenced out, abdication), and
stand again.

The term's own rules with ZooKeeper:
- SUSPENDED (the session may be lost): writes are answered 503 with
  Retry-After and the agents' commands are held (`RemoteDriver.pause`);
  the agents' streams stay open, so a short blip costs nothing.
- Reconnected on the same session: `Election.verify` re-reads the fence
  (after a `sync`); unchanged, the term resumes; otherwise it ends.
- LOST, the fence moved, or a write fenced out: the term ends, the agents'
  streams are closed with LEADERSHIP_LOST, and the process stands again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from .errors import StorageError
from .models.leader import LeaderRecord
from .storage.contract import FencedOut

log = logging.getLogger("marathon.leadership")

# Marathon's exit codes (SPEC.md 5): leadership lost, ended gracefully.
EXIT_LEADERSHIP_LOST = 103
EXIT_ABDICATED = 105

# After answering DELETE /v2/leader, the term ends this much later (the
# answer has to reach the client first).
ABDICATION_DELAY = 0.5


@dataclass(frozen=True)
class Abdication:
    backup: str | None = None
    restore: str | None = None


class LeadershipEnded(Exception):
    """Raised out of `run_terms` with --exit_on_leadership_loss."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code


class Leadership:
    """What this process knows about leadership, read by the HTTP front."""

    def __init__(self, *, self_id: str, self_url: str, ha: bool) -> None:
        self.self_id = self_id
        self.self_url = self_url
        self.ha = ha
        self.role = "candidate"  # candidate | loading | leading
        self.epoch = 0
        self.leader: LeaderRecord | None = None
        self.app: Any = None  # the term's ASGI app, once it serves
        self.suspended = False
        self.terms = 0
        self._changed = trio.Event()
        self._abdicate: Callable[[Abdication], None] | None = None

    # -- read by the front --

    @property
    def leading(self) -> bool:
        return self.app is not None

    def leader_address(self) -> str | None:
        """host:port of the leader, if known (this process's when it leads)."""
        if self.app is not None:
            return self.self_id
        if self.leader is not None and self.leader.id != self.self_id:
            return self.leader.id
        return None

    def leader_url(self) -> str | None:
        if self.app is not None:
            return self.self_url
        if self.leader is not None and self.leader.id != self.self_id:
            return self.leader.url
        return None

    async def wait_settled(self) -> None:
        """Wait for a serving leader to be known (callers bound the wait)."""
        while self.leader_url() is None:
            await self._changed.wait()

    async def wait_change(self) -> None:
        """Return at the next change of role, leader or suspension."""
        await self._changed.wait()

    async def wait_leading(self) -> None:
        while not self.leading:
            await self._changed.wait()

    # -- written by the runner --

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def known_leader(self, record: LeaderRecord | None) -> None:
        if record != self.leader:
            self.leader = record
            self._notify()

    def abdicate(self, request: Abdication) -> bool:
        """Ask the running term to end (DELETE /v2/leader); False when this
        process does not lead."""
        if self._abdicate is None or self.app is None:
            return False
        self._abdicate(request)
        return True


TermStarter = Callable[[trio.Nursery, int], Awaitable[Any]]
"""start_term(nursery, epoch) starts a term's services in `nursery` and
returns the term's ASGI app once it serves."""


class _Term:
    """One term's end: why, and what to do afterwards."""

    def __init__(self) -> None:
        self.ended = trio.Event()
        self.why = ""
        self.abdication: Abdication | None = None

    def end(self, why: str, abdication: Abdication | None = None) -> None:
        if not self.ended.is_set():
            self.why = why
            self.abdication = abdication
            self.ended.set()


async def _serve_term(leadership: Leadership, start_term: TermStarter, epoch: int, term: _Term,
                      watchers: Callable[[trio.Nursery], None] | None = None,
                      tolerate: tuple[type[BaseException], ...] = ()) -> None:
    """Run one term until `term` ends; the services' nursery is cancelled
    whole.  An exception of `tolerate` (a store that fenced us out or lost
    ZooKeeper) ends the term; any other propagates."""
    leadership.role, leadership.epoch = "loading", epoch
    leadership._notify()

    def abdicate(request: Abdication) -> None:
        async def later() -> None:
            await trio.sleep(ABDICATION_DELAY)
            term.end("abdicated", request)

        assert nursery is not None
        nursery.start_soon(later)

    nursery: trio.Nursery | None = None
    try:
        async with trio.open_nursery() as nursery:
            if watchers is not None:
                watchers(nursery)
            app = await start_term(nursery, epoch)
            leadership.app, leadership.role = app, "leading"
            leadership._abdicate = abdicate
            leadership._notify()
            log.info("leading epoch=%d id=%s", epoch, leadership.self_id)
            await term.ended.wait()
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if not tolerate:
            raise
        store_trouble, rest = group.split(tolerate)
        if rest is not None:
            raise
        assert store_trouble is not None
        term.end(f"store: {store_trouble.exceptions[0]!r}")
    finally:
        leadership.app, leadership._abdicate = None, None
        leadership.role, leadership.suspended = "candidate", False
        leadership.terms += 1
        leadership._notify()
    log.warning("leadership_ended epoch=%d why=%s", epoch, term.why)


async def run_local_terms(leadership: Leadership, start_term: TermStarter,
                          after_term: Callable[[_Term], Awaitable[None]] | None = None, *,
                          exit_on_loss: bool = False) -> None:
    """One machine: this process always wins (Marathon's pseudo election);
    abdication ends the term and starts a new one from the store, while
    the embedded agent (the process's) keeps every task running."""
    while True:
        term = _Term()
        leadership.known_leader(LeaderRecord(epoch=1, id=leadership.self_id, url=leadership.self_url))
        await _serve_term(leadership, start_term, 1, term)
        if after_term is not None:
            await after_term(term)
        if exit_on_loss:
            raise LeadershipEnded(EXIT_ABDICATED if term.abdication else EXIT_LEADERSHIP_LOST, term.why)


async def run_zk_terms(leadership: Leadership, start_term: TermStarter, store: Any, election: Any, watch: Any,
                       after_term: Callable[[_Term], Awaitable[None]] | None = None, *,
                       exit_on_loss: bool = False) -> None:
    """Several masters: stand for election in ZooKeeper, lead while it
    lasts, stand again.  `store` is the connected ZooKeeperStore, whose
    every commit checks the term's fence; `election` its
    `storage.election.Election`; `watch` a started `LeaderWatch` (this
    module knows neither: kazoo stays in storage/)."""
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_follow_leader, leadership, watch)
            while True:
                leadership.role = "candidate"
                win = await election.campaign()
                store.fence = (election.leader_path, win.fence_version)
                store.forget()
                leadership.known_leader(win.record)
                term = _Term()
                listener = _session_listener(leadership, election, win, term, nursery)
                store.add_state_listener(listener)

                def watchers(term_nursery: trio.Nursery, win: Any = win, term: _Term = term) -> None:
                    async def fence() -> None:
                        await election.fence_moved(win)
                        term.end("the leader node moved: another master leads")

                    term_nursery.start_soon(fence)

                try:
                    await _serve_term(leadership, start_term, win.epoch, term, watchers,
                                      tolerate=(FencedOut, StorageError))
                finally:
                    store.remove_state_listener(listener)
                if term.abdication is not None:
                    with trio.CancelScope(shield=True):
                        if after_term is not None:
                            await after_term(term)
                        await election.resign(win)
                elif after_term is not None:
                    await after_term(term)
                if exit_on_loss:
                    raise LeadershipEnded(EXIT_ABDICATED if term.abdication else EXIT_LEADERSHIP_LOST, term.why)
    finally:
        with trio.CancelScope(shield=True):
            await watch.aclose()


async def _follow_leader(leadership: Leadership, watch: Any) -> None:
    current = watch.current
    leadership.known_leader(current)
    while True:
        current = await watch.wait_change(current)
        leadership.known_leader(current)


def _session_listener(leadership: Leadership, election: Any, win: Any, term: _Term,
                      nursery: trio.Nursery) -> Callable[[str], None]:
    """SUSPENDED stops acting; a reconnect re-verifies the fence; LOST ends
    the term (CLUSTER.md 3.3)."""

    def on_state(state: str) -> None:
        if term.ended.is_set():
            return
        if state == "suspended":
            if not leadership.suspended:
                log.warning("leadership_suspended epoch=%d (ZooKeeper connection lost)", win.epoch)
                leadership.suspended = True
                leadership._notify()
        elif state == "lost":
            term.end("ZooKeeper session lost")
        elif state == "connected" and leadership.suspended:
            nursery.start_soon(reverify)

    async def reverify() -> None:
        if await election.verify(win):
            log.info("leadership_resumed epoch=%d", win.epoch)
            leadership.suspended = False
            leadership._notify()
        else:
            term.end("the fence moved while suspended")

    return on_state
