"""Storage: the `Store` contract (`contract.py`: a versioned key-value store
with compare-and-set and atomic multi-key commits, its ops and errors) and
`open_store(url)`, the one place a backend is chosen."""

from __future__ import annotations

import os

from .contract import (
    DEFAULT_MAX_VALUE_SIZE,
    Check,
    Delete,
    Entry,
    Op,
    Put,
    Store,
    ValueTooLarge,
    VersionConflict,
)

__all__ = [
    "DEFAULT_MAX_VALUE_SIZE",
    "Check",
    "Delete",
    "Entry",
    "Op",
    "Put",
    "Store",
    "ValueTooLarge",
    "VersionConflict",
    "open_store",
]


def open_store(url: str | os.PathLike[str], **options) -> Store:
    """Open the store named by `url`; `options` go to the backend.

    "memory://" is a fresh `MemoryStore`; "sqlite:///abs/path.db" or a plain
    filesystem path is a `SqliteStore` on that file; "zk://..." is the
    cluster backend (not yet available).  Opening does no I/O: a SQLite file
    is created and opened on first use, inside a worker thread.
    """
    if isinstance(url, os.PathLike):
        url = os.fspath(url)
    if not isinstance(url, str) or not url:
        raise ValueError(f"store url must be a non-empty string, got {url!r}")
    scheme, sep, rest = url.partition("://")
    if not sep:
        return _sqlite(url, options)
    if scheme == "memory":
        if rest:
            raise ValueError(f"memory store url takes no path: {url!r} (use 'memory://')")
        from .memory import MemoryStore

        return MemoryStore(**options)
    if scheme == "sqlite":
        if not rest:
            raise ValueError(f"sqlite store url needs a path: {url!r}")
        return _sqlite(rest, options)
    if scheme == "zk":
        raise NotImplementedError("ZooKeeper store: see issue 'cluster shape'")
    raise ValueError(f"unknown store url scheme {scheme!r} in {url!r}")


def _sqlite(path: str, options: dict) -> Store:
    if path == ":memory:":
        # One in-memory SQLite database per connection, no WAL: not what the
        # caller wants from a durable store, and memory:// already exists.
        raise ValueError("use 'memory://' for an in-memory store")
    from .sqlite import SqliteStore

    return SqliteStore(path, **options)
