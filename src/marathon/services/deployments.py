"""The deployments service: runs plans, one step after another.

Each running plan is a trio task in this service's nursery, with its own
cancel scope (force-replacing or cancelling a deployment cancels it; nothing
is rolled back).  Actions of a step run in parallel.  Every action is
level-triggered: it looks at the app's instances in the instance tracker,
does what the numbers call for (decommission, enqueue launches), and waits
for the next change of that app, until its goal is met.  Because it derives
everything from the current state, an action restarted after a crash of the
server simply carries on (SPEC.md 4.5: stored plans are restarted).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import trio
from msgspec import UNSET

from .. import planning
from ..instance_update import ChangeGoal
from ..models.app import AppDefinition
from ..models.deployment import DeploymentAction, DeploymentPlan, steps_json
from ..models.events import (
    AppTerminatedEvent,
    DeploymentFailed,
    DeploymentInfo,
    DeploymentProgressDeadlineExceeded,
    DeploymentStepFailure,
    DeploymentStepSuccess,
    DeploymentSuccess,
)
from ..models.group import Group
from ..models.instance import ACTIVE, Condition, Goal, Instance
from ..storage.repository import StateRepository
from .events import EventBus
from .health import HealthService
from .instances import InstanceTracker
from .launch_queue import LaunchQueue
from .readiness import ReadinessService

log = logging.getLogger("marathon.deployments")

# Actions re-check the state at least this often even without changes (the
# "background sync" of SPEC.md 4.3).
RESYNC_SECONDS = 5.0
CANCELLED = "The upgrade has been cancelled"

DEFAULT_PROGRESS_DEADLINE_SECONDS = 600.0


@dataclass(eq=False)
class RunningDeployment:
    plan: DeploymentPlan
    original: Group
    target: Group
    current_step: int = 0
    current_actions: list[DeploymentAction] = field(default_factory=list)
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)
    cancel_reason: str | None = None
    # Progress: the last moment (trio time) an action got closer to its goal.
    last_progress: float = 0.0
    stalled: bool = False
    best_running: dict[str, int] = field(default_factory=dict)
    # The plan never changes: its apps are computed once.  `GET /v2/apps`
    # asks for every app whether a deployment touches it.
    affected_apps: list[str] = field(init=False)
    affected_set: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        self.affected_apps = self.plan.affected_apps
        self.affected_set = frozenset(self.affected_apps)

    def progressed(self) -> None:
        self.last_progress = trio.current_time()
        self.stalled = False


def plan_json(plan: DeploymentPlan) -> dict:
    return {"id": plan.id, "steps": steps_json(plan.steps), "version": plan.version}


class DeploymentManager:
    def __init__(
        self,
        repo: StateRepository,
        tracker: InstanceTracker,
        launch_queue: LaunchQueue,
        bus: EventBus,
        *,
        time_ms: Callable[[], int],
        health: HealthService | None = None,
        readiness: ReadinessService | None = None,
        progress_deadline_seconds: float = DEFAULT_PROGRESS_DEADLINE_SECONDS,
    ) -> None:
        self._repo = repo
        self._tracker = tracker
        self._queue = launch_queue
        self._bus = bus
        self._time_ms = time_ms
        self._health = health
        self._readiness = readiness
        self._deadline = progress_deadline_seconds
        self._running: dict[str, RunningDeployment] = {}
        self._nursery: trio.Nursery | None = None
        # Ended deployments whose records wait to be deleted, each with the
        # event its deployment waits on and where the outcome goes.
        self._deletions: list[tuple[str, trio.Event, list[Exception | None]]] = []
        self._deletions_wakeup = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._store_deletions)
            task_status.started()
            await trio.sleep_forever()

    async def _delete_record(self, plan_id: str) -> None:
        """Delete the deployment's stored record; raises what storing raised."""
        entry: tuple[str, trio.Event, list[Exception | None]] = (plan_id, trio.Event(), [])
        self._deletions.append(entry)
        self._deletions_wakeup.set()
        await entry[1].wait()
        if entry[2][0] is not None:
            raise entry[2][0]

    async def _store_deletions(self) -> None:
        """Group commit of deleted records: every deployment that ends while
        one commit is stored shares the next (S2 ends 1,000 deployments in
        a few seconds; one commit each queued the store behind them)."""
        while True:
            await self._deletions_wakeup.wait()
            self._deletions_wakeup = trio.Event()
            batch, self._deletions = self._deletions, []
            error: Exception | None = None
            try:
                with trio.CancelScope(shield=True):
                    await self._repo.commit([self._repo.deployment_delete(plan_id) for plan_id, _, _ in batch])
            except Exception as exc:
                error = exc
            for _, done, outcome in batch:
                outcome.append(error)
                done.set()

    # -- queries ----------------------------------------------------------------

    def running(self) -> list[RunningDeployment]:
        return list(self._running.values())

    def get(self, plan_id: str) -> RunningDeployment | None:
        return self._running.get(plan_id)

    def conflicts(self, app_ids: Sequence[str]) -> list[str]:
        wanted = set(app_ids)
        return [d.plan.id for d in self._running.values() if not wanted.isdisjoint(d.affected_set)]

    def deployments_of(self, app_id: str) -> list[str]:
        return [d.plan.id for d in self._running.values() if app_id in d.affected_set]

    # -- control ----------------------------------------------------------------

    async def cancel(self, plan_id: str, reason: str = CANCELLED) -> None:
        """Stop a deployment where it is (no rollback) and wait until it has ended."""
        run = self._running.get(plan_id)
        if run is None:
            return
        run.cancel_reason = reason
        run.cancel_scope.cancel()
        await run.done.wait()

    def start(self, plan: DeploymentPlan, original: Group, target: Group) -> RunningDeployment:
        assert self._nursery is not None, "DeploymentManager.run() is not running"
        run = RunningDeployment(plan=plan, original=original, target=target)
        self._running[plan.id] = run
        self._nursery.start_soon(self._execute, run, name=f"deployment {plan.id}")
        return run

    # -- execution ----------------------------------------------------------------

    async def _watch_progress(self, run: RunningDeployment) -> None:
        """Mark a deployment that stopped making progress (it keeps trying)."""
        while True:
            await trio.sleep(min(self._deadline, 1.0))
            if not run.stalled and trio.current_time() - run.last_progress > self._deadline:
                run.stalled = True
                log.warning("deployment exceeded its progress deadline id=%s seconds=%s", run.plan.id, self._deadline)
                self._bus.publish(
                    DeploymentProgressDeadlineExceeded(
                        timestamp=self._bus.now(), id=run.plan.id, plan=plan_json(run.plan),
                        current_step=run.current_step, deadline_seconds=self._deadline,
                    )
                )

    async def _execute(self, run: RunningDeployment) -> None:
        plan = run.plan
        pj = plan_json(plan)
        run.progressed()
        apps = plan.affected_apps
        shown = ",".join(apps[:10]) + (f",... ({len(apps)} apps)" if len(apps) > 10 else "")
        log.info("deployment started id=%s apps=%s steps=%d", plan.id, shown, len(plan.steps))
        try:
            with run.cancel_scope:
                async with trio.open_nursery() as watchdog:
                    watchdog.start_soon(self._watch_progress, run)
                    await self._run_steps(run, pj)
                    watchdog.cancel_scope.cancel()
                run.current_actions = []
                await self._delete_record(plan.id)
                self._bus.publish(DeploymentSuccess(timestamp=self._bus.now(), id=plan.id, plan=pj))
                log.info("deployment finished id=%s", plan.id)
            if run.cancel_scope.cancelled_caught:
                self._bus.publish(
                    DeploymentFailed(timestamp=self._bus.now(), id=plan.id, plan=pj, reason=run.cancel_reason or CANCELLED)
                )
                log.info("deployment cancelled id=%s reason=%s", plan.id, run.cancel_reason)
        except Exception as exc:
            log.exception("deployment failed id=%s", plan.id)
            self._bus.publish(DeploymentFailed(timestamp=self._bus.now(), id=plan.id, plan=pj, reason=str(exc)))
        finally:
            self._running.pop(plan.id, None)
            for app_id in plan.affected_apps:
                if self._readiness is not None and not self.deployments_of(app_id):
                    self._readiness.forget(app_id)
            run.done.set()

    async def _run_steps(self, run: RunningDeployment, pj: dict) -> None:
        for index, step in enumerate(run.plan.steps):
            run.current_step = index + 1
            run.current_actions = list(step.actions)
            run.progressed()
            step_json = steps_json([step])[0]
            self._bus.publish(DeploymentInfo(timestamp=self._bus.now(), plan=pj, current_step=step_json))
            try:
                async with trio.open_nursery() as nursery:
                    for action in step.actions:
                        nursery.start_soon(self._action, run, action)
            except Exception:
                self._bus.publish(DeploymentStepFailure(timestamp=self._bus.now(), plan=pj, current_step=step_json))
                raise
            self._bus.publish(DeploymentStepSuccess(timestamp=self._bus.now(), plan=pj, current_step=step_json))

    async def _action(self, run: RunningDeployment, action: DeploymentAction) -> None:
        if action.action == "StartApplication":
            return
        if action.action == "StopApplication":
            await self._stop(run, action.app)
            return
        app = run.target.app(action.app)
        if app is None:  # the plan was computed against this target: cannot happen
            raise RuntimeError(f"app {action.app} missing from the deployment target")
        if action.action == "ScaleApplication":
            await self._scale(run, app, action.scale_to if action.scale_to is not None else app.instances, action.to_kill)
        elif action.action == "RestartApplication":
            await self._restart(run, app, only=frozenset(action.instances) or None)

    # -- health and readiness as deployments see them ---------------------------

    def _considered_healthy(self, app: AppDefinition, inst: Instance) -> bool:
        """SPEC.md 4.4's H.  Without any check every goal-Running instance counts.
        With health checks, an instance counts when it is healthy, and unlike
        Marathon (⚠) Marathon-level results count too (docs/compatibility.md);
        with only readiness or a Mesos `check`, a Running instance counts."""
        if inst.state.goal != Goal.RUNNING:
            return False
        if not app.health_checks and app.check is UNSET and not app.readiness_checks:
            return True
        if app.health_checks:
            return self._healthy(app, inst)
        return inst.state.condition == Condition.RUNNING

    def _healthy(self, app: AppDefinition, inst: Instance) -> bool:
        if inst.state.condition != Condition.RUNNING:
            return False
        if not app.health_checks or self._health is None:
            return True
        return self._health.health_of(app, inst) is True

    def _ready(self, app: AppDefinition, inst: Instance) -> bool:
        """Running, healthy (if health checks) and ready (if readiness checks)."""
        if not self._healthy(app, inst):
            return False
        return self._readiness is None or self._readiness.is_ready(app, inst)

    async def _wait_change(self, app_id: str, event: trio.Event) -> None:
        with trio.move_on_after(RESYNC_SECONDS):
            await event.wait()

    # -- actions ----------------------------------------------------------------

    def _converged_by_counts(self, app: AppDefinition, scale_to: int) -> bool | None:
        """For an app without checks, whether a scale is done, from the
        tracker's counters (no scan of the instances); None if checks exist."""
        if app.health_checks or app.readiness_checks:
            return None
        counts = self._tracker.counts(app.id)
        running = goal_running = leaving = 0
        for (goal, condition), n in counts.items():
            if goal == Goal.RUNNING:
                if condition == Condition.UNREACHABLE_INACTIVE:
                    continue
                goal_running += n
                if condition == Condition.RUNNING:
                    running += n
            elif condition in ACTIVE:
                leaving += n
        return goal_running == scale_to and running == scale_to and leaving == 0

    async def _scale(self, run: RunningDeployment, app: AppDefinition, scale_to: int, to_kill: Sequence[str]) -> None:
        sentenced = list(to_kill)
        best = -1
        while True:
            changed = self._tracker.changed(app.id)
            converged = self._converged_by_counts(app, scale_to)
            if converged is True and not sentenced:
                return
            if converged is False and not sentenced and self._scale_pending(app, scale_to):
                # Nothing to decide, only to wait for: no need to look at each instance.
                if self._progress_by_counts(app, run):
                    run.progressed()
                await self._wait_change(app.id, changed)
                continue
            instances = self._tracker.of_app(app.id)
            victims, to_start = planning.scaling_proposition(
                instances, scale_to, sentenced=sentenced, kill_selection=app.kill_selection
            )
            sentenced = []
            if victims:
                now = self._time_ms()
                await self._tracker.process(
                    [ChangeGoal(instance_id=v.instance_id, goal=Goal.DECOMMISSIONED, now=now) for v in victims]
                )
                continue
            if to_start:
                await self._queue.add(app, to_start)
                continue
            wanted = [i for i in instances if i.state.goal == Goal.RUNNING]
            leaving = [i for i in instances if i.state.goal != Goal.RUNNING and i.is_active]
            ready = sum(1 for i in wanted if self._ready(app, i))
            if ready - len(leaving) > best:
                best = ready - len(leaving)
                run.progressed()
            if not leaving and len(wanted) == scale_to and ready == scale_to:
                return
            await self._wait_change(app.id, changed)

    def _scale_pending(self, app: AppDefinition, scale_to: int) -> bool:
        """The right number of instances exists (goal Running) and nothing is
        leaving: only their tasks' progress is awaited."""
        counts = self._tracker.counts(app.id)
        goal_running = sum(
            n for (goal, condition), n in counts.items()
            if goal == Goal.RUNNING and condition != Condition.UNREACHABLE_INACTIVE
        )
        return goal_running == scale_to

    def _progress_by_counts(self, app: AppDefinition, run: RunningDeployment) -> bool:
        running = self._tracker.counts(app.id).get((Goal.RUNNING, Condition.RUNNING), 0)
        if running > run.best_running.get(app.id, -1):
            run.best_running[app.id] = running
            return True
        return False

    async def _stop(self, run: RunningDeployment, app_id: str) -> None:
        while True:
            changed = self._tracker.changed(app_id)
            instances = self._tracker.of_app(app_id)
            if not instances:
                break
            running = [i for i in instances if i.state.goal != Goal.DECOMMISSIONED]
            if running:
                now = self._time_ms()
                await self._tracker.process(
                    [ChangeGoal(instance_id=i.instance_id, goal=Goal.DECOMMISSIONED, now=now) for i in running]
                )
                continue
            await self._wait_change(app_id, changed)
        await self._tracker.forget_task_failure(app_id)
        self._queue.forget_app(app_id)
        self._bus.publish(AppTerminatedEvent(timestamp=self._bus.now(), app_id=app_id))

    async def _restart(self, run: RunningDeployment, app: AppDefinition,
                       only: frozenset[str] | None = None) -> None:
        """Rolling replacement with SPEC.md 4.4's exact capacity arithmetic.

        The instances replaced are those of another version, or, with `only`
        (an agent drain), exactly those instances: their replacements are
        placed elsewhere (a draining agent gets no placements)."""
        n = app.instances
        new_version = app.version

        def is_old(i: Instance) -> bool:
            return i.instance_id in only if only is not None else i.run_spec_version != new_version

        strategy = app.upgrade_strategy
        min_health = strategy.minimum_health_capacity if strategy is not UNSET else 1.0  # type: ignore[union-attr]
        max_over = strategy.maximum_over_capacity if strategy is not UNSET else 1.0  # type: ignore[union-attr]

        instances = self._tracker.of_app(app.id)
        # Each instance is judged by the checks of its own version: an old
        # version without health checks counts its Running instances even
        # when the new one adds checks (Marathon judges them by the new
        # version's checks, finds H = 0 and, with maximumOverCapacity 0,
        # stalls for ever: docs/compatibility.md).
        definitions = {new_version: app}
        for version in {i.run_spec_version for i in instances} - {new_version}:
            definitions[version] = await self._repo.app_at(app.id, version) or app

        def considered_healthy(i: Instance) -> bool:
            return self._considered_healthy(definitions.get(i.run_spec_version, app), i)

        healthy = sum(1 for i in instances if i.state.goal == Goal.RUNNING and considered_healthy(i))
        kill_now, max_capacity = planning.restart_capacity(
            instances=n,
            minimum_health_capacity=min_health,
            maximum_over_capacity=max_over,
            healthy=healthy,
            current=len(instances),
            resident=app.is_resident,
        )
        self._queue.reset_delay(app)
        kills_allowed = kill_now
        # Old instances already sentenced (by an earlier run of this action).
        kills_issued = sum(1 for i in instances if is_old(i) and i.state.goal != Goal.RUNNING)
        kills_allowed += kills_issued
        ready_before: set[str] = set()
        while True:
            changed = self._tracker.changed(app.id)
            instances = self._tracker.of_app(app.id)
            old = [i for i in instances if is_old(i)]
            new = [i for i in instances if not is_old(i) and i.state.goal == Goal.RUNNING]
            now = self._time_ms()

            # An old instance that ended on its own leaves for good.
            dead = [i for i in old if i.state.goal == Goal.RUNNING and i.is_terminal]
            if dead:
                await self._tracker.process(
                    [ChangeGoal(instance_id=i.instance_id, goal=Goal.DECOMMISSIONED, now=now) for i in dead]
                )
                continue

            # Each new instance that becomes healthy and ready lets one old one go.
            ready_now = {i.instance_id for i in new if self._ready(app, i)}
            if ready_now - ready_before:
                run.progressed()
            kills_allowed += len(ready_now - ready_before)
            ready_before = ready_now

            old_running = [i for i in old if i.state.goal == Goal.RUNNING]
            queue = planning.kill_queue(old_running, considered_healthy)
            kill_count = min(len(queue), max(0, kills_allowed - kills_issued))
            if kill_count:
                log.debug(
                    "restart replaces old instances app=%s kill=%d allowed=%d issued=%d ready_new=%d",
                    app.id, kill_count, kills_allowed, kills_issued, len(ready_now),
                )
                kills_issued += kill_count
                goal = Goal.STOPPED if app.is_resident else Goal.DECOMMISSIONED
                await self._tracker.process(
                    [ChangeGoal(instance_id=i.instance_id, goal=goal, now=now) for i in queue[:kill_count]]
                )
                continue

            old_active = [i for i in old if not i.is_terminal]
            to_start = planning.restart_starts(
                instances=n, max_capacity=max_capacity, old_active=len(old_active), started=len(new)
            )
            if to_start:
                await self._queue.add(app, to_start)
                continue

            if len(ready_now) >= n and not old:
                return
            await self._wait_change(app.id, changed)
