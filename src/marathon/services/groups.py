"""The groups service: owner of the current root group and of every change to it.

All changes go through `update()`, in arrival order (SPEC.md 4.1): apply the
change to the current root, assign service ports, stamp versions, validate
what changed, compute the plan, check it against running deployments, then
commit the new app versions, the root version, the plan and the root pointer
in ONE atomic store commit.  Only after that is the new root swapped in and
the deployment started.  Changes that queue while one is being stored are
staged the same way, each on the root the previous one made, and share one
commit (group commit).  A request refused at any point leaves the stored
state and the in-memory root exactly as they were.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import trio
from msgspec import structs

from .. import planning
from ..errors import AppLocked, Forbidden, TooManyDeployments, ValidationFailed, Violation
from ..models import pathid
from ..models.app import AppDefinition
from ..models.deployment import DeploymentAction, DeploymentPlan, DeploymentStep
from ..models.events import GroupChangeFailed, GroupChangeSuccess
from ..models.group import Group, TreeDiff, carry_app_map, diff, empty_root
from ..models.timestamp import format_ms, parse_ms
from ..storage import Op
from ..storage.repository import StateRepository
from .deployments import CANCELLED, DeploymentManager
from .events import EventBus

log = logging.getLogger("marathon.groups")

Change = Callable[[Group, str], Group]
# Refuses a change by raising (authorization: Forbidden).
Guard = Callable[[planning.RootChanges], None]
# Extra rules (policy plugins): the violations of a change, empty if none.
Policy = Callable[[planning.RootChanges], list[Violation]]


@dataclass(frozen=True, slots=True)
class GroupsConfig:
    max_running_deployments: int = 100
    local_port_min: int = 10000
    local_port_max: int = 20000
    new_group_enforce_role: str = "off"
    compaction_interval_seconds: float = 30.0


class GroupManager:
    def __init__(
        self,
        repo: StateRepository,
        deployments: DeploymentManager,
        bus: EventBus,
        *,
        time_ms: Callable[[], int],
        config: GroupsConfig = GroupsConfig(),
        policy: Policy | None = None,
    ) -> None:
        self._policy = policy
        self._repo = repo
        self._deployments = deployments
        self._bus = bus
        self._time_ms = time_ms
        self._config = config
        self._lock = trio.Lock()
        self._queue: deque[_Pending] = deque()
        self._dirty = False
        self._root: Group = empty_root()
        self._apps: dict[str, AppDefinition] | None = {}
        # The service ports of one root (by identity), kept up to date by
        # each update instead of walking every app per request.
        self._ports: tuple[Group, Counter[int]] | None = None

    @property
    def root(self) -> Group:
        return self._root

    @root.setter
    def root(self, root: Group) -> None:
        # Every reader (each status update looks up its app) uses the index,
        # made when first read: a batch of changes installs several roots.
        self._root = root
        self._apps = None

    async def load(self) -> None:
        """Load the current root (storing an empty one on first start)."""
        root = await self._repo.load_root()
        if root is None:
            root = empty_root(format_ms(self._time_ms()))
            await self._repo.commit(self._repo.root_ops(root, []))
        self.root = root
        log.info("root group loaded version=%s apps=%d", root.version, sum(1 for _ in root.transitive_apps()))

    async def drain(self, instances_by_app: Mapping[str, Sequence[str]]) -> tuple[DeploymentPlan | None, list[str]]:
        """Replace the given instances of each app elsewhere, through one
        ordinary deployment (a RestartApplication of those instances per app,
        within each app's upgradeStrategy).  The root group does not change.
        Apps with a deployment running are left out (returned second): drain
        again once it has finished."""
        async with self._lock:
            root = self.root
            busy = [a for a in instances_by_app if self._deployments.conflicts([a])]
            actions = [
                DeploymentAction(action="RestartApplication", app=app_id, instances=list(ids))
                for app_id, ids in sorted(instances_by_app.items())
                if app_id not in busy and ids and root.app(app_id) is not None
            ]
            if not actions:
                return None, busy
            if len(self._deployments.running()) >= self._config.max_running_deployments:
                raise TooManyDeployments(self._config.max_running_deployments)
            plan = DeploymentPlan(
                id=str(uuid.uuid4()), version=root.version, original_version=root.version,
                target_version=root.version, steps=[DeploymentStep(actions=actions)],
            )
            await self._repo.commit([self._repo.deployment_put(plan)])
            self._deployments.start(plan, root, root)
            return plan, busy

    async def resume_deployments(self) -> int:
        """Restart every stored deployment (its actions carry on from the current state)."""
        plans = await self._repo.load_deployments()
        for plan in sorted(plans, key=lambda p: p.version):
            original = await self._repo.root_at(plan.original_version) or empty_root()
            target = await self._repo.root_at(plan.target_version)
            if target is None:
                log.error("dropping deployment whose target is not stored id=%s", plan.id)
                await self._repo.commit([self._repo.deployment_delete(plan.id)])
                continue
            log.info("resuming deployment id=%s", plan.id)
            self._deployments.start(plan, original, target)
        return len(plans)

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Background upkeep: version garbage collection."""
        task_status.started()
        while True:
            await trio.sleep(self._config.compaction_interval_seconds)
            if self._dirty:
                self._dirty = False
                async with self._lock:
                    removed = await self._repo.collect_garbage(self.root)
                if removed:
                    log.info("old versions removed keys=%d", removed)

    # -- reads ------------------------------------------------------------------

    def app(self, app_id: str) -> AppDefinition | None:
        apps = self._apps
        if apps is None:
            apps = self._apps = self._root.app_map()
        return apps.get(app_id)

    def new_group_enforces_role(self) -> bool:
        return self._config.new_group_enforce_role == "top"

    def enforce_role_for(self, app_id: str) -> bool:
        """Whether the app's top-level group enforces its role (or would, if new)."""
        top = pathid.top_level(app_id)
        if top is None:
            return False
        group = self.root.group(top)
        return group.enforce_role if group is not None else self.new_group_enforces_role()

    def new_group_factory(self, version: str) -> Callable[[str], Group]:
        def make(group_id: str) -> Group:
            top = len(pathid.segments(group_id)) == 1
            return Group(id=group_id, version=version, enforce_role=top and self.new_group_enforces_role())

        return make

    # -- the update pipeline ------------------------------------------------------

    def _next_version(self, after: Group) -> str:
        """Request time, strictly after the root `after` (versions are keys)."""
        now = self._time_ms()
        if after.version:
            now = max(now, parse_ms(after.version) + 1)
        return format_ms(now)

    async def update(
        self,
        change: Change,
        *,
        force: bool = False,
        restart: Sequence[str] = (),
        to_kill: Mapping[str, list[str]] | None = None,
        dry_run: bool = False,
        announce: Callable[[Group], None] | None = None,
        guard: Guard | None = None,
    ) -> DeploymentPlan:
        """Apply `change(root, version)` and deploy the result.

        `dry_run=True` computes and returns the plan without storing or
        deploying anything (`PUT /v2/groups?dryRun=true`).  `announce(new_root)`
        runs once the change is stored, before `group_change_success` is
        published (the API's `api_post_event` comes first, as in Marathon).
        `guard(changes)` may refuse the change by raising (authorization).

        Changes are applied one after the other, in the order they arrive;
        those that arrive while one is being stored are applied together,
        each to the root the previous one made, and stored in one commit.
        """
        if dry_run:
            async with self._lock:
                version = self._next_version(self.root)
                return self._prepare(change, version, restart, to_kill, guard, self.root)[1]
        req = _Pending(change, force, tuple(restart), to_kill, announce, guard)
        self._queue.append(req)
        try:
            async with self._lock:
                while not req.done:
                    await self._apply_queued()
        except BaseException:
            if not req.done and req in self._queue:
                self._queue.remove(req)
            raise
        if req.error is not None:
            raise req.error
        assert req.plan is not None
        return req.plan

    def _prepare(
        self,
        change: Change,
        version: str,
        restart: Sequence[str],
        to_kill: Mapping[str, list[str]] | None,
        guard: Guard | None,
        original: Group,
    ) -> tuple[Group, DeploymentPlan, TreeDiff]:
        """The target root, its plan and its difference from `original`
        (nothing is stored); authorization (`guard`) and policy plugins are
        applied to what the change does."""
        target = change(original, version)
        target = planning.assign_service_ports(
            original, target, port_min=self._config.local_port_min, port_max=self._config.local_port_max,
            in_use=self._ports_of(original),
        )
        target = planning.stamp_versions(original, target, version, restart=restart)
        target = _with_root_version(target, version)
        change_diff = diff(original, target)
        planning.validate_root(target, original, change_diff)
        if guard is not None or self._policy is not None:
            changes = planning.root_changes(original, target, change_diff)
            if guard is not None:
                guard(changes)
            if self._policy is not None:
                violations = self._policy(changes)
                if violations:
                    raise ValidationFailed(violations)
        plan = planning.compute_plan(
            original,
            target,
            plan_id=str(uuid.uuid4()),
            version=version,
            original_version=original.version,
            target_version=version,
            to_kill=to_kill,
            change=change_diff,
        )
        return target, plan, change_diff

    def _failed(self, req: _Pending, version: str, exc: BaseException) -> None:
        req.error, req.done = exc, True
        if not isinstance(exc, AppLocked | Forbidden):  # Marathon publishes nothing for these
            self._bus.publish(GroupChangeFailed(timestamp=self._bus.now(), group_id="/", version=version, reason=str(exc)))

    async def _apply_queued(self) -> None:
        """Stage the queued changes in order on the current root, commit them
        together, then install each root and start each deployment in order.

        A change that touches an app of a deployment staged in this same
        batch waits for the next batch, where it sees that deployment running
        (409, or cancels it with `force`), exactly as if it had come alone.
        """
        root = self.root
        limit = self._config.max_running_deployments
        running = len(self._deployments.running())
        staged: list[_Staged] = []
        staged_apps: set[str] = set()
        doomed: set[str] = set()  # deployments that forced changes of this batch cancel
        while self._queue:
            req = self._queue[0]
            version = self._next_version(root)
            try:
                if running + len(staged) >= limit:
                    raise TooManyDeployments(limit)
                target, plan, change_diff = self._prepare(req.change, version, req.restart, req.to_kill, req.guard, root)
                if staged and not staged_apps.isdisjoint(plan.affected_apps):
                    break
                conflicts = [c for c in self._deployments.conflicts(plan.affected_apps) if c not in doomed]
                if conflicts and not req.force:
                    raise AppLocked(conflicts)
                edited = [(o, a) for o, a in change_diff.changed_apps if o != a]
                # Encoded now: a value too large to store fails this change
                # alone, not the others of its batch.
                ops = [*self._repo.root_ops(target, [a for _, a in edited]), self._repo.deployment_put(plan)]
            except Exception as exc:
                self._queue.popleft()
                self._failed(req, version, exc)
                continue
            self._queue.popleft()
            carry_app_map(root, target, change_diff)
            self._ports_after(root, target, change_diff)
            staged.append(_Staged(req, root, target, plan, change_diff, edited, conflicts, ops))
            staged_apps.update(plan.affected_apps)
            doomed.update(conflicts)
            root = target
        if not staged:
            return

        ops = []
        for st in staged:
            ops += st.ops
            ops.extend(self._repo.deployment_delete(c) for c in st.conflicts)
        try:
            await self._repo.commit(ops)
        except Exception as exc:
            for st in staged:
                self._failed(st.req, st.target.version, exc)
            return
        except BaseException:
            # Not stored (a commit that started always finishes): the changes
            # go back to the front of the queue for whoever holds the lock next.
            self._queue.extendleft(st.req for st in reversed(staged))
            raise

        with trio.CancelScope(shield=True):  # stored: now make it so in memory, whatever happens
            for st in staged:
                for c in st.conflicts:
                    await self._deployments.cancel(c, CANCELLED)
                for old, app in st.edited:
                    verb = "created" if old is None else "updated"
                    log.info("app %s app=%s version=%s instances=%d", verb, app.id, app.version, app.instances)
                for app in st.diff.removed_apps:
                    log.info("app deleted app=%s", app.id)
                self.root = st.target
                self._dirty = True
                self._deployments.start(st.plan, st.original, st.target)
                if st.req.announce is not None:
                    st.req.announce(st.target)
                self._bus.publish(GroupChangeSuccess(timestamp=self._bus.now(), group_id="/", version=st.target.version))
                st.req.plan, st.req.done = st.plan, True

    async def update_without_deployment(self, change: Change) -> str:
        """Store a change that must not deploy anything (e.g. `PATCH /v2/groups`
        changing `enforceRole`); refused if it would change any app.  Returns
        the new root version."""
        async with self._lock:
            version = self._next_version(self.root)
            target = _with_root_version(change(self.root, version), version)
            if target.app_map() != self.root.app_map():
                raise ValueError("update_without_deployment must not change apps")
            planning.validate_root(target)
            await self._repo.commit(self._repo.root_ops(target, []))
            self.root = target
            self._dirty = True
            self._bus.publish(GroupChangeSuccess(timestamp=self._bus.now(), group_id="/", version=version))
            return version

    def _ports_of(self, root: Group) -> Counter[int]:
        if self._ports is None or self._ports[0] is not root:
            self._ports = (root, planning.service_ports_in_use(root))
        return self._ports[1]

    def _ports_after(self, original: Group, target: Group, change: TreeDiff) -> None:
        """Carry the port count of `original` over to `target` by the change alone."""
        if self._ports is None or self._ports[0] is not original:
            return  # computed from scratch when next needed
        count = self._ports[1]
        gone = change.removed_apps + [o for o, _ in change.changed_apps if o is not None]
        planning.update_service_ports_in_use(count, gone, [a for _, a in change.changed_apps])
        self._ports = (target, count)


@dataclass(slots=True, eq=False)
class _Pending:
    """A change waiting for its turn (`update()`)."""

    change: Change
    force: bool
    restart: Sequence[str]
    to_kill: Mapping[str, list[str]] | None
    announce: Callable[[Group], None] | None
    guard: Guard | None
    done: bool = False
    plan: DeploymentPlan | None = None
    error: BaseException | None = None


@dataclass(slots=True)
class _Staged:
    """A change applied in memory, waiting for its batch's commit."""

    req: _Pending
    original: Group
    target: Group
    plan: DeploymentPlan
    diff: TreeDiff
    # (old or None, new) of the apps created or updated, not merely
    # replaced by an equal object
    edited: list[tuple[AppDefinition | None, AppDefinition]]
    conflicts: list[str]
    ops: list[Op]  # storing it: new app versions, root version and pointer, the plan


def _with_root_version(root: Group, version: str) -> Group:
    return structs.replace(root, version=version)
