"""SPEC.md 4.4's worked examples, executed: a rolling restart through simulated
agents in virtual time, with the peak number of instances and the number of
running instances checked after every applied state change."""

from __future__ import annotations

import math

import pytest
import trio

from marathon.cluster.sim import SimConfig
from marathon.testing import InProcess

# (N, minimumHealthCapacity, maximumOverCapacity, peak total)
ROWS = [
    (10, 1.0, 1.0, 20),
    (10, 1.0, 0.0, 11),
    (10, 0.5, 0.0, 10),
    (10, 0.1, 1.0, 20),
    (10, 0.0, 0.0, 10),
    (1, 0.5, 0.0, 2),
    (3, 0.7, 0.0, 4),
]


class Watch:
    """Records, after every batch the instance tracker applies, how many
    instances exist (not terminal) and how many are Running."""

    def __init__(self, m: InProcess, app_id: str) -> None:
        self.m, self.app_id = m, app_id
        self.peak = 0
        self.min_running = 10**9
        self.samples = 0
        m.services.tracker.add_listener(self)

    def __call__(self, effects) -> None:
        insts = self.m.instances(self.app_id)
        alive = [i for i in insts if not i.is_terminal]
        running = [i for i in insts if i.condition == "Running"]
        self.peak = max(self.peak, len(alive))
        self.min_running = min(self.min_running, len(running))
        self.samples += 1


@pytest.mark.parametrize("n,min_health,max_over,peak", ROWS, ids=[f"N{r[0]}-{r[1]}-{r[2]}" for r in ROWS])
async def test_rolling_restart_respects_capacity(autojump_clock, n, min_health, max_over, peak):
    sim = SimConfig(agents=30, cpus=4, start_delay=2.0, kill_delay=1.0)
    async with InProcess.start(sim=sim) as m:
        app = {
            "id": "/svc", "cmd": "sleep 1000", "cpus": 0.5, "mem": 64, "instances": n,
            "upgradeStrategy": {"minimumHealthCapacity": min_health, "maximumOverCapacity": max_over},
        }
        assert (await m.client.post("/v2/apps", json=app)).status_code == 201
        with trio.fail_after(300):
            await m.settle()
        old = {i.instance_id for i in m.running("/svc")}
        assert len(old) == n

        watch = Watch(m, "/svc")
        r = await m.client.post("/v2/apps/svc/restart")
        assert r.status_code == 200
        with trio.fail_after(3000):
            await m.settle()

        final = m.instances("/svc")
        assert len(final) == n and all(i.condition == "Running" for i in final)
        assert not old & {i.instance_id for i in final}, "every instance was replaced"
        assert watch.samples > 1  # one sample per applied batch (status updates are applied in batches)
        assert watch.peak == peak
        assert watch.min_running >= math.ceil(n * min_health - 1e-9)


async def test_restart_waits_for_capacity_when_over_capacity_is_zero(autojump_clock):
    """maxOver 0 and minHealth 1: exactly one extra instance at a time (the +1 rule)."""
    sim = SimConfig(agents=10, cpus=4, start_delay=3.0, kill_delay=1.0)
    async with InProcess.start(sim=sim) as m:
        app = {"id": "/one", "cmd": "sleep 1", "cpus": 0.5, "mem": 64, "instances": 4,
               "upgradeStrategy": {"minimumHealthCapacity": 1.0, "maximumOverCapacity": 0.0}}
        await m.client.post("/v2/apps", json=app)
        with trio.fail_after(300):
            await m.settle()
        watch = Watch(m, "/one")
        await m.client.put("/v2/apps/one", json={"cmd": "sleep 2"})
        with trio.fail_after(3000):
            await m.settle()
        assert watch.peak == 5 and watch.min_running >= 4
