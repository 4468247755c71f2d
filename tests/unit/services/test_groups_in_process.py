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
