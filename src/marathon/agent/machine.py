"""This machine, as the agent sees it: its resources, its free ports, its processes.

Everything here is a small synchronous read of /proc or the filesystem:

* `detect_resources()` -- what the agent offers by default (all CPUs, memory
  minus a reserve for the system, free disk of the work dir minus a reserve).
* `ListeningPorts` -- the TCP/UDP ports bound on this machine right now, from
  /proc/net/{tcp,tcp6,udp,udp6}, cached for about a second so a burst of
  `offers()` calls does not re-read /proc each time.
* `subtract_ports()` -- port ranges minus a set of taken ports.
* process facts the executor and the crash recovery rely on: a process's start
  time (the only thing that tells a pid from a reused pid), its state, group
  and session, this boot's id, our own children, and becoming a child
  subreaper so that daemonizing grandchildren stay reapable and killable.
* `as_user_argv()` -- run a program as another user after root prepared it.
"""

from __future__ import annotations

import bisect
import ctypes
import functools
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

from ..models.agent import PortRange
from ..models.resources import Resources

MEM_RESERVE_MIB = 256
DISK_RESERVE_MIB = 1024

_PROC_NET = ("/proc/net/tcp", "/proc/net/tcp6", "/proc/net/udp", "/proc/net/udp6")
_TCP_LISTEN = "0A"
_PR_SET_CHILD_SUBREAPER = 36


# -- resources -------------------------------------------------------------------


def mem_total_mib() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024  # the file says kB
    raise RuntimeError("MemTotal missing from /proc/meminfo")


def disk_free_mib(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize // (1024 * 1024)


def detect_resources(work_dir: Path) -> Resources:
    """All CPUs, MemTotal minus 256 MiB, free disk of `work_dir` minus 1 GiB, no GPUs.

    `ports` is left at 0: the driver fills it in from its port ranges.
    """
    return Resources(
        cpus=(os.cpu_count() or 1) * 1000,
        mem=max(0, mem_total_mib() - MEM_RESERVE_MIB),
        disk=max(0, disk_free_mib(work_dir) - DISK_RESERVE_MIB),
        gpus=0,
    )


# -- ports -----------------------------------------------------------------------


def ephemeral_port_range(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> PortRange:
    """The kernel's range for the source ports of outgoing connections.

    A task port inside it can be picked as the *source* port of a connection
    to that very port while the task is still starting; the connection then
    reaches itself (TCP self-connect), and a proxy in front of the task gets
    its own request back as the answer.  Agents keep task ports below it
    (Mesos offers 31000-32000; Linux starts the range at 32768).
    """
    try:
        with open(path) as f:
            low, high = map(int, f.read().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return PortRange(low, high)


def overlapping(ranges: Iterable[PortRange], other: PortRange) -> list[PortRange]:
    """The parts of `ranges` that fall inside `other`."""
    out = []
    for r in ranges:
        lo, hi = max(r.begin, other.begin), min(r.end, other.end)
        if lo <= hi:
            out.append(PortRange(lo, hi))
    return out


def read_bound_ports(paths: Iterable[str] = _PROC_NET) -> set[int]:
    """Local ports of listening TCP sockets and of every bound UDP socket."""
    ports: set[int] = set()
    for path in paths:
        udp = "udp" in path
        try:
            with open(path) as f:
                lines = f.read().splitlines()[1:]  # the first line is a header
        except OSError:
            continue  # no IPv6 in this kernel, say
        for line in lines:
            fields = line.split(None, 4)
            if len(fields) < 4:
                continue
            # A UDP socket has no LISTEN state; any bound one holds its port.
            if udp or fields[3] == _TCP_LISTEN:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


class ListeningPorts:
    """`read_bound_ports()` with a short cache: offers are asked for in bursts."""

    def __init__(self, ttl: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._at = float("-inf")
        self._ports: frozenset[int] = frozenset()

    def get(self) -> frozenset[int]:
        now = self._clock()
        if now - self._at >= self._ttl:
            self._ports = frozenset(read_bound_ports())
            self._at = now
        return self._ports

    def invalidate(self) -> None:
        self._at = float("-inf")


def subtract_ports(ranges: Iterable[PortRange], taken: Iterable[int]) -> list[PortRange]:
    """`ranges` without the ports in `taken`, as sorted inclusive ranges."""
    holes = sorted(set(taken))
    out: list[PortRange] = []
    for r in sorted(ranges, key=lambda r: r.begin):
        begin = r.begin
        i = bisect.bisect_left(holes, r.begin)
        while i < len(holes) and holes[i] <= r.end:
            if holes[i] > begin:
                out.append(PortRange(begin, holes[i] - 1))
            begin = holes[i] + 1
            i += 1
        if begin <= r.end:
            out.append(PortRange(begin, r.end))
    return out


# -- processes -------------------------------------------------------------------


class ProcStat(NamedTuple):
    state: str
    ppid: int
    pgid: int
    sid: int
    start_time: int  # clock ticks after boot (field 22)


def proc_stat(pid: int) -> ProcStat | None:
    """Fields of /proc/<pid>/stat, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split
    # after its last ")".  What follows starts at field 3 (state).
    rest = raw[raw.rindex(b")") + 2 :].split()
    return ProcStat(rest[0].decode(), int(rest[1]), int(rest[2]), int(rest[3]), int(rest[19]))


def proc_start_time(pid: int) -> int | None:
    st = proc_stat(pid)
    return None if st is None else st.start_time


def boot_id() -> str:
    """Changes on every boot: pids and start times from another boot mean nothing."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def own_children() -> list[int]:
    """Direct children of this process (orphans adopted as subreaper included).

    Children belong to the thread that forked them, so every thread's list is
    read (trio's worker threads spawn tasks).
    """
    pids: list[int] = []
    me = os.getpid()
    try:
        tids = os.listdir(f"/proc/{me}/task")
    except OSError:
        return pids
    for tid in tids:
        try:
            with open(f"/proc/{me}/task/{tid}/children") as f:
                pids.extend(int(p) for p in f.read().split())
        except OSError:
            continue  # the thread ended meanwhile
    return pids


def exited_child() -> int | None:
    """The pid of a child of ours that has exited and is not reaped yet, if any.

    Only a peek (WNOWAIT): the child stays a zombie for whoever waits for it.
    """
    try:
        info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return None  # no children at all
    return None if info is None else info.si_pid


def reap_group(pgid: int) -> None:
    """Reap every exited child of ours in process group `pgid` (never blocks)."""
    while True:
        try:
            if os.waitid(os.P_PGID, pgid, os.WEXITED | os.WNOHANG) is None:
                return
        except ChildProcessError:
            return


def environ_has(pid: int, entries: set[bytes]) -> bool:
    """Whether the process's initial environment holds one of the `KEY=value` entries."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return not entries.isdisjoint(f.read().split(b"\0"))
    except OSError:
        return False


def task_processes(sandboxes: Path) -> dict[str, list[int]]:
    """Task id -> pids of every process whose MESOS_SANDBOX lies under `sandboxes`.

    Found by their environment (inherited by every descendant that does not
    scrub it), so this sees the processes of tasks the agent has no record
    of.  Slow (reads every process's environ): used once, at start-up.
    """
    prefix = f"MESOS_SANDBOX={sandboxes}/".encode()
    found: dict[str, list[int]] = {}
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if not any(e.startswith(prefix) for e in env):
            continue
        for e in env:
            if e.startswith(b"MESOS_TASK_ID="):
                found.setdefault(e[14:].decode(errors="replace"), []).append(int(name))
                break
    return found


def become_child_subreaper() -> bool:
    """PR_SET_CHILD_SUBREAPER: orphaned descendants are re-parented to us.

    Without it, a task's grandchild whose parent exits goes to PID 1 and we
    lose the ability to reap it and to see it as ours.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def raise_nofile_limit() -> None:
    """Raise the soft open-files limit to the hard one: each live task holds a pidfd."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass


# -- running as another user ---------------------------------------------------------

@functools.cache
def _setpriv() -> str | None:
    return shutil.which("setpriv", path="/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")


# `warnings` before the switch: execvp imports it, and the interpreter's own
# library may be unreadable to the user.
_DROP_PY = (
    "import os,sys,warnings;os.setgroups([int(g) for g in sys.argv[3].split(',') if g]);"
    "os.setgid(int(sys.argv[2]));os.setuid(int(sys.argv[1]));os.execvp(sys.argv[4],sys.argv[4:])"
)


def as_user_argv(uid: int, gid: int, groups: list[int], argv: list[str]) -> list[str]:
    """`argv`, started by root, run as uid/gid/groups: privileges dropped just before its exec.

    For processes that must do something as root first (join a cgroup: an
    unprivileged process may not move itself into a root-owned one).  Uses
    util-linux `setpriv`, else this Python (isolated, without site).  The
    program is looked up in the PATH of the process's environment.
    """
    setpriv = _setpriv()
    if setpriv:
        extra = f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups"
        return [setpriv, f"--reuid={uid}", f"--regid={gid}", extra, "--", *argv]
    return [sys.executable, "-I", "-S", "-c", _DROP_PY, str(uid), str(gid),
            ",".join(map(str, groups)), *argv]
