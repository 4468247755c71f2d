"""What is stored can never make a (re)started server run without bound, and
a value too large to store is a 413 that leaves everything as it was."""

from __future__ import annotations

import logging

import msgspec
import pytest

from marathon.errors import StorageError
from marathon.models.app import AppDefinition
from marathon.models.deployment import DeploymentAction, DeploymentPlan, DeploymentStep
from marathon.models.group import empty_root, put_app
from marathon.storage import ValueTooLarge
from marathon.storage.memory import MemoryStore
from marathon.storage.repository import StateRepository, app_key

V0 = "2024-01-01T00:00:00.000Z"


def _app(app_id: str, instances: int = 1, **kw) -> AppDefinition:
    return AppDefinition(id=app_id, cmd="sleep 1000", instances=instances, version=V0, **kw)


async def _stored_as_before_the_limits(store: MemoryStore, app_id: str, **fields: int) -> None:
    """Rewrite a stored app the way the server stored it when any integer
    (2**63 for `instances`) was accepted."""
    key = app_key(app_id, V0)
    entry = await store.get(key)
    raw = msgspec.msgpack.decode(entry.value[1:])
    raw.update(fields)
    await store.put(key, b"\x00" + msgspec.msgpack.encode(raw))


async def test_an_app_stored_with_too_many_instances_is_read_with_the_limit_and_logged(caplog):
    store = MemoryStore()
    repo = StateRepository(store, max_instances_per_app=5)
    root = put_app(empty_root(V0), _app("/big", 3), version=V0)
    await repo.commit(repo.root_ops(root, [root.app("/big")]))
    await _stored_as_before_the_limits(store, "/big", instances=2**63, backoffSeconds=2**64 - 1)

    with caplog.at_level(logging.WARNING, logger="marathon.storage"):
        loaded = await repo.load_root()
        again = await repo.app_at("/big", V0)
    app = loaded.app("/big")
    assert app.instances == 5 and again.instances == 5
    assert app.backoff_seconds == 2**63 - 1  # brought within what can be stored again
    warnings = [r.getMessage() for r in caplog.records if "/big" in r.getMessage()]
    assert len(warnings) == 1 and "instances=9223372036854775808 limit=5" in warnings[0]
    # What the program reads can be stored again as it is.
    await repo.commit(repo.root_ops(loaded, [app]))


async def test_a_lowered_limit_bounds_what_a_stored_app_runs():
    store = MemoryStore()
    root = put_app(empty_root(V0), _app("/web", 8), version=V0)
    repo = StateRepository(store)
    await repo.commit(repo.root_ops(root, [root.app("/web")]))
    assert (await repo.load_root()).app("/web").instances == 8
    lowered = StateRepository(store, max_instances_per_app=4)
    assert (await lowered.load_root()).app("/web").instances == 4


async def test_a_stored_deployment_resumes_with_its_scale_bounded():
    store = MemoryStore()
    repo = StateRepository(store, max_instances_per_app=10)
    plan = DeploymentPlan(id="p", version=V0, original_version=V0, target_version=V0, steps=[
        DeploymentStep(actions=[DeploymentAction(action="ScaleApplication", app="/big", scale_to=2**63)]),
        DeploymentStep(actions=[DeploymentAction(action="ScaleApplication", app="/ok", scale_to=3),
                                DeploymentAction(action="StopApplication", app="/gone")]),
    ])
    await repo.commit([repo.deployment_put(plan)])
    (loaded,) = await repo.load_deployments()
    assert [a.scale_to for s in loaded.steps for a in s.actions] == [10, 3, None]


async def test_a_value_too_large_to_store_is_refused_before_commit_with_413():
    store = MemoryStore(max_value_size=2000)
    repo = StateRepository(store, compression_threshold=10**9)
    small = put_app(empty_root(V0), _app("/small"), version=V0)
    await repo.commit(repo.root_ops(small, [small.app("/small")]))
    before = await store.scan("")
    big_app = _app("/big", env={f"K{i}": "v" * 10 for i in range(200)})
    big = put_app(small, big_app, version="2024-01-01T00:00:01.000Z")
    with pytest.raises(ValueTooLarge) as exc:
        repo.root_ops(big, [big_app])
    assert exc.value.status == 413 and isinstance(exc.value, StorageError)
    assert "over the store limit of 2000 bytes (--zk_max_node_size)" in exc.value.message
    assert exc.value.body() == {"message": exc.value.message}
    assert await store.scan("") == before
