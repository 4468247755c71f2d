"""Groups: the tree of apps rooted at `/`.

A `Group` is immutable; every change builds a new root that shares the
untouched subtrees with the old one.  All ids are absolute.  The functions
here are the tree operations everything else uses (find, put, remove, walk);
they know nothing about versions, plans or storage.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from msgspec import Struct, structs

from . import pathid
from .app import AppDefinition


class Group(Struct, frozen=True, kw_only=True):
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
        key = id(self)
        hit = _APP_MAPS.get(key)
        if hit is not None and hit[0] is self:
            return hit[1]
        apps = {a.id: a for a in self.transitive_apps()}
        if len(_APP_MAPS) >= _APP_MAPS_KEPT:
            del _APP_MAPS[next(iter(_APP_MAPS))]
        _APP_MAPS[key] = (self, apps)  # holds the group, so its id is not reused
        return apps

    def exists(self, path: str) -> bool:
        return self.app(path) is not None or self.group(path) is not None


_APP_MAPS_KEPT = 4
_APP_MAPS: dict[int, tuple[Group, dict[str, AppDefinition]]] = {}


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


def map_apps(group: Group, fn: Callable[[AppDefinition], AppDefinition]) -> Group:
    """Apply `fn` to every app of the subtree (ids must not change).

    A subtree where `fn` returned every app itself is returned as it was, so
    an update keeps sharing what it did not touch (and later passes can
    skip it by identity).
    """
    apps = {aid: fn(a) for aid, a in group.apps.items()}
    groups = {gid: map_apps(g, fn) for gid, g in group.groups.items()}
    if all(apps[k] is v for k, v in group.apps.items()) and all(groups[k] is v for k, v in group.groups.items()):
        return group
    return structs.replace(group, apps=apps, groups=groups)
