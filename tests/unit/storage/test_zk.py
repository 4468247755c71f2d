"""What the ZooKeeper store adds to the contract (which
test_store_conformance.py checks on it like on every backend): its layout,
compression, size caps, big commits through the journal and their
recovery, fencing, ACLs, session states and lost replies.  Every test runs
against the session's real ZooKeeper (zk_fixtures.py), under a root of its
own, and looks at the znodes with a plain kazoo client where the layout is
the point.
"""

from __future__ import annotations

import functools
import inspect
import os
import uuid
import zlib
from collections.abc import AsyncIterator, Callable

import kazoo.version
import pytest
import trio
from kazoo.client import KazooClient, TransactionRequest
from kazoo.exceptions import NoAuthError
from kazoo.protocol.serialization import Transaction

from marathon.storage import Check, Delete, Entry, Put, ValueTooLarge, VersionConflict, open_store
from marathon.storage._zk_wire import _escape, _key_of, _key_parts, _unescape
from marathon.storage.zk import (
    DEFAULT_MULTI_BYTES,
    MULTI_MAX_BYTES,
    FencedOut,
    ZooKeeperStore,
    parse_zk_url,
)

from .zk_fixtures import ZkProxy


@pytest.fixture
def root() -> str:
    return f"/zk-tests/{uuid.uuid4().hex}"


@pytest.fixture
async def raw(zk_server: str) -> AsyncIterator[KazooClient]:
    """A plain kazoo client, to look at the znodes themselves."""
    client = KazooClient(hosts=zk_server, timeout=5.0)
    await trio.to_thread.run_sync(functools.partial(client.start, timeout=10))
    yield client
    await trio.to_thread.run_sync(client.stop)
    client.close()


@pytest.fixture
async def stores(zk_server: str, root: str) -> AsyncIterator[Callable[..., ZooKeeperStore]]:
    """`stores(**options)` opens a store on `root` (a new session each time);
    all are closed at the end."""
    opened: list[ZooKeeperStore] = []

    def open_one(**options: object) -> ZooKeeperStore:
        hosts = options.pop("hosts", zk_server)
        store = ZooKeeperStore(hosts, root, **options)  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.aclose()


async def _in_thread(fn, *args, **kwargs):
    return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


def _node(root: str, key: str) -> str:
    category, bucket, name = _key_parts(key)
    return f"{root}/state/{category}/{bucket}/{name}"


async def _key_nodes(raw: KazooClient, root: str) -> list[str]:
    """Every key znode under `root` (meta nodes left out)."""
    found = []
    for category in await _in_thread(raw.get_children, f"{root}/state"):
        if category.startswith("@") and category not in ("@", "@top"):
            continue
        for bucket in await _in_thread(raw.get_children, f"{root}/state/{category}"):
            found += await _in_thread(raw.get_children, f"{root}/state/{category}/{bucket}")
    return found


async def _assert_idle(raw: KazooClient, root: str) -> None:
    """No big commit in progress or left behind."""
    assert await _in_thread(raw.get_children, f"{root}/state/@journal") == []
    assert (await _in_thread(raw.get, f"{root}/state/@lock"))[0] == b""
    assert (await _in_thread(raw.get, f"{root}/state"))[0] == b""
    assert not await _in_thread(raw.exists, f"{root}/state/@holder")


def _big_ops(count: int, prefix: str = "instances/app") -> list[Put]:
    """Puts whose multis need well over MULTI_MAX_BYTES (incompressible)."""
    return [Put(f"{prefix}.{i:05d}", os.urandom(1000)) for i in range(count)]


# -- names and layout --


@pytest.mark.parametrize(
    "key", ["a", "a/", "/lead", "a//b", ".", "..", "x/.", "x/..", "@top", "@", "%41", "a b", "é/中", "\U0010ffff", "x\x01y"]
)
def test_every_key_maps_to_one_valid_znode_name_and_back(key):
    category, bucket, name = _key_parts(key)
    for part in (category, name):
        assert part and part not in (".", "..") and "/" not in part
        assert part.isascii() and part.isprintable()
    assert len(bucket) == 2 and int(bucket, 16) == zlib.crc32(key.encode()) % 256
    assert _key_of(category, name) == key
    assert _unescape(_escape(key)) == key


async def test_keys_live_in_256_hash_buckets_of_their_category(stores, raw, root):
    store = stores()
    keys = [f"instances/app.{i}" for i in range(300)] + ["groups/root", "top-level"]
    await store.commit([Put(k, b"v") for k in keys])
    categories = set(await _in_thread(raw.get_children, f"{root}/state"))
    assert {"instances", "groups", "@top"} <= categories
    buckets = await _in_thread(raw.get_children, f"{root}/state/instances")
    assert 200 < len(buckets) <= 256 and all(len(b) == 2 and int(b, 16) < 256 for b in buckets)
    for key in keys:
        data, stat = await _in_thread(raw.get, _node(root, key))
        assert (data, stat.version) == (b"\x00v", 0)  # raw marker; contract version 1
    assert await store.get("instances/app.7") == Entry(b"v", 1)


async def test_versions_are_the_znode_version_plus_one(stores, raw, root):
    store = stores()
    assert await store.put("k", b"1") == 1
    assert await store.commit([Put("k", b"2"), Put("k", b"3")]) == [2, 3]
    assert (await _in_thread(raw.get, _node(root, "k")))[1].version == 2
    assert await store.get("k") == Entry(b"3", 3)


# -- values --


async def test_values_over_the_threshold_are_compressed_and_read_back(stores, raw, root):
    store = stores()
    text = b"marathon " * 20_000  # 180 KB, compressible
    noise = os.urandom(100_000)  # incompressible: stored as is
    await store.commit([Put("c/text", text), Put("c/noise", noise), Put("c/small", b"abc" * 100)])
    stored_text = (await _in_thread(raw.get, _node(root, "c/text")))[0]
    assert stored_text[:1] == b"\x01" and len(stored_text) < len(text) // 10
    assert (await _in_thread(raw.get, _node(root, "c/noise")))[0] == b"\x00" + noise
    assert (await _in_thread(raw.get, _node(root, "c/small")))[0] == b"\x00" + b"abc" * 100
    assert await store.get_many(["c/text", "c/noise"]) == {"c/text": Entry(text, 1), "c/noise": Entry(noise, 1)}


async def test_an_incompressible_value_at_the_size_limit_fits_one_request(stores):
    store = stores()
    value = os.urandom(1_024_000)
    assert await store.put("big", value) == 1
    assert await store.get("big") == Entry(value, 1)


async def test_an_oversized_value_is_refused_before_anything_is_written(stores, raw, root):
    store = stores()
    await store.put("keep", b"old")
    clock = (await _in_thread(raw.get, f"{root}/state"))[1].version
    with pytest.raises(ValueTooLarge):
        await store.commit([Put("keep", b"new"), Put("new/a", b"x"), Put("new/big", b"x" * 1_024_001)])
    assert await _key_nodes(raw, root) == ["keep"]
    assert (await _in_thread(raw.get, f"{root}/state"))[1].version == clock
    assert not await _in_thread(raw.exists, f"{root}/state/new")  # not even its category
    with pytest.raises(ValueError):
        ZooKeeperStore("127.0.0.1:1", "/x", max_value_size=2_000_000)


# -- big commits: the journal --


async def test_a_commit_over_one_multi_is_applied_whole(stores, raw, root):
    store = stores()
    ops = _big_ops(1500)
    assert sum(len(op.value) for op in ops) > 2 * MULTI_MAX_BYTES
    assert await store.commit(ops) == [1] * 1500
    assert len(await _key_nodes(raw, root)) == 1500
    await _assert_idle(raw, root)
    other = stores()
    assert await other.scan("instances/") == sorted((op.key, Entry(op.value, 1)) for op in ops)
    # Again, over existing keys, with a conflict at the very end: nothing.
    again = [Put(op.key, b"new") for op in ops] + [Check("missing", 3)]
    with pytest.raises(VersionConflict) as info:
        await store.commit(again)
    assert (info.value.key, info.value.expected, info.value.actual) == ("missing", 3, None)
    assert await other.get(ops[0].key) == Entry(ops[0].value, 1)
    await _assert_idle(raw, root)
    assert await store.commit([*again[:-1], Delete(ops[1].key)]) == [2] * 1500 + [None]
    assert await other.get_many([ops[0].key, ops[1].key]) == {ops[0].key: Entry(b"new", 2)}


async def test_no_multi_exceeds_the_byte_cap_except_a_lone_big_value(stores, monkeypatch):
    sizes: list[int] = []
    send = TransactionRequest.commit_async

    def measured(self):
        sizes.append(len(Transaction(self.operations).serialize()))
        return send(self)

    monkeypatch.setattr(TransactionRequest, "commit_async", measured)
    store = stores()
    assert store.max_multi_bytes == DEFAULT_MULTI_BYTES < MULTI_MAX_BYTES
    await store.commit(_big_ops(1000))
    assert len(sizes) > 2 * 1000 * 1000 // DEFAULT_MULTI_BYTES  # journal, then applied
    assert max(sizes) <= DEFAULT_MULTI_BYTES
    sizes.clear()
    await store.commit([Put("lone", os.urandom(1_000_000)), Put("other", b"x")])
    # Its journal node and its application: two multis holding it alone.
    over = [size for size in sizes if size > DEFAULT_MULTI_BYTES]
    assert len(over) == 2 and all(1_000_000 < size < 1_040_000 for size in over)
    wide = stores(max_multi_bytes=MULTI_MAX_BYTES)
    sizes.clear()
    await wide.commit(_big_ops(1000, "wide/app"))
    assert DEFAULT_MULTI_BYTES < max(sizes) <= MULTI_MAX_BYTES


async def test_a_big_commit_conflicting_with_another_store_reports_what_is_there(stores):
    mine, theirs = stores(), stores()
    await mine.put("instances/app.00000", b"v")  # mine now knows version 1
    await theirs.put("instances/app.00000", b"w")  # ... which is stale
    ops = _big_ops(800)
    versions = await mine.commit(ops)  # an unconditional put: fine at any version
    assert versions[0] == 3 and versions[1:] == [1] * 799
    with pytest.raises(VersionConflict) as info:
        await mine.commit([Put(op.key, b"x", expected_version=1) for op in ops])
    assert (info.value.key, info.value.expected, info.value.actual) == ("instances/app.00000", 1, 3)


async def test_readers_never_see_half_of_a_big_commit(stores):
    writer, reader = stores(), stores()
    ops = _big_ops(1200)
    first, last = ops[0].key, ops[-1].key
    seen = set()
    send = writer._transact

    async def one_by_one(multis):
        # The writer's multis (journal nodes, then their application) one
        # at a time with pauses: the reader gets every chance to look.
        results = []
        for multi in multis:
            results += await send([multi])
            await trio.sleep(0.02)
        return results

    writer._transact = one_by_one

    async def read_until_done(done: trio.Event) -> None:
        while not done.is_set():
            found = await reader.get_many([first, last])
            seen.add(len(found))
            assert len(found) in (0, 2), "half a commit was visible"
            assert len(await reader.list("instances/")) in (0, 1200)

    done = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_until_done, done)
        await writer.commit(ops)
        done.set()
    assert seen <= {0, 2}
    assert len(await reader.list("instances/")) == 1200


class _Crash(Exception):
    pass


def _crash_at(store: ZooKeeperStore, method: str, *, close_session: bool, before: bool) -> None:
    """Make `store` die in `method` (before or after it runs), as a killed
    process would: with its session closed, or left as it is."""
    original = getattr(store, method)

    async def dying(*args, **kwargs):
        if not before:
            await original(*args, **kwargs)
        if close_session:
            await _in_thread(store.kazoo_client.stop)
        raise _Crash()

    setattr(store, method, dying)


async def test_a_big_commit_that_died_after_its_commit_point_is_finished_by_the_next_store(stores, raw, root):
    doomed, survivor = stores(), stores()
    await doomed.put("instances/app.00000", b"old")
    ops = _big_ops(900)
    _crash_at(doomed, "_apply_chunks", close_session=True, before=True)
    with pytest.raises(_Crash):
        await doomed.commit(ops)
    assert len(await _in_thread(raw.get_children, f"{root}/state/@journal")) > 1
    # The survivor's reads wait for the commit and finish it.
    found = await survivor.scan("instances/")
    assert found == sorted((op.key, Entry(op.value, 2 if op is ops[0] else 1)) for op in ops)
    await _assert_idle(raw, root)
    assert await survivor.put("instances/app.00000", b"next") == 3


async def test_a_big_commit_that_died_before_its_commit_point_leaves_nothing(stores, raw, root):
    doomed, survivor = stores(), stores()
    _crash_at(doomed, "_write_journal", close_session=True, before=False)
    with pytest.raises(_Crash):
        await doomed.commit(_big_ops(900))
    assert await survivor.list("instances/") == []  # a prepared commit does not hold readers
    # A writer meets the lock, takes it over and drops the journal.
    assert await survivor.put("instances/app.00000", b"mine") == 1
    await _assert_idle(raw, root)
    assert await survivor.scan("instances/") == [("instances/app.00000", Entry(b"mine", 1))]


# -- fencing --


@pytest.fixture
async def fence(raw: KazooClient, root: str) -> str:
    path = f"{root}/leader"
    await _in_thread(raw.create, path, b"epoch 1", makepath=True)
    return path


async def test_a_moved_fence_fails_commits_with_nothing_written(stores, raw, root, fence):
    store = stores(fence=(fence, 0))
    assert await store.put("k", b"1") == 1
    await _in_thread(raw.set, fence, b"epoch 2")  # another leader won
    with pytest.raises(FencedOut) as info:
        await store.commit([Put("k", b"2"), Put("other/k", b"x")])
    assert (info.value.path, info.value.expected) == (fence, 0)
    assert await store.get("k") == Entry(b"1", 1)
    assert await _key_nodes(raw, root) == ["k"]
    # A big commit too, and its lock is given back.
    with pytest.raises(FencedOut):
        await store.commit(_big_ops(800))
    assert await _key_nodes(raw, root) == ["k"]
    await _assert_idle(raw, root)
    store.fence = (fence, 1)  # the election hands the new version over
    assert await store.put("k", b"3") == 2


async def test_a_deposed_leaders_unfinished_big_commit_is_taken_over_by_the_new_leader(stores, raw, root, fence):
    old = stores(fence=(fence, 0))
    ops = _big_ops(900)
    # Dies after its commit point with its session alive: a stuck process.
    _crash_at(old, "_apply_chunks", close_session=False, before=True)
    with pytest.raises(_Crash):
        await old.commit(ops)
    assert await _in_thread(raw.exists, f"{root}/state/@holder")
    await _in_thread(raw.set, fence, b"epoch 2")
    new = stores(fence=(fence, 1))
    with trio.fail_after(5):  # no waiting for the old session to expire
        assert len(await new.list("instances/")) == 900
    await _assert_idle(raw, root)
    assert await new.put(ops[0].key, b"x") == 2


# -- credentials --


async def test_credentials_protect_every_node_the_store_creates(zk_server, raw):
    root = f"/acl-{uuid.uuid4().hex}/marathon"
    store = open_store(f"zk://marathon:s3cret@{zk_server}{root}")
    try:
        await store.commit([Put("apps/a", b"secret"), Put("top", b"x")])
        assert await store.get("apps/a") == Entry(b"secret", 1)
        with pytest.raises(NoAuthError):
            await _in_thread(raw.get, _node(root, "apps/a"))
        await _in_thread(raw.add_auth, "digest", "marathon:s3cret")
        for path in (root.rsplit("/", 1)[0], root, f"{root}/state", _node(root, "apps/a")):
            acls, _ = await _in_thread(raw.get_acls, path)
            assert [(a.id.scheme, a.id.id.split(":")[0], a.perms) for a in acls] == [("digest", "marathon", 31)]
        intruder = open_store(f"zk://marathon:wrong@{zk_server}{root}")
        with pytest.raises(Exception, match="NoAuth"):
            await intruder.get("apps/a")
        await intruder.aclose()
    finally:
        await store.aclose()


# -- sessions and lost replies --


async def test_session_states_reach_listeners_in_trio(zk_server, root, nursery, raw):
    proxy = ZkProxy(zk_server)
    await nursery.start(proxy.run)
    store = ZooKeeperStore(proxy.hosts, root, session_timeout=1.0)
    changed = trio.Event()
    states: list[str] = []

    def listener(state: str) -> None:
        states.append(state)
        changed.set()

    async def next_state() -> str:
        nonlocal changed
        with trio.fail_after(10):
            while not states:
                await changed.wait()
                changed = trio.Event()
        return states.pop(0)

    try:
        assert store.state == "lost"
        store.add_state_listener(listener)
        await store.put("k", b"v")
        assert (await next_state(), store.state) == ("connected", "connected")
        proxy.cut(refuse=False)  # a blip: the session survives
        assert await next_state() == "suspended"
        assert await next_state() == "connected"
        # A partition longer than the session: the server expires it,
        # which an ephemeral node of the session shows.
        await _in_thread(store.kazoo_client.create, f"{root}/alive", ephemeral=True)
        expired = trio.Event()
        token = trio.lowlevel.current_trio_token()
        await _in_thread(raw.exists, f"{root}/alive", watch=lambda event: token.run_sync_soon(expired.set))
        proxy.cut()
        assert await next_state() == "suspended"
        with trio.fail_after(10):
            await expired.wait()
        proxy.restore()
        assert await next_state() == "lost"
        assert await next_state() == "connected"  # a new session
        assert await store.get("k") == Entry(b"v", 1)
    finally:
        await store.aclose()


async def test_a_commit_whose_reply_is_lost_is_applied_exactly_once(zk_server, root, nursery, stores, raw):
    proxy = ZkProxy(zk_server)
    await nursery.start(proxy.run)
    store = stores(hosts=proxy.hosts, session_timeout=4.0)
    observer = stores()
    await store.commit([Put("seen", b"1"), Put("k", b""), Delete("k")])  # their buckets exist now
    applied = trio.Event()
    token = trio.lowlevel.current_trio_token()
    await _in_thread(raw.exists, _node(root, "k"), watch=lambda event: token.run_sync_soon(applied.set))
    proxy.swallow_replies = True
    result: list = []

    async def commit() -> None:
        result.append(await store.commit([Put("k", b"once"), Put("seen", b"2")]))

    async with trio.open_nursery() as inner:
        inner.start_soon(commit)
        with trio.fail_after(10):
            await applied.wait()  # applied on the server...
        proxy.cut(refuse=False)  # ... and the reply never arrives
        proxy.restore()
    assert result == [[1, 2]]
    assert await observer.get_many(["k", "seen"]) == {"k": Entry(b"once", 1), "seen": Entry(b"2", 2)}


async def test_commits_of_many_tasks_are_in_flight_together(stores):
    store = stores()
    await store.put("warm", b"")

    async def put(i: int) -> None:
        assert await store.put(f"many/{i}", b"x") == 1

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(put, i)
    assert len(await store.list("many/")) == 200


async def test_forget_drops_the_versions_a_new_term_cannot_trust(stores):
    mine, theirs = stores(), stores()
    multis: list[int] = []
    send = mine._transact

    async def counted(batch):
        multis.append(len(batch))
        return await send(batch)

    mine._transact = counted
    for key in ("stale", "forgotten"):
        await mine.put(key, b"mine")  # mine remembers version 1 ...
        await theirs.put(key, b"theirs")  # ... which another leader moved on
    multis.clear()
    assert await mine.delete("stale") is True
    assert len(multis) == 2  # planned on version 1: failed, read, sent again
    multis.clear()
    mine.forget()  # a new term
    assert await mine.delete("forgotten") is True
    assert len(multis) == 1
    assert await theirs.get_many(["stale", "forgotten"]) == {}


# -- kazoo --


def test_kazoo_still_has_the_private_call_that_multiread_goes_through():
    # kazoo has no call for multiRead, so `_read` hands `_MultiRead` to the
    # private `KazooClient._call(request, async_object)`; pyproject.toml pins
    # kazoo to the versions known to have it.
    version = kazoo.version.__version__
    call = getattr(KazooClient, "_call", None)
    assert call is not None, (
        f"kazoo {version} has no KazooClient._call: the ZooKeeper store's reads (_zk_wire._MultiRead) "
        "need another way into kazoo's request queue; keep kazoo within the pin in pyproject.toml"
    )
    parameters = list(inspect.signature(call).parameters)
    assert parameters == ["self", "request", "async_object"], (
        f"kazoo {version} changed KazooClient._call to {parameters}: check how the ZooKeeper store's "
        "reads queue _MultiRead (ZooKeeperStore._read) before widening the kazoo pin in pyproject.toml"
    )


# -- urls --


def test_zk_urls_give_hosts_root_and_credentials():
    assert parse_zk_url("zk://h1:2181,h2:2181/marathon") == ("h1:2181,h2:2181", "/marathon", None)
    assert parse_zk_url("zk://u:p%40ss@h:1/a/b/") == ("h:1", "/a/b", ("u", "p@ss"))
    for bad in ["zk://h:1", "zk://h:1/", "zk:///m", "zk://u@h:1/m", "zk://h:1,,h2:1/m", "zk://h:1/a//b", "zk://h:1/a/../b"]:
        with pytest.raises(ValueError):
            parse_zk_url(bad)
        with pytest.raises(ValueError):
            open_store(bad)
