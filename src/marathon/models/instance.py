"""Instances and tasks: one scheduled copy of an app, and its current process.

An instance survives task failures: the same instance id gets a new task id
with the next incarnation (`<instanceId>._app.<n>`).  Conditions and goals
follow SPEC.md 5.2 and 5.3.  Instances are frozen Structs; every change goes
through `marathon.instance_update` (pure) and is applied and persisted by the
instance tracker, the single writer of instance state.
"""

from __future__ import annotations

import functools
import random
import re
import time
import uuid
from typing import Literal

from msgspec import Struct

from . import pathid


class Condition:
    """Marathon-level states of a task/instance (SPEC.md 5.2)."""

    SCHEDULED = "Scheduled"
    PROVISIONED = "Provisioned"
    STAGING = "Staging"
    STARTING = "Starting"
    RUNNING = "Running"
    KILLING = "Killing"
    UNREACHABLE = "Unreachable"
    UNREACHABLE_INACTIVE = "UnreachableInactive"
    KILLED = "Killed"
    FINISHED = "Finished"
    FAILED = "Failed"
    ERROR = "Error"
    DROPPED = "Dropped"
    GONE = "Gone"
    UNKNOWN = "Unknown"


ConditionName = Literal[
    "Scheduled", "Provisioned", "Staging", "Starting", "Running", "Killing", "Unreachable",
    "UnreachableInactive", "Killed", "Finished", "Failed", "Error", "Dropped", "Gone", "Unknown",
]

ACTIVE = frozenset({"Provisioned", "Staging", "Starting", "Running", "Killing", "Unreachable"})
TERMINAL = frozenset({"Killed", "Finished", "Failed", "Error", "Dropped", "Gone", "Unknown"})
LOST = frozenset({"Unreachable", "UnreachableInactive", "Gone", "Dropped", "Unknown"})
# Conditions whose arrival counts as a launch failure for backoff (SPEC.md 4.9).
BACKOFF_FAILURE = frozenset({"Failed", "Error", "Finished", "Dropped", "Gone"})
# Reasons of a task's end that are the control plane's fault, not the app's
# (the agent restarted while launching it, or is shutting down): such an end
# is never charged to the app's launch backoff.
CONTROL_PLANE_REASONS = frozenset({"REASON_AGENT_RESTARTED", "REASON_SLAVE_RESTARTED"})
# Conditions kept in lastTaskFailure (SPEC.md 2.8).
TASK_FAILURE = frozenset({"Failed", "Error", "Dropped", "Gone", "Unknown"})


class Goal:
    RUNNING = "Running"
    STOPPED = "Stopped"
    DECOMMISSIONED = "Decommissioned"


GoalName = Literal["Running", "Stopped", "Decommissioned"]


# Mesos task states and the condition each maps to (TASK_LOST is mapped by reason).
TASK_STATE_CONDITION = {
    "TASK_STAGING": "Staging",
    "TASK_STARTING": "Starting",
    "TASK_RUNNING": "Running",
    "TASK_KILLING": "Killing",
    "TASK_UNREACHABLE": "Unreachable",
    "TASK_KILLED": "Killed",
    "TASK_FINISHED": "Finished",
    "TASK_FAILED": "Failed",
    "TASK_ERROR": "Error",
    "TASK_DROPPED": "Dropped",
    "TASK_GONE": "Gone",
    "TASK_GONE_BY_OPERATOR": "Gone",
    "TASK_UNKNOWN": "Unknown",
}
CONDITION_TASK_STATE = {
    "Scheduled": "TASK_STAGING",
    "Provisioned": "TASK_STAGING",
    "Staging": "TASK_STAGING",
    "Starting": "TASK_STARTING",
    "Running": "TASK_RUNNING",
    "Killing": "TASK_KILLING",
    "Unreachable": "TASK_UNREACHABLE",
    "UnreachableInactive": "TASK_UNREACHABLE",
    "Killed": "TASK_KILLED",
    "Finished": "TASK_FINISHED",
    "Failed": "TASK_FAILED",
    "Error": "TASK_ERROR",
    "Dropped": "TASK_DROPPED",
    "Gone": "TASK_GONE",
    "Unknown": "TASK_UNKNOWN",
}
_UNREACHABLE_REASONS = frozenset(
    {"REASON_RECONCILIATION", "REASON_SLAVE_DISCONNECTED", "REASON_SLAVE_REMOVED"}
)


def condition_of(state: str, reason: str | None = None, message: str = "") -> str:
    """Map a Mesos task state (and, for TASK_LOST, its reason) to a condition."""
    if state != "TASK_LOST":
        return TASK_STATE_CONDITION.get(state, "Unknown")
    if reason == "REASON_TASK_UNKNOWN" or message.startswith("Reconciliation: Task is unknown to the"):
        return "Unknown"
    if reason in _UNREACHABLE_REASONS:
        return "Unreachable"
    if reason:
        return "Gone"
    return "Dropped"


class CheckStatus(Struct, frozen=True, kw_only=True, gc=False):
    """The last result of a task's Mesos check (the app's `check`), as
    Marathon shows it in `Task.checkResult`: one of the three is set."""

    http_status_code: int | None = None  # http: the answer's status (0: no answer)
    tcp_succeeded: bool | None = None
    command_exit_code: int | None = None  # exec: the command's exit code (-1: unknown)


class TaskStatus(Struct, frozen=True, kw_only=True, gc=False):
    """A status update from an agent, as the cluster driver delivers it."""

    task_id: str
    state: str
    agent_id: str = ""
    message: str = ""
    reason: str | None = None
    timestamp: int = 0  # ms since the epoch
    healthy: bool | None = None
    exit_code: int | None = None
    # The task's addresses as the agent reports them (Mesos' NetworkInfo):
    # with host networking, the agent's own address.
    ip_addresses: list[str] = []
    check_result: CheckStatus | None = None
    # A remote agent's id for this update: it resends the update until the
    # master acknowledges that id, which the master does only once the
    # update is committed.  None: nothing to acknowledge (the embedded and
    # simulated agents, answers to reconciliation).
    uuid: str | None = None


class Task(Struct, frozen=True, kw_only=True, gc=False):
    """The current (or last) task of an instance."""

    task_id: str
    condition: ConditionName
    mesos_state: str = "TASK_STAGING"
    staged_at: int | None = None  # ms
    started_at: int | None = None  # ms
    host_ports: list[int] = []
    ip_addresses: list[str] = []
    message: str = ""
    healthy: bool | None = None
    reason: str | None = None  # of the last status (Mesos' TaskStatus.Reason)
    check_result: CheckStatus | None = None


class InstanceState(Struct, frozen=True, kw_only=True, gc=False):
    condition: ConditionName
    since: int  # ms, when the condition last changed
    goal: GoalName = "Running"
    active_since: int | None = None  # ms, earliest task startedAt
    healthy: bool | None = None


class Instance(Struct, frozen=True, kw_only=True, gc=False):
    instance_id: str
    run_spec_id: str
    run_spec_version: str
    state: InstanceState
    role: str = "*"
    agent_id: str | None = None
    hostname: str | None = None
    region: str | None = None
    zone: str | None = None
    task: Task | None = None
    incarnation: int = 0  # of the current task; the next launch uses incarnation + 1

    @property
    def condition(self) -> str:
        return self.state.condition

    @property
    def goal(self) -> str:
        return self.state.goal

    @property
    def is_active(self) -> bool:
        return self.state.condition in ACTIVE

    @property
    def is_terminal(self) -> bool:
        return self.state.condition in TERMINAL

    @property
    def is_scheduled(self) -> bool:
        """Waiting for placement: goal Running and Scheduled or terminal (SPEC.md 4.8)."""
        c = self.state.condition
        return self.state.goal == "Running" and (c == "Scheduled" or c in TERMINAL)


# -- identifiers (SPEC.md 5.1) -------------------------------------------------

APP_CONTAINER = "_app"
_INSTANCE_RE = re.compile(r"^(.+)\.(instance-|marathon-)([^\.]+)$")


def new_instance_id(run_spec_id: str) -> str:
    """`<safeRunSpecId>.instance-<time-based uuid>`."""
    return new_instance_ids(run_spec_id, 1)[0]


_NODE = uuid.getnode()
_CLOCK_SEQ = random.getrandbits(14) | 0x8000  # with the RFC 4122 variant bits
_UUID_EPOCH = 0x01B21DD213814000  # 1582-10-15 in 100 ns intervals before the Unix epoch
_last_timestamp = 0


def new_instance_ids(run_spec_id: str, count: int) -> list[str]:
    """`count` instance ids with time-based (version 1) UUIDs, made in one go.

    `uuid.uuid1()` costs microseconds per call (a lock and a clock read each);
    a burst of 100,000 instances takes consecutive 100 ns timestamps from one
    clock read instead.  Ids stay unique within the process (timestamps never
    repeat) and across processes (random clock sequence, node id).
    """
    global _last_timestamp
    now = time.time_ns() // 100 + _UUID_EPOCH
    start = max(now, _last_timestamp + 1)
    _last_timestamp = start + count - 1
    prefix = f"{pathid.safe(run_spec_id)}.instance-"
    tail = f"-{_CLOCK_SEQ:04x}-{_NODE:012x}"
    out: list[str] = []
    t = start
    end = start + count
    while t < end:
        # Only the low 32 bits change within a run of 2**32 timestamps.
        high = t >> 32
        middle = f"-{high & 0xFFFF:04x}-{((high >> 16) & 0x0FFF) | 0x1000:04x}{tail}"
        stop = min(end, (high + 1) << 32)
        out.extend([f"{prefix}{low:08x}{middle}" for low in range(t & 0xFFFFFFFF, (t & 0xFFFFFFFF) + (stop - t))])
        t = stop
    return out


def task_id_for(instance_id: str, incarnation: int) -> str:
    return f"{instance_id}.{APP_CONTAINER}.{incarnation}"


class ParsedTaskId(Struct, frozen=True):
    instance_id: str
    run_spec_id: str
    container: str | None
    incarnation: int | None


_TASK_RE = re.compile(r"^(.+\.(?:instance-|marathon-)[^\.]+)(?:[._]([^\.]+))?(?:\.(\d+))?$")
_LEGACY_TASK_RE = re.compile(
    r"^(.+)[._]([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})(?:\.(\d+))?$"
)
# Every status of a burst names the same few apps.
_path_of = functools.lru_cache(maxsize=4096)(pathid.from_safe)


def parse_task_id(task_id: str) -> ParsedTaskId:
    """Parse any task id form Marathon produced; raises ValueError if none fits.

    Accepted: `<instanceId>.<container>.<n>`, `<instanceId>.<container>`,
    `<safeId>.<uuid>`, `<safeId>_<uuid>`, `<safeId>.<uuid>.<attempt>`.
    """
    # The form we write (`<safeId>.instance-<uuid>._app.<n>`), without a
    # regular expression: every status update of a burst comes through here.
    instance_id, dot, rest = task_id.partition("._app.")
    if dot and rest.isdigit() and rest.isascii():
        k = instance_id.rfind(".instance-")
        if k > 0 and "." not in instance_id[k + 10:] and k + 10 < len(instance_id):
            return ParsedTaskId(instance_id, _path_of(instance_id[:k]), "_app", int(rest))
    return parse_task_id_any(task_id)


def parse_task_id_any(task_id: str) -> ParsedTaskId:
    """`parse_task_id` by regular expressions only (every form)."""
    m = _TASK_RE.match(task_id)
    if m:
        instance_id = m.group(1)
        container = m.group(2)
        incarnation = int(m.group(3)) if m.group(3) else None
        if container is not None and container.isdigit() and incarnation is None:
            container, incarnation = None, int(container)
        safe_id = _INSTANCE_RE.match(instance_id).group(1)  # type: ignore[union-attr]
        return ParsedTaskId(instance_id, _path_of(safe_id), container, incarnation)
    m = _LEGACY_TASK_RE.match(task_id)
    if m:
        safe_id, uid = m.group(1), m.group(2)
        return ParsedTaskId(
            f"{safe_id}.marathon-{uid}", pathid.from_safe(safe_id), None,
            int(m.group(3)) if m.group(3) else None,
        )
    raise ValueError(f"Invalid task id '{task_id}'")


def parse_instance_id(instance_id: str) -> str:
    """The run spec id of an instance id; raises ValueError if malformed."""
    m = _INSTANCE_RE.match(instance_id)
    if not m:
        raise ValueError(f"Invalid instance id '{instance_id}'")
    return pathid.from_safe(m.group(1))
