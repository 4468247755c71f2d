"""`MemoryStore`: the `Store` contract held in a dict.

It is the test backend and the reference semantics: every other backend must
behave exactly like it, which the shared conformance suite checks.  Nothing
survives the process.  Each method checkpoints once before touching the
data and never again, so a commit is atomic with respect to other trio tasks
and a cancelled call has done nothing.
"""

from __future__ import annotations

import builtins
from bisect import bisect_left
from collections.abc import Sequence

import trio

from .contract import (
    DEFAULT_MAX_VALUE_SIZE,
    CommitShortcuts,
    Entry,
    Op,
    _check_key,
    _check_prefix,
    _Resolution,
    _resolve,
    _validate_ops,
)

__all__ = ["MemoryStore"]


class MemoryStore(CommitShortcuts):
    """An in-process `Store` whose data lives in a dict."""

    def __init__(self, *, max_value_size: int = DEFAULT_MAX_VALUE_SIZE) -> None:
        self.max_value_size = max_value_size
        self._data: dict[str, Entry] = {}
        # Sorted keys for range queries, rebuilt lazily after the key set
        # changes: writes stay O(1) and repeated listings stay O(log n + k).
        self._sorted: builtins.list[str] | None = []
        self._closed = False

    def __repr__(self) -> str:
        return f"<MemoryStore {len(self._data)} keys{' closed' if self._closed else ''}>"

    async def _enter(self) -> None:
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise trio.ClosedResourceError("store is closed")

    async def get(self, key: str) -> Entry | None:
        _check_key(key)
        await self._enter()
        return self._data.get(key)

    async def get_many(self, keys: Sequence[str]) -> dict[str, Entry]:
        for key in keys:
            _check_key(key)
        await self._enter()
        data = self._data
        return {key: data[key] for key in keys if key in data}

    async def list(self, prefix: str) -> builtins.list[str]:
        _check_prefix(prefix)
        await self._enter()
        return self._keys_under(prefix)

    async def scan(self, prefix: str) -> builtins.list[tuple[str, Entry]]:
        _check_prefix(prefix)
        await self._enter()
        data = self._data
        return [(key, data[key]) for key in self._keys_under(prefix)]

    async def aclose(self) -> None:
        self._closed = True
        await trio.lowlevel.checkpoint()

    def _keys_under(self, prefix: str) -> builtins.list[str]:
        keys = self._sorted
        if keys is None:
            keys = self._sorted = sorted(self._data)
        start = bisect_left(keys, prefix)
        end = start
        # Walk forward rather than bisecting to a computed upper bound: an
        # implementation independent of sqlite.py's prefix successor, so the
        # conformance suite cross-checks the two.
        while end < len(keys) and keys[end].startswith(prefix):
            end += 1
        return keys[start:end]

    async def _commit_ops(self, ops: builtins.list[Op]) -> _Resolution:
        _validate_ops(ops, self.max_value_size)
        await self._enter()
        # From here to the end nothing awaits, so no other task can observe
        # or interleave with a half-applied commit.
        data = self._data
        resolution = _resolve(
            ops, lambda key: e.version if (e := data.get(key)) is not None else None
        )
        for key, write in resolution.writes.items():
            if write is None:
                # pop: the key may have been created earlier in this commit.
                if data.pop(key, None) is not None:
                    self._sorted = None
            else:
                if key not in data:
                    self._sorted = None
                data[key] = Entry(write[0], write[1])
        return resolution
