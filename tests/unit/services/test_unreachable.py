"""unreachableStrategy (SPEC.md 5.4) through partitioned simulated agents, in virtual time."""

from __future__ import annotations

import trio

from marathon.cluster.sim import SimConfig
from marathon.testing import InProcess


def app(strategy) -> dict:
    return {"id": "/u", "cmd": "sleep 1000", "cpus": 1, "mem": 64, "instances": 3,
            "constraints": [["hostname", "UNIQUE"]], "unreachableStrategy": strategy}


async def started(m: InProcess, strategy) -> tuple[str, str]:
    assert (await m.client.post("/v2/apps", json=app(strategy))).status_code == 201
    with trio.fail_after(300):
        await m.settle()
    victim = m.running("/u")[0]
    return victim.instance_id, victim.agent_id


def count(m: InProcess, condition: str) -> int:
    return sum(1 for i in m.instances("/u") if i.condition == condition)


async def test_replacement_after_inactive_after_and_surplus_removed_on_heal(autojump_clock):
    async with InProcess.start(sim=SimConfig(agents=5, cpus=2)) as m:
        victim, agent = await started(m, {"inactiveAfterSeconds": 30, "expungeAfterSeconds": 120})
        m.driver.partition([agent])
        with trio.fail_after(10):
            await m.wait_until(lambda: count(m, "Unreachable") == 1)
        start = trio.current_time()
        await trio.sleep(25)
        assert len(m.instances("/u")) == 3, "no replacement before inactiveAfterSeconds"
        with trio.fail_after(60):
            await m.wait_until(lambda: count(m, "Running") == 3 and count(m, "UnreachableInactive") == 1)
        assert 30 <= trio.current_time() - start <= 35
        # The partition heals before expungeAfterSeconds: the original comes back,
        # and the surplus is removed.
        m.driver.heal([agent])
        with trio.fail_after(60):
            await m.wait_until(lambda: len(m.instances("/u")) == 3 and count(m, "Running") == 3)
        await m.settle()
        assert len(m.driver.live_task_ids()) == 3


async def test_default_strategy_replaces_at_once_and_kills_the_returning_task(autojump_clock):
    async with InProcess.start(sim=SimConfig(agents=5, cpus=2)) as m:
        victim, agent = await started(m, {"inactiveAfterSeconds": 0, "expungeAfterSeconds": 0})
        m.driver.partition([agent])
        start = trio.current_time()
        with trio.fail_after(30):
            await m.wait_until(lambda: count(m, "Running") == 3 and all(i.instance_id != victim for i in m.instances("/u")))
        assert trio.current_time() - start <= 6, "replaced within Marathon's own bound"
        m.driver.heal([agent])
        with trio.fail_after(30):
            await m.wait_until(lambda: len(m.driver.live_task_ids()) == 3)
        assert len(m.instances("/u")) == 3


async def test_disabled_strategy_never_replaces(autojump_clock):
    async with InProcess.start(sim=SimConfig(agents=5, cpus=2)) as m:
        victim, agent = await started(m, "disabled")
        m.driver.partition([agent])
        await trio.sleep(3600)
        assert len(m.instances("/u")) == 3 and count(m, "Unreachable") == 1
