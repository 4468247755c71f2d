"""The election on a real ZooKeeper: one leader at a time, epochs that only
grow, and a deposed leader's writes fenced out (CLUSTER.md 3.1-3.2)."""

from __future__ import annotations

import uuid

import pytest
import trio

from marathon.storage.contract import FencedOut, Put
from marathon.storage.election import Election, cluster_id_of
from marathon.storage.zk import ZooKeeperStore

from .zk_fixtures import ZkProxy
from .zk_fixtures import zk_server as zk_server  # noqa: F401


def _pair(hosts: str, root: str, n: int = 2) -> list[tuple[ZooKeeperStore, Election]]:
    out = []
    for i in range(n):
        store = ZooKeeperStore(hosts, root, session_timeout=2.0)
        out.append((store, Election(store, participant_id=f"m{i}:8080", url=f"http://m{i}:8080")))
    return out


async def test_one_leader_then_the_next_with_a_higher_epoch_and_a_fence(zk_server) -> None:  # noqa: F811
    root = f"/e/{uuid.uuid4().hex}"
    (s1, e1), (s2, e2) = _pair(zk_server, root)
    try:
        win1 = await e1.campaign()
        assert win1.epoch == 1 and (await e1.current()).id == "m0:8080"
        s1.fence = (e1.leader_path, win1.fence_version)
        await s1.commit([Put("k", b"1")])

        second: list = []

        async def stand() -> None:
            second.append(await e2.campaign())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stand)
            await trio.sleep(0.5)
            assert not second, "a second leader while the first leads"
            assert await e1.verify(win1)
            await e1.resign(win1)
        (win2,) = second
        assert win2.epoch == 2 and win2.fence_version > win1.fence_version
        assert (await e2.current()).id == "m1:8080"
        assert not await e1.verify(win1)
        # The deposed leader's write fails whole; the new one's lands.
        with pytest.raises(FencedOut):
            await s1.commit([Put("k", b"stale")])
        s2.fence = (e2.leader_path, win2.fence_version)
        await s2.commit([Put("k", b"2")])
        assert (await s2.get("k")).value == b"2"
        with trio.fail_after(10):
            await e1.fence_moved(win1)  # returns at once: the fence is another's
    finally:
        for s in (s1, s2):
            await s.aclose()


async def test_cluster_id_is_made_once(zk_server) -> None:  # noqa: F811
    root = f"/e/{uuid.uuid4().hex}"
    (s1, _), (s2, _) = _pair(zk_server, root)
    try:
        first = await cluster_id_of(s1)
        assert await cluster_id_of(s2) == first
    finally:
        for s in (s1, s2):
            await s.aclose()


async def test_an_expired_session_loses_the_candidacy_and_a_new_one_wins(zk_server) -> None:  # noqa: F811
    """A leader whose session expires: its candidate node goes, the standby
    wins, and the old process's next campaign queues behind it."""
    root = f"/e/{uuid.uuid4().hex}"
    async with trio.open_nursery() as nursery:
        proxy = ZkProxy(zk_server)
        await nursery.start(proxy.run)
        s1 = ZooKeeperStore(proxy.hosts, root, session_timeout=1.0)
        e1 = Election(s1, participant_id="m0:8080", url="http://m0:8080")
        (s2, e2), = _pair(zk_server, root, 1)
        try:
            win1 = await e1.campaign()
            proxy.cut()  # no connection: the session expires on the server
            with trio.fail_after(30):
                win2 = await e2.campaign()
            assert win2.epoch == win1.epoch + 1
            proxy.restore()
            with trio.fail_after(30):
                while await e1.verify(win1):  # noqa: ASYNC110 (ZooKeeper's state, polled)
                    await trio.sleep(0.1)
            again: list = []
            won = trio.Event()

            async def stand() -> None:
                again.append(await e1.campaign())
                won.set()

            nursery.start_soon(stand)
            await trio.sleep(1.0)
            assert not again, "the old leader won while the new one leads"
            await e2.resign(win2)
            with trio.fail_after(30):
                await won.wait()
            assert again[0].epoch == win2.epoch + 1
        finally:
            nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                for s in (s1, s2):
                    await s.aclose()
