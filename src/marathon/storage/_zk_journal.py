"""Big commits of the ZooKeeper store (zk.py): a commit that does not fit
one multi, kept all-or-nothing through a journal under a store-wide lock,
and the recovery of one whose holder died.

    <root>/state/@lock                    the big-commit lock
    <root>/state/@holder                  ephemeral: the session holding @lock
    <root>/state/@journal/<txid>-<i>      a big commit's pending multis

ZooKeeper refuses a request over jute.maxbuffer (1 MiB) and drops the
connection, so multis are capped by encoded bytes, paths and framing
included: `max_multi_bytes`, 128 KB by default and at most 512 KB
(ZooKeeper holds its last 500 transactions in memory, so bigger multis cost
server heap, not speed: see DEFAULT_MULTI_BYTES).  A lone value up to the
1,024,000 B limit goes in a multi of its own.  The contract promises
all-or-nothing for a commit of any size, and the instance tracker and the
group service rely on it (a deploy burst commits up to 20,000 instances at
once), so a commit that does not fit one multi is neither refused nor
split: it goes through a journal.  It takes @lock (which fails every other
writer's multi until released), checks its assumptions under it, writes
its multis as journal nodes, and commits by marking the lock "committed" in
one multi: that is its commit point.  It then applies each journal node in
a multi that also deletes the node, and releases the lock.  Readers wait
while the clock says a commit is being applied, so nobody sees half of it.
If the holder dies, the next store that meets the lock (its holder node
gone, or the holder's fence moved) takes it over and finishes the commit:
applies what is left of a committed one, drops a prepared one.  A big
commit costs its bytes twice and a few round trips more; anything that fits
one multi never touches the journal.

Within one store, `_Gate` keeps a big commit alone among the store's own
trio tasks: commits that fit one multi and reads share it.
"""

from __future__ import annotations

import builtins
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import msgspec
import trio
from kazoo.client import KazooClient
from kazoo.exceptions import NodeExistsError, NoNodeError
from kazoo.protocol.serialization import GetChildren, GetData

from marathon.errors import StorageError

from ._zk_wire import (
    _ANY,
    _CHECK,
    _CREATE,
    _DELETE,
    _EPHEMERAL,
    _LOSS,
    _MAX_ATTEMPTS,
    _SET,
    _UNKNOWN,
    _failed_at,
    _Group,
    _LockLost,
    _op_size,
    _Plan,
    _Unknown,
    _wait_all,
    _ZkOp,
)
from .contract import FencedOut, Op, VersionConflict, _Resolution

# The store's logger: these warnings are the store's.
log = logging.getLogger("marathon.storage.zk")

_decode_ops = msgspec.msgpack.Decoder(list[tuple[int, str, bytes | None, int]]).decode
_encode_msgpack = msgspec.msgpack.Encoder().encode


class _Gate:
    """Shared or exclusive use of the store among its own trio tasks:
    commits that fit one multi and reads share, a big commit is alone.  A
    task that holds it in either mode passes again (never upgrades)."""

    def __init__(self) -> None:
        self._sharers: set[object] = set()
        self._owner: object | None = None
        self._waiting = 0  # exclusive waiters, who go before new sharers
        self._event: trio.Event | None = None

    def _changed(self) -> trio.Event:
        if self._event is None:
            self._event = trio.Event()
        return self._event

    def _notify(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None

    @asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        task = trio.lowlevel.current_task()
        if task in self._sharers or task is self._owner:
            yield
            return
        while self._owner is not None or self._waiting:
            await self._changed().wait()
        self._sharers.add(task)
        try:
            yield
        finally:
            self._sharers.discard(task)
            self._notify()

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        task = trio.lowlevel.current_task()
        if task in self._sharers or task is self._owner:
            yield
            return
        self._waiting += 1
        try:
            while self._owner is not None or self._sharers:
                await self._changed().wait()
        finally:
            self._waiting -= 1
            self._notify()
        self._owner = task
        try:
            yield
        finally:
            self._owner = None
            self._notify()


class _Journal:
    """The big-commit half of `ZooKeeperStore`, which inherits it.

    It shares the store's state, set by the store's `__init__`, and uses
    these of its methods: `_zk`, `_read`, `_transact`, `_wait_connected`,
    `_plan`, `_learn`, `_versions`, `_ensure_buckets`, `_fence_ops` and
    `_fenced_out`.  The store calls `_commit_journal` for a commit over
    one multi, and `_wait_unlocked` wherever it meets @lock taken.
    """

    root: str
    fence: tuple[str, int] | None
    max_multi_bytes: int
    _state_path: str
    _lock: str
    _holder: str
    _journal_dir: str
    _gate: _Gate
    _recovery_lock: trio.Lock
    # @lock's version while it is free; None: not known to be free.
    _lock_version: int | None
    # This store is between taking @lock and giving it back.
    _journal_active: bool

    if TYPE_CHECKING:  # the store's methods this class calls
        def _zk(self) -> KazooClient: ...
        async def _read(self, requests: list) -> list: ...
        async def _transact(self, multis: list[list[_ZkOp]]) -> list[list]: ...
        async def _wait_connected(self) -> None: ...
        def _plan(self, ops: list[Op], fresh: dict[str, int] | None) -> _Plan: ...
        def _learn(self, plan: _Plan) -> None: ...
        async def _versions(self, keys: Sequence[str]) -> dict[str, int]: ...
        async def _ensure_buckets(self, groups: Sequence[_Group]) -> None: ...
        def _fence_ops(self) -> list[_ZkOp]: ...
        def _fenced_out(self) -> FencedOut: ...

    async def _commit_journal(
        self, ops: builtins.list[Op], keys: builtins.list[str], plan: _Plan, in_thread: bool
    ) -> _Resolution:
        async with self._gate.exclusive():
            for _ in range(_MAX_ATTEMPTS):
                if self._lock_version is None:
                    await self._wait_unlocked()
                self._journal_active = True
                try:
                    with trio.CancelScope(shield=True):
                        done = await self._journal(ops, keys, plan, in_thread)
                finally:
                    self._journal_active = False
                if done is not None:
                    return done.resolution
                plan = await self._replan(ops, keys, in_thread)
        raise StorageError(f"ZooKeeper store {self.root}: big commit kept losing its lock")

    async def _replan(self, ops: builtins.list[Op], keys: builtins.list[str], in_thread: bool) -> _Plan:
        fresh = await self._versions(keys)
        if in_thread:
            return await trio.to_thread.run_sync(self._plan, ops, fresh)
        return self._plan(ops, fresh)

    def _lock_info(self, txid: str, state: str, chunks: int = 0) -> bytes:
        client_id = self._zk().client_id
        return msgspec.json.encode(
            {
                "txid": txid,
                "state": state,
                "chunks": chunks,
                "session": f"{client_id[0]:x}" if client_id else "",
                "fence": builtins.list(self.fence) if self.fence else None,
            }
        )

    async def _journal(
        self, ops: builtins.list[Op], keys: builtins.list[str], plan: _Plan, in_thread: bool
    ) -> _Plan | None:
        """One try at a big commit: the plan applied, or None to plan again
        and retry (nothing applied)."""
        txid = uuid.uuid4().hex
        acquire = [
            *self._fence_ops(),
            (_SET, self._lock, self._lock_info(txid, "preparing"), self._lock_version),
            (_EPHEMERAL, self._holder, b"", 0),
        ]
        try:
            (results,) = await self._transact([acquire])
        except _UNKNOWN:
            await self._wait_connected()
            held = await self._lock_held_by(txid)
            if held is None:
                self._lock_version = None
                return None
        else:
            failed = _failed_at(results)
            if failed is not None:
                if self.fence is not None and failed == 0:
                    raise self._fenced_out()
                if isinstance(results[failed], NodeExistsError):
                    raise StorageError(f"ZooKeeper store {self.root}: {self._holder} exists while the lock is free")
                self._lock_version = None
                return None
            assert self._lock_version is not None
            held = self._lock_version + 1
        self._lock_version = None
        committed = point_sent = False
        try:
            while True:
                plan = await self._check_absent(ops, keys, plan, in_thread)
                await self._ensure_buckets(plan.groups)
                chunks = self._chunks(plan)
                retry = await self._write_journal(txid, held, chunks)
                if not retry:
                    break
                await self._drop_journal(txid, held)
                plan = await self._replan(ops, keys, in_thread)
            point_sent = True
            point = [
                *self._fence_ops(),
                (_SET, self._lock, self._lock_info(txid, "committed", len(chunks)), held),
                (_SET, self._state_path, b"L" + txid.encode(), -1),
            ]
            (results,) = await self._transact([point])
            failed = _failed_at(results)
            if failed is not None:
                if self.fence is not None and failed == 0:
                    raise self._fenced_out()
                raise _LockLost()
            held += 1
            committed = True
            names = [f"{txid}-{i:06d}" for i in range(len(chunks))]
            await self._apply_chunks(txid, held, [(n, ops) for n, (ops, _) in zip(names, chunks, strict=True)])
            await self._release(held)
        except _LockLost:
            # Whoever took the lock finishes a committed commit and drops
            # a prepared one.
            if committed:
                self._learn(plan)
                return plan
            return None
        except _UNKNOWN:
            await self._wait_connected()
            held_now = await self._lock_held_by(txid)
            if held_now is not None:
                info = msgspec.json.decode(await self._lock_data())
                committed = info["state"] == "committed"
                await self._finish(txid, committed, held_now)
            elif not point_sent:
                return None  # the store that took the lock drops what we prepared
            elif not committed:
                raise StorageError(
                    f"ZooKeeper store {self.root}: the connection was lost during a big commit and "
                    "another store took its lock over: whether it was applied is unknown"
                ) from None
            if committed:
                self._learn(plan)
                return plan
            return None
        except (VersionConflict, FencedOut, StorageError):
            if not committed:
                # Nothing was applied: drop the journal, free the lock (no
                # fence needed: neither changes a key).
                try:
                    await self._finish(txid, False, held)
                except (*_UNKNOWN, _LockLost, StorageError):
                    log.warning("could not release the big-commit lock of %s; the next store recovers it", self.root)
            raise
        self._learn(plan)
        return plan

    async def _check_absent(
        self, ops: builtins.list[Op], keys: builtins.list[str], plan: _Plan, in_thread: bool
    ) -> _Plan:
        """Under the lock: make sure keys assumed absent are, by listing
        their buckets (one small request per bucket, not one per key)."""
        absent = [g for g in plan.groups if g.start is None]
        buckets = builtins.list({g.path.rpartition("/")[0] for g in absent})
        listed: dict[str, set[str]] = {}
        for bucket, result in zip(buckets, await self._read([GetChildren(b, None) for b in buckets]), strict=True):
            if isinstance(result, builtins.list):
                listed[bucket] = set(result)
        for group in absent:
            bucket, _, name = group.path.rpartition("/")
            if name in listed.get(bucket, ()):
                return await self._replan(ops, keys, in_thread)
        return plan

    def _chunks(self, plan: _Plan) -> builtins.list[tuple[builtins.list[_ZkOp], builtins.list[_ZkOp]]]:
        """The groups packed into journal nodes: (ops, checks of the
        versions they assume), each leaving an eighth of `max_multi_bytes`
        for the rest of its multi, unless one group alone is bigger."""
        budget = self.max_multi_bytes * 7 // 8
        chunks = []
        ops: builtins.list[_ZkOp] = []
        checks: builtins.list[_ZkOp] = []
        size = 0
        for group in plan.groups:
            check: builtins.list[_ZkOp] = []
            if group.start is not None:
                check = [(_CHECK, group.path, None, -1 if group.start is _ANY else group.start - 1)]
            extra = group.size + (_op_size(check[0], 0) if check else 0)
            if ops and size + extra > budget:
                chunks.append((ops, checks))
                ops, checks, size = [], [], 0
            ops += group.ops
            checks += check
            size += extra
        if ops:
            chunks.append((ops, checks))
        return chunks

    async def _write_journal(self, txid: str, held: int, chunks: builtins.list) -> bool:
        """Write the journal nodes, each with the checks of its keys'
        assumed versions; True if some assumption was wrong."""
        multis = [
            [
                *self._fence_ops(),
                (_CHECK, self._lock, None, held),
                (_CREATE, f"{self._journal_dir}/{txid}-{i:06d}", _encode_msgpack(ops), 0),
                *checks,
            ]
            for i, (ops, checks) in enumerate(chunks)
        ]
        stale = False
        for results in await self._transact(multis):
            failed = _failed_at(results)
            if failed is None:
                continue
            if self.fence is not None and failed == 0:
                raise self._fenced_out()
            if failed == len(self._fence_ops()):
                raise _LockLost()
            stale = True
        return stale

    async def _apply_chunks(
        self, txid: str, held: int, chunks: builtins.list[tuple[str, builtins.list[_ZkOp]]]
    ) -> None:
        """Apply journal nodes (name, ops) of a committed big commit, each
        in a multi that deletes its node (after the commit point: nothing
        stops this but losing the lock)."""
        mark = b"L" + txid.encode()
        multis = [
            [
                (_CHECK, self._lock, None, held),
                (_SET, self._state_path, mark, -1),
                *ops,
                (_DELETE, f"{self._journal_dir}/{name}", None, -1),
            ]
            for name, ops in chunks
        ]
        for results in await self._transact(multis):
            failed = _failed_at(results)
            if failed == 0:
                raise _LockLost()
            if failed is not None:
                raise StorageError(
                    f"ZooKeeper store {self.root}: a committed journal entry failed ({results[failed]!r}): "
                    "a writer ignored the store lock"
                )

    async def _release(self, held: int) -> None:
        (results,) = await self._transact(
            [
                [
                    (_SET, self._lock, b"", held),
                    (_DELETE, self._holder, None, -1),
                    (_SET, self._state_path, b"", -1),
                ]
            ]
        )
        failed = _failed_at(results)
        if failed == 0:
            raise _LockLost()
        if failed is not None and not isinstance(results[failed], NoNodeError):
            raise StorageError(f"ZooKeeper store {self.root}: releasing the lock: {results[failed]!r}")
        if failed is not None:  # our holder node went with an old session
            (results,) = await self._transact(
                [[(_SET, self._lock, b"", held), (_SET, self._state_path, b"", -1)]]
            )
            if _failed_at(results) is not None:
                raise _LockLost()
        self._lock_version = held + 1

    async def _drop_journal(self, txid: str | None, held: int) -> None:
        """Delete journal nodes (of `txid`, or all) under the lock."""
        client = self._zk()
        pending = client.get_children_async(self._journal_dir)
        await _wait_all([pending])
        try:
            names = pending.get_nowait()
        except _LOSS as exc:
            raise _Unknown(repr(exc)) from exc
        names = [n for n in names if txid is None or n.startswith(txid)]
        multis = [
            [(_CHECK, self._lock, None, held)]
            + [(_DELETE, f"{self._journal_dir}/{n}", None, -1) for n in names[i : i + 1000]]
            for i in range(0, len(names), 1000)
        ]
        for results in await self._transact(multis):
            if _failed_at(results) == 0:
                raise _LockLost()

    async def _finish(self, txid: str, committed: bool, held: int) -> None:
        """With the lock at `held`: apply what is left of a committed big
        commit or drop a prepared one, clear the journal, free the lock."""
        if committed:
            client = self._zk()
            pending = client.get_children_async(self._journal_dir)
            await _wait_all([pending])
            names = sorted(n for n in pending.get_nowait() if n.startswith(txid))
            chunks = []
            results = await self._read([GetData(f"{self._journal_dir}/{n}", None) for n in names])
            for name, result in zip(names, results, strict=True):
                if isinstance(result, NoNodeError):
                    continue  # applied already
                if isinstance(result, Exception):
                    raise StorageError(f"ZooKeeper store {self.root}: reading journal {name}: {result!r}")
                chunks.append((name, _decode_ops(result[0])))
            await self._apply_chunks(txid, held, chunks)
        await self._drop_journal(None, held)
        await self._release(held)

    async def _lock_data(self) -> bytes:
        ((data, _),) = await self._read([GetData(self._lock, None)])
        return data

    async def _lock_held_by(self, txid: str) -> int | None:
        """@lock's version if `txid` holds it, else None."""
        (result,) = await self._read([GetData(self._lock, None)])
        if isinstance(result, Exception):
            raise StorageError(f"ZooKeeper store {self.root}: {result!r}")
        data, stat = result
        if data and msgspec.json.decode(data).get("txid") == txid:
            return stat.version
        return None

    # -- meeting the lock: wait, or take over from a holder that is gone --

    async def _wait_unlocked(self) -> None:
        """Return once @lock is free (learning its version), finishing the
        big commit of a holder that is gone (its session ended, its fence
        moved, or it is this store after a lost connection)."""
        delay = 0.005
        while True:
            try:
                lock, holder = await self._read([GetData(self._lock, None), GetData(self._holder, None)])
            except _LOSS:
                await self._wait_connected()
                continue
            if isinstance(lock, Exception):
                raise StorageError(f"ZooKeeper store {self.root}: {lock!r}")
            data, stat = lock
            if not data:
                self._lock_version = stat.version
                return
            info = msgspec.json.decode(data)
            try:
                if await self._may_take_over(info, holder):
                    async with self._recovery_lock:
                        await self._take_over(info, stat.version, not isinstance(holder, NoNodeError))
                    continue
            except _UNKNOWN:
                await self._wait_connected()
                continue
            await trio.sleep(delay)
            delay = min(delay * 2, 0.25)

    async def _may_take_over(self, info: dict, holder: Any) -> bool:
        if isinstance(holder, NoNodeError):
            return True
        client_id = self._zk().client_id
        if client_id and info.get("session") == f"{client_id[0]:x}" and not self._journal_active:
            return True  # ours, from a try that lost its connection
        fence = info.get("fence")
        if fence:
            (result,) = await self._read([GetData(fence[0], None)])
            return isinstance(result, NoNodeError) or (
                not isinstance(result, Exception) and result[1].version != fence[1]
            )
        return False

    async def _take_over(self, info: dict, version: int, holder_exists: bool) -> None:
        zops = [*self._fence_ops(), (_SET, self._lock, self._lock_info(info["txid"], info["state"]), version)]
        if holder_exists:
            zops.append((_DELETE, self._holder, None, -1))
        zops.append((_EPHEMERAL, self._holder, b"", 0))
        with trio.CancelScope(shield=True):
            try:
                (results,) = await self._transact([zops])
            except _UNKNOWN:
                return  # look again
            failed = _failed_at(results)
            if failed is not None:
                if self.fence is not None and failed == 0:
                    raise self._fenced_out()
                return  # someone moved first
            log.warning(
                "finishing a big commit whose holder is gone root=%s txid=%s state=%s",
                self.root, info["txid"], info["state"],
            )
            try:
                await self._finish(info["txid"], info["state"] == "committed", version + 1)
            except (*_UNKNOWN, _LockLost):
                return
