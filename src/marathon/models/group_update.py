"""Group updates: the body of `POST`/`PUT /v2/groups` and how it changes the tree.

A `GroupUpdate` (RAML `GroupUpdate`) asks for exactly one of three things
(SPEC.md 1.5, 3.2, 3.3):

* `{"version": ts}` - roll the group subtree back to its state in the stored
  root version `ts` (`rollback_group`);
* `{"scaleBy": f}` - multiply the instances of every app below the group by
  `f`, rounding up (`scale_group`);
* anything else - a structural update (`apply_group_update`): listed `groups`
  and `apps` *replace* the group's child groups and apps, absent keys leave
  them alone, `dependencies` are replaced when present; ids inside are
  relative to the group they appear in.

Everything here is pure: the root group, the request time and the facts the
app rules need come in as arguments, the new root goes out.  Bodies are
decoded once (`decode_group_update`, play-json error keys as
`app_decode` produces them for apps); semantic problems anywhere in the tree
are collected with their JSON paths (`/groups(0)/apps(1)/cmd`) and raised
together as one `ValidationFailed`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from collections.abc import Callable
from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, Struct, UnsetType, structs

from ..errors import GroupNotFound, IllegalArgument, InvalidJson, ValidationFailed, Violation
from . import pathid
from .app import MAX_INSTANCES, AppDefinition
from .app_rules import (
    MAX_ID_DEPTH,
    AppContext,
    decode_app,
    instances_over_limit,
    normalize_app,
    too_deep,
)
from .group import Group, empty_root, update_group
from .timestamp import canonical, is_timestamp

__all__ = [
    "ENFORCE_ROLE_CHANGE",
    "GroupPartialUpdate",
    "GroupUpdate",
    "NOT_ALONE",
    "apply_group_update",
    "apply_update",
    "decode_group_partial_update",
    "decode_group_update",
    "remove_group",
    "rollback_group",
    "scale_group",
    "update_mode",
]


class GroupUpdate(Struct, rename="camel", kw_only=True, frozen=True):
    """A group update: exactly one of a `version` rollback, a `scaleBy`, or a
    structural update, where listed `apps`/`groups` replace the existing ones
    and absent properties leave them alone.  Ids are relative to the group."""

    # Absent fields are UNSET.  `apps` are decoded but not normalized: their
    # ids and dependencies are still relative to this group.
    id: str | UnsetType = UNSET
    apps: list[AppDefinition] | UnsetType = UNSET
    groups: list[GroupUpdate] | UnsetType = UNSET
    dependencies: list[str] | UnsetType = UNSET
    scale_by: Annotated[float, Meta(ge=0)] | UnsetType = UNSET
    version: Annotated[str, Meta(extra_json_schema={"format": "date-time"})] | UnsetType = UNSET
    enforce_role: bool | UnsetType = UNSET


class GroupPartialUpdate(Struct, rename="camel", kw_only=True, frozen=True):
    """The body of `PATCH /v2/groups/{id}`: `enforceRole` of a top-level group
    (absent: the `--new_group_enforce_role` default)."""

    enforce_role: bool | UnsetType = UNSET


# -- messages (Marathon's wording) ------------------------------------------------------

NOT_ALONE = "not allowed in conjunction with other properties."
ENFORCE_ROLE_CHANGE = (
    "enforceRole cannot be modified in a request that adds, removes or modifies services; "
    "please make these changes in separate requests."
)


def _enforce_role_not_top_level(group_id: str) -> str:
    return f"enforceRole can only be set for top-level groups, and {group_id} is not top-level"


def _not_child(parent: str) -> str:
    return f"Identifier is not child of '{parent}'"


# Our wording: Marathon keeps the last of two entries with the same id.
def _defined_twice(kind: str, item_id: str) -> str:
    return f"{kind} {item_id} is defined more than once with different definitions"


# -- decoding (SPEC.md 1.2: shape errors are 422 "Invalid JSON") ----------------------------

_SEGMENT = re.compile(pathid.ID_SEGMENT_REGEX)
_MAX_FLOAT = sys.float_info.max


def _raml_path_id_error(raw: str) -> str | None:
    """The play-json key for a string that is not a RAML `PathId`, or None."""
    if not raw:
        return "error.minLength"
    if not all(p in ("", "..") or _SEGMENT.match(p) for p in raw.split("/")):
        return "error.pattern"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def decode_group_update(obj: Any) -> GroupUpdate:
    """A JSON value (from `decode_json`) -> `GroupUpdate`, apps decoded by the app rules.

    Every shape problem in the tree is reported at once as `InvalidJson`
    (`/groups(0)/apps(1)/cmd: error.expected.jsstring`).  `null` means absent;
    unknown properties are ignored, as Marathon ignores them.  Nested groups
    must name their `id`.
    """
    problems: list[Violation] = []
    update = _decode_group(obj, "", problems, nested=False)
    if problems:
        raise InvalidJson(problems)
    return update


def _decode_group(obj: Any, path: str, out: list[Violation], *, nested: bool) -> GroupUpdate:
    if not isinstance(obj, dict):
        out.append(Violation(path or "/", "error.expected.jsobject"))
        return GroupUpdate()
    fields: dict[str, Any] = {}

    raw_id = obj.get("id")
    if raw_id is None:
        if nested:
            out.append(Violation(f"{path}/id", "error.path.missing"))
    elif not isinstance(raw_id, str):
        out.append(Violation(f"{path}/id", "error.expected.jsstring"))
    elif (key := _raml_path_id_error(raw_id)) is not None:
        out.append(Violation(f"{path}/id", key))
    else:
        fields["id"] = raw_id

    apps = obj.get("apps")
    if apps is not None:
        if not isinstance(apps, list):
            out.append(Violation(f"{path}/apps", "error.expected.jsarray"))
        else:
            decoded = []
            for i, raw in enumerate(apps):
                try:
                    decoded.append(decode_app(raw))
                except InvalidJson as exc:
                    out.extend(_prefixed(exc.violations, f"{path}/apps({i})"))
            fields["apps"] = decoded

    groups = obj.get("groups")
    if groups is not None:
        if not isinstance(groups, list):
            out.append(Violation(f"{path}/groups", "error.expected.jsarray"))
        else:
            fields["groups"] = [
                _decode_group(g, f"{path}/groups({i})", out, nested=True) for i, g in enumerate(groups)
            ]

    deps = obj.get("dependencies")
    if deps is not None:
        if not isinstance(deps, list):
            out.append(Violation(f"{path}/dependencies", "error.expected.jsarray"))
        else:
            for i, dep in enumerate(deps):
                if not isinstance(dep, str):
                    out.append(Violation(f"{path}/dependencies({i})", "error.expected.jsstring"))
                elif (key := _raml_path_id_error(dep)) is not None:
                    out.append(Violation(f"{path}/dependencies({i})", key))
            fields["dependencies"] = [d for d in deps if isinstance(d, str)]

    scale_by = obj.get("scaleBy")
    if scale_by is not None:
        if not _is_number(scale_by):
            out.append(Violation(f"{path}/scaleBy", "error.expected.jsnumber"))
        elif scale_by < 0:
            out.append(Violation(f"{path}/scaleBy", "error.min"))
        elif scale_by > _MAX_FLOAT:  # an integer like 10**400: no float holds it
            out.append(Violation(f"{path}/scaleBy", "error.max"))
        else:
            fields["scale_by"] = float(scale_by)

    version = obj.get("version")
    if version is not None:
        if not isinstance(version, str) or not is_timestamp(version):
            out.append(Violation(f"{path}/version", "error.expected.date.isoformat"))
        else:
            fields["version"] = canonical(version)

    enforce = obj.get("enforceRole")
    if enforce is not None:
        if not isinstance(enforce, bool):
            out.append(Violation(f"{path}/enforceRole", "error.expected.jsboolean"))
        else:
            fields["enforce_role"] = enforce
    return GroupUpdate(**fields)


def decode_group_partial_update(obj: Any) -> GroupPartialUpdate:
    """The body of `PATCH /v2/groups/{id}`: `{"enforceRole": bool}` (may be absent)."""
    if not isinstance(obj, dict):
        raise InvalidJson([Violation("/", "error.expected.jsobject")])
    enforce = obj.get("enforceRole")
    if enforce is None:
        return GroupPartialUpdate()
    if not isinstance(enforce, bool):
        raise InvalidJson([Violation("/enforceRole", "error.expected.jsboolean")])
    return GroupPartialUpdate(enforce_role=enforce)


def _prefixed(violations: list[Violation], prefix: str) -> list[Violation]:
    """Violations of a nested object, re-rooted at `prefix` (its `/` becomes the prefix)."""
    return [Violation(prefix if v.path == "/" else prefix + v.path, v.message) for v in violations]


# -- which kind of update ---------------------------------------------------------------------

Mode = Literal["rollback", "scale", "structural"]


def update_mode(update: GroupUpdate) -> Mode:
    """Rollback, scale or structural update; refuses `version`/`scaleBy` mixed with more.

    `version` and `scaleBy` may only come with `id` (422 `not allowed in
    conjunction with other properties.` at `/version` and/or `/scaleBy`);
    when both come together the rollback wins and `scaleBy` is ignored.
    """
    special = [name for name in ("version", "scaleBy") if _given(update, name)]
    if not special:
        return "structural"
    others = [n for n in ("apps", "groups", "dependencies", "enforceRole") if _given(update, n)]
    if others:
        raise ValidationFailed([Violation(f"/{name}", NOT_ALONE) for name in special])
    return "rollback" if update.version is not UNSET else "scale"


_ATTR = {"scaleBy": "scale_by", "enforceRole": "enforce_role"}


def _given(update: GroupUpdate, wire_name: str) -> bool:
    return getattr(update, _ATTR.get(wire_name, wire_name)) is not UNSET


# -- scaleBy (SPEC.md 3.3) ---------------------------------------------------------------------


def _scaled(instances: int, factor: float) -> int:
    # Round away float noise first: 10 * 0.7 must be 7, not 8.  Like
    # Marathon's `toInt`, a product beyond its 32-bit `Int` saturates.
    product = instances * factor
    if not math.isfinite(product) or product >= MAX_INSTANCES:
        return MAX_INSTANCES
    return math.ceil(round(product, 9))


def _restamp(group: Group, version: str, fn: Callable[[AppDefinition], AppDefinition]) -> Group:
    """`fn` applied to every app of the subtree; every group of it gets `version`."""
    return structs.replace(
        group,
        apps={aid: fn(a) for aid, a in group.apps.items()},
        groups={gid: _restamp(g, version, fn) for gid, g in group.groups.items()},
        version=version,
    )


def scale_group(
    root: Group,
    group_id: str,
    factor: float,
    version: str,
    *,
    new_group: Callable[[str], Group] | None = None,
    max_instances: int | None = None,
) -> Group:
    """Every app below `group_id`: `instances := ceil(instances * factor)`.

    A missing group is created empty (Marathon's `mkdir -p`), so scaling it
    changes nothing else.  Pods would not be scaled.  An app that would get
    more than `max_instances` (--max_instances_per_app) refuses the whole
    scale with `ValidationFailed`, one violation per such app at
    `/apps/<app id>/instances` (Marathon's root-group paths, `/apps//g/a/...`).
    """
    if factor < 0:
        raise InvalidJson([Violation("/scaleBy", "error.min")])
    over: list[Violation] = []

    def scale(app: AppDefinition) -> AppDefinition:
        n = _scaled(app.instances, factor)
        if max_instances is not None and n > max_instances:
            shown = n if n < MAX_INSTANCES else f"at least {MAX_INSTANCES}"
            over.append(Violation(f"/apps/{app.id}/instances", instances_over_limit(shown, max_instances)))
        return structs.replace(app, instances=n)

    def change(old: Group | None) -> Group:
        base = old if old is not None else _make(group_id, version, new_group)
        return _restamp(base, version, scale)

    scaled = update_group(root, group_id, change, version=version, new_group=new_group)
    if over:
        raise ValidationFailed(over)
    return _with_version(scaled, version)


# -- version rollback (SPEC.md 3.3) -----------------------------------------------------------


def rollback_group(
    root: Group,
    group_id: str,
    snapshot_root: Group | None,
    version: str,
    *,
    at: str | None = None,
    new_group: Callable[[str], Group] | None = None,
) -> Group:
    """Replace the subtree `group_id` by the one in `snapshot_root` (a stored root version).

    `at` names the requested version for the error (`snapshot_root.version`
    by default); a snapshot that is missing, or lacks the group, is refused
    with 422 `Group /x not available in version <ts>`.  The usual planning
    then restarts what differs and keeps what is identical.  Top-level
    groups that exist keep their current `enforceRole`.
    """
    snapshot = snapshot_root.group(group_id) if snapshot_root is not None else None
    if snapshot is None:
        when = at or (snapshot_root.version if snapshot_root is not None else "")
        raise IllegalArgument(f"Group {group_id} not available in version {when}")
    restored = _keep_enforce_roles(structs.replace(snapshot, version=version), root)
    return _with_version(
        update_group(root, group_id, lambda _old: restored, version=version, new_group=new_group), version
    )


def _keep_enforce_roles(restored: Group, root: Group) -> Group:
    """`enforceRole` is changed by PATCH only: a rollback keeps the current
    value of every top-level group that exists now."""
    depth = len(pathid.segments(restored.id))
    if depth == 0:
        groups = {gid: _keep_enforce_roles(g, root) for gid, g in restored.groups.items()}
        return structs.replace(restored, groups=groups, enforce_role=False)
    if depth == 1:
        current = root.group(restored.id)
        if current is not None:
            return structs.replace(restored, enforce_role=current.enforce_role)
    return restored


# -- delete -------------------------------------------------------------------------------------


def remove_group(root: Group, group_id: str, version: str) -> Group:
    """The root without the subtree `group_id` (the root itself is emptied).

    Raises `GroupNotFound` (404 `Group '/x' does not exist`) for a missing group.
    """
    if pathid.is_root(group_id):
        return empty_root(version)
    if root.group(group_id) is None:
        raise GroupNotFound(group_id)
    return _with_version(update_group(root, group_id, lambda _old: None, version=version), version)


# -- structural update (SPEC.md 3.2) -------------------------------------------------------------


AppContextFor = Callable[[str, str], AppContext]


@dataclasses.dataclass
class _Apply:
    """One structural update in progress: the original root and the violations found."""

    root: Group
    version: str
    app_context_for: AppContextFor
    new_group: Callable[[str], Group]
    modifies_services: bool
    violations: list[Violation] = dataclasses.field(default_factory=list)
    # Paths of `enforceRole` values that change an existing top-level group.
    enforce_role_changes: list[str] = dataclasses.field(default_factory=list)

    def add(self, path: str, message: str) -> None:
        self.violations.append(Violation(path, message))

    def default_enforce_role(self, top_id: str) -> bool:
        """`enforceRole` of a top-level group the update does not set: kept if it exists."""
        existing = self.root.group(top_id)
        if existing is not None:
            return existing.enforce_role
        return self.new_group(top_id).enforce_role

    def build(
        self, gid: str, update: GroupUpdate, current: Group | None, path: str, top_enforce: bool
    ) -> Group:
        """The new group `gid` from its update and its current state (None: new)."""
        if len(pathid.segments(gid)) > MAX_ID_DEPTH:
            self.add(f"{path}/id", too_deep(gid))
        is_top = len(pathid.segments(gid)) == 1
        given = update.enforce_role
        if given is True and not is_top:
            self.add(f"{path}/enforceRole", _enforce_role_not_top_level(gid))
        if is_top:
            enforce = given if given is not UNSET else self.default_enforce_role(gid)
            if current is not None and given is not UNSET and given != current.enforce_role:
                self.enforce_role_changes.append(f"{path}/enforceRole")
            top_enforce = bool(enforce)
        else:
            enforce = False
        for name in ("version", "scaleBy"):
            if path and _given(update, name):  # nested groups always carry an id
                self.add(f"{path}/{name}", NOT_ALONE)

        # Apps before child groups: the order Marathon reports violations in.
        apps = self.apps(gid, update, current, path, top_enforce)
        groups = self.child_groups(gid, update, current, path, top_enforce)
        if update.dependencies is UNSET:
            deps = list(current.dependencies) if current is not None else []
        else:
            deps = []
            for i, raw in enumerate(update.dependencies):
                for msg in pathid.segment_errors(raw):
                    self.add(f"{path}/dependencies({i})", msg)
                dep = pathid.resolve(raw, gid)
                if dep not in deps:
                    deps.append(dep)
        return Group(
            id=gid, apps=apps, groups=groups, dependencies=deps, version=self.version, enforce_role=bool(enforce)
        )

    def child_groups(
        self, gid: str, update: GroupUpdate, current: Group | None, path: str, top_enforce: bool
    ) -> dict[str, Group]:
        if update.groups is UNSET:
            return dict(current.groups) if current is not None else {}
        out: dict[str, Group] = {}
        seen: dict[str, GroupUpdate] = {}
        for i, child in enumerate(update.groups):
            p = f"{path}/groups({i})"
            raw = child.id
            if raw is UNSET:  # decode_group_update requires it; a caller-built update may not
                self.add(f"{p}/id", "error.path.missing")
                continue
            for msg in pathid.segment_errors(raw):
                self.add(f"{p}/id", msg)
            cid = pathid.resolve(raw, gid)
            if pathid.is_root(cid) or pathid.parent(cid) != gid:
                self.add(f"{p}/id", _not_child(gid))
                continue
            if cid in seen:
                if seen[cid] != child:
                    self.add(f"{p}/id", _defined_twice("Group", cid))
                continue  # identical duplicates collapse, as in Marathon's sets
            seen[cid] = child
            existing = current.groups.get(cid) if current is not None else None
            out[cid] = self.build(cid, child, existing, p, top_enforce)
        return out

    def apps(
        self, gid: str, update: GroupUpdate, current: Group | None, path: str, top_enforce: bool
    ) -> dict[str, AppDefinition]:
        if update.apps is UNSET:
            return dict(current.apps) if current is not None else {}
        out: dict[str, AppDefinition] = {}
        for i, raw in enumerate(update.apps):
            p = f"{path}/apps({i})"
            app_id = pathid.resolve(raw.id, gid)
            ctx = dataclasses.replace(self.app_context_for(app_id, gid), base=gid, enforce_role=top_enforce)
            try:
                app = normalize_app(raw, ctx)
            except ValidationFailed as exc:
                self.violations.extend(_prefixed(exc.violations, p))
                continue
            if pathid.parent(app.id) != gid:
                self.add(f"{p}/id", _not_child(gid))
                continue
            previous = out.get(app.id)
            if previous is not None:
                if previous != app:
                    self.add(f"{p}/id", _defined_twice("App", app.id))
                continue
            out[app.id] = app
        return out


def _modifies_services(update: GroupUpdate) -> bool:
    """Marathon's `updateModifiesServices`: rollback, scale, apps, or nested groups that do."""
    if update.version is not UNSET or update.scale_by is not UNSET or update.apps is not UNSET:
        return True
    return any(_modifies_services(g) for g in update.groups or ())


def _top_enforce_for(root: Group, group_id: str, new_group: Callable[[str], Group]) -> bool:
    """`enforceRole` of the top-level group above `group_id` (as it is, or would be if new)."""
    segs = pathid.segments(group_id)
    if len(segs) < 2:
        return False  # the root, or a top-level group (decided by the update itself)
    top = "/" + segs[0]
    existing = root.group(top)
    return existing.enforce_role if existing is not None else new_group(top).enforce_role


def apply_group_update(
    root: Group,
    group_id: str,
    update: GroupUpdate,
    *,
    version: str,
    app_context_for: AppContextFor,
    new_group: Callable[[str], Group],
) -> Group:
    """The root after the structural update `update` of the group `group_id` (SPEC.md 3.2).

    * `groups` present: the child groups are replaced - listed children are
      updated recursively (created if new), unlisted ones are removed;
    * `apps` present: the apps are replaced by the listed full definitions
      (normalized with `app_context_for(app_id, group_id)`, whose `base` and
      `enforce_role` are set here); apps must be direct children of the group;
    * `dependencies` present: replaced, resolved relative to the group;
    * absent keys leave things as they are; a new group is built from the
      update alone; missing ancestors are made with `new_group`;
    * `enforceRole` only on top-level groups, and not changed in a request
      that also changes services.  Omitted on a top-level group it keeps the
      stored value (new groups: `new_group`'s default).

    Identical app definitions come out equal to the stored ones, so planning
    keeps their versions.  Raises `ValidationFailed` with every violation.
    """
    if update_mode(update) != "structural":
        raise ValueError("a rollback or scale update is applied by rollback_group/scale_group")
    run = _Apply(
        root=root,
        version=version,
        app_context_for=app_context_for,
        new_group=new_group,
        modifies_services=_modifies_services(update),
    )
    if update.id is not UNSET:
        for msg in pathid.segment_errors(update.id):
            run.add("/id", msg)
    current = root.group(group_id)
    new = run.build(group_id, update, current, "", _top_enforce_for(root, group_id, new_group))
    if run.enforce_role_changes:
        # Marathon looks at the keys of the update only; removing a subgroup
        # with apps (a listed `groups` without it) removes services as well.
        before = {a.id for a in current.transitive_apps()} if current is not None else set()
        if run.modifies_services or before != {a.id for a in new.transitive_apps()}:
            run.violations.extend(Violation(p, ENFORCE_ROLE_CHANGE) for p in run.enforce_role_changes)
    if run.violations:
        raise ValidationFailed(run.violations)
    if pathid.is_root(group_id):
        return structs.replace(new, version=version)
    return _with_version(update_group(root, group_id, lambda _old: new, version=version, new_group=new_group), version)


def apply_update(
    root: Group,
    group_id: str,
    update: GroupUpdate,
    *,
    version: str,
    app_context_for: AppContextFor,
    new_group: Callable[[str], Group],
    snapshot_root: Group | None = None,
    max_instances: int | None = None,
) -> Group:
    """Apply any `GroupUpdate` to the group `group_id`: rollback, scale or structural.

    A rollback needs `snapshot_root`, the stored root version named by
    `update.version` (None if there is no such version).  `max_instances`
    (--max_instances_per_app) bounds a scale; apps of a structural update
    are bounded by their `AppContext`.
    """
    mode = update_mode(update)
    if mode == "rollback":
        return rollback_group(
            root, group_id, snapshot_root, version, at=update.version, new_group=new_group  # type: ignore[arg-type]
        )
    if mode == "scale":
        return scale_group(
            root, group_id, update.scale_by, version, new_group=new_group, max_instances=max_instances  # type: ignore[arg-type]
        )
    return apply_group_update(
        root, group_id, update, version=version, app_context_for=app_context_for, new_group=new_group
    )


# -- helpers ----------------------------------------------------------------------------------


def _make(group_id: str, version: str, new_group: Callable[[str], Group] | None) -> Group:
    if new_group is not None:
        return structs.replace(new_group(group_id), version=version)
    return Group(id=group_id, version=version)


def _with_version(root: Group, version: str) -> Group:
    return structs.replace(root, version=version)
