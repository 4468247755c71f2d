"""Keeping belief and reality together (SPEC.md 5.6, 4.8).

* Reconciliation: kill (again) every task whose instance's goal is no
  longer Running (a kill in flight is not durable: a crash right after a
  scale-down was stored left its surplus running forever), then ask the
  agents for the state of every task Marathon thinks
  is active (explicit) and for every task they run (implicit).  Answers come
  back as ordinary status updates: a task the agent does not know becomes
  `Unknown` (and is relaunched if its goal is Running); a task Marathon does
  not know is killed.  Runs at start-up, before anything is replaced, and
  then every `--reconciliation_interval`.
* Scale check: every app that no deployment holds is brought to its
  `instances` (missing ones scheduled, surplus decommissioned) every
  `--scale_apps_interval`.  This never launches more than the target.
* Overdue launches: a task provisioned but never confirmed, or staging for
  longer than `--task_launch_timeout`, is killed (and relaunched).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import trio
from msgspec import UNSET

from .. import planning
from ..cluster import ClusterDriver
from ..instance_update import ChangeGoal, Expunged, ForceExpunge, UnreachableTimeout, Updated
from ..models.app import UnreachableEnabled
from ..models.group import Group
from ..models.instance import ACTIVE, Condition, Goal
from .deployments import DeploymentManager
from .instances import InstanceTracker
from .launch_queue import LaunchQueue

log = logging.getLogger("marathon.reconciler")

OVERDUE_CHECK_SECONDS = 5.0
UNREACHABLE_CHECK_SECONDS = 1.0
# A scale check asked for by an instance change runs this soon after it.
PROMPT_SCALE_CHECK_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class ReconcilerConfig:
    reconciliation_initial_delay_ms: int = 15000
    reconciliation_interval_ms: int = 600000
    scale_apps_initial_delay_ms: int = 15000
    scale_apps_interval_ms: int = 300000
    task_launch_timeout_ms: int = 300000
    task_launch_confirm_timeout_ms: int = 300000


class Reconciler:
    def __init__(
        self,
        tracker: InstanceTracker,
        driver: ClusterDriver,
        deployments: DeploymentManager,
        launch_queue: LaunchQueue,
        *,
        root: Callable[[], Group],
        time_ms: Callable[[], int],
        config: ReconcilerConfig = ReconcilerConfig(),
    ) -> None:
        self._tracker = tracker
        self._driver = driver
        self._deployments = deployments
        self._queue = launch_queue
        self._root = root
        self._time_ms = time_ms
        self._config = config
        self._prompt: set[str] = set()  # apps that want a scale check soon
        self._unreachable_since: dict[str, int] = {}
        self._prompt_event = trio.Event()
        tracker.add_listener(self._on_effects)

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        await self.reconcile()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                self._every, self._config.reconciliation_initial_delay_ms, self._config.reconciliation_interval_ms, self.reconcile
            )
            nursery.start_soon(
                self._every, self._config.scale_apps_initial_delay_ms, self._config.scale_apps_interval_ms, self.scale_check
            )
            nursery.start_soon(self._every, 30000, int(OVERDUE_CHECK_SECONDS * 1000), self.kill_overdue)
            nursery.start_soon(self._every, 0, int(UNREACHABLE_CHECK_SECONDS * 1000), self.unreachable_check)
            nursery.start_soon(self._prompt_scale_checks)
            task_status.started()

    async def _every(self, initial_ms: int, interval_ms: int, job: Callable) -> None:
        await trio.sleep(initial_ms / 1000.0)
        while True:
            try:
                await job()
            except Exception:
                log.exception("periodic job failed job=%s", getattr(job, "__name__", job))
            await trio.sleep(interval_ms / 1000.0)

    async def reconcile(self) -> None:
        """Orphans are decommissioned, tasks not meant to run are killed (again:
        a crash loses the kills in flight), then every active task is
        reconciled."""
        root = self._root()
        now = self._time_ms()
        # One lookup per app, not per instance (100,000 instances of one app
        # took 0.8 s of lookups in the tree).
        gone = {app_id for app_id in self._tracker.app_ids() if root.app(app_id) is None}
        orphans = [
            ChangeGoal(instance_id=i.instance_id, goal=Goal.DECOMMISSIONED, now=now)
            for app_id in gone
            for i in self._tracker.of_app(app_id)
            if i.state.goal != Goal.DECOMMISSIONED
        ]
        if orphans:
            log.info("decommissioning orphaned instances count=%d", len(orphans))
            await self._tracker.process(orphans)
        unwanted = self._tracker.kill_unwanted()
        if unwanted:
            log.info("killing tasks whose goal is no longer Running count=%d", unwanted)
        task_ids = [
            i.task.task_id for i in self._tracker.all()
            if i.task is not None and i.condition in ACTIVE
        ]
        log.info("reconciling tasks count=%d", len(task_ids))
        # Explicit (each task we know) and implicit (every task the agents
        # run, to find those we do not know) in one round: each task once.
        self._driver.reconcile(task_ids, others=True)

    def _on_effects(self, effects) -> None:  # type: ignore[no-untyped-def]
        """An instance that became UnreachableInactive needs a replacement; one
        that came back leaves a surplus: both ask for a prompt scale check."""
        for eff in effects:
            if isinstance(eff, Updated) and eff.previous is not None:
                before, after = eff.previous.condition, eff.instance.condition
                if before != after and (
                    after == Condition.UNREACHABLE_INACTIVE
                    or before in (Condition.UNREACHABLE, Condition.UNREACHABLE_INACTIVE)
                ):
                    self._prompt.add(eff.instance.run_spec_id)
                    self._prompt_event.set()
            elif isinstance(eff, Expunged) and eff.instance.condition == Condition.UNREACHABLE_INACTIVE:
                self._prompt.add(eff.instance.run_spec_id)
                self._prompt_event.set()

    async def _prompt_scale_checks(self) -> None:
        while True:
            await self._prompt_event.wait()
            await trio.sleep(PROMPT_SCALE_CHECK_SECONDS)  # let the rest of the burst arrive
            self._prompt_event = trio.Event()
            apps, self._prompt = self._prompt, set()
            try:
                await self.scale_check(only=apps)
            except Exception:
                log.exception("prompt scale check failed")

    async def unreachable_check(self) -> None:
        """SPEC.md 5.4: Unreachable -> UnreachableInactive after inactiveAfterSeconds;
        UnreachableInactive expunged after expungeAfterSeconds (both counted from
        when the instance became unreachable)."""
        root = self._root()
        now = self._time_ms()
        timeouts, expunges = [], []
        unreachable = self._tracker.unreachable()
        for inst in unreachable:
            cond = inst.condition
            app = root.app(inst.run_spec_id)
            strategy = app.unreachable_strategy if app is not None else UNSET
            if not isinstance(strategy, UnreachableEnabled):
                continue  # "disabled" (or unknown app): stays unreachable
            since = self._unreachable_since.setdefault(inst.instance_id, inst.state.since)
            if cond == Condition.UNREACHABLE and now - since >= strategy.inactive_after_seconds * 1000:
                timeouts.append(UnreachableTimeout(instance_id=inst.instance_id, now=now))
            elif cond == Condition.UNREACHABLE_INACTIVE and now - since >= strategy.expunge_after_seconds * 1000:
                expunges.append(ForceExpunge(inst.instance_id))
        live = {i.instance_id for i in unreachable}
        for iid in [i for i in self._unreachable_since if i not in live]:
            del self._unreachable_since[iid]
        if timeouts or expunges:
            log.info("unreachable instances inactive=%d expunged=%d", len(timeouts), len(expunges))
            await self._tracker.process(timeouts + expunges)

    async def scale_check(self, only: set[str] | None = None) -> None:
        root = self._root()
        locked = {a for d in self._deployments.running() for a in d.affected_apps}
        now = self._time_ms()
        for app in root.transitive_apps():
            if app.id in locked or (only is not None and app.id not in only):
                continue
            victims, to_start = planning.scaling_proposition(
                self._tracker.of_app(app.id), app.instances, kill_selection=app.kill_selection
            )
            if victims:
                log.info("scale check decommissions app=%s count=%d", app.id, len(victims))
                await self._tracker.process(
                    [ChangeGoal(instance_id=v.instance_id, goal=Goal.DECOMMISSIONED, now=now) for v in victims]
                )
            if to_start:
                log.info("scale check starts app=%s count=%d", app.id, to_start)
                await self._queue.add(app, to_start)

    async def kill_overdue(self) -> None:
        now = self._time_ms()
        cfg = self._config
        overdue = []
        for inst in self._tracker.all():
            cond = inst.condition
            if cond == Condition.PROVISIONED and now - inst.state.since > cfg.task_launch_confirm_timeout_ms:
                overdue.append(inst)
            elif cond in (Condition.STAGING, Condition.STARTING) and now - inst.state.since > cfg.task_launch_timeout_ms:
                overdue.append(inst)
        if overdue:
            log.info("killing overdue launches count=%d", len(overdue))
            self._tracker.kill_tasks(overdue)
