"""A fingerprint of everything a server has stored, read from its SQLite file."""

from __future__ import annotations

import hashlib
import sqlite3


def dump_state(marathon) -> dict[str, tuple[int, str]]:
    """key -> (version, sha256 of value); read-only, safe while the server runs (WAL)."""
    db = sqlite3.connect(f"file:{marathon.data_dir / 'state.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT key, version, value FROM kv").fetchall()
    finally:
        db.close()
    return {k: (v, hashlib.sha256(val).hexdigest()) for k, v, val in rows}
