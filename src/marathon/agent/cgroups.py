"""Per-task cgroups (v1 and v2): cpu and memory limits, and a handle on the whole tree.

A task's cgroup does two jobs: it enforces the task's limits (memory: the
hard limit, OOM-killed beyond it; cpu: a CFS quota and a relative weight),
and it lists every process the task ever started, however hard they tried
to escape (double fork, setsid), so a kill reaches all of them.

Layout: task cgroups live under the agent's *own* cgroup in each hierarchy
(read from /proc/self/cgroup), inside one directory per agent:

    v1: /sys/fs/cgroup/memory/<own path>/marathon-<agent id>/<task id>
        /sys/fs/cgroup/cpu/<own path>/marathon-<agent id>/<task id>
    v2: /sys/fs/cgroup/<own path>/marathon-<agent id>/<task id>

Staying under our own path keeps tasks inside whatever limits the machine's
manager put on us (on this kind of VM, memory:/process_api/<hash>), and the
per-agent directory keeps two agents on one machine apart.

The child joins its cgroup without `preexec_fn` (which disables vfork and
cuts the spawn rate threefold): it is started through a tiny shell wrapper
that writes its own pid into `cgroup.procs` and then execs the task, so the
whole tree is inside from the task's first instruction.

`detect()` answers None, with a reason, when cgroups are unusable (no
memory/cpu controllers, read-only, not root); the agent then runs tasks
without limits and says so once.
"""

from __future__ import annotations

import errno
import os
import shlex
import signal
from dataclasses import dataclass
from pathlib import Path

from msgspec import Struct

from ..models.launch import TaskLaunch

MIB = 1024 * 1024
CFS_PERIOD_US = 100_000
# Mesos never sets a memory limit below 32 MiB: less cannot even start a shell.
MIN_MEMORY_MIB = 32
MIN_CFS_QUOTA_US = 1_000  # the kernel refuses less than 1 ms per period
MIN_CPU_SHARES = 2

_V1_CONTROLLERS = ("memory", "cpu")


class TaskCgroup(Struct, frozen=True, kw_only=True):
    """The directories of one task's cgroup (one per hierarchy; the first is memory)."""

    version: int
    dirs: list[str]
    mem_limit_mib: int | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    mem_bytes: int | None  # None: no memory limit
    cpu_shares: int
    cfs_quota_us: int | None  # None: no cpu quota

    @classmethod
    def of(cls, task: TaskLaunch) -> Limits:
        """Limits for a task: the hard limit if given, else the request (SPEC 8.6)."""
        mem = task.mem if task.mem_limit is None else task.mem_limit
        mem_bytes = None
        if mem != "unlimited" and mem > 0:
            mem_bytes = int(max(float(mem), MIN_MEMORY_MIB) * MIB)
        cpu = task.cpus if task.cpu_limit is None else task.cpu_limit
        quota = None
        if cpu != "unlimited" and cpu > 0:
            quota = max(MIN_CFS_QUOTA_US, round(float(cpu) * CFS_PERIOD_US))
        shares = max(MIN_CPU_SHARES, round(task.cpus * 1024))
        return cls(mem_bytes=mem_bytes, cpu_shares=shares, cfs_quota_us=quota)


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read(path: Path) -> str:
    with open(path) as f:
        return f.read()


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(fstype, mount root, mount point, super options) of every cgroup mount."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            fields, post_fields = pre.split(), post.split()
            if len(post_fields) >= 3 and post_fields[0] in ("cgroup", "cgroup2"):
                out.append((post_fields[0], fields[3], fields[4], set(post_fields[2].split(","))))
    return out


def _own_paths() -> dict[str, str]:
    """Controller name (or "" for the v2 unified hierarchy) -> our cgroup path."""
    paths: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            for c in ctrls.split(",") if ctrls else [""]:
                paths[c] = path
    return paths


def _under_mount(mount_root: str, mount_point: str, own: str) -> Path:
    # A cgroup namespace or a bind mount shows only a sub-tree: our path is
    # then relative to the mount's root.
    if mount_root != "/" and (own == mount_root or own.startswith(mount_root + "/")):
        own = own[len(mount_root) :]
    return Path(mount_point, own.lstrip("/"))


class Cgroups:
    """Creates, joins, inspects and removes task cgroups for one agent."""

    def __init__(self, version: int, bases: list[Path]) -> None:
        self.version = version
        # v1: [memory base, cpu base]; v2: [base].  Each already exists.
        self.bases = bases

    def describe(self) -> str:
        return f"cgroup v{self.version} under " + ", ".join(str(b) for b in self.bases)

    # -- lifecycle ---------------------------------------------------------------

    def create(self, task: TaskLaunch) -> TaskCgroup:
        """Make the task's cgroup and write its limits (raises OSError on failure)."""
        limits = Limits.of(task)
        dirs = [b / task.task_id for b in self.bases]
        for d in dirs:
            d.mkdir(exist_ok=True)
        try:
            if self.version == 1:
                self._limit_v1(dirs[0], dirs[1], limits)
            else:
                self._limit_v2(dirs[0], limits)
        except OSError:
            for d in dirs:
                _rmdir_quiet(d)
            raise
        mem_mib = None if limits.mem_bytes is None else limits.mem_bytes // MIB
        return TaskCgroup(version=self.version, dirs=[str(d) for d in dirs], mem_limit_mib=mem_mib)

    @staticmethod
    def _limit_v1(mem: Path, cpu: Path, limits: Limits) -> None:
        if limits.mem_bytes is not None:
            _write(mem / "memory.limit_in_bytes", str(limits.mem_bytes))
            try:
                # Same limit for memory+swap so swap is no way around it.
                _write(mem / "memory.memsw.limit_in_bytes", str(limits.mem_bytes))
            except OSError:
                pass  # no swap accounting on this kernel
        _write(cpu / "cpu.shares", str(limits.cpu_shares))
        _write(cpu / "cpu.cfs_period_us", str(CFS_PERIOD_US))
        _write(cpu / "cpu.cfs_quota_us", str(-1 if limits.cfs_quota_us is None else limits.cfs_quota_us))

    @staticmethod
    def _limit_v2(d: Path, limits: Limits) -> None:
        if limits.mem_bytes is not None:
            _write(d / "memory.max", str(limits.mem_bytes))
            try:
                _write(d / "memory.swap.max", "0")
            except OSError:
                pass  # no swap controller
        # runc's conversion of cpu.shares [2, 262144] to cpu.weight [1, 10000].
        weight = 1 + ((min(limits.cpu_shares, 262144) - 2) * 9999) // 262142
        _write(d / "cpu.weight", str(weight))
        quota = "max" if limits.cfs_quota_us is None else str(limits.cfs_quota_us)
        _write(d / "cpu.max", f"{quota} {CFS_PERIOD_US}")

    @staticmethod
    def join_argv(cg: TaskCgroup, argv: list[str]) -> list[str]:
        """`argv` wrapped so that the process enters `cg` before it execs."""
        writes = " && ".join(f"echo $$ > {shlex.quote(d + '/cgroup.procs')}" for d in cg.dirs)
        # Exit 125 if joining fails rather than run the task unconfined.
        script = f'{{ {writes}; }} || exit 125; exec "$@"'
        return ["/bin/sh", "-c", script, "marathon-task", *argv]

    # -- inspection --------------------------------------------------------------

    @staticmethod
    def procs(cg: TaskCgroup) -> set[int]:
        pids: set[int] = set()
        for d in cg.dirs:
            try:
                pids.update(int(p) for p in _read(Path(d) / "cgroup.procs").split())
            except OSError:
                continue
        return pids

    @classmethod
    def kill_all(cls, cg: TaskCgroup, sig: int = signal.SIGKILL) -> int:
        """Signal every process in the cgroup; returns how many were signalled."""
        if cg.version == 2 and sig == signal.SIGKILL:
            try:
                # Atomic (Linux 5.14+): even a fork loop cannot outrun it.
                _write(Path(cg.dirs[0]) / "cgroup.kill", "1")
            except OSError:
                pass
        n = 0
        for pid in cls.procs(cg):
            try:
                os.kill(pid, sig)
                n += 1
            except ProcessLookupError:
                pass
        return n

    @staticmethod
    def memory_report(cg: TaskCgroup) -> tuple[bool, int | None]:
        """(was something OOM-killed in it, peak memory use in bytes if known)."""
        d = Path(cg.dirs[0])
        oom = False
        peak = None
        try:
            name = "memory.oom_control" if cg.version == 1 else "memory.events"
            for line in _read(d / name).splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    oom = True
        except (OSError, ValueError):
            pass
        try:
            name = "memory.max_usage_in_bytes" if cg.version == 1 else "memory.peak"
            peak = int(_read(d / name).strip())
        except (OSError, ValueError):
            pass
        return oom, peak

    @staticmethod
    def remove(cg: TaskCgroup) -> bool:
        """One attempt to remove the task's directories; True once all are gone.

        Fails (False) while processes are still draining out of it; callers
        retry for a short while.
        """
        done = True
        for d in cg.dirs:
            done &= _rmdir_quiet(Path(d))
        return done

    def stale(self, keep: set[str]) -> list[TaskCgroup]:
        """Task cgroups under our bases not named in `keep` (left by a crash)."""
        names: set[str] = set()
        for b in self.bases:
            try:
                names.update(e.name for e in os.scandir(b) if e.is_dir())
            except OSError:
                continue
        return [
            TaskCgroup(version=self.version, dirs=[str(b / n) for b in self.bases])
            for n in sorted(names - keep)
        ]

    def remove_bases(self) -> None:
        """Remove the per-agent directories if no task cgroup is left in them."""
        for b in self.bases:
            _rmdir_quiet(b)


def _rmdir_quiet(d: Path) -> bool:
    try:
        os.rmdir(d)
    except FileNotFoundError:
        return True
    except OSError as e:
        if e.errno in (errno.EBUSY, errno.ENOTEMPTY):
            return False
        raise
    return True


# -- detection ---------------------------------------------------------------------

_V2_LEAF = "marathon-agent"


def detect(agent_dir: str) -> tuple[Cgroups | None, str]:
    """The usable cgroup setup for an agent, or (None, why not)."""
    try:
        mounts = _mounts()
        own = _own_paths()
    except OSError as e:
        return None, f"cannot read /proc: {e}"
    if os.geteuid() != 0:
        return None, "the agent is not running as root"
    for fstype, root, point, _opts in mounts:
        if fstype == "cgroup2" and "" in own:
            d = _under_mount(root, point, own[""])
            try:
                ctrls = set(_read(d / "cgroup.controllers").split())
            except OSError:
                continue
            if {"memory", "cpu"} <= ctrls:
                return _setup_v2(d, agent_dir)
    found: dict[str, Path] = {}
    for fstype, root, point, opts in mounts:
        if fstype != "cgroup":
            continue
        for c in _V1_CONTROLLERS:
            if c in opts and c in own and c not in found:
                found[c] = _under_mount(root, point, own[c])
    missing = [c for c in _V1_CONTROLLERS if c not in found]
    if missing:
        return None, f"no cgroup v2 with memory+cpu and no v1 hierarchy for {','.join(missing)}"
    bases = [found[c] / agent_dir for c in _V1_CONTROLLERS]
    try:
        for b in bases:
            b.mkdir(exist_ok=True)
    except OSError as e:
        return None, f"cannot create {e.filename}: {e.strerror}"
    return Cgroups(1, bases), ""


def _setup_v2(own: Path, agent_dir: str) -> tuple[Cgroups | None, str]:
    # v2's "no internal processes" rule: controllers can be enabled for the
    # children of a cgroup only if it holds no processes itself.  If ours
    # does, move this process into a leaf beside the tasks (the next start
    # finds itself in that leaf and uses its parent again).
    if own.name == _V2_LEAF:
        own = own.parent
    base = own / agent_dir
    try:
        try:
            _write(own / "cgroup.subtree_control", "+memory +cpu")
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise
            leaf = own / _V2_LEAF
            leaf.mkdir(exist_ok=True)
            _write(leaf / "cgroup.procs", str(os.getpid()))
            _write(own / "cgroup.subtree_control", "+memory +cpu")
        base.mkdir(exist_ok=True)
        _write(base / "cgroup.subtree_control", "+memory +cpu")
    except OSError as e:
        return None, f"cgroup v2 at {own}: cannot enable memory and cpu controllers ({e.strerror})"
    return Cgroups(2, [base]), ""
