"""`ZooKeeperStore`: the `Store` contract on ZooKeeper, the shared state of
a cluster of masters (CLUSTER.md 3.2 and 5).  kazoo is imported here and
nowhere else in the store.

Layout under the root path of the zk:// URL:

    <root>/state                          its data and version are the clock (Reads)
    <root>/state/<category>/<bucket>/<n>  one key per znode
    <root>/state/@lock                    the big-commit lock (Commits)
    <root>/state/@holder                  ephemeral: the session holding @lock
    <root>/state/@journal/<txid>-<i>      a big commit's pending multis

A key's category is its first path segment ("instances" for
"instances/<id>", "@top" for a key without "/", "@" for an empty segment),
so a listing reads only the categories its prefix can match.  Its bucket is
crc32(key) % 256 as two hex digits: a getChildren reply is capped at 1 MiB,
and 256 buckets keep 100,000 instances at ~400 children each.  Its name is
the rest of the key, percent-encoded (UTF-8 bytes outside [A-Za-z0-9_.~-];
"" is "@", "." and ".." are encoded), so every legal key is exactly one
znode and back.  Categories and buckets are created on first use, never
deleted.  Versions are the znode's dataVersion + 1 (a created node has
version 1), the contract's versions.  A node's data is a marker byte and the
value: 0x00 raw, 0x01 zlib (values over `compression_threshold`, 64 KB,
when that makes them smaller); the size limit is on the value as given.

Commits.  A commit is planned against assumed versions: an op's own
expectation, else the version this store last saw (its reads and commits),
else "absent" for a put and "present" for a delete.  `_resolve` computes the
outcome, and the multi guards every assumption with the key's first
operation (`set_data`/`delete`/`check` at that version, `create` for
absence, `create`+`delete` for a key only checked absent).  A wrong
assumption fails the multi, which ZooKeeper returns as results, not raises;
the store then reads the keys (one consistent read), plans again and
raises `VersionConflict` with what the memory store would say.  Every multi
also checks @lock and bumps the clock, and with a `fence` it starts with
`check(fence path, fence version)`, which fails as `FencedOut`.  Commits of
several trio tasks are in flight together; each one is a single multi, so
ZooKeeper orders them.

Big commits.  ZooKeeper refuses a request over jute.maxbuffer (1 MiB) and
drops the connection, so multis are capped by encoded bytes, paths and
framing included: `max_multi_bytes`, 128 KB by default and at most 512 KB
(ZooKeeper holds its last 500 transactions in memory, so bigger multis
cost server heap, not speed: see DEFAULT_MULTI_BYTES).  A lone value up
to the 1,024,000 B limit goes in a multi of its own.  The contract promises all-or-nothing for a commit
of any size, and the instance tracker and the group service rely on it (a
deploy burst commits up to 20,000 instances at once), so a commit that
does not fit one multi is neither refused nor split: it goes through a
journal.  It takes @lock (which fails every other writer's multi until
released), checks its assumptions under it, writes its multis as journal
nodes, and commits by marking the lock "committed" in one multi: that is
its commit point.  It then applies each journal node in a multi that also
deletes the node, and releases the lock.  Readers wait while the clock
says a commit is being applied, so nobody sees half of it.  If the holder
dies, the next store that meets the lock (its holder node gone, or the
holder's fence moved) takes it over and finishes the commit: applies what
is left of a committed one, drops a prepared one.  A big commit costs its
bytes twice and a few round trips more; anything that fits one multi
never touches the journal.

Reads.  Reads use ZooKeeper's multiRead (3.6+; kazoo has no call for it,
so `_MultiRead` goes through kazoo's request queue): a get is one request,
a get_many or scan of 10,000 keys is twenty.  A read of several keys is
bracketed by two reads of the clock, which every commit bumps; if the clock
moved it is read again (after three tries, with this store's own commits
held back), so `get_many`, `list` and `scan` are snapshots, as in memory.

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
import logging
import threading
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from operator import itemgetter
from typing import Any, NamedTuple, TypeVar
from urllib.parse import quote, unquote

import msgspec
import trio
from kazoo.client import KazooClient
from kazoo.exceptions import (
    EXCEPTIONS,
    ConnectionLoss,
    KazooException,
    NodeExistsError,
    NoNodeError,
    RolledBackError,
    SessionExpiredError,
)
from kazoo.protocol.serialization import (
    GetChildren,
    GetData,
    int_struct,
    multiheader_struct,
    read_buffer,
    read_string,
    stat_struct,
    write_string,
)
from kazoo.protocol.states import KazooState, ZnodeStat
from kazoo.security import make_digest_acl

from marathon.errors import StorageError

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

log = logging.getLogger("marathon.storage.zk")

_T = TypeVar("_T")

# Bytes of one multi, framing, paths and ACLs included (CLUSTER.md 5, rule 1):
# the ceiling, and the default.  ZooKeeper keeps its last 500 transactions
# in memory (zookeeper.commitLogCount, which 3.8 will not lower): measured
# with 100,000 instances of 1 KB, 512 KB multis left 755 MB of server heap
# in use and 128 KB ones 304 MB, at the same write rate (6.5 s and 5.9 s).
MULTI_MAX_BYTES = 512 * 1024
DEFAULT_MULTI_BYTES = 128 * 1024
# One request must stay under jute.maxbuffer (1,048,575 B) with its headers.
_REQUEST_MAX_BYTES = 1_040_000
_READS_PER_REQUEST = 500
# Multis sent before waiting for their answers (16 x 512 KB queued at most).
_IN_FLIGHT = 16
_RAW, _ZLIB = b"\x00", b"\x01"
_TOP = "@top"
# Plan (and compress) in a worker thread above these, off the event loop.
_PLAN_INLINE_OPS = 2000
_PLAN_INLINE_BYTES = 1 << 20
_MAX_ATTEMPTS = 50
# A read retried this often holds this store's own commits back.
_EXCLUSIVE_AFTER = 3
# The versions remembered for planning; forgotten all at once beyond this.
_KNOWN_MAX = 1_000_000

_CREATE, _SET, _DELETE, _CHECK, _EPHEMERAL = range(5)
# (kind, path, data, version): one operation of a multi.
_ZkOp = tuple[int, str, bytes | None, int]
_decode_ops = msgspec.msgpack.Decoder(list[tuple[int, str, bytes | None, int]]).decode
_encode_msgpack = msgspec.msgpack.Encoder().encode

# Errors after which a request may or may not have been applied.
_LOSS = (ConnectionLoss, SessionExpiredError)
_STATES = {KazooState.CONNECTED: "connected", KazooState.SUSPENDED: "suspended", KazooState.LOST: "lost"}


class _Sentinel:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


# A key assumed present at an unknown version (a delete of a key not read).
_ANY: Any = _Sentinel("ANY")
_UNSEEN: Any = _Sentinel("UNSEEN")


class _Unknown(Exception):
    """A multi was sent and its answer lost with the connection."""


class _LockLost(Exception):
    """Another store took our @lock over (our session or fence is gone)."""


_UNKNOWN = (_Unknown, *_LOSS)


def parse_zk_url(url: str) -> tuple[str, str, tuple[str, str] | None]:
    """`zk://[user:pass@]host:port[,host:port...]/path` as (hosts, root
    path, credentials or None)."""
    scheme, sep, rest = url.partition("://")
    if scheme != "zk" or not sep:
        raise ValueError(f"not a zk:// url: {url!r}")
    netloc, slash, path = rest.partition("/")
    auth = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, colon, password = userinfo.partition(":")
        if not colon or not user:
            raise ValueError(f"zk url credentials must be user:password in {url!r}")
        auth = (unquote(user), unquote(password))
    if not netloc or any(not host for host in netloc.split(",")):
        raise ValueError(f"zk url needs host:port[,host:port...] in {url!r}")
    root = "/" + path.rstrip("/")
    if not slash or root == "/" or any(seg in ("", ".", "..") for seg in root[1:].split("/")):
        raise ValueError(f"zk url needs a path such as /marathon in {url!r}")
    return netloc, root, auth


# -- names ------------------------------------------------------------------


def _escape(text: str) -> str:
    name = quote(text, safe="")
    if not name:
        return "@"
    if name in (".", ".."):
        return name.replace(".", "%2E")
    return name


def _unescape(name: str) -> str:
    return "" if name == "@" else unquote(name, errors="strict")


def _key_parts(key: str) -> tuple[str, str, str]:
    """(category, bucket, name) of `key`."""
    slash = key.find("/")
    if slash < 0:
        category, rest = _TOP, key
    else:
        category, rest = _escape(key[:slash]), key[slash + 1 :]
    return category, f"{zlib.crc32(key.encode()) & 0xFF:02x}", _escape(rest)


def _key_of(category: str, name: str) -> str:
    rest = _unescape(name)
    return rest if category == _TOP else f"{_unescape(category)}/{rest}"


def _category_may_match(name: str, prefix: str) -> bool:
    """Whether category `name` may hold keys starting with `prefix` (a
    prefix without "/"); meta nodes (@lock, ...) never do."""
    if name == _TOP:
        return True
    if name.startswith("@") and name != "@":
        return False
    return _unescape(name).startswith(prefix)


# -- kazoo plumbing ---------------------------------------------------------


class _MultiRead(NamedTuple):
    """ZooKeeper's multiRead request (opcode 22, ZooKeeper 3.6+): getData
    and getChildren ops answered in one reply, each with its own result
    (an error of one does not fail the others).  kazoo has no call for it;
    it serializes like kazoo's own request tuples."""

    operations: list

    type = 22  # a class attribute (kazoo reads it), not a field

    def serialize(self) -> bytearray:
        b = bytearray()
        for op in self.operations:
            b += multiheader_struct.pack(op.type, False, -1)
            b += write_string(op.path)
            b.append(0)  # no watch
        return b + multiheader_struct.pack(-1, True, -1)

    @classmethod
    def deserialize(cls, buf: bytes, offset: int) -> list:
        results: list = []
        while True:
            kind, done, _ = multiheader_struct.unpack_from(buf, offset)
            offset += multiheader_struct.size
            if done:
                return results
            if kind == GetData.type:
                data, offset = read_buffer(buf, offset)
                results.append((data, ZnodeStat._make(stat_struct.unpack_from(buf, offset))))
                offset += stat_struct.size
            elif kind == GetChildren.type:
                (count,) = int_struct.unpack_from(buf, offset)
                offset += int_struct.size
                children = []
                for _ in range(count):
                    child, offset = read_string(buf, offset)
                    children.append(child)
                results.append(children)
            else:
                (err,) = int_struct.unpack_from(buf, offset)
                offset += int_struct.size
                results.append(EXCEPTIONS[err]())


def _path_size(path: str) -> int:
    return len(path) if path.isascii() else len(path.encode())


def _op_size(op: _ZkOp, acl_size: int) -> int:
    """Encoded bytes of `op` in a multi (header 9, path 4+n, version/flags 4)."""
    kind, path, data, _ = op
    size = 17 + _path_size(path)
    if data is not None:
        size += 4 + len(data)
    if kind == _CREATE or kind == _EPHEMERAL:
        size += 4 + acl_size
    return size


def _failed_at(results: list) -> int | None:
    """Index of the op that failed a multi (the ops before it come back as
    RolledBackError, those after as RuntimeInconsistency), or None."""
    for i, result in enumerate(results):
        if isinstance(result, Exception) and not isinstance(result, RolledBackError):
            return i
    return None


def _rise(path: str, data: bytes, target: int, zops: list[_ZkOp]) -> list[_ZkOp]:
    """`zops` plus creating `path` and setting it until it is at contract
    version `target`, with `data` as the last write."""
    zops.append((_CREATE, path, data if target == 1 else b"", 0))
    zops.extend((_SET, path, data if i == target - 1 else b"", -1) for i in range(1, target))
    return zops


class _Group(NamedTuple):
    """The ops of a multi for one key (never split between multis)."""

    key: str
    path: str
    start: Any  # assumed version before the commit: int, None (absent) or _ANY
    ops: list[_ZkOp]
    size: int


class _Plan(NamedTuple):
    resolution: _Resolution
    groups: list[_Group]
    size: int


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


# -- the store --------------------------------------------------------------


class ZooKeeperStore(CommitShortcuts):
    """A `Store` in ZooKeeper under `root`; see the module docstring.

    `hosts` is kazoo's "host:port,host:port"; `auth` (user, password) turns
    on digest auth and ACLs; `fence` (path, dataVersion) makes every commit
    check that node first and raise `FencedOut` if it moved (set or change
    it at any time: the election sets it when it wins).  `max_multi_bytes`
    caps a multi (128 KB by default, at most 512 KB); values over
    `compression_threshold` are zlib-compressed; `session_timeout` is
    kazoo's, and also how long a commit waits for a lost connection to come
    back.  Opening does no I/O: the session starts on first use or with
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
        """Wait for the connection to come back, at most `session_timeout`."""
        with trio.move_on_after(self.session_timeout):
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
            f"ZooKeeper {self.hosts} unreachable for {self.session_timeout:g} s"
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

    async def _wait(self, results: Sequence[Any]) -> None:
        """Wait until every kazoo async result is ready, without a thread:
        the last callback (on kazoo's thread) wakes this task."""
        if not results:
            return
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        lock = threading.Lock()
        left = [len(results)]

        def arrived(_result: object) -> None:
            with lock:
                left[0] -= 1
                if left[0]:
                    return
            try:
                token.run_sync_soon(done.set)
            except trio.RunFinishedError:
                pass

        for result in results:
            result.rawlink(arrived)
        await done.wait()

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
        await self._wait(pending)
        out: list = []
        for result in pending:
            try:
                out += result.get_nowait()
            except _LOSS:
                raise
            except KazooException as exc:
                raise StorageError(f"ZooKeeper store {self.hosts}{self.root}: {exc!r}") from exc
        return out

    def _submit(self, zops: list[_ZkOp]) -> Any:
        tx = self._zk().transaction()
        for kind, path, data, version in zops:
            if kind == _SET:
                tx.set_data(path, data, version)
            elif kind == _CHECK:
                tx.check(path, version)
            elif kind == _DELETE:
                tx.delete(path, version)
            else:
                tx.create(path, data, ephemeral=kind == _EPHEMERAL)
        return tx.commit_async()

    async def _transact(self, multis: list[list[_ZkOp]]) -> list[list]:
        """Send `multis` (ZooKeeper applies them in order) and return their
        results; `_Unknown` if an answer was lost.  At most _IN_FLIGHT are
        sent at a time, and none after a wave in which one failed (the list
        returned is then shorter): each queued multi costs server heap."""
        out: list[list] = []
        for start in range(0, len(multis), _IN_FLIGHT):
            pending = [self._submit(zops) for zops in multis[start : start + _IN_FLIGHT]]
            await self._wait(pending)
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

    def _encode(self, value: bytes) -> bytes:
        if len(value) > self.compression_threshold:
            packed = zlib.compress(value, 6)
            if len(packed) < len(value):
                return _ZLIB + packed
        return _RAW + value

    def _decode(self, key: str, data: bytes) -> bytes:
        marker = data[:1]
        if marker == _RAW:
            return data[1:]
        if marker == _ZLIB:
            return zlib.decompress(data[1:])
        raise StorageError(f"ZooKeeper store: the node of key {key!r} is not in this store's format")

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
        return Entry(self._decode(key, data), version)

    def _remember(self, key: str, version: int | None) -> None:
        known = self._known
        if version is None:
            known.pop(key, None)
            return
        if len(known) >= _KNOWN_MAX:
            known.clear()
        known[key] = version

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
                    await self._wait([before, after])
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
        acl_size = self._acl_size
        groups = []
        total = 0
        for key, s in start.items():
            path = self._key_path(key)
            write = writes.get(key, _UNSEEN)
            if write is _UNSEEN or (write is None and s is None):
                # Nothing written: still guard the version the ops met.
                if s is None:
                    zops: list[_ZkOp] = [(_CREATE, path, b"", 0), (_DELETE, path, None, -1)]
                else:
                    zops = [(_CHECK, path, None, s - 1)]
            elif write is None:
                zops = [(_DELETE, path, None, -1 if s is _ANY else s - 1)]
            else:
                value, target = write
                data = self._encode(value)
                if s is None:
                    zops = _rise(path, data, target, [])
                elif s is not _ANY and target > s:
                    count = target - s
                    zops = [
                        (_SET, path, data if i == count - 1 else b"", s - 1 if i == 0 else -1)
                        for i in range(count)
                    ]
                else:  # deleted and created again within the commit
                    zops = _rise(path, data, target, [(_DELETE, path, None, -1 if s is _ANY else s - 1)])
            size = sum(_op_size(op, acl_size) for op in zops)
            groups.append(_Group(key, path, s, zops, size))
            total += size
        return _Plan(resolution, groups, total)

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
            await self._wait(pending)
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

    # -- big commits: the journal --

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
        await self._wait([pending])
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
            await self._wait([pending])
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


def _stop(client: KazooClient) -> None:
    try:
        client.stop()
    finally:
        client.close()

