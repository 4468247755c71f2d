"""Marathon-level health checks (HTTP, HTTPS, TCP, plugin protocols): SPEC.md 6.2-6.3.

One actor per (app, app version, health check) probes every Running instance
of that version each `intervalSeconds`, all probes sharing one bound on
concurrency (`--max_concurrent_marathon_health_checks`).  Results follow
Marathon's rules exactly: failures before the first success inside the grace
period are ignored; the kill is decided on the failure that arrives when the
already-recorded count has reached `maxConsecutiveFailures` (so with 3, the
4th failure kills); `maxConsecutiveFailures: 0` never kills.

An overloaded leader must not kill healthy services en masse (RELIABILITY.md
AG-6), so kill decisions are made per round, after every probe of the round:

* circuit breaker: when at least half of an app's probed instances (two or
  more) fail in one round, no kills happen for that app in that round and a
  `health_check_kills_suppressed_event` says so;
* rate limit: at most max(1, 10% of the app's instances) health kills per
  check interval;
* capacity: instances killed for health and not yet running again may not
  exceed the app's upgrade slack `N - ceil(N * minimumHealthCapacity)`, with
  one always allowed so a broken single instance can still be replaced.

Agent-run (Mesos-level) checks arrive as the `healthy` flag of task statuses;
this service only reports them (`health_of`, `results_of`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio
from msgspec import UNSET, to_builtins

from ..hookspecs import CheckResult, CheckTarget, HealthChecker
from ..models.app import MESOS_HEALTH_PROTOCOLS, AppDefinition, HealthCheck
from ..models.events import (
    AddHealthCheckEvent,
    FailedHealthCheckEvent,
    HealthKillsSuppressedEvent,
    HealthStatusChangedEvent,
    InstanceHealthChangedEvent,
    RemoveHealthCheckEvent,
    UnhealthyInstanceKillEvent,
)
from ..models.group import Group
from ..models.instance import Condition, Instance
from ..models.timestamp import format_ms
from ..storage.repository import TaskFailure
from ..task_builder import port_assignments
from .events import EventBus
from .instances import InstanceTracker

log = logging.getLogger("marathon.health")

AGENT_PROTOCOLS = frozenset({"COMMAND"}) | MESOS_HEALTH_PROTOCOLS
SUPERVISE_SECONDS = 1.0
# Share of the check interval over which one round's probes are started.
SPREAD_FRACTION = 0.8


def marathon_checks(app: AppDefinition) -> list[tuple[int, HealthCheck]]:
    """The app's checks Marathon itself runs, with their index in `healthChecks`."""
    return [(i, h) for i, h in enumerate(app.health_checks) if h.protocol not in AGENT_PROTOCOLS]


def agent_checked(app: AppDefinition) -> bool:
    return any(h.protocol in AGENT_PROTOCOLS for h in app.health_checks)


@dataclass(slots=True)
class HealthRecord:
    first_success: int | None = None
    last_success: int | None = None
    last_failure: int | None = None
    last_failure_cause: str | None = None
    consecutive_failures: int = 0

    @property
    def alive(self) -> bool:
        return self.last_success is not None and (self.last_failure is None or self.last_success > self.last_failure)


@dataclass(slots=True)
class _Actor:
    app_id: str
    version: str
    index: int
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


class HealthService:
    def __init__(
        self,
        tracker: InstanceTracker,
        bus: EventBus,
        *,
        root: Callable[[], Group],
        app_at: Callable[[str, str], Awaitable[AppDefinition | None]],
        checkers: dict[str, HealthChecker],
        time_ms: Callable[[], int],
        max_concurrent: int = 256,
    ) -> None:
        self._tracker = tracker
        self._bus = bus
        self._root = root
        self._app_at = app_at
        self.checkers = checkers
        self._time_ms = time_ms
        self._limiter = trio.CapacityLimiter(max_concurrent)
        self._records: dict[tuple[str, int], HealthRecord] = {}  # (task id, check index)
        self._aggregate: dict[str, bool | None] = {}  # task id -> last published instance health
        self._actors: dict[tuple[str, str, int], _Actor] = {}
        self._definitions: dict[tuple[str, str], AppDefinition | None] = {}
        self._health_killed: dict[str, set[str]] = {}  # app id -> instance ids killed for health
        self._kill_window: dict[str, tuple[float, int]] = {}  # app id -> (window start, kills)
        self._nursery: trio.Nursery | None = None
        self.suppressed = 0

    # -- lifecycle ---------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                await self._supervise()
                await trio.sleep(SUPERVISE_SECONDS)

    async def _supervise(self) -> None:
        """Start actors for every (app, version, check) with running instances; stop the rest."""
        wanted: dict[tuple[str, str, int], AppDefinition] = {}
        live_tasks: set[str] = set()
        for app in self._root().transitive_apps():
            if not app.health_checks and not any(k[0] == app.id for k in self._actors):
                continue  # nothing to check (and no actor of an older version to stop)
            instances = self._tracker.of_app(app.id)
            live_tasks.update(i.task.task_id for i in instances if i.task is not None)
            versions = {app.version} | {i.run_spec_version for i in instances if i.condition == Condition.RUNNING}
            for version in versions:
                definition = await self._definition(app, version)  # type: ignore[arg-type]
                if definition is None:
                    continue
                for index, _ in marathon_checks(definition):
                    wanted[(app.id, version, index)] = definition  # type: ignore[index]
        for key in list(self._actors):
            if key not in wanted:
                self._actors.pop(key).scope.cancel()
                if not any(k[0] == key[0] for k in self._actors) and not any(k[0] == key[0] for k in wanted):
                    self._bus.publish(RemoveHealthCheckEvent(timestamp=self._bus.now(), app_id=key[0]))
        assert self._nursery is not None
        for key, definition in wanted.items():
            if key not in self._actors:
                actor = self._actors[key] = _Actor(*key)
                self._nursery.start_soon(self._run_actor, actor, definition)
        for key in [k for k in self._records if k[0] not in live_tasks]:
            del self._records[key]
        for task_id in [t for t in self._aggregate if t not in live_tasks]:
            del self._aggregate[task_id]
        for app_id, killed in self._health_killed.items():
            killed.intersection_update(
                i.instance_id for i in self._tracker.of_app(app_id) if i.condition != Condition.RUNNING
            )

    async def _definition(self, app: AppDefinition, version: str) -> AppDefinition | None:
        """The definition instances of `version` run (the current one unless config changed since)."""
        info = app.version_info
        config_since = info.last_config_change_at if info is not UNSET else app.version  # type: ignore[union-attr]
        if version >= config_since:  # type: ignore[operator]
            return app
        key = (app.id, version)
        if key not in self._definitions:
            self._definitions[key] = await self._app_at(app.id, version)
        return self._definitions[key]

    # -- probing ---------------------------------------------------------------

    async def _run_actor(self, actor: _Actor, app: AppDefinition) -> None:
        check = app.health_checks[actor.index]
        with actor.scope:
            self._bus.publish(
                AddHealthCheckEvent(timestamp=self._bus.now(), app_id=app.id, version=actor.version, health_check=to_builtins(check))
            )
            await trio.sleep(min(check.interval_seconds, 5))
            while True:
                start = trio.current_time()
                instances = [
                    i for i in self._tracker.of_app(app.id)
                    if i.condition == Condition.RUNNING and i.run_spec_version == actor.version and i.task is not None
                ]
                results: list[tuple[Instance, CheckResult]] = []
                # Probes are spread over most of the interval rather than all
                # started at once: a thousand connections in the same instant
                # would stall everything else the server does every second.
                slot = check.interval_seconds * SPREAD_FRACTION / max(1, len(instances))
                async with trio.open_nursery() as nursery:
                    for i, inst in enumerate(instances):
                        if slot > 0 and i:
                            await trio.sleep_until(start + i * slot)
                        nursery.start_soon(self._probe, app, actor.index, check, inst, results)
                await self._round(app, actor.index, check, results)
                await trio.sleep_until(start + max(check.interval_seconds, 0.1))

    async def _probe(
        self, app: AppDefinition, index: int, check: HealthCheck, inst: Instance, out: list[tuple[Instance, CheckResult]]
    ) -> None:
        checker = self.checkers.get(check.protocol)
        if checker is None:
            out.append((inst, CheckResult(False, f"no checker for protocol {check.protocol}")))
            return
        target = CheckTarget(
            app_id=app.id,
            instance_id=inst.instance_id,
            task_id=inst.task.task_id,  # type: ignore[union-attr]
            host=inst.hostname or "127.0.0.1",
            port=self._port(app, check, inst),
        )
        async with self._limiter:
            try:
                # Checkers bound their own time; this is only a safety net.
                with trio.move_on_after(check.timeout_seconds * 2 + 1) as scope:
                    result = await checker.check(target, check)
                if scope.cancelled_caught:
                    result = CheckResult(False, f"timed out after {check.timeout_seconds} seconds")
            except Exception as exc:
                result = CheckResult(False, f"{type(exc).__name__}: {exc}")
        out.append((inst, result))

    @staticmethod
    def _port(app: AppDefinition, check: HealthCheck, inst: Instance) -> int | None:
        if check.port is not UNSET:
            return check.port  # type: ignore[return-value]
        ports = port_assignments(app, inst.task.host_ports if inst.task else [])
        index = check.port_index if check.port_index is not UNSET else 0
        return ports[index].effective if index < len(ports) else None  # type: ignore[operator,index]

    # -- results and kills (SPEC.md 6.3) ---------------------------------------------

    async def _round(self, app: AppDefinition, index: int, check: HealthCheck, results: list[tuple[Instance, CheckResult]]) -> None:
        now = self._time_ms()
        doomed: list[Instance] = []
        failed = 0
        for probed, result in results:
            inst = self._tracker.get(probed.instance_id)
            if inst is None or inst.task is None or inst.task.task_id != probed.task.task_id:  # type: ignore[union-attr]
                continue  # replaced while we were probing
            if result.healthy is False:
                failed += 1
            if self._record(app, index, check, inst, result, now):
                doomed.append(inst)
        if doomed:
            await self._kill(app, index, check, doomed, probed=len(results), failed=failed)
        for probed, _ in results:
            inst = self._tracker.get(probed.instance_id)
            if inst is not None and inst.task is not None:
                self._publish_aggregate(app, inst)

    def _record(self, app: AppDefinition, index: int, check: HealthCheck, inst: Instance, result: CheckResult, now: int) -> bool:
        """Apply one result; True if the instance has earned a kill."""
        if result.healthy is None:
            return False
        key = (inst.task.task_id, index)  # type: ignore[union-attr]
        rec = self._records.get(key) or HealthRecord()
        was_alive = rec.alive
        earned_kill = False
        if result.healthy:
            if rec.first_success is None:
                rec.first_success = now
            rec.last_success = now
            rec.consecutive_failures = 0
        else:
            if inst.condition != Condition.RUNNING:
                return False
            if rec.first_success is None and now < inst.state.since + check.grace_period_seconds * 1000:
                return False  # inside the grace period, before the first success: not counted
            self._bus.publish(
                FailedHealthCheckEvent(
                    timestamp=format_ms(now), app_id=app.id, task_id=inst.instance_id, health_check=to_builtins(check)
                )
            )
            # The kill is decided on the count *before* this failure.
            if 0 < check.max_consecutive_failures <= rec.consecutive_failures:
                earned_kill = inst.condition != Condition.UNREACHABLE
            rec.consecutive_failures += 1
            rec.last_failure = now
            rec.last_failure_cause = result.cause
        self._records[key] = rec
        if rec.alive != was_alive:
            self._bus.publish(
                HealthStatusChangedEvent(
                    timestamp=format_ms(now), app_id=app.id, instance_id=inst.instance_id, version=inst.run_spec_version, alive=rec.alive
                )
            )
        return earned_kill

    async def _kill(self, app: AppDefinition, index: int, check: HealthCheck, doomed: list[Instance], *, probed: int, failed: int) -> None:
        if probed >= 2 and failed * 2 >= probed:
            self.suppressed += len(doomed)
            log.warning(
                "health kills suppressed app=%s failed=%d probed=%d (more than half failing at once)",
                app.id, failed, probed,
            )
            self._bus.publish(
                HealthKillsSuppressedEvent(
                    timestamp=self._bus.now(), app_id=app.id, reason="circuit breaker: at least half of the instances failed at once",
                    failed=failed, probed=probed,
                )
            )
            return
        now_t = trio.current_time()
        window_start, kills = self._kill_window.get(app.id, (now_t, 0))
        if now_t - window_start >= check.interval_seconds:
            window_start, kills = now_t, 0
        rate_limit = max(1, app.instances // 10)
        strategy = app.upgrade_strategy
        min_health = strategy.minimum_health_capacity if strategy is not UNSET else 1.0  # type: ignore[union-attr]
        slack = max(1, app.instances - math.ceil(round(app.instances * min_health, 9)))
        in_flight = self._health_killed.setdefault(app.id, set())
        for inst in doomed:
            if kills >= rate_limit or len(in_flight) >= slack:
                self.suppressed += 1
                self._bus.publish(
                    HealthKillsSuppressedEvent(
                        timestamp=self._bus.now(), app_id=app.id,
                        reason="rate limit" if kills >= rate_limit else "minimumHealthCapacity",
                        failed=failed, probed=probed,
                    )
                )
                continue
            kills += 1
            in_flight.add(inst.instance_id)
            task = inst.task
            log.info("killing unhealthy task app=%s task_id=%s", app.id, task.task_id if task else "")
            self._bus.publish(
                UnhealthyInstanceKillEvent(
                    timestamp=self._bus.now(), app_id=app.id, task_id=task.task_id if task else "",
                    instance_id=inst.instance_id, version=inst.run_spec_version,
                    reason="FailedHealthChecks", host=inst.hostname or "", slave_id=inst.agent_id,
                )
            )
            self._tracker.kill_tasks([inst])
            if task is not None:
                rec = self._records.get((task.task_id, index))
                cause = rec.last_failure_cause if rec and rec.last_failure_cause else "failed health check"
                await self._tracker.record_task_failure(
                    TaskFailure(
                        app_id=app.id, task_id=task.task_id, state="TASK_KILLED",
                        message=f"Task was killed since health check failed. Reason: {cause}",
                        host=inst.hostname or "", timestamp=self._bus.now(),
                        version=inst.run_spec_version, slave_id=inst.agent_id,
                    )
                )
        self._kill_window[app.id] = (window_start, kills)

    # -- views -------------------------------------------------------------------

    def _publish_aggregate(self, app: AppDefinition, inst: Instance) -> None:
        health = self.marathon_health(app, inst)
        task_id = inst.task.task_id  # type: ignore[union-attr]
        if self._aggregate.get(task_id) == health:
            return  # unchanged (and "no result yet" is not news)
        self._aggregate[task_id] = health
        self._bus.publish(
            InstanceHealthChangedEvent(
                timestamp=self._bus.now(), instance_id=inst.instance_id, run_spec_id=app.id,
                healthy=health, run_spec_version=inst.run_spec_version,
            )
        )
        self._tracker.notify(app.id)

    def marathon_health(self, app: AppDefinition, inst: Instance) -> bool | None:
        """True when every Marathon-level check has a result and all are alive;
        None while any result is missing; False otherwise (SPEC.md 4.10)."""
        if inst.task is None:
            return None
        records = [self._records.get((inst.task.task_id, i)) for i, _ in marathon_checks(app)]
        if any(r is None or (r.last_success is None and r.last_failure is None) for r in records):
            return None
        return all(r.alive for r in records)  # type: ignore[union-attr]

    def health_of(self, app: AppDefinition, inst: Instance) -> bool | None:
        """The instance's health as users see it (counts, deployments)."""
        if not app.health_checks:
            return None
        if marathon_checks(app):
            return self.marathon_health(app, inst)
        return inst.task.healthy if inst.task is not None and inst.condition == Condition.RUNNING else None

    def results_of(self, app: AppDefinition, inst: Instance) -> list[dict]:
        """`healthCheckResults` of a task."""
        if inst.task is None:
            return []
        out = []
        for index, check in enumerate(app.health_checks):
            if check.protocol in AGENT_PROTOCOLS:
                if inst.task.healthy is None:
                    continue
                out.append({"alive": inst.task.healthy, "consecutiveFailures": 0, "firstSuccess": None,
                            "lastFailure": None, "lastSuccess": None, "lastFailureCause": None,
                            "instanceId": inst.instance_id})
                continue
            rec = self._records.get((inst.task.task_id, index))
            if rec is None:
                continue
            out.append({
                "alive": rec.alive,
                "consecutiveFailures": rec.consecutive_failures,
                "firstSuccess": format_ms(rec.first_success) if rec.first_success else None,
                "lastFailure": format_ms(rec.last_failure) if rec.last_failure else None,
                "lastSuccess": format_ms(rec.last_success) if rec.last_success else None,
                "lastFailureCause": rec.last_failure_cause,
                "instanceId": inst.instance_id,
            })
        return out

