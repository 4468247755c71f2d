"""The instance tracker: the single writer of instance state.

Every change to an instance is an operation (`marathon.instance_update`) sent
here.  One task drains the queue in batches: it resolves each operation
against the state as left by the operations before it, persists every changed
instance of the batch in ONE store commit (group commit), and only then
applies the batch in memory, publishes events, asks the agents to kill what
must die and notifies listeners.  A batch that fails to persist changes
nothing and its callers get the error.

While one batch is being stored (in the store's worker thread), the next is
resolved against it and encoded; it is stored once the first is applied.
If the first fails, the second is resolved again against what is stored.

Readers (API, deployments, scheduler) use the in-memory views; what they see
is durable, except a task's launch progress (Staging, Starting), which the
agents report again after a crash.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import trio

from ..config import LOG_EACH_TASK_UP_TO
from ..instance_update import (
    Effect,
    Expunged,
    KillTask,
    Noop,
    Operation,
    Provision,
    Schedule,
    StatusUpdate,
    UnknownTerminated,
    Updated,
    resolve,
)
from ..models.events import (
    Event,
    InstanceChangedEvent,
    InstanceHealthChangedEvent,
    StatusUpdateEvent,
    UnknownInstanceTerminatedEvent,
)
from ..models.instance import ACTIVE, TASK_FAILURE, TERMINAL, Goal, Instance
from ..models.timestamp import format_ms
from ..storage import Op
from ..storage.repository import StateRepository, TaskFailure
from ._pacing import YIELD_EVERY
from .events import EventBus

log = logging.getLogger("marathon.instances")

_UNREACHABLE = frozenset({"Unreachable", "UnreachableInactive"})
_CHANGED = (Updated, Expunged)  # built once: `A | B` makes a new union object per use


def _op_instance_id(op: Operation) -> str:
    if isinstance(op, Schedule):
        return op.instance.instance_id
    return op.instance_id


@dataclass(eq=False)
class _Request:
    ops: Sequence[Operation]
    resolved: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)
    effects: list[Effect] = field(default_factory=list)
    error: BaseException | None = None


@dataclass(eq=False)
class _Staged:
    """A resolved batch: what it changes and the ops that store it."""

    batch: list[_Request]
    overlay: dict[str, Instance | None] = field(default_factory=dict)  # instance id -> new state (None: expunged)
    ops: list[Op] = field(default_factory=list)  # the instances' writes
    failures: dict[str, TaskFailure] = field(default_factory=dict)
    stored: trio.Event = field(default_factory=trio.Event)
    error: Exception | None = None


class Submitted:
    """Operations handed to the tracker; `effects()` waits until they are applied."""

    __slots__ = ("_req",)

    def __init__(self, req: _Request) -> None:
        self._req = req

    @property
    def count(self) -> int:
        return len(self._req.ops)

    async def effects(self) -> list[Effect]:
        """One effect per operation, in order; raises what storing raised."""
        await self._req.done.wait()
        if self._req.error is not None:
            raise self._req.error
        return self._req.effects

    async def resolved(self) -> list[Effect]:
        """The effects as first resolved, before they are stored: work that
        only follows from them (building launches) can go on meanwhile.  Not
        durable, and not final: if the batch stored before this one fails,
        these operations are resolved again, and `effects()` returns a new
        list (compare by identity).  Empty if they failed before they were
        resolved (`effects()` raises why)."""
        await self._req.resolved.wait()
        return self._req.effects


def _finish(req: _Request, error: BaseException) -> None:
    """`req` ends with `error`: whoever waits for its effects, resolved or
    applied, is let go."""
    req.effects = []
    req.error = error
    req.resolved.set()
    req.done.set()


Listener = Callable[[Sequence[Effect]], None]


class InstanceTracker:
    def __init__(
        self,
        repo: StateRepository,
        bus: EventBus,
        *,
        time_ms: Callable[[], int],
        kill: Callable[[Sequence[str]], None],
        max_batch: int = 20000,
        kill_retry_ms: int = 30000,
    ) -> None:
        self._repo = repo
        self._bus = bus
        self._time_ms = time_ms
        self._kill = kill
        self._max_batch = max_batch
        self._kill_retry_ms = kill_retry_ms
        self._instances: dict[str, Instance] = {}
        self._by_app: dict[str, dict[str, Instance]] = {}
        self._scheduled: dict[str, dict[str, Instance]] = {}
        # Per app: how many instances have each (goal, condition); kept up to
        # date on every change so "how many are running?" never scans.
        self._counts: dict[str, dict[tuple[str, str], int]] = {}
        self._unreachable: dict[str, Instance] = {}
        self._task_failures: dict[str, TaskFailure] = {}
        self._kills_sent: dict[str, int] = {}  # task id -> ms of the last kill request
        self._app_events: dict[str, trio.Event] = {}
        self._listeners: list[Listener] = []
        self._send, self._recv = trio.open_memory_channel[_Request](10000)
        # Set when a request is queued or a batch is stored.
        self._wakeup = trio.Event()

    # -- lifecycle -------------------------------------------------------------

    async def load(self) -> None:
        for inst in await self._repo.load_instances():
            self._index(inst)
        self._task_failures = await self._repo.load_task_failures()
        log.info("instances loaded count=%d", len(self._instances))

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._retry_kills)
            task_status.started()
            # One batch is being stored while the next one is resolved and
            # encoded against it (a pipeline of two): the store's worker
            # thread and this loop work at the same time, and the views
            # still only ever show what is durable.
            storing: _Staged | None = None
            staged: _Staged | None = None
            try:
                while True:
                    if storing is None:
                        staged = _Staged(self._gather([await self._recv.receive()]))
                        await self._stage(staged, {})
                    else:
                        # What is queued once a request arrives (or once
                        # `storing` is stored) is the next batch, resolved
                        # while `storing` is stored.  (Letting every later
                        # arrival join it as well measured slower: S1 spent
                        # 0.5-0.8 more CPU s resolving and encoding in many
                        # small steps.)
                        await self._stored_or_queued(storing)
                        if not storing.stored.is_set():
                            staged = _Staged(self._gather([]))
                            await self._stage(staged, storing.overlay)
                        await storing.stored.wait()
                        if storing.error is not None:
                            self._fail(storing, storing.error)
                            if staged is not None:
                                # Resolved against changes that were never
                                # stored: resolve again against what is.
                                staged = _Staged(staged.batch)
                                await self._stage(staged, {})
                    if staged is not None:
                        nursery.start_soon(self._store, staged)
                    if storing is not None and storing.error is None:
                        # The next batch is being stored meanwhile.
                        await self._apply(storing)
                    storing, staged = staged, None
            except BaseException:
                # Stopped (cancelled): nobody is left waiting forever.
                stopped = trio.ClosedResourceError("instance tracker stopped")
                for cut in (storing, staged):
                    if cut is not None:
                        self._fail(cut, stopped)
                while True:
                    try:
                        req = self._recv.receive_nowait()
                    except trio.WouldBlock:
                        break
                    _finish(req, stopped)
                raise

    async def _stored_or_queued(self, storing: _Staged) -> None:
        """Wait until `storing` is stored or a request is queued."""
        while True:
            self._wakeup = trio.Event()
            if storing.stored.is_set() or self._recv.statistics().current_buffer_used:
                await trio.lowlevel.checkpoint()
                return
            await self._wakeup.wait()

    def _gather(self, batch: list[_Request]) -> list[_Request]:
        """`batch` and what is queued, up to `max_batch` operations."""
        count = sum(len(req.ops) for req in batch)
        while count < self._max_batch:
            try:
                req = self._recv.receive_nowait()
            except trio.WouldBlock:
                break
            batch.append(req)
            count += len(req.ops)
        return batch

    # -- writes ---------------------------------------------------------------

    async def process(self, ops: Sequence[Operation]) -> list[Effect]:
        """Resolve, persist and apply `ops`; returns one effect per op, in order."""
        if not ops:
            return []
        return await (await self.submit(ops)).effects()

    async def submit(self, ops: Sequence[Operation]) -> Submitted:
        """Queue `ops` and return at once (waiting only while the queue is
        full); the result says when they are applied.  A producer that need
        not wait for each batch (the status pump) keeps the next one coming
        while this one is stored."""
        req = _Request(ops)
        if ops:
            await self._send.send(req)
            self._wakeup.set()
        else:
            req.resolved.set()
            req.done.set()
        return Submitted(req)

    def add_listener(self, listener: Listener) -> None:
        """Called synchronously with every applied batch of effects (those
        that changed nothing, `Noop`, left out)."""
        self._listeners.append(listener)

    def kill_tasks(self, instances: Iterable[Instance]) -> None:
        """Kill the current tasks of `instances` without changing their goal
        (instances whose goal is Running are relaunched afterwards)."""
        ids = [i.task.task_id for i in instances if i.task is not None and i.condition in ACTIVE]
        self._send_kills(ids)

    def kill_unwanted(self) -> int:
        """Send a kill for every active task whose instance's goal is not
        Running and that has no kill in flight; returns how many.

        A kill is sent when the goal changes, and that moment is not durable:
        a server killed right after storing a scale-down (or a delete) comes
        back with the goal stored and the tasks still running, and nothing
        else would ever kill them.  So this runs at every reconciliation,
        the first of which comes before anything is replaced.
        """
        ids = [
            i.task.task_id for i in self._instances.values()
            if i.state.goal != Goal.RUNNING and i.task is not None and i.condition in ACTIVE
            and i.task.task_id not in self._kills_sent
        ]
        self._send_kills(ids)
        return len(ids)

    # -- reads ----------------------------------------------------------------

    def get(self, instance_id: str) -> Instance | None:
        return self._instances.get(instance_id)

    def of_app(self, app_id: str) -> list[Instance]:
        return list(self._by_app.get(app_id, {}).values())

    def count_of_app(self, app_id: str) -> int:
        return len(self._by_app.get(app_id, ()))

    def all(self) -> Iterable[Instance]:
        return self._instances.values()

    def app_ids(self) -> list[str]:
        return list(self._by_app)

    def counts(self, app_id: str) -> dict[tuple[str, str], int]:
        """(goal, condition) -> number of the app's instances (maintained, not scanned)."""
        return dict(self._counts.get(app_id, {}))

    def unreachable(self) -> list[Instance]:
        """Instances that are Unreachable or UnreachableInactive."""
        return list(self._unreachable.values())

    def scheduled(self) -> dict[str, list[Instance]]:
        """Instances waiting for placement, by app."""
        return {app: list(insts.values()) for app, insts in self._scheduled.items() if insts}

    def task_failure(self, app_id: str) -> TaskFailure | None:
        return self._task_failures.get(app_id)

    def changed(self, app_id: str) -> trio.Event:
        """An event set the next time any instance of `app_id` changes.

        Take it *before* looking at the state, then wait on it: no change can
        slip between the look and the wait.
        """
        ev = self._app_events.get(app_id)
        if ev is None:
            ev = self._app_events[app_id] = trio.Event()
        return ev

    def notify(self, app_id: str) -> None:
        """Wake whoever waits on `changed(app_id)` (health changed, not the instance)."""
        ev = self._app_events.pop(app_id, None)
        if ev is not None:
            ev.set()

    async def record_task_failure(self, failure: TaskFailure) -> None:
        """Remember a task failure Marathon caused itself (a health-check kill)."""
        await self._repo.commit([self._repo.task_failure_put(failure)])
        self._task_failures[failure.app_id] = failure

    async def forget_task_failure(self, app_id: str) -> None:
        if self._task_failures.pop(app_id, None) is not None:
            await self._repo.commit([self._repo.task_failure_delete(app_id)])

    # -- internals ------------------------------------------------------------

    def _count(self, inst: Instance, delta: int) -> None:
        counts = self._counts.setdefault(inst.run_spec_id, {})
        key = (inst.state.goal, inst.state.condition)
        n = counts.get(key, 0) + delta
        if n:
            counts[key] = n
        else:
            counts.pop(key, None)
            if not counts:
                del self._counts[inst.run_spec_id]

    def _index(self, inst: Instance) -> None:
        old = self._instances.get(inst.instance_id)
        if old is not None:
            self._count(old, -1)
        self._count(inst, 1)
        if inst.state.condition in _UNREACHABLE:
            self._unreachable[inst.instance_id] = inst
        elif old is not None and old.state.condition in _UNREACHABLE:
            self._unreachable.pop(inst.instance_id, None)
        self._instances[inst.instance_id] = inst
        self._by_app.setdefault(inst.run_spec_id, {})[inst.instance_id] = inst
        sched = self._scheduled.setdefault(inst.run_spec_id, {})
        if inst.is_scheduled:
            sched[inst.instance_id] = inst
        elif old is not None:
            sched.pop(inst.instance_id, None)

    def _unindex(self, instance_id: str) -> None:
        inst = self._instances.pop(instance_id, None)
        if inst is None:
            return
        self._count(inst, -1)
        self._unreachable.pop(instance_id, None)
        app = self._by_app.get(inst.run_spec_id)
        if app is not None:
            app.pop(instance_id, None)
            if not app:
                del self._by_app[inst.run_spec_id]
        sched = self._scheduled.get(inst.run_spec_id)
        if sched is not None:
            sched.pop(instance_id, None)
            if not sched:
                del self._scheduled[inst.run_spec_id]

    async def _stage(self, staged: _Staged, storing: dict[str, Instance | None]) -> None:
        """Resolve `staged`'s requests against the views as left by the batch
        being stored (`storing`, its changed instances) and encode what they
        change."""
        overlay = staged.overlay
        instances = self._instances

        def before(iid: str) -> Instance | None:
            return storing[iid] if iid in storing else instances.get(iid)

        n = 0
        for req in staged.batch:
            # Effects are collected apart and published whole: `resolved()`
            # never hands out a list that is still growing.
            effects: list[Effect] = []
            for op in req.ops:
                n += 1
                if n % YIELD_EVERY == 0:
                    # Only this task writes instances: letting readers in
                    # between keeps the API answering during a burst.
                    await trio.lowlevel.checkpoint()
                iid = _op_instance_id(op)
                cur = overlay[iid] if iid in overlay else before(iid)
                eff = resolve(cur, op)
                if isinstance(eff, Updated):
                    overlay[iid] = eff.instance
                elif isinstance(eff, Expunged):
                    overlay[iid] = None
                if isinstance(op, StatusUpdate) and isinstance(eff, _CHANGED):
                    failure = self._task_failure_of(eff, op)
                    if failure is not None:
                        staged.failures[failure.app_id] = failure
                effects.append(eff)
            req.effects = effects
            req.resolved.set()
        ops = staged.ops
        for n, (iid, inst) in enumerate(overlay.items(), 1):
            if not _launch_progress_only(before(iid), inst):
                ops.append(self._repo.instance_put(inst) if inst is not None else self._repo.instance_delete(iid))
            if n % YIELD_EVERY == 0:
                await trio.lowlevel.checkpoint()

    async def _store(self, staged: _Staged) -> None:
        ops = list(staged.ops)
        ops.extend(self._repo.task_failure_put(f) for f in staged.failures.values())
        try:
            await self._repo.commit(ops)
        except Exception as exc:
            log.error("persisting instance batch failed ops=%d error=%s", len(ops), exc)
            staged.error = exc
        finally:
            staged.stored.set()
            self._wakeup.set()

    def _fail(self, staged: _Staged, error: BaseException) -> None:
        for req in staged.batch:
            if not req.done.is_set():
                _finish(req, error)

    async def _apply(self, staged: _Staged) -> None:
        """A stored batch reaches the views, the listeners and the bus."""
        batch = staged.batch
        for n, (iid, inst) in enumerate(staged.overlay.items(), 1):
            if inst is None:
                self._unindex(iid)
            else:
                self._index(inst)
            if n % YIELD_EVERY == 0:
                await trio.lowlevel.checkpoint()
        self._task_failures.update(staged.failures)
        # Listeners never act on a Noop, and a reconciliation of 100,000
        # tasks is 200,000 of them: each listener would walk them all.
        all_effects: list[Effect] = [eff for req in batch for eff in req.effects if type(eff) is not Noop]
        events = await self._after_apply(batch, all_effects)
        for req in batch:
            req.done.set()
        await self._bus.publish_batch(events)

    def _task_failure_of(self, eff: Updated | Expunged, op: StatusUpdate) -> TaskFailure | None:
        inst = eff.instance
        health_kill = inst.condition == "Killed" and op.status.healthy is False
        if (inst.condition not in TASK_FAILURE and not health_kill) or inst.task is None:
            return None
        return TaskFailure(
            app_id=inst.run_spec_id,
            task_id=inst.task.task_id,
            state=op.status.state,
            message=op.status.message,
            host=inst.hostname or "",
            timestamp=format_ms(op.status.timestamp or op.now),
            version=inst.run_spec_version,
            slave_id=inst.agent_id,
        )

    async def _after_apply(self, batch: list[_Request], effects: list[Effect]) -> list[Event]:
        """Kills, listeners and change notifications; returns the events to publish."""
        now = self._time_ms()
        ts = format_ms(now)
        events: list[Event] = []
        to_kill: list[str] = []
        touched: set[str] = set()
        transitions = _Transitions()
        n = 0
        for req in batch:
            for op, eff in zip(req.ops, req.effects, strict=True):
                n += 1
                if n % YIELD_EVERY == 0:
                    await trio.lowlevel.checkpoint()
                if type(eff) is Noop:
                    continue
                if isinstance(eff, _CHANGED):
                    inst = eff.instance
                    prev = eff.previous if isinstance(eff, Updated) else None
                    touched.add(inst.run_spec_id)
                    if isinstance(op, StatusUpdate):
                        events.append(_status_event(inst, op, ts))
                    if prev is None or prev.state.condition != inst.state.condition or prev.state.goal != inst.state.goal or isinstance(eff, Expunged):
                        events.append(_changed_event(inst, ts))
                    if prev is not None and prev.state.healthy != inst.state.healthy and inst.state.healthy is not None:
                        # Health reported by the agent (Mesos-level checks).
                        events.append(
                            InstanceHealthChangedEvent(
                                timestamp=ts, instance_id=inst.instance_id, run_spec_id=inst.run_spec_id,
                                healthy=inst.state.healthy, run_spec_version=inst.run_spec_version,
                            )
                        )
                    if inst.state.goal != Goal.RUNNING and inst.condition in ACTIVE and inst.task is not None:
                        if inst.task.task_id not in self._kills_sent:
                            to_kill.append(inst.task.task_id)
                    if inst.task is not None and (inst.condition in TERMINAL or isinstance(eff, Expunged)):
                        self._kills_sent.pop(inst.task.task_id, None)
                    if isinstance(op, StatusUpdate | Provision):
                        transitions.add(inst, prev)
                elif isinstance(eff, KillTask):
                    log.info("killing task not in sync task_id=%s reason=%s", eff.task_id, eff.reason)
                    to_kill.append(eff.task_id)
                elif isinstance(eff, UnknownTerminated):
                    events.append(
                        UnknownInstanceTerminatedEvent(
                            timestamp=ts,
                            instance_id=eff.instance_id,
                            run_spec_id=_app_of(eff.instance_id),
                            condition=eff.condition,
                        )
                    )
        transitions.log()
        self._send_kills(to_kill)
        for app_id in touched:
            ev = self._app_events.pop(app_id, None)
            if ev is not None:
                ev.set()
        for listener in self._listeners:
            # Each listener sees the whole batch (some count per batch), and
            # the loop gets a turn in between: each is a pass over 20,000
            # effects at the top of a burst.
            await trio.lowlevel.checkpoint()
            try:
                listener(effects)
            except Exception:
                log.exception("instance listener failed")
        return events

    def _send_kills(self, task_ids: Sequence[str]) -> None:
        if not task_ids:
            return
        now = self._time_ms()
        for t in task_ids:
            self._kills_sent[t] = now
        self._kill(list(task_ids))

    async def _retry_kills(self) -> None:
        """Kills that were not confirmed by a terminal status are sent again."""
        interval = max(self._kill_retry_ms / 1000.0 / 2, 0.5)
        while True:
            await trio.sleep(interval)
            now = self._time_ms()
            stale = [
                t for t, sent in self._kills_sent.items()
                if now - sent >= self._kill_retry_ms
            ]
            if stale:
                log.info("retrying unconfirmed kills count=%d", len(stale))
                self._send_kills(stale)


class _Transitions:
    """Task state changes of one batch, logged per task or as a summary."""

    def __init__(self) -> None:
        self.changed: list[Instance] = []

    def add(self, inst: Instance, prev: Instance | None) -> None:
        cond = inst.condition
        if (prev is None or prev.condition != cond) and (cond == "Running" or cond in TERMINAL):
            self.changed.append(inst)

    def log(self) -> None:
        if not self.changed:
            return
        each = len(self.changed) <= LOG_EACH_TASK_UP_TO
        if each or log.isEnabledFor(logging.DEBUG):
            level = logging.INFO if each else logging.DEBUG
            for inst in self.changed:
                task = inst.task
                task_id = task.task_id if task else ""
                if inst.condition == "Running":
                    log.log(level, "task running app=%s task_id=%s host=%s ports=%s", inst.run_spec_id, task_id,
                            inst.hostname, task.host_ports if task else [])
                else:
                    log.log(level, "task ended app=%s task_id=%s state=%s message=%r", inst.run_spec_id, task_id,
                            task.mesos_state if task else "", task.message if task else "")
        if not each:
            running = sum(1 for i in self.changed if i.condition == "Running")
            apps = len({i.run_spec_id for i in self.changed})
            log.info("tasks changed running=%d ended=%d apps=%d", running, len(self.changed) - running, apps)


_LAUNCHING = frozenset({"Provisioned", "Staging", "Starting"})


def _launch_progress_only(before: Instance | None, after: Instance | None) -> bool:
    """A task moving along its launch (Provisioned -> Staging -> Starting) with
    nothing else changed is not written on its own: the next durable change
    (Running, a failure, a goal change) writes it, and after a crash
    reconciliation learns the task's real state from its agent.  Provisioned
    itself is always written: it is what must be durable before a launch."""
    return (
        before is not None
        and after is not None
        and before.state.condition in _LAUNCHING
        and after.state.condition in _LAUNCHING
        and after.state.condition != "Provisioned"
        and before.state.goal == after.state.goal
        and before.task is not None
        and after.task is not None
        and before.task.task_id == after.task.task_id
    )


def _app_of(instance_id: str) -> str:
    try:
        from ..models.instance import parse_instance_id

        return parse_instance_id(instance_id)
    except ValueError:
        return ""


def _status_event(inst: Instance, op: StatusUpdate, ts: str) -> StatusUpdateEvent:
    task = inst.task
    return StatusUpdateEvent(
        timestamp=ts,
        slave_id=inst.agent_id or op.status.agent_id,
        task_id=op.status.task_id,
        task_status=op.status.state,
        message=op.status.message,
        app_id=inst.run_spec_id,
        host=inst.hostname or "",
        ip_addresses=[{"ipAddress": ip, "protocol": "IPv6" if ":" in ip else "IPv4"} for ip in (task.ip_addresses if task else [])],
        ports=list(task.host_ports) if task else [],
        version=inst.run_spec_version,
    )


def _changed_event(inst: Instance, ts: str) -> InstanceChangedEvent:
    return InstanceChangedEvent(
        timestamp=ts,
        instance_id=inst.instance_id,
        condition=inst.state.condition,
        run_spec_id=inst.run_spec_id,
        agent_id=inst.agent_id or "",
        host=inst.hostname or "",
        run_spec_version=inst.run_spec_version,
        goal=inst.state.goal,
    )

