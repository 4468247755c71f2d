"""The ZooKeeper store's encoding (zk.py): how keys become znode paths,
what a node's data is, the operations of a multi with their encoded size,
the plan of a commit, and the kazoo plumbing beneath them (the multiRead
request kazoo lacks, sending a multi, waiting for replies from trio).
Nothing here holds a session or store state.

Keys.  A key's category is its first path segment ("instances" for
"instances/<id>", "@top" for a key without "/", "@" for an empty segment),
so a listing reads only the categories its prefix can match.  Its bucket is
crc32(key) % 256 as two hex digits: a getChildren reply is capped at 1 MiB,
and 256 buckets keep 100,000 instances at ~400 children each.  Its name is
the rest of the key, percent-encoded (UTF-8 bytes outside [A-Za-z0-9_.~-];
"" is "@", "." and ".." are encoded), so every legal key is exactly one
znode and back.

Values.  A node's data is a marker byte and the value: 0x00 raw, 0x01 zlib
(values over the store's `compression_threshold` when that makes them
smaller).

Multis.  An operation is a plain tuple (kind, path, data, version), so a
plan of 100,000 keys stays cheap to build and to pack into journal nodes;
`_op_size` is its encoded size in a multi, framing and ACL included, which
is what `max_multi_bytes` caps.  ZooKeeper answers a failed multi with
results, not an exception: `_failed_at` finds the op that failed it.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import trio
from kazoo.client import KazooClient
from kazoo.exceptions import EXCEPTIONS, ConnectionLoss, RolledBackError, SessionExpiredError
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
from kazoo.protocol.states import ZnodeStat

from marathon.errors import StorageError

from .contract import _Resolution, escape_name, unescape_name

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
# Tries of a commit that keeps meeting other writers (or losing its lock).
_MAX_ATTEMPTS = 50
_RAW, _ZLIB = b"\x00", b"\x01"
_TOP = "@top"

_CREATE, _SET, _DELETE, _CHECK, _EPHEMERAL = range(5)
# (kind, path, data, version): one operation of a multi.
_ZkOp = tuple[int, str, bytes | None, int]

# Errors after which a request may or may not have been applied.
_LOSS = (ConnectionLoss, SessionExpiredError)


class _Unknown(Exception):
    """A multi was sent and its answer lost with the connection."""


class _LockLost(Exception):
    """Another store took our @lock over (our session or fence is gone)."""


_UNKNOWN = (_Unknown, *_LOSS)


class _Sentinel:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


# A key assumed present at an unknown version (a delete of a key not read).
_ANY: Any = _Sentinel("ANY")
_UNSEEN: Any = _Sentinel("UNSEEN")


# -- names ------------------------------------------------------------------


_escape = escape_name
_unescape = unescape_name


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


# -- values -----------------------------------------------------------------


def _encode_value(value: bytes, compression_threshold: int) -> bytes:
    if len(value) > compression_threshold:
        packed = zlib.compress(value, 6)
        if len(packed) < len(value):
            return _ZLIB + packed
    return _RAW + value


def _decode_value(key: str, data: bytes) -> bytes:
    marker = data[:1]
    if marker == _RAW:
        return data[1:]
    if marker == _ZLIB:
        return zlib.decompress(data[1:])
    raise StorageError(f"ZooKeeper store: the node of key {key!r} is not in this store's format")


# -- multis and plans -------------------------------------------------------


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


def _group(key: str, path: str, s: Any, write: Any, compression_threshold: int, acl_size: int) -> _Group:
    """The ops of `key` (at `path`) in a commit: from assumed version `s`
    (an int, None for absent, or _ANY) to `write`, what the commit leaves
    there ((value, version), None for deleted, or _UNSEEN if it writes
    nothing: the version the commit met is then guarded all the same)."""
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
        data = _encode_value(value, compression_threshold)
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
    return _Group(key, path, s, zops, sum(_op_size(op, acl_size) for op in zops))


# -- kazoo plumbing ---------------------------------------------------------


class _MultiRead(NamedTuple):
    """ZooKeeper's multiRead request (opcode 22, ZooKeeper 3.6+): getData
    and getChildren ops answered in one reply, each with its own result
    (an error of one does not fail the others).  kazoo has no call for it;
    it serializes like kazoo's own request tuples, and is queued with
    kazoo's private `KazooClient._call(request, async_object)` (hence the
    pin of kazoo's version in pyproject.toml, and the test of that call)."""

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


def _submit(client: KazooClient, zops: list[_ZkOp]) -> Any:
    """Send `zops` as one multi; kazoo's async result of it."""
    tx = client.transaction()
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


async def _wait_all(results: Sequence[Any]) -> None:
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


def _stop(client: KazooClient) -> None:
    try:
        client.stop()
    finally:
        client.close()
