"""The groups service: owner of the current root group and of every change to it.

All changes go through `update()`, one at a time (SPEC.md 4.1): apply the
change to the current root, assign service ports, stamp versions, validate
the whole tree, compute the plan, check it against running deployments, then
commit the new app versions, the root version, the plan and the root pointer
in ONE atomic store commit.  Only after that is the new root swapped in and
the deployment started.  A request refused at any point leaves the stored
state and the in-memory root exactly as they were.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import trio
from msgspec import structs

from .. import planning
from ..errors import AppLocked, Forbidden, TooManyDeployments, ValidationFailed, Violation
from ..models import pathid
from ..models.app import AppDefinition
from ..models.deployment import DeploymentPlan
from ..models.events import GroupChangeFailed, GroupChangeSuccess
from ..models.group import Group, empty_root
from ..models.timestamp import format_ms, parse_ms
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
        self._dirty = False
        self._root: Group = empty_root()
        self._apps: dict[str, AppDefinition] = {}

    @property
    def root(self) -> Group:
        return self._root

    @root.setter
    def root(self, root: Group) -> None:
        # Every reader (each status update looks up its app) uses the index.
        self._root = root
        self._apps = root.app_map()

    async def load(self) -> None:
        """Load the current root (storing an empty one on first start)."""
        root = await self._repo.load_root()
        if root is None:
            root = empty_root(format_ms(self._time_ms()))
            await self._repo.commit(self._repo.root_ops(root, []))
        self.root = root
        log.info("root group loaded version=%s apps=%d", root.version, sum(1 for _ in root.transitive_apps()))

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
        return self._apps.get(app_id)

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

    def _next_version(self) -> str:
        """Request time, strictly after the current root version (versions are keys)."""
        now = self._time_ms()
        if self.root.version:
            now = max(now, parse_ms(self.root.version) + 1)
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
        """
        async with self._lock:
            version = self._next_version()
            if dry_run:
                return self._prepare(change, version, restart, to_kill, guard)[1]
            try:
                return await self._update_locked(change, version, force, restart, to_kill, announce, guard)
            except (AppLocked, Forbidden):
                raise  # not a failed change: Marathon publishes nothing for these
            except Exception as exc:
                self._bus.publish(
                    GroupChangeFailed(timestamp=self._bus.now(), group_id="/", version=version, reason=str(exc))
                )
                raise

    def _prepare(
        self,
        change: Change,
        version: str,
        restart: Sequence[str],
        to_kill: Mapping[str, list[str]] | None,
        guard: Guard | None = None,
    ) -> tuple[Group, DeploymentPlan]:
        """The target root and its plan (nothing is stored); authorization
        (`guard`) and policy plugins are applied to what the change does."""
        original = self.root
        target = change(original, version)
        target = planning.assign_service_ports(
            original, target, port_min=self._config.local_port_min, port_max=self._config.local_port_max
        )
        target = planning.stamp_versions(original, target, version, restart=restart)
        target = _with_root_version(target, version)
        planning.validate_root(target)
        if guard is not None or self._policy is not None:
            changes = planning.root_changes(original, target)
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
        )
        return target, plan

    async def update_without_deployment(self, change: Change) -> str:
        """Store a change that must not deploy anything (e.g. `PATCH /v2/groups`
        changing `enforceRole`); refused if it would change any app.  Returns
        the new root version."""
        async with self._lock:
            version = self._next_version()
            target = _with_root_version(change(self.root, version), version)
            if target.app_map() != self.root.app_map():
                raise ValueError("update_without_deployment must not change apps")
            planning.validate_root(target)
            await self._repo.commit(self._repo.root_ops(target, []))
            self.root = target
            self._dirty = True
            self._bus.publish(GroupChangeSuccess(timestamp=self._bus.now(), group_id="/", version=version))
            return version

    async def _update_locked(
        self,
        change: Change,
        version: str,
        force: bool,
        restart: Sequence[str],
        to_kill: Mapping[str, list[str]] | None,
        announce: Callable[[Group], None] | None = None,
        guard: Guard | None = None,
    ) -> DeploymentPlan:
        limit = self._config.max_running_deployments
        if len(self._deployments.running()) >= limit:
            raise TooManyDeployments(limit)
        original = self.root
        target, plan = self._prepare(change, version, restart, to_kill, guard)
        conflicts = self._deployments.conflicts(plan.affected_apps)
        if conflicts and not force:
            raise AppLocked(conflicts)

        old_apps = original.app_map()
        changed = [a for a in target.transitive_apps() if old_apps.get(a.id) != a]
        ops = self._repo.root_ops(target, changed)
        ops.append(self._repo.deployment_put(plan))
        ops.extend(self._repo.deployment_delete(c) for c in conflicts)
        await self._repo.commit(ops)

        for c in conflicts:
            await self._deployments.cancel(c, CANCELLED)
        for app in changed:
            verb = "created" if app.id not in old_apps else "updated"
            log.info("app %s app=%s version=%s instances=%d", verb, app.id, app.version, app.instances)
        for app_id in old_apps.keys() - {a.id for a in target.transitive_apps()}:
            log.info("app deleted app=%s", app_id)
        self.root = target
        self._dirty = True
        self._deployments.start(plan, original, target)
        if announce is not None:
            announce(target)
        self._bus.publish(GroupChangeSuccess(timestamp=self._bus.now(), group_id="/", version=version))
        return plan


def _with_root_version(root: Group, version: str) -> Group:
    return structs.replace(root, version=version)
