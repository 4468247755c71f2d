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
crash leaves either the old state or the new one.  `root_ops` refuses a value
the store would refuse (`ValueTooLarge`) while the change is still one
request's own, before anything is committed.

Stored apps are read back as the program may run them: an app that asks for
more instances than `max_instances_per_app` (stored before the limit
existed, or under a higher one) is read with the limit and a warning is
logged, so a stored definition can never make a restarted server launch
without bound; deployment plans are read the same way.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import msgspec
from msgspec import Struct, structs

from ..backoff import Delay
from ..models import pathid
from ..models.app import MAX_INSTANCES, AppDefinition
from ..models.deployment import DeploymentPlan
from ..models.group import Group
from ..models.instance import Instance
from . import Delete, Op, Put, Store, ValueTooLarge

T = TypeVar("T")

log = logging.getLogger("marathon.storage")

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


_INT64_MAX = 2**63 - 1


def _within_int64(value: Any) -> Any:
    """`value` (decoded msgpack) with every integer above 2**63-1 lowered to it."""
    if isinstance(value, dict):
        return {k: _within_int64(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_within_int64(v) for v in value]
    if isinstance(value, int) and value > _INT64_MAX:
        return _INT64_MAX
    return value


class StateRepository:
    """Reads and writes Marathon's objects; builds the ops of atomic commits."""

    def __init__(
        self,
        store: Store,
        *,
        max_versions: int = 50,
        compression_threshold: int = 65536,
        max_instances_per_app: int = MAX_INSTANCES,
    ) -> None:
        self.store = store
        self.max_versions = max_versions
        self.codec = Codec(compression_threshold)
        self.max_instances_per_app = max_instances_per_app
        self._warned: set[tuple[str, str]] = set()

    async def commit(self, ops: Sequence[Op]) -> None:
        if ops:
            await self.store.commit(ops)

    # -- root group and app versions -------------------------------------------

    def root_ops(self, root: Group, changed_apps: Iterable[AppDefinition]) -> list[Op]:
        """Ops storing the new app versions, the root version and the pointer (in that order).

        Raises `ValueTooLarge` (413, nothing stored) for a value over the
        store's `max_value_size`, as the commit would, but before this
        change is committed together with others.
        """
        ops: list[Op] = [Put(app_key(a.id, a.version), self.codec.encode(a)) for a in changed_apps]  # type: ignore[arg-type]
        ops.append(Put(f"groups/versions/{root.version}", self.codec.encode(_to_stored(root))))
        ops.append(Put(ROOT_POINTER, root.version.encode()))
        limit = getattr(self.store, "max_value_size", None)
        if limit is not None:
            for op in ops:
                if len(op.value) > limit:  # type: ignore[union-attr]
                    raise ValueTooLarge(op.key, len(op.value), limit)  # type: ignore[union-attr]
        return ops

    def _app(self, data: bytes) -> AppDefinition:
        """A stored app, with at most `max_instances_per_app` instances."""
        try:
            app = self.codec.decode(data, AppDefinition)
            stored = app.instances
        except msgspec.ValidationError:
            # Stored before integers were bounded (`instances` by Marathon's
            # 32 bits, the others by 64; 2**63 was accepted): read it with
            # them brought within, the per-app limit applies below.
            raw = self.codec.decode(data, dict)
            stored = raw.get("instances", 1)
            raw = _within_int64(raw)
            if isinstance(stored, int):
                raw["instances"] = min(stored, MAX_INSTANCES)
            app = msgspec.convert(raw, AppDefinition)
        limit = self.max_instances_per_app
        if app.instances > limit:
            key = (app.id, str(app.version))
            if key not in self._warned:
                self._warned.add(key)
                log.warning(
                    "stored app asks for more instances than allowed; it runs with the limit until it is "
                    "changed app=%s version=%s instances=%d limit=%d (--max_instances_per_app)",
                    app.id, app.version, stored, limit,
                )
            app = structs.replace(app, instances=limit)
        return app

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
                apps[(a, v)] = self._app(e.value)
        return _from_stored(stored, apps)

    async def root_versions(self) -> list[str]:
        keys = await self.store.list("groups/versions/")
        return [k.rsplit("/", 1)[1] for k in keys]

    async def app_versions(self, app_id: str) -> list[str]:
        prefix = f"apps/{pathid.safe(app_id)}/"
        return [k[len(prefix):] for k in await self.store.list(prefix)]

    async def app_at(self, app_id: str, version: str) -> AppDefinition | None:
        entry = await self.store.get(app_key(app_id, version))
        return None if entry is None else self._app(entry.value)

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
        """Stored plans; a scale target above `max_instances_per_app` is read as the limit."""
        plans = [self.codec.decode(e.value, DeploymentPlan) for _, e in await self.store.scan("deployments/")]
        return [self._bounded(p) for p in plans]

    def _bounded(self, plan: DeploymentPlan) -> DeploymentPlan:
        limit = self.max_instances_per_app
        if all(a.scale_to is None or a.scale_to <= limit for s in plan.steps for a in s.actions):
            return plan
        steps = [
            structs.replace(s, actions=[
                structs.replace(a, scale_to=limit) if a.scale_to is not None and a.scale_to > limit else a
                for a in s.actions
            ])
            for s in plan.steps
        ]
        return structs.replace(plan, steps=steps)

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

    # -- launch delays (backoff) ------------------------------------------------

    def launch_delays_put(self, delays: list[StoredDelay]) -> Put:
        """Every app's launch delay in one small value: a new leader goes
        on with them instead of starting a crash-looping app from zero."""
        return Put("launch-delays", _encode_delays(delays))

    async def load_launch_delays(self) -> list[StoredDelay]:
        entry = await self.store.get("launch-delays")
        if entry is None:
            return []
        try:
            return _decode_delays(entry.value)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("stored launch delays unreadable: starting without them")
            return []


class StoredDelay(msgspec.Struct, frozen=True, array_like=True):
    app_id: str
    config: str  # lastConfigChangeAt of the app version the delay is for
    delay: Delay


_encode_delays = msgspec.json.Encoder().encode
_decode_delays = msgspec.json.Decoder(list[StoredDelay]).decode
