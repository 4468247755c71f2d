"""`LeaderWatch` against the session's real ZooKeeper (zk_fixtures.py): it
follows `<root>/leader` through creation, changes and deletion, reads a
stranger's bytes as "no leader", and keeps watching across a cut connection
and an expired session (faults made for real with `ZkProxy`)."""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from kazoo.client import KazooClient

from marathon.models.leader import LeaderRecord, encode_leader
from marathon.storage.leader_watch import LeaderWatch

from .zk_fixtures import ZkProxy

# Generous: a real server, and reconnection after a partition.
BOUND = 20


def leader(n: int, epoch: int | None = None) -> LeaderRecord:
    return LeaderRecord(epoch=n if epoch is None else epoch, id=f"m{n}:8080", url=f"http://m{n}:8080", since=n)


async def _in_thread(fn, *args, **kwargs):
    return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


@pytest.fixture
def root() -> str:
    return f"/leader-watch-tests/{uuid.uuid4().hex}"


@pytest.fixture
async def raw(zk_server: str) -> AsyncIterator[KazooClient]:
    """A plain kazoo client: the leader's side, writing the node."""
    client = KazooClient(hosts=zk_server, timeout=5.0)
    await _in_thread(client.start, timeout=10)
    yield client
    await _in_thread(client.stop)
    client.close()




async def _becomes(watch: LeaderWatch, record: LeaderRecord | None) -> None:
    with trio.fail_after(BOUND):
        while watch.current != record:
            await watch.wait_change(watch.current)


@pytest.fixture
async def proxy(zk_server: str, nursery: trio.Nursery) -> ZkProxy:
    """A proxy in front of ZooKeeper, to cut the watcher's connection."""
    proxy = ZkProxy(zk_server)
    await nursery.start(proxy.run)
    return proxy


class _States:
    """The kazoo client's session states, in trio."""

    def __init__(self, client: KazooClient) -> None:
        self.seen: list[str] = []
        self._changed = trio.Event()
        token = trio.lowlevel.current_trio_token()
        client.add_listener(lambda state: token.run_sync_soon(self._add, str(state)))

    def _add(self, state: str) -> None:
        self.seen.append(state)
        self._changed.set()
        self._changed = trio.Event()

    async def reach(self, state: str) -> None:
        """Wait for `state`; forget it and the states before it."""
        with trio.fail_after(BOUND):
            while state not in self.seen:
                await self._changed.wait()
        del self.seen[: self.seen.index(state) + 1]


@asynccontextmanager
async def _session(hosts: str, session_timeout: float) -> AsyncIterator[tuple[KazooClient, _States]]:
    """A connected kazoo client of the watcher's side, and its states."""
    client = KazooClient(hosts=hosts, timeout=session_timeout,
                         connection_retry={"max_tries": -1, "delay": 0.05, "backoff": 2, "max_delay": 0.5})
    states = _States(client)
    await _in_thread(client.start, timeout=10)
    await states.reach("CONNECTED")
    try:
        yield client, states
    finally:
        await _in_thread(client.stop)
        client.close()


async def test_the_record_is_followed_from_absent_through_changes_and_deletion(zk_server, root, raw):
    path = f"{root}/leader"
    async with LeaderWatch.open(f"zk://{zk_server}{root}") as watch:
        with trio.fail_after(BOUND):
            await watch.wait_ready()
        assert watch.current is None, "no node yet: no leader"
        assert watch.state == "connected"

        await _in_thread(raw.create, path, encode_leader(leader(1)), makepath=True)
        with trio.fail_after(BOUND):
            assert await watch.wait_change(None) == leader(1)

        await _in_thread(raw.set, path, encode_leader(leader(2)))
        await _becomes(watch, leader(2))

        await _in_thread(raw.delete, path)
        await _becomes(watch, None)

        await _in_thread(raw.create, path, encode_leader(leader(3)))
        await _becomes(watch, leader(3))
        assert await watch.wait_change(None) == leader(3), "returns at once when it already differs"


async def test_bytes_that_are_not_a_leader_record_mean_no_leader(zk_server, root, raw, caplog):
    path = f"{root}/leader"
    await _in_thread(raw.create, path, b"", makepath=True)
    async with LeaderWatch.open(f"zk://{zk_server}{root}") as watch:
        with trio.fail_after(BOUND):
            await watch.wait_ready()
        assert watch.current is None, "an empty node: no leader yet"

        await _in_thread(raw.set, path, encode_leader(leader(1)))
        await _becomes(watch, leader(1))
        await _in_thread(raw.set, path, b"\xffnot json")
        await _becomes(watch, None)
        assert "leader_record_unreadable" in caplog.text
        await _in_thread(raw.set, path, b'{"epoch": "two"}')
        await _in_thread(raw.set, path, encode_leader(leader(2)))
        await _becomes(watch, leader(2))


async def test_a_watch_on_a_shared_client_leaves_the_client_running(root, raw):
    path = f"{root}/leader"
    await _in_thread(raw.create, path, encode_leader(leader(1)), makepath=True)
    watch = LeaderWatch(raw, root)
    await watch.start()
    with trio.fail_after(BOUND):
        await watch.wait_ready()
    assert watch.current == leader(1), "an existing record is read at start"
    await watch.aclose()
    assert raw.connected
    await _in_thread(raw.set, path, encode_leader(leader(2)))
    # A second watch on the same session sees the change after the first
    # one's watch fired (ZooKeeper sends a session's events in order).
    async with LeaderWatch(raw, root) as second:
        await _becomes(second, leader(2))
    assert watch.current == leader(1), "a closed watch reports nothing more"
    with pytest.raises(trio.ClosedResourceError):
        await watch.wait_change(leader(1))
    with pytest.raises(trio.ClosedResourceError):
        await watch.start()


async def test_the_watch_survives_a_cut_connection(root, raw, proxy):
    path = f"{root}/leader"
    await _in_thread(raw.create, path, encode_leader(leader(1)), makepath=True)
    async with _session(proxy.hosts, session_timeout=10.0) as (client, states), LeaderWatch(client, root) as watch:
        await _becomes(watch, leader(1))
        proxy.cut()
        await states.reach("SUSPENDED")
        # The change happens while the watcher cannot hear it.
        await _in_thread(raw.set, path, encode_leader(leader(2)))
        assert watch.current == leader(1), "the last record is kept while suspended"
        proxy.restore()
        await states.reach("CONNECTED")
        await _becomes(watch, leader(2))
        # ... and the watch is armed again.
        await _in_thread(raw.set, path, encode_leader(leader(3)))
        await _becomes(watch, leader(3))


async def test_the_watch_survives_an_expired_session(root, raw, proxy):
    path = f"{root}/leader"
    await _in_thread(raw.create, path, encode_leader(leader(1)), makepath=True)
    async with _session(proxy.hosts, session_timeout=1.0) as (client, states), LeaderWatch(client, root) as watch:
        await _becomes(watch, leader(1))
        # The server expires the session during the partition, which an
        # ephemeral node of that session shows.
        await _in_thread(client.create, f"{root}/alive", ephemeral=True)
        expired = trio.Event()
        token = trio.lowlevel.current_trio_token()
        await _in_thread(raw.exists, f"{root}/alive", watch=lambda event: token.run_sync_soon(expired.set))
        proxy.cut()
        await states.reach("SUSPENDED")
        await _in_thread(raw.set, path, encode_leader(leader(2)))
        with trio.fail_after(BOUND):
            await expired.wait()
        proxy.restore()
        await states.reach("LOST")
        await states.reach("CONNECTED")  # a new session, which holds no watch of the old one
        await _becomes(watch, leader(2))
        await _in_thread(raw.delete, path)
        await _becomes(watch, None)
        await _in_thread(raw.create, path, encode_leader(leader(3)))
        await _becomes(watch, leader(3))


async def test_open_waits_for_zookeeper_instead_of_failing(root, raw, proxy):
    proxy.cut()  # ZooKeeper unreachable when the agent starts
    await _in_thread(raw.create, f"{root}/leader", encode_leader(leader(4)), makepath=True)
    async with LeaderWatch.open(f"zk://{proxy.hosts}{root}", session_timeout=2.0) as watch:
        assert (watch.current, watch.state) == (None, "lost")
        proxy.restore()
        with trio.fail_after(BOUND):
            assert await watch.wait_change(None) == leader(4)
        assert watch.state == "connected"
