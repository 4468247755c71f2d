"""`marathon state export|import`: copy Marathon's whole state, and its
cluster id, between a single machine's --data_dir and ZooKeeper, through a
backup archive (storage/backup.py; docs/state-backup.md).

    marathon state export backup.tar --data_dir /var/lib/marathon
    marathon state import backup.tar --zk zk://zk1:2181,zk2:2181/marathon

Run both with the masters stopped.  An export is a consistent snapshot and
only reads, so it is also safe beside a running Marathon; an import refuses
a data dir whose Marathon runs (its embedded agent's lock is held) and a
ZooKeeper path with masters standing for election.  An import also refuses a
target that holds state, or another cluster id, unless --force: agents
checkpoint the cluster id, and a cluster with another id refuses them.

FILE may be "-" for stdout or stdin.  Exit codes: 0 done, 1 refused or
failed (nothing was written), 2 bad flags, 113 the disk is full or read-only.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, BinaryIO

import platformdirs

from ._exits import EXIT_STORAGE, first_leaf, storage_failure
from ._logging import setup_logging

EXIT_FAILED = 1
EXIT_BAD_FLAG = 2  # argparse's own code for bad flags

# Beside the store in ZooKeeper (ZooKeeperStore.read_meta), and a file in a
# data dir (server.py `_cluster_id`).
CLUSTER_ID_NODE = "cluster-id"
CLUSTER_ID_FILE = "cluster_id"
# Candidates for leadership (storage/election.py): ephemeral, so present
# exactly while some master runs against that path.
ELECTION_NODE = "leader-election"


class Refused(Exception):
    """The command will not do this (the message says why); nothing was written."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="marathon state", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    export = sub.add_parser(
        "export", help="write every stored key and the cluster id to a backup archive",
        description="Write Marathon's state (every stored key) and its cluster id to FILE, a tar "
        "archive. A consistent snapshot; it only reads.",
    )
    export.add_argument("file", metavar="FILE", help="the archive to write ('-': stdout)")
    source = export.add_mutually_exclusive_group()
    source.add_argument(
        "--data_dir", "--data-dir", dest="data_dir", default=None,
        help="a single machine's state: <DIR>/state.db and <DIR>/cluster_id (default: "
        "$MARATHON_DATA_DIR, else serve's default --data_dir)",
    )
    source.add_argument("--zk", default=None, metavar="URL", help="a cluster's state: zk://host:port[,...]/path")

    imp = sub.add_parser(
        "import", help="put a backup archive into an empty data dir or ZooKeeper path",
        description="Put the state and cluster id of the backup FILE into a ZooKeeper path or a data "
        "dir, in one commit. The whole archive is checked first: a bad file changes nothing.",
    )
    imp.add_argument("file", metavar="FILE", help="the archive to read ('-': stdin; .tar.gz and the like too)")
    target = imp.add_mutually_exclusive_group(required=True)
    target.add_argument("--zk", default=None, metavar="URL", help="zk://host:port[,...]/path of the cluster")
    target.add_argument("--data_dir", "--data-dir", dest="data_dir", default=None, metavar="DIR",
                        help="a single machine's data dir")
    imp.add_argument(
        "--force", action="store_true",
        help="replace whatever state the target holds, and its cluster id if it differs (agents "
        "that joined the old id are then refused)",
    )
    return parser


def main(argv: list[str]) -> int:
    ns = build_parser().parse_args(argv)
    if ns.zk is not None and not ns.zk.startswith("zk://"):
        print(f"marathon state: --zk takes a zk://host:port/path URL, got {ns.zk!r}", file=sys.stderr)
        return EXIT_BAD_FLAG
    if ns.action == "export" and ns.file == "-" and sys.stdout.isatty():
        print("marathon state: not writing a tar archive to a terminal; redirect stdout", file=sys.stderr)
        return EXIT_BAD_FLAG
    setup_logging("warn")
    # kazoo warns at every failed connection attempt; the outcome is reported once.
    logging.getLogger("kazoo").setLevel(logging.ERROR)
    import trio

    try:
        line = trio.run(_export if ns.action == "export" else _import, ns)
    except BaseException as exc:  # mapped to an exit code below, or re-raised
        leaf = first_leaf(exc)
        code = _exit_code(leaf)
        if code is None:
            raise
        if code != 130:
            print(f"marathon state {ns.action}: {leaf}", file=sys.stderr)
        return code
    # The archive may be on stdout: the summary goes beside it.
    print(line, file=sys.stderr if ns.file == "-" else sys.stdout)
    return 0


def _exit_code(exc: BaseException) -> int | None:
    """The exit code for a failure the user can act on, or None for a bug."""
    from ..errors import MarathonError

    if isinstance(exc, KeyboardInterrupt):
        return 130
    if isinstance(exc, (OSError, sqlite3.Error)):
        return EXIT_STORAGE if storage_failure(exc) else EXIT_FAILED
    if isinstance(exc, (Refused, MarathonError, ValueError)):
        return EXIT_FAILED
    return None


def _shown(url: str) -> str:
    """A zk:// URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    hosts, slash, path = rest.partition("/")
    if "@" in hosts:
        user = hosts.rpartition("@")[0].partition(":")[0]
        hosts = f"{user}:***@{hosts.rpartition('@')[2]}"
    return f"{scheme}{sep}{hosts}{slash}{path}"


def _summary(verb: str, summary: Any, source: str, target: str) -> str:
    cluster = summary.cluster_id or "none"
    return f"{verb} {summary.keys} keys ({summary.bytes:,} bytes), cluster id {cluster}, from {source} to {target}"


def _default_data_dir() -> str:
    return os.environ.get("MARATHON_DATA_DIR") or platformdirs.user_data_dir("marathon")


# -- export -----------------------------------------------------------------


async def _export(ns: argparse.Namespace) -> str:
    from ..storage import open_store
    from ..storage.backup import write_backup

    dest: Path | BinaryIO = sys.stdout.buffer if ns.file == "-" else Path(ns.file)
    if ns.zk is not None:
        store: Any = open_store(ns.zk)
        source = _shown(ns.zk)
        try:
            cluster_id = _decode_cluster_id(await store.read_meta(CLUSTER_ID_NODE), f"{source} {CLUSTER_ID_NODE}")
            if cluster_id is None and not await store.list(""):
                raise Refused(f"nothing at {source}: no cluster id and no state (is the path right?)")
            summary = await write_backup(store, dest, cluster_id=cluster_id)
        finally:
            await store.aclose()
    else:
        data_dir = Path(ns.data_dir or _default_data_dir())
        db = data_dir / "state.db"
        # Opening the store would create an empty one.
        if not db.is_file():
            raise Refused(f"no Marathon state in {data_dir}: {db} does not exist")
        cluster_id = _read_cluster_id_file(data_dir)
        source = str(db)
        store = open_store(db)
        try:
            summary = await write_backup(store, dest, cluster_id=cluster_id)
        finally:
            await store.aclose()
    return _summary("exported", summary, source, "stdout" if ns.file == "-" else ns.file)


# -- import -----------------------------------------------------------------


async def _import(ns: argparse.Namespace) -> str:
    from ..storage.backup import RestoreRefused, read_backup, restore_backup

    src: Path | BinaryIO = sys.stdin.buffer if ns.file == "-" else Path(ns.file)
    target = _ZkTarget(ns.zk) if ns.zk is not None else _DataDirTarget(Path(ns.data_dir))
    store = target.open_store()
    try:
        # Everything is checked before the first write: the archive, that no
        # Marathon runs, the target's state and its cluster id.
        backup = await read_backup(src, max_value_size=store.max_value_size)
        async with target.masters_stopped(store):
            current = await target.cluster_id(store)
            wanted = backup.manifest.cluster_id
            if current is not None and wanted is not None and current != wanted and not ns.force:
                raise Refused(
                    f"{target} has cluster id {current}, the backup is of cluster {wanted}: agents that "
                    "joined one are refused by the other. Import into a fresh target, or pass --force "
                    "to replace the id"
                )
            try:
                summary = await restore_backup(backup, store, replace=ns.force)
            except RestoreRefused as exc:
                raise Refused(
                    f"{target} holds state already ({exc.keys} keys): importing would mix two states; "
                    "pass --force to replace it"
                ) from None
            if wanted is not None and wanted != current:
                # After the state: a refused or failed restore leaves the id alone.
                await target.set_cluster_id(store, wanted)
    finally:
        await store.aclose()
    return _summary("imported", summary, "stdin" if ns.file == "-" else ns.file, str(target))


class _ZkTarget:
    """A ZooKeeper path: the store under it, the cluster id in its node."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __str__(self) -> str:
        return _shown(self.url)

    def open_store(self) -> Any:
        from ..storage import open_store

        return open_store(self.url)

    @asynccontextmanager
    async def masters_stopped(self, store: Any) -> AsyncIterator[None]:
        import trio
        from kazoo.exceptions import NoNodeError

        await store.connect()
        election = f"{store.root}/{ELECTION_NODE}"
        try:
            candidates = await trio.to_thread.run_sync(store.kazoo_client.get_children, election)
        except NoNodeError:
            candidates = []
        if candidates:
            raise Refused(
                f"{len(candidates)} Marathon master(s) run against {self} ({election} has candidates): "
                "stop them first, or they carry on from the state they hold in memory"
            )
        yield

    async def cluster_id(self, store: Any) -> str | None:
        return _decode_cluster_id(await store.read_meta(CLUSTER_ID_NODE), f"{self} {CLUSTER_ID_NODE}")

    async def set_cluster_id(self, store: Any, cluster_id: str) -> None:
        await store.write_meta(CLUSTER_ID_NODE, cluster_id.encode())


class _DataDirTarget:
    """A single machine's data dir: state.db, and the cluster_id file."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def __str__(self) -> str:
        return str(self.data_dir)

    def open_store(self) -> Any:
        from ..storage import open_store

        # FULL: the commit is on disk before the cluster id file is written.
        return open_store(self.data_dir / "state.db", synchronous="FULL")

    @asynccontextmanager
    async def masters_stopped(self, store: Any) -> AsyncIterator[None]:
        """Hold the embedded agent's lock of the data dir (executor.py: a
        server with an embedded agent holds it for as long as it runs), if
        it has one, so that no server starts while the state is replaced."""
        path = self.data_dir / "agent" / "lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            yield  # no server with an embedded agent ever ran here
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                raise Refused(f"Marathon runs on {self} (pid {holder}): stop it first") from None
            # As the agent does: a server started meanwhile names this process.
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)

    async def cluster_id(self, store: Any) -> str | None:
        return _read_cluster_id_file(self.data_dir)

    async def set_cluster_id(self, store: Any, cluster_id: str) -> None:
        _write_cluster_id_file(self.data_dir, cluster_id)


# -- cluster ids ------------------------------------------------------------


def _decode_cluster_id(data: bytes | None, where: str) -> str | None:
    if not data:
        return None
    try:
        return data.decode().strip() or None
    except UnicodeDecodeError:
        raise Refused(f"{where} holds no cluster id: {data[:40]!r}") from None


def _read_cluster_id_file(data_dir: Path) -> str | None:
    try:
        text = (data_dir / CLUSTER_ID_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    return text or None


def _write_cluster_id_file(data_dir: Path, cluster_id: str) -> None:
    """Replace `<data_dir>/cluster_id` whole (a crash leaves the old or the new one)."""
    path = data_dir / CLUSTER_ID_FILE
    tmp = path.with_name(f".{CLUSTER_ID_FILE}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(cluster_id + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
