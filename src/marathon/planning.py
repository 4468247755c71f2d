"""Deployment planning: (current root, target root) -> the steps between them.

Pure and deterministic (SPEC.md 4.1-4.2, 2.9, 8.4).  The groups service calls,
in this order: `assign_service_ports`, `stamp_versions`, `validate_root`,
`compute_plan`.  Time and ids come in as arguments.
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Collection, Iterable, Mapping

from msgspec import UNSET, Struct, structs

from .errors import IllegalArgument, ValidationFailed, Violation
from .models import pathid
from .models.app import AppDefinition, VersionInfo, config_differs
from .models.deployment import DeploymentAction, DeploymentPlan, DeploymentStep
from .models.group import Group, IdentityCache, TreeDiff, diff, map_changed_apps

# -- service ports (SPEC.md 8.4) ------------------------------------------------


def _service_ports(app: AppDefinition) -> list[int]:
    return app.service_ports


def _with_service_ports(app: AppDefinition, ports: list[int]) -> AppDefinition:
    if app.host_networking:
        defs = [structs.replace(d, port=p) for d, p in zip(app.port_definitions or [], ports, strict=True)]  # type: ignore[arg-type]
        return structs.replace(app, port_definitions=defs)
    container = app.container
    maps = [structs.replace(m, service_port=p) for m, p in zip(container.port_mappings or [], ports, strict=True)]  # type: ignore[union-attr, arg-type]
    return structs.replace(app, container=structs.replace(container, port_mappings=maps))  # type: ignore[arg-type]


def service_ports_in_use(root: Group) -> Counter[int]:
    """How many apps of `root` use each (non-zero) service port."""
    return Counter(p for a in root.transitive_apps() for p in _service_ports(a) if p)


def update_service_ports_in_use(
    count: Counter[int], gone: Iterable[AppDefinition], added: Iterable[AppDefinition]
) -> None:
    """Carry `count` (`service_ports_in_use`) over a change in place: the
    apps `gone` (removed, or the old versions of changed ones) no longer use
    their ports, the apps `added` (new or new versions) do."""
    for a in gone:
        for p in _service_ports(a):
            if p:
                count[p] -= 1
                if count[p] <= 0:
                    del count[p]
    count.update(p for a in added for p in _service_ports(a) if p)


def assign_service_ports(
    original: Group,
    target: Group,
    *,
    port_min: int = 10000,
    port_max: int = 20000,
    in_use: Collection[int] | None = None,
) -> Group:
    """Replace every service port 0 of new or changed apps by a free port.

    Preference: ports the same app had before (in range, not explicitly used
    by its new definition), then the lowest port in range that no app of the
    old or new root uses.  Unchanged apps keep their ports.  `in_use`, the
    ports of `original` (`service_ports_in_use`), saves a walk of the tree
    when the caller keeps it.
    """
    # An app the change did not touch (the same object) was assigned before.
    changed = diff(original, target).changed_apps
    to_assign = [(old, a) for old, a in changed if 0 in _service_ports(a)]
    if not to_assign:
        return target
    used = set(in_use if in_use is not None else service_ports_in_use(original))
    for _, a in changed:
        used.update(p for p in _service_ports(a) if p)
    free_iter = (p for p in range(port_min, port_max + 1) if p not in used)
    assigned: dict[str, AppDefinition] = {}
    for old, app in sorted(to_assign, key=lambda pair: pair[1].id):
        ports = _service_ports(app)
        explicit = {p for p in ports if p}
        reusable = [p for p in (_service_ports(old) if old else []) if port_min <= p <= port_max and p not in explicit]
        new_ports = []
        for p in ports:
            if p:
                new_ports.append(p)
                continue
            if reusable:
                new_ports.append(reusable.pop(0))
                continue
            nxt = next(free_iter, None)
            if nxt is None:
                raise IllegalArgument(f"All ports in the range [{port_min}-{port_max}) are already in use")
            used.add(nxt)
            new_ports.append(nxt)
        assigned[app.id] = _with_service_ports(app, new_ports)
    return map_changed_apps(original, target, lambda old, a: assigned.get(a.id, a))


# -- versioning (SPEC.md 2.9) ---------------------------------------------------


def stamp_versions(
    original: Group, target: Group, version: str, *, restart: Iterable[str] = ()
) -> Group:
    """Give every app of `target` its version and versionInfo for an update at `version`.

    Apps `target` shares with `original` keep theirs, except those in `restart`.
    """
    restart_ids = set(restart)

    def stamp(old: AppDefinition | None, app: AppDefinition) -> AppDefinition:
        if old is None:
            info = VersionInfo(last_scaling_at=version, last_config_change_at=version)
            return structs.replace(app, version=version, version_info=info)
        old_info = old.version_info if old.version_info is not UNSET else VersionInfo(
            last_scaling_at=old.version or version, last_config_change_at=old.version or version  # type: ignore[arg-type]
        )
        if app.id in restart_ids:
            info = structs.replace(old_info, last_config_change_at=version)  # type: ignore[arg-type]
            return structs.replace(app, version=version, version_info=info)
        if config_differs(old, app):
            info = VersionInfo(last_scaling_at=version, last_config_change_at=version)
            return structs.replace(app, version=version, version_info=info)
        if old.instances != app.instances:
            info = structs.replace(old_info, last_scaling_at=version)  # type: ignore[arg-type]
            return structs.replace(app, version=version, version_info=info)
        return structs.replace(app, version=old.version, version_info=old_info)

    return map_changed_apps(original, target, stamp, also=restart_ids)


# -- whole-root validation --------------------------------------------------------


def app_dependencies(root: Group) -> dict[str, set[str]]:
    """app id -> ids of the apps it depends on (group dependencies inherited and expanded)."""
    groups = {g.id: g for g in root.transitive_groups()}

    def expand(dep: str) -> set[str]:
        if root.app(dep) is not None:
            return {dep}
        g = groups.get(dep)
        return {a.id for a in g.transitive_apps()} if g else set()

    result: dict[str, set[str]] = {}
    for app in root.transitive_apps():
        deps: set[str] = set()
        for d in app.dependencies:
            deps |= expand(d)
        for anc in pathid.ancestors(app.id):
            g = groups.get(anc)
            if g:
                for d in g.dependencies:
                    deps |= expand(d)
        deps.discard(app.id)
        result[app.id] = deps
    return result


def dependency_depths(deps: Mapping[str, set[str]]) -> dict[str, int]:
    """Length of the longest dependency path starting at each app; raises on cycles."""
    depth: dict[str, int] = {}
    visiting: set[str] = set()

    def visit(a: str) -> int:
        if a in depth:
            return depth[a]
        if a in visiting:
            raise ValidationFailed([Violation("/", "Dependency graph has cyclic dependencies.")])
        visiting.add(a)
        d = 1 + max((visit(b) for b in deps.get(a, ()) if b in deps), default=0)
        visiting.discard(a)
        depth[a] = d
        return d

    for a in sorted(deps):
        visit(a)
    return depth


def has_dependencies(root: Group, original: Group | None = None, change: TreeDiff | None = None) -> bool:
    """True if any app or group of the tree declares a dependency.

    With `original` and `change` (their `diff`), counted from `original`'s
    count by the change alone when that count is remembered.
    """
    return dependency_count(root, original, change) > 0


def dependency_count(root: Group, original: Group | None = None, change: TreeDiff | None = None) -> int:
    """How many apps and groups of the tree declare dependencies (remembered
    for the last few roots, by identity; see `has_dependencies`)."""
    hit = _DEPENDENCY_COUNTS.get(root)
    if hit is not None:
        return hit
    known = _DEPENDENCY_COUNTS.get(original) if original is not None else None
    if known is not None and change is not None:
        n = known
        for old_app, app in change.changed_apps:
            n += bool(app.dependencies) - (bool(old_app.dependencies) if old_app is not None else 0)
        n -= sum(1 for a in change.removed_apps if a.dependencies)
        for old_group, g in change.changed_groups:
            n += bool(g.dependencies) - (bool(old_group.dependencies) if old_group is not None else 0)
        n -= sum(1 for g in change.removed_groups if g.dependencies)
    else:
        n = sum(1 for g in root.transitive_groups() if g.dependencies)
        n += sum(1 for a in root.transitive_apps() if a.dependencies)
    _DEPENDENCY_COUNTS.put(root, n)
    return n


_DEPENDENCY_COUNTS: IdentityCache[Group, int] = IdentityCache()


def validate_root(root: Group, original: Group | None = None, change: TreeDiff | None = None) -> None:
    """Rules over the whole tree: id clashes, membership, dependency cycles.

    With `original` (the root `root` was made from, already valid), only
    what changed is checked: groups it shares unchanged, and the ids a
    changed group already had, passed before (`change`: their `diff`, if known).
    """
    before = {g.id: g for g in original.transitive_groups()} if original is not None else {}
    violations: list[Violation] = []
    for g in root.transitive_groups():
        og = before.get(g.id)
        if og is g:
            continue
        old_apps = og.apps if og is not None else {}
        old_groups = og.groups if og is not None else {}
        # Only ids the group did not have, and ids now both an app and a group.
        check = (g.apps.keys() - old_apps.keys()) | (g.apps.keys() & g.groups.keys())
        for app_id in g.apps if check else ():
            if app_id not in check:
                continue
            if pathid.parent(app_id) != g.id:
                violations.append(Violation(f"/apps({app_id})", f"Identifier is not child of '{g.id}'"))
            if app_id in g.groups:
                violations.append(
                    Violation("/", "Groups and Applications may not have the same identifier.")
                )
        for child_id in g.groups:
            if child_id in old_groups:
                continue
            if pathid.parent(child_id) != g.id:
                violations.append(Violation(f"/groups({child_id})", f"Identifier is not child of '{g.id}'"))
    if violations:
        raise ValidationFailed(violations)
    if has_dependencies(root, original, change):
        dependency_depths(app_dependencies(root))  # raises on a cycle


# -- the plan (SPEC.md 4.2) -------------------------------------------------------


def compute_plan(
    original: Group,
    target: Group,
    *,
    plan_id: str,
    version: str,
    original_version: str,
    target_version: str,
    to_kill: Mapping[str, list[str]] | None = None,
    change: TreeDiff | None = None,
) -> DeploymentPlan:
    """The steps from `original` to `target` (`change`: their `diff`, if the caller has it)."""
    to_kill = to_kill or {}
    change = change or diff(original, target)
    steps: list[DeploymentStep] = []

    stops = [DeploymentAction(action="StopApplication", app=a) for a in sorted(a.id for a in change.removed_apps)]
    if stops:
        steps.append(DeploymentStep(actions=stops))
    starts = [
        DeploymentAction(action="StartApplication", app=a, scale_to=0)
        for a in sorted(new.id for old, new in change.changed_apps if old is None)
    ]
    if starts:
        steps.append(DeploymentStep(actions=starts))

    # Apps the change did not touch have nothing to do, unless some of
    # their instances are to be killed.
    pairs = {new.id: (old, new) for old, new in change.changed_apps}
    for app_id in to_kill:
        if app_id not in pairs and (app := target.app(app_id)) is not None:
            pairs[app_id] = (app, app)
    depths = dependency_depths(app_dependencies(target)) if has_dependencies(target, original, change) else {}
    layers: dict[int, list[DeploymentAction]] = {}
    for app_id in sorted(pairs):
        old, new = pairs[app_id]
        action = _action_for(old, new, to_kill.get(app_id, []))
        if action is not None:
            layers.setdefault(depths.get(app_id, 1), []).append(action)
    for depth in sorted(layers):
        steps.append(DeploymentStep(actions=layers[depth]))

    return DeploymentPlan(
        id=plan_id,
        version=version,
        original_version=original_version,
        target_version=target_version,
        steps=steps,
    )


def _action_for(old: AppDefinition | None, new: AppDefinition, to_kill: list[str]) -> DeploymentAction | None:
    if old is None:
        return DeploymentAction(action="ScaleApplication", app=new.id, scale_to=new.instances)
    if (old is new or old == new) and not to_kill:
        return None
    old_info, new_info = old.version_info, new.version_info
    config_changed = (
        old_info is UNSET
        or new_info is UNSET
        or old_info.last_config_change_at != new_info.last_config_change_at  # type: ignore[union-attr]
    )
    if new.instances == 0 or not config_changed:
        return DeploymentAction(action="ScaleApplication", app=new.id, scale_to=new.instances, to_kill=list(to_kill))
    return DeploymentAction(action="RestartApplication", app=new.id)


# -- scaling proposition (SPEC.md 4.6) ------------------------------------------

_KILL_WEIGHT = {"Unreachable": 1, "Staging": 2, "Starting": 3, "Running": 4}


def _kill_key(inst, youngest_first: bool):  # type: ignore[no-untyped-def]
    """Sort key: lower sorts first = killed first."""
    cond = inst.state.condition
    weight = _KILL_WEIGHT.get(cond, 5)
    task = inst.task
    if cond == "Staging":
        ts = task.staged_at if task else None
    elif cond == "Starting":
        ts = inst.state.since
    else:
        ts = inst.state.active_since
    if ts is None:
        # Without a timestamp an instance is killed first within its weight.
        return (weight, 0, 0)
    return (weight, 1, -ts if youngest_first else ts)


def scaling_proposition(instances, scale_to: int, *, sentenced=(), kill_selection: str = "YOUNGEST_FIRST"):  # type: ignore[no-untyped-def]
    """Which instances to decommission and how many to start to reach `scale_to`.

    `instances` are all instances of the app; only those with goal Running and
    not UnreachableInactive form the running set.  Returns
    `(to_decommission: list[Instance], to_start: int)`.
    """
    running = [
        i for i in instances
        if i.state.goal == "Running" and i.state.condition != "UnreachableInactive"
    ]
    sentenced_ids = set(sentenced)
    condemned = [i for i in running if i.instance_id in sentenced_ids]
    count = max(len(running) - scale_to, len(condemned))
    if count <= len(condemned):
        # Nothing beyond the sentenced ones dies: no need to order the rest.
        return condemned[:count], max(0, scale_to - len(running) + count)
    rest = sorted(
        (i for i in running if i.instance_id not in sentenced_ids),
        key=lambda i: _kill_key(i, kill_selection == "YOUNGEST_FIRST"),
    )
    victims = (condemned + rest)[:count]
    to_start = max(0, scale_to - len(running) + count)
    return victims, to_start


def kill_queue(old_active, considered_healthy):  # type: ignore[no-untyped-def]
    """Old instances in kill order: those not considered healthy first (stable)."""
    return sorted(old_active, key=lambda i: 1 if considered_healthy(i) else 0)


# -- rolling restart arithmetic (SPEC.md 4.4) ------------------------------------


def restart_capacity(
    *,
    instances: int,
    minimum_health_capacity: float,
    maximum_over_capacity: float,
    healthy: int,
    current: int,
    resident: bool = False,
) -> tuple[int, int]:
    """`(kill_now, max_capacity)` at the start of a RestartApplication.

    `instances` is N, `healthy` is H (goal-Running instances considered
    healthy), `current` is the number of instances of the app.
    """
    import math

    n = instances
    # Round away float noise first: 10 * 0.7 must be 7, not 7.000000000000001.
    min_healthy = math.ceil(round(n * minimum_health_capacity, 9))
    max_capacity = math.floor(round(n * (1 + maximum_over_capacity), 9))
    kill_now = max(0, healthy - min_healthy)
    if min_healthy == max_capacity and max_capacity <= healthy:
        if resident:
            kill_now = healthy - min_healthy + 1
        else:
            max_capacity += 1
    if n < current:
        kill_now = max(current - n, kill_now)
    return kill_now, max_capacity


def restart_starts(*, instances: int, max_capacity: int, old_active: int, started: int) -> int:
    """How many new instances may be launched now (SPEC.md 4.4 step 2)."""
    left = max(0, max_capacity - old_active - started)
    return min(max(0, instances - started), left)


# -- reverting a deployment (SPEC.md 4.7) ---------------------------------------------


def revert(original: Group, target: Group, current: Group, *, version: str) -> Group:
    """Undo what the plan original -> target changed, applied to `current`.

    Apps that differ between original and target get their original definition
    back (deleted ones are re-created) or, if the plan created them, are removed.
    Groups, innermost first: groups the plan removed come back with their old
    dependencies, dependency changes are undone, and groups the plan added are
    removed if they are empty now (otherwise only the dependencies it added go).
    """
    from .models.group import put_app, remove_app, update_group

    o_apps, t_apps = original.app_map(), target.app_map()
    result = current
    for app_id in sorted(set(o_apps) | set(t_apps)):
        old, new = o_apps.get(app_id), t_apps.get(app_id)
        if old == new:
            continue
        result = put_app(result, old, version=version) if old is not None else remove_app(result, app_id, version=version)

    o_groups = {g.id: g for g in original.transitive_groups()}
    t_groups = {g.id: g for g in target.transitive_groups()}
    for gid in sorted(set(o_groups) | set(t_groups), key=lambda g: -len(pathid.segments(g))):
        if gid == pathid.ROOT:
            continue
        og, tg = o_groups.get(gid), t_groups.get(gid)
        if og is not None and tg is None:
            result = update_group(
                result, gid,
                lambda g, og=og: structs.replace(g, dependencies=list(og.dependencies)) if g is not None
                else Group(id=og.id, dependencies=list(og.dependencies), enforce_role=og.enforce_role, version=version),
                version=version,
            )
        elif og is not None and tg is not None and set(og.dependencies) != set(tg.dependencies):
            added, removed = set(tg.dependencies) - set(og.dependencies), set(og.dependencies) - set(tg.dependencies)
            result = update_group(
                result, gid,
                lambda g, a=added, r=removed: None if g is None
                else structs.replace(g, dependencies=sorted((set(g.dependencies) - a) | r)),
                version=version,
            )
        elif og is None and tg is not None:
            cg = result.group(gid)
            if cg is None:
                continue
            if not cg.apps and not cg.groups:
                result = update_group(result, gid, lambda g: None, version=version)
            else:
                added = set(tg.dependencies)
                result = update_group(
                    result, gid,
                    lambda g, a=added: None if g is None else structs.replace(g, dependencies=sorted(set(g.dependencies) - a)),
                    version=version,
                )
    return result


# -- what a change does (for authorization and policy) ---------------------------------


class RootChanges(Struct, frozen=True, kw_only=True):
    """The apps and groups a change creates, updates and removes."""

    created_apps: list[AppDefinition]
    updated_apps: list[AppDefinition]
    removed_apps: list[AppDefinition]
    created_groups: list[Group]
    updated_groups: list[Group]
    removed_groups: list[Group]

    @property
    def changed_apps(self) -> list[AppDefinition]:
        return self.created_apps + self.updated_apps


def root_changes(original: Group, target: Group, change: TreeDiff | None = None) -> RootChanges:
    """Apps compare by definition (a restart or scale is an update); groups by
    their own fields (dependencies, enforceRole), not by their contents.
    `change`: the two roots' `diff`, if the caller has it."""
    change = change or diff(original, target)

    def group_fields(g: Group) -> tuple:
        return (sorted(g.dependencies), g.enforce_role)

    by_id = operator.attrgetter("id")
    return RootChanges(
        created_apps=sorted((a for o, a in change.changed_apps if o is None), key=by_id),
        updated_apps=sorted((a for o, a in change.changed_apps if o is not None and o != a), key=by_id),
        removed_apps=sorted(change.removed_apps, key=by_id),
        created_groups=sorted(
            (g for o, g in change.changed_groups if o is None and g.id != pathid.ROOT), key=by_id),
        updated_groups=sorted(
            (g for o, g in change.changed_groups
             if o is not None and g.id != pathid.ROOT and group_fields(o) != group_fields(g)), key=by_id),
        removed_groups=sorted((g for g in change.removed_groups if g.id != pathid.ROOT), key=by_id),
    )
