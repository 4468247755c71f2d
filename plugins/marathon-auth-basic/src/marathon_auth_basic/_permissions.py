"""Path-prefix permissions: which actions a user may take on which ids.

A permission is `{"allowed": <kind>, "on": <path prefix>}`:

=========  ==========================================================
kind       actions granted on run specs (apps) and groups under `on`
=========  ==========================================================
create     CreateRunSpec, CreateGroup
update     UpdateRunSpec, UpdateGroup
delete     DeleteRunSpec, DeleteGroup
view       ViewRunSpec, ViewGroup
admin      all of the above; with `on: "/"` also every system resource
           (Leader, SystemConfig, SystemMetrics, Plugins, Events, ...)
=========  ==========================================================

`on` is matched on path-segment boundaries: `/dev` and `/dev/` both cover
`/dev` itself and everything below it (`/dev/web`, `/dev/a/b`), never
`/devx` or `/development`.  `/` covers everything.

Two grants that are not spelled out:

* Anyone authenticated may open the event stream (ViewResource on Events):
  Marathon filters it per app and group, so a user sees only events about
  what they may view.
* A user who may view `/a/b` may also view the groups above it (`/a`, `/`),
  so `GET /v2/groups` answers with the tree trimmed to what they may see
  instead of 403.  This reveals only that those groups exist, which the
  prefix itself already says.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_RUN_SPEC_AND_GROUP = {
    "create": frozenset({"CreateRunSpec", "CreateGroup"}),
    "update": frozenset({"UpdateRunSpec", "UpdateGroup"}),
    "delete": frozenset({"DeleteRunSpec", "DeleteGroup"}),
    "view": frozenset({"ViewRunSpec", "ViewGroup"}),
}
_RUN_SPEC_AND_GROUP["admin"] = frozenset().union(*_RUN_SPEC_AND_GROUP.values())
KINDS = tuple(_RUN_SPEC_AND_GROUP)


def normalize_prefix(on: Any) -> str:
    """`/dev/` -> `/dev`; `/` stays `/`.  ValueError for anything that is not an
    absolute path id."""
    if not isinstance(on, str) or not on.startswith("/"):
        raise ValueError(f"'on' must be an absolute path such as \"/dev/\", got {on!r}")
    segments = on.strip("/").split("/") if on.strip("/") else []
    if any(s in ("", ".", "..") for s in segments):
        raise ValueError(f"'on' must not contain empty, '.' or '..' segments: {on!r}")
    return "/" + "/".join(segments)


def covers(prefix: str, path_id: str) -> bool:
    """Whether the normalized `prefix` covers `path_id` (segment boundaries)."""
    return prefix == "/" or path_id == prefix or path_id.startswith(prefix + "/")


@dataclass(frozen=True)
class Grant:
    kind: str
    prefix: str

    @property
    def actions(self) -> frozenset[str]:
        return _RUN_SPEC_AND_GROUP[self.kind]

    @property
    def can_view(self) -> bool:
        return "ViewGroup" in self.actions


def parse_grants(permissions: Any, user: str) -> tuple[Grant, ...]:
    if not isinstance(permissions, list):
        raise ValueError(f"user {user!r}: 'permissions' must be a list")
    grants = []
    for p in permissions:
        if not isinstance(p, Mapping) or set(p) != {"allowed", "on"}:
            raise ValueError(f"user {user!r}: each permission is {{\"allowed\": ..., \"on\": ...}}, got {p!r}")
        if p["allowed"] not in _RUN_SPEC_AND_GROUP:
            raise ValueError(f"user {user!r}: 'allowed' must be one of {', '.join(KINDS)}, got {p['allowed']!r}")
        try:
            prefix = normalize_prefix(p["on"])
        except ValueError as exc:
            raise ValueError(f"user {user!r}: {exc}") from None
        grants.append(Grant(p["allowed"], prefix))
    return tuple(grants)


class Permissions:
    """What one user may do."""

    def __init__(self, grants: Iterable[Grant]) -> None:
        self.grants = tuple(grants)
        self.system_admin = any(g.kind == "admin" and g.prefix == "/" for g in self.grants)

    def allows(self, action: str, kind: str, resource_id: str) -> bool:
        """`kind` is the AuthResource kind: "app", "group" or "system"."""
        if kind == "system":
            if resource_id == "Events" and action == "ViewResource":
                return True
            return self.system_admin
        if kind not in ("app", "group"):
            return False
        if any(action in g.actions and covers(g.prefix, resource_id) for g in self.grants):
            return True
        # Groups above a viewable prefix are viewable (see the module docstring).
        return kind == "group" and action == "ViewGroup" and any(
            g.can_view and covers(resource_id, g.prefix) for g in self.grants
        )
