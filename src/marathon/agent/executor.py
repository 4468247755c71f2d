"""Process supervision: runs each task as a real process tree and reports its fate.

The executor owns every task this agent runs, from `launch()` to its
terminal status, and is the only writer of their state:

    launch()  -> TASK_STAGING        resources taken at once
    spawned   -> TASK_STARTING, TASK_RUNNING
    kill()    -> TASK_KILLING        SIGTERM to the group, SIGKILL after the grace
    exit      -> TASK_FINISHED | TASK_FAILED | TASK_KILLED   resources released

Each task runs in its own session and process group (so a signal reaches
the shell's children too), with its sandbox as cwd and stdout/stderr in
files there, and, when the machine allows, in its own cgroup with cpu and
memory limits.  The agent is a child subreaper: orphaned grandchildren
become its children, are killed with their task and reaped.  When a task's
main process ends, whatever it left behind in its group or cgroup is killed
(Mesos destroys the container the same way), so no process outlives its
task.

Processes are spawned in worker threads, a share of a burst per thread.
The compiled `_spawn.spawn_many` starts a whole share with glibc's
`posix_spawn` (a vfork with the working directory and descriptors set)
and makes each sandbox, pidfd and start time on the way, all without the
GIL; without the compiled module, or for another user, `subprocess.Popen`
starts one task at a time (never with `preexec_fn`: it disables vfork and
divides the spawn rate by three).  A plain command (`plain_command`) is
executed without the shell in between.  Each process is watched through a
pidfd, one trio task each.  Every live task is checkpointed
(`checkpoint.py`, one append per share) so that a restarted agent
re-adopts what still runs and reports what ended.

Statuses go out, in order, through one bounded channel.  If the consumer
falls behind and the channel fills, lifecycle statuses wait in an ordered
overflow (a few per task, so bounded by the number of tasks) and are never
dropped; answers to reconciliation, which can always be asked again, are
dropped instead once that overflow is long.

A task launched with a `health_check` is probed next to it once RUNNING
(`health.py`): changes of its health go out as TASK_RUNNING statuses with
`healthy` set, and too many failures in a row kill it.
"""

from __future__ import annotations

import collections
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

import msgspec.structs
import trio

from ..config import LOG_EACH_TASK_UP_TO
from ..models.instance import CheckStatus, TaskStatus
from ..models.launch import TaskLaunch
from ..models.resources import Resources
from . import machine
from .capabilities import LAUNCH_FAILED_REASON, PLAIN_PROCESSES, Capabilities, refusal
from .cgroups import Cgroups, TaskCgroup, detect
from .checkpoint import (
    EXIT_UNKNOWN_MESSAGE,
    LAUNCH_INTERRUPTED_MESSAGE,
    Checkpoint,
    TaskCheckpoint,
    examine,
    kill_pids,
)
from .cni import Attachment, CniNetworks
from .fetcher import DEFAULT_CACHE_BYTES
from .health import (
    HEALTH_KILL_MESSAGE,
    HEALTH_REASON,
    MIN_INTERVAL,
    HealthState,
    Prober,
    check_status,
    command_context,
    describe_exit,
)
from .images import Image, ImageStore
from .oci import ContainerError, OciRuntime
from .outbox import Outbox
from .prepare import PrepareError, Preparer, image_of, needs_preparing
from .process import (
    Plan,
    SpawnError,
    command_argv,
    exec_task,
    shell_argv,
    spawn_many,
    task_env,
    user_options,
)
from .spawner import Spawner

log = logging.getLogger("marathon.agent")

UNKNOWN_TASK_MESSAGE = "Reconciliation: Task is unknown to the agent"
_DONE_LIMIT = 10_000  # terminal statuses remembered for reconciliation
_DRAIN_SECONDS = 2.0  # how long a dead task's leftovers may take to disappear
_FOREIGN_ZOMBIE_SECONDS = 10.0
NSENTER = shutil.which("nsenter") or "/usr/bin/nsenter"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Task:
    """Mutable record of one task (touched only from the trio thread, except
    the spawn fields, written by the spawn thread before `spawned` is set)."""

    __slots__ = (
        "launch", "resources", "sandbox", "state", "state_ts", "message", "reason", "exit_code",
        "pid", "pgid", "start_time", "pidfd", "popen", "cgroup", "adopted", "kill_requested",
        "kill_deadline", "spawned", "exited", "record", "healthy", "health", "health_scope",
        "health_killed", "quiet_launch", "quiet_kill", "prepare_scope", "image", "netns", "check_result",
        "check_scope",
    )

    def __init__(self, launch: TaskLaunch, sandbox: Path) -> None:
        self.launch = launch
        self.resources = Resources.of(
            cpus=launch.cpus, mem=launch.mem, disk=launch.disk, gpus=launch.gpus,
            ports=len(launch.host_ports),
        )
        self.sandbox = sandbox
        self.state = "TASK_STAGING"
        self.state_ts = 0
        self.message = ""
        self.reason: str | None = None
        self.exit_code: int | None = None
        self.pid: int | None = None
        self.pgid: int | None = None
        self.start_time: int | None = None
        self.pidfd: int | None = None
        self.popen: subprocess.Popen[bytes] | None = None
        self.cgroup: TaskCgroup | None = None
        self.adopted = False
        self.kill_requested = False
        self.kill_deadline: float | None = None
        self.spawned = trio.Event()  # spawn attempted (pid set, or it failed)
        self.exited = trio.Event()  # terminal status emitted
        self.record: TaskCheckpoint | None = None  # as last checkpointed
        self.healthy: bool | None = None  # last health reported (None: not known yet)
        self.health: HealthState | None = None
        self.health_scope: trio.CancelScope | None = None  # the health checks' loop
        self.health_killed = False  # killed because of failed health checks
        # Launched, or killed, with more than LOG_EACH_TASK_UP_TO others:
        # its own line goes to debug (one summary line is at info).
        self.quiet_launch = False
        self.quiet_kill = False
        self.prepare_scope: trio.CancelScope | None = None  # fetching its artifacts, pulling its image
        self.image: Image | None = None  # the image it runs, once pulled
        self.netns: Attachment | None = None  # its network namespace (None: the host's network)
        self.check_result: CheckStatus | None = None  # its Mesos check's last result
        self.check_scope: trio.CancelScope | None = None  # the check's loop


class WorkDirInUse(RuntimeError):
    """Another agent (in this process or another) runs on the same work dir."""


class Executor:
    """Runs, watches, kills and re-adopts the tasks of one agent.

    `launch`, `kill` and `reconcile` are synchronous and never block; they
    need `run()` to be running (its nursery hosts the per-task work).
    """

    def __init__(
        self,
        work_dir: Path,
        *,
        agent_id: str,
        send: trio.MemorySendChannel[TaskStatus],
        time_ms: Callable[[], int] = now_ms,
        cgroups: str = "auto",
        kill_tasks_on_exit: bool = True,
        sandbox_max_age: float = 3600.0,
        sandbox_max_count: int = 1000,
        spawn_concurrency: int = 8,
        health_check_concurrency: int = 256,
        ip_addresses: Sequence[str] = (),
        capabilities: Capabilities = PLAIN_PROCESSES,
        answers: trio.MemorySendChannel[TaskStatus] | None = None,
        fetcher_cache_bytes: int = DEFAULT_CACHE_BYTES,
        fetch_concurrency: int = 8,
        images: ImageStore | None = None,
        oci: OciRuntime | None = None,
        networks: CniNetworks | None = None,
        image_gc_age: float = 3600.0,
    ) -> None:
        self.work_dir = work_dir
        self.capabilities = capabilities
        # Images and their runtime (both or neither: oci.py), artifacts.
        self.preparer = Preparer(work_dir, images=images, networks=networks,
                                 fetcher_cache_bytes=fetcher_cache_bytes, concurrency=fetch_concurrency)
        self.images = images
        self.oci = oci
        self._image_gc_age = image_gc_age
        # Where answers to reconciliation go, when not with the lifecycle
        # statuses (`marathon agent` journals the latter, not the former).
        self._answers = answers
        # What RUNNING statuses report as the task's addresses (host networking).
        self.ip_addresses = list(ip_addresses)
        self.sandboxes = work_dir / "sandboxes"
        self.checkpoint = Checkpoint(work_dir / "checkpoint")
        self.agent_id = agent_id
        self.cgroups: Cgroups | None = None
        self._cgroups_mode = cgroups
        self._time_ms = time_ms
        self._kill_on_exit = kill_tasks_on_exit
        self._sandbox_max_age = sandbox_max_age
        self._sandbox_max_count = sandbox_max_count
        self._limiter = trio.CapacityLimiter(spawn_concurrency)
        self._prober = Prober(concurrency=health_check_concurrency, spawn_limiter=self._limiter)
        self._outbox = Outbox(send)
        self._spawner = Spawner(self._spawn_share, self._limiter)
        self._nursery: trio.Nursery | None = None
        self._boot_id = machine.boot_id()
        self._live: dict[str, _Task] = {}
        self._done: collections.OrderedDict[str, TaskStatus] = collections.OrderedDict()
        self._allocated = Resources()
        self._ports: collections.Counter[int] = collections.Counter()
        # Leaders we wait for ourselves (never reaped by the orphan reaper),
        # and the process groups of our tasks, live and recent.
        self._watched_pids: set[int] = set()
        self._groups: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._zombies_seen: dict[tuple[int, int], float] = {}
        self._condemned: set[int] = set()  # orphans we killed: reap them at once
        self._sweep_ids: set[str] = set()
        # Ended tasks (id -> sandbox) whose checkpoint records
        # `_journal_writer` drops and whose sandboxes it ages: queued, and
        # being written.  The sandbox GC spares both (an unaged sandbox still
        # has its creation time).
        self._ending: dict[str, Path] = {}
        self._writing: set[str] = set()
        self._journal_wakeup = trio.Event()
        self._sweep_wakeup = trio.Event()
        self._stopping = False

    # -- what the driver reads -----------------------------------------------------

    @property
    def allocated(self) -> Resources:
        """Resources of every task launched and not yet terminal."""
        return self._allocated

    def held_ports(self) -> set[int]:
        return set(self._ports)

    def task_pid(self, task_id: str) -> int | None:
        t = self._live.get(task_id)
        return None if t is None else t.pid

    def live_task_ids(self) -> list[str]:
        return list(self._live)

    def live_tasks(self) -> list[tuple[TaskLaunch, str, bool | None, Resources]]:
        """(launch, state, healthy, resources) of every live task."""
        return [(t.launch, t.state, t.healthy, t.resources) for t in self._live.values()]

    # -- commands --------------------------------------------------------------------

    def launch(self, tasks: Sequence[TaskLaunch]) -> None:
        nursery = self._running()
        quiet = len(tasks) > LOG_EACH_TASK_UP_TO
        if quiet:
            log.info("tasks_launching count=%d", len(tasks))
        for launch in tasks:
            tid = launch.task_id
            if tid in self._live:
                log.warning("launch_ignored task_id=%s reason=already_running", tid)
                continue
            if self._stopping:
                # Killed on its way in otherwise; TASK_DROPPED lets Marathon
                # place it again once an agent is back.
                self._emit_status(TaskStatus(
                    task_id=tid, state="TASK_DROPPED", agent_id=self.agent_id,
                    message="The agent is shutting down", reason=AGENT_RESTARTED_REASON,
                    timestamp=self._time_ms()))
                continue
            if not tid or "/" in tid or "\0" in tid or tid in (".", ".."):
                self._emit_status(TaskStatus(
                    task_id=tid, state="TASK_ERROR", agent_id=self.agent_id,
                    message=f"Task id '{tid}' cannot name a sandbox directory",
                    reason="REASON_TASK_INVALID", timestamp=self._time_ms()))
                continue
            done = self._done.get(tid)
            if done is not None:
                # An ended (or killed before it arrived) task id is never
                # launched again: a launch that arrives late, after the kill
                # meant for it, must not start a task nobody wants.
                self._emit_status(done)
                log.info("launch_ignored task_id=%s reason=ended state=%s", tid, done.state)
                continue
            if tid in self._writing:
                # Its earlier run's record is being dropped in a worker
                # thread: the new record could land first and be dropped.
                self._emit_status(TaskStatus(
                    task_id=tid, state="TASK_DROPPED", agent_id=self.agent_id,
                    message="An earlier task with this id is still being cleaned up",
                    reason="REASON_TASK_INVALID", timestamp=self._time_ms()))
                continue
            why = refusal(launch, self.capabilities)
            if why is not None:
                # Never a silent fallback to a bare process on the host.
                self._refuse(launch, why)
                continue
            # An earlier run's drop still queued (its id long forgotten by
            # `_done`) is no longer due: the new record replaces it.
            self._ending.pop(tid, None)
            t = _Task(launch, self.sandboxes / tid)
            t.quiet_launch = quiet
            self._take(t)
            self._set(t, "TASK_STAGING")
            nursery.start_soon(self._supervise, t)

    def _refuse(self, launch: TaskLaunch, why: str) -> None:
        """A launch this agent cannot carry out as asked: nothing starts."""
        status = TaskStatus(
            task_id=launch.task_id, state="TASK_FAILED", agent_id=self.agent_id, message=why,
            reason=LAUNCH_FAILED_REASON, timestamp=self._time_ms())
        self._remember_done(status)
        self._emit_status(status)
        log.info("task_refused task_id=%s message=%r", launch.task_id, why)

    def _remember_done(self, status: TaskStatus) -> None:
        self._done[status.task_id] = status
        while len(self._done) > _DONE_LIMIT:
            self._done.popitem(last=False)

    def kill(self, task_ids: Sequence[str], *, grace_seconds: float | None = None) -> None:
        nursery = self._running()
        now = trio.current_time()
        quiet = len(task_ids) > LOG_EACH_TASK_UP_TO
        if quiet:
            log.info("tasks_killing count=%d", len(task_ids))
        for tid in task_ids:
            t = self._live.get(tid)
            if t is None:
                if tid not in self._done:
                    # Remembered, so that its launch, should it come after
                    # this kill, is refused.
                    unknown = self._unknown(tid)
                    self._remember_done(unknown)
                    self._emit_status(unknown)
                continue
            grace = t.launch.kill_grace_seconds if grace_seconds is None else grace_seconds
            deadline = now + max(0.0, grace)
            if t.kill_deadline is not None and deadline >= t.kill_deadline:
                continue  # already being killed at least this fast
            first = not t.kill_requested
            t.kill_requested = True
            t.quiet_kill = quiet
            t.kill_deadline = deadline
            if t.health_scope is not None:
                t.health_scope.cancel()  # no probing once a kill starts
            if t.check_scope is not None:
                t.check_scope.cancel()
            if t.prepare_scope is not None:
                t.prepare_scope.cancel()  # no use fetching for a task nobody wants
            if first:
                self._set(t, "TASK_KILLING")
            nursery.start_soon(self._kill, t, deadline, first)

    def reconcile(self, task_ids: Sequence[str] | None, *, others: bool = False) -> None:
        """Each listed task's status (`None`: every live task); with `others`,
        every live task that is not listed as well, each once."""
        self._running()  # before recovery, every task would look unknown
        if task_ids is None:
            for t in self._live.values():
                self._emit_status(self._status_of(t), droppable=True)
            return
        for tid in task_ids:
            t = self._live.get(tid)
            if t is not None:
                status = self._status_of(t)
            else:
                status = self._done.get(tid) or self._unknown(tid)
            self._emit_status(status, droppable=True)
        if others:
            listed = set(task_ids)
            for tid, t in self._live.items():
                if tid not in listed:
                    self._emit_status(self._status_of(t), droppable=True)

    def _running(self) -> trio.Nursery:
        if self._nursery is None:
            raise RuntimeError("the agent is not running: start run() first")
        return self._nursery

    # -- statuses and accounting -------------------------------------------------------

    def _status_of(self, t: _Task) -> TaskStatus:
        return TaskStatus(
            task_id=t.launch.task_id, state=t.state, agent_id=self.agent_id, message=t.message,
            reason=t.reason, timestamp=t.state_ts, exit_code=t.exit_code, healthy=t.healthy,
            ip_addresses=(([t.netns.ip] if t.netns.ip else []) if t.netns is not None else self.ip_addresses)
            if t.state == "TASK_RUNNING" else [],
            check_result=t.check_result if t.state == "TASK_RUNNING" else None,
        )

    def _unknown(self, tid: str) -> TaskStatus:
        return TaskStatus(
            task_id=tid, state="TASK_LOST", agent_id=self.agent_id, message=UNKNOWN_TASK_MESSAGE,
            reason="REASON_TASK_UNKNOWN", timestamp=self._time_ms(),
        )

    def _emit_status(self, status: TaskStatus, *, droppable: bool = False) -> None:
        if droppable and self._answers is not None:
            try:
                self._answers.send_nowait(status)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # an answer can always be asked for again
            return
        self._outbox.put(status, droppable=droppable)

    def _set(self, t: _Task, state: str, message: str = "", reason: str | None = None,
             exit_code: int | None = None) -> None:
        t.state, t.message, t.reason, t.exit_code = state, message, reason, exit_code
        t.state_ts = self._time_ms()
        self._emit_status(self._status_of(t))

    def _take(self, t: _Task) -> None:
        self._live[t.launch.task_id] = t
        self._allocated += t.resources
        self._ports.update(t.launch.host_ports)

    def _terminal(self, t: _Task, state: str, message: str, reason: str | None = None,
                  exit_code: int | None = None) -> None:
        tid = t.launch.task_id
        if self._live.pop(tid, None) is None:
            return
        self._allocated -= t.resources
        for port in t.launch.host_ports:
            self._ports[port] -= 1
            if self._ports[port] <= 0:
                del self._ports[port]
        if t.pid is not None:
            self._watched_pids.discard(t.pid)
        if t.health_scope is not None:
            t.health_scope.cancel()
        if t.check_scope is not None:
            t.check_scope.cancel()
        # Like Mesos: an end says nothing of health, unless health ended it.
        t.healthy = False if t.health_killed else None
        self._ending[tid] = t.sandbox
        self._journal_wakeup.set()
        self._set(t, state, message, reason, exit_code)
        self._remember_done(self._status_of(t))
        t.exited.set()
        log.log(logging.DEBUG if t.quiet_kill and state == "TASK_KILLED" else logging.INFO,
                "task_exited task_id=%s pid=%s state=%s exit_code=%s message=%r",
                tid, t.pid, state, exit_code, message)

    # -- one task's life -------------------------------------------------------------------

    async def _supervise(self, t: _Task) -> None:
        try:
            if not t.adopted and not await self._start(t):
                return
            assert t.pidfd is not None
            await trio.lowlevel.wait_readable(t.pidfd)
            await self._finish(t)
        except Exception as e:
            # A bug here must not take the agent (and every other task) down.
            log.exception("task_supervision_error task_id=%s", t.launch.task_id)
            self._kill_tree(t, signal.SIGKILL)
            self._terminal(t, "TASK_FAILED", f"Agent error while supervising the task: {e!r}")
        finally:
            if t.pidfd is not None:
                os.close(t.pidfd)
                t.pidfd = None

    async def _start(self, t: _Task) -> bool:
        if needs_preparing(t.launch) and not t.kill_requested and not await self._prepare(t):
            return False
        if t.kill_requested:
            t.spawned.set()
            await self._undo_prepared(t)
            self._terminal(t, "TASK_KILLED", "Task killed before it was started")
            return False
        try:
            await self._spawner.spawn(t)
        except Exception as e:  # OSError, or ValueError for a NUL in the env, ...
            t.spawned.set()
            await self._undo_prepared(t)
            message = str(e) if isinstance(e, SpawnError) else f"Failed to launch task: {e}"
            self._terminal(t, "TASK_FAILED", message, "REASON_CONTAINER_LAUNCH_FAILED")
            return False
        assert t.pid is not None
        self._watched_pids.add(t.pid)
        self._remember_group(t.pid)
        t.spawned.set()
        log.log(logging.DEBUG if t.quiet_launch else logging.INFO,
                "task_launched task_id=%s pid=%d cgroup=%s sandbox=%s",
                t.launch.task_id, t.pid, "yes" if t.cgroup else "no", t.sandbox)
        if not t.kill_requested:
            self._set(t, "TASK_STARTING")
            self._set(t, "TASK_RUNNING")
            self._start_health_checks(t, trio.current_time())
        return True

    async def _undo_prepared(self, t: _Task) -> None:
        """What was made for a task that never started: its container's
        bundle and mount, its network attachment, its secret files."""
        if not needs_preparing(t.launch):
            return
        with trio.CancelScope(shield=True):
            if self.oci is not None and image_of(t.launch):
                await trio.to_thread.run_sync(self.oci.cleanup, t.launch.task_id)
            await self.preparer.release(t.launch)

    async def _prepare(self, t: _Task) -> bool:
        """`prepare.py`'s work for the task (it stays STAGING meanwhile; a
        kill stops it).  False when it failed: the task is then TASK_FAILED
        with the reason."""
        with trio.CancelScope() as t.prepare_scope:
            try:
                t.image, t.netns = await self.preparer.prepare(t.launch, t.sandbox)
            except PrepareError as e:
                t.spawned.set()
                await self._undo_prepared(t)
                self._terminal(t, "TASK_FAILED", str(e), LAUNCH_FAILED_REASON)
                return False
        t.prepare_scope = None
        return True

    def _spawn_share(self, batch: list[_Task], errors: dict[_Task, BaseException]) -> None:
        """Sandboxes, cgroups, processes and checkpoint records of a share of a
        burst (runs in a worker thread; what fails for a task goes to `errors`).

        With the compiled spawner the share's processes start in one call
        that holds no GIL from the first to the last (`_spawn.spawn_many`),
        and the share's records reach the checkpoint in one append.  A task
        that must become another user, or a pure-Python run, takes Popen.
        """
        fast: list[tuple[_Task, Plan]] = []
        for t in batch:
            try:
                plan = self._plan(t)
                if spawn_many is not None and not plan.user_kw:
                    fast.append((t, plan))
                else:
                    self._spawn_one(t, plan)
            except Exception as e:
                self._failed(t, e, errors)
        if fast:
            jobs = [(p.executable or p.argv[0], p.argv, p.env, t.sandbox, t.sandbox / "stdout",
                     t.sandbox / "stderr") for t, p in fast]
            try:
                self.sandboxes.mkdir(parents=True, exist_ok=True)
                results = spawn_many(jobs)  # type: ignore[misc]
            except (OSError, ValueError):
                # A NUL byte in one task's environment, say: nothing was
                # started; one at a time, so that only that task fails.
                results = None
            for i, (t, plan) in enumerate(fast):
                try:
                    if results is None:
                        self._spawn_one(t, plan)
                    else:
                        self._spawned(t, plan, *results[i])
                except Exception as e:
                    self._failed(t, e, errors)
        records = [t.record for t in batch if t not in errors and t.record is not None]
        if records:
            try:
                self.checkpoint.write_many(records)
            except OSError as e:
                # Run them all the same: only a crash of the agent would now
                # lose them (the next start finds and kills their processes).
                log.warning("checkpoint_failed tasks=%d error=%s", len(records), e)

    def _plan(self, t: _Task) -> Plan:
        """How `t` is to be started; creates its cgroup (runs in a worker thread)."""
        if t.image is not None:
            return self._container_plan(t)
        launch = t.launch
        env = task_env(launch, t.sandbox)
        argv, executable = command_argv(launch, env, t.sandbox)
        if t.netns is not None:
            # A plain process on a container network: entered before the exec.
            argv, executable = [NSENTER, f"--net={t.netns.netns_path}", "--", executable or argv[0], *argv[1:]], None
        user_kw: dict[str, object] = {}
        if launch.user:
            t.sandbox.mkdir(parents=True, exist_ok=True)
            user_kw = user_options(launch.user, t.sandbox)
        if self.cgroups is not None:
            try:
                t.cgroup = self.cgroups.create(launch)
            except OSError as e:
                raise SpawnError(f"Failed to launch task: cannot create its cgroup: {e}") from e
            if user_kw:
                # Join as root, then become the user: an unprivileged
                # process may not move itself into a root-owned cgroup.
                argv = machine.as_user_argv(user_kw["user"], user_kw["group"],  # type: ignore[arg-type]
                                            user_kw["extra_groups"], argv)  # type: ignore[arg-type]
                user_kw = {}
            argv, executable = Cgroups.join_argv(t.cgroup, argv), None
        return Plan(argv, executable, env, user_kw, launch.shell)

    def _container_plan(self, t: _Task) -> Plan:
        """`runc run` of the task's bundle (`oci.py`), in the task's cgroup
        when there is one (the container's nests below it, under its limits)."""
        assert self.oci is not None and t.image is not None
        if self.cgroups is not None:
            try:
                t.cgroup = self.cgroups.create(t.launch)
            except OSError as e:
                raise SpawnError(f"Failed to launch task: cannot create its cgroup: {e}") from e
        try:
            plan = self.oci.plan(t.launch, t.sandbox, t.image, limits=t.cgroup is None,
                                 netns=t.netns.netns_path if t.netns else None)
        except ContainerError as e:
            raise SpawnError(str(e)) from None
        if t.cgroup is not None:
            plan = plan._replace(argv=Cgroups.join_argv(t.cgroup, plan.argv))
        return plan

    def _spawn_one(self, t: _Task, plan: Plan) -> None:
        """Start one task on its own: Popen, or the compiled spawn for one."""
        t.sandbox.mkdir(parents=True, exist_ok=True)
        try:
            pid, popen = exec_task(plan.argv, plan.executable, plan.env, t.sandbox, plan.user_kw)
        except OSError as e:
            if not plan.shell_may_run_it(e):
                raise
            pid, popen = exec_task(*shell_argv(t.launch), plan.env, t.sandbox, plan.user_kw)
        try:
            pidfd = os.pidfd_open(pid)
        except OSError as e:
            self._unwatchable(t, pid, e)
        # Still readable if it already exited: it stays a zombie until we reap it.
        self._started(t, pid, popen, pidfd, machine.proc_start_time(pid))

    def _spawned(self, t: _Task, plan: Plan, pid: int, pidfd: int, start_time: int | None,
                 error: OSError | None) -> None:
        """Take over what `spawn_many` did for `t`."""
        if pid == 0:
            assert error is not None
            if not plan.shell_may_run_it(error):
                raise error
            self._spawn_one(t, Plan(*shell_argv(t.launch), plan.env, plan.user_kw, False))
            return
        if error is not None:
            self._unwatchable(t, pid, error)
        self._started(t, pid, None, pidfd, start_time)

    def _started(self, t: _Task, pid: int, popen: subprocess.Popen[bytes] | None, pidfd: int,
                 start_time: int | None) -> None:
        t.popen, t.pid, t.pgid, t.pidfd, t.start_time = popen, pid, pid, pidfd, start_time
        t.record = TaskCheckpoint(
            # Secret values stay off the disk: the task has them already.
            launch=msgspec.structs.replace(t.launch, secret_env_values={}, secret_values={})
            if t.launch.secret_env_values or t.launch.secret_values else t.launch,
            sandbox=str(t.sandbox), boot_id=self._boot_id, staged_at=t.state_ts,
            pid=pid, pgid=pid, start_time=start_time, cgroup=t.cgroup,
            running_since=self._time_ms(), running_at=time.time(),
        )

    @staticmethod
    def _unwatchable(t: _Task, pid: int, error: OSError) -> NoReturn:
        """Spawned, but no pidfd (out of file descriptors, say): do not leave it running."""
        os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        if t.cgroup is not None:
            Cgroups.kill_all(t.cgroup)
        raise SpawnError(f"Failed to launch task: cannot watch its process: {error}") from error

    @staticmethod
    def _failed(t: _Task, error: BaseException, errors: dict[_Task, BaseException]) -> None:
        if t.cgroup is not None:
            Cgroups.remove(t.cgroup)
            t.cgroup = None
        errors[t] = error

    async def _finish(self, t: _Task) -> None:
        """The leader has exited: kill what it left, reap it, report."""
        if t.health_scope is not None:
            # Before the kill below reaches the probe in flight (it runs in
            # the task's cgroup): its failure is the task's end, not ill health.
            t.health_scope.cancel()
        # Before reaping: while the leader is an unreaped zombie its pid, and
        # so its group id, cannot be reused, so this signal reaches only ours.
        self._kill_tree(t, signal.SIGKILL)
        rc = _reap_leader(t)
        t.popen = None
        oom, peak = Cgroups.memory_report(t.cgroup) if t.cgroup else (False, None)
        if not oom and t.cgroup is not None and image_of(t.launch):
            oom = _container_oom(rc, peak, t.cgroup)
        if self.oci is not None and image_of(t.launch):
            # What runc left (a container whose runc was killed, its cgroup,
            # the overlay): gone before the task's cgroup can be removed.
            await trio.to_thread.run_sync(self.oci.cleanup, t.launch.task_id)
        await self.preparer.release(t.launch)
        await self._drain(t)
        exit_code = None if rc is None else (128 - rc if rc < 0 else rc)
        if t.kill_requested and t.health_killed:
            self._terminal(t, "TASK_KILLED", HEALTH_KILL_MESSAGE, HEALTH_REASON, exit_code)
        elif t.kill_requested:
            message = "Task killed" if rc is None else describe_exit(rc)
            self._terminal(t, "TASK_KILLED", message, exit_code=exit_code)
        elif oom and rc != 0:
            used = "unknown" if peak is None else f"{peak // (1024 * 1024)}MB"
            limit = t.cgroup.mem_limit_mib if t.cgroup else None
            self._terminal(t, "TASK_FAILED",
                           f"Memory limit exceeded: Requested: {limit}MB Maximum Used: {used}",
                           "REASON_CONTAINER_LIMITATION_MEMORY", exit_code)
        elif rc is None:
            self._terminal(t, "TASK_FAILED", EXIT_UNKNOWN_MESSAGE, "REASON_EXECUTOR_TERMINATED")
        elif rc == 0:
            self._terminal(t, "TASK_FINISHED", describe_exit(rc), exit_code=0)
        else:
            self._terminal(t, "TASK_FAILED", describe_exit(rc), exit_code=exit_code)

    async def _drain(self, t: _Task) -> None:
        """Kill and reap what is left of the task until nothing is; remove its cgroup."""
        deadline = trio.current_time() + _DRAIN_SECONDS
        delay = 0.001
        while True:
            self._kill_tree(t, signal.SIGKILL)
            # Members whose parent died were re-parented to us: reap them, or
            # as zombies they would keep the group alive.
            if self._group_alive(t) and t.pgid is not None:
                machine.reap_group(t.pgid)
            if not self._group_alive(t):
                if t.cgroup is None:
                    # Once the group is gone, the processes that left it
                    # (setsid daemons) have been re-parented to us.
                    self._sweep_ids.add(t.launch.task_id)
                    self._sweep_wakeup.set()
                    return
                if Cgroups.remove(t.cgroup):
                    return
            if trio.current_time() > deadline:
                log.warning("task_leftovers task_id=%s cgroup=%s", t.launch.task_id,
                            t.cgroup.dirs if t.cgroup else None)
                return
            await trio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def _kill(self, t: _Task, deadline: float, first: bool) -> None:
        await t.spawned.wait()
        if t.exited.is_set() or t.pid is None:
            return
        if first:
            self._kill_tree(t, signal.SIGTERM)
        with trio.move_on_at(deadline):
            await t.exited.wait()
        if not t.exited.is_set() and t.kill_deadline == deadline:
            if self.oci is not None and image_of(t.launch):
                # runc cannot pass a SIGKILL on to the container: ask it to.
                await trio.to_thread.run_sync(self.oci.kill, t.launch.task_id, "KILL")
            self._kill_tree(t, signal.SIGKILL)

    # -- health checks -----------------------------------------------------------------

    def _start_health_checks(self, t: _Task, running_at: float) -> None:
        """Probe a RUNNING task's `health_check` (and run its Mesos `check`)
        until it ends or a kill starts.

        `running_at` (trio time) is when the task became RUNNING: the delay
        and the grace period count from there.
        """
        if t.launch.check is not None and not t.kill_requested and self._nursery is not None:
            t.check_scope = trio.CancelScope()
            self._nursery.start_soon(self._run_check, t, running_at)
        check = t.launch.health_check
        if check is None or t.kill_requested or self._nursery is None:
            return
        rec = t.record
        t.health = HealthState(check, running_at, healthy=t.healthy,
                               succeeded=bool(rec and rec.health_succeeded))
        t.health_scope = trio.CancelScope()
        self._nursery.start_soon(self._check_health, t)

    async def _check_health(self, t: _Task) -> None:
        assert t.health is not None and t.health_scope is not None
        state, check, tid = t.health, t.health.check, t.launch.task_id
        with t.health_scope:
            try:
                ctx = None
                if check.protocol == "COMMAND":
                    ctx = command_context(task_env(t.launch, t.sandbox), t.sandbox, t.cgroup,
                                          t.launch.user)
                await trio.sleep_until(state.running_at + max(0.0, check.delay_seconds))
                interval = max(check.interval_seconds, MIN_INTERVAL)
                while not t.kill_requested:
                    ok, cause = await self._prober.probe(check, ctx)
                    if t.health_scope.cancel_called:
                        return  # the task ended, or a kill started, meanwhile
                    verdict = state.observe(ok, trio.current_time())
                    if verdict.report:
                        self._report_health(t, cause)
                    if verdict.kill:
                        log.info("task_health_kill task_id=%s consecutive_failures=%d cause=%r",
                                 tid, state.failures, cause)
                        t.health_killed = True
                        self.kill([tid])
                        return
                    await trio.sleep(interval)
            except Exception:
                # A bug here must not take the agent down; the task runs on unchecked.
                log.exception("health_check_error task_id=%s", tid)

    async def _run_check(self, t: _Task, running_at: float) -> None:
        """The app's Mesos check: informational; each change of its result
        goes out as a TASK_RUNNING status carrying it (Mesos'
        REASON_TASK_CHECK_STATUS_UPDATED)."""
        check, tid = t.launch.check, t.launch.task_id
        assert check is not None and t.check_scope is not None
        with t.check_scope:
            try:
                ctx = None
                if check.protocol == "COMMAND":
                    ctx = command_context(task_env(t.launch, t.sandbox), t.sandbox, t.cgroup, t.launch.user)
                await trio.sleep_until(running_at + max(0.0, check.delay_seconds))
                interval = max(check.interval_seconds, MIN_INTERVAL)
                while not t.kill_requested:
                    result = await check_status(check, ctx, self._prober.limiter, self._limiter)
                    if t.check_scope.cancel_called:
                        return
                    if result != t.check_result and t.state == "TASK_RUNNING":
                        t.check_result = result
                        self._set(t, t.state, t.message, "REASON_TASK_CHECK_STATUS_UPDATED")
                    await trio.sleep(interval)
            except Exception:
                log.exception("check_error task_id=%s", tid)

    def _report_health(self, t: _Task, cause: str) -> None:
        assert t.health is not None
        t.healthy = t.health.healthy
        message = "" if t.healthy else f"Health check failed: {cause}"
        self._set(t, t.state, message, HEALTH_REASON)
        log.info("task_health task_id=%s healthy=%s cause=%r", t.launch.task_id, t.healthy, cause)
        rec = t.record
        if rec is not None:
            # So that a restarted agent reports (and reconciles) the same health.
            rec.healthy, rec.health_succeeded = t.healthy, t.health.succeeded
            # Written before the status goes out (unlike an end, which
            # `_journal_writer` batches): the health Marathon was told must
            # be what a restarted agent reports.
            try:
                self.checkpoint.write(rec)
            except OSError as e:
                log.warning("checkpoint_failed task_id=%s error=%s", t.launch.task_id, e)

    async def _journal_writer(self) -> None:
        """Drops the checkpoint records of ended tasks and ages their
        sandboxes: in a worker thread, a batch at a time (a scale-down of
        1,000 tasks is one append, not 1,000 writes and `utime`s on the loop).

        A drop still queued when the agent is killed is lost: that task is
        found dead at the next start and reported failed once more, which
        changes nothing for Marathon (it already has the task terminal).
        """
        while True:
            await self._journal_wakeup.wait()
            self._journal_wakeup = trio.Event()
            batch, self._ending = self._ending, {}
            self._writing.update(batch)
            # Shielded: the batch is taken, so it must be written even when
            # the agent stops now (what is still queued is written at the end
            # of `_work`).
            with trio.CancelScope(shield=True):
                try:
                    await trio.to_thread.run_sync(self._write_journal, batch)
                finally:
                    self._writing.difference_update(batch)

    def _write_journal(self, ended: dict[str, Path]) -> None:
        try:
            self.checkpoint.delete_many(list(ended))
        except OSError as e:
            log.warning("checkpoint_failed drops=%d error=%s", len(ended), e)
        for sandbox in ended.values():
            try:
                os.utime(sandbox)  # the sandbox GC ages sandboxes from their task's end
            except OSError:
                pass

    # -- signals, groups, orphans ----------------------------------------------------

    def _group_is_ours(self, t: _Task) -> bool:
        # The group id is the leader's pid; it names our group as long as no
        # other process has that pid (it cannot while our members pin it).
        if t.pgid is None:
            return False
        st = machine.proc_stat(t.pgid)
        return st is None or st.start_time == t.start_time

    def _kill_tree(self, t: _Task, sig: int) -> None:
        if self._group_is_ours(t):
            try:
                os.killpg(t.pgid, sig)  # type: ignore[arg-type]
            except (ProcessLookupError, PermissionError):
                pass
        if t.cgroup is not None:
            # SIGTERM too: processes that left the group (setsid) get their
            # chance to stop cleanly as well.
            Cgroups.kill_all(t.cgroup, sig)

    def _group_alive(self, t: _Task) -> bool:
        if not self._group_is_ours(t):
            return False
        try:
            os.killpg(t.pgid, 0)  # type: ignore[arg-type]
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True

    async def _sweeper(self) -> None:
        """Without a cgroup: kill our adopted orphans that carry an ended task's id.

        A setsid'd daemon leaves the task's group, but as a subreaper we
        adopted it, and its environment still names its task.  (One that
        scrubs its environment, or whose parent outlives the task, escapes:
        only a cgroup holds those.)  Batched: one pass over our children
        serves every task that ended meanwhile.
        """
        while True:
            await self._sweep_wakeup.wait()
            self._sweep_wakeup = trio.Event()
            ids, self._sweep_ids = self._sweep_ids, set()
            needles = {f"MESOS_TASK_ID={i}".encode() for i in ids}
            for pid in machine.own_children():
                if pid in self._watched_pids or not machine.environ_has(pid, needles):
                    continue
                try:
                    os.kill(pid, signal.SIGKILL)
                    self._condemned.add(pid)
                except ProcessLookupError:
                    pass

    def _remember_group(self, pgid: int) -> None:
        self._groups[pgid] = None
        self._groups.move_to_end(pgid)
        while len(self._groups) > _DONE_LIMIT:
            self._groups.popitem(last=False)

    def _reap_orphans(self) -> None:
        """Reap zombie children we adopted as subreaper (never our own leaders).

        A zombie of one of our tasks' groups or sessions is reaped at once.
        Any other zombie child may belong to another part of this program
        that spawned it and is about to wait for it: it is only reaped once
        it has stayed a zombie for a while (a daemon that left its group).
        """
        if machine.exited_child() is None:
            # Nothing to reap, and the scan below would read /proc for every
            # child not watched yet (hundreds, in the middle of a burst).
            return
        now = time.monotonic()
        seen: dict[tuple[int, int], float] = {}
        for pid in machine.own_children():
            if pid in self._watched_pids:
                continue
            st = machine.proc_stat(pid)
            if st is None or st.state != "Z":
                continue
            ours = pid in self._condemned or st.pgid in self._groups or st.sid in self._groups
            if not ours:
                key = (pid, st.start_time)
                first = self._zombies_seen.get(key, now)
                if now - first < _FOREIGN_ZOMBIE_SECONDS:
                    seen[key] = first
                    continue
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            self._condemned.discard(pid)
        self._zombies_seen = seen

    # -- background upkeep -----------------------------------------------------------

    async def _housekeeping(self) -> None:
        last_gc = float("-inf")
        while True:
            await trio.sleep(1.0)
            self._reap_orphans()
            if time.monotonic() - last_gc >= 30.0:
                last_gc = time.monotonic()
                await trio.to_thread.run_sync(self.collect_garbage, self._gc_spared())
                if self.images is not None and self.oci is not None:
                    await trio.to_thread.run_sync(self._collect_images)

    def _collect_images(self) -> None:
        assert self.images is not None and self.oci is not None
        self.images.collect(self.oci.live_rootfs(), max_age=self._image_gc_age)

    def _gc_spared(self) -> set[str]:
        """Sandboxes the GC must leave: live tasks', and ended tasks' whose
        end `_journal_writer` has not yet stamped on them."""
        return set(self._live) | self._ending.keys() | self._writing

    def collect_garbage(self, live: set[str] | None = None) -> int:
        """Remove sandboxes of ended tasks beyond the age and count limits; returns how many."""
        live = set(self._live) if live is None else live
        entries = []
        try:
            for e in os.scandir(self.sandboxes):
                if e.name not in live and e.is_dir(follow_symlinks=False):
                    entries.append((e.stat(follow_symlinks=False).st_mtime, e.path))
        except FileNotFoundError:
            return 0
        entries.sort(reverse=True)
        cutoff = time.time() - self._sandbox_max_age
        removed = 0
        for i, (mtime, path) in enumerate(entries):
            if i >= self._sandbox_max_count or mtime < cutoff:
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
        return removed

    # -- running, recovering, stopping -------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        lock = self._lock_work_dir()
        try:
            await self._run(task_status)
        finally:
            os.close(lock)

    def _lock_work_dir(self) -> int:
        """Hold `<work dir>/lock` for as long as the agent runs.  Two agents
        on one work dir would each take the other's tasks for leftovers of
        a crash and kill them, and rewrite each other's checkpoint journal."""
        fd = os.open(self.work_dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise WorkDirInUse(
                f"the embedded agent's work dir {self.work_dir} is in use by another agent (pid {holder}); "
                "give each server its own --data_dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    async def _run(self, task_status: trio.TaskStatus[None]) -> None:
        self.sandboxes.mkdir(parents=True, exist_ok=True)
        self.checkpoint.ensure()
        if not machine.become_child_subreaper():
            log.warning("subreaper unavailable: orphaned task processes go to PID 1")
        machine.raise_nofile_limit()
        self._detect_cgroups()
        # The per-task work runs in a shielded scope: when we are cancelled,
        # it must keep running while the shutdown kills the tasks gracefully.
        work_scope = trio.CancelScope(shield=True)
        async with trio.open_nursery() as outer:
            await outer.start(self._work, work_scope)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True):
                    try:
                        await self._shutdown()
                    finally:
                        # Even if the shutdown failed: the shielded work
                        # would otherwise run (and hold the caller) for ever.
                        work_scope.cancel()

    async def _work(self, scope: trio.CancelScope, *, task_status: trio.TaskStatus[None]) -> None:
        with scope:
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._outbox.pump)
                    nursery.start_soon(self._spawner.run)
                    nursery.start_soon(self._journal_writer)
                    await self._recover()
                    nursery.start_soon(self._housekeeping)
                    nursery.start_soon(self._sweeper)
                    task_status.started()
            finally:
                self._nursery = None
                self._write_journal(self._ending)  # what the writer had not taken yet
                self._ending = {}
                self.checkpoint.close()

    def _detect_cgroups(self) -> None:
        if self._cgroups_mode == "off":
            log.info("cgroups off by configuration: tasks run without cpu/memory limits")
            return
        self.cgroups, why = detect(f"marathon-{self.agent_id}")
        if self.cgroups is None:
            log.warning("cgroups unavailable (%s): tasks run without cpu/memory limits", why)

    async def _shutdown(self) -> None:
        self._stopping = True
        if self._nursery is None:
            return  # the work nursery already ended (it crashed)
        if self._kill_on_exit and self._live:
            tasks = list(self._live.values())
            self.kill([t.launch.task_id for t in tasks])
            bound = max(t.launch.kill_grace_seconds for t in tasks) + 2.0
            with trio.move_on_after(bound):
                for t in tasks:
                    await t.exited.wait()
            for t in self._live.values():
                log.warning("task_not_stopped task_id=%s pid=%s", t.launch.task_id, t.pid)
                self._kill_tree(t, signal.SIGKILL)
        if self.cgroups is not None and not self._live:
            self.cgroups.remove_bases()
        self.preparer.close()

    async def _recover(self) -> None:
        """Re-adopt checkpointed tasks that still run; report and clean up the rest."""
        buried: list[tuple[TaskCheckpoint, str]] = []
        for rec in self.checkpoint.load_all():
            pidfd, why = examine(rec, self._boot_id)
            if pidfd is None:
                buried.append((rec, why))
            else:
                self._adopt(rec, pidfd)
        # Processes of tasks we do not run: what dead tasks left behind, and
        # tasks spawned just before a crash, before their record was written.
        unrecorded = []
        recorded = {r.launch.task_id for r, _ in buried}
        for task_id, pids in machine.task_processes(self.sandboxes).items():
            if task_id not in self._live:
                kill_pids(pids)
                if task_id not in recorded:
                    unrecorded.append(task_id)
        stale = [r.cgroup for r, _ in buried if r.cgroup is not None]
        if self.cgroups is not None:
            stale += self.cgroups.stale(set(self._live))
        for cg in stale:
            for _ in range(100):
                Cgroups.kill_all(cg)
                if Cgroups.remove(cg):
                    break
                await trio.sleep(0.01)
        for rec, why in buried:
            t = _Task(rec.launch, Path(rec.sandbox))
            t.state_ts = rec.staged_at
            self._take(t)  # so that _terminal reports, releases and forgets it
            self._terminal(t, "TASK_FAILED", why, _burial_reason(why))
        for task_id in unrecorded:
            # Spawned just before the agent died, before its record was
            # written: the agent's fault, not the app's (REASON_AGENT_RESTARTED
            # is never charged to the app's launch backoff).
            status = TaskStatus(
                task_id=task_id, state="TASK_FAILED", agent_id=self.agent_id,
                message=LAUNCH_INTERRUPTED_MESSAGE, reason=AGENT_RESTARTED_REASON,
                timestamp=self._time_ms(),
            )
            self._remember_done(status)
            self._emit_status(status)
            log.info("task_exited task_id=%s pid=None state=TASK_FAILED exit_code=None "
                     "message=%r", task_id, LAUNCH_INTERRUPTED_MESSAGE)

    def _adopt(self, rec: TaskCheckpoint, pidfd: int) -> None:
        """Take over a task that outlived the previous agent process."""
        assert rec.pid is not None
        t = _Task(rec.launch, Path(rec.sandbox))
        t.pid, t.pgid, t.start_time, t.pidfd = rec.pid, rec.pgid, rec.start_time, pidfd
        t.cgroup, t.adopted = rec.cgroup, True
        t.state, t.state_ts = "TASK_RUNNING", rec.running_since or rec.staged_at
        t.record, t.healthy = rec, rec.healthy
        if self.preparer.networks is not None:
            t.netns = self.preparer.networks.current(rec.launch.task_id)
        t.spawned.set()
        self._take(t)
        self._watched_pids.add(rec.pid)
        if rec.pgid is not None:
            self._remember_group(rec.pgid)
        self._running().start_soon(self._supervise, t)
        # Checks resume where they were: delay and grace count from the
        # task's start, not from its re-adoption.
        ran = max(0.0, time.time() - rec.running_at) if rec.running_at is not None else 0.0
        self._start_health_checks(t, trio.current_time() - ran)
        log.info("task_readopted task_id=%s pid=%d", rec.launch.task_id, rec.pid)


AGENT_RESTARTED_REASON = "REASON_AGENT_RESTARTED"


def _burial_reason(why: str) -> str:
    """The reason of a recorded task found dead at start-up: the task's own
    end (it exited while the agent was down), or the agent's fault (it died
    while launching the task; the machine rebooted)."""
    if why == EXIT_UNKNOWN_MESSAGE:
        return "REASON_EXECUTOR_TERMINATED"
    return AGENT_RESTARTED_REASON


def _reap_leader(t: _Task) -> int | None:
    """Exit code of the task's exited leader (negative: signal); None if unknowable.

    Non-blocking: only called once its pidfd says it has exited.
    """
    if t.popen is not None:
        return t.popen.wait()
    # Spawned without Popen (our child), or adopted after a restart: not our
    # child, unless we happened to be the subreaper it was re-parented to.
    try:
        pid, status = os.waitpid(t.pid, os.WNOHANG)  # type: ignore[arg-type]
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status) if pid else None


# -- how a task is started -----------------------------------------------------------


def _container_oom(rc: int | None, peak: int | None, cg: TaskCgroup) -> bool:
    """Whether a container was killed for memory.  The kernel counts a
    cgroup v1 OOM kill in the victim's own cgroup, the container's, which
    runc removes as it exits; what the task's cgroup keeps is its peak use.
    A SIGKILL (runc exits 137) with the peak at the limit is the OOM."""
    limit = cg.mem_limit_mib
    if rc not in (137, -signal.SIGKILL) or peak is None or not limit:
        return False
    return peak >= limit * 1024 * 1024 * 0.98
