"""The whole pipeline in virtual time: API -> plan -> deployment -> scheduler -> simulated agents."""

from __future__ import annotations

import trio
import trio.testing

from marathon.cluster.sim import SimConfig
from marathon.testing import InProcess

APP = {"id": "/svc", "cmd": "sleep 1000", "cpus": 1, "mem": 128, "instances": 3}


async def test_create_scale_delete_in_virtual_time(autojump_clock):
    async with InProcess.start(agents=4) as m:
        r = await m.client.post("/v2/apps", json=APP)
        assert r.status_code == 201
        with trio.fail_after(600):
            await m.settle()
        assert len(m.running("/svc")) == 3
        first = {i.instance_id for i in m.running("/svc")}

        r = await m.client.put("/v2/apps/svc", json={"instances": 6})
        assert r.status_code == 200
        with trio.fail_after(600):
            await m.settle()
        assert len(m.running("/svc")) == 6
        assert first <= {i.instance_id for i in m.running("/svc")}

        r = await m.client.put("/v2/apps/svc", json={"instances": 2})
        with trio.fail_after(600):
            await m.settle()
        assert len(m.instances("/svc")) == 2

        r = await m.client.delete("/v2/apps/svc")
        with trio.fail_after(600):
            await m.settle()
        assert m.instances("/svc") == [] and m.driver.live_task_ids() == []


async def test_instances_beyond_capacity_wait_for_room(autojump_clock):
    async with InProcess.start(sim=SimConfig(agents=2, cpus=2)) as m:
        await m.client.post("/v2/apps", json=dict(APP, instances=6))
        await trio.sleep(30)
        assert len(m.running("/svc")) == 4  # 2 agents x 2 cpus
        assert m.services.deployments.running(), "the deployment waits for capacity"
        await m.client.put("/v2/apps/svc", json={"instances": 4}, params={"force": "true"})
        with trio.fail_after(600):
            await m.settle()
        assert len(m.running("/svc")) == 4


async def test_crash_loop_backs_off_and_config_change_resets(autojump_clock):
    async with InProcess.start(agents=2) as m:
        await m.client.post("/v2/apps", json=dict(APP, instances=1, backoffSeconds=10, backoffFactor=2))
        with trio.fail_after(600):
            await m.settle()
        launches = []
        for _ in range(4):
            (inst,) = m.running("/svc")
            launches.append(trio.current_time())
            m.driver.fail([inst.task.task_id])
            with trio.fail_after(1000):
                await m.wait_until(lambda: any(i.task.task_id != inst.task.task_id for i in m.running("/svc")))  # noqa: B023
        gaps = [b - a for a, b in zip(launches, launches[1:], strict=False)]
        assert [round(g) for g in gaps] == [10, 20, 40]
        queue_delay = m.services.launch_queue.delay(m.services.groups.app("/svc"))
        assert queue_delay.current == 80

        await m.client.put("/v2/apps/svc", json={"cmd": "sleep 2000"})
        assert m.services.launch_queue.delay(m.services.groups.app("/svc")) is None


async def test_stalled_deployment_is_reported_after_its_deadline_and_keeps_trying(autojump_clock):
    async with InProcess.start(sim=SimConfig(agents=1, cpus=2), deployment_progress_deadline_seconds=60) as m:
        seen = []
        m.services.bus.add_observer(lambda e: seen.append(e) if e.event_type.startswith("deployment_progress") else None)
        await m.client.post("/v2/apps", json=dict(APP, id="/hog", instances=1))
        with trio.fail_after(60):
            await m.settle()
        await m.client.post("/v2/apps", json=dict(APP, instances=2))  # only one fits beside /hog
        await trio.sleep(50)
        (d,) = (await m.client.get("/v2/deployments")).json()
        assert "status" not in d and not seen
        await trio.sleep(20)
        (d,) = (await m.client.get("/v2/deployments")).json()
        assert d["status"] == "ProgressDeadlineExceeded" and len(seen) == 1
        # It is still trying: once there is room, the waiting instance is placed.
        await m.client.delete("/v2/apps/hog")
        with trio.fail_after(600):
            await m.settle()
        assert len(m.running("/svc")) == 2


async def test_tasks_report_their_agents_address_without_any_dns(autojump_clock):
    # sim-{i}.local does not resolve: the address comes from the agent's status.
    async with InProcess.start(sim=SimConfig(agents=3, cpus=1)) as m:
        await m.client.post("/v2/apps", json=dict(APP, instances=3))
        with trio.fail_after(600):
            await m.settle()
        tasks = (await m.client.get("/v2/apps/svc/tasks")).json()["tasks"]
        by_host = {t["host"]: t["ipAddresses"] for t in tasks}
        assert by_host == {
            f"sim-{i}.local": [{"ipAddress": f"10.0.0.{i}", "protocol": "IPv4"}] for i in range(3)
        }


def _count_launches(m: InProcess) -> list[int]:
    """The size of every launch call the driver gets from now on."""
    calls: list[int] = []
    launch = m.driver.launch

    def counting(tasks):
        calls.append(len(tasks))
        launch(tasks)

    m.driver.launch = counting
    return calls


async def test_a_large_pass_reaches_the_driver_in_slices_with_every_launch_once(autojump_clock):
    async with InProcess.start(sim=SimConfig(agents=20, cpus=100, mem=1_000_000)) as m:
        calls = _count_launches(m)
        r = await m.client.post("/v2/apps", json={**APP, "cpus": 0.1, "mem": 1, "instances": 1234})
        assert r.status_code == 201
        with trio.fail_after(600):
            await m.settle()
        assert len(m.running("/svc")) == 1234
        assert sum(calls) == 1234 and max(calls) <= 500 and len(calls) >= 3
        assert len(set(m.driver.live_task_ids())) == 1234


def test_instance_records_are_not_tracked_by_the_cyclic_collector():
    import gc

    from marathon.models.instance import Instance, InstanceState, Task, TaskStatus
    from marathon.models.launch import TaskLaunch

    inst = Instance(instance_id="a.instance-1", run_spec_id="/a", run_spec_version="v",
                    state=InstanceState(condition="Running", since=0),
                    task=Task(task_id="t", condition="Running"))
    launch = TaskLaunch(task_id="t", instance_id="i", app_id="/a", agent_id="x", shell=True, command="c")
    status = TaskStatus(task_id="t", state="TASK_RUNNING")
    assert not any(gc.is_tracked(o) for o in (inst, inst.state, inst.task, launch, status))


async def test_deployments_that_end_together_delete_their_records_in_one_commit(autojump_clock):
    async with InProcess.start(agents=4) as m:
        repo = m.services.deployments._repo
        real_commit = repo.commit
        gate = trio.Event()
        deletes: list[int] = []

        async def gated_commit(ops):
            n = sum(1 for op in ops if op.key.startswith("deployments/") and type(op).__name__ == "Delete")
            if n:
                deletes.append(n)
                if len(deletes) == 1:
                    await gate.wait()
            return await real_commit(ops)

        repo.commit = gated_commit
        try:
            for i in range(5):
                r = await m.client.post("/v2/apps", json={**APP, "id": f"/many/app-{i}", "instances": 1})
                assert r.status_code == 201
            with trio.fail_after(600):
                await m.wait_until(lambda: len(m.services.deployments._deletions) == 4)
            gate.set()
            with trio.fail_after(600):
                await m.settle()
        finally:
            repo.commit = real_commit
        assert deletes == [1, 4]
        assert await repo.load_deployments() == []
        assert (await m.client.get("/v2/deployments")).json() == []


async def test_launch_tokens_meter_launches_and_come_back_as_tasks_run(autojump_clock):
    # Tasks take 100 s to come up: only the refresh (every 30 s) gives tokens.
    sim = SimConfig(agents=4, cpus=100, start_delay=100)
    async with InProcess.start(sim=sim, launch_tokens=10, launch_token_refresh_interval=30_000) as m:
        r = await m.client.post("/v2/apps", json={**APP, "cpus": 0.1, "mem": 1, "instances": 35})
        assert r.status_code == 201
        await trio.sleep(1)
        assert m.driver.launched == 10 and m.services.scheduler.tokens == 0
        await trio.sleep(30)  # one refresh: ten more
        assert m.driver.launched == 20
        await trio.sleep(60)  # two more refreshes: the last 15
        assert m.driver.launched == 35
        with trio.fail_after(600):
            await m.settle()
        assert len(m.running("/svc")) == 35

    # Tasks that come up at once give their tokens back at once: no refresh needed.
    async with InProcess.start(sim=SimConfig(agents=4, cpus=100), launch_tokens=10,
                               launch_token_refresh_interval=3_600_000) as m:
        r = await m.client.post("/v2/apps", json={**APP, "cpus": 0.1, "mem": 1, "instances": 35})
        with trio.fail_after(60):
            await m.settle()
        assert len(m.running("/svc")) == 35
        assert m.services.scheduler.passes >= 4


async def test_a_reconciliation_that_changes_nothing_reaches_no_listener_and_no_store(autojump_clock):
    async with InProcess.start(agents=4) as m:
        await m.client.post("/v2/apps", json=dict(APP, instances=5))
        with trio.fail_after(600):
            await m.settle()
        seen: list = []
        m.services.tracker.add_listener(seen.extend)
        repo = m.services.tracker._repo
        real_commit = repo.commit
        written: list[int] = []

        async def counting(ops):
            written.append(len(ops))
            return await real_commit(ops)

        repo.commit = counting
        try:
            before = {i.instance_id: i for i in m.running("/svc")}
            ids = [i.task.task_id for i in before.values()]
            m.driver.reconcile(ids)
            m.driver.reconcile(None)
            with trio.fail_after(600):
                await m.wait_until(lambda: written)  # the statuses were applied
                await m.settle()
        finally:
            repo.commit = real_commit
        assert seen == [], "every effect was a Noop"
        assert sum(written) == 0
        assert {i.instance_id: i for i in m.running("/svc")} == before


async def test_a_bursts_first_pass_is_small_and_the_rest_follows_at_once(autojump_clock):
    from marathon.services.scheduler import FIRST_PASS_SIZE

    sim = SimConfig(agents=20, cpus=100, mem=1_000_000, start_delay=100)  # nothing gives tokens back
    async with InProcess.start(sim=sim, launch_tokens=10_000, launch_token_refresh_interval=3_600_000) as m:
        calls = _count_launches(m)
        r = await m.client.post("/v2/apps", json={**APP, "cpus": 0.1, "mem": 1, "instances": 1000})
        assert r.status_code == 201
        with trio.fail_after(5):  # well before any task runs or any refresh
            await m.wait_until(lambda: sum(calls) == 1000)
        assert calls[0] == FIRST_PASS_SIZE, "the first tasks start before the rest is placed"
        assert m.services.scheduler.passes == 2
        with trio.fail_after(600):
            await m.settle()
        assert len(m.running("/svc")) == 1000


async def test_a_reconciliation_round_reports_each_task_once_and_finds_unknown_ones(autojump_clock):
    from marathon.cluster.sim import _SimTask
    from marathon.models.launch import TaskLaunch

    async with InProcess.start(agents=4) as m:
        await m.client.post("/v2/apps", json=dict(APP, instances=5))
        with trio.fail_after(600):
            await m.settle()
        # A task the agents run that Marathon does not know (left by another
        # framework instance, a lost store): only the implicit half finds it.
        agent = m.driver.agents()[0]
        stray = "svc.instance-00000000-0000-1000-8000-000000000000._app.1"
        launch = TaskLaunch(task_id=stray, instance_id=stray.rsplit(".", 2)[0], app_id="/svc",
                            agent_id=agent.id, shell=True, command="sleep 1000", cpus=0.1)
        m.driver._tasks[stray] = _SimTask(launch=launch, agent=m.driver._index[agent.id], state="TASK_RUNNING")
        answered: list[str] = []
        answer = m.driver._reconcile_now
        m.driver._reconcile_now = lambda ids: (answered.extend(ids), answer(ids))[1]
        try:
            await m.services.reconciler.reconcile()
            with trio.fail_after(600):
                await m.wait_until(lambda: stray not in m.driver._tasks)  # killed: not in sync
        finally:
            m.driver._reconcile_now = answer
        known = {i.task.task_id for i in m.running("/svc")}
        assert len(known) == 5
        assert sorted(answered) == sorted([*known, stray]), "each task once, the unknown one too"


async def test_reconciliation_decommissions_the_instances_of_an_app_that_is_gone(autojump_clock):
    from marathon.models.group import remove_app

    async with InProcess.start(agents=4) as m:
        await m.client.post("/v2/apps", json=dict(APP, instances=3))
        await m.client.post("/v2/apps", json=dict(APP, id="/kept", instances=2))
        with trio.fail_after(600):
            await m.settle()
        groups = m.services.groups
        # The app vanished from the root behind the deployments' back (a
        # store restored from an older backup, say): its instances are orphans.
        groups.root = remove_app(groups.root, "/svc", version=groups.root.version)
        await m.services.reconciler.reconcile()
        with trio.fail_after(600):
            await m.wait_until(lambda: not m.instances("/svc"))
        assert len(m.running("/kept")) == 2


async def test_a_launch_decommissioned_before_it_goes_out_is_withdrawn(autojump_clock):
    """A forced deployment decommissions instances whose placement is stored
    but whose launch has not gone out yet: their kill reaches the agent
    first (it does not know the task), and the launch must then never go."""
    async with InProcess.start(agents=4) as m:
        scheduler, driver = m.services.scheduler, m.driver
        order: list[tuple[str, str]] = []
        real_launch, real_kill = driver.launch, driver.kill
        driver.launch = lambda tasks: (order.extend(("launch", t.task_id) for t in tasks), real_launch(tasks))[1]
        driver.kill = lambda ids, **kw: (order.extend(("kill", i) for i in ids), real_kill(ids, **kw))[1]
        held, release = trio.Event(), trio.Event()
        real_adjusted = scheduler._adjusted

        async def adjusted(built):
            if not held.is_set():
                held.set()
                await release.wait()  # the placements are stored; the launches wait here
            return await real_adjusted(built)

        scheduler._adjusted = adjusted
        await m.client.post("/v2/apps", json=dict(APP, instances=3))
        with trio.fail_after(60):
            await held.wait()
        r = await m.client.put("/v2/apps/svc", json={"instances": 0}, params={"force": "true"})
        assert r.status_code == 200
        with trio.fail_after(60):
            await m.wait_until(lambda: sum(1 for op, _ in order if op == "kill") == 3)
        release.set()
        await trio.sleep(1)  # virtual: the held pass goes on and ends
        with trio.fail_after(5):
            await m.settle()
        killed = {tid for op, tid in order if op == "kill"}
        assert not [tid for op, tid in order if op == "launch" and tid in killed]
        assert m.instances("/svc") == [] and driver.live_task_ids() == []


async def test_launch_delays_are_stored_for_the_next_leader(autojump_clock):
    """A new leader term goes on with a crash-looping app's delay (stored at
    most a second after it changed), not from zero."""
    from marathon.services.launch_queue import LaunchQueue

    async with InProcess.start(agents=2) as m:
        await m.client.post("/v2/apps", json=dict(APP, instances=1, backoffSeconds=10, backoffFactor=2))
        with trio.fail_after(600):
            await m.settle()
        for _ in range(2):
            (inst,) = m.running("/svc")
            m.driver.fail([inst.task.task_id])
            with trio.fail_after(1000):
                await m.wait_until(lambda: any(i.task.task_id != inst.task.task_id for i in m.running("/svc")))  # noqa: B023
        await trio.sleep(2)
        app = m.services.groups.app("/svc")
        live = m.services.launch_queue
        successor = LaunchQueue(m.services.tracker, app_lookup=m.services.groups.app, time_ms=live._time_ms,
                                repo=m.services.repo)
        await successor.load()
        assert successor.delay(app) == live.delay(app) and successor.delay(app).current == 20
