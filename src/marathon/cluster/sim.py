"""Simulated agents: the cluster driver for scale benchmarks and time-heavy tests.

`SimDriver` stands in for thousands of machines, the way Marathon's own
simulated Mesos driver did for its scale tests.  Everything Marathon does is
real; only the machines are not: each simulated agent has resources, port
ranges and attributes (hostname, region, zone), accepts launches, reports
TASK_STAGING at once and TASK_RUNNING after `start_delay` seconds (or
TASK_FAILED with probability `failure_rate`), kills tasks after
`kill_delay`, and answers reconciliation.  Delays use `trio.sleep`, so under
`trio.testing.MockClock` a simulated cluster runs in virtual time.

Statuses of a launch batch are emitted together, so a burst of 100,000
launches costs a few timers, not 100,000.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import trio

from ..agent.capabilities import LAUNCH_FAILED_REASON, PLAIN_PROCESSES, Capabilities, refusal
from ..agent.machine import subtract_ports
from ..models.agent import AgentInfo, Offer, PortRange
from ..models.instance import TaskStatus
from ..models.launch import TaskLaunch
from ..models.resources import Resources


@dataclass(frozen=True, slots=True)
class SimConfig:
    agents: int = 10
    cpus: float = 8.0
    mem: float = 32768.0
    disk: float = 100000.0
    gpus: int = 0
    port_range: tuple[int, int] = (31000, 32000)
    regions: int = 1
    zones_per_region: int = 3
    start_delay: float = 0.0
    kill_delay: float = 0.0
    failure_rate: float = 0.0
    seed: int = 0
    # `{i}` is the agent number; a fixed name (e.g. 127.0.0.1) points every
    # agent at this machine, so health checks can reach real test servers.
    hostname: str = "sim-{i}.local"
    # What a simulated agent can give a task (as a real agent: plain
    # processes); launches asking for more fail as they would there.
    capabilities: Capabilities = PLAIN_PROCESSES


# Status updates of a burst are emitted this many at a time.
SLICE = 1000


@dataclass(slots=True)
class _SimTask:
    launch: TaskLaunch
    agent: int
    state: str = "TASK_STAGING"


@dataclass(slots=True)
class _SimAgent:
    info: AgentInfo
    free: Resources
    used_ports: set[int] = field(default_factory=set)
    offer: Offer | None = None  # cached until something changes
    ips: list[str] = field(default_factory=list)  # what its tasks report as ipAddresses


def parse_sim_master(master: str) -> SimConfig:
    """`sim://2000` -> SimConfig(agents=2000); options after `?`: cpus, mem, disk,
    start_delay, kill_delay, failure_rate, seed, regions, hostname (e.g.
    `sim://10?cpus=16&hostname=127.0.0.1`)."""
    rest = master[len("sim://"):]
    count, _, query = rest.partition("?")
    opts: dict[str, object] = {"agents": int(count or 10)}
    for part in query.split("&"):
        if part:
            k, _, v = part.partition("=")
            if k == "hostname":
                opts[k] = v
            elif k in ("cpus", "mem", "disk", "start_delay", "kill_delay", "failure_rate"):
                opts[k] = float(v)
            else:
                opts[k] = int(v)
    return SimConfig(**opts)  # type: ignore[arg-type]


class SimDriver:
    def __init__(self, config: SimConfig = SimConfig(), *, time_ms: Callable[[], int] | None = None) -> None:
        self.config = config
        self._time_ms = time_ms or (lambda: int(time.time() * 1000))
        self._rng = random.Random(config.seed)
        self._capabilities = dataclasses.replace(
            config.capabilities, gpus=max(config.capabilities.gpus, config.gpus))
        total = Resources.of(cpus=config.cpus, mem=config.mem, disk=config.disk, gpus=config.gpus,
                             ports=config.port_range[1] - config.port_range[0] + 1)
        self._agents: list[_SimAgent] = []
        self._index: dict[str, int] = {}
        for i in range(config.agents):
            region = f"region-{i % config.regions}"
            zone = f"{region}-zone-{(i // config.regions) % config.zones_per_region}"
            info = AgentInfo(
                id=f"sim-agent-{i}",
                hostname=config.hostname.format(i=i),
                region=region if config.regions > 1 else None,
                zone=zone if config.regions > 1 or config.zones_per_region > 1 else None,
                total=total,
                port_ranges=[PortRange(*config.port_range)],
            )
            self._agents.append(_SimAgent(info=info, free=total, ips=[_sim_address(info.hostname, i)]))
            self._index[info.id] = i
        self._tasks: dict[str, _SimTask] = {}
        send, self.updates = trio.open_memory_channel[TaskStatus](1_000_000)
        self._send = send
        self._nursery: trio.Nursery | None = None
        self._partitioned: set[int] = set()
        self._pending_kills: dict[int, list[str]] = {}
        self.launched = 0
        self.killed = 0

    # -- ClusterDriver ------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def agents(self) -> list[AgentInfo]:
        return [a.info for a in self._agents]

    def offers(self) -> list[Offer]:
        out = []
        for i, a in enumerate(self._agents):
            if i in self._partitioned:
                continue
            if a.offer is None:
                a.offer = Offer(
                    agent_id=a.info.id,
                    hostname=a.info.hostname,
                    free=a.free,
                    total=a.info.total,
                    port_ranges=subtract_ports(a.info.port_ranges, a.used_ports),
                    region=a.info.region,
                    zone=a.info.zone,
                )
            out.append(a.offer)
        return out

    def launch(self, tasks: Sequence[TaskLaunch]) -> None:
        if not tasks:
            return
        now = self._time_ms()
        batch = []
        for t in tasks:
            idx = self._index.get(t.agent_id)
            if idx is None or t.task_id in self._tasks:
                self._emit(TaskStatus(task_id=t.task_id, state="TASK_DROPPED", agent_id=t.agent_id, message="unknown agent", timestamp=now))
                continue
            why = refusal(t, self._capabilities)
            if why is not None:
                self._emit(TaskStatus(task_id=t.task_id, state="TASK_FAILED", agent_id=t.agent_id,
                                      message=why, reason=LAUNCH_FAILED_REASON, timestamp=now))
                continue
            agent = self._agents[idx]
            agent.free = agent.free - _demand(t)
            agent.used_ports.update(t.host_ports)
            agent.offer = None
            self._tasks[t.task_id] = _SimTask(launch=t, agent=idx)
            batch.append(t.task_id)
            self._emit(TaskStatus(task_id=t.task_id, state="TASK_STAGING", agent_id=t.agent_id, timestamp=now))
        self.launched += len(batch)
        self._later(self.config.start_delay, self._start, batch)

    def kill(self, task_ids: Sequence[str], *, grace_seconds: float | None = None) -> None:
        known = []
        for tid in task_ids:
            task = self._tasks.get(tid)
            if task is not None and task.agent in self._partitioned:
                self._pending_kills.setdefault(task.agent, []).append(tid)
            elif task is not None:
                known.append(tid)
            else:
                self._emit(TaskStatus(task_id=tid, state="TASK_LOST", reason="REASON_TASK_UNKNOWN",
                                      message="Reconciliation: Task is unknown to the agent", timestamp=self._time_ms()))
        self._later(self.config.kill_delay, self._finish, known, "TASK_KILLED", "Killed")

    def reconcile(self, task_ids: Sequence[str] | None, *, others: bool = False) -> None:
        ids = list(self._tasks) if task_ids is None else list(task_ids)
        if others and task_ids is not None:
            listed = set(ids)
            ids.extend(tid for tid in self._tasks if tid not in listed)
        self._later(0, self._reconcile_now, ids)

    def _reconcile_now(self, ids: list[str]) -> None:
        now = self._time_ms()
        for tid in ids:
            task = self._tasks.get(tid)
            if task is not None and task.agent in self._partitioned:
                continue  # no answer from a partitioned agent
            if task is None:
                self._emit(TaskStatus(task_id=tid, state="TASK_LOST", reason="REASON_TASK_UNKNOWN",
                                      message="Reconciliation: Task is unknown to the agent", timestamp=now))
            else:
                self._emit(TaskStatus(task_id=tid, state=task.state, agent_id=task.launch.agent_id, timestamp=now))

    # -- simulation -----------------------------------------------------------------

    def fail(self, task_ids: Sequence[str], message: str = "Command exited with status 1") -> None:
        """Make running tasks fail now (for tests of relaunch and backoff)."""
        self._finish([t for t in task_ids if t in self._tasks], "TASK_FAILED", message)

    def partition(self, agent_ids: Sequence[str]) -> None:
        """Cut agents off: their tasks are reported TASK_UNREACHABLE and keep
        running; launches, kills and reconciliation do not reach them."""
        now = self._time_ms()
        for aid in agent_ids:
            idx = self._index[aid]
            self._partitioned.add(idx)
            for tid, task in self._tasks.items():
                if task.agent == idx:
                    self._emit(TaskStatus(task_id=tid, state="TASK_UNREACHABLE", agent_id=aid, timestamp=now,
                                          message="Agent is unreachable", reason="REASON_SLAVE_DISCONNECTED"))

    def heal(self, agent_ids: Sequence[str]) -> None:
        """Reconnect agents: their tasks report their real state again and kills
        sent meanwhile are carried out."""
        now = self._time_ms()
        for aid in agent_ids:
            idx = self._index[aid]
            self._partitioned.discard(idx)
            for tid, task in list(self._tasks.items()):
                if task.agent == idx:
                    self._emit(TaskStatus(task_id=tid, state=task.state, agent_id=aid, timestamp=now))
            pending = self._pending_kills.pop(idx, [])
            if pending:
                self.kill(pending)

    def running_task_ids(self) -> list[str]:
        return [tid for tid, t in self._tasks.items() if t.state == "TASK_RUNNING"]

    def live_task_ids(self) -> list[str]:
        return list(self._tasks)

    def _later(self, delay: float, fn: Callable, task_ids: list[str], *args: object) -> None:
        """`fn(task_ids, *args)` after `delay`; a big batch in slices, so the
        simulated agents do not hold the event loop for a whole burst."""
        if self._nursery is None or (delay <= 0 and len(task_ids) <= SLICE):
            fn(task_ids, *args)
            return

        async def after() -> None:
            if delay > 0:
                await trio.sleep(delay)
            for i in range(0, len(task_ids), SLICE):
                if i:
                    await trio.lowlevel.checkpoint()
                fn(task_ids[i:i + SLICE], *args)

        self._nursery.start_soon(after)

    def _start(self, task_ids: list[str]) -> None:
        now = self._time_ms()
        failed = []
        for tid in task_ids:
            task = self._tasks.get(tid)
            if task is None or task.state != "TASK_STAGING":
                continue
            if self.config.failure_rate and self._rng.random() < self.config.failure_rate:
                failed.append(tid)
                continue
            task.state = "TASK_RUNNING"
            self._emit(TaskStatus(task_id=tid, state="TASK_RUNNING", agent_id=task.launch.agent_id, timestamp=now,
                                  ip_addresses=self._agents[task.agent].ips))
        if failed:
            self._finish(failed, "TASK_FAILED", "Command exited with status 1")

    def _finish(self, task_ids: list[str], state: str, message: str) -> None:
        now = self._time_ms()
        for tid in task_ids:
            task = self._tasks.pop(tid, None)
            if task is None:
                continue
            agent = self._agents[task.agent]
            agent.free = agent.free + _demand(task.launch)
            agent.used_ports.difference_update(task.launch.host_ports)
            agent.offer = None
            if state == "TASK_KILLED":
                self.killed += 1
            self._emit(TaskStatus(task_id=tid, state=state, agent_id=task.launch.agent_id, message=message, timestamp=now,
                                  exit_code=1 if state == "TASK_FAILED" else None))

    def _emit(self, status: TaskStatus) -> None:
        self._send.send_nowait(status)


def _demand(t: TaskLaunch) -> Resources:
    return Resources.of(cpus=t.cpus, mem=t.mem, disk=t.disk, gpus=t.gpus, ports=len(t.host_ports))


def _sim_address(hostname: str, i: int) -> str:
    """A simulated agent's address: its hostname when that is an address
    (e.g. 127.0.0.1, so health checks reach real servers), else 10.x.y.z
    from its number.  Nothing is resolved."""
    try:
        return str(ipaddress.ip_address(hostname))
    except ValueError:
        return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
