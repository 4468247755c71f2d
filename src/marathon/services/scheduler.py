"""The scheduler: pending launches x free resources -> placed, persisted, launched.

One pass takes every scheduled instance whose app is not backing off, one
snapshot of the agents' free resources, and places the whole batch with one
call into `marathon.matching` (the compiled core).  The placements are
persisted by the instance tracker (Provisioned, with the task id and ports)
*before* any agent hears of them; then the launches go to the cluster driver
in one call.  Passes run when something changed (new scheduled instances,
freed resources, a backoff expiring) and, while anything is left unplaced,
periodically, since free ports on the machine can change on their own.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

import trio
from msgspec import UNSET

from .. import matching
from ..cluster import ClusterDriver
from ..instance_update import ChangeGoal, Effect, Provision, Updated
from ..models import pathid
from ..models.app import AppDefinition
from ..models.group import Group
from ..models.instance import Condition, Goal, Instance
from ..models.launch import TaskLaunch
from ..task_builder import build_launch
from ._pacing import YIELD_EVERY
from .instances import InstanceTracker
from .launch_queue import LaunchQueue

log = logging.getLogger("marathon.scheduler")

RETRY_UNPLACED_SECONDS = 5.0
# Passes with at least this many agents + instances run in a worker thread.
THREAD_PASS_SIZE = 2000
# The first pass of a burst (one that does not follow a pass at once) places
# at most this many instances, so that their tasks start while the rest is
# placed: before the first launch a pass of 1,000 instances is ~0.1 s of
# matching, two commits and building launches, during which the agents
# have nothing to do.  The passes that follow take the full batch.
FIRST_PASS_SIZE = 256


class Scheduler:
    def __init__(
        self,
        tracker: InstanceTracker,
        launch_queue: LaunchQueue,
        driver: ClusterDriver,
        *,
        root: Callable[[], Group],
        app_at: Callable[[str, str], Awaitable[AppDefinition | None]],
        time_ms: Callable[[], int],
        match_config: matching.MatchConfig,
        batch_size: int = 20000,
        launch_tokens: int | None = None,
        launch_token_refresh_ms: int = 30000,
        env_vars_prefix: str | None = None,
        adjust: Callable[[AppDefinition, TaskLaunch], TaskLaunch] | None = None,
    ) -> None:
        self._adjust = adjust
        self._tracker = tracker
        self._queue = launch_queue
        self._driver = driver
        self._root = root
        self._app_at = app_at
        self._old_configs: dict[tuple[str, str], AppDefinition | None] = {}
        self._time_ms = time_ms
        self._config = match_config
        self._batch_size = batch_size
        self._env_prefix = env_vars_prefix
        self._wake = trio.Event()
        self._unplaced = False
        self._more = False
        # Launch tokens (Marathon's throttle): a pass launches at most as
        # many instances as there are tokens; the count is reset to
        # `launch_tokens` every refresh interval, and every instance that
        # becomes running (and is not unhealthy) gives one back, so the rate
        # follows how fast the cluster starts what it is sent.  None: off.
        self._token_limit = launch_tokens
        self._token_refresh = launch_token_refresh_ms / 1000.0
        self.tokens = launch_tokens
        self._awaiting_tokens = False  # the last pass left instances for lack of tokens
        if launch_tokens is not None:
            tracker.add_listener(self._on_effects)
        self.passes = 0
        self.launched = 0
        # Agents that were considered for an instance and could not take it
        # (Marathon's declined offers), summed over passes.
        self.offers_declined = 0

    def wake(self) -> None:
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            if self._token_limit is not None:
                nursery.start_soon(self._refresh_tokens)
            task_status.started()
            await self._loop()

    async def _refresh_tokens(self) -> None:
        assert self._token_limit is not None
        while True:
            await trio.sleep(self._token_refresh)
            self._set_tokens(self._token_limit)

    def _set_tokens(self, tokens: int) -> None:
        self.tokens = tokens
        if self._awaiting_tokens and tokens > 0:
            self._awaiting_tokens = False
            self.wake()

    def _on_effects(self, effects: Sequence[Effect]) -> None:
        given = 0
        for eff in effects:
            if isinstance(eff, Updated):
                state, prev = eff.instance.state, eff.previous
                if (state.condition == Condition.RUNNING and state.healthy is not False
                        and (prev is None or prev.state.condition != Condition.RUNNING)):
                    given += 1
        if given:
            assert self.tokens is not None
            self._set_tokens(self.tokens + given)

    async def _loop(self) -> None:
        while True:
            now = self._time_ms()
            timeout = float("inf")
            deadline = self._queue.next_deadline(now)
            if deadline is not None:
                timeout = max(0.0, (deadline - now) / 1000.0)
            if self._unplaced:
                timeout = min(timeout, RETRY_UNPLACED_SECONDS)
            if self._more:
                timeout = 0  # the last pass stopped at the batch budget: go on at once
            with trio.move_on_after(timeout):
                await self._wake.wait()
            self._wake = trio.Event()
            self._queue.cleanup(self._time_ms())
            await self.pass_once()

    async def pass_once(self) -> int:
        """Place and launch what can be; returns the number of launches."""
        now = self._time_ms()
        root = self._root()
        requests: list[matching.PlacementRequest] = []
        definition_of: dict[str, AppDefinition] = {}  # instance id -> the definition it runs
        orphans = []
        cap = self._batch_size if self._more else min(self._batch_size, FIRST_PASS_SIZE)
        budget = cap if self.tokens is None else min(cap, self.tokens)
        # Out of tokens is not "more to do at once": the next pass waits for
        # tokens to come back (`_set_tokens` wakes it).
        by_tokens = self.tokens is not None and self.tokens < cap
        left_over = False  # scheduled instances this pass leaves for a later one
        for app_id, instances in self._tracker.scheduled().items():
            if budget <= 0:
                left_over = True
                break
            app = root.app(app_id)
            if app is None:
                orphans.extend(i.instance_id for i in instances)
                continue
            if not self._queue.launch_allowed(app, now):
                continue
            existing = self._tracker.of_app(app_id)
            left_over = left_over or len(instances) > budget
            for definition, group in await self._by_definition(app, instances[:budget]):
                ids = [i.instance_id for i in group]
                budget -= len(ids)
                for iid in ids:
                    definition_of[iid] = definition
                requests.append(matching.PlacementRequest(app=definition, instance_ids=ids, existing=existing))
        self._more = left_over and not by_tokens
        self._awaiting_tokens = left_over and by_tokens
        if orphans:
            log.info("decommissioning instances of removed apps count=%d", len(orphans))
            await self._tracker.process(
                [ChangeGoal(instance_id=i, goal=Goal.DECOMMISSIONED, now=now) for i in orphans]
            )
        self._unplaced = False
        if not requests:
            return 0
        self.passes += 1
        # A pass over thousands of agents is tens of milliseconds of CPU: run
        # it in a worker thread so the event loop keeps serving requests.  A
        # small pass costs less than the hop to a thread, so it runs inline.
        offers = self._driver.offers()
        size = len(offers) + sum(len(r.instance_ids) for r in requests)
        if size >= THREAD_PASS_SIZE:
            result = await trio.to_thread.run_sync(matching.match, requests, offers, self._config)
        else:
            result = matching.match(requests, offers, self._config)
        for app_id, summary in result.rejects.items():
            self._queue.rejects[app_id] = (now, summary)
            self.offers_declined += summary.processed
        self._unplaced = bool(result.unplaced)
        if not result.placements:
            return 0
        ops = []
        for n, p in enumerate(result.placements, 1):
            ops.append(Provision(
                instance_id=p.instance_id,
                agent_id=p.agent_id,
                hostname=p.hostname,
                region=p.region,
                zone=p.zone,
                host_ports=list(p.host_ports),
                now=now,
            ))
            if n % YIELD_EVERY == 0:
                await trio.lowlevel.checkpoint()
        submitted = await self._tracker.submit(ops)
        # The launches are built while the placements are being stored; they
        # go out only once the placements are durable.
        resolved = await submitted.resolved()
        built = await self._launches(resolved, definition_of, root)
        effects = await submitted.effects()
        if effects is not resolved:
            built = await self._launches(effects, definition_of, root)
        launches = await self._adjusted(built)
        # In slices: a driver's launch is synchronous work per task (the
        # embedded agent starts a trio task each, the simulator books
        # resources and answers), and 20,000 at once held the loop ~150 ms.
        sent = 0
        for start in range(0, len(launches), YIELD_EVERY):
            # Checked right before sending, with no await in between: since
            # the placements were stored, a forced deployment may have
            # decommissioned an instance (its kill already went out, and
            # the agent answered that it does not know the task); its
            # launch, sent now, would start a task nobody wants.
            wanted = self._still_wanted(launches[start:start + YIELD_EVERY])
            if self.tokens is not None:
                self.tokens -= len(wanted)
            self._driver.launch(wanted)
            sent += len(wanted)
            if start + YIELD_EVERY < len(launches):
                await trio.lowlevel.checkpoint()
        self.launched += sent
        log.debug("scheduling pass placed=%d unplaced_apps=%d", sent, len(result.unplaced))
        return sent

    def _still_wanted(self, launches: list[TaskLaunch]) -> list[TaskLaunch]:
        """The launches whose instance still waits for exactly that task."""
        out = []
        for launch in launches:
            inst = self._tracker.get(launch.instance_id)
            if (inst is not None and inst.task is not None and inst.task.task_id == launch.task_id
                    and inst.state.goal == Goal.RUNNING and inst.condition == Condition.PROVISIONED):
                out.append(launch)
            else:
                log.info("launch_withdrawn task_id=%s reason=%s", launch.task_id,
                         "instance gone" if inst is None else f"{inst.state.goal}/{inst.condition}")
        return out

    async def _launches(
        self, effects: list[Effect], definition_of: dict[str, AppDefinition], root: Group
    ) -> list[tuple[AppDefinition, TaskLaunch]]:
        launches: list[tuple[AppDefinition, TaskLaunch]] = []
        enforce: dict[int, bool] = {}
        for n, eff in enumerate(effects):
            if isinstance(eff, Updated):
                app = definition_of[eff.instance.instance_id]
                if id(app) not in enforce:
                    enforce[id(app)] = _enforces_role(root, app)
                launch = build_launch(
                    app,
                    eff.instance,
                    env_vars_prefix=self._env_prefix,
                    enforce_role=enforce[id(app)],
                )
                launches.append((app, launch))
            if n % YIELD_EVERY == YIELD_EVERY - 1:
                # Thousands of launches are built here: let requests in between.
                await trio.lowlevel.checkpoint()
        return launches

    async def _adjusted(self, built: list[tuple[AppDefinition, TaskLaunch]]) -> list[TaskLaunch]:
        """The plugins' task adjustments, once the placements are durable:
        a plugin sees only launches that will go out."""
        if self._adjust is None:
            return [launch for _, launch in built]
        launches: list[TaskLaunch] = []
        for n, (app, launch) in enumerate(built, 1):
            launches.append(self._adjust(app, launch))
            if n % YIELD_EVERY == 0:
                await trio.lowlevel.checkpoint()
        return launches

    async def _by_definition(
        self, app: AppDefinition, instances: list[Instance]
    ) -> list[tuple[AppDefinition, list[Instance]]]:
        """Group instances by the definition they must run.

        An instance runs the config it was created for: the current definition
        when only scaling happened since (same config), otherwise the stored
        definition of its own version (e.g. an old instance left running by a
        forced deployment is relaunched as it was, not silently upgraded).
        """
        info = app.version_info
        current_config = info.last_config_change_at if info is not UNSET else app.version  # type: ignore[union-attr]
        groups: dict[int, tuple[AppDefinition, list[Instance]]] = {}
        for inst in instances:
            definition = app
            if inst.run_spec_version < current_config:  # type: ignore[operator]
                key = (app.id, inst.run_spec_version)
                if key not in self._old_configs:
                    self._old_configs[key] = await self._app_at(app.id, inst.run_spec_version)
                definition = self._old_configs[key] or app
            groups.setdefault(id(definition), (definition, []))[1].append(inst)
        return list(groups.values())


def _enforces_role(root: Group, app: AppDefinition) -> bool:
    top = pathid.top_level(app.id)
    group = root.group(top) if top else None
    return bool(group and group.enforce_role and app.role is not UNSET)
