"""How `marathon agent` finds the leader among several masters (CLUSTER.md
3.4): a standby's 307 is followed (same body, same bearer token) and the
agent's calls go to the master that answered; a 503 or a deposed leader
sends it to the next master; with `--master zk://...` a new leader record in
ZooKeeper ends the session with the old leader at once, and the agent never
acts on a lower epoch than it has seen.

The masters are small in-process HTTP servers (`FakeMaster`) speaking the
agent protocol; the agent is the real `AgentDaemon` with a simulated
executor; ZooKeeper is the real server of the storage tests.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio
from kazoo.client import KazooClient

from marathon import httpserver
from marathon.agent.daemon import AgentDaemon, DaemonConfig, load_meta
from marathon.agent.simulated import SimulatedExecutor
from marathon.api.agents import _AgentStream
from marathon.models import agent_protocol as proto
from marathon.models.launch import TaskLaunch
from marathon.models.leader import LeaderRecord, encode_leader
from marathon.models.resources import Resources
from marathon.storage.leader_watch import LeaderWatch


def _zk_fixtures():  # the storage tests' ZooKeeper (tests/unit/storage is a package of its own)
    spec = importlib.util.spec_from_file_location(
        "_agent_zk_fixtures", Path(__file__).resolve().parents[1] / "storage" / "zk_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


zk_server = _zk_fixtures().zk_server

SECRET = b"s" * 24
BOUND = 20  # seconds: real sockets, real backoff (random, up to a few seconds here)


def task(agent_id: str, n: int) -> TaskLaunch:
    return TaskLaunch(task_id=f"a.instance-{n}._app.1", instance_id=f"a.instance-{n}", app_id="/a",
                      agent_id=agent_id, shell=True, command="sleep 1")


class Changes:
    """Something tests wait on: `await changes.until(predicate)`."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def until(self, predicate: Callable[[], object]) -> None:
        with trio.fail_after(BOUND):
            while not predicate():
                await self._event.wait()


class FakeMaster:
    """One master: the leader (SUBSCRIBED at `epoch`, then `after_subscribe`,
    then whatever `push` sends, and an ACK for every update), a standby (`redirect_to`: 307 to that
    master's same path) or a master that knows no leader (`unavailable`: 503).
    It records every request."""

    def __init__(self, name: str, changes: Changes, *, epoch: int = 1) -> None:
        self.name = name
        self.epoch = epoch
        self.changes = changes
        self.url = ""
        self.redirect_to: FakeMaster | None = None
        self.redirect_path: str | None = None  # another path than the one asked
        self.unavailable = False
        self.after_subscribe: list[proto.ToAgent] = []
        self.requests: list[tuple[str, bytes | None]] = []  # (path, Authorization)
        self.subscribes: list[proto.Subscribe] = []
        self.calls: list[tuple[str | None, proto.ToLeader]] = []  # (stream id, call)
        self.open_streams = 0
        self.closed_streams = 0
        self._stream: trio.MemorySendChannel[bytes] | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(httpserver.serve, self.app, "127.0.0.1", 0)
            self.url = f"http://127.0.0.1:{bound[0][1]}"
            task_status.started()

    def push(self, message: proto.ToAgent) -> None:
        assert self._stream is not None, f"{self.name} has no stream"
        self._stream.send_nowait(proto.record(message))

    def end_stream(self) -> None:
        """The leader goes away: its stream ends."""
        assert self._stream is not None
        self._stream.close()

    def updates(self) -> list[str]:
        return [f"{s.task_id}:{s.state}" for _, call in self.calls if isinstance(call, proto.Update)
                for s in call.updates]

    async def app(self, scope: dict, receive: Callable, send: Callable) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = dict(scope["headers"])
        self.requests.append((scope["path"], headers.get(b"authorization")))
        self.changes.notify()
        if self.redirect_to is not None:
            location = (self.redirect_to.url + (self.redirect_path or scope["path"])).encode()
            await _answer(send, 307, [(b"location", location), (b"x-marathon-leader", location)])
        elif self.unavailable:
            await _answer(send, 503, [(b"retry-after", b"1")])
        elif scope["path"] == proto.SUBSCRIBE_PATH:
            await self._subscribe(proto.decode_subscribe(body), receive, send)
        else:
            stream_id = headers.get(proto.STREAM_HEADER.lower().encode(), b"").decode() or None
            calls = proto.decode_calls(body)
            self.calls.extend((stream_id, call) for call in calls)
            self.changes.notify()
            await _answer(send, 202, [])
            acks = [(s.task_id, s.uuid) for call in calls if isinstance(call, proto.Update)
                    for s in call.updates if s.uuid is not None]
            if acks and self._stream is not None:
                with contextlib.suppress(trio.ClosedResourceError):  # the stream ended meanwhile
                    self._stream.send_nowait(proto.record(proto.Ack(epoch=self.epoch, acks=acks)))  # "committed"

    async def _subscribe(self, subscribe: proto.Subscribe, receive: Callable, send: Callable) -> None:
        self.subscribes.append(subscribe)
        stream_id = f"{self.name}-{len(self.subscribes)}"
        outbox, inbox = trio.open_memory_channel[bytes](100)
        self._stream = outbox
        first = proto.Subscribed(agent_id=subscribe.agent_id, cluster_id="cluster-1", epoch=self.epoch,
                                 stream_id=stream_id, heartbeat_interval_s=30.0, disconnect_after_s=90.0)
        self.open_streams += 1
        self.changes.notify()

        def closed() -> None:
            self.open_streams -= 1
            self.closed_streams += 1
            self.changes.notify()

        # The real leader's stream (api/agents.py), fed by this fake.
        stream = _AgentStream(b"".join(proto.record(m) for m in [first, *self.after_subscribe]), inbox,
                              stream_id, closed)
        await stream(None, receive, send)


async def _answer(send: Callable, status: int, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def changes() -> Changes:
    return Changes()


@pytest.fixture
def masters(nursery, changes) -> Callable:
    """`await masters(name, epoch=...)`: a running `FakeMaster`."""

    async def start(name: str, *, epoch: int = 1) -> FakeMaster:
        master = FakeMaster(name, changes, epoch=epoch)
        await nursery.start(master.run)
        return master

    return start


@pytest.fixture
def agent(nursery, tmp_path) -> Callable:
    """`await agent(masters)`: a running daemon (and its simulated executor)."""

    async def start(masters: list[str]) -> tuple[AgentDaemon, SimulatedExecutor]:
        meta = load_meta(tmp_path)
        send, statuses = trio.open_memory_channel(1000)
        answers_send, answers = trio.open_memory_channel(1000)
        executor = SimulatedExecutor(tmp_path, agent_id=meta.agent_id, send=send, answers=answers_send)
        daemon = AgentDaemon(DaemonConfig(masters=masters, secret=SECRET, work_dir=tmp_path, hostname="h",
                                          endpoint="http://h:5051", resources=Resources(cpus=4, mem=4096),
                                          port_ranges=[], attributes=[]),
                             executor, statuses, answers, open_leader_watch=LeaderWatch.open)
        await nursery.start(executor.run)
        await nursery.start(daemon.run)
        return daemon, executor

    return start


def _max_epoch(work_dir: Path) -> int:
    return json.loads((work_dir / "meta.json").read_text())["max_epoch"]


# -- --master http://standby,http://leader ------------------------------------------


async def test_a_standby_redirects_the_agent_and_its_calls_go_to_the_leader(masters, agent, changes, caplog):
    caplog.set_level("INFO", logger="marathon.agent")
    no_leader, standby, leader = await masters("m0"), await masters("m1"), await masters("m2")
    no_leader.unavailable = True
    standby.redirect_to = leader
    daemon, executor = await agent([no_leader.url, standby.url])  # the leader is not in the list

    await changes.until(lambda: leader.open_streams == 1 and leader.calls)
    assert [path for path, _ in no_leader.requests] == [proto.SUBSCRIBE_PATH], "503: the next master"
    assert [path for path, _ in standby.requests] == [proto.SUBSCRIBE_PATH], "only the SUBSCRIBE, redirected"
    assert leader.subscribes[0].agent_id == daemon.agent_id, "the same body, sent again to the leader"
    assert {auth for _, auth in leader.requests} == {b"Bearer " + SECRET}, "the token follows the redirect"
    assert leader.calls[0] == ("m2-1", leader.calls[0][1])
    assert isinstance(leader.calls[0][1], proto.AgentHeartbeat)
    assert f"leader_redirect master={standby.url} leader={leader.url}" in caplog.text

    leader.push(proto.Launch(epoch=1, tasks=[task(daemon.agent_id, 1)]))
    await changes.until(lambda: "a.instance-1._app.1:TASK_RUNNING" in leader.updates())
    assert [path for path, _ in standby.requests] == [proto.SUBSCRIBE_PATH], "no call ever went to the standby"
    assert {stream for stream, _ in leader.calls} == {"m2-1"}

    # The stream ends: the list again from the start (503, 307, the leader).
    leader.end_stream()
    await changes.until(lambda: len(leader.subscribes) == 2 and leader.open_streams == 1)
    assert len(no_leader.requests) == 2 and len(standby.requests) == 2
    assert [t.task_id for t in leader.subscribes[1].tasks] == ["a.instance-1._app.1"]


async def test_a_deposed_leader_first_in_the_list_is_refused_and_the_next_master_taken(
        masters, agent, changes, tmp_path, caplog):
    caplog.set_level("INFO", logger="marathon.agent")
    old, new = await masters("old", epoch=1), await masters("new", epoch=2)
    # The old leader was deposed while partitioned and still answers as a leader.
    old.after_subscribe = [proto.Launch(epoch=1, tasks=[task(load_meta(tmp_path).agent_id, 9)])]
    old.unavailable = True  # not up yet when the agent starts
    daemon, executor = await agent([old.url, new.url])
    await changes.until(lambda: new.open_streams == 1 and new.calls)
    assert _max_epoch(tmp_path) == 2

    old.unavailable = False
    new.end_stream()  # the new leader restarts: the list again from the start
    await changes.until(lambda: old.closed_streams == 1 and len(new.subscribes) == 2 and new.open_streams == 1)
    assert "command_refused type=SUBSCRIBED epoch=1 max_epoch=2" in caplog.text
    assert executor.live_tasks() == [], "nothing the deposed leader sent was acted on"
    assert "command_accepted type=LAUNCH epoch=1" not in caplog.text
    assert _max_epoch(tmp_path) == 2


async def test_a_redirect_elsewhere_than_the_agent_endpoint_is_not_followed(masters, agent, changes, caplog):
    caplog.set_level("INFO", logger="marathon.agent")
    standby, other, leader = await masters("m1"), await masters("m2"), await masters("m3")
    standby.redirect_to, standby.redirect_path = other, "/v2/apps"
    await agent([standby.url, leader.url])
    await changes.until(lambda: leader.open_streams == 1)
    assert other.requests == [], "the secret goes nowhere but an agent endpoint"
    assert f"leader_redirect_refused master={standby.url}" in caplog.text


# -- --master zk://.../marathon --------------------------------------------------------


@pytest.fixture
async def zk(zk_server: str) -> AsyncIterator[tuple[KazooClient, str]]:
    """A kazoo client (the leaders' side, writing the leader node) and a fresh root."""
    client = KazooClient(hosts=zk_server, timeout=5.0)
    await trio.to_thread.run_sync(functools.partial(client.start, timeout=10))
    yield client, f"/agent-tests/{uuid.uuid4().hex}"
    await trio.to_thread.run_sync(client.stop)
    client.close()


async def test_a_new_leader_in_zookeeper_ends_the_session_and_the_agent_follows(
        zk_server, zk, masters, agent, changes, tmp_path, caplog):
    caplog.set_level("INFO", logger="marathon.agent")
    client, root = zk
    path = f"{root}/leader"

    def elect(master: FakeMaster, epoch: int) -> Callable[[], object]:
        data = encode_leader(LeaderRecord(epoch=epoch, id=master.url[len("http://"):], url=master.url))
        if client.exists(path):
            return functools.partial(client.set, path, data)
        return functools.partial(client.create, path, data, makepath=True)

    first, second = await masters("first", epoch=1), await masters("second", epoch=2)
    daemon, executor = await agent([f"zk://{zk_server}{root}"])
    # No leader yet: the agent waits for one.
    await trio.to_thread.run_sync(elect(first, 1))
    await changes.until(lambda: first.open_streams == 1 and first.calls)
    assert f"leader_changed url={first.url} epoch=1" in caplog.text
    first.push(proto.Launch(epoch=1, tasks=[task(daemon.agent_id, 1)]))
    await changes.until(lambda: "a.instance-1._app.1:TASK_RUNNING" in first.updates())

    # A new leader: the old stream is dropped by the agent, not ended by the old leader.
    await trio.to_thread.run_sync(elect(second, 2))
    await changes.until(lambda: first.closed_streams == 1 and second.open_streams == 1 and second.calls)
    assert f"leader_changed url={second.url} epoch=2" in caplog.text
    assert [t.task_id for t in second.subscribes[0].tasks] == ["a.instance-1._app.1"]
    assert second.subscribes[0].max_epoch == 1
    assert _max_epoch(tmp_path) == 2
    assert {stream for stream, _ in second.calls} == {"second-1"}

    # A stale record names the old leader again (a ZooKeeper restored from a
    # backup): the agent goes there, and refuses what it says.
    first.after_subscribe = [proto.Launch(epoch=1, tasks=[task(daemon.agent_id, 2)])]
    await trio.to_thread.run_sync(elect(first, 1))
    await changes.until(lambda: second.closed_streams == 1 and first.closed_streams >= 2)
    await changes.until(lambda: "command_refused type=SUBSCRIBED epoch=1 max_epoch=2" in caplog.text)
    assert [t[0].task_id for t in executor.live_tasks()] == ["a.instance-1._app.1"]
    assert "command_accepted type=LAUNCH epoch=1 tasks=1" in caplog.text  # only the first one
    assert caplog.text.count("command_accepted type=LAUNCH") == 1

    # The same leader with a higher epoch (it lost and won again) is a new term.
    second.epoch = 3
    await trio.to_thread.run_sync(elect(second, 3))
    await changes.until(lambda: len(second.subscribes) == 2 and second.open_streams == 1)
    await trio.to_thread.run_sync(elect(second, 4))
    await changes.until(lambda: second.closed_streams == 2 and len(second.subscribes) == 3)
    assert "leader_session_dropped" in caplog.text
