"""What only the SQLite backend promises: the file survives, WAL mode is on,
other connections read while we write, a failed or killed commit never
half-applies, and a big batch stays fast."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import defaultdict

import pytest
import trio
import trio.testing

from marathon.errors import StorageError
from marathon.storage import Delete, Entry, Put, VersionConflict
from marathon.storage.sqlite import SqliteStore


@pytest.fixture
def db(tmp_path):
    return tmp_path / "state" / "marathon.db"


@pytest.fixture
async def store(db):
    store = SqliteStore(db)
    yield store
    await store.aclose()


def _raw(db) -> sqlite3.Connection:
    """A second, independent connection, like another process would have."""
    return sqlite3.connect(db, isolation_level=None, check_same_thread=False)


async def test_data_survives_close_and_reopen(db):
    first = SqliteStore(db)
    await first.commit([Put("apps/a", b"1"), Put("apps/b", b"2")])
    await first.put("apps/a", b"1'")
    await first.delete("apps/b")
    await first.aclose()

    second = SqliteStore(db)
    try:
        assert await second.scan("") == [("apps/a", Entry(b"1'", 2))]
        assert await second.put("apps/a", b"1''") == 3
    finally:
        await second.aclose()


async def test_opening_does_no_io_until_first_use_and_creates_parent_directories(db):
    store = SqliteStore(db)
    assert not db.parent.exists()
    await store.get("k")
    assert db.exists()
    await store.aclose()


async def test_journal_mode_is_wal(store, db):
    await store.put("k", b"v")
    assert _raw(db).execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_synchronous_is_validated_and_full_is_accepted(db):
    with pytest.raises(ValueError):
        SqliteStore(db, synchronous="NORMAL; DROP TABLE kv")
    store = SqliteStore(db, synchronous="full")
    assert await store.put("k", b"v") == 1
    await store.aclose()


async def test_file_that_is_not_a_database_is_refused(db):
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not a database, it is a text file" * 100)
    store = SqliteStore(db)
    with pytest.raises(StorageError):
        await store.get("k")
    await store.aclose()


async def test_unwritable_location_is_a_storage_error(tmp_path):
    (tmp_path / "file").write_text("")
    store = SqliteStore(tmp_path / "file" / "marathon.db")
    with pytest.raises(StorageError):
        await store.get("k")
    await store.aclose()


async def test_newer_schema_version_is_refused(store, db):
    await store.put("k", b"v")
    await store.aclose()
    _raw(db).execute("PRAGMA user_version = 99")
    newer = SqliteStore(db)
    with pytest.raises(StorageError, match="schema version 99"):
        await newer.get("k")
    await newer.aclose()


async def test_prefix_queries_use_the_primary_key_index(store, db):
    await store.commit([Put(f"apps/{i}", b"") for i in range(10)])
    statements: list[str] = []
    await trio.to_thread.run_sync(lambda: store._connection().set_trace_callback(statements.append))
    assert await store.list("apps/") == [f"apps/{i}" for i in range(10)]
    await store.scan("apps/")
    queries = [s for s in statements if "key >=" in s]
    assert len(queries) == 2 and not any("LIKE" in q.upper() for q in queries)
    for query in queries:
        plan = " ".join(row[-1] for row in _raw(db).execute(f"EXPLAIN QUERY PLAN {query}"))
        assert "USING PRIMARY KEY (key>? AND key<?)" in plan, plan


async def test_reader_on_another_connection_is_not_blocked_by_a_write_in_flight(store, db):
    await store.put("k", b"committed")
    writer = _raw(db)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE kv SET value = x'00', version = 99 WHERE key = 'k'")
    # The write lock is held and the change is not committed: WAL readers
    # still get the last committed state, without waiting.
    with trio.fail_after(2):
        assert await store.get("k") == Entry(b"committed", 1)
    writer.execute("COMMIT")
    assert await store.get("k") == Entry(b"\x00", 99)


async def test_write_waits_for_a_lock_held_by_another_connection(store, db):
    await store.put("k", b"v")
    locked = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def hold_write_lock() -> None:
        other = _raw(db)
        other.execute("BEGIN IMMEDIATE")
        trio.from_thread.run_sync(locked.set, trio_token=token)
        time.sleep(0.2)  # in a helper thread: the busy timeout must ride this out
        other.execute("COMMIT")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, hold_write_lock)
        await locked.wait()
        assert await store.put("k", b"w") == 2


async def test_concurrent_readers_see_whole_commits_only(store):
    ops = [Put(f"batch/{i:05d}", b"x" * 100) for i in range(20_000)]
    seen: set[int] = set()

    async def read_until_done(done: trio.Event) -> None:
        while not done.is_set():
            seen.add(len(await store.list("batch/")))
            await trio.lowlevel.checkpoint()

    done = trio.Event()
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(read_until_done, done)
        await trio.testing.wait_all_tasks_blocked()
        await store.commit(ops)
        done.set()
    assert seen <= {0, 20_000}


async def test_failing_statement_rolls_back_the_whole_commit(store, db):
    await store.put("a", b"before")
    # A trigger makes SQLite itself fail mid-commit, after earlier rows of
    # the same commit were written.
    _raw(db).execute(
        "CREATE TRIGGER poison BEFORE INSERT ON kv WHEN NEW.key = 'poison' "
        "BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
    )
    with pytest.raises(StorageError, match="poisoned"):
        await store.commit([Put("a", b"after"), Put("b", b"new"), Put("poison", b"x")])
    assert await store.scan("") == [("a", Entry(b"before", 1))]
    # The store is still usable, and so is the lock.
    assert await store.commit([Put("a", b"after"), Put("b", b"new")]) == [2, 1]


async def test_version_conflict_leaves_the_file_untouched(store, db):
    await store.put("a", b"1")
    before = _raw(db).execute("SELECT * FROM kv ORDER BY key").fetchall()
    with pytest.raises(VersionConflict):
        await store.commit([Put("b", b"2"), Put("a", b"x", expected_version=5)])
    assert _raw(db).execute("SELECT * FROM kv ORDER BY key").fetchall() == before


_CRASH_CHILD = textwrap.dedent(
    """
    import sys, trio
    from marathon.storage import Put, open_store

    async def main(path, batch):
        store = open_store(path)
        last = await store.get("last")
        n = int(last.value) + 1 if last else 0
        payload = b"p" * 500
        while True:
            ops = [Put(f"batch/{n:06d}/{j:05d}", payload) for j in range(batch)]
            ops.append(Put("last", str(n).encode()))
            await store.commit(ops)
            print(n, flush=True)
            n += 1

    trio.run(main, sys.argv[1], int(sys.argv[2]))
    """
)


async def test_commit_killed_mid_flight_never_half_applies(db, tmp_path):
    # A child commits ~1 MB batches back to back; we SIGKILL it right after it
    # reports a commit, when it is most likely inside the next one.  Every
    # batch on disk afterwards must be complete, and `last` must agree.
    script = tmp_path / "child.py"
    script.write_text(_CRASH_CHILD)
    batch = 2000
    with trio.fail_after(60):
        for _ in range(4):
            proc = await trio.lowlevel.open_process(
                [sys.executable, str(script), str(db), str(batch)], stdout=subprocess.PIPE
            )
            try:
                reported = b""
                while reported.count(b"\n") < 2:
                    chunk = await proc.stdout.receive_some()
                    assert chunk, "child exited early"
                    reported += chunk
            finally:
                proc.kill()
                await proc.wait()
            assert proc.returncode == -9

            store = SqliteStore(db)
            try:
                per_batch: defaultdict[str, int] = defaultdict(int)
                for key in await store.list("batch/"):
                    per_batch[key.split("/")[1]] += 1
                last = int((await store.get("last")).value)
                assert sorted(per_batch) == [f"{n:06d}" for n in range(last + 1)]
                assert set(per_batch.values()) == {batch}
            finally:
                await store.aclose()


async def test_a_big_commit_is_a_handful_of_statements(store):
    # sqlite3 gives the GIL up around each step of a statement and must win
    # it back from a busy event loop: a commit of thousands of rows must not
    # run a statement per row (what `executemany` and chunked IN lists did).
    await store.commit([Put(f"instances/{i:05d}", b"old") for i in range(0, 6000, 2)])
    conn = store._conn
    assert conn is not None
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        ops = [Put(f"instances/{i:05d}", b"new") for i in range(5000)]  # 2,500 updates, 2,500 inserts
        ops += [Delete(f"instances/{i:05d}") for i in range(5000, 6000, 2)]
        versions = await store.commit(ops)
    finally:
        conn.set_trace_callback(None)
    assert versions == [2 if i % 2 == 0 else 1 for i in range(5000)] + [None] * 500
    # BEGIN, the versions, the deletes, five INSERTs of 1,000 rows, COMMIT.
    assert len(statements) <= 10, [s[:60] for s in statements]
    assert [k for k, _ in await store.scan("instances/")] == [f"instances/{i:05d}" for i in range(5000)]
    entries = await store.get_many([f"instances/{i:05d}" for i in (0, 1, 4998, 4999)])
    assert [(e.value, e.version) for e in entries.values()] == [(b"new", 2), (b"new", 1), (b"new", 2), (b"new", 1)]
