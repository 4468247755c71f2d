"""`LeaderWatch`: who leads, as ZooKeeper says (CLUSTER.md 3.2, "Discovery by
others").

The leader keeps `<root>/leader`, a persistent node holding a JSON
`LeaderRecord` (models/leader.py).  Standby masters and agents read it with
a watch to learn the leader's URL and epoch.  A `LeaderWatch` reads that
node, keeps a watch on it, and hands every change to trio:

    async with LeaderWatch.open("zk://h1:2181,h2:2181/marathon") as watch:
        record = await watch.wait_change(None)      # the first leader
        ...
        record = await watch.wait_change(record)    # the next change

or, on a session someone else owns (a master passes its store's client):

    watch = LeaderWatch(store.kazoo_client, "/marathon")
    await watch.start()
    ...
    await watch.aclose()                            # leaves the client running

`current` is the last record read: None while the node does not exist, is
empty, or holds bytes that are not a `LeaderRecord` (a stranger's bytes mean
"no leader known", never an error).  It keeps its last value while the
session is suspended or lost: an agent keeps talking to the leader it knows
while its own line to ZooKeeper is down.

Why not kazoo's `DataWatch`: it reads synchronously when created, and after a
connection loss it re-reads in a retry loop on kazoo's callback thread with
a backoff that grows to 60 s, so a watch shared with the store's session
could block that thread, and a long outage could leave the leader unknown
for up to a minute after the session is back.  Here every read is
asynchronous (`get_async`/`exists_async`), nothing blocks a kazoo thread, and
the read is re-armed at once on each "connected" state.  kazoo drops its
watches when the connection drops (and ZooKeeper drops them with an expired
session), so the re-read on "connected" is what keeps the watch alive across
both.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoNodeError
from kazoo.protocol.states import EventType, KazooState, WatchedEvent

from ..models.leader import LeaderRecord, decode_leader
from .zk import parse_zk_url

__all__ = ["LeaderWatch"]

log = logging.getLogger("marathon.storage.leader_watch")

_STATES = {KazooState.CONNECTED: "connected", KazooState.SUSPENDED: "suspended", KazooState.LOST: "lost"}


class LeaderWatch:
    """The leader record at `<root>/leader`, watched on `client`'s session.

    Make one with `LeaderWatch(client, root)` then `await start()` (the
    client is the caller's: `aclose()` leaves it running), or with
    `async with LeaderWatch.open(url)`, which opens and closes a session of
    its own.  Changes are reported in the trio run that called `start()`.
    """

    def __init__(self, client: KazooClient, root: str) -> None:
        if not root.startswith("/") or root == "/" or root.endswith("/"):
            raise ValueError(f"root must be an absolute znode path such as /marathon, got {root!r}")
        self.path = f"{root}/leader"
        self._client = client
        self._token: trio.lowlevel.TrioToken | None = None
        self._closed = False
        self._current: LeaderRecord | None = None
        self._raw: bytes | None = None  # the node's data as last read (None: no node)
        self._read = False
        self._state = _STATES.get(client.state, "lost")
        self._changed = trio.Event()  # replaced after every change of current or state

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, *, session_timeout: float = 10.0) -> AsyncIterator[LeaderWatch]:
        """A watch on a session of its own: `url` is
        zk://[user:pass@]host:port[,host:port...]/root.  It does not wait for
        ZooKeeper: the session keeps connecting in the background (`state`
        says how it is), and `wait_change(None)` waits for the first leader.
        """
        hosts, root, auth = parse_zk_url(url)
        client = KazooClient(
            hosts=hosts,
            timeout=session_timeout,
            auth_data=[("digest", f"{auth[0]}:{auth[1]}")] if auth else None,
            # kazoo's default backs off to an hour between reconnections.
            connection_retry={"max_tries": -1, "delay": 0.05, "backoff": 2, "max_delay": 1.0},
        )
        watch = cls(client, root)
        try:
            # Listen before the session starts, so its first "connected" arms the read.
            await watch.start()
            await trio.to_thread.run_sync(client.start_async)
            yield watch
        finally:
            with trio.CancelScope(shield=True):  # the session ends even when we are cancelled
                await watch.aclose()
                await trio.to_thread.run_sync(_stop, client)

    # -- what the rest of the program sees --

    @property
    def current(self) -> LeaderRecord | None:
        """The leader record as last read; None if there is no leader known."""
        return self._current

    @property
    def state(self) -> str:
        """The session: "connected", "suspended" or "lost" (also before it
        first connects).  `current` is as last read whatever the state."""
        return self._state

    async def wait_ready(self) -> None:
        """Return once the node has been read at least once (`current` is
        then what it held at that read).  Waits as long as ZooKeeper is
        unreachable: bound it at the call site."""
        await trio.lowlevel.checkpoint()
        while not self._read:
            await self._wait()

    async def wait_change(self, than: LeaderRecord | None) -> LeaderRecord | None:
        """Return `current` as soon as it differs from `than` (at once if it
        already does).  Raises `trio.ClosedResourceError` once closed."""
        await trio.lowlevel.checkpoint()
        while self._current == than:
            await self._wait()
        return self._current

    async def _wait(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("leader watch is closed")
        await self._changed.wait()

    async def start(self) -> None:
        """Start watching (idempotent).  Reads the node now if the session is
        connected, and again every time it (re)connects."""
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise trio.ClosedResourceError("leader watch is closed")
        if self._token is not None:
            return
        self._token = trio.lowlevel.current_trio_token()
        self._client.add_listener(self._on_state)
        if self._client.connected:
            self._arm()

    async def aclose(self) -> None:
        """Stop reporting.  A watch left on the node fires once more into a
        closed `LeaderWatch` and is not re-armed; the client stays as it is."""
        if not self._closed:
            self._closed = True
            if self._token is not None:
                self._client.remove_listener(self._on_state)
            self._state = "lost"
            self._wake()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> LeaderWatch:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<LeaderWatch {self.path} {self._state} {self._current!r}>"

    # -- trio side --

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _report(self, data: bytes | None) -> None:
        if self._closed:
            return
        first, self._read = not self._read, True
        if not first and data == self._raw:
            return
        self._raw = data
        record = decode_leader(data) if data is not None else None
        if data and record is None:
            log.warning("leader_record_unreadable path=%s data=%r", self.path, data[:200])
        if first or record != self._current:
            self._current = record
            self._wake()

    def _set_state(self, state: str) -> None:
        if self._closed or state == self._state:
            return
        self._state = state
        log.info("leader_watch_session state=%s path=%s", state, self.path)
        self._wake()

    # -- kazoo's threads: never block, hand over to trio --

    def _hand_over(self, fn: Any, *args: Any) -> None:
        token = self._token
        if token is None or self._closed:
            return
        try:
            token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:
            pass

    def _on_state(self, state: str) -> None:
        # The connection thread.  A "connected" may be a new session (whose
        # server holds none of our watches) or the old one after kazoo
        # dropped its watchers: read, and watch, again either way.
        self._hand_over(self._set_state, _STATES.get(state, "lost"))
        if state == KazooState.CONNECTED:
            self._arm()

    def _arm(self) -> None:
        """Read the node and leave a watch on it (or on its creation)."""
        if self._closed:
            return
        self._client.get_async(self.path, watch=self._on_event).rawlink(self._on_data)

    def _on_event(self, event: WatchedEvent) -> None:
        # EventType.NONE: kazoo dropped its watchers with the connection;
        # `_on_state` re-arms on "connected".
        if event.type != EventType.NONE:
            self._arm()

    def _on_data(self, result: Any) -> None:
        # kazoo's completion thread, which delivers answers in the order the
        # server gave them: the last report is the newest read.
        try:
            data, _stat = result.get_nowait()
        except NoNodeError:
            # No watch is left by a get of a missing node: watch its creation.
            if not self._closed:
                self._client.exists_async(self.path, watch=self._on_event).rawlink(self._on_exists)
            return
        except KazooException as exc:  # connection loss, session expiry, closed
            log.debug("leader_read_failed path=%s error=%r", self.path, exc)
            return
        self._hand_over(self._report, data)

    def _on_exists(self, result: Any) -> None:
        try:
            stat = result.get_nowait()
        except KazooException as exc:
            log.debug("leader_read_failed path=%s error=%r", self.path, exc)
            return
        if stat is None:
            self._hand_over(self._report, None)
        else:
            self._arm()  # created between the two reads


def _stop(client: KazooClient) -> None:
    try:
        client.stop()
    finally:
        client.close()
