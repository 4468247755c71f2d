"""Agents over the network: the leader's side of the agent protocol.

`RemoteDriver` implements the `ClusterDriver` contract (`__init__.py`) for
`marathon agent` processes on other machines, so nothing above it can tell
them from the embedded agent.  The wire format is `models.agent_protocol`;
the HTTP routes that carry it are `api/agents.py`, which hand each
subscription and each call to this object.

Each agent is an `_Agent` with one of the states of CLUSTER.md 3.8:

    RECOVERING    known from the stored instances when the leader starts,
                  not subscribed yet: no offers, its tasks counted as running
    REGISTERED    its stream is open: offers, launches, kills
    DISCONNECTED  stream closed, or silent for 3 heartbeats: no offers,
                  its tasks untouched (a blip must cost nothing)
    UNREACHABLE   no contact for `unreachable_timeout`: each of its tasks
                  is reported TASK_UNREACHABLE once, and each app's
                  `unreachableStrategy` takes it from there
    GONE          by operator action: its tasks are TASK_GONE_BY_OPERATOR
                  and replaced at once; it may never subscribe again

A launch takes the agent's resources at once (the contract's "offers
include every accepted launch"), and the agent's own report of its tasks at
every SUBSCRIBE sets them again, so a restarted leader learns them too.
Statuses carry the agent's update uuid; `acknowledge` sends the ACKs once
the status pump has committed them (an ACK before the commit could lose an
update forever if the leader died in between).
"""

from __future__ import annotations

import collections
import hmac
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import msgspec
import trio

from ..agent.machine import subtract_ports
from ..models import agent_protocol as proto
from ..models.agent import AgentInfo, Offer, ports_in
from ..models.instance import TaskStatus
from ..models.launch import TaskLaunch
from ..models.resources import Resources

log = logging.getLogger("marathon.agents")

STREAM_BUFFER = 1024  # records queued for one agent before it counts as too slow


@dataclass(frozen=True, slots=True)
class RemoteConfig:
    cluster_id: str
    secret: bytes | None  # None: refuse every remote agent
    epoch: int = 1
    heartbeat_interval: float = 5.0
    unreachable_timeout: float = 75.0
    # After the leader (re)starts, how long an agent that had tasks may take
    # to subscribe before its tasks count as unreachable.
    reregister_timeout: float = 120.0
    # More unknown tasks than this (and than half the agent's tasks) at a
    # SUBSCRIBE are held, not killed: a restored backup or a wrong state
    # path would otherwise kill a machine's worth of tasks (CLUSTER.md 3.9).
    unknown_task_floor: int = 10


@dataclass(slots=True)
class _Task:
    agent_id: str
    resources: Resources
    ports: tuple[int, ...]


@dataclass(slots=True)
class _Agent:
    info: AgentInfo
    endpoint: str
    state: str = "DISCONNECTED"
    stream_id: str | None = None
    send: trio.MemorySendChannel[bytes] | None = None
    last_contact: float = 0.0  # trio time
    connected_at_ms: int = 0
    allocated: Resources = field(default_factory=Resources)
    ports: collections.Counter[int] = field(default_factory=collections.Counter)
    tasks: set[str] = field(default_factory=set)
    draining: bool = False
    unreachable_reported: bool = False


class AgentRefused(Exception):
    """A SUBSCRIBE or call this leader will not take; `code` is the ERROR code,
    `status` the HTTP status to answer with."""

    def __init__(self, code: str, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


class RemoteDriver:
    """The leader's view of `marathon agent` processes (see the module docstring)."""

    def __init__(self, config: RemoteConfig, *, time_ms: Callable[[], int],
                 known_task: Callable[[str], bool] = lambda _tid: True,
                 update_buffer: int = 100_000) -> None:
        self.config = config
        self._time_ms = time_ms
        self._known_task = known_task
        self._expected_tasks: Callable[[str], list[str]] = lambda _agent_id: []
        self._agents: dict[str, _Agent] = {}
        self._tasks: dict[str, _Task] = {}
        self._send_updates, self.updates = trio.open_memory_channel[TaskStatus](update_buffer)
        self._nursery: trio.Nursery | None = None
        self.refused_unknown: dict[str, list[str]] = {}  # agent id -> held unknown task ids
        self.dropped = 0  # statuses dropped because the pump was too far behind
        self._drop_logged = float("-inf")
        self._paused = False
        self._held: list[tuple[str, str | None, proto.ToAgent]] = []
        self._held_statuses: list[TaskStatus] = []
        self._update_buffer = update_buffer

    # -- the ClusterDriver contract ------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._watch)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self.leadership_lost()

    def leadership_lost(self) -> None:
        """The term is over: tell every agent (ERROR LEADERSHIP_LOST) and
        close its stream; it finds the next leader and subscribes there."""
        self._held.clear()
        self._held_statuses.clear()
        for a in self._agents.values():
            if a.send is not None:
                try:
                    a.send.send_nowait(proto.record(proto.Error(code="LEADERSHIP_LOST",
                                                                message="This master no longer leads")))
                except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                self._close_stream(a)

    def pause(self) -> None:
        """Hold every command (not heartbeats) and every status until
        `resume()`: the term is SUSPENDED and must not act until its fence is
        verified again.  Agent streams stay open and heartbeats flow both
        ways, and no agent is judged silent meanwhile."""
        if not self._paused:
            log.warning("agent_commands_held (leadership suspended)")
        self._paused = True

    def resume(self) -> None:
        if not self._paused:
            return
        self._paused = False
        held, self._held = self._held, []
        statuses, self._held_statuses = self._held_statuses, []
        log.info("agent_commands_released count=%d statuses=%d", len(held), len(statuses))
        # Silence is counted from now: nothing was judged while suspended.
        now = trio.current_time()
        for a in self._agents.values():
            a.last_contact = max(a.last_contact, now)
        for agent_id, stream_id, message in held:
            a = self._agents.get(agent_id)
            if a is not None and a.stream_id == stream_id:
                self._send(a, message)
        for status in statuses:
            self._emit(status)

    def agents(self) -> list[AgentInfo]:
        return [a.info for a in self._agents.values()]

    def offers(self) -> list[Offer]:
        out = []
        for a in self._agents.values():
            if a.state != "REGISTERED" or a.draining:
                continue
            info = a.info
            taken = set(a.ports)
            ranges = subtract_ports(info.port_ranges, taken)
            total = info.total
            free = Resources(
                cpus=max(0, total.cpus - a.allocated.cpus), mem=max(0, total.mem - a.allocated.mem),
                disk=max(0, total.disk - a.allocated.disk), gpus=max(0, total.gpus - a.allocated.gpus),
                ports=ports_in(ranges),
            )
            out.append(Offer(
                agent_id=info.id, hostname=info.hostname, free=free, port_ranges=ranges, total=total,
                region=info.region, zone=info.zone, role=info.role,
                attributes={x.name: x.render() for x in info.attributes},
            ))
        return out

    def launch(self, tasks: Sequence[TaskLaunch]) -> None:
        by_agent: dict[str, list[TaskLaunch]] = {}
        for t in tasks:
            a = self._agents.get(t.agent_id)
            if a is None or a.state != "REGISTERED" or a.send is None:
                # Placed on an agent that left meanwhile: Marathon places it again.
                self._emit(TaskStatus(task_id=t.task_id, state="TASK_DROPPED", agent_id=t.agent_id,
                                      message=f"Agent {t.agent_id} is not connected",
                                      reason="REASON_AGENT_DISCONNECTED", timestamp=self._time_ms()))
                continue
            self._take(a, t)
            by_agent.setdefault(a.info.id, []).append(t)
        for agent_id, launches in by_agent.items():
            a = self._agents[agent_id]
            for start in range(0, len(launches), proto.LAUNCH_BATCH):
                self._send(a, proto.Launch(epoch=self.config.epoch,
                                           tasks=launches[start:start + proto.LAUNCH_BATCH]))

    def kill(self, task_ids: Sequence[str], *, grace_seconds: float | None = None) -> None:
        by_agent: dict[str, list[str]] = {}
        for tid in task_ids:
            t = self._tasks.get(tid)
            if t is None:
                continue  # the composite driver routes only tasks of remote agents here
            by_agent.setdefault(t.agent_id, []).append(tid)
        for agent_id, ids in by_agent.items():
            a = self._agents.get(agent_id)
            if a is None:
                continue
            if a.state == "GONE":
                self._gone_statuses(a, ids)
            elif a.state == "REGISTERED":
                self._send(a, proto.Kill(epoch=self.config.epoch, task_ids=ids, grace_s=grace_seconds))
            # Disconnected or unreachable: the tracker retries the kill, and
            # a task that comes back unwanted is killed then.

    def reconcile(self, task_ids: Sequence[str] | None, *, others: bool = False) -> None:
        for a in self._agents.values():
            if a.state != "REGISTERED":
                continue
            if task_ids is None:
                self._send(a, proto.Reconcile(epoch=self.config.epoch, task_ids=None))
                continue
            mine = [tid for tid in task_ids if tid in a.tasks]
            if mine or others:
                self._send(a, proto.Reconcile(epoch=self.config.epoch, task_ids=mine, others=others))

    def set_known_task(self, known_task: Callable[[str], bool]) -> None:
        self._known_task = known_task

    def set_expected_tasks(self, expected_tasks: Callable[[str], list[str]]) -> None:
        """`expected_tasks(agent_id)`: the tasks the stored instances place on
        that agent; those it does not report when it subscribes are asked of
        it, and it answers each (TASK_LOST "unknown" if it never heard of it)."""
        self._expected_tasks = expected_tasks

    def expect(self, agents: dict[str, tuple[str, list[str]]]) -> None:
        """Agents the stored instances name (id -> (hostname, task ids)),
        RECOVERING until they subscribe or `reregister_timeout` passes: a
        leader that has just started must not take their silence for death."""
        now = trio.current_time()
        for agent_id, (hostname, task_ids) in agents.items():
            if agent_id in self._agents:
                continue
            a = _Agent(info=AgentInfo(id=agent_id, hostname=hostname), endpoint="", state="RECOVERING",
                       last_contact=now)
            a.tasks.update(task_ids)
            self._agents[agent_id] = a
        if agents:
            log.info("agents_recovering count=%d", len(agents))

    def owns(self, task_id: str) -> bool:
        return task_id in self._tasks

    def acknowledge(self, statuses: Sequence[TaskStatus]) -> None:
        """ACK committed updates to the agents that sent them."""
        by_agent: dict[str, list[tuple[str, str]]] = {}
        for s in statuses:
            if s.uuid is not None:
                by_agent.setdefault(s.agent_id, []).append((s.task_id, s.uuid))
        for agent_id, acks in by_agent.items():
            a = self._agents.get(agent_id)
            if a is not None and a.state == "REGISTERED":
                self._send(a, proto.Ack(epoch=self.config.epoch, acks=acks))

    # -- what the API hands in -----------------------------------------------------

    def check_secret(self, authorization: str | None) -> None:
        """Bearer token against the agent secret, in constant time."""
        secret = self.config.secret
        if secret is None:
            raise AgentRefused("UNAUTHORIZED", "This master accepts no remote agents (no --agent_secret_file)", 403)
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), secret):
            raise AgentRefused("UNAUTHORIZED", "Wrong or missing agent secret", 401)

    def subscribe(self, sub: proto.Subscribe) -> tuple[proto.Subscribed, trio.MemoryReceiveChannel[bytes]]:
        """Register (or re-register) an agent; returns SUBSCRIBED and the
        records its stream must carry.  Refusals raise `AgentRefused`."""
        cfg = self.config
        if sub.cluster_id is not None and sub.cluster_id != cfg.cluster_id:
            raise AgentRefused("CLUSTER_MISMATCH", f"Agent {sub.agent_id} belongs to cluster {sub.cluster_id}, "
                               f"this is {cfg.cluster_id}", 409)
        if sub.max_epoch > cfg.epoch:
            raise AgentRefused("STALE_EPOCH", f"Agent has seen epoch {sub.max_epoch}; this leader's is "
                               f"{cfg.epoch}", 409)
        old = self._agents.get(sub.agent_id)
        if old is not None and old.state == "GONE":
            raise AgentRefused("GONE", f"Agent {sub.agent_id} was marked gone", 403)
        info = AgentInfo(
            id=sub.agent_id, hostname=sub.hostname, region=sub.region, zone=sub.zone,
            attributes=list(sub.attributes), role=sub.role,
            total=Resources(cpus=sub.resources.cpus, mem=sub.resources.mem, disk=sub.resources.disk,
                            gpus=sub.resources.gpus, ports=ports_in(sub.port_ranges)),
            port_ranges=list(sub.port_ranges),
        )
        if old is not None:
            self._close_stream(old)
        a = _Agent(info=info, endpoint=sub.endpoint, draining=bool(old and old.draining))
        # What it runs now is what it says: forget what we had booked there.
        if old is not None:
            for tid in old.tasks:
                self._tasks.pop(tid, None)
        self._agents[sub.agent_id] = a
        send, receive = trio.open_memory_channel[bytes](STREAM_BUFFER)
        a.send, a.stream_id, a.state = send, uuid.uuid4().hex, "REGISTERED"
        a.last_contact = trio.current_time()
        a.connected_at_ms = self._time_ms()
        unknown = []
        for r in sub.tasks:
            self._book(a, r.task_id, r.resources, r.host_ports)
            if not self._known_task(r.task_id):
                unknown.append(r.task_id)
        held = len(unknown) > max(cfg.unknown_task_floor, len(sub.tasks) // 2)
        if held:
            self.refused_unknown[a.info.id] = unknown
            log.error("agent_unknown_tasks_held agent_id=%s unknown=%d tasks=%d: not killing them; "
                      "is this the right cluster state?", a.info.id, len(unknown), len(sub.tasks))
        else:
            self.refused_unknown.pop(a.info.id, None)
        now = self._time_ms()
        statuses = [
            TaskStatus(task_id=r.task_id, state=r.state, agent_id=a.info.id, healthy=r.healthy,
                       timestamp=now, message="Reported by the agent when it subscribed",
                       reason="REASON_RECONCILIATION")
            for r in sub.tasks if not (held and r.task_id in unknown)
        ]
        for s in statuses:
            self._emit(s)
        log.info("agent_subscribed agent_id=%s hostname=%s tasks=%d state=%s", a.info.id, info.hostname,
                 len(sub.tasks), "reconnected" if old is not None else "new")
        reported = {r.task_id for r in sub.tasks}
        missing = [tid for tid in self._expected_tasks(a.info.id) if tid not in reported]
        subscribed = proto.Subscribed(
            agent_id=a.info.id, cluster_id=cfg.cluster_id, epoch=cfg.epoch, stream_id=a.stream_id,
            heartbeat_interval_s=cfg.heartbeat_interval,
            disconnect_after_s=3 * cfg.heartbeat_interval,
            expected_task_ids=missing,
        )
        if missing:
            # Reconciliation on every subscribe: what we believe runs there
            # and it did not report is asked of it (it answers from what it
            # remembers of ended tasks, or "unknown").
            self._send(a, proto.Reconcile(epoch=cfg.epoch, task_ids=missing))
        return subscribed, receive

    def stream_closed(self, agent_id: str, stream_id: str) -> None:
        a = self._agents.get(agent_id)
        if a is not None and a.stream_id == stream_id and a.state == "REGISTERED":
            self._disconnect(a, "stream closed")

    def calls(self, agent_id: str, stream_id: str | None, calls: Sequence[proto.ToLeader]) -> None:
        a = self._agents.get(agent_id)
        if a is None or a.state != "REGISTERED" or stream_id != a.stream_id:
            raise AgentRefused("UNKNOWN_AGENT", "Unknown or stale stream: subscribe again", 403)
        a.last_contact = trio.current_time()
        for call in calls:
            if isinstance(call, proto.AgentHeartbeat):
                if call.max_epoch > self.config.epoch:
                    log.warning("agent_reports_newer_epoch agent_id=%s epoch=%d ours=%d",
                                agent_id, call.max_epoch, self.config.epoch)
                continue
            for s in call.updates:
                if s.agent_id != agent_id:
                    s = msgspec.structs.replace(s, agent_id=agent_id)
                self._after_status(a, s)
                self._emit(s)

    def mark_gone(self, agent_id: str) -> bool:
        """The operator says the machine is gone for good: its tasks are
        reported TASK_GONE_BY_OPERATOR and replaced at once."""
        a = self._agents.get(agent_id)
        if a is None:
            return False
        if a.send is not None:
            self._send(a, proto.Error(code="GONE", message="Marked gone by an operator"))
        self._close_stream(a)
        a.state = "GONE"
        self._gone_statuses(a, list(a.tasks))
        log.info("agent_gone agent_id=%s tasks=%d", agent_id, len(a.tasks))
        return True

    def set_draining(self, agent_id: str, draining: bool = True) -> bool:
        a = self._agents.get(agent_id)
        if a is None:
            return False
        a.draining = draining
        return True

    def agent_views(self) -> list[dict]:
        """What `GET /v2/agents` shows of each agent."""
        now = trio.current_time()
        out = []
        for a in self._agents.values():
            info = a.info
            out.append({
                "id": info.id, "hostname": info.hostname, "endpoint": a.endpoint, "state": a.state,
                "draining": a.draining, "region": info.region, "zone": info.zone, "role": info.role,
                "attributes": {x.name: x.render() for x in info.attributes},
                "resources": _resources_json(info.total),
                "used": _resources_json(a.allocated),
                "tasks": len(a.tasks),
                "lastContactSecondsAgo": round(max(0.0, now - a.last_contact), 3),
            })
        return out

    def endpoint_of(self, agent_id: str) -> str | None:
        a = self._agents.get(agent_id)
        return None if a is None else a.endpoint

    # -- inside ----------------------------------------------------------------------

    def _emit(self, status: TaskStatus) -> None:
        if self._paused:
            # Not applied (nor stored) while suspended; past the buffer the
            # agents' resending of what is not acked covers the rest.
            if len(self._held_statuses) < self._update_buffer:
                self._held_statuses.append(status)
            else:
                self.dropped += 1
            return
        try:
            self._send_updates.send_nowait(status)
        except trio.WouldBlock:
            # The pump is far behind: the agent resends what is not acked
            # (one line per burst of drops: a line each cost more than the drop).
            self.dropped += 1
            now = trio.current_time()
            if now - self._drop_logged >= 10.0:
                self._drop_logged = now
                log.warning("statuses_dropped total=%d (updates channel full; agents resend)", self.dropped)

    def _send(self, a: _Agent, message: proto.ToAgent) -> None:
        if a.send is None:
            return
        if self._paused and not isinstance(message, (proto.LeaderHeartbeat, proto.Subscribed)):
            self._held.append((a.info.id, a.stream_id, message))
            return
        try:
            a.send.send_nowait(proto.record(message))
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            # Too slow to read its stream (or gone): it subscribes again and
            # reports everything; nothing is lost by closing it.
            self._disconnect(a, "stream backlog full")

    def _take(self, a: _Agent, t: TaskLaunch) -> None:
        self._book(a, t.task_id, Resources.of(cpus=t.cpus, mem=t.mem, disk=t.disk, gpus=t.gpus,
                                               ports=len(t.host_ports)), t.host_ports)

    def _book(self, a: _Agent, task_id: str, resources: Resources, ports: Sequence[int]) -> None:
        if task_id in self._tasks:
            return
        self._tasks[task_id] = _Task(a.info.id, resources, tuple(ports))
        a.tasks.add(task_id)
        a.allocated = a.allocated + resources
        a.ports.update(ports)

    def _release(self, task_id: str) -> None:
        t = self._tasks.pop(task_id, None)
        if t is None:
            return
        a = self._agents.get(t.agent_id)
        if a is None:
            return
        a.tasks.discard(task_id)
        a.allocated = a.allocated - t.resources
        for p in t.ports:
            a.ports[p] -= 1
            if a.ports[p] <= 0:
                del a.ports[p]

    def _after_status(self, a: _Agent, s: TaskStatus) -> None:
        if s.state in _TERMINAL_STATES:
            self._release(s.task_id)

    def _gone_statuses(self, a: _Agent, task_ids: list[str]) -> None:
        now = self._time_ms()
        for tid in task_ids:
            self._release(tid)
            self._emit(TaskStatus(task_id=tid, state="TASK_GONE_BY_OPERATOR", agent_id=a.info.id,
                                  message=f"Agent {a.info.id} was marked gone by an operator",
                                  reason="REASON_AGENT_REMOVED_BY_OPERATOR", timestamp=now))

    def _close_stream(self, a: _Agent) -> None:
        if a.send is not None:
            a.send.close()
        a.send, a.stream_id = None, None

    def _disconnect(self, a: _Agent, why: str) -> None:
        self._close_stream(a)
        if a.state == "REGISTERED":
            a.state = "DISCONNECTED"
            log.info("agent_disconnected agent_id=%s reason=%s", a.info.id, why)

    async def _watch(self) -> None:
        """Heartbeats out; silence makes an agent DISCONNECTED, then UNREACHABLE."""
        cfg = self.config
        while True:
            await trio.sleep(cfg.heartbeat_interval)
            now = trio.current_time()
            for a in list(self._agents.values()):
                if self._paused:
                    # Suspended: heartbeats only, nobody is judged silent.
                    if a.state == "REGISTERED":
                        self._send(a, proto.LeaderHeartbeat(epoch=cfg.epoch, ts=self._time_ms()))
                    continue
                silent = now - a.last_contact
                if a.state == "REGISTERED":
                    if silent > 3 * cfg.heartbeat_interval:
                        self._disconnect(a, f"silent for {silent:.1f} s")
                    else:
                        self._send(a, proto.LeaderHeartbeat(epoch=cfg.epoch, ts=self._time_ms()))
                if ((a.state == "DISCONNECTED" and silent > cfg.unreachable_timeout)
                        or (a.state == "RECOVERING" and silent > cfg.reregister_timeout)):
                    a.state = "UNREACHABLE"
                    log.info("agent_unreachable agent_id=%s tasks=%d silent_s=%.1f", a.info.id, len(a.tasks), silent)
                    ts = self._time_ms()
                    for tid in list(a.tasks):
                        self._emit(TaskStatus(task_id=tid, state="TASK_UNREACHABLE", agent_id=a.info.id,
                                              message=f"Agent {a.info.id} is unreachable",
                                              reason="REASON_AGENT_DISCONNECTED", timestamp=ts))


_TERMINAL_STATES = frozenset({"TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR", "TASK_DROPPED",
                              "TASK_GONE", "TASK_GONE_BY_OPERATOR", "TASK_LOST", "TASK_UNKNOWN"})


def _resources_json(r: Resources) -> dict:
    return {"cpus": r.cpus / 1000.0, "mem": r.mem, "disk": r.disk, "gpus": r.gpus, "ports": r.ports}

