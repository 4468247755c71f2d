"""The storage contract: a versioned key-value `Store` with compare-and-set
and atomic multi-key commits, the op types a commit is made of, its errors,
and the checks every backend must make identically.

Every backend (memory.py, sqlite.py, and later a ZooKeeper one) implements
exactly the semantics written here, and one conformance suite
(tests/unit/storage/test_store_conformance.py) holds them to it.  The
checks every backend must make identically (key rules, value size, the
sequential meaning of a commit) live here as private helpers so that they
cannot drift apart; `MemoryStore` is the reference for everything else.

Versions follow ZooKeeper's node versions shifted by one: a key has version 1
after the put that creates it and +1 after every later put; deleting it and
putting it again starts over at 1.  An expected version of 0 means "must not
exist", which is why 0 is never a real version.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable
from urllib.parse import quote, unquote

from msgspec import Struct

from marathon.errors import StorageError, TooLargeToStore

# ZooKeeper refuses a node bigger than jute.maxbuffer (1 MiB - 1 by default,
# and that includes request overhead); every backend applies this same limit
# so that a state that fits the embedded store also fits a cluster.
DEFAULT_MAX_VALUE_SIZE = 1_024_000


# gc=False: these hold only str/bytes/int, so they can never be part of a
# reference cycle, and a 100,000-op commit should not feed the cycle collector.
class Entry(Struct, frozen=True, gc=False):
    """A stored value and its version (1 after the first put, +1 per put)."""

    value: bytes
    version: int


class Put(Struct, frozen=True, gc=False):
    """Write `value` at `key`.

    `expected_version`: None writes unconditionally; 0 requires that the key
    does not exist; n requires that its current version is n.
    """

    key: str
    value: bytes
    expected_version: int | None = None


class Delete(Struct, frozen=True, gc=False):
    """Remove `key`.

    `expected_version`: None deletes it if present (no error if missing);
    0 requires that it does not exist (the delete is then a no-op); n requires
    that its current version is n.
    """

    key: str
    expected_version: int | None = None


class Check(Struct, frozen=True, gc=False):
    """Write nothing; fail the commit unless `key` is at `expected_version`
    (0: must not exist).  Used to fence a commit on a key written by someone
    else, such as the leader epoch."""

    key: str
    expected_version: int


Op = Put | Delete | Check


class VersionConflict(StorageError):
    """A compare-and-set or check failed; nothing of the commit was applied.

    `expected` is what the op asked for, `actual` the key's version at that
    point of the commit (None: the key did not exist).
    """

    def __init__(self, key: str, expected: int | None, actual: int | None) -> None:
        shown = "None (no such key)" if actual is None else str(actual)
        super().__init__(f"version conflict on key {key!r}: expected {expected}, actual {shown}")
        self.key = key
        self.expected = expected
        self.actual = actual

    def __reduce__(self):
        return (type(self), (self.key, self.expected, self.actual))


class ValueTooLarge(TooLargeToStore):
    """A value is larger than the store's `max_value_size`; nothing of the
    commit was applied (every op is checked before anything is written).
    A `StorageError` whose status is 413: the request asked for too much."""

    def __init__(self, key: str, size: int, limit: int) -> None:
        super().__init__(
            f"Too large to store: the value for key {key!r} is {size} bytes, "
            f"over the store limit of {limit} bytes (--zk_max_node_size)"
        )
        self.key = key
        self.size = size
        self.limit = limit

    def __reduce__(self):
        return (type(self), (self.key, self.size, self.limit))


class FencedOut(StorageError):
    """The commit's fence check failed: the fence node (the leader node) is
    no longer at the version this store was given, so another leader was
    elected since.  Nothing of the commit was applied."""

    def __init__(self, path: str, expected: int) -> None:
        super().__init__(
            f"fenced out: {path} is no longer at version {expected} (another leader was elected); "
            "nothing was written"
        )
        self.path = path
        self.expected = expected

    def __reduce__(self):
        return (type(self), (self.path, self.expected))


class CommitShortcuts:
    """`put`, `delete` and `commit` of a backend, written once over its
    `_commit_ops(ops) -> _Resolution` (one atomic commit)."""

    async def _commit_ops(self, ops: list[Op]) -> _Resolution:
        raise NotImplementedError

    async def put(self, key: str, value: bytes, *, expected_version: int | None = None) -> int:
        version = (await self._commit_ops([Put(key, value, expected_version)])).versions[0]
        assert version is not None
        return version

    async def delete(self, key: str, *, expected_version: int | None = None) -> bool:
        return (await self._commit_ops([Delete(key, expected_version)])).existed[0]

    async def commit(self, ops: Sequence[Op]) -> list[int | None]:
        return (await self._commit_ops(list(ops))).versions


@runtime_checkable
class Store(Protocol):
    """A versioned key-value store.

    Keys are non-empty `str` without NUL (ValueError otherwise); they sort by
    code point, which is also their UTF-8 byte order.  Values are `bytes`.
    After `aclose()` every method raises `trio.ClosedResourceError`;
    `aclose()` itself may be called any number of times.
    """

    async def get(self, key: str) -> Entry | None:
        """The entry at `key`, or None if there is none."""
        ...

    async def get_many(self, keys: Sequence[str]) -> dict[str, Entry]:
        """Entries of those `keys` that exist; missing keys are absent."""
        ...

    async def list(self, prefix: str) -> list[str]:
        """Every key starting with `prefix` ("" for all), sorted."""
        ...

    async def scan(self, prefix: str) -> list[tuple[str, Entry]]:
        """Like `list`, with each key's entry; sorted by key."""
        ...

    async def put(self, key: str, value: bytes, *, expected_version: int | None = None) -> int:
        """`commit([Put(...)])`; returns the new version."""
        ...

    async def delete(self, key: str, *, expected_version: int | None = None) -> bool:
        """`commit([Delete(...)])`; returns whether the key existed."""
        ...

    async def commit(self, ops: Sequence[Op]) -> list[int | None]:
        """Apply `ops` atomically, all or nothing.

        Ops apply in order and each sees the ones before it, exactly as if
        they were applied one by one.  Every op is validated first (key rules,
        `ValueTooLarge`) before anything is read or written; then the first
        failing expectation raises `VersionConflict` and nothing is applied.
        Returns, per op, the new version for a Put and None for a Delete or
        Check.  An empty commit does nothing and returns [].
        """
        ...

    async def aclose(self) -> None:
        """Release the store's resources; idempotent."""
        ...


# -- shared machinery: every backend uses these so its checks are identical --


def _check_key(key: object) -> None:
    if type(key) is not str or not key:
        raise ValueError(f"store key must be a non-empty str, got {key!r}")
    if "\x00" in key:
        raise ValueError(f"store key must not contain NUL: {key!r}")
    if not key.isascii():
        # Lone surrogates cannot be encoded, so no backend could store them.
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"store key is not valid Unicode: {key!r}") from None


def _check_prefix(prefix: object) -> None:
    if type(prefix) is not str:
        raise ValueError(f"store prefix must be a str, got {prefix!r}")
    if prefix:
        _check_key(prefix)


def _check_expected(op: object, expected: object, *, optional: bool) -> None:
    if expected is None and optional:
        return
    if type(expected) is not int or expected < 0:
        raise ValueError(f"expected_version must be None or an int >= 0 in {op!r}")


def _validate_ops(ops: Sequence[Op], max_value_size: int) -> None:
    """Every check that needs no stored state, for every op, before any I/O."""
    for op in ops:
        t = type(op)
        if t is Put:
            _check_key(op.key)
            value = op.value
            if type(value) is not bytes:
                raise TypeError(
                    f"store value must be bytes, got {type(value).__name__} in Put({op.key!r})"
                )
            if len(value) > max_value_size:
                raise ValueTooLarge(op.key, len(value), max_value_size)
            _check_expected(op, op.expected_version, optional=True)
        elif t is Delete:
            _check_key(op.key)
            _check_expected(op, op.expected_version, optional=True)
        elif t is Check:
            _check_key(op.key)
            _check_expected(op, op.expected_version, optional=False)
        else:
            raise TypeError(f"commit takes Put, Delete and Check ops, got {op!r}")


class _Resolution(NamedTuple):
    """What a commit does, computed before anything is written."""

    # Per op: the new version for a Put, None for a Delete or Check.
    versions: list[int | None]
    # Per op: whether its key existed just before that op applied.
    existed: list[bool]
    # The net effect per key: (value, version) to store, or None to delete.
    writes: dict[str, tuple[bytes, int] | None]


def _resolve(ops: Sequence[Op], version_of: Callable[[str], int | None]) -> _Resolution:
    """Apply `ops` in order to an overlay of the stored versions.

    `version_of(key)` is the stored version before the commit (None if
    absent); it must not change while this runs.  Raises VersionConflict at
    the first failing expectation, having written nothing.  Only the net
    effect per key is returned: readers never see intermediate states, so a
    backend need not write them.
    """
    writes: dict[str, tuple[bytes, int] | None] = {}
    versions: list[int | None] = []
    existed: list[bool] = []
    # Bound locals: this loop runs once per op, 100,000 times for a big batch.
    add_version = versions.append
    add_existed = existed.append
    for op in ops:
        key = op.key
        write = writes.get(key, _UNSEEN)
        if write is _UNSEEN:
            current = version_of(key)
        else:
            current = None if write is None else write[1]
        expected = op.expected_version
        if expected is not None and expected != (current or 0):
            raise VersionConflict(key, expected, current)
        t = type(op)
        if t is Put:
            new = 1 if current is None else current + 1
            writes[key] = (op.value, new)
            add_version(new)
        else:
            if t is Delete and current is not None:
                writes[key] = None
            add_version(None)
        add_existed(current is not None)
    return _Resolution(versions, existed, writes)


_UNSEEN: Any = object()


_MAX_CODE_POINT = 0x10FFFF


def _prefix_successor(prefix: str) -> str | None:
    """The smallest valid key greater than every key starting with `prefix`,
    or None if there is no such bound (empty prefix, or all U+10FFFF).

    Used for range scans (`key >= prefix AND key < successor`), which use the
    primary-key index where LIKE would not.  Code-point order equals UTF-8
    byte order, which is how SQLite compares TEXT.
    """
    stripped = prefix.rstrip(chr(_MAX_CODE_POINT))
    if not stripped:
        return None
    nxt = ord(stripped[-1]) + 1
    if 0xD800 <= nxt <= 0xDFFF:
        nxt = 0xE000  # surrogates cannot be keys, so skip straight past them
    return stripped[:-1] + chr(nxt)


# -- key segments as names (ZooKeeper nodes, backup members) ----------------------


def escape_name(text: str) -> str:
    """A key segment as a file or node name: percent-encoded UTF-8 bytes
    outside [A-Za-z0-9_.~-], "" as "@", "." and ".." encoded, so every
    segment is exactly one name and back (`unescape_name`)."""
    name = quote(text, safe="")
    if not name:
        return "@"
    if name in (".", ".."):
        return name.replace(".", "%2E")
    return name


def unescape_name(name: str) -> str:
    """The segment `escape_name` made `name` of (UnicodeDecodeError if it
    holds bytes that are not UTF-8)."""
    return "" if name == "@" else unquote(name, errors="strict")
