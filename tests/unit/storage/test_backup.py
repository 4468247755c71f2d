"""Backups (storage/backup.py): a store written to a tar archive and put
back into any other backend; a target that holds state is refused unless
replaced; any archive that is not complete and ours changes nothing.

Stores are the conformance suite's (conftest.py): memory, SQLite in the
test's directory, and the session's real ZooKeeper under a root of its own.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
import uuid
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import pytest
import trio

from marathon.storage import Put, Store, VersionConflict, open_store
from marathon.storage.backup import (
    FORMAT,
    InvalidBackup,
    RestoreRefused,
    backup_path_of,
    backup_to_uri,
    member_name,
    read_backup,
    restore_backup,
    restore_from_uri,
    write_backup,
)
from marathon.storage.memory import MemoryStore

LIMIT = 1_024_000
CLUSTER = "0b6f4c2e-5d0a-4a57-9c39-1f5e2b1e7d11"

# Keys that a naive encoding would lose, merge or turn into paths outside
# the archive: separators at the ends and doubled, dot segments, %-escapes
# and the empty-segment marker as text, control characters, non-ASCII up
# to the last code point, and one long key.
ODD_KEYS = [
    "groups/root",
    "apps/shop_web/2024-05-01T10:00:00.000Z",
    "instances/shop_web.marathon-1b2c",
    "a",
    "a/b",
    "/leading",
    "trailing/",
    "a//b",
    "//",
    "/",
    ".",
    "..",
    "../etc/passwd",
    "x/./y",
    "x/../y",
    "@",
    "a/@/b",
    "%41",
    "%2F",
    "~home",
    "sp ace",
    "tab\tand\nnewline",
    "\x7f",
    "ünïcödé/ключ/鍵",
    "emoji/😀",
    "max/\U0010ffff",
    "long/" + "k" * 3000,
    "long/" + "é" * 1000,
]


def _state() -> dict[str, bytes]:
    """Every kind of value: empty, small, the largest allowed and
    incompressible, large and compressible (ZooKeeperStore zlibs it in its
    node), and the repository's own compressed encoding (header 0x01)."""
    values = {key: key.encode() * 3 for key in ODD_KEYS}
    values["empty"] = b""
    values["big/random"] = os.urandom(LIMIT)
    values["big/random-2"] = os.urandom(LIMIT - 1)
    values["big/compressible"] = b"marathon " * (LIMIT // 9)
    values["compressed/by-the-repository"] = b"\x01" + zlib.compress(b'{"id":"/web"}' * 10_000)
    values["binary"] = bytes(range(256)) * 4
    return values


@pytest.fixture
async def stores(tmp_path: Path, zk_server: str) -> AsyncIterator[Callable[[str], Store]]:
    """`stores(backend)`: a fresh store of that backend, closed at the end."""
    opened: list[Store] = []
    root = f"/backup-tests/{uuid.uuid4().hex}"

    def open_new(backend: str) -> Store:
        url = {
            "memory": "memory://",
            "sqlite": f"sqlite://{tmp_path}/{len(opened)}.db",
            "zk": f"zk://{zk_server}{root}/{len(opened)}",
        }[backend]
        store = open_store(url)
        opened.append(store)
        return store

    yield open_new
    for store in opened:
        await store.aclose()


async def _contents(store: Store) -> dict[str, bytes]:
    return {key: entry.value for key, entry in await store.scan("")}


async def _fill(store: Store, values: dict[str, bytes]) -> None:
    await store.commit([Put(key, value) for key, value in values.items()])


def _members(archive: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]


# -- round trips --------------------------------------------------------------


async def test_memory_to_sqlite_to_zookeeper_and_back_keeps_every_key_and_value(stores, tmp_path):
    values = _state()
    memory = stores("memory")
    await _fill(memory, values)

    first = tmp_path / "from-memory.tar"
    summary = await write_backup(memory, first, cluster_id=CLUSTER)
    assert (summary.cluster_id, summary.keys, summary.bytes) == (
        CLUSTER, len(values), sum(len(v) for v in values.values()))

    sqlite = stores("sqlite")
    assert await restore_backup(first, sqlite) == summary
    second = tmp_path / "from-sqlite.tar"
    await write_backup(sqlite, second, cluster_id=CLUSTER)

    zk = stores("zk")
    assert await restore_backup(second, zk) == summary
    third = tmp_path / "from-zk.tar"
    await write_backup(zk, third, cluster_id=CLUSTER)

    for store in (sqlite, zk):
        assert await _contents(store) == values
        # Versions are not part of a backup: a restored key starts over.
        assert {entry.version for _, entry in await store.scan("")} == {1}
    # The archive itself is the same whichever backend it came from, but
    # for the time it was made.
    archives = [_members(path.read_bytes()) for path in (first, second, third)]
    assert archives[0][1:] == archives[1][1:] == archives[2][1:]
    assert (await read_backup(third)).manifest.cluster_id == CLUSTER


async def test_the_archive_is_a_manifest_then_one_plain_file_per_key(stores):
    store = stores("memory")
    await _fill(store, {"groups/root": b"root", "../up": b"up", "a//b": b"", "ü": b"u"})
    out = io.BytesIO()
    await write_backup(store, out, cluster_id=None)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        members = tar.getmembers()
        manifest = msgspec.json.decode(tar.extractfile(members[0]).read())  # type: ignore[union-attr]
    assert members[0].name == "manifest.json"
    assert manifest["format"] == FORMAT and manifest["version"] == 1
    assert manifest["keys"] == 4 and manifest["cluster_id"] is None
    assert manifest["created"].endswith("Z")
    names = [m.name for m in members[1:]]
    assert names == ["state/%2E%2E/up", "state/a/@/b", "state/groups/root", "state/%C3%BC"]
    for m in members[1:]:
        assert m.isreg() and m.mode == 0o600 and not m.name.startswith("/")
        assert ".." not in m.name.split("/")


def test_every_key_has_one_member_name_that_stays_inside_the_archive():
    names = [member_name(key) for key in ODD_KEYS]
    assert len(set(names)) == len(ODD_KEYS)
    for name in names:
        assert name.isascii() and name.startswith("state/")
        assert all(segment not in ("", ".", "..") for segment in name.split("/"))
        assert not any(c in name for c in "\x00\n\t ")


async def test_a_backup_streams_to_a_file_object_and_reads_back_gzipped(stores):
    store = stores("memory")
    await _fill(store, {"k": b"v", "empty": b""})
    out = io.BytesIO()
    await write_backup(store, out, cluster_id=CLUSTER)
    backup = await read_backup(io.BytesIO(gzip.compress(out.getvalue())))
    assert backup.entries == [("empty", b""), ("k", b"v")]
    assert backup.manifest.cluster_id == CLUSTER


async def test_a_backup_file_is_replaced_whole_and_readable_by_its_owner_only(stores, tmp_path):
    store = stores("memory")
    await _fill(store, {"k": b"secret env"})
    path = tmp_path / "backup.tar"
    path.write_bytes(b"an older backup")
    await write_backup(store, path, cluster_id=None)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (await read_backup(path)).entries == [("k", b"secret env")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup.tar"]  # no temporary left


async def test_an_empty_store_makes_a_backup_that_restores_to_nothing(stores):
    out = io.BytesIO()
    summary = await write_backup(stores("memory"), out, cluster_id=CLUSTER)
    assert (summary.keys, summary.bytes) == (0, 0)
    target = stores("sqlite")
    assert (await restore_backup(io.BytesIO(out.getvalue()), target)).keys == 0
    assert await target.list("") == []


async def test_a_cluster_id_a_restore_could_not_read_is_refused_before_writing(stores, tmp_path):
    with pytest.raises(ValueError, match="cluster id"):
        await write_backup(stores("memory"), tmp_path / "b.tar", cluster_id="two words")
    with pytest.raises(ValueError, match="cluster id"):
        await write_backup(stores("memory"), tmp_path / "b.tar", cluster_id="id\n")
    assert not (tmp_path / "b.tar").exists()


# -- refusing, replacing -------------------------------------------------------


@pytest.mark.parametrize("backend", ["memory", "sqlite", "zk"])
async def test_a_store_that_holds_keys_is_refused_and_left_alone(stores, backend):
    source = stores("memory")
    await _fill(source, {"groups/root": b"new", "apps/a/1": b"a"})
    out = io.BytesIO()
    await write_backup(source, out, cluster_id=CLUSTER)
    target = stores(backend)
    await _fill(target, {"groups/root": b"old"})
    with pytest.raises(RestoreRefused, match="holds 1 keys") as refused:
        await restore_backup(io.BytesIO(out.getvalue()), target)
    assert refused.value.keys == 1 and refused.value.status == 409
    assert await _contents(target) == {"groups/root": b"old"}


@pytest.mark.parametrize("backend", ["memory", "sqlite", "zk"])
async def test_replace_leaves_exactly_the_backup(stores, backend):
    source = stores("memory")
    await _fill(source, {"groups/root": b"new", "apps/a/1": b"a", "empty": b""})
    out = io.BytesIO()
    await write_backup(source, out, cluster_id=CLUSTER)
    target = stores(backend)
    await _fill(target, {"groups/root": b"old", "instances/gone": b"x", "deployments/d": b"y"})
    await restore_backup(io.BytesIO(out.getvalue()), target, replace=True)
    assert await _contents(target) == {"groups/root": b"new", "apps/a/1": b"a", "empty": b""}


async def test_a_big_replace_on_zookeeper_is_one_commit_through_the_journal(stores):
    # 3 MB of values and 2,000 keys to delete: far over one multi (128 KB).
    values = {f"instances/app.marathon-{i:05d}": os.urandom(1000) for i in range(2000)}
    values.update({f"big/{i}": os.urandom(LIMIT) for i in range(3)})
    source = stores("memory")
    await _fill(source, values)
    out = io.BytesIO()
    await write_backup(source, out, cluster_id=None)
    zk = stores("zk")
    await _fill(zk, {f"old/{i}": b"o" * 100 for i in range(2000)})
    await restore_backup(io.BytesIO(out.getvalue()), zk, replace=True)
    assert await _contents(zk) == values


async def test_a_write_between_reading_the_target_and_the_commit_fails_the_restore():
    class WriterBetween(MemoryStore):
        """Another writer puts a key right after the restore has read the store."""

        async def scan(self, prefix: str):  # type: ignore[override]
            entries = await super().scan(prefix)
            await self.put("groups/root", b"written meanwhile")
            return entries

    source = MemoryStore()
    await _fill(source, {"groups/root": b"backup"})
    out = io.BytesIO()
    await write_backup(source, out, cluster_id=None)
    target = WriterBetween()
    await target.put("groups/root", b"old")
    with pytest.raises(VersionConflict):
        await restore_backup(io.BytesIO(out.getvalue()), target, replace=True)
    assert await _contents(target) == {"groups/root": b"written meanwhile"}


# -- archives that are not whole, or not ours -----------------------------------


def _tar(members: list[tuple[str, bytes]], *, manifest: dict | None = None, kind: bytes = tarfile.REGTYPE) -> bytes:
    """An archive with `manifest` (default: a valid one for `members`) first."""
    if manifest is None:
        manifest = {"format": FORMAT, "version": 1, "cluster_id": CLUSTER, "keys": len(members),
                    "created": "2024-01-01T00:00:00.000Z"}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [("manifest.json", msgspec.json.encode(manifest)), *members]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            if name != "manifest.json":
                info.type = kind
                if kind == tarfile.SYMTYPE:
                    info.size, info.linkname, data = 0, "/etc/passwd", b""
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _good_archive() -> bytes:
    return _tar([(member_name("groups/root"), b"root" * 100), (member_name("apps/a/1"), b"a" * 5000)])


def _manifest(**changes: object) -> dict:
    manifest = {"format": FORMAT, "version": 1, "cluster_id": CLUSTER, "keys": 1,
                "created": "2024-01-01T00:00:00.000Z"}
    manifest.update(changes)
    return manifest


def _no_manifest() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo(member_name("k"))
        info.size = 1
        tar.addfile(info, io.BytesIO(b"v"))
    return out.getvalue()


def _manifest_not_first() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in ((member_name("k"), b"v"), ("manifest.json", msgspec.json.encode(_manifest()))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _manifest_not_json() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = 9
        tar.addfile(info, io.BytesIO(b"{not json"))
    return out.getvalue()


_GOOD = _good_archive()
_LAST_HEADER = _GOOD.rindex(b"ustar") - 257  # the header of the last member

BAD_ARCHIVES = {
    "empty file": b"",
    "not a tar": b"PK\x03\x04 this is a zip" * 50,
    "cut inside the manifest": _GOOD[:700],
    "cut inside a value": _GOOD[: _LAST_HEADER + 512 + 100],
    "cut before the last member": _GOOD[:_LAST_HEADER],
    "gzip cut short": gzip.compress(_GOOD)[:-40],
    "no manifest": _no_manifest(),
    "manifest not first": _manifest_not_first(),
    "manifest of another format": _tar([(member_name("k"), b"v")], manifest=_manifest(format="marathon-scala")),
    "manifest of a newer version": _tar([(member_name("k"), b"v")], manifest=_manifest(version=2)),
    "manifest not json": _manifest_not_json(),
    "manifest without keys": _tar([(member_name("k"), b"v")], manifest={"format": FORMAT, "version": 1}),
    "more keys than the manifest says": _tar([(member_name("k"), b"v"), (member_name("l"), b"w")], manifest=_manifest(keys=1)),
    "cluster id with a newline": _tar([(member_name("k"), b"v")], manifest=_manifest(cluster_id="a\nb")),
    "cluster id ending in a newline": _tar([(member_name("k"), b"v")], manifest=_manifest(cluster_id="ab\n")),
    "empty cluster id": _tar([(member_name("k"), b"v")], manifest=_manifest(cluster_id="")),
    "absolute name": _tar([("/etc/passwd", b"x")]),
    "name climbing out": _tar([("state/../../etc/passwd", b"x")]),
    "name outside state/": _tar([("other/k", b"x")]),
    "name not canonical (lower-case escape)": _tar([("state/a%2fb", b"x")]),
    "name not canonical (unescaped space)": _tar([("state/a b", b"x")]),
    "name with a bad escape": _tar([("state/%zz", b"x")]),
    "name that is not UTF-8": _tar([("state/%FF", b"x")]),
    "name of a NUL key": _tar([("state/%00", b"x")]),
    "the same key twice": _tar([(member_name("k"), b"v"), (member_name("k"), b"w")], manifest=_manifest(keys=2)),
    "a symlink": _tar([(member_name("k"), b"")], kind=tarfile.SYMTYPE),
    "a directory": _tar([(member_name("k"), b"")], kind=tarfile.DIRTYPE),
    "a value over the store's limit": _tar([(member_name("k"), b"v" * (LIMIT + 1))]),
}


def test_the_good_archive_the_bad_ones_are_made_from_is_good():
    backup = trio.run(read_backup, io.BytesIO(_GOOD))
    assert [key for key, _ in backup.entries] == ["groups/root", "apps/a/1"]
    assert _GOOD[_LAST_HEADER:].startswith(member_name("apps/a/1").encode())


def test_an_archive_cut_only_in_its_end_blocks_is_whole():
    # Every value is there and the manifest's count checks out: the two
    # zero blocks that end a tar carry nothing.
    cut = _GOOD[: _LAST_HEADER + 512 + 5120 + 10]
    assert trio.run(read_backup, io.BytesIO(cut)) == trio.run(read_backup, io.BytesIO(_GOOD))


@pytest.mark.parametrize("case", list(BAD_ARCHIVES))
async def test_an_archive_that_is_not_whole_or_not_ours_changes_nothing(stores, case):
    target = stores("sqlite")
    await _fill(target, {"groups/root": b"old", "instances/i": b"running"})
    with pytest.raises(InvalidBackup) as invalid:
        await restore_backup(io.BytesIO(BAD_ARCHIVES[case]), target, replace=True)
    assert invalid.value.status == 422
    assert str(invalid.value).startswith("not a usable backup: ")
    assert await _contents(target) == {"groups/root": b"old", "instances/i": b"running"}


async def test_a_truncated_archive_changes_nothing_on_zookeeper(stores, tmp_path):
    source = stores("memory")
    await _fill(source, {f"instances/{i}": os.urandom(2000) for i in range(200)})
    path = tmp_path / "b.tar"
    await write_backup(source, path, cluster_id=CLUSTER)
    data = path.read_bytes()
    zk = stores("zk")
    await _fill(zk, {"groups/root": b"old"})
    for cut in (len(data) // 2, len(data) - 10240 - 2048):  # mid-value; one member short
        with pytest.raises(InvalidBackup, match="truncated|unexpected end"):
            await restore_backup(io.BytesIO(data[:cut]), zk, replace=True)
    assert await _contents(zk) == {"groups/root": b"old"}


async def test_values_are_checked_against_the_target_stores_own_limit(stores):
    source = stores("memory")
    await _fill(source, {"k": b"v" * 2000})
    out = io.BytesIO()
    await write_backup(source, out, cluster_id=None)
    small = MemoryStore(max_value_size=1000)
    with pytest.raises(InvalidBackup, match="2000 bytes, over the target store's limit of 1000"):
        await restore_backup(io.BytesIO(out.getvalue()), small)
    assert await small.list("") == []


async def test_an_unreadable_file_is_an_os_error_not_a_bad_backup(tmp_path):
    with pytest.raises(FileNotFoundError):
        await read_backup(tmp_path / "missing.tar")


# -- file:// locations (DELETE /v2/leader?backup=...) ------------------------


async def test_backup_to_a_file_uri_writes_that_file(stores, tmp_path):
    store = stores("memory")
    await _fill(store, {"k": b"v"})
    path = tmp_path / "with space.tar"
    summary = await backup_to_uri(store, f"file://{str(path).replace(' ', '%20')}", CLUSTER)
    assert summary.keys == 1
    assert (await read_backup(path)).entries == [("k", b"v")]


async def test_restore_from_a_file_uri_replaces_the_state(stores, tmp_path):
    source = stores("memory")
    await _fill(source, {"groups/root": b"backed up"})
    await backup_to_uri(source, f"file://{tmp_path}/b.tar", CLUSTER)
    leader = stores("sqlite")
    await _fill(leader, {"groups/root": b"current", "instances/i": b"x"})
    summary = await restore_from_uri(leader, f"file://{tmp_path}/b.tar")
    assert summary.cluster_id == CLUSTER
    assert await _contents(leader) == {"groups/root": b"backed up"}


@pytest.mark.parametrize(
    "uri, message",
    [
        ("s3://bucket/marathon.tar", "only file:///absolute/path is supported"),
        ("hdfs:///backups/m.tar", "only file:///absolute/path is supported"),
        ("backups/m.tar", "only file:///absolute/path is supported"),
        ("/abs/but/no/scheme.tar", "only file:///absolute/path is supported"),
        ("file://otherhost/m.tar", "no host, query or fragment"),
        ("file:///m.tar?x=1", "no host, query or fragment"),
        ("file:relative.tar", "absolute path"),
        ("file:///backups/", "absolute path"),
        ("", "file:///absolute/path"),
    ],
)
async def test_any_other_location_is_a_value_error_saying_what_is_supported(uri, message):
    with pytest.raises(ValueError, match=message.replace("?", r"\?")):
        backup_path_of(uri)
    with pytest.raises(ValueError, match=message.replace("?", r"\?")):
        await backup_to_uri(MemoryStore(), uri, None)
    with pytest.raises(ValueError, match=message.replace("?", r"\?")):
        await restore_from_uri(MemoryStore(), uri)


def test_file_uris_name_absolute_paths():
    assert backup_path_of("file:///var/backups/m.tar") == Path("/var/backups/m.tar")
    assert backup_path_of("file://localhost/var/m.tar") == Path("/var/m.tar")
    assert backup_path_of("file:///a%20b/%C3%BC.tar") == Path("/a b/ü.tar")
