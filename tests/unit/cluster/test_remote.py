"""The leader's view of remote agents, in virtual time (no network: the
records an agent would read are taken from its stream channel)."""

from __future__ import annotations

import pytest
import trio

from marathon.cluster.remote import AgentRefused, RemoteConfig, RemoteDriver
from marathon.models import agent_protocol as proto
from marathon.models.agent import PortRange
from marathon.models.launch import TaskLaunch
from marathon.models.resources import Resources

SECRET = b"s3cret-s3cret-s3cret"


def driver(**kw) -> RemoteDriver:
    cfg = RemoteConfig(cluster_id="cluster-a", secret=SECRET, heartbeat_interval=1.0,
                       unreachable_timeout=10.0, reregister_timeout=20.0, **kw)
    return RemoteDriver(cfg, time_ms=lambda: int(trio.current_time() * 1000))


def subscribe_msg(agent_id="agent-1", tasks=(), **kw) -> proto.Subscribe:
    return proto.Subscribe(
        agent_id=agent_id, cluster_id=kw.pop("cluster_id", None), boot_id="b", hostname=f"{agent_id}.test",
        endpoint="http://x:5051", resources=Resources.of(cpus=4, mem=1024, disk=100),
        port_ranges=[PortRange(31000, 31009)], tasks=list(tasks), **kw)


def launch(task_id: str, agent_id="agent-1", ports=(31000,)) -> TaskLaunch:
    return TaskLaunch(task_id=task_id, instance_id=task_id.rsplit(".", 2)[0], app_id="/a", agent_id=agent_id,
                      shell=True, command="sleep 1", cpus=1.0, mem=128, host_ports=list(ports))


def records(channel) -> list:
    out = []
    while True:
        try:
            raw = channel.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            return out
        (body,) = proto.RecordReader().feed(raw)
        out.append(proto.decode_to_agent(body))


def statuses(d: RemoteDriver) -> list:
    out = []
    while True:
        try:
            out.append(d.updates.receive_nowait())
        except trio.WouldBlock:
            return out


def test_the_secret_is_required_and_compared_whole():
    d = driver()
    d.check_secret("Bearer " + SECRET.decode())
    for bad in (None, "", "Bearer", "Bearer " + SECRET.decode()[:-1], "Basic " + SECRET.decode()):
        with pytest.raises(AgentRefused) as e:
            d.check_secret(bad)
        assert e.value.status == 401
    no_secret = RemoteDriver(RemoteConfig(cluster_id="c", secret=None), time_ms=lambda: 0)
    with pytest.raises(AgentRefused):
        no_secret.check_secret("Bearer anything")


async def test_an_agent_of_another_cluster_or_a_newer_epoch_is_refused():
    d = driver()
    with pytest.raises(AgentRefused) as e:
        d.subscribe(subscribe_msg(cluster_id="cluster-b"))
    assert e.value.code == "CLUSTER_MISMATCH"
    with pytest.raises(AgentRefused) as e:
        d.subscribe(subscribe_msg(max_epoch=2))
    assert e.value.code == "STALE_EPOCH"
    assert d.agents() == []


async def test_offers_follow_launches_and_ends():
    d = driver()
    subscribed, stream = d.subscribe(subscribe_msg())
    assert subscribed.cluster_id == "cluster-a" and subscribed.epoch == 1
    (offer,) = d.offers()
    assert offer.free.cpus == 4000 and offer.free.ports == 10
    d.launch([launch("a.instance-1._app.1")])
    (sent,) = records(stream)
    assert isinstance(sent, proto.Launch) and sent.epoch == 1 and sent.tasks[0].task_id == "a.instance-1._app.1"
    (offer,) = d.offers()
    assert offer.free.cpus == 3000 and offer.free.mem == 1024 - 128
    assert PortRange(31001, 31009) in offer.port_ranges and all(r.begin != 31000 for r in offer.port_ranges)
    from marathon.models.instance import TaskStatus

    d.calls("agent-1", subscribed.stream_id, [proto.Update(updates=[TaskStatus(
        task_id="a.instance-1._app.1", state="TASK_FINISHED", uuid="u1")])])
    assert [s.uuid for s in statuses(d)] == ["u1"]
    (offer,) = d.offers()
    assert offer.free.cpus == 4000 and offer.free.ports == 10


async def test_calls_on_a_stale_stream_are_refused():
    d = driver()
    first, _ = d.subscribe(subscribe_msg())
    second, _ = d.subscribe(subscribe_msg())
    with pytest.raises(AgentRefused) as e:
        d.calls("agent-1", first.stream_id, [proto.AgentHeartbeat(ts=0)])
    assert e.value.status == 403
    d.calls("agent-1", second.stream_id, [proto.AgentHeartbeat(ts=0)])


async def test_silence_disconnects_then_makes_tasks_unreachable_and_a_return_restores_them(autojump_clock):
    d = driver()
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        subscribed, stream = d.subscribe(subscribe_msg())
        d.launch([launch("a.instance-1._app.1")])
        await trio.sleep(4.5)  # more than three heartbeat intervals without a call
        assert d.agent_views()[0]["state"] == "DISCONNECTED"
        assert d.offers() == [], "a disconnected agent offers nothing"
        assert statuses(d) == [], "and its tasks are untouched"
        await trio.sleep(10)
        assert d.agent_views()[0]["state"] == "UNREACHABLE"
        (lost,) = statuses(d)
        assert (lost.task_id, lost.state) == ("a.instance-1._app.1", "TASK_UNREACHABLE")
        # It comes back with the task still running: reported as running.
        report = proto.TaskReport(task_id="a.instance-1._app.1", state="TASK_RUNNING",
                                  resources=Resources.of(cpus=1, mem=128), host_ports=[31000])
        d.subscribe(subscribe_msg(tasks=[report], cluster_id="cluster-a"))
        (back,) = statuses(d)
        assert back.state == "TASK_RUNNING"
        (offer,) = d.offers()
        assert offer.free.cpus == 3000, "its task's resources are booked again"
        nursery.cancel_scope.cancel()


async def test_agents_named_by_stored_instances_recover_before_they_count_as_unreachable(autojump_clock):
    d = driver()
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        d.expect({"agent-1": ("agent-1.test", ["a.instance-1._app.1"])})
        await trio.sleep(15)
        assert d.agent_views()[0]["state"] == "RECOVERING" and statuses(d) == []
        await trio.sleep(10)
        assert [s.state for s in statuses(d)] == ["TASK_UNREACHABLE"]
        nursery.cancel_scope.cancel()


async def test_gone_agents_tasks_are_replaced_and_it_may_not_return():
    d = driver()
    d.subscribe(subscribe_msg())
    d.launch([launch("a.instance-1._app.1")])
    assert d.mark_gone("agent-1")
    (gone,) = statuses(d)
    assert gone.state == "TASK_GONE_BY_OPERATOR"
    with pytest.raises(AgentRefused) as e:
        d.subscribe(subscribe_msg())
    assert e.value.code == "GONE"


async def test_many_unknown_tasks_at_subscribe_are_held_not_killed():
    d = driver()
    d.set_known_task(lambda tid: False)
    reports = [proto.TaskReport(task_id=f"a.instance-{i}._app.1", state="TASK_RUNNING") for i in range(20)]
    d.subscribe(subscribe_msg(tasks=reports))
    assert statuses(d) == [], "twenty unknown tasks: a wrong state, not twenty strays"
    assert len(d.refused_unknown["agent-1"]) == 20
    few = driver()
    few.set_known_task(lambda tid: tid != "a.instance-0._app.1")
    few.subscribe(subscribe_msg(tasks=reports))
    assert len(statuses(few)) == 20, "one unknown task among twenty is reported (and then killed)"


async def test_tasks_expected_on_an_agent_that_it_does_not_report_are_asked_of_it():
    d = driver()
    d.set_expected_tasks(lambda agent_id: ["a.instance-1._app.1", "a.instance-2._app.1"])
    report = proto.TaskReport(task_id="a.instance-1._app.1", state="TASK_RUNNING")
    subscribed, stream = d.subscribe(subscribe_msg(tasks=[report]))
    assert subscribed.expected_task_ids == ["a.instance-2._app.1"]
    (asked,) = records(stream)
    assert isinstance(asked, proto.Reconcile) and asked.task_ids == ["a.instance-2._app.1"]


async def test_while_suspended_nothing_is_judged_or_applied_and_resume_releases_it(autojump_clock):
    """SUSPENDED (CLUSTER.md 3.3): heartbeats go on, commands and statuses
    are held, no agent is judged silent; silence counts from the resume."""
    from marathon.models.instance import TaskStatus

    d = driver()
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        subscribed, stream = d.subscribe(subscribe_msg())
        d.launch([launch("a.instance-1._app.1")])
        records(stream)
        d.pause()
        d.calls("agent-1", subscribed.stream_id, [proto.Update(updates=[TaskStatus(
            task_id="a.instance-1._app.1", state="TASK_RUNNING", uuid="u1")])])
        d.kill(["a.instance-1._app.1"])
        await trio.sleep(30)  # silent far past the unreachable timeout
        assert statuses(d) == [], "nothing applied while suspended"
        sent = records(stream)
        assert sent and all(isinstance(m, proto.LeaderHeartbeat) for m in sent), "heartbeats only"
        assert d.agent_views()[0]["state"] == "REGISTERED"
        d.resume()
        assert [s.uuid for s in statuses(d)] == ["u1"]
        assert any(isinstance(m, proto.Kill) for m in records(stream)), "the held kill goes out"
        await trio.sleep(2)
        assert d.agent_views()[0]["state"] == "REGISTERED", "silence counts from the resume"
        await trio.sleep(3)
        assert d.agent_views()[0]["state"] == "DISCONNECTED"
        nursery.cancel_scope.cancel()
