"""Storage: the `Store` contract (`contract.py`: a versioned key-value store
with compare-and-set and atomic multi-key commits, its ops and errors) and
`open_store(url)`, the one place a backend is chosen."""

from __future__ import annotations

import importlib
import os

from .contract import (
    DEFAULT_MAX_VALUE_SIZE,
    Check,
    Delete,
    Entry,
    FencedOut,
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
    "FencedOut",
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
    filesystem path is a `SqliteStore` on that file;
    "zk://[user:pass@]host:port[,host:port...]/path" is a `ZooKeeperStore`
    under that path.  Opening does no I/O: a SQLite file is created and
    opened, a ZooKeeper session started, on first use.
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
        # Imported by name when a zk:// URL is opened: importing
        # marathon.storage (as the services do) never imports kazoo, which
        # the import-linter contract keeps out of their import graph.
        zk = importlib.import_module(".zk", __name__)
        hosts, root, auth = zk.parse_zk_url(url)
        return zk.ZooKeeperStore(hosts, root, auth=auth, **options)
    raise ValueError(f"unknown store url scheme {scheme!r} in {url!r}")


def _sqlite(path: str, options: dict) -> Store:
    if path == ":memory:":
        # One in-memory SQLite database per connection, no WAL: not what the
        # caller wants from a durable store, and memory:// already exists.
        raise ValueError("use 'memory://' for an in-memory store")
    from .sqlite import SqliteStore

    return SqliteStore(path, **options)
