"""Typed persistence of Marathon's state on top of any `Store`.

Key layout (one object per key, never one blob for everything):

    apps/<safe id>/<version>     an app definition at a version
    groups/versions/<version>    a root group version: the tree, with apps
                                 referenced by (id, version), not inline
    groups/root                  the current root version (a pointer)
    instances/<instance id>      one instance
    deployments/<plan id>        a running deployment plan
    task-failures/<safe id>      the last task failure of an app

Values are msgpack; values above `compression_threshold` are zlib-compressed
(a one-byte header says which).  A root update is one atomic commit of the new
app versions, the root version, the deployment plan and the pointer, so a
crash leaves either the old state or the new one.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import msgspec
from msgspec import Struct

from ..models import pathid
from ..models.app import AppDefinition
from ..models.deployment import DeploymentPlan
from ..models.group import Group
from ..models.instance import Instance
from . import Delete, Op, Put, Store

T = TypeVar("T")

_RAW = b"\x00"
_ZLIB = b"\x01"

ROOT_POINTER = "groups/root"


class StoredGroup(Struct, frozen=True, kw_only=True):
    id: str
    apps: list[tuple[str, str]] = []  # (app id, version)
    groups: list[StoredGroup] = []
    dependencies: list[str] = []
    version: str = ""
    enforce_role: bool = False


class TaskFailure(Struct, frozen=True, kw_only=True):
    """The last failed task of an app (`lastTaskFailure`)."""

    app_id: str
    task_id: str
    state: str
    message: str
    host: str
    timestamp: str
    version: str
    slave_id: str | None = None


class Codec:
    def __init__(self, compression_threshold: int = 65536) -> None:
        self._threshold = compression_threshold
        self._encoder = msgspec.msgpack.Encoder()
        self._decoders: dict[type, msgspec.msgpack.Decoder] = {}

    def encode(self, obj: Any) -> bytes:
        raw = self._encoder.encode(obj)
        if len(raw) > self._threshold:
            return _ZLIB + zlib.compress(raw, 6)
        return _RAW + raw

    def decode(self, data: bytes, tp: type[T]) -> T:
        dec = self._decoders.get(tp)
        if dec is None:
            dec = self._decoders[tp] = msgspec.msgpack.Decoder(tp)
        body = data[1:]
        if data[:1] == _ZLIB:
            body = zlib.decompress(body)
        return dec.decode(body)


def app_key(app_id: str, version: str) -> str:
    return f"apps/{pathid.safe(app_id)}/{version}"


def _to_stored(group: Group) -> StoredGroup:
    return StoredGroup(
        id=group.id,
        apps=[(a.id, a.version) for a in group.apps.values()],  # type: ignore[misc]
        groups=[_to_stored(g) for g in group.groups.values()],
        dependencies=list(group.dependencies),
        version=group.version,
        enforce_role=group.enforce_role,
    )


def _refs(stored: StoredGroup) -> Iterable[tuple[str, str]]:
    yield from stored.apps
    for g in stored.groups:
        yield from _refs(g)


def _from_stored(stored: StoredGroup, apps: dict[tuple[str, str], AppDefinition]) -> Group:
    return Group(
        id=stored.id,
        apps={aid: apps[(aid, v)] for aid, v in stored.apps if (aid, v) in apps},
        groups={g.id: _from_stored(g, apps) for g in stored.groups},
        dependencies=list(stored.dependencies),
        version=stored.version,
        enforce_role=stored.enforce_role,
    )


class StateRepository:
    """Reads and writes Marathon's objects; builds the ops of atomic commits."""

    def __init__(self, store: Store, *, max_versions: int = 50, compression_threshold: int = 65536) -> None:
        self.store = store
        self.max_versions = max_versions
        self.codec = Codec(compression_threshold)

    async def commit(self, ops: Sequence[Op]) -> None:
        if ops:
            await self.store.commit(ops)

    # -- root group and app versions -------------------------------------------

    def root_ops(self, root: Group, changed_apps: Iterable[AppDefinition]) -> list[Op]:
        """Ops storing the new app versions, the root version and the pointer (in that order)."""
        ops: list[Op] = [Put(app_key(a.id, a.version), self.codec.encode(a)) for a in changed_apps]  # type: ignore[arg-type]
        ops.append(Put(f"groups/versions/{root.version}", self.codec.encode(_to_stored(root))))
        ops.append(Put(ROOT_POINTER, root.version.encode()))
        return ops

    async def load_root(self) -> Group | None:
        pointer = await self.store.get(ROOT_POINTER)
        if pointer is None:
            return None
        return await self.root_at(pointer.value.decode())

    async def root_at(self, version: str) -> Group | None:
        entry = await self.store.get(f"groups/versions/{version}")
        if entry is None:
            return None
        stored = self.codec.decode(entry.value, StoredGroup)
        refs = list(_refs(stored))
        found = await self.store.get_many([app_key(a, v) for a, v in refs])
        apps = {}
        for a, v in refs:
            e = found.get(app_key(a, v))
            if e is not None:
                apps[(a, v)] = self.codec.decode(e.value, AppDefinition)
        return _from_stored(stored, apps)

    async def root_versions(self) -> list[str]:
        keys = await self.store.list("groups/versions/")
        return [k.rsplit("/", 1)[1] for k in keys]

    async def app_versions(self, app_id: str) -> list[str]:
        prefix = f"apps/{pathid.safe(app_id)}/"
        return [k[len(prefix):] for k in await self.store.list(prefix)]

    async def app_at(self, app_id: str, version: str) -> AppDefinition | None:
        entry = await self.store.get(app_key(app_id, version))
        return None if entry is None else self.codec.decode(entry.value, AppDefinition)

    async def collect_garbage(self, current: Group) -> int:
        """Keep the newest `max_versions` root versions and the app versions they use.

        App versions referenced by no retained root version are deleted, except
        the newest `max_versions` of each app still in the current root (so an
        app's own history stays browsable).  Returns the number of keys deleted.
        """
        versions = sorted(await self.root_versions())
        doomed_roots = versions[: max(0, len(versions) - self.max_versions)]
        retained = versions[len(doomed_roots):]
        referenced: set[str] = set()
        for v in retained:
            entry = await self.store.get(f"groups/versions/{v}")
            if entry is not None:
                referenced.update(app_key(a, ver) for a, ver in _refs(self.codec.decode(entry.value, StoredGroup)))
        keep_recent: set[str] = set()
        for app in current.transitive_apps():
            for ver in sorted(await self.app_versions(app.id))[-self.max_versions:]:
                keep_recent.add(app_key(app.id, ver))
        ops: list[Op] = [Delete(f"groups/versions/{v}") for v in doomed_roots]
        for key in await self.store.list("apps/"):
            if key not in referenced and key not in keep_recent:
                ops.append(Delete(key))
        await self.commit(ops)
        return len(ops)

    # -- instances ------------------------------------------------------------

    def instance_put(self, instance: Instance) -> Put:
        return Put(f"instances/{instance.instance_id}", self.codec.encode(instance))

    def instance_delete(self, instance_id: str) -> Delete:
        return Delete(f"instances/{instance_id}")

    async def load_instances(self) -> list[Instance]:
        return [self.codec.decode(e.value, Instance) for _, e in await self.store.scan("instances/")]

    # -- deployments ----------------------------------------------------------

    def deployment_put(self, plan: DeploymentPlan) -> Put:
        return Put(f"deployments/{plan.id}", self.codec.encode(plan))

    def deployment_delete(self, plan_id: str) -> Delete:
        return Delete(f"deployments/{plan_id}")

    async def load_deployments(self) -> list[DeploymentPlan]:
        return [self.codec.decode(e.value, DeploymentPlan) for _, e in await self.store.scan("deployments/")]

    # -- task failures --------------------------------------------------------

    def task_failure_put(self, failure: TaskFailure) -> Put:
        return Put(f"task-failures/{pathid.safe(failure.app_id)}", self.codec.encode(failure))

    def task_failure_delete(self, app_id: str) -> Delete:
        return Delete(f"task-failures/{pathid.safe(app_id)}")

    async def load_task_failures(self) -> dict[str, TaskFailure]:
        out = {}
        for _, e in await self.store.scan("task-failures/"):
            f = self.codec.decode(e.value, TaskFailure)
            out[f.app_id] = f
        return out
