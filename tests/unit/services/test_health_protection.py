"""Health kills under overload (RELIABILITY.md AG-6), with a checker plugged in
through the real `marathon_health_checkers` hook, in virtual time."""

from __future__ import annotations

import trio

from marathon.cluster.sim import SimConfig
from marathon.hookspecs import CheckResult, hookimpl
from marathon.testing import InProcess

APP = {"id": "/web", "cmd": "serve", "cpus": 0.1, "mem": 16, "instances": 10,
       "healthChecks": [{"protocol": "HTTP", "intervalSeconds": 10, "gracePeriodSeconds": 0, "maxConsecutiveFailures": 1}]}


class FailingChecker:
    """Plugin: HTTP checks fail for the instances named in `failing`."""

    def __init__(self) -> None:
        self.failing: set[str] = set()
        self.fail_all = False

    @hookimpl
    def marathon_health_checkers(self):
        return {"HTTP": self}

    async def check(self, target, check):
        if self.fail_all or target.instance_id in self.failing:
            return CheckResult(False, "503 Service Unavailable")
        return CheckResult(True)


async def started(m: InProcess) -> None:
    await m.client.post("/v2/apps", json=APP)
    with trio.fail_after(300):
        await m.settle()


def kills(seen) -> list:
    return [e for e in seen if e.event_type == "unhealthy_instance_kill_event"]


def suppressed(seen) -> list:
    return [e for e in seen if e.event_type == "health_check_kills_suppressed_event"]


async def test_everything_failing_at_once_kills_nothing(autojump_clock):
    checker = FailingChecker()
    async with InProcess.start(sim=SimConfig(agents=5), plugins=[("failing", checker)]) as m:
        await started(m)
        seen = []
        m.services.bus.add_observer(seen.append)
        checker.fail_all = True
        await trio.sleep(120)
        assert kills(seen) == []
        assert suppressed(seen) and suppressed(seen)[0].reason.startswith("circuit breaker")
        assert len(m.running("/web")) == 10


async def test_a_single_broken_instance_is_still_replaced(autojump_clock):
    checker = FailingChecker()
    async with InProcess.start(sim=SimConfig(agents=5), plugins=[("failing", checker)]) as m:
        await started(m)
        seen = []
        m.services.bus.add_observer(seen.append)
        broken = m.running("/web")[0]
        checker.failing = {broken.instance_id}
        with trio.fail_after(120):
            await m.wait_until(lambda: kills(seen))
        assert kills(seen)[0].instance_id == broken.instance_id
        checker.failing = set()
        with trio.fail_after(120):
            await m.wait_until(lambda: len(m.running("/web")) == 10)


async def test_kills_are_rate_limited_per_interval(autojump_clock):
    checker = FailingChecker()
    async with InProcess.start(sim=SimConfig(agents=5), plugins=[("failing", checker)]) as m:
        await started(m)
        seen = []
        m.services.bus.add_observer(seen.append)
        # Four of ten fail: under the circuit breaker's half, over the rate limit (1 per interval).
        checker.failing = {i.instance_id for i in m.running("/web")[:4]}
        await trio.sleep(25)  # two check intervals after the failures start counting
        assert 1 <= len(kills(seen)) <= 3
        assert any(e.reason in ("rate limit", "minimumHealthCapacity") for e in suppressed(seen))


class AlwaysOk:
    """Plugin adding a protocol of its own."""

    @hookimpl
    def marathon_health_checkers(self):
        return {"ALWAYS_OK": self}

    async def check(self, target, check):
        return CheckResult(True)


async def test_a_plugin_adds_a_protocol_and_unknown_protocols_are_refused(autojump_clock):
    async with InProcess.start(sim=SimConfig(agents=2), plugins=[("always-ok", AlwaysOk())]) as m:
        app = dict(APP, instances=2, healthChecks=[{"protocol": "ALWAYS_OK", "intervalSeconds": 1}])
        assert (await m.client.post("/v2/apps", json=app)).status_code == 201
        with trio.fail_after(60):
            await m.wait_until(lambda: (m.services.health.health_of(m.services.groups.app("/web"), i) for i in m.running("/web")))
            await m.settle()
        body = (await m.client.get("/v2/apps/web")).json()["app"]
        assert body["tasksHealthy"] == 2
        bad = dict(APP, id="/bad", healthChecks=[{"protocol": "GOPHER"}])
        r = await m.client.post("/v2/apps", json=bad)
        assert r.status_code == 422
        (detail,) = r.json()["details"]
        assert detail["path"] == "/healthChecks(0)/protocol" and "unknown health check protocol GOPHER" in detail["errors"][0]
