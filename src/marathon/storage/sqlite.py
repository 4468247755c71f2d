"""`SqliteStore`: the `Store` contract in one SQLite file in WAL mode, the
durable state of an embedded (single-machine) Marathon.

Layout: one table `kv(key TEXT PRIMARY KEY, value BLOB, version INTEGER)`
WITHOUT ROWID, so a key lookup or a prefix range scan is one B-tree walk.
`PRAGMA user_version` records the schema version.

Threading: sqlite3 blocks, so every call into it runs in a worker thread via
`trio.to_thread.run_sync`, serialized by one `CapacityLimiter(1)` over one
connection (opened lazily, in that thread, with `check_same_thread=False`).
Worker threads are not abandoned on cancellation, so a commit that has
started always finishes (or rolls back) before its caller sees `Cancelled`.

A commit is `BEGIN IMMEDIATE` (take the write lock first, so the versions we
read cannot change under us), read the current versions of every key the
commit touches (one statement), resolve the ops in Python with the shared
`_resolve`, write the net effect (one DELETE, INSERTs of up to 1,000 rows),
`COMMIT`.  Any failure rolls
back, so a `VersionConflict` leaves the file untouched.

Durability: `synchronous=NORMAL` (the default) in WAL mode survives a process
crash (kill -9) with every committed transaction; a power loss or OS crash
may lose the last few commits but never corrupts the file or splits a
commit.  `synchronous="FULL"` syncs the WAL on every commit and loses
nothing that was acknowledged.
"""

from __future__ import annotations

import builtins
import functools
import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import msgspec
import trio

from marathon.errors import StorageError

from .contract import (
    DEFAULT_MAX_VALUE_SIZE,
    CommitShortcuts,
    Entry,
    Op,
    _check_key,
    _check_prefix,
    _prefix_successor,
    _Resolution,
    _resolve,
    _validate_ops,
)

__all__ = ["SqliteStore"]

_T = TypeVar("_T")

SCHEMA_VERSION = 1
_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
# How long a write waits for a lock held by another connection (another
# process on the same file) before failing with "database is locked".
_BUSY_TIMEOUT_S = 10.0
# After a huge commit the WAL file keeps its size; cap what stays on disk.
_JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024

# A commit reads and writes whole batches (a deploy burst stores thousands
# of instances at a time) in as few statements as it can: sqlite3 releases
# the GIL around each step of a statement and must win it back from the
# event loop after each one, which costs up to a switch interval (5 ms) when
# the loop is busy.  A row per statement made a 2,500-row commit wait for
# thousands of such hand-offs.
_VERSIONS = "SELECT json_group_object(key, version) FROM kv WHERE key IN (SELECT value FROM json_each(?))"
_DELETE = "DELETE FROM kv WHERE key IN (SELECT value FROM json_each(?))"
_GET_MANY = "SELECT key, value, version FROM kv WHERE key IN (SELECT value FROM json_each(?))"
# Rows per INSERT statement, at most (and at most a third of the build's
# bound on `?` parameters).
_ROWS_PER_INSERT = 1000

_encode = msgspec.json.Encoder().encode
_decode_versions = msgspec.json.Decoder(dict[str, int]).decode


def _json_list(keys: list[str]) -> str:
    # Text, not bytes: SQLite's JSON functions refuse a BLOB.
    return _encode(keys).decode()


@functools.lru_cache(maxsize=16)
def _upsert(rows: int) -> str:
    return (
        "INSERT INTO kv (key, value, version) VALUES "
        + ",".join(["(?, ?, ?)"] * rows)
        + " ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version"
    )


class SqliteStore(CommitShortcuts):
    """A `Store` in a SQLite file (WAL mode); see the module docstring."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_value_size: int = DEFAULT_MAX_VALUE_SIZE,
        synchronous: str = "NORMAL",
    ) -> None:
        sync = synchronous.upper() if isinstance(synchronous, str) else synchronous
        if sync not in _SYNCHRONOUS:
            # Whitelisted because it is interpolated into a PRAGMA.
            raise ValueError(
                f"synchronous must be one of {', '.join(_SYNCHRONOUS)}, got {synchronous!r}"
            )
        self.path = Path(path)
        self.max_value_size = max_value_size
        self.synchronous = sync
        self._limiter = trio.CapacityLimiter(1)
        self._conn: sqlite3.Connection | None = None
        self._rows_per_insert = _ROWS_PER_INSERT
        self._closed = False

    def __repr__(self) -> str:
        return f"<SqliteStore {str(self.path)!r}{' closed' if self._closed else ''}>"

    # -- the Store protocol (trio side) --

    async def get(self, key: str) -> Entry | None:
        _check_key(key)
        return await self._run(self._get, key)

    async def get_many(self, keys: Sequence[str]) -> dict[str, Entry]:
        keys = builtins.list(keys)
        for key in keys:
            _check_key(key)
        return await self._run(self._get_many, keys)

    async def list(self, prefix: str) -> builtins.list[str]:
        _check_prefix(prefix)
        return await self._run(self._list, prefix)

    async def scan(self, prefix: str) -> builtins.list[tuple[str, Entry]]:
        _check_prefix(prefix)
        return await self._run(self._scan, prefix)

    async def _commit_ops(self, ops: builtins.list[Op]) -> _Resolution:
        return await self._run(self._commit, ops)

    async def commit(self, ops: Sequence[Op]) -> builtins.list[int | None]:
        ops = builtins.list(ops)  # a snapshot the caller cannot change under the thread
        if not ops:
            await trio.lowlevel.checkpoint()
            if self._closed:
                raise trio.ClosedResourceError("store is closed")
            return []
        resolution = await self._run(self._commit, ops)
        return resolution.versions

    async def aclose(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        # Refuse new calls at once; calls already queued on the limiter see
        # the flag in their thread and fail the same way.
        self._closed = True
        # Closing must finish even if our caller is cancelled, or the file
        # would stay open; it waits at most for the call in flight.
        with trio.CancelScope(shield=True):
            try:
                await trio.to_thread.run_sync(self._close, limiter=self._limiter)
            except sqlite3.Error as exc:
                raise StorageError(f"sqlite store {str(self.path)!r}: {exc}") from exc

    # -- plumbing --

    async def _run(self, fn: Callable[..., _T], *args: object) -> _T:
        if self._closed:
            await trio.lowlevel.checkpoint()
            raise trio.ClosedResourceError("store is closed")
        try:
            return await trio.to_thread.run_sync(self._in_thread, fn, args, limiter=self._limiter)
        except (sqlite3.Error, OSError) as exc:
            # OSError: the directory could not be created or the file opened.
            raise StorageError(f"sqlite store {str(self.path)!r}: {exc}") from exc

    def _in_thread(self, fn: Callable[..., _T], args: tuple) -> _T:
        if self._closed:
            raise trio.ClosedResourceError("store is closed")
        return fn(*args)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; we issue BEGIN and
        # COMMIT ourselves so a commit is exactly one transaction.
        conn = sqlite3.connect(
            self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode.lower() != "wal":
                # e.g. a filesystem without shared memory: refuse rather than
                # silently run with different durability and locking.
                raise StorageError(
                    f"sqlite store {str(self.path)!r}: cannot enable WAL (journal_mode={mode})"
                )
            try:
                conn.execute("SELECT json_each.value FROM json_each('[]')").fetchall()
            except sqlite3.OperationalError as exc:
                raise StorageError(
                    f"sqlite store {str(self.path)!r}: this SQLite ({sqlite3.sqlite_version}) lacks "
                    f"the JSON functions (built in since 3.38): {exc}"
                ) from exc
            self._rows_per_insert = max(1, min(_ROWS_PER_INSERT, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // 3))
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute(f"PRAGMA journal_size_limit = {_JOURNAL_SIZE_LIMIT}")
            conn.execute("BEGIN IMMEDIATE")
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version == 0:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS kv ("
                    " key TEXT PRIMARY KEY NOT NULL,"
                    " value BLOB NOT NULL,"
                    " version INTEGER NOT NULL"
                    ") WITHOUT ROWID"
                )
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise StorageError(
                    f"sqlite store {str(self.path)!r} has schema version {version}; "
                    f"this Marathon understands {SCHEMA_VERSION}"
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _rollback(self, conn: sqlite3.Connection) -> None:
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            # The connection is in an unknown state: drop it (which rolls
            # back whatever is open) and reconnect on the next call.
            self._conn = None
            conn.close()

    # -- in the worker thread --

    def _get(self, key: str) -> Entry | None:
        row = (
            self._connection()
            .execute("SELECT value, version FROM kv WHERE key = ?", (key,))
            .fetchone()
        )
        return None if row is None else Entry(row[0], row[1])

    def _get_many(self, keys: builtins.list[str]) -> dict[str, Entry]:
        unique = builtins.list(dict.fromkeys(keys))
        # One statement (one snapshot), the keys as one JSON array.
        found = {
            key: Entry(value, version)
            for key, value, version in self._connection().execute(_GET_MANY, (_json_list(unique),))
        }
        # The caller's order, like MemoryStore.
        return {key: found[key] for key in unique if key in found}

    def _range(self, columns: str, prefix: str) -> sqlite3.Cursor:
        # A range on the primary key instead of LIKE: LIKE cannot use the
        # index for a parameter and is case-insensitive for ASCII.
        conn = self._connection()
        upper = _prefix_successor(prefix)
        if upper is None:
            return conn.execute(f"SELECT {columns} FROM kv WHERE key >= ? ORDER BY key", (prefix,))
        return conn.execute(
            f"SELECT {columns} FROM kv WHERE key >= ? AND key < ? ORDER BY key", (prefix, upper)
        )

    def _list(self, prefix: str) -> builtins.list[str]:
        return [key for (key,) in self._range("key", prefix)]

    def _scan(self, prefix: str) -> builtins.list[tuple[str, Entry]]:
        return [
            (key, Entry(value, version))
            for key, value, version in self._range("key, value, version", prefix)
        ]

    def _commit(self, ops: builtins.list[Op]) -> _Resolution:
        # Validation first: an invalid or oversized op fails the commit before
        # the database is even opened.
        _validate_ops(ops, self.max_value_size)
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Key order throughout: B-tree pages are then visited once each,
            # in order, instead of at random (2-3x faster for a large batch
            # of scattered keys).
            keys = sorted({op.key for op in ops})
            resolution = _resolve(ops, self._versions(conn, keys).get)
            writes = resolution.writes
            params: builtins.list[object] = []
            deletes = []
            for key in keys:
                if key in writes:
                    write = writes[key]
                    if write is None:
                        deletes.append(key)
                    else:
                        params += (key, write[0], write[1])
            if deletes:
                conn.execute(_DELETE, (_json_list(deletes),))
            # Many rows per statement: each statement steps once, and a
            # step is where sqlite3 gives the GIL up and has to win it back.
            step = self._rows_per_insert * 3
            for i in range(0, len(params), step):
                chunk = params[i : i + step]
                conn.execute(_upsert(len(chunk) // 3), chunk)
            conn.execute("COMMIT")
        except BaseException:
            self._rollback(conn)
            raise
        return resolution

    def _versions(self, conn: sqlite3.Connection, keys: builtins.list[str]) -> dict[str, int]:
        # One statement with one result row: the keys go in as one JSON
        # array, the versions come back as one JSON object.
        (found,) = conn.execute(_VERSIONS, (_json_list(keys),)).fetchone()
        return _decode_versions(found)
