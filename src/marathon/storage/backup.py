"""Backups of a `Store`: every key and its value in one tar archive, and
putting such an archive back into any store (docs/state-backup.md).

The archive is what Marathon's `--backup_location` holds, "a tar archive
containing every stored entity", in a layout of our own:

    manifest.json          first: {"format": "marathon-py-backup", "version": 1,
                           "cluster_id": ..., "keys": N, "created": ISO 8601}
    state/<name>           one regular file per key, its content the value's
                           bytes exactly as the store returns them

A key's member name is "state/" and its "/"-separated segments, each
percent-encoded (UTF-8 bytes outside [A-Za-z0-9_.~-] as %XX, upper-case),
the empty segment as "@", "." and ".." as "%2E" and "%2E%2E", as
ZooKeeperStore names its nodes (storage/_zk_wire.py).  So every legal key
is exactly one name and back, a name is plain ASCII, and none is absolute
or climbs out with "..".  (`tar xf` cannot extract a key that is also the
"directory" of another, "a" beside "a/b"; Marathon's own keys are not, and
the restore never extracts.)
Versions are not kept: a restored key starts over at version 1.

Reading is strict: the manifest must come first and match this format,
every other member must be a regular file whose name is the canonical
encoding of a key seen once, no value may exceed the target store's
`max_value_size`, and the count must be the manifest's (an archive cut at a
member boundary is a valid tar stream).  All of it is checked before the
first write, and the restore is one commit, so a bad archive, like a failed
commit, changes nothing.  Compressed archives (.tar.gz, .tar.xz, .tar.bz2)
are read as well.

`backup_to_uri` and `restore_from_uri` serve Marathon's
`DELETE /v2/leader?backup=file:///...&restore=file:///...`; file:// is the
only scheme (no s3://, no hdfs://).  The tar work runs in a worker thread,
so a backup taken by a running leader does not stall its event loop.
"""

from __future__ import annotations

import io
import lzma
import os
import re
import tarfile
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, BinaryIO
from urllib.parse import unquote, urlsplit

import msgspec
import trio
from msgspec import Meta, Struct

from ..errors import Conflict, IllegalArgument
from .contract import DEFAULT_MAX_VALUE_SIZE, Delete, Op, Put, Store, escape_name, unescape_name

__all__ = [
    "FORMAT",
    "VERSION",
    "Backup",
    "BackupSummary",
    "InvalidBackup",
    "Manifest",
    "RestoreRefused",
    "backup_path_of",
    "backup_to_uri",
    "member_name",
    "read_backup",
    "restore_backup",
    "restore_from_uri",
    "write_backup",
]

FORMAT = "marathon-py-backup"
VERSION = 1
MANIFEST_NAME = "manifest.json"
_STATE_DIR = "state/"
# A manifest is a few hundred bytes; anything near this is not ours.
_MANIFEST_MAX = 64 * 1024
# State may hold secrets (environment variables of apps): owner only.
_FILE_MODE = 0o600
# Printable ASCII without spaces: a cluster id goes on one line of a file
# and into a ZooKeeper node.
# (\A and \Z: "$" would let a final newline through.)
_CLUSTER_ID = re.compile(r"\A[!-~]{1,200}\Z")

Source = str | os.PathLike[str] | BinaryIO
Destination = str | os.PathLike[str] | BinaryIO


class Manifest(Struct, frozen=True, kw_only=True):
    """The first member of a backup, manifest.json."""

    format: str
    version: int
    # None: taken where no cluster id was known (a restore then keeps the
    # target's own).
    cluster_id: Annotated[str, Meta(pattern=_CLUSTER_ID.pattern)] | None
    keys: Annotated[int, Meta(ge=0)]
    created: str


class BackupSummary(Struct, frozen=True, kw_only=True):
    """What a backup holds: its cluster id, its key count, and the bytes
    of its values (what the store holds, archive framing not counted)."""

    cluster_id: str | None
    keys: int
    bytes: int


class Backup(Struct, frozen=True, kw_only=True):
    """A backup read and checked in full (`read_backup`), ready to restore."""

    manifest: Manifest
    entries: list[tuple[str, bytes]]

    @property
    def summary(self) -> BackupSummary:
        return BackupSummary(
            cluster_id=self.manifest.cluster_id,
            keys=len(self.entries),
            bytes=sum(len(value) for _, value in self.entries),
        )


class InvalidBackup(IllegalArgument):
    """The file is not a complete backup of this format; nothing was written."""

    def __init__(self, message: str) -> None:
        super().__init__(f"not a usable backup: {message}")


class RestoreRefused(Conflict):
    """The target store holds keys and the restore was not told to replace
    them; nothing was written."""

    def __init__(self, keys: int) -> None:
        super().__init__(
            f"the target store holds {keys} keys: restoring would mix two states (restore with replace)"
        )
        self.keys = keys


# -- names ------------------------------------------------------------------


def member_name(key: str) -> str:
    """The archive member holding `key`'s value."""
    return _STATE_DIR + "/".join(escape_name(segment) for segment in key.split("/"))


def _key_of(name: str) -> str | None:
    """The key whose member is `name`, or None if `name` is not exactly the
    encoding of a key (so each key has one name, and nothing else passes)."""
    if not name.startswith(_STATE_DIR) or not name.isascii():
        return None
    segments = name[len(_STATE_DIR) :].split("/")
    try:
        key = "/".join(unescape_name(s) for s in segments)
    except UnicodeDecodeError:
        return None
    if not key or "\x00" in key or member_name(key) != name:
        return None
    return key


# -- writing ----------------------------------------------------------------


async def write_backup(
    store: Store, dest: Destination, *, cluster_id: str | None, created: datetime | None = None
) -> BackupSummary:
    """Write every key of `store` (one `scan("")`: a snapshot) to `dest`, a
    path or a binary file.

    A path is written to a temporary file beside it, synced and renamed
    over it, so it is the complete backup or what it was before; a file
    object (stdout) is written as a stream and left open.
    """
    if cluster_id is not None and not _CLUSTER_ID.fullmatch(cluster_id):
        # A restore would refuse it: better not to write what cannot be read.
        raise ValueError(f"cluster id must be 1-200 printable ASCII characters without spaces, got {cluster_id!r}")
    entries = [(key, entry.value) for key, entry in await store.scan("")]
    stamp = (created or datetime.now(UTC)).astimezone(UTC)
    manifest = Manifest(
        format=FORMAT,
        version=VERSION,
        cluster_id=cluster_id,
        keys=len(entries),
        created=stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    )
    backup = Backup(manifest=manifest, entries=entries)
    if isinstance(dest, (str, os.PathLike)):
        await trio.to_thread.run_sync(_write_file, backup, Path(dest), stamp.timestamp())
    else:
        await trio.to_thread.run_sync(_write_tar, backup, dest, stamp.timestamp())
    return backup.summary


def _write_tar(backup: Backup, out: BinaryIO, mtime: float) -> None:
    def member(name: str, size: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size = size
        info.mode = _FILE_MODE
        info.mtime = int(mtime)
        return info

    # "w|": a stream of blocks, so `out` may be a pipe.
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        manifest = msgspec.json.encode(backup.manifest)
        tar.addfile(member(MANIFEST_NAME, len(manifest)), io.BytesIO(manifest))
        for key, value in backup.entries:
            tar.addfile(member(member_name(key), len(value)), io.BytesIO(value))
            tar.members.clear()  # a stream keeps no index (100,000 TarInfos)
    out.flush()


def _write_file(backup: Backup, path: Path, mtime: float) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, _FILE_MODE)
    except OSError as exc:
        # Name the backup, not our temporary file.
        raise type(exc)(exc.errno, exc.strerror, str(path)) from None
    try:
        with open(fd, "wb", closefd=True) as out:
            _write_tar(backup, out, mtime)
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def backup_path_of(uri: str) -> Path:
    """The file a backup URI names.  Only `file:///absolute/path` is
    supported; anything else raises ValueError saying so (the API answers
    422 with its message)."""
    if not isinstance(uri, str) or not uri:
        raise ValueError(f"backup location must be a file:///absolute/path URI, got {uri!r}")
    parts = urlsplit(uri)
    if parts.scheme != "file":
        raise ValueError(
            f"unsupported backup location {uri!r}: only file:///absolute/path is supported "
            f"(no {parts.scheme + '://' if parts.scheme else 'relative path'} backups)"
        )
    if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
        raise ValueError(f"backup location {uri!r} must be file:///absolute/path (no host, query or fragment)")
    path = unquote(parts.path)
    if not path.startswith("/") or path.endswith("/") or "\x00" in path:
        raise ValueError(f"backup location {uri!r} must name a file by its absolute path")
    return Path(path)


async def backup_to_uri(store: Store, uri: str, cluster_id: str | None) -> BackupSummary:
    """`write_backup` to the file `uri` names (`backup_path_of`: ValueError
    for anything but file:///absolute/path, before anything is read)."""
    path = backup_path_of(uri)
    return await write_backup(store, path, cluster_id=cluster_id)


# -- reading ----------------------------------------------------------------


async def read_backup(src: Source, *, max_value_size: int = DEFAULT_MAX_VALUE_SIZE) -> Backup:
    """Read and check all of the backup at `src` (a path or a binary file);
    `InvalidBackup` says what is wrong with it."""
    if isinstance(src, (str, os.PathLike)):
        return await trio.to_thread.run_sync(_read_file, Path(src), max_value_size)
    return await trio.to_thread.run_sync(_read_tar, src, max_value_size)


def _read_file(path: Path, max_value_size: int) -> Backup:
    with open(path, "rb") as src:
        return _read_tar(src, max_value_size)


def _read_tar(src: BinaryIO, max_value_size: int) -> Backup:
    try:
        # "r|*": a stream (src may be a pipe), compressed or not.
        with tarfile.open(fileobj=src, mode="r|*") as tar:
            return _read_members(tar, max_value_size)
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error, lzma.LZMAError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # the file could not be read: not the archive's fault
        raise InvalidBackup(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None


def _read_members(tar: tarfile.TarFile, max_value_size: int) -> Backup:
    first = tar.next()
    if first is None:
        raise InvalidBackup("the archive is empty")
    if first.name != MANIFEST_NAME or not first.isreg() or first.size > _MANIFEST_MAX:
        raise InvalidBackup(f"the first member is {first.name!r}, not a {MANIFEST_NAME}")
    try:
        manifest = msgspec.json.decode(_content(tar, first), type=Manifest)
    except msgspec.ValidationError as exc:
        raise InvalidBackup(f"{MANIFEST_NAME}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InvalidBackup(f"{MANIFEST_NAME} is not JSON: {exc}") from None
    if manifest.format != FORMAT:
        raise InvalidBackup(f"{MANIFEST_NAME} says format {manifest.format!r}, not {FORMAT!r}")
    if manifest.version != VERSION:
        raise InvalidBackup(f"format version {manifest.version} is not {VERSION}: written by another release")
    entries: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    # tar.next(), not iteration: iterating starts over at the manifest.
    while (info := tar.next()) is not None:
        # A stream needs no index of what it passed (100,000 TarInfos).
        tar.members.clear()
        key = _key_of(info.name)
        if key is None:
            raise InvalidBackup(f"member {info.name!r} is not the name of a key")
        if not info.isreg():
            raise InvalidBackup(f"member {info.name!r} is not a regular file")
        if key in seen:
            raise InvalidBackup(f"key {key!r} appears twice")
        if info.size > max_value_size:
            raise InvalidBackup(
                f"the value of key {key!r} is {info.size} bytes, over the target store's limit of "
                f"{max_value_size} bytes"
            )
        seen.add(key)
        entries.append((key, _content(tar, info)))
    if len(entries) != manifest.keys:
        why = "the file is truncated" if len(entries) < manifest.keys else "it is not the archive written"
        raise InvalidBackup(f"it holds {len(entries)} keys where {MANIFEST_NAME} says {manifest.keys}: {why}")
    return Backup(manifest=manifest, entries=entries)


def _content(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    data = tar.extractfile(info)
    assert data is not None  # a regular file
    content = data.read()
    if len(content) != info.size:
        raise InvalidBackup(f"member {info.name!r} is cut short: the file is truncated")
    return content


# -- restoring --------------------------------------------------------------


async def restore_backup(src: Source | Backup, store: Store, *, replace: bool = False) -> BackupSummary:
    """Put the backup at `src` (a path, a binary file, or a `Backup` already
    read) into `store`, in one commit.

    The archive is read and checked in full first (`InvalidBackup`).  A
    store that holds any key is refused (`RestoreRefused`) unless `replace`:
    then its keys are deleted and the backup's written in the same commit.
    Every existing key is fenced on the version read, so a write that
    lands in between fails the commit (`VersionConflict`) rather than
    surviving beside the backup.  Either way, on failure nothing changed.
    """
    if isinstance(src, Backup):
        backup = src
        _check_sizes(backup, _max_value_size(store))
    else:
        backup = await read_backup(src, max_value_size=_max_value_size(store))
    existing = {key: entry.version for key, entry in await store.scan("")}
    if existing and not replace:
        raise RestoreRefused(len(existing))
    await store.commit(_restore_ops(backup.entries, existing))
    return backup.summary


async def restore_from_uri(store: Store, uri: str) -> BackupSummary:
    """`restore_backup` of the file `uri` names, replacing whatever `store`
    holds (Marathon's `DELETE /v2/leader?restore=`).  The cluster id of the
    backup is only returned: where it is kept is the caller's business."""
    path = backup_path_of(uri)
    return await restore_backup(path, store, replace=True)


def _restore_ops(entries: Sequence[tuple[str, bytes]], existing: dict[str, int]) -> list[Op]:
    ops: list[Op] = []
    restored: set[str] = set()
    for key, value in entries:
        ops.append(Put(key, value, existing.get(key, 0)))
        restored.add(key)
    ops.extend(Delete(key, version) for key, version in existing.items() if key not in restored)
    return ops


def _max_value_size(store: Store) -> int:
    # Every backend has it, though the protocol does not name it.
    return getattr(store, "max_value_size", DEFAULT_MAX_VALUE_SIZE)


def _check_sizes(backup: Backup, limit: int) -> None:
    for key, value in backup.entries:
        if len(value) > limit:
            raise InvalidBackup(
                f"the value of key {key!r} is {len(value)} bytes, over the target store's limit of {limit} bytes"
            )
