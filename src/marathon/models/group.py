"""Groups: the tree of apps rooted at `/`.

A `Group` is immutable; every change builds a new root that shares the
untouched subtrees with the old one.  All ids are absolute.  The functions
here are the tree operations everything else uses (find, put, remove, walk);
they know nothing about versions, plans or storage.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Collection, Iterator
from typing import Generic, NamedTuple, TypeVar

from msgspec import Struct, structs

from . import pathid
from .app import AppDefinition

K = TypeVar("K")
V = TypeVar("V")


class Group(Struct, frozen=True, kw_only=True, weakref=True):
    id: str
    apps: dict[str, AppDefinition] = {}
    groups: dict[str, Group] = {}
    dependencies: list[str] = []
    version: str = ""
    enforce_role: bool = False

    # -- reads -----------------------------------------------------------------

    def group(self, group_id: str) -> Group | None:
        """The group with this id in the subtree, or None."""
        if group_id == self.id:
            return self
        if not pathid.is_ancestor(self.id, group_id):
            return None
        node: Group | None = self
        for gid in pathid.ancestors(group_id)[len(pathid.ancestors(self.id)) + 1 :] + [group_id]:
            node = node.groups.get(gid) if node else None
            if node is None:
                return None
        return node

    def app(self, app_id: str) -> AppDefinition | None:
        parent = self.group(pathid.parent(app_id))
        return parent.apps.get(app_id) if parent else None

    def transitive_apps(self) -> Iterator[AppDefinition]:
        yield from self.apps.values()
        for g in self.groups.values():
            yield from g.transitive_apps()

    def transitive_groups(self) -> Iterator[Group]:
        yield self
        for g in self.groups.values():
            yield from g.transitive_groups()

    def app_map(self) -> dict[str, AppDefinition]:
        """app id -> app of the subtree.  Shared between callers: read only.

        Remembered for the last few groups asked (by identity: a Group never
        changes), since one update asks for the maps of the same two roots
        several times.
        """
        apps = _APP_MAPS.get(self)
        if apps is None:
            apps = {a.id: a for a in self.transitive_apps()}
            _APP_MAPS.put(self, apps)
        return apps

    def exists(self, path: str) -> bool:
        return self.app(path) is not None or self.group(path) is not None


class IdentityCache(Generic[K, V]):
    """What was computed for the last few objects, looked up by identity (for
    immutable objects such as roots).  Holds each object weakly: an object
    that goes away (the target of a refused change, which may hold a 10 MB
    definition) takes its entry with it rather than being kept alive by it,
    and its id cannot be mistaken for a later object's."""

    def __init__(self, kept: int = 4) -> None:
        self._kept = kept
        self._entries: dict[int, tuple[weakref.ref[K], V]] = {}

    def get(self, obj: K) -> V | None:
        hit = self._entries.get(id(obj))
        return hit[1] if hit is not None and hit[0]() is obj else None

    def put(self, obj: K, value: V) -> None:
        key, entries = id(obj), self._entries
        entries.pop(key, None)
        if len(entries) >= self._kept:
            del entries[next(iter(entries))]

        def forget(ref: weakref.ref[K]) -> None:
            entry = entries.get(key)
            if entry is not None and entry[0] is ref:
                del entries[key]

        entries[key] = (weakref.ref(obj, forget), value)


_APP_MAPS: IdentityCache[Group, dict[str, AppDefinition]] = IdentityCache()


def empty_root(version: str = "") -> Group:
    return Group(id=pathid.ROOT, version=version)


def _child_id(parent: str, path: str) -> str:
    """The id of the child of `parent` on the way to `path`."""
    depth = len(pathid.segments(parent)) + 1
    return "/" + "/".join(pathid.segments(path)[:depth])


def update_group(
    root: Group,
    group_id: str,
    fn: Callable[[Group | None], Group | None],
    *,
    version: str,
    new_group: Callable[[str], Group] | None = None,
) -> Group:
    """Replace the group `group_id` by `fn(old)`, creating missing ancestors.

    `fn` gets the existing group (or None) and returns the new group, or None
    to remove it.  Every group on the path is stamped with `version`, the way
    Marathon's putGroup does.  `new_group(id)` makes a missing ancestor (it
    decides `enforceRole` for new top-level groups).
    """
    make = new_group or (lambda gid: Group(id=gid, version=version))

    def rec(node: Group) -> Group | None:
        if node.id == group_id:
            return fn(node)
        child_id = _child_id(node.id, group_id)
        child = node.groups.get(child_id)
        if child is None:
            if fn(None) is None:
                return node  # removing something that is not there
            child = make(child_id)
        new_child = rec(child)
        groups = dict(node.groups)
        if new_child is None:
            groups.pop(child_id, None)
        else:
            groups[child_id] = new_child
        return structs.replace(node, groups=groups, version=version)

    if group_id == root.id:
        result = fn(root)
        return result if result is not None else empty_root(version)
    result = rec(root)
    assert result is not None
    return result


def put_app(root: Group, app: AppDefinition, *, version: str, new_group: Callable[[str], Group] | None = None) -> Group:
    def put(g: Group | None) -> Group:
        base = g or (new_group(pathid.parent(app.id)) if new_group else Group(id=pathid.parent(app.id), version=version))
        apps = dict(base.apps)
        apps[app.id] = app
        return structs.replace(base, apps=apps, version=version)

    return update_group(root, pathid.parent(app.id), put, version=version, new_group=new_group)


def remove_app(root: Group, app_id: str, *, version: str) -> Group:
    def remove(g: Group | None) -> Group | None:
        if g is None:
            return None
        apps = dict(g.apps)
        apps.pop(app_id, None)
        return structs.replace(g, apps=apps, version=version)

    return update_group(root, pathid.parent(app_id), remove, version=version)


# -- what a change did --------------------------------------------------------------


class TreeDiff(NamedTuple):
    """What differs between two roots, place by place.

    Found by `diff`, which never enters a subtree the two roots share (the
    same object): a change costs what it touched, not the size of the tree.
    """

    changed_apps: list[tuple[AppDefinition | None, AppDefinition]]  # (old at that place or None, new)
    removed_apps: list[AppDefinition]
    changed_groups: list[tuple[Group | None, Group]]  # every group of the target not shared, root included
    removed_groups: list[Group]


def diff(original: Group, target: Group) -> TreeDiff:
    """The apps and groups of `target` that are not the very objects `original`
    has at the same place, and what `original` has that `target` lacks.  An
    app that is another object but equal counts as changed (callers that care
    compare them)."""
    out = TreeDiff([], [], [], [])

    def gone(o: Group) -> None:
        out.removed_groups.append(o)
        out.removed_apps.extend(o.apps.values())
        for child in o.groups.values():
            gone(child)

    def rec(o: Group | None, t: Group) -> None:
        if o is t:
            return
        out.changed_groups.append((o, t))
        o_apps = o.apps if o is not None else {}
        get, kept = o_apps.get, 0
        for aid, a in t.apps.items():
            old = get(aid)
            if old is not a:
                out.changed_apps.append((old, a))
                if old is None:
                    continue
            kept += 1
        o_groups = o.groups if o is not None else {}
        for gid, child in t.groups.items():
            rec(o_groups.get(gid), child)
        if o is not None:
            if kept < len(o_apps):  # else every app of `o` is still there
                out.removed_apps.extend(a for aid, a in o_apps.items() if aid not in t.apps)
            for gid, child in o.groups.items():
                if gid not in t.groups:
                    gone(child)

    rec(original, target)
    return out


def map_changed_apps(
    original: Group | None,
    target: Group,
    fn: Callable[[AppDefinition | None, AppDefinition], AppDefinition],
    *,
    also: Collection[str] = (),
) -> Group:
    """`target` with `fn(old, app)` in place of each app that is not the very
    object `original` has at the same place (`old`: that app, or None), and
    of each app whose id is in `also` (changed or not).

    Shared subtrees are skipped (unless they hold an id of `also`), and a
    subtree where `fn` returned every app itself is returned as it was.
    """
    if original is target and not any(pathid.is_ancestor(target.id, x) for x in also):
        return target
    o_apps = original.apps if original is not None else {}
    apps: dict[str, AppDefinition] | None = None
    for aid, a in target.apps.items():
        old = o_apps.get(aid)
        if old is a and aid not in also:
            continue
        new = fn(old, a)
        if new is not a:
            if apps is None:
                apps = dict(target.apps)
            apps[aid] = new
    o_groups = original.groups if original is not None else {}
    groups: dict[str, Group] | None = None
    for gid, child in target.groups.items():
        new_child = map_changed_apps(o_groups.get(gid), child, fn, also=also)
        if new_child is not child:
            if groups is None:
                groups = dict(target.groups)
            groups[gid] = new_child
    if apps is None and groups is None:
        return target
    return structs.replace(
        target, apps=target.apps if apps is None else apps, groups=target.groups if groups is None else groups
    )


def carry_app_map(original: Group, target: Group, change: TreeDiff) -> None:
    """Remember `target.app_map()` as `original`'s map with `change` applied
    (a dict copy instead of a walk of the whole tree)."""
    if _APP_MAPS.get(target) is not None:
        return
    apps = dict(original.app_map())
    for a in change.removed_apps:
        apps.pop(a.id, None)
    for _, a in change.changed_apps:
        apps[a.id] = a
    _APP_MAPS.put(target, apps)
