"""`marathon agent`: the agent protocol's agent side (CLUSTER.md 3.4-3.7).

The daemon runs tasks with the same `Executor` as the embedded agent
(processes, cgroups, sandboxes, health checks next to the task, re-adoption
after a restart) and connects to the leader:

1. SUBSCRIBE with every task it runs (a full re-registration, every time).
2. Read the leader's stream: LAUNCH, KILL, ACK, RECONCILE, HEARTBEAT, ERROR.
   Every command's epoch is checked against the highest seen
   (`max_epoch`, checkpointed before a higher one is acted on): a deposed
   leader's commands are refused.  Each accepted and refused command is
   logged with its epoch (`command_accepted` / `command_refused`): the
   fault tests count them.
3. Send status updates through `updates.StatusUpdateManager` (journalled
   before they are sent, resent until acknowledged) and heartbeats, on a
   second connection.

The leader is silent for three heartbeat intervals, or the stream ends:
subscribe again, with a random backoff doubling up to 15 s.  The agent never
kills a task because it lost the leader: tasks outlive the control plane.

`meta.json` in the work dir holds the agent id, the cluster it joined and
`max_epoch`: an agent never joins another cluster (which would kill its
tasks as unknown).
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec
import trio

from .._version import __version__
from ..models import agent_protocol as proto
from ..models.agent import Attribute, PortRange
from ..models.instance import TaskStatus
from ..models.resources import Resources
from . import machine
from .checkpoint import _atomic_write, load_or_create_agent_id
from .executor import Executor
from .simulated import SimulatedExecutor
from .updates import StatusUpdateManager, UpdateJournal

log = logging.getLogger("marathon.agent")

RESUBSCRIBE_MAX_SECONDS = 15.0


class AgentMeta(msgspec.Struct, kw_only=True):
    agent_id: str
    cluster_id: str | None = None
    max_epoch: int = 0


def load_meta(work_dir: Path) -> AgentMeta:
    path = work_dir / "meta.json"
    try:
        return msgspec.json.decode(path.read_bytes(), type=AgentMeta)
    except FileNotFoundError:
        meta = AgentMeta(agent_id=load_or_create_agent_id(work_dir))
        save_meta(work_dir, meta)
        return meta


def save_meta(work_dir: Path, meta: AgentMeta) -> None:
    _atomic_write(work_dir / "meta.json", msgspec.json.encode(meta))


class AgentFatal(Exception):
    """The leader will never take this agent (another cluster's, or marked gone)."""


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    masters: list[str]  # http://host:port of each master
    secret: bytes
    work_dir: Path
    hostname: str
    endpoint: str  # this agent's files endpoint, http://host:port
    resources: Resources
    port_ranges: list[PortRange]
    attributes: list[Attribute]
    region: str | None = None
    zone: str | None = None
    role: str = "*"


class AgentDaemon:
    def __init__(self, config: DaemonConfig, executor: Executor | SimulatedExecutor,
                 statuses: trio.MemoryReceiveChannel[TaskStatus],
                 answers: trio.MemoryReceiveChannel[TaskStatus]) -> None:
        self.config = config
        self.executor = executor
        self._statuses = statuses
        self._answers = answers
        self.meta = load_meta(config.work_dir)
        self.updates = StatusUpdateManager(UpdateJournal(config.work_dir / "updates"), send=self._send_updates)
        self._client: httpx.AsyncClient | None = None
        self._leader: str | None = None
        self._stream_id: str | None = None
        self._heard = 0.0  # trio time of the leader's last record
        self._boot_id = machine.boot_id()

    @property
    def agent_id(self) -> str:
        return self.meta.agent_id

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        headers = {"Authorization": f"Bearer {self.config.secret.decode()}"}
        async with httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(10.0, read=None),
                                     follow_redirects=True) as client, trio.open_nursery() as nursery:
            self._client = client
            await nursery.start(self.updates.run)
            nursery.start_soon(self._observe)
            nursery.start_soon(self._answer)
            task_status.started()
            await self._connect_forever()

    async def _observe(self) -> None:
        async for status in self._statuses:
            self.updates.observe([status])

    async def _answer(self) -> None:
        async for status in self._answers:
            self.updates.answer([status])

    async def _connect_forever(self) -> None:
        delay = 1.0
        while True:
            try:
                await self._session()
            except Exception as e:  # the agent outlives any trouble with the leader
                fatal = _leaf_of(e, AgentFatal)
                if fatal is not None:
                    raise fatal from None
                leaf = _leaf_of(e, Exception)
                if isinstance(leaf, (httpx.HTTPError, OSError, ValueError, msgspec.DecodeError)):
                    log.info("leader_connection_failed leader=%s error=%r", self._leader, leaf)
                else:
                    log.exception("leader_session_failed leader=%s", self._leader)
            if self._stream_id is not None:
                delay = 1.0  # it was subscribed: start the backoff afresh
            self._stream_id = None
            await trio.sleep(random.uniform(0, delay))
            delay = min(delay * 2, RESUBSCRIBE_MAX_SECONDS)

    def _subscribe_body(self) -> proto.Subscribe:
        cfg = self.config
        tasks = [
            proto.TaskReport(task_id=launch.task_id, state=state, healthy=healthy,
                             last_uuid=self.updates.last_uuid(launch.task_id),
                             resources=resources, host_ports=list(launch.host_ports))
            for launch, state, healthy, resources in self.executor.live_tasks()
        ]
        return proto.Subscribe(
            agent_id=self.agent_id, cluster_id=self.meta.cluster_id, boot_id=self._boot_id,
            hostname=cfg.hostname, endpoint=cfg.endpoint, resources=cfg.resources,
            port_ranges=cfg.port_ranges, attributes=cfg.attributes, region=cfg.region, zone=cfg.zone,
            role=cfg.role, version=__version__, max_epoch=self.meta.max_epoch, tasks=tasks,
        )

    async def _session(self) -> None:
        """One subscription: until the stream ends or the leader goes quiet."""
        assert self._client is not None
        last_error: Exception | None = None
        for master in self.config.masters:
            self._leader = master.rstrip("/")
            body = proto.encode(self._subscribe_body())
            try:
                async with self._client.stream("POST", self._leader + proto.SUBSCRIBE_PATH, content=body,
                                               headers={"Content-Type": "application/json"}) as r:
                    if r.status_code != 200:
                        await self._refused(r)
                        continue
                    await self._read_stream(r)
                    return
            except (httpx.HTTPError, OSError) as e:
                last_error = e
        if last_error is not None:
            raise last_error

    async def _refused(self, r: httpx.Response) -> None:
        data = await r.aread()
        try:
            (raw,) = proto.RecordReader().feed(data)
            err = proto.decode_to_agent(raw)
        except (ValueError, msgspec.DecodeError):
            log.warning("subscribe_refused leader=%s status=%d body=%r", self._leader, r.status_code, data[:200])
            return
        assert isinstance(err, proto.Error)
        log.error("subscribe_refused leader=%s code=%s message=%s", self._leader, err.code, err.message)
        if err.code in ("CLUSTER_MISMATCH", "GONE"):
            raise AgentFatal(f"{err.code}: {err.message}")

    async def _read_stream(self, r: httpx.Response) -> None:
        reader = proto.RecordReader()
        self._heard = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_leader, nursery.cancel_scope)
            async for chunk in r.aiter_raw():
                for raw in reader.feed(chunk):
                    self._heard = trio.current_time()
                    self._apply(proto.decode_to_agent(raw), nursery)
            nursery.cancel_scope.cancel()
        log.info("leader_stream_ended leader=%s", self._leader)

    async def _watch_leader(self, scope: trio.CancelScope) -> None:
        """Silence for three heartbeat intervals ends the session."""
        interval = 5.0
        while True:
            await trio.sleep(interval)
            if self._interval is not None:
                interval = self._interval
            if trio.current_time() - self._heard > 3 * interval:
                log.info("leader_silent leader=%s seconds=%.1f", self._leader, trio.current_time() - self._heard)
                scope.cancel()
                return

    _interval: float | None = None

    def _apply(self, msg: proto.ToAgent, nursery: trio.Nursery) -> None:
        if isinstance(msg, proto.Subscribed):
            self._subscribed(msg, nursery)
            return
        if isinstance(msg, proto.Error):
            log.error("leader_error code=%s message=%s", msg.code, msg.message)
            if msg.code in ("CLUSTER_MISMATCH", "GONE"):
                raise AgentFatal(f"{msg.code}: {msg.message}")
            nursery.cancel_scope.cancel()
            return
        if self._stream_id is None:
            return  # nothing but SUBSCRIBED may come first
        if msg.epoch < self.meta.max_epoch:
            # A deposed leader: never act on it.
            log.warning("command_refused type=%s epoch=%d max_epoch=%d", type(msg).__name__, msg.epoch,
                        self.meta.max_epoch)
            nursery.cancel_scope.cancel()
            return
        if msg.epoch > self.meta.max_epoch:
            self.meta.max_epoch = msg.epoch
            save_meta(self.config.work_dir, self.meta)  # before acting on it
        if isinstance(msg, proto.Launch):
            mine = [t for t in msg.tasks if t.agent_id == self.agent_id]
            log.info("command_accepted type=LAUNCH epoch=%d tasks=%d", msg.epoch, len(mine))
            self.executor.launch(mine)
        elif isinstance(msg, proto.Kill):
            log.info("command_accepted type=KILL epoch=%d tasks=%d", msg.epoch, len(msg.task_ids))
            self.executor.kill(msg.task_ids, grace_seconds=msg.grace_s)
        elif isinstance(msg, proto.Ack):
            log.debug("command_accepted type=ACK epoch=%d acks=%d", msg.epoch, len(msg.acks))
            self.updates.acknowledge(msg.acks)
        elif isinstance(msg, proto.Reconcile):
            log.info("command_accepted type=RECONCILE epoch=%d tasks=%s", msg.epoch,
                     "all" if msg.task_ids is None else len(msg.task_ids))
            self.executor.reconcile(msg.task_ids, others=msg.others)
        elif isinstance(msg, proto.LeaderHeartbeat) and msg.agent_state != "REGISTERED":
            nursery.cancel_scope.cancel()  # the leader lost us: subscribe again

    def _subscribed(self, msg: proto.Subscribed, nursery: trio.Nursery) -> None:
        if self.meta.cluster_id is None:
            self.meta.cluster_id = msg.cluster_id
        elif msg.cluster_id != self.meta.cluster_id:
            raise AgentFatal(f"the leader's cluster {msg.cluster_id} is not ours ({self.meta.cluster_id})")
        if msg.epoch < self.meta.max_epoch:
            log.warning("command_refused type=SUBSCRIBED epoch=%d max_epoch=%d", msg.epoch, self.meta.max_epoch)
            nursery.cancel_scope.cancel()
            return
        self.meta.max_epoch = max(self.meta.max_epoch, msg.epoch)
        save_meta(self.config.work_dir, self.meta)
        self._stream_id = msg.stream_id
        self._interval = msg.heartbeat_interval_s
        log.info("subscribed leader=%s agent_id=%s cluster_id=%s epoch=%d", self._leader, msg.agent_id,
                 msg.cluster_id, msg.epoch)
        self.updates.resend_all()
        nursery.start_soon(self._heartbeats, msg.heartbeat_interval_s)

    async def _heartbeats(self, interval: float) -> None:
        while True:
            await self._call([proto.AgentHeartbeat(ts=time.time_ns() // 1_000_000, max_epoch=self.meta.max_epoch)])
            await trio.sleep(interval)

    async def _send_updates(self, statuses: list[TaskStatus]) -> None:
        await self._call([proto.Update(updates=statuses)])

    async def _call(self, calls: Sequence[proto.ToLeader]) -> None:
        if self._client is None or self._stream_id is None or self._leader is None:
            raise ConnectionError("not subscribed")
        url = self._leader + proto.CALLS_PATH.format(agent_id=self.agent_id)
        r = await self._client.post(url, content=proto.encode(list(calls)), headers={
            "Content-Type": "application/json", proto.STREAM_HEADER: self._stream_id})
        if r.status_code != 202:
            raise ConnectionError(f"call refused: {r.status_code} {r.text[:200]}")


def _leaf_of(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first `kind` in `exc` or the exception groups it nests."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _leaf_of(inner, kind)
            if found is not None:
                return found
        return None
    return exc if isinstance(exc, kind) else None


def read_secret(path: str | os.PathLike[str]) -> bytes:
    data = Path(path).read_bytes().strip()
    if len(data) < 16:
        raise ValueError(f"the agent secret in {path} is too short (at least 16 bytes)")
    return data
