"""Group deployments in virtual time: dependencies across a 3-level group tree
start in dependency order (SPEC.md 3.1, 4.2)."""

from __future__ import annotations

import trio
import trio.testing

from marathon.cluster.sim import SimConfig
from marathon.testing import InProcess


def app(app_id: str, **kw) -> dict:
    return {"id": app_id, "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "instances": 2, **kw}


PROD = {
    "id": "/prod",
    "groups": [
        {"id": "db", "apps": [app("db")]},
        {
            "id": "svc",
            # A group dependency: every app below /prod/svc waits for every app below /prod/db.
            "dependencies": ["../db"],
            "apps": [app("api")],
            "groups": [{"id": "front", "apps": [app("web", dependencies=["../api"])]}],
        },
    ],
}
APPS = ("/prod/db/db", "/prod/svc/api", "/prod/svc/front/web")


async def test_dependencies_start_first_across_three_levels(autojump_clock):
    async with InProcess.start(sim=SimConfig(agents=3, start_delay=5)) as m:
        first_running: dict[str, float] = {}

        async def watch() -> None:
            while len(first_running) < len(APPS):
                for app_id in APPS:
                    if app_id not in first_running and m.running(app_id):
                        first_running[app_id] = trio.current_time()
                await trio.sleep(0.1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            r = await m.client.post("/v2/groups", json=PROD)
            assert r.status_code == 201, r.text
            with trio.fail_after(600):
                await m.settle()

        assert all(len(m.running(a)) == 2 for a in APPS)
        db, api, web = (first_running[a] for a in APPS)
        assert db < api < web
        # Each layer waits for the previous one to be running (start_delay=5).
        assert api - db > 4.5 and web - api > 4.5


async def test_group_delete_stops_everything_below_it(autojump_clock):
    async with InProcess.start(agents=3) as m:
        await m.client.post("/v2/groups", json=PROD)
        with trio.fail_after(600):
            await m.settle()
        r = await m.client.delete("/v2/groups/prod/svc")
        assert r.status_code == 200, r.text
        with trio.fail_after(600):
            await m.settle()
        assert m.instances("/prod/svc/api") == [] and m.instances("/prod/svc/front/web") == []
        assert len(m.running("/prod/db/db")) == 2
        groups = (await m.client.get("/v2/groups/prod", params={"embed": "group.groups"})).json()
        assert [g["id"] for g in groups["groups"]] == ["/prod/db"]


async def test_service_port_count_follows_every_kind_of_change(autojump_clock):
    """The groups service carries its service-port count from root to root;
    after creates, port changes, group posts and deletes it must equal a
    fresh count of the stored root, and no port is ever given twice."""
    from marathon.planning import service_ports_in_use

    async with InProcess.start(agents=3) as m:
        groups = m.services.groups

        async def check() -> None:
            await m.settle()
            root = groups.root
            assert groups._ports_of(root) == service_ports_in_use(root)
            ports = [p for a in root.transitive_apps() for p in a.service_ports]
            assert len(ports) == len(set(ports)) and 0 not in ports

        for i in range(3):
            r = await m.client.post("/v2/apps", json=app(f"/p/a{i}", instances=0, portDefinitions=[{"port": 0}, {"port": 0}]))
            assert r.status_code == 201, r.text
            await check()
        r = await m.client.put("/v2/apps/p/a1", json={"portDefinitions": [{"port": 0}]})
        assert r.status_code == 200, r.text
        await check()
        r = await m.client.post("/v2/groups", json={"id": "/q", "apps": [app("a", instances=0), app("b", instances=0)]})
        assert r.status_code == 201, r.text
        await check()
        r = await m.client.delete("/v2/apps/p/a0")
        assert r.status_code == 200, r.text
        await check()
        r = await m.client.delete("/v2/groups/q")
        assert r.status_code == 200, r.text
        await check()
        r = await m.client.post("/v2/apps", json=app("/p/a9", instances=0))
        assert r.status_code == 201, r.text
        await check()


# -- root updates in batches ---------------------------------------------------------


def _definition(app_id: str, instances: int = 1):
    from marathon.models.app import AppDefinition

    return AppDefinition(id=app_id, cmd="sleep 1000", cpus=0.1, mem=16, instances=instances)


async def _batch_of(m, changes):
    """Hold the first update's commit until every other change has queued,
    then let them all go; the outcome of each change, in order."""
    from marathon.models.group import put_app as put

    groups = m.services.groups
    repo = groups._repo
    real_commit = repo.commit
    gate = trio.Event()
    commits: list[int] = []

    async def gated_commit(ops):
        roots = sum(1 for op in ops if op.key.startswith("groups/versions/"))
        if roots:  # (deployments and instances commit through the repository too)
            commits.append(roots)
            if len(commits) == 1:
                await gate.wait()
        return await real_commit(ops)

    repo.commit = gated_commit
    outcomes: list = [None] * (len(changes) + 1)

    async def run(i, app, force=False):
        try:
            outcomes[i] = await groups.update(lambda root, v: put(root, app, version=v), force=force)
        except Exception as e:
            outcomes[i] = e

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, 0, _definition("/b/first"))
            await trio.testing.wait_all_tasks_blocked()
            for i, (app, force) in enumerate(changes, 1):
                nursery.start_soon(run, i, app, force)
                await trio.testing.wait_all_tasks_blocked()
            assert len(groups._queue) == len(changes)  # all waiting behind the first
            gate.set()
    finally:
        repo.commit = real_commit
    return outcomes, commits


async def test_changes_queued_meanwhile_are_stored_in_one_commit_in_order(autojump_clock):
    from marathon.errors import AppLocked

    async with InProcess.start(sim=SimConfig(agents=3, start_delay=5)) as m:
        stored_before = len(await m.services.groups._repo.root_versions())
        outcomes, commits = await _batch_of(m, [
            (_definition("/b/one"), False),
            (_definition("/b/two"), False),
            (_definition("/b/one", instances=2), False),  # touches a deployment of this batch
            (_definition("/b/three"), False),
        ])
        first, one, two, one_again, three = outcomes
        # The first alone, then one and two together; the change to /b/one
        # ends that batch and finds one's deployment running: 409.
        assert commits == [1, 2, 1]
        assert isinstance(one_again, AppLocked)
        plans = [first, one, two, three]
        assert all(not isinstance(p, Exception) for p in plans), plans
        versions = [p.version for p in plans]
        assert versions == sorted(set(versions))
        root = m.services.groups.root
        assert root.version == three.version
        assert {a.id for a in root.transitive_apps()} == {"/b/first", "/b/one", "/b/two", "/b/three"}
        assert root.app("/b/one").instances == 1
        # Every change has its own stored root version, as if each came alone.
        assert len(await m.services.groups._repo.root_versions()) == stored_before + 4
        await m.settle()
        assert all(len(m.running(a)) == 1 for a in ("/b/first", "/b/one", "/b/two", "/b/three"))


async def test_forced_change_behind_a_batch_cancels_what_the_batch_started(autojump_clock):
    from marathon.models.events import DeploymentFailed, DeploymentSuccess

    async with InProcess.start(sim=SimConfig(agents=3, start_delay=5)) as m:
        ended: dict[str, str] = {}
        m.services.bus.add_observer(
            lambda e: ended.setdefault(e.id, type(e).__name__) if isinstance(e, DeploymentFailed | DeploymentSuccess) else None
        )
        outcomes, commits = await _batch_of(m, [
            (_definition("/b/one"), False),
            (_definition("/b/one", instances=2), True),
        ])
        _, one, forced = outcomes
        assert not isinstance(one, Exception) and not isinstance(forced, Exception), outcomes
        assert commits == [1, 1, 1]  # the forced change waited for the next batch
        await m.settle()
        # It cancelled the deployment its batch-mate started, and its own finished.
        assert ended[one.id] == "DeploymentFailed" and ended[forced.id] == "DeploymentSuccess"
        assert len(m.running("/b/one")) == 2


async def test_a_failed_commit_fails_every_change_of_its_batch_and_stores_nothing(autojump_clock):
    from marathon.errors import StorageError

    async with InProcess.start(agents=3) as m:
        groups = m.services.groups
        repo = groups._repo
        root_before = groups.root
        real_commit = repo.commit
        gate = trio.Event()
        calls = []

        async def failing_commit(ops):
            if not any(op.key.startswith("groups/versions/") for op in ops):
                return await real_commit(ops)
            calls.append(ops)
            if len(calls) == 1:
                await gate.wait()
                return await real_commit(ops)
            raise StorageError("disk full")

        repo.commit = failing_commit
        outcomes = {}
        from marathon.models.group import put_app as put

        async def run(name):
            try:
                outcomes[name] = await groups.update(lambda root, v: put(root, _definition(f"/c/{name}", 0), version=v))
            except Exception as e:
                outcomes[name] = e

        async with trio.open_nursery() as nursery:
            for name in ("a", "b", "c"):
                nursery.start_soon(run, name)
                await trio.testing.wait_all_tasks_blocked()
            gate.set()
        repo.commit = real_commit
        assert not isinstance(outcomes["a"], Exception)
        assert isinstance(outcomes["b"], StorageError) and isinstance(outcomes["c"], StorageError)
        assert len(calls) == 2  # b and c were one commit
        assert {a.id for a in groups.root.transitive_apps()} == {a.id for a in root_before.transitive_apps()} | {"/c/a"}
        stored = await repo.load_root()
        assert stored.version == groups.root.version
        await m.settle()
