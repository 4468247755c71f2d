"""`ZooKeeperStore`: the `Store` contract on ZooKeeper, the shared state of
a cluster of masters (CLUSTER.md 3.2 and 5).  kazoo is imported here and in
this module's two private halves, and nowhere else in the store:
_zk_wire.py (how keys, values and multis are encoded) and _zk_journal.py
(big commits).

Layout under the root path of the zk:// URL:

    <root>/state                          its data and version are the clock (Reads)
    <root>/state/<category>/<bucket>/<n>  one key per znode
    <root>/state/@lock                    the big-commit lock (_zk_journal.py)
    <root>/state/@holder                  ephemeral: the session holding @lock
    <root>/state/@journal/<txid>-<i>      a big commit's pending multis

A key is one znode in a category (its first path segment) and one of 256
hash buckets, its name percent-encoded (_zk_wire.py).  Categories and
buckets are created on first use, never deleted.  Versions are the znode's
dataVersion + 1 (a created node has version 1), the contract's versions.  A
node's data is a marker byte and the value, zlib-compressed when over
`compression_threshold` (64 KB) and smaller for it; the size limit is on
the value as given.

Commits.  A commit is planned against assumed versions: an op's own
expectation, else the version this store last saw (its reads and commits;
`forget()` drops them), else "absent" for a put and "present" for a
delete.  `_resolve` computes the outcome, and the multi guards every
assumption with the key's first operation (`set_data`/`delete`/`check` at
that version, `create` for absence, `create`+`delete` for a key only
checked absent).  A wrong assumption fails the multi, which ZooKeeper
returns as results, not raises; the store then reads the keys (one
consistent read), plans again and raises `VersionConflict` with what the
memory store would say.  Every multi also checks @lock and bumps the clock,
and with a `fence` it starts with `check(fence path, fence version)`, which
fails as `FencedOut`.  Commits of several trio tasks are in flight
together; each one is a single multi, so ZooKeeper orders them.  Multis are
capped by encoded bytes (`max_multi_bytes`, 128 KB by default, at most
512 KB); a commit that does not fit one is still all-or-nothing: it goes
through a journal under @lock (_zk_journal.py).

Reads.  Reads use ZooKeeper's multiRead (3.6+; kazoo has no call for it,
so `_MultiRead` goes through kazoo's request queue): a get is one request,
a get_many or scan of 10,000 keys is twenty.  A read of several keys is
bracketed by two reads of the clock, which every commit bumps; if the clock
moved it is read again (after three tries, with this store's own commits
held back), so `get_many`, `list` and `scan` are snapshots, as in memory.
Readers wait while the clock says a big commit is being applied.

Sessions.  `state` is "connected", "suspended" or "lost" ("lost" also
before the first connection and after `aclose`); `add_state_listener(fn)`
has `fn(state)` called in the trio thread at each change, handed over from
kazoo's thread with `TrioToken.run_sync_soon`.  If the connection drops
while a multi is in flight, the store waits for it to come back (at most
`session_timeout`), reads the keys and tells from them whether the commit
was applied; only if other writers changed those keys meanwhile does it
raise `StorageError` saying the outcome is unknown.  A commit that has sent
its multi always finishes before its caller sees `Cancelled`.

Credentials: zk://user:pass@host:port/path authenticates with digest auth,
and every node the store creates gets the ACL "digest user:pass, all
permissions" (the root path's missing parents included).
"""

from __future__ import annotations

import builtins
import functools
import itertools
from collections.abc import Awaitable, Callable, Sequence
from operator import itemgetter
from typing import Any, TypeVar

import trio
from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NodeExistsError, NoNodeError
from kazoo.protocol.serialization import GetChildren, GetData
from kazoo.protocol.states import KazooState
from kazoo.security import make_digest_acl

from marathon.config import parse_zk_url
from marathon.errors import StorageError

from ._zk_journal import _Gate, _Journal
from ._zk_wire import (
    _ANY,
    _CHECK,
    _CREATE,
    _IN_FLIGHT,
    _LOSS,
    _MAX_ATTEMPTS,
    _READS_PER_REQUEST,
    _REQUEST_MAX_BYTES,
    _SET,
    _UNKNOWN,
    _UNSEEN,
    DEFAULT_MULTI_BYTES,
    MULTI_MAX_BYTES,
    _category_may_match,
    _decode_value,
    _escape,
    _failed_at,
    _Group,
    _group,
    _key_of,
    _key_parts,
    _LockLost,
    _MultiRead,
    _path_size,
    _Plan,
    _stop,
    _submit,
    _Unknown,
    _wait_all,
    _ZkOp,
)
from .contract import (
    DEFAULT_MAX_VALUE_SIZE,
    CommitShortcuts,
    Delete,
    Entry,
    FencedOut,
    Op,
    Put,
    VersionConflict,
    _check_key,
    _check_prefix,
    _Resolution,
    _resolve,
    _validate_ops,
)

__all__ = ["DEFAULT_MULTI_BYTES", "MULTI_MAX_BYTES", "FencedOut", "ZooKeeperStore", "parse_zk_url"]

_T = TypeVar("_T")

# Plan (and compress) in a worker thread above these, off the event loop.
_PLAN_INLINE_OPS = 2000
_PLAN_INLINE_BYTES = 1 << 20
# A read retried this often holds this store's own commits back.
_EXCLUSIVE_AFTER = 3
# The versions remembered for planning; forgotten all at once beyond this.
_KNOWN_MAX = 1_000_000

_STATES = {KazooState.CONNECTED: "connected", KazooState.SUSPENDED: "suspended", KazooState.LOST: "lost"}


class ZooKeeperStore(_Journal, CommitShortcuts):
    """A `Store` in ZooKeeper under `root`; see the module docstring.

    `hosts` is kazoo's "host:port,host:port"; `auth` (user, password) turns
    on digest auth and ACLs; `fence` (path, dataVersion) makes every commit
    check that node first and raise `FencedOut` if it moved (set or change
    it at any time: the election sets it when it wins).  `max_multi_bytes`
    caps a multi (128 KB by default, at most 512 KB); values over
    `compression_threshold` are zlib-compressed; `session_timeout` is
    kazoo's; `operation_timeout` (default: the session timeout) is how long
    a call waits for a lost connection to come back.  Opening does no I/O: the session starts on first use or with
    `connect()`.
    """

    def __init__(
        self,
        hosts: str,
        root: str,
        *,
        auth: tuple[str, str] | None = None,
        fence: tuple[str, int] | None = None,
        max_value_size: int = DEFAULT_MAX_VALUE_SIZE,
        compression_threshold: int = 64 * 1024,
        session_timeout: float = 10.0,
        operation_timeout: float | None = None,
        connect_timeout: float = 15.0,
        max_multi_bytes: int = DEFAULT_MULTI_BYTES,
    ) -> None:
        if not 0 <= max_value_size <= DEFAULT_MAX_VALUE_SIZE:
            raise ValueError(
                f"max_value_size must be at most {DEFAULT_MAX_VALUE_SIZE} on ZooKeeper "
                f"(jute.maxbuffer), got {max_value_size}"
            )
        if not 16 * 1024 <= max_multi_bytes <= MULTI_MAX_BYTES:
            raise ValueError(f"max_multi_bytes must be within 16 KB and {MULTI_MAX_BYTES}, got {max_multi_bytes}")
        if not root.startswith("/") or root == "/" or root.endswith("/"):
            raise ValueError(f"root must be an absolute znode path such as /marathon, got {root!r}")
        self.hosts = hosts
        self.root = root
        self.fence = fence
        self.max_value_size = max_value_size
        self.compression_threshold = compression_threshold
        self.session_timeout = session_timeout
        # How long a call waits for a lost connection to come back (--zk_timeout).
        self.operation_timeout = session_timeout if operation_timeout is None else operation_timeout
        self.connect_timeout = connect_timeout
        self.max_multi_bytes = max_multi_bytes
        self.state = "lost"
        self._auth = auth
        self._acl = [make_digest_acl(auth[0], auth[1], all=True)] if auth else None
        # world:anyone (perms, "world", "anyone") or the digest ACL, encoded.
        self._acl_size = 12 + (len(self._acl[0].id.scheme) + len(self._acl[0].id.id) if self._acl else 11)
        self._state_path = f"{root}/state"
        self._lock = f"{root}/state/@lock"
        self._holder = f"{root}/state/@holder"
        self._journal_dir = f"{root}/state/@journal"
        self._client: KazooClient | None = None
        self._closed = False
        self._connect_lock = trio.Lock()
        self._recovery_lock = trio.Lock()
        self._gate = _Gate()
        self._listeners: list[tuple[Callable[[str], object], trio.lowlevel.TrioToken]] = []
        # Tasks waiting for the connection to come back.
        self._waiters: list[tuple[trio.Event, trio.lowlevel.TrioToken]] = []
        # @lock's version while it is free; None: not known to be free.
        self._lock_version: int | None = None
        self._journal_active = False
        # What this store last saw of keys (contract versions), for planning.
        self._known: dict[str, int] = {}
        # Categories and buckets known to exist.
        self._nodes: set[str] = set()

    def __repr__(self) -> str:
        return f"<ZooKeeperStore {self.hosts}{self.root} {self.state}{' closed' if self._closed else ''}>"

    @property
    def kazoo_client(self) -> KazooClient | None:
        """The session's kazoo client (None before `connect()`), for the
        election beside this module: one session for both."""
        return self._client

    # -- sessions --

    def add_state_listener(self, fn: Callable[[str], object]) -> None:
        """Call `fn(state)` in this trio run's thread on every session state
        change ("connected", "suspended", "lost").  `fn` must not block."""
        self._listeners.append((fn, trio.lowlevel.current_trio_token()))

    def remove_state_listener(self, fn: Callable[[str], object]) -> None:
        self._listeners = [(f, t) for f, t in self._listeners if f is not fn]

    def _on_state(self, state: str) -> None:
        # kazoo's thread: never block here, hand over to trio.
        self.state = _STATES.get(state, "lost")
        if state == KazooState.CONNECTED:
            self._wake_waiters()
        for fn, token in builtins.list(self._listeners):
            try:
                token.run_sync_soon(fn, self.state)
            except trio.RunFinishedError:
                pass

    def _wake_waiters(self) -> None:
        for event, token in builtins.list(self._waiters):
            try:
                token.run_sync_soon(event.set)
            except trio.RunFinishedError:
                pass

    async def connect(self) -> None:
        """Start the session and create the store's base nodes (idempotent)."""
        async with self._connect_lock:
            if self._closed:
                raise trio.ClosedResourceError("store is closed")
            if self._client is not None:
                return
            client = KazooClient(
                hosts=self.hosts,
                timeout=self.session_timeout,
                auth_data=[("digest", f"{self._auth[0]}:{self._auth[1]}")] if self._auth else None,
                default_acl=self._acl,
                # kazoo's default backs off to an hour between reconnections.
                connection_retry={"max_tries": -1, "delay": 0.05, "backoff": 2, "max_delay": 1.0},
            )
            client.add_listener(self._on_state)
            try:
                await trio.to_thread.run_sync(functools.partial(client.start, timeout=self.connect_timeout))
                await trio.to_thread.run_sync(self._prepare, client)
            except BaseException as exc:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(_stop, client)
                if isinstance(exc, Exception):
                    raise StorageError(f"ZooKeeper store {self.hosts}{self.root}: {exc!r}") from exc
                raise
            self._client = client

    def _prepare(self, client: KazooClient) -> None:
        for path in (self._state_path, self._lock, self._journal_dir):
            client.ensure_path(path)
        data, stat = client.get(self._lock)
        self._lock_version = None if data else stat.version

    async def aclose(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        self._wake_waiters()
        client, self._client = self._client, None
        if client is None:
            await trio.lowlevel.checkpoint()
            return
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_stop, client)
        self.state = "lost"

    async def _enter(self) -> KazooClient:
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise trio.ClosedResourceError("store is closed")
        if self._client is None:
            await self.connect()
        assert self._client is not None
        return self._client

    def _zk(self) -> KazooClient:
        client = self._client
        if client is None:
            raise trio.ClosedResourceError("store is closed")
        return client

    async def _wait_connected(self) -> None:
        """Wait for the connection to come back, at most `operation_timeout`."""
        with trio.move_on_after(self.operation_timeout):
            while not self._zk().connected:
                waiter = (trio.Event(), trio.lowlevel.current_trio_token())
                self._waiters.append(waiter)
                try:
                    # Checked after registering: kazoo marks the session
                    # live before it calls the listeners.
                    if not self._zk().connected:
                        await waiter[0].wait()
                finally:
                    self._waiters.remove(waiter)
            return
        raise StorageError(
            f"ZooKeeper {self.hosts} unreachable for {self.operation_timeout:g} s"
        )

    # -- nodes beside the keyspace (<root>/cluster-id, ...) --

    async def read_meta(self, name: str) -> bytes | None:
        """The data of `<root>/<name>`, or None if there is no such node."""
        await self._enter()
        (result,) = await self._read([GetData(f"{self.root}/{name}", None)])
        if isinstance(result, NoNodeError):
            return None
        if isinstance(result, Exception):
            raise StorageError(f"ZooKeeper store {self.hosts}{self.root}: {result!r}")
        return result[0]

    async def create_meta(self, name: str, data: bytes) -> bytes:
        """Create `<root>/<name>` with `data` unless it exists; what it holds
        afterwards (the first writer's data wins: a cluster id is made once)."""
        client = await self._enter()
        path = f"{self.root}/{name}"
        try:
            await trio.to_thread.run_sync(functools.partial(client.create, path, data, makepath=True))
            return data
        except NodeExistsError:
            found = await self.read_meta(name)
            assert found is not None
            return found

    async def write_meta(self, name: str, data: bytes) -> None:
        """Set `<root>/<name>` to `data`, creating it if needed (for a
        restore, which replaces the cluster id on purpose)."""
        client = await self._enter()
        path = f"{self.root}/{name}"

        def write() -> None:
            try:
                client.create(path, data, makepath=True)
            except NodeExistsError:
                client.set(path, data)

        await trio.to_thread.run_sync(write)

    # -- kazoo calls from trio --

    async def _read(self, requests: list) -> list:
        """Results of GetData/GetChildren `requests`, in order: (data, stat),
        a list of children, or an exception instance (NoNodeError...).
        Raises the connection errors of `_LOSS`."""
        client = self._zk()
        pending = []
        for i in range(0, len(requests), _READS_PER_REQUEST):
            result = client.handler.async_result()
            client._call(_MultiRead(requests[i : i + _READS_PER_REQUEST]), result)
            pending.append(result)
        await _wait_all(pending)
        out: list = []
        for result in pending:
            try:
                out += result.get_nowait()
            except _LOSS:
                raise
            except KazooException as exc:
                raise StorageError(f"ZooKeeper store {self.hosts}{self.root}: {exc!r}") from exc
        return out

    async def _transact(self, multis: list[list[_ZkOp]]) -> list[list]:
        """Send `multis` (ZooKeeper applies them in order) and return their
        results; `_Unknown` if an answer was lost.  At most _IN_FLIGHT are
        sent at a time, and none after a wave in which one failed (the list
        returned is then shorter): each queued multi costs server heap."""
        out: list[list] = []
        for start in range(0, len(multis), _IN_FLIGHT):
            pending = [_submit(self._zk(), zops) for zops in multis[start : start + _IN_FLIGHT]]
            await _wait_all(pending)
            for result in pending:
                try:
                    out.append(result.get_nowait())
                except _LOSS as exc:
                    raise _Unknown(repr(exc)) from exc
                except KazooException as exc:
                    raise StorageError(f"ZooKeeper store {self.hosts}{self.root}: {exc!r}") from exc
            if any(_failed_at(results) is not None for results in out[start:]):
                break
        return out

    # -- values, paths, versions --

    def _key_path(self, key: str) -> str:
        category, bucket, name = _key_parts(key)
        return f"{self._state_path}/{category}/{bucket}/{name}"

    def _entry(self, key: str, result: Any) -> Entry | None:
        """The entry of a GetData result; remembers its version."""
        if isinstance(result, NoNodeError):
            self._known.pop(key, None)
            return None
        if isinstance(result, Exception):
            raise StorageError(f"ZooKeeper store: reading {key!r}: {result!r}")
        data, stat = result
        version = stat.version + 1
        self._remember(key, version)
        return Entry(_decode_value(key, data), version)

    def _remember(self, key: str, version: int | None) -> None:
        known = self._known
        if version is None:
            known.pop(key, None)
            return
        if len(known) >= _KNOWN_MAX:
            known.clear()
        known[key] = version

    def forget(self) -> None:
        """Forget the versions remembered for planning.  A new leader term
        calls it: another leader may have written since this store last
        looked, and a commit planned on stale versions costs a failed multi
        (a whole journal for a big one) before it reads and tries again."""
        self._known.clear()

    # -- reads --

    async def _consistent(self, body: Callable[[], Awaitable[_T]]) -> _T:
        """`body()`'s reads, bracketed by reads of the clock: repeated until
        no commit landed in between and none was half applied."""
        for attempt in itertools.count():
            gate = self._gate.exclusive() if attempt >= _EXCLUSIVE_AFTER else self._gate.shared()
            async with gate:
                client = self._zk()
                try:
                    before = client.get_async(self._state_path)  # queued ahead of body's reads
                    result = await body()
                    after = client.get_async(self._state_path)
                    await _wait_all([before, after])
                    (mark1, stat1), (mark2, stat2) = before.get_nowait(), after.get_nowait()
                except _LOSS:
                    await self._wait_connected()
                    continue
            if mark1 or mark2:
                await self._wait_unlocked()
            elif stat1.version == stat2.version:
                return result
        raise AssertionError("unreachable")

    async def get(self, key: str) -> Entry | None:
        _check_key(key)
        await self._enter()
        path = self._key_path(key)
        while True:
            async with self._gate.shared():
                try:
                    clock, result = await self._read([GetData(self._state_path, None), GetData(path, None)])
                except _LOSS:
                    await self._wait_connected()
                    continue
            # The clock is read first: if no big commit was being applied
            # then, this read is ordered before or after all of one.
            if isinstance(clock, Exception):
                raise StorageError(f"ZooKeeper store {self.root}: {clock!r}")
            if clock[0]:
                await self._wait_unlocked()
                continue
            return self._entry(key, result)

    async def get_many(self, keys: Sequence[str]) -> dict[str, Entry]:
        keys = builtins.list(keys)
        for key in keys:
            _check_key(key)
        await self._enter()
        return await self._entries(keys)

    async def _entries(self, keys: Sequence[str]) -> dict[str, Entry]:
        unique = builtins.list(dict.fromkeys(keys))

        async def body() -> dict[str, Entry]:
            results = await self._read([GetData(self._key_path(key), None) for key in unique])
            found = {}
            for key, result in zip(unique, results, strict=True):
                entry = self._entry(key, result)
                if entry is not None:
                    found[key] = entry
            return found

        return await self._consistent(body)

    async def list(self, prefix: str) -> builtins.list[str]:
        _check_prefix(prefix)
        await self._enter()
        return await self._consistent(functools.partial(self._listing, prefix, False))

    async def scan(self, prefix: str) -> builtins.list[tuple[str, Entry]]:
        _check_prefix(prefix)
        await self._enter()
        return await self._consistent(functools.partial(self._listing, prefix, True))

    async def _listing(self, prefix: str, values: bool) -> Any:
        state = self._state_path
        slash = prefix.find("/")
        if slash >= 0:
            categories = [_escape(prefix[:slash])]
        else:
            (names,) = await self._read([GetChildren(state, None)])
            if isinstance(names, Exception):
                raise StorageError(f"ZooKeeper store {self.root}: {names!r}")
            categories = [name for name in names if _category_may_match(name, prefix)]
        buckets = []
        results = await self._read([GetChildren(f"{state}/{c}", None) for c in categories])
        for category, result in zip(categories, results, strict=True):
            if isinstance(result, NoNodeError):
                continue
            if isinstance(result, Exception):
                raise StorageError(f"ZooKeeper store {self.root}: {result!r}")
            buckets += [(category, f"{state}/{category}/{bucket}") for bucket in result]
        keys: builtins.list[str] = []
        paths: builtins.list[str] = []
        results = await self._read([GetChildren(path, None) for _, path in buckets])
        for (category, path), result in zip(buckets, results, strict=True):
            if isinstance(result, NoNodeError):
                continue
            if isinstance(result, Exception):
                raise StorageError(f"ZooKeeper store {self.root}: {result!r}")
            self._nodes.add(path)
            for name in result:
                key = _key_of(category, name)
                if key.startswith(prefix):
                    keys.append(key)
                    paths.append(f"{path}/{name}")
        if not values:
            keys.sort()
            return keys
        results = await self._read([GetData(path, None) for path in paths])
        entries = []
        for key, result in zip(keys, results, strict=True):
            entry = self._entry(key, result)
            if entry is not None:
                entries.append((key, entry))
        entries.sort(key=itemgetter(0))
        return entries

    # -- commits --

    def _plan(self, ops: builtins.list[Op], fresh: dict[str, int] | None) -> _Plan:
        """The multi ops of `ops` under assumed start versions (`fresh`: the
        versions just read; else expectations and what this store knows).
        Raises VersionConflict if the ops fail under those assumptions."""
        known = self._known
        start: dict[str, Any] = {}
        for op in ops:
            key = op.key
            if key in start:
                continue
            if fresh is not None:
                start[key] = fresh.get(key)
            elif op.expected_version is not None:
                start[key] = op.expected_version or None
            elif key in known:
                start[key] = known[key]
            else:
                start[key] = _ANY if type(op) is Delete else None
        # _ANY is only ever the start of a Delete without expectation, so
        # the number given for it is never compared.
        resolution = _resolve(ops, lambda key: 1 if (s := start[key]) is _ANY else s)
        writes = resolution.writes
        threshold, acl_size = self.compression_threshold, self._acl_size
        groups = [
            _group(key, self._key_path(key), s, writes.get(key, _UNSEEN), threshold, acl_size)
            for key, s in start.items()
        ]
        return _Plan(resolution, groups, sum(group.size for group in groups))

    def _learn(self, plan: _Plan) -> None:
        writes = plan.resolution.writes
        for group in plan.groups:
            write = writes.get(group.key, _UNSEEN)
            if write is _UNSEEN:
                self._remember(group.key, group.start if isinstance(group.start, int) else None)
            else:
                self._remember(group.key, None if write is None else write[1])

    def _head_size(self) -> int:
        """Bytes of what every multi carries besides its keys' ops."""
        return 64 + _path_size(self._lock) + _path_size(self._state_path) + (
            21 + _path_size(self.fence[0]) if self.fence else 0
        )

    def _fence_ops(self) -> list[_ZkOp]:
        if self.fence is None:
            return []
        path, version = self.fence
        return [(_CHECK, path, None, version)]

    def _fenced_out(self) -> FencedOut:
        assert self.fence is not None
        return FencedOut(*self.fence)

    async def _commit_ops(self, ops: builtins.list[Op]) -> _Resolution:
        _validate_ops(ops, self.max_value_size)
        await self._enter()
        if not ops:
            return _Resolution([], [], {})
        keys = builtins.list(dict.fromkeys(op.key for op in ops))
        in_thread = len(ops) > _PLAN_INLINE_OPS or (
            sum(len(op.value) for op in ops if type(op) is Put) > _PLAN_INLINE_BYTES
        )
        fresh: dict[str, int] | None = None
        for _ in range(_MAX_ATTEMPTS):
            try:
                if in_thread:
                    plan = await trio.to_thread.run_sync(self._plan, ops, fresh)
                else:
                    plan = self._plan(ops, fresh)
            except VersionConflict:
                if fresh is not None:
                    raise
                # Under assumptions only: read what is there and decide.
                fresh = await self._versions(keys)
                continue
            if len(plan.groups) > 1 and plan.size + self._head_size() > self.max_multi_bytes:
                try:
                    return await self._commit_journal(ops, keys, plan, in_thread)
                except (*_UNKNOWN, _LockLost) as exc:
                    raise StorageError(
                        f"ZooKeeper store {self.root}: the connection failed during a big commit "
                        f"({exc!r}); it is applied whole or not at all, by this store or the next"
                    ) from exc
            if plan.size > _REQUEST_MAX_BYTES:
                raise StorageError(
                    f"ZooKeeper store: key {plan.groups[0].key[:100]!r} and its value do not fit one request"
                )
            done, fresh = await self._commit_one(plan, keys)
            if done:
                return plan.resolution
        raise StorageError(f"ZooKeeper store {self.root}: commit kept conflicting with other writers")

    async def _versions(self, keys: Sequence[str]) -> dict[str, int]:
        return {key: entry.version for key, entry in (await self._entries(keys)).items()}

    async def _commit_one(self, plan: _Plan, keys: builtins.list[str]) -> tuple[bool, dict[str, int] | None]:
        """Commit `plan` as one multi: (True, None) if applied, else
        (False, versions to plan with next, or None for what is known)."""
        async with self._gate.shared():
            await self._ensure_buckets(plan.groups)
            # Another task may learn meanwhile that the lock moved.
            while self._lock_version is None:
                await self._wait_unlocked()
            head = [
                *self._fence_ops(),
                (_CHECK, self._lock, None, self._lock_version),
                (_SET, self._state_path, b"", -1),
            ]
            zops = head + [op for group in plan.groups for op in group.ops]
            # Sent is sent: see it through, whatever our caller does.
            with trio.CancelScope(shield=True):
                try:
                    (results,) = await self._transact([zops])
                except _Unknown:
                    return await self._settle(plan, keys)
        failed = _failed_at(results)
        if failed is None:
            self._learn(plan)
            return True, None
        kind, path, _, _ = zops[failed]
        if failed < len(head):
            if self.fence is not None and failed == 0:
                raise self._fenced_out()
            self._lock_version = None  # a big commit has come and maybe gone
            return False, None
        if kind == _CREATE and isinstance(results[failed], NoNodeError):
            self._nodes.clear()  # a bucket we thought existed does not
            return False, None
        return False, await self._versions(keys)

    async def _settle(self, plan: _Plan, keys: builtins.list[str]) -> tuple[bool, dict[str, int] | None]:
        """The answer to our multi was lost: read the keys and tell whether
        it was applied (True), was not (False, the versions), or cannot be
        told (StorageError)."""
        await self._wait_connected()
        entries = await self._entries(keys)
        writes = plan.resolution.writes
        applied = untouched = True
        for group in plan.groups:
            entry = entries.get(group.key)
            before = group.start
            write = writes.get(group.key, _UNSEEN)
            if before is _ANY:
                untouched &= entry is not None
            else:
                untouched &= (entry is None) if before is None else (entry is not None and entry.version == before)
            if write is _UNSEEN:
                applied &= (entry is None) if before is None else (entry is not None and entry.version == before)
            elif write is None:
                applied &= entry is None
            else:
                applied &= entry is not None and entry.version == write[1] and entry.value == write[0]
        if applied:
            self._learn(plan)
            return True, None
        if untouched:
            return False, {key: entry.version for key, entry in entries.items()}
        raise StorageError(
            f"ZooKeeper store {self.root}: the connection was lost during a commit and other writers "
            "have changed its keys since: whether it was applied is unknown"
        )

    async def _ensure_buckets(self, groups: Sequence[_Group]) -> None:
        """Create the categories and buckets the creates of `groups` need.
        Empty ones are invisible to readers, so this is done outside the
        commit's multi (and never undone)."""
        buckets = {g.path.rpartition("/")[0] for g in groups if any(op[0] == _CREATE for op in g.ops)}
        buckets -= self._nodes
        if not buckets:
            return
        client = self._zk()
        for batch in ({b.rpartition("/")[0] for b in buckets} - self._nodes, buckets):
            paths = sorted(batch)
            pending = [client.create_async(path) for path in paths]
            await _wait_all(pending)
            for path, result in zip(paths, pending, strict=True):
                try:
                    result.get_nowait()
                except NodeExistsError:
                    pass
                except (*_LOSS, NoNodeError):
                    continue  # the commit's multi fails on it and is retried
                except KazooException as exc:
                    raise StorageError(f"ZooKeeper store: creating {path}: {exc!r}") from exc
                self._nodes.add(path)
