"""What survives a crash of the agent process: its id and one record per live task.

`marathon serve` may be killed with SIGKILL at any moment; its tasks are not
(they live in their own sessions).  The next start must find them again,
re-adopt the ones still running and report the ones that ended, so that
Marathon neither loses track of a running process nor launches a duplicate.

Layout under the agent's work dir:

    agent_id                      the agent's stable id (written once)
    checkpoint/<task id>.json     one `TaskCheckpoint` per non-terminal task

A record is written right after the spawn (with the pid and its start
time), again whenever the task's health changes, and deleted when the task
is terminal.  Writes go to a temporary
file renamed over the old one, so a reader sees either the old or the new
record, never half of one.  If the agent dies between a spawn and its
record, the next start still finds the process, by the MESOS_SANDBOX in its
environment (`machine.task_processes`), and kills it.  There is no fsync: this protects against
the *process* dying (the page cache survives), and after a machine crash
the boot id differs and every task is dead anyway.
"""

from __future__ import annotations

import logging
import os
import signal
import uuid
from pathlib import Path

import msgspec
from msgspec import Struct

from ..models.launch import TaskLaunch
from . import machine
from .cgroups import TaskCgroup

log = logging.getLogger("marathon.agent")

LAUNCH_INTERRUPTED_MESSAGE = "The agent stopped while launching the task"
EXIT_UNKNOWN_MESSAGE = "Task exited while the agent was down or being re-adopted; exit status unknown"

_SUFFIX = ".json"


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


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(TaskCheckpoint)


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


class Checkpoint:
    """The directory of task records (safe to call from worker threads)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def ensure(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, task_id: str) -> Path:
        return self.directory / (task_id + _SUFFIX)

    def write(self, record: TaskCheckpoint) -> None:
        path = self._path(record.launch.task_id)
        # Unique per thread too: two writes of one task never overlap, but
        # be safe against a future caller that does.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{id(record)}.tmp")
        with open(tmp, "wb") as f:
            f.write(_encoder.encode(record))
        os.replace(tmp, path)

    def delete(self, task_id: str) -> None:
        try:
            os.unlink(self._path(task_id))
        except FileNotFoundError:
            pass

    def load_all(self) -> list[TaskCheckpoint]:
        """Every record; unreadable ones are logged and removed (nothing can use them)."""
        records = []
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return records
        for e in entries:
            if e.name.startswith("."):
                # A temporary file left by a crash mid-write: the rename never
                # happened, so the previous record (if any) is the valid one.
                os.unlink(e.path)
                continue
            if not e.name.endswith(_SUFFIX):
                continue
            try:
                with open(e.path, "rb") as f:
                    records.append(_decoder.decode(f.read()))
            except (OSError, msgspec.DecodeError) as err:
                log.warning("checkpoint_unreadable path=%s error=%s", e.path, err)
                os.unlink(e.path)
        return records


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
