"""Leader election on ZooKeeper (CLUSTER.md 3.2-3.3), beside the store whose
session it shares: one kazoo session per master, so the store's fence and
the candidacy live and die together.

    <root>/leader-election/<uuid>__lock__<seq>   ephemeral-sequential candidates
    <root>/leader                                 persistent LeaderRecord; its
                                                  dataVersion is the fence

Candidacy follows kazoo's Lock protocol: the lowest sequence number may
win, each other candidate waits for the deletion of the one just before it
(never for the whole directory: no herd).  Winning is one transaction,
`check(my candidate, 0)` + `set_data(leader, epoch+1, version=v)`: only a
live candidate can win, and the epoch of every leader is one above the
previous one.  The fence is then (leader path, v+1): every store commit
checks it, so a deposed leader's writes fail atomically, even a multi kazoo
re-sends on a new session.

`Election.campaign()` blocks until this process wins and returns a `Win`;
`verify(win)` re-reads the leader node after a reconnect (`sync` first);
`fence_moved(win)` waits until the leader node changes or is deleted;
`resign(win)` deletes the candidate node (abdication).  Each blocking kazoo
call runs in a worker thread; watches come back to trio through
`TrioToken.run_sync_soon`.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from dataclasses import dataclass

import trio
from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NodeExistsError, NoNodeError

from ..errors import StorageError
from ..models.leader import LeaderRecord, decode_leader, encode_leader
from .zk import ZooKeeperStore

log = logging.getLogger("marathon.election")

_LOCK_MARK = "__lock__"


@dataclass(frozen=True)
class Win:
    """One won election: the term's epoch and fence."""

    epoch: int
    fence_version: int
    candidate: str  # our candidate node's full path
    record: LeaderRecord


class Election:
    def __init__(self, store: ZooKeeperStore, *, participant_id: str, url: str) -> None:
        self.store = store
        self.participant_id = participant_id
        self.url = url
        self.leader_path = f"{store.root}/leader"
        self.election_dir = f"{store.root}/leader-election"
        self._candidate: str | None = None

    def _client(self) -> KazooClient:
        client = self.store.kazoo_client
        if client is None:
            raise StorageError("the ZooKeeper store is not connected")
        return client

    async def campaign(self) -> Win:
        """Queue as a candidate and wait until this process leads.  Trouble
        with ZooKeeper (a lost connection, an expired session) is waited
        out: the candidacy goes on with the same node while it exists."""
        while True:
            try:
                return await self._campaign_once()
            except (KazooException, StorageError, _Vanished) as e:
                log.warning("candidacy_interrupted error=%r (trying again)", e)
                await trio.sleep(0.5)

    async def _campaign_once(self) -> Win:
        await self.store.connect()
        client = self._client()
        await trio.to_thread.run_sync(client.ensure_path, self.election_dir)
        await trio.to_thread.run_sync(client.ensure_path, self.leader_path)
        candidate = self._candidate
        if candidate is None or await trio.to_thread.run_sync(client.exists, candidate) is None:
            data = encode_leader(LeaderRecord(epoch=0, id=self.participant_id, url=self.url))
            candidate = self._candidate = await trio.to_thread.run_sync(functools.partial(
                client.create, f"{self.election_dir}/{uuid.uuid4().hex}{_LOCK_MARK}", data,
                ephemeral=True, sequence=True))
            log.info("candidate path=%s id=%s", candidate, self.participant_id)
        try:
            return await self._queue(candidate)
        except _Vanished:
            log.info("candidate_vanished path=%s (session lost): queueing again", candidate)
            self._candidate = None
            raise
        except (KazooException, StorageError):
            raise  # the node may still be ours: the next attempt goes on with it
        except BaseException:
            self._candidate = None
            with trio.CancelScope(shield=True):
                await self._delete(candidate)
            raise

    async def _queue(self, candidate: str) -> Win:
        while True:
            predecessor = await self._predecessor(candidate)
            if predecessor is None:
                win = await self._try_win(candidate)
                if win is not None:
                    return win
                await trio.sleep(0.1)  # the check failed: _predecessor tells why
                continue
            # Re-checked now and then: a watch set on a session that then
            # expired never fires.
            with trio.move_on_after(2.0):
                await self._wait_deleted(predecessor)

    async def _predecessor(self, candidate: str) -> str | None:
        """The candidate just before ours, or None if ours is the first."""
        client = self._client()
        children = await trio.to_thread.run_sync(client.get_children, self.election_dir)
        mine = candidate.rsplit("/", 1)[1]
        queue = sorted((c for c in children if _LOCK_MARK in c), key=_sequence)
        if mine not in queue:
            raise _Vanished(candidate)
        at = queue.index(mine)
        return None if at == 0 else f"{self.election_dir}/{queue[at - 1]}"

    async def _wait_deleted(self, path: str) -> None:
        client = self._client()
        token = trio.lowlevel.current_trio_token()
        gone = trio.Event()

        def watch(_event: object) -> None:
            try:
                token.run_sync_soon(gone.set)
            except trio.RunFinishedError:
                pass

        if await trio.to_thread.run_sync(functools.partial(client.exists, path, watch=watch)) is None:
            return
        await gone.wait()

    async def _try_win(self, candidate: str) -> Win | None:
        client = self._client()
        data, stat = await trio.to_thread.run_sync(client.get, self.leader_path)
        previous = decode_leader(data)
        epoch = (previous.epoch if previous is not None else 0) + 1
        record = LeaderRecord(epoch=epoch, id=self.participant_id, url=self.url, since=int(time.time() * 1000))
        tx = client.transaction()
        tx.check(candidate, 0)
        tx.set_data(self.leader_path, encode_leader(record), stat.version)
        results = await trio.to_thread.run_sync(tx.commit)
        if any(isinstance(r, Exception) for r in results):
            log.info("election_cas_failed candidate=%s results=%r", candidate, results)
            return None
        new_stat = results[1]
        log.info("elected id=%s epoch=%d fence_version=%d", self.participant_id, epoch, new_stat.version)
        return Win(epoch=epoch, fence_version=new_stat.version, candidate=candidate, record=record)

    async def verify(self, win: Win) -> bool:
        """After a reconnect on the same session: do we still lead?"""
        client = self._client()
        try:
            await trio.to_thread.run_sync(client.sync, self.leader_path)
            _data, stat = await trio.to_thread.run_sync(client.get, self.leader_path)
            exists = await trio.to_thread.run_sync(client.exists, win.candidate)
        except Exception as e:  # connection trouble again: not verified
            log.warning("leadership_verify_failed error=%r", e)
            return False
        return stat.version == win.fence_version and exists is not None

    async def fence_moved(self, win: Win) -> None:
        """Return once the leader node is no longer ours (another leader
        wrote it, or it is gone), or our candidate node is deleted."""
        client = self._client()
        token = trio.lowlevel.current_trio_token()
        while True:
            changed = trio.Event()

            def watch(_event: object, changed: trio.Event = changed) -> None:
                try:
                    token.run_sync_soon(changed.set)
                except trio.RunFinishedError:
                    pass

            try:
                _data, stat = await trio.to_thread.run_sync(
                    functools.partial(client.get, self.leader_path, watch=watch))
                if stat.version != win.fence_version:
                    return
                if await trio.to_thread.run_sync(functools.partial(client.exists, win.candidate, watch=watch)) is None:
                    return
            except NoNodeError:
                return
            except Exception as e:  # connection trouble: the session listener decides
                log.debug("fence_watch_error error=%r", e)
                await trio.sleep(0.5)
                continue
            # Re-read now and then: kazoo drops its watches with the connection.
            with trio.move_on_after(2.0):
                await changed.wait()

    async def resign(self, win: Win) -> None:
        if self._candidate == win.candidate:
            self._candidate = None
        await self._delete(win.candidate)

    async def _delete(self, path: str) -> None:
        client = self.store.kazoo_client
        if client is None:
            return
        try:
            await trio.to_thread.run_sync(client.delete, path)
        except NoNodeError:
            pass
        except Exception as e:  # the session is gone: so is the ephemeral node
            log.info("candidate_delete_failed path=%s error=%r", path, e)

    async def current(self) -> LeaderRecord | None:
        client = self._client()
        try:
            data, _stat = await trio.to_thread.run_sync(client.get, self.leader_path)
        except NoNodeError:
            return None
        return decode_leader(data)


class _Vanished(Exception):
    pass


def _sequence(name: str) -> int:
    try:
        return int(name.rsplit(_LOCK_MARK, 1)[1])
    except (IndexError, ValueError):
        return 1 << 62


async def cluster_id_of(store: ZooKeeperStore) -> str:
    """The cluster's id, made once by whichever master comes first."""
    made = await store.create_meta("cluster-id", str(uuid.uuid4()).encode())
    return made.decode().strip()


__all__ = ["Election", "NodeExistsError", "Win", "cluster_id_of"]
