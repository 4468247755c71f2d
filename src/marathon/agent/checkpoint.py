"""What survives a crash of the agent process: its id and one record per live task.

`marathon serve` may be killed with SIGKILL at any moment; its tasks are not
(they live in their own sessions).  The next start must find them again,
re-adopt the ones still running and report the ones that ended, so that
Marathon neither loses track of a running process nor launches a duplicate.

Layout under the agent's work dir:

    agent_id                the agent's stable id (written once)
    checkpoint/journal      one JSON line per change: {"op":"put","record":...}
                            (a `TaskCheckpoint`) or {"op":"drop","task_id":...}

A record is put right after the spawn (with the pid and its start time; a
burst's share of tasks in one append), again whenever the task's health
changes, and dropped when the task is terminal (the executor's journal
writer drops the tasks that ended meanwhile in one append).  The last line for a task
wins.  Appends are single `write` calls on a file opened with O_APPEND, so
lines never interleave.  A process killed in the middle of one can leave a
torn last line: readers skip any line that does not decode, and every
agent start rewrites the journal with the live records only (so does an
agent whose journal has grown to four times its live records).  If the
agent dies between a spawn and its record, the next start still finds the
process, by the MESOS_SANDBOX in its environment
(`machine.task_processes`), and kills it.

There is no fsync: this protects against the *process* dying (the page
cache survives), and after a machine crash the boot id differs and every
task is dead anyway.

The first layout, `checkpoint/<task id>.json` with one record per file, is
still read: a start moves those records into the journal and removes the
files.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path

import msgspec
from msgspec import Struct

from ..models.launch import TaskLaunch
from . import machine
from .cgroups import TaskCgroup

log = logging.getLogger("marathon.agent")

LAUNCH_INTERRUPTED_MESSAGE = "The agent stopped while launching the task"
EXIT_UNKNOWN_MESSAGE = "Task exited while the agent was down or being re-adopted; exit status unknown"

_LEGACY_SUFFIX = ".json"  # the first layout: one file per task
_JOURNAL = "journal"


class TaskCheckpoint(Struct, kw_only=True):
    """What the agent must know to re-adopt (or bury) one task after a restart."""

    launch: TaskLaunch
    sandbox: str
    boot_id: str
    staged_at: int  # ms since the epoch
    pid: int | None = None
    # Field 22 of /proc/<pid>/stat when spawned: tells our process from a
    # later process that got the same pid.
    start_time: int | None = None
    pgid: int | None = None
    running_since: int | None = None  # ms since the epoch
    cgroup: TaskCgroup | None = None
    # Health checks resume after a restart from these: when the task became
    # RUNNING (wall clock, s; the grace period counts from it), the health
    # last reported, and whether a probe ever succeeded.
    running_at: float | None = None
    healthy: bool | None = None
    health_succeeded: bool = False


class _Put(Struct, tag="put", tag_field="op"):
    record: TaskCheckpoint


class _Drop(Struct, tag="drop", tag_field="op"):
    task_id: str


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(TaskCheckpoint)
_line_decoder = msgspec.json.Decoder(_Put | _Drop)


def load_or_create_agent_id(work_dir: Path) -> str:
    """The agent id stored in `work_dir`, generated (Mesos style) on first use."""
    path = work_dir / "agent_id"
    try:
        text = path.read_text().strip()
        if text:
            return text
    except FileNotFoundError:
        pass
    agent_id = f"{uuid.uuid4()}-S0"
    _atomic_write(path, agent_id.encode() + b"\n")
    return agent_id


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def rewrite_journal(path: Path, lines: Sequence[bytes]) -> int:
    """Replace the journal at `path` with `lines` (a temporary file renamed
    over it: a crash leaves the old journal or the new one, never half of
    one); returns the new file's descriptor, open for appending."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        write_all(fd, b"".join(lines))
        os.replace(tmp, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_records(directory: Path) -> dict[str, TaskCheckpoint]:
    """The live records under `directory` by task id, read without changing
    anything (so safe while an agent runs on it)."""
    return {tid: rec for tid, (rec, _) in _read(directory)[0].items()}


def _read(directory: Path) -> tuple[dict[str, tuple[TaskCheckpoint, bytes]], list[str]]:
    """({task id: (record, its journal line)}, files to remove once the
    journal holds everything: the first layout's and temporary ones)."""
    live: dict[str, tuple[TaskCheckpoint, bytes]] = {}
    obsolete: list[str] = []
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except FileNotFoundError:
        return live, obsolete
    for e in entries:
        if e.name.startswith("."):
            # A temporary file left by a crash mid-rewrite: the rename never
            # happened, so the journal it would have replaced is the valid one.
            obsolete.append(e.path)
        elif e.name.endswith(_LEGACY_SUFFIX):
            obsolete.append(e.path)
            try:
                with open(e.path, "rb") as f:
                    rec = _decoder.decode(f.read())
            except (OSError, msgspec.DecodeError) as err:
                log.warning("checkpoint_unreadable path=%s error=%s", e.path, err)
                continue
            live[rec.launch.task_id] = (rec, _encoder.encode(_Put(record=rec)) + b"\n")
    try:
        with open(directory / _JOURNAL, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return live, obsolete
    for number, line in enumerate(data.split(b"\n"), 1):
        if not line:
            continue
        try:
            op = _line_decoder.decode(line)
        except msgspec.DecodeError as err:
            # A torn last line (the agent killed mid-append): that change
            # never completed.  Anywhere else, a damaged line: skip it.
            log.warning("checkpoint_line_unreadable path=%s line=%d error=%s",
                        directory / _JOURNAL, number, err)
            continue
        if isinstance(op, _Put):
            live[op.record.launch.task_id] = (op.record, line + b"\n")
        else:
            live.pop(op.task_id, None)
    return live, obsolete


class Checkpoint:
    """The journal of task records (safe to call from worker threads).

    Opening it (the first call that changes it, or `load_all`) reads what
    is there and rewrites it with the live records only.  One instance (one
    agent) owns a directory at a time; others may only `read_records`.
    """

    # Rewrite once the journal has this many lines and four times the live records.
    COMPACT_AT = 1024

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._live: dict[str, bytes] = {}  # task id -> its record's line
        self._lines = 0  # in the journal file

    def ensure(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def write(self, record: TaskCheckpoint) -> None:
        self.apply([(record.launch.task_id, record)])

    def write_many(self, records: Sequence[TaskCheckpoint]) -> None:
        """Put `records` (replacing earlier ones of their tasks), in one append."""
        self.apply([(r.launch.task_id, r) for r in records])

    def delete_many(self, task_ids: Sequence[str]) -> None:
        """Drop the records of `task_ids` (those that have one), in one append."""
        self.apply([(tid, None) for tid in task_ids])

    def apply(self, changes: Sequence[tuple[str, TaskCheckpoint | None]]) -> None:
        """Put (a record) or drop (None) per task id, in order, in one append.
        Dropping a task that has no record writes nothing."""
        encoded = [(tid, None if rec is None else _encoder.encode(_Put(record=rec)) + b"\n")
                   for tid, rec in changes]
        with self._lock:
            fd = self._open()
            out = []
            for tid, line in encoded:
                if line is not None:
                    self._live[tid] = line
                    out.append(line)
                elif self._live.pop(tid, None) is not None:
                    out.append(_encoder.encode(_Drop(task_id=tid)) + b"\n")
            if out:
                try:
                    write_all(fd, b"".join(out))
                except BaseException:
                    # A part may be on disk (disk full): the next append must
                    # not be glued to it.  Reopening reads the journal (the
                    # torn last line is skipped), takes what it holds as the
                    # live records and rewrites it whole.
                    self._close()
                    raise
                self._lines += len(out)
                self._compact_if_due()

    def load_all(self) -> list[TaskCheckpoint]:
        """Every live record, read afresh from the directory."""
        with self._lock:
            self._close()
            return self._open_and_read()

    def close(self) -> None:
        with self._lock:
            self._close()

    def _open(self) -> int:
        if self._fd is None:
            self._open_and_read()
        assert self._fd is not None
        return self._fd

    def _open_and_read(self) -> list[TaskCheckpoint]:
        live, obsolete = _read(self.directory)
        self._live = {tid: line for tid, (_, line) in live.items()}
        self._rewrite()
        for path in obsolete:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        return [rec for rec, _ in live.values()]

    def _rewrite(self) -> None:
        """The journal replaced by one holding the live records only."""
        self._close()
        self._fd = rewrite_journal(self.directory / _JOURNAL, list(self._live.values()))
        self._lines = len(self._live)

    def _compact_if_due(self) -> None:
        if self._lines >= self.COMPACT_AT and self._lines >= 4 * len(self._live):
            self._rewrite()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# -- recovery ----------------------------------------------------------------------


def examine(record: TaskCheckpoint, boot_id: str) -> tuple[int | None, str]:
    """Is the recorded task still running?  (its pidfd, "") or (None, why not).

    The caller owns the returned pidfd.
    """
    if record.pid is None:
        return None, LAUNCH_INTERRUPTED_MESSAGE
    if record.boot_id != boot_id:
        return None, "The machine rebooted while the agent was down"
    try:
        pidfd = os.pidfd_open(record.pid)
    except ProcessLookupError:
        return None, EXIT_UNKNOWN_MESSAGE
    # Checked after pidfd_open: the fd now pins whichever process has the
    # pid, and the start time says whether that is still ours.
    if machine.proc_start_time(record.pid) != record.start_time:
        os.close(pidfd)
        return None, EXIT_UNKNOWN_MESSAGE
    return pidfd, ""


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
