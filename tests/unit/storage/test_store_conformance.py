"""The `Store` contract, run against every backend in conftest.BACKENDS.

A backend is correct when this whole file passes for it.  The last test runs
random programs against the backend and against `_Model`, a deliberately
naive reading of the contract written independently of the shared helpers
in marathon.storage, and requires identical answers.
"""

from __future__ import annotations

import itertools

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marathon.errors import StorageError
from marathon.storage import (
    DEFAULT_MAX_VALUE_SIZE,
    Check,
    Delete,
    Entry,
    Put,
    Store,
    ValueTooLarge,
    VersionConflict,
    open_store,
)
from marathon.storage.memory import MemoryStore
from marathon.storage.sqlite import SqliteStore

# -- single-key reads and writes --


async def test_store_satisfies_the_protocol(store):
    assert isinstance(store, Store)


async def test_get_of_missing_key_returns_none(store):
    assert await store.get("apps/nope") is None


async def test_put_then_get_returns_value_and_version(store):
    await store.put("apps/a", b"hello")
    assert await store.get("apps/a") == Entry(b"hello", 1)


async def test_put_returns_incrementing_versions(store):
    assert [await store.put("apps/a", bytes([i])) for i in range(4)] == [1, 2, 3, 4]
    assert await store.get("apps/a") == Entry(b"\x03", 4)


async def test_put_with_current_expected_version_succeeds(store):
    await store.put("apps/a", b"1")
    assert await store.put("apps/a", b"2", expected_version=1) == 2
    assert await store.get("apps/a") == Entry(b"2", 2)


async def test_put_with_stale_expected_version_conflicts_and_keeps_value(store):
    await store.put("apps/a", b"1")
    await store.put("apps/a", b"2")
    with pytest.raises(VersionConflict) as info:
        await store.put("apps/a", b"3", expected_version=1)
    assert (info.value.key, info.value.expected, info.value.actual) == ("apps/a", 1, 2)
    assert await store.get("apps/a") == Entry(b"2", 2)


async def test_create_only_put_fails_when_key_exists(store):
    await store.put("apps/a", b"1")
    with pytest.raises(VersionConflict) as info:
        await store.put("apps/a", b"2", expected_version=0)
    assert (info.value.expected, info.value.actual) == (0, 1)
    assert await store.get("apps/a") == Entry(b"1", 1)


async def test_create_only_put_creates_a_missing_key(store):
    assert await store.put("apps/a", b"1", expected_version=0) == 1


async def test_put_expecting_a_version_of_a_missing_key_conflicts(store):
    with pytest.raises(VersionConflict) as info:
        await store.put("apps/a", b"1", expected_version=1)
    assert (info.value.expected, info.value.actual) == (1, None)
    assert await store.get("apps/a") is None


async def test_version_conflict_message_names_key_expected_and_actual(store):
    await store.put("apps/a", b"1")
    with pytest.raises(VersionConflict) as info:
        await store.put("apps/a", b"2", expected_version=7)
    message = str(info.value)
    assert "apps/a" in message and "7" in message and "1" in message


async def test_empty_and_binary_values_round_trip(store):
    every_byte = bytes(range(256))
    await store.commit([Put("v/empty", b""), Put("v/bytes", every_byte)])
    assert await store.get("v/empty") == Entry(b"", 1)
    assert await store.get("v/bytes") == Entry(every_byte, 1)


async def test_delete_returns_whether_the_key_existed(store):
    await store.put("apps/a", b"1")
    assert await store.delete("apps/a") is True
    assert await store.get("apps/a") is None
    assert await store.delete("apps/a") is False


async def test_delete_missing_key_is_noop(store):
    await store.put("apps/b", b"1")
    assert await store.delete("apps/a") is False
    assert await store.commit([Delete("apps/a")]) == [None]
    assert await store.scan("") == [("apps/b", Entry(b"1", 1))]


async def test_delete_with_stale_expected_version_conflicts_and_keeps_key(store):
    await store.put("apps/a", b"1")
    await store.put("apps/a", b"2")
    with pytest.raises(VersionConflict):
        await store.delete("apps/a", expected_version=1)
    assert await store.get("apps/a") == Entry(b"2", 2)
    assert await store.delete("apps/a", expected_version=2) is True
    assert await store.get("apps/a") is None


async def test_delete_expecting_a_version_of_a_missing_key_conflicts(store):
    with pytest.raises(VersionConflict) as info:
        await store.delete("apps/a", expected_version=1)
    assert (info.value.expected, info.value.actual) == (1, None)


async def test_delete_expecting_absence_passes_only_when_absent(store):
    assert await store.delete("apps/a", expected_version=0) is False
    await store.put("apps/a", b"1")
    with pytest.raises(VersionConflict):
        await store.delete("apps/a", expected_version=0)
    assert await store.get("apps/a") == Entry(b"1", 1)


async def test_recreated_key_starts_again_at_version_one(store):
    await store.put("apps/a", b"1")
    await store.put("apps/a", b"2")
    await store.delete("apps/a")
    assert await store.put("apps/a", b"3") == 1


# -- multi-key reads --


async def test_get_many_returns_only_existing_keys(store):
    await store.commit([Put("k/a", b"a"), Put("k/b", b"b")])
    assert await store.get_many(["k/a", "k/missing", "k/b", "k/a"]) == {
        "k/a": Entry(b"a", 1),
        "k/b": Entry(b"b", 1),
    }
    assert await store.get_many([]) == {}


async def test_get_many_handles_more_keys_than_one_query_holds(store):
    await store.commit([Put(f"k/{i:05d}", str(i).encode()) for i in range(0, 3000, 2)])
    got = await store.get_many([f"k/{i:05d}" for i in range(3000)])
    assert len(got) == 1500
    assert got["k/02998"] == Entry(b"2998", 1)


async def test_list_returns_only_keys_under_prefix_sorted(store):
    keys = ["apps/b", "apps0", "app", "apps/a/versions/1", "groups/x", "apps/a", "apps"]
    await store.commit([Put(k, b"") for k in keys])
    assert await store.list("apps/") == ["apps/a", "apps/a/versions/1", "apps/b"]


async def test_list_prefix_is_a_string_prefix_not_a_path_segment(store):
    await store.commit([Put(k, b"") for k in ["apps/a", "apps/ab", "apps/a/x", "apps/b"]])
    assert await store.list("apps/a") == ["apps/a", "apps/a/x", "apps/ab"]


async def test_list_with_empty_prefix_returns_every_key(store):
    await store.commit([Put(k, b"") for k in ["z", "a/b", "m"]])
    assert await store.list("") == ["a/b", "m", "z"]


async def test_list_of_unknown_prefix_is_empty(store):
    await store.put("apps/a", b"")
    assert await store.list("groups/") == []
    assert await store.scan("groups/") == []


async def test_scan_returns_entries_sorted_by_key(store):
    await store.commit([Put("d/2", b"two"), Put("d/1", b"one"), Put("e/1", b"x")])
    await store.put("d/2", b"TWO")
    assert await store.scan("d/") == [("d/1", Entry(b"one", 1)), ("d/2", Entry(b"TWO", 2))]


async def test_deleted_keys_disappear_from_listings(store):
    await store.commit([Put("d/1", b""), Put("d/2", b"")])
    await store.delete("d/1")
    assert await store.list("d/") == ["d/2"]


async def test_unusual_but_legal_keys_round_trip_and_sort_by_code_point(store):
    keys = [
        "a b",
        "a/",
        "a//b",
        "/lead",
        "é",
        "z",
        "中文",
        "\ud7ff",
        "\ue000",
        "\U0001f600",
        "\U0010ffff",
        "\U0010ffff\U0010ffff",
        "x\x01y",
    ]
    await store.commit([Put(k, k.encode()) for k in keys])
    assert await store.list("") == sorted(keys)
    for key in keys:
        assert await store.get(key) == Entry(key.encode(), 1)


async def test_prefixes_at_the_edges_of_unicode_select_exactly_their_keys(store):
    # The range scan's upper bound must step over the surrogate block and
    # handle a prefix that ends in the highest code point.
    keys = ["p\ud7ff", "p\ud7ffz", "p\ue000", "q\U0010ffff", "q\U0010ffffa", "r"]
    await store.commit([Put(k, b"") for k in keys])
    assert await store.list("p\ud7ff") == ["p\ud7ff", "p\ud7ffz"]
    assert await store.list("q\U0010ffff") == ["q\U0010ffff", "q\U0010ffffa"]
    assert await store.list("\U0010ffff") == []


# -- commits --


async def test_commit_applies_every_op_and_returns_versions(store):
    await store.commit([Put("c/old", b"x"), Put("c/kept", b"x")])
    result = await store.commit(
        [Put("c/new", b"n"), Put("c/kept", b"y"), Delete("c/old"), Check("c/kept", 2)]
    )
    assert result == [1, 2, None, None]
    assert await store.scan("c/") == [("c/kept", Entry(b"y", 2)), ("c/new", Entry(b"n", 1))]


async def test_commit_is_all_or_nothing_on_conflict(store):
    await store.commit([Put("c/a", b"a"), Put("c/b", b"b")])
    before = await store.scan("")
    with pytest.raises(VersionConflict) as info:
        await store.commit(
            [
                Put("c/a", b"A", expected_version=1),
                Put("c/new", b"n"),
                Delete("c/b"),
                Check("c/zzz", 3),
            ]
        )
    assert (info.value.key, info.value.expected, info.value.actual) == ("c/zzz", 3, None)
    assert await store.scan("") == before


async def test_commit_reports_the_first_failing_op(store):
    await store.commit([Put("c/a", b"a"), Put("c/b", b"b")])
    with pytest.raises(VersionConflict) as info:
        await store.commit([Check("c/a", 2), Check("c/b", 0)])
    assert (info.value.key, info.value.expected, info.value.actual) == ("c/a", 2, 1)


async def test_ops_in_one_commit_see_earlier_ops(store):
    result = await store.commit(
        [Put("k", b"1"), Check("k", 1), Put("k", b"2", expected_version=1), Check("k", 2)]
    )
    assert result == [1, None, 2, None]
    assert await store.get("k") == Entry(b"2", 2)


async def test_several_ops_on_one_key_behave_as_if_applied_one_by_one(store):
    for value in (b"1", b"2", b"3"):
        await store.put("k", value)
    assert await store.commit([Put("k", b"4"), Delete("k"), Put("k", b"fresh")]) == [4, None, 1]
    assert await store.get("k") == Entry(b"fresh", 1)
    assert await store.commit([Put("tmp", b"x"), Delete("tmp", expected_version=1)]) == [1, None]
    assert await store.get("tmp") is None


async def test_delete_then_create_only_put_in_one_commit_replaces_the_key(store):
    await store.put("k", b"old")
    await store.put("k", b"old2")
    assert await store.commit(
        [Delete("k", expected_version=2), Put("k", b"new", expected_version=0)]
    ) == [None, 1]
    assert await store.get("k") == Entry(b"new", 1)


async def test_a_later_op_can_fail_on_what_an_earlier_op_did(store):
    with pytest.raises(VersionConflict) as info:
        await store.commit([Put("k", b"1"), Put("k", b"2", expected_version=0)])
    assert (info.value.expected, info.value.actual) == (0, 1)
    assert await store.get("k") is None


async def test_check_passes_without_writing(store):
    await store.put("k", b"v")
    assert await store.commit([Check("k", 1), Check("absent", 0)]) == [None, None]
    assert await store.get("k") == Entry(b"v", 1)
    assert await store.get("absent") is None


async def test_check_fences_a_commit_on_another_key(store):
    # The leader-epoch pattern: every write checks the epoch key it was
    # elected under; a deposed leader's writes are refused.
    await store.put("leader/epoch", b"1")
    await store.commit([Check("leader/epoch", 1), Put("apps/a", b"by leader 1")])
    await store.put("leader/epoch", b"2")
    with pytest.raises(VersionConflict):
        await store.commit([Check("leader/epoch", 1), Put("apps/a", b"stale leader")])
    assert (await store.get("apps/a")).value == b"by leader 1"


async def test_empty_commit_is_a_noop(store):
    await store.put("k", b"v")
    assert await store.commit([]) == []
    assert await store.scan("") == [("k", Entry(b"v", 1))]


async def test_commit_accepts_any_sequence_of_ops(store):
    assert await store.commit((Put("a", b""), Put("b", b""))) == [1, 1]


async def test_large_commit_round_trips(store):
    ops = [Put(f"instances/app-{i % 7}/{i:06d}", i.to_bytes(4, "big") * 50) for i in range(5000)]
    versions = await store.commit(ops)
    assert versions == [1] * 5000
    assert len(await store.list("instances/")) == 5000
    scanned = await store.scan("instances/app-3/")
    assert [k for k, _ in scanned] == sorted(
        op.key for op in ops if op.key.startswith("instances/app-3/")
    )
    assert all(entry.value == int(key[-6:]).to_bytes(4, "big") * 50 for key, entry in scanned)


async def test_concurrent_compare_and_set_writers_never_lose_an_update(store):
    await store.put("counter", b"0")

    async def increment() -> None:
        while True:
            entry = await store.get("counter")
            try:
                await store.put(
                    "counter", str(int(entry.value) + 1).encode(), expected_version=entry.version
                )
                return
            except VersionConflict:
                await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(increment)
    assert await store.get("counter") == Entry(b"20", 21)


async def test_cancelled_commit_applies_all_or_nothing(store):
    ops = [Put(f"c/{i}", b"x") for i in range(100)]
    with trio.CancelScope() as scope:
        scope.cancel()
        await store.commit(ops)
    assert len(await store.list("c/")) in (0, 100)


# -- validation --

BAD_KEYS = ["", "a\x00b", "\ud800", "lone\udfff", b"bytes", None, 7]


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
async def test_invalid_keys_are_rejected(store, key):
    with pytest.raises(ValueError):
        await store.get(key)
    with pytest.raises(ValueError):
        await store.get_many(["ok", key])
    with pytest.raises(ValueError):
        await store.put(key, b"v")
    with pytest.raises(ValueError):
        await store.delete(key)
    with pytest.raises(ValueError):
        await store.commit([Put("ok", b"v"), Check(key, 0)])
    assert await store.get("ok") is None


async def test_invalid_prefixes_are_rejected(store):
    for prefix in ["a\x00", "\ud800", None, b"a"]:
        with pytest.raises(ValueError):
            await store.list(prefix)
        with pytest.raises(ValueError):
            await store.scan(prefix)


@pytest.mark.parametrize("value", ["text", bytearray(b"x"), memoryview(b"x"), None], ids=repr)
async def test_non_bytes_values_are_rejected(store, value):
    with pytest.raises(TypeError):
        await store.put("k", value)
    assert await store.get("k") is None


@pytest.mark.parametrize("expected", [-1, 1.0, "1", True])
async def test_invalid_expected_versions_are_rejected(store, expected):
    with pytest.raises((ValueError, TypeError)):
        await store.put("k", b"v", expected_version=expected)
    with pytest.raises((ValueError, TypeError)):
        await store.commit([Check("k", expected)])
    assert await store.get("k") is None


async def test_commit_rejects_things_that_are_not_ops(store):
    with pytest.raises(TypeError):
        await store.commit([Put("k", b"v"), ("put", "x", b"v")])
    assert await store.get("k") is None


async def test_oversized_value_rejected_before_any_write(new_store):
    store = new_store(max_value_size=100)
    await store.put("keep", b"old")
    with pytest.raises(ValueTooLarge) as info:
        await store.commit([Put("keep", b"new"), Put("small", b"x" * 100), Put("big", b"x" * 101)])
    assert (info.value.key, info.value.size, info.value.limit) == ("big", 101, 100)
    assert "big" in str(info.value) and "101" in str(info.value) and "100" in str(info.value)
    assert await store.scan("") == [("keep", Entry(b"old", 1))]


async def test_size_is_checked_before_versions(new_store):
    store = new_store(max_value_size=10)
    with pytest.raises(ValueTooLarge):
        await store.commit([Check("absent", 5), Put("big", b"x" * 11)])


async def test_default_value_limit_is_the_zookeeper_safe_size(store):
    assert await store.put("edge", b"x" * DEFAULT_MAX_VALUE_SIZE) == 1
    assert len((await store.get("edge")).value) == DEFAULT_MAX_VALUE_SIZE
    with pytest.raises(ValueTooLarge):
        await store.put("over", b"x" * (DEFAULT_MAX_VALUE_SIZE + 1))
    assert await store.get("over") is None


async def test_store_errors_are_storage_errors(store):
    # So an error that escapes to the API becomes a 503, "nothing changed".
    assert issubclass(VersionConflict, StorageError)
    assert issubclass(ValueTooLarge, StorageError)


async def test_closed_store_refuses_calls_and_closes_idempotently(store):
    await store.put("k", b"v")
    await store.aclose()
    for call in (
        lambda: store.get("k"),
        lambda: store.list(""),
        lambda: store.put("k", b"w"),
        lambda: store.commit([]),
        lambda: store.commit([Delete("k")]),
    ):
        with pytest.raises(trio.ClosedResourceError):
            await call()
    await store.aclose()


# -- open_store --


def test_open_store_memory_url_gives_a_memory_store():
    assert isinstance(open_store("memory://"), MemoryStore)


def test_open_store_sqlite_url_or_plain_path_gives_a_sqlite_store(tmp_path):
    by_url = open_store(f"sqlite://{tmp_path}/a.db")
    by_path = open_store(str(tmp_path / "b.db"))
    by_pathlike = open_store(tmp_path / "c.db")
    assert isinstance(by_url, SqliteStore) and by_url.path == tmp_path / "a.db"
    assert isinstance(by_path, SqliteStore) and by_path.path == tmp_path / "b.db"
    assert isinstance(by_pathlike, SqliteStore) and by_pathlike.path == tmp_path / "c.db"


def test_open_store_passes_options_to_the_backend(tmp_path):
    assert open_store("memory://", max_value_size=5).max_value_size == 5
    sqlite = open_store(f"sqlite://{tmp_path}/a.db", max_value_size=5, synchronous="full")
    assert (sqlite.max_value_size, sqlite.synchronous) == (5, "FULL")


def test_open_store_zookeeper_url_gives_a_zookeeper_store_without_io():
    from marathon.storage.zk import ZooKeeperStore

    store = open_store("zk://127.0.0.1:1,127.0.0.1:2/marathon", max_value_size=5)
    assert isinstance(store, ZooKeeperStore)
    assert (store.hosts, store.root, store.max_value_size) == ("127.0.0.1:1,127.0.0.1:2", "/marathon", 5)


@pytest.mark.parametrize("url", ["", "redis://x", "memory://x", "sqlite://", ":memory:"])
def test_open_store_rejects_unusable_urls(url):
    with pytest.raises(ValueError):
        open_store(url)


# -- random programs against a model --

# Few keys, so that ops keep meeting keys that earlier ops wrote; the
# prefixes include ones that are not path segments ("a" matches "ab").
_KEYS = ["a", "a/b", "ab", "b/a"]
_PREFIXES = ["", "a", "a/", "b/", "c"]
# Symbolic expectations, made concrete when the step runs from the state the
# op will meet (earlier ops of the same commit included), so that both the
# passing and the failing side of every check get exercised.
_EXPECTATIONS = [None, 0, 1, "current", "current", "next"]

# One flat shape for every step, because hypothesis generates (and shrinks)
# flat tuples far faster than nested one_of/filter strategies: (what to do,
# ops for a write or keys for a read, prefix for a read, whether a write
# should succeed).  Without that last flag nearly every commit of several
# ops would conflict, and the paths where ops build on each other (delete
# then re-create, put then check) would hardly ever run.
_op = st.tuples(
    st.sampled_from(["put", "delete", "check"]),
    st.sampled_from(_KEYS),
    st.sampled_from([b"", b"x", b"yy"]),
    st.sampled_from(_EXPECTATIONS),
)
_step = st.tuples(
    st.sampled_from(["commit", "commit", "single", "read"]),
    st.lists(_op, min_size=2, max_size=6),
    st.sampled_from(_PREFIXES),
    st.booleans(),
)


class _ModelConflict(Exception):
    pass


class _Model:
    """The contract, read as naively as possible: copy, apply in order."""

    def __init__(self) -> None:
        self.data: dict[str, tuple[bytes, int]] = {}

    def commit(self, ops: list) -> tuple[list[int | None], list[bool]]:
        data = dict(self.data)
        versions: list[int | None] = []
        existed: list[bool] = []
        for op in ops:
            current = data[op.key][1] if op.key in data else 0
            if op.expected_version is not None and op.expected_version != current:
                raise _ModelConflict(op.key, op.expected_version, current or None)
            existed.append(op.key in data)
            if isinstance(op, Put):
                data[op.key] = (op.value, current + 1)
                versions.append(current + 1)
            else:
                if isinstance(op, Delete):
                    data.pop(op.key, None)
                versions.append(None)
        self.data = data
        return versions, existed

    def scan(self, prefix: str) -> list[tuple[str, Entry]]:
        return [(k, Entry(*self.data[k])) for k in sorted(self.data) if k.startswith(prefix)]


def _concrete_ops(model: _Model, specs: list, succeed: bool) -> list:
    """Turn op specs into ops, resolving symbolic expectations against the
    versions each op will meet if the ops before it succeed; with `succeed`,
    every expectation is one that holds."""
    versions = {k: v for k, (_, v) in model.data.items()}
    ops = []
    for kind, key, value, expected in specs:
        current = versions.get(key, 0)
        if (
            expected == "current"
            or (expected is None and kind == "check")
            or (succeed and expected is not None)
        ):
            expected = current
        elif expected == "next":
            expected = current + 1
        if kind == "put":
            ops.append(Put(key, value, expected))
            versions[key] = current + 1
        elif kind == "delete":
            ops.append(Delete(key, expected))
            versions.pop(key, None)
        else:
            ops.append(Check(key, expected))
    return ops


async def _run_program(store: Store, namespace: str, program: list) -> None:
    # Every key and prefix lives under `namespace`, so examples sharing the
    # store cannot see each other.
    model = _Model()
    for kind, specs, prefix, succeed in program:
        specs = [(op_kind, namespace + key, *rest) for op_kind, key, *rest in specs]
        prefix = namespace + prefix
        if kind == "read":
            keys = [spec[1] for spec in specs]
            want = model.data.get(keys[0])
            assert await store.get(keys[0]) == (Entry(*want) if want else None)
            assert await store.get_many(keys) == {
                k: Entry(*model.data[k]) for k in keys if k in model.data
            }
            assert await store.list(prefix) == [k for k, _ in model.scan(prefix)]
            assert await store.scan(prefix) == model.scan(prefix)
            continue
        ops = _concrete_ops(model, specs if kind == "commit" else specs[:1], succeed)
        if kind == "single" and isinstance(ops[0], Check):
            ops[0] = Delete(ops[0].key, ops[0].expected_version)
        try:
            want = model.commit(ops)
        except _ModelConflict as conflict:
            with pytest.raises(VersionConflict) as info:
                await _apply(store, kind, ops)
            assert (info.value.key, info.value.expected, info.value.actual) == conflict.args
        else:
            assert await _apply(store, kind, ops) == _expected_result(kind, ops, want)
    assert await store.scan(namespace) == model.scan(namespace)


async def _apply(store: Store, kind: str, ops: list):
    if kind == "commit":
        return await store.commit(ops)
    (op,) = ops
    if isinstance(op, Put):
        return await store.put(op.key, op.value, expected_version=op.expected_version)
    return await store.delete(op.key, expected_version=op.expected_version)


def _expected_result(kind: str, ops: list, want: tuple[list[int | None], list[bool]]):
    versions, existed = want
    if kind == "commit":
        return versions
    return versions[0] if isinstance(ops[0], Put) else existed[0]


@pytest.fixture
def shared_store(store_url):
    """One store for every example of a hypothesis test: opening a fresh
    SQLite file (or, later, a ZooKeeper session) per example costs more than
    the example itself."""
    store = open_store(store_url())
    yield store
    trio.run(store.aclose)


_namespaces = itertools.count()


@settings(
    max_examples=100,
    deadline=None,
    # Each example works under a namespace of its own in the shared store.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(program=st.lists(_step, min_size=5, max_size=25))
def test_random_programs_match_the_model(shared_store, program):
    trio.run(_run_program, shared_store, f"run{next(_namespaces)}/", program)
