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

Finding the leader (CLUSTER.md 3.4, "Discovery"):

* `--master zk://h1:2181,h2:2181/marathon`: a `LeaderWatch` on
  `/marathon/leader` names the leader's URL and epoch.  When it names
  another leader, or the same one with a higher epoch, the session with the
  old one is dropped at once (its stream is no longer read, so nothing a
  deposed leader still sends is acted on) and the agent subscribes to the
  new one.  Each leader it names is logged (`leader_changed url=... epoch=...`).
* `--master http://m1:8080,http://m2:8080`: try them in order.  A standby
  answers 307 with the leader's URL: the agent subscribes there (the same
  body, and the same bearer token, which is why redirects are followed here
  and not by httpx, which drops `Authorization` across origins), and its
  calls go to the master that answered, never to the standby.  A 503 (no
  leader known yet), a refusal or a connection failure: the next master.
  When a subscribed stream ends, the list is tried again from the start.

The leader is silent for three heartbeat intervals, or the stream ends:
subscribe again, with a random backoff doubling up to 15 s (a new leader in
ZooKeeper cuts the wait short).  The agent never kills a task because it
lost the leader: tasks outlive the control plane.

`meta.json` in the work dir holds the agent id, the cluster it joined and
`max_epoch`: an agent never joins another cluster (which would kill its
tasks as unknown).
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx
import msgspec
import trio

from .._version import __version__
from ..models import agent_protocol as proto
from ..models.agent import Attribute, PortRange
from ..models.instance import TaskStatus
from ..models.leader import LeaderRecord
from ..models.resources import Resources
from . import machine
from .checkpoint import _atomic_write, load_or_create_agent_id
from .executor import Executor
from .simulated import SimulatedExecutor
from .updates import StatusUpdateManager, UpdateJournal

log = logging.getLogger("marathon.agent")

RESUBSCRIBE_MAX_SECONDS = 15.0
# A standby redirects to the leader, which may itself have just stepped down.
MAX_REDIRECTS = 3


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
    # http://host:port of each master, or one zk://[user:pass@]hosts/path
    # whose leader node names the leader.
    masters: list[str]
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

    @property
    def zk_url(self) -> str | None:
        """The ZooKeeper URL to find the leader in, if that is how."""
        if len(self.masters) == 1 and self.masters[0].startswith("zk://"):
            return self.masters[0]
        return None


class LeaderWatch(Protocol):
    """What the daemon needs of `storage.leader_watch.LeaderWatch` (which
    the command line hands in: kazoo stays out of the agent layer)."""

    @property
    def current(self) -> LeaderRecord | None: ...

    async def wait_change(self, than: LeaderRecord | None) -> LeaderRecord | None: ...


class AgentDaemon:
    """`open_leader_watch(url)` is an async context manager giving a
    `LeaderWatch` on a zk:// URL; needed only with `--master zk://...`."""

    def __init__(self, config: DaemonConfig, executor: Executor | SimulatedExecutor,
                 statuses: trio.MemoryReceiveChannel[TaskStatus],
                 answers: trio.MemoryReceiveChannel[TaskStatus], *,
                 open_leader_watch: Callable[[str], AbstractAsyncContextManager[LeaderWatch]] | None = None) -> None:
        self.config = config
        self._open_leader_watch = open_leader_watch
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
        self._leader_watch: LeaderWatch | None = None
        # The record the current session follows and its cancel scope (zk://).
        self._following: tuple[LeaderRecord, trio.CancelScope] | None = None
        self._moved = False  # the last session was dropped for a new leader

    @property
    def agent_id(self) -> str:
        return self.meta.agent_id

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        headers = {"Authorization": f"Bearer {self.config.secret.decode()}"}
        async with AsyncExitStack() as stack:
            # Redirects are followed by `_subscribe` (see the module docstring).
            self._client = await stack.enter_async_context(
                httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(10.0, read=None), follow_redirects=False))
            zk_url = self.config.zk_url
            if zk_url is not None:
                if self._open_leader_watch is None:
                    raise AgentFatal(f"--master {zk_url}: this agent was built without ZooKeeper support")
                self._leader_watch = await stack.enter_async_context(self._open_leader_watch(zk_url))
            nursery = await stack.enter_async_context(trio.open_nursery())
            await nursery.start(self.updates.run)
            nursery.start_soon(self._observe)
            nursery.start_soon(self._answer)
            if self._leader_watch is not None:
                nursery.start_soon(self._follow_leader, self._leader_watch)
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
            self._moved = False
            try:
                if self._leader_watch is not None:
                    await self._session_from_zk(self._leader_watch)
                else:
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
            if self._stream_id is not None or self._moved:
                delay = 1.0  # it was subscribed, or there is a new leader: start the backoff afresh
            self._stream_id = None
            await self._pause(delay)
            delay = min(delay * 2, RESUBSCRIBE_MAX_SECONDS)

    async def _pause(self, delay: float) -> None:
        """The wait before subscribing again: random in [0, delay].  A new
        leader named in ZooKeeper meanwhile cuts it short, to a random
        [0, 1 s] so that its agents do not all arrive at once."""
        with trio.move_on_after(random.uniform(0, delay)):
            watch = self._leader_watch
            if watch is None:
                await trio.sleep_forever()
            else:
                await watch.wait_change(watch.current)
                await trio.sleep(random.uniform(0, 1.0))

    async def _follow_leader(self, watch: LeaderWatch) -> None:
        """Log each leader ZooKeeper names, and drop the session with one
        that is no longer the leader: another one, or the same with a higher
        epoch (it lost and won again, and its old stream is the old term's).
        Dropped at once, not when its stream ends: a deposed leader may
        keep streaming (paused, partitioned from ZooKeeper) until it notices."""
        seen: LeaderRecord | None = None
        while True:
            seen = await watch.wait_change(seen)
            if seen is None:
                log.info("leader_unknown source=zookeeper state=%s", watch.state)
                continue
            log.info("leader_changed url=%s epoch=%d", seen.url, seen.epoch)
            if self._following is None:
                continue
            record, scope = self._following
            if seen.url != record.url or seen.epoch > record.epoch:
                log.info("leader_session_dropped leader=%s epoch=%d", record.url, record.epoch)
                self._moved = True
                scope.cancel()

    async def _session_from_zk(self, watch: LeaderWatch) -> None:
        """One subscription to the leader ZooKeeper names, until its stream
        ends or ZooKeeper names another."""
        record = watch.current
        if record is None:
            log.info("leader_unknown source=zookeeper state=%s", watch.state)
            record = await watch.wait_change(None)
            assert record is not None
        # No checkpoint between reading the record and following it:
        # `_follow_leader` compares every change with what is followed here.
        with trio.CancelScope() as scope:
            self._following = (record, scope)
            try:
                await self._subscribe(record.url)
            finally:
                self._following = None

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
        """One pass over the masters, in order: subscribe to the first that
        takes this agent, until the stream ends or the leader goes quiet.
        Once subscribed, however the stream ends, the next pass starts again
        from the first master."""
        last_error: Exception | None = None
        for master in self.config.masters:
            try:
                await self._subscribe(master)
            except (httpx.HTTPError, OSError) as e:
                if self._stream_id is not None:
                    raise  # its stream broke (a leader killed mid-stream)
                last_error = e
                continue
            if self._stream_id is not None:
                return
        if last_error is not None:
            raise last_error

    async def _subscribe(self, master: str) -> None:
        """SUBSCRIBE at `master` (following a standby's redirects to the
        leader) and read the stream until it ends.  A refusal is logged and
        returns; `_stream_id` tells whether it subscribed."""
        assert self._client is not None
        url = master.rstrip("/") + proto.SUBSCRIBE_PATH
        body = proto.encode(self._subscribe_body())
        for _hop in range(MAX_REDIRECTS + 1):
            # The calls connection goes to whoever answers, never to a standby.
            self._leader = url.removesuffix(proto.SUBSCRIBE_PATH)
            async with self._client.stream("POST", url, content=body,
                                           headers={"Content-Type": "application/json"}) as r:
                if r.status_code in (307, 308):
                    target = _redirect_target(r)
                    if target is None:
                        log.warning("leader_redirect_refused master=%s location=%r", self._leader,
                                    r.headers.get("location"))
                        return
                    log.info("leader_redirect master=%s leader=%s", self._leader,
                             target.removesuffix(proto.SUBSCRIBE_PATH))
                    url = target
                    continue
                if r.status_code == 503:
                    log.info("leader_unavailable master=%s retry_after=%s", self._leader,
                             r.headers.get("retry-after"))
                    return
                if r.status_code != 200:
                    await self._refused(r)
                    return
                await self._read_stream(r)
                return
        log.warning("leader_redirect_loop master=%s hops=%d", master, MAX_REDIRECTS)

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


def _redirect_target(r: httpx.Response) -> str | None:
    """Where a standby's 307 sends the SUBSCRIBE: the `Location`, if it is an
    http(s) URL of the same endpoint (the bearer token goes there too, so
    nothing else is followed)."""
    location = r.headers.get("location")
    if not location:
        return None
    try:
        target = r.request.url.join(location)
    except httpx.InvalidURL:
        return None
    if target.scheme not in ("http", "https") or not target.host or not target.path.endswith(proto.SUBSCRIBE_PATH):
        return None
    return str(target.copy_with(query=None, fragment=None))


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
