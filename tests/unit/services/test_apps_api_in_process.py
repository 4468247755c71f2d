"""App API behaviours that need a cluster but not real processes, in virtual time."""

from __future__ import annotations

import trio

from marathon.cluster.sim import SimConfig
from marathon.testing import InProcess


def app(app_id: str, **kw) -> dict:
    return {"id": app_id, "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "instances": 1, **kw}


async def test_too_many_running_deployments_is_403(autojump_clock):
    async with InProcess.start(sim=SimConfig(agents=1, cpus=0.15), max_running_deployments=1) as m:
        r = await m.client.post("/v2/apps", json=app("/a", instances=2))  # only one fits: stays running
        assert r.status_code == 201
        r = await m.client.post("/v2/apps", json=app("/b"))
        assert r.status_code == 403
        assert r.json()["message"].startswith("Max number (1) of running deployments is achieved.")
        assert m.services.groups.app("/b") is None


async def test_bulk_put_and_patch_are_one_deployment(autojump_clock):
    async with InProcess.start(agents=4) as m:
        r = await m.client.put("/v2/apps", json=[app("/x"), app("/y", instances=2)])
        assert r.status_code == 200
        first = r.json()["deploymentId"]
        (d,) = (await m.client.get("/v2/deployments")).json()
        assert d["id"] == first and sorted(d["affectedApps"]) == ["/x", "/y"]
        with trio.fail_after(60):
            await m.settle()
        r = await m.client.patch("/v2/apps", json=[{"id": "/x", "instances": 3}, {"id": "y", "instances": 1}])
        assert r.status_code == 200
        with trio.fail_after(60):
            await m.settle()
        assert (len(m.running("/x")), len(m.running("/y"))) == (3, 1)
        r = await m.client.patch("/v2/apps", json=[{"id": "/nope", "instances": 1}])
        assert r.status_code == 404
        r = await m.client.put("/v2/apps", json=[{"instances": 1}])
        assert r.status_code == 422


async def test_put_with_version_rolls_back(autojump_clock):
    async with InProcess.start(agents=4) as m:
        await m.client.post("/v2/apps", json=app("/r", cmd="sleep 1"))
        with trio.fail_after(60):
            await m.settle()
        v1 = (await m.client.get("/v2/apps/r")).json()["app"]["version"]
        await trio.sleep(1)
        await m.client.put("/v2/apps/r", json={"cmd": "sleep 2", "instances": 2})
        with trio.fail_after(60):
            await m.settle()
        r = await m.client.put("/v2/apps/r", json={"version": v1})
        assert r.status_code == 200
        with trio.fail_after(60):
            await m.settle()
        now = (await m.client.get("/v2/apps/r")).json()["app"]
        assert now["cmd"] == "sleep 1" and now["instances"] == 1 and now["version"] != v1
        versions = (await m.client.get("/v2/apps/r/versions")).json()["versions"]
        assert len(versions) == 3 and v1 in versions
        assert all(i.run_spec_version == now["version"] for i in m.running("/r"))


async def test_task_stuck_in_staging_is_killed_after_the_launch_timeout(autojump_clock):
    sim = SimConfig(agents=2, start_delay=100_000)  # never reaches RUNNING
    async with InProcess.start(sim=sim, task_launch_timeout=120_000) as m:
        await m.client.post("/v2/apps", json=app("/stuck"))
        with trio.fail_after(10):
            await m.wait_until(lambda: m.instances("/stuck") and m.instances("/stuck")[0].condition == "Staging")
        first = m.instances("/stuck")[0].task.task_id
        await trio.sleep(110)
        assert m.instances("/stuck")[0].task.task_id == first, "not killed before the timeout"
        with trio.fail_after(30):
            await m.wait_until(lambda: m.instances("/stuck")[0].task.task_id != first)
        assert m.instances("/stuck")[0].task.task_id.endswith("._app.2"), "killed and relaunched"
