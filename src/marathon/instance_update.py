"""Instance changes as data: (current instance, operation) -> effect.

Pure (SPEC.md 5.2-5.5).  The instance tracker resolves every operation here,
persists the resulting effects in one batch, and only then applies them and
tells the rest of the system.  Nothing in this module performs I/O or reads a
clock: `now` comes in with the operation.
"""

from __future__ import annotations

from msgspec import Struct, structs

from .models.instance import (
    TERMINAL,
    Condition,
    Goal,
    Instance,
    InstanceState,
    Task,
    TaskStatus,
    condition_of,
    task_id_for,
)

# -- operations ----------------------------------------------------------------


class Schedule(Struct, frozen=True):
    """Create a new instance, waiting for placement."""

    instance: Instance


class Provision(Struct, frozen=True, kw_only=True):
    """A scheduled instance was placed: it gets its next task."""

    instance_id: str
    agent_id: str
    hostname: str
    region: str | None = None
    zone: str | None = None
    host_ports: list[int] = []
    now: int


class StatusUpdate(Struct, frozen=True, kw_only=True):
    """An agent reported a task state.

    `inactive_after_ms` is the app's unreachableStrategy (None = disabled);
    `task_killing` says whether TASK_KILLING is tracked (feature flag).
    """

    instance_id: str
    status: TaskStatus
    now: int
    inactive_after_ms: int | None = 0
    task_killing: bool = False


class ChangeGoal(Struct, frozen=True, kw_only=True):
    instance_id: str
    goal: str
    now: int


class ForceExpunge(Struct, frozen=True):
    instance_id: str


class UnreachableTimeout(Struct, frozen=True, kw_only=True):
    """An Unreachable instance passed its `inactiveAfterSeconds` (SPEC.md 5.4)."""

    instance_id: str
    now: int


Operation = Schedule | Provision | StatusUpdate | ChangeGoal | ForceExpunge | UnreachableTimeout


# -- effects -------------------------------------------------------------------


class Updated(Struct, frozen=True):
    instance: Instance
    previous: Instance | None


class Expunged(Struct, frozen=True):
    instance: Instance


class Noop(Struct, frozen=True):
    instance_id: str


class Failure(Struct, frozen=True):
    instance_id: str
    message: str


class KillTask(Struct, frozen=True):
    """A task the agent runs but that is not (or no longer) what we want: kill it."""

    task_id: str
    reason: str


class UnknownTerminated(Struct, frozen=True):
    """A terminal/unreachable update for an instance we do not know."""

    instance_id: str
    task_id: str
    condition: str


Effect = Updated | Expunged | Noop | Failure | KillTask | UnknownTerminated

_INACTIVE_UNREACHABLE = frozenset({Condition.UNREACHABLE})


def resolve(current: Instance | None, op: Operation) -> Effect:
    if isinstance(op, StatusUpdate):
        return _status(current, op)
    if isinstance(op, Provision):
        return _provision(current, op)
    if isinstance(op, ChangeGoal):
        return _goal(current, op)
    if isinstance(op, Schedule):
        if current is not None:
            return Failure(op.instance.instance_id, "instance already exists")
        return Updated(op.instance, None)
    if isinstance(op, ForceExpunge):
        return Expunged(current) if current is not None else Noop(op.instance_id)
    if isinstance(op, UnreachableTimeout):
        if current is None or current.condition != Condition.UNREACHABLE:
            return Noop(op.instance_id)
        state = structs.replace(current.state, condition=Condition.UNREACHABLE_INACTIVE, since=op.now)
        return Updated(structs.replace(current, state=state), current)
    raise TypeError(f"unknown operation {op!r}")


def _provision(current: Instance | None, op: Provision) -> Effect:
    if current is None:
        return Failure(op.instance_id, "unknown instance")
    if not current.is_scheduled:
        return Failure(op.instance_id, f"instance is {current.condition}, not scheduled")
    incarnation = current.incarnation + 1
    task = Task(
        task_id=task_id_for(current.instance_id, incarnation),
        condition=Condition.PROVISIONED,
        mesos_state="TASK_STAGING",
        host_ports=list(op.host_ports),
    )
    state = InstanceState(condition=Condition.PROVISIONED, since=op.now, goal=current.state.goal)
    inst = structs.replace(
        current,
        state=state,
        agent_id=op.agent_id,
        hostname=op.hostname,
        region=op.region,
        zone=op.zone,
        task=task,
        incarnation=incarnation,
    )
    return Updated(inst, current)


def _status(current: Instance | None, op: StatusUpdate) -> Effect:
    status = op.status
    cond = condition_of(status.state, status.reason, status.message)
    if current is None:
        if cond in TERMINAL or cond == Condition.UNREACHABLE:
            return UnknownTerminated(op.instance_id, status.task_id, cond)
        return KillTask(status.task_id, "Unknown")
    task = current.task
    if task is None or task.task_id != status.task_id:
        # An older incarnation (or a task we never launched) is still reporting.
        if cond in TERMINAL:
            return Noop(current.instance_id)
        return KillTask(status.task_id, "NotInSync")
    if cond == Condition.KILLING and not op.task_killing:
        return Noop(current.instance_id)
    if task.condition in TERMINAL:
        # Terminal is final for a task; late or repeated updates change nothing.
        return Noop(current.instance_id)
    if cond == Condition.UNREACHABLE and op.inactive_after_ms == 0:
        cond = Condition.UNREACHABLE_INACTIVE

    staged_at = task.staged_at
    if staged_at is None and status.state in ("TASK_STAGING", "TASK_STARTING", "TASK_RUNNING"):
        staged_at = status.timestamp or op.now
    started_at = task.started_at
    if started_at is None and status.state == "TASK_RUNNING":
        started_at = status.timestamp or op.now
    new_task = structs.replace(
        task,
        condition=cond,
        mesos_state=status.state,
        staged_at=staged_at,
        started_at=started_at,
        message=status.message,
        reason=status.reason,
        healthy=status.healthy if status.healthy is not None else task.healthy,
        ip_addresses=list(status.ip_addresses) if status.ip_addresses else task.ip_addresses,
        check_result=status.check_result if status.check_result is not None else task.check_result,
    )
    if new_task == task:
        return Noop(current.instance_id)

    old_state = current.state
    changed = cond != old_state.condition
    active_since = started_at if cond not in TERMINAL else None
    healthy = new_task.healthy if cond == Condition.RUNNING else None
    state = structs.replace(
        old_state,
        condition=cond,
        since=op.now if changed else old_state.since,
        active_since=active_since,
        healthy=healthy,
    )
    inst = structs.replace(current, state=state, task=new_task)
    if cond in TERMINAL and old_state.goal == Goal.DECOMMISSIONED:
        return Expunged(inst)
    return Updated(inst, current)


def _goal(current: Instance | None, op: ChangeGoal) -> Effect:
    if current is None:
        return Noop(op.instance_id)
    if op.goal == Goal.DECOMMISSIONED and (
        current.task is None
        or current.condition in TERMINAL
        or current.condition == Condition.SCHEDULED
        or current.condition == Condition.UNREACHABLE_INACTIVE
    ):
        # Nothing runs (or can be reached to be killed): forget it now.
        return Expunged(current)
    if current.state.goal == op.goal:
        return Noop(current.instance_id)
    state = structs.replace(current.state, goal=op.goal)
    return Updated(structs.replace(current, state=state), current)
