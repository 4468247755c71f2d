"""Exit codes of the `marathon` commands, and the failures that choose them."""

from __future__ import annotations

import errno
import sqlite3

# Marathon's process exit codes (SPEC.md 5.7).
EXIT_ZK_UNREACHABLE = 100
EXIT_PLUGIN = 102
EXIT_HTTP_BIND = 111
EXIT_BAD_FLAG = 112
# Ours (Marathon has no such codes):
# the server's state or an agent's work dir cannot be written at start-up
# (disk full, read-only, over quota); nothing was changed and no task was
# touched: free space, start again.
EXIT_STORAGE = 113
# `marathon agent`: the master will never take this agent (it joined
# another cluster, or was marked gone).
EXIT_REFUSED = 114

_STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def storage_failure(exc: BaseException) -> bool:
    """The disk is full, read-only or over quota (as the OS or SQLite says it)."""
    if isinstance(exc, OSError):
        return exc.errno in _STORAGE_ERRNOS
    return getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_READONLY) or (
        "database or disk is full" in str(exc))


def first_leaf(group: BaseException) -> BaseException:
    """The first exception in `group` and the groups it nests."""
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group
