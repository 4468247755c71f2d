"""A definition too large to store is a 413 naming the limit, not a 503 a
client retries forever; it changes nothing, fails no other change of its
batch, and is not kept in memory once refused."""

from __future__ import annotations

import gc
import os
import weakref

import trio
import trio.testing

from marathon.models.app import AppDefinition
from marathon.models.group import Group, put_app
from marathon.storage import ValueTooLarge
from marathon.testing import InProcess


def _env(n: int) -> dict[str, str]:
    # Random values: zlib cannot shrink them under the store's limit.
    return {f"E{i:06d}": os.urandom(8).hex() for i in range(n)}


async def test_an_app_too_large_to_store_is_413_and_changes_nothing(autojump_clock):
    async with InProcess.start(agents=1) as m:
        assert (await m.client.post("/v2/apps", json={"id": "/keep", "cmd": "sleep 1", "instances": 0})).status_code == 201
        await m.settle()
        store = m.services.repo.store
        before, root = await store.scan(""), m.services.groups.root
        r = await m.client.post("/v2/apps", json={"id": "/envs", "cmd": "sleep 1", "instances": 0, "env": _env(100_000)})
        assert r.status_code == 413, r.text
        message = r.json()["message"]
        assert message.startswith("Too large to store: the value for key 'apps/envs/")
        assert "over the store limit of 1024000 bytes (--zk_max_node_size)" in message
        assert await store.scan("") == before and m.services.groups.root is root
        # The same through a partial update of an app that exists.
        r = await m.client.put("/v2/apps/keep", json={"env": _env(100_000)})
        assert r.status_code == 413 and await store.scan("") == before


async def test_a_value_too_large_fails_only_its_own_change_of_a_batch(autojump_clock):
    async with InProcess.start(agents=1) as m:
        groups = m.services.groups
        repo = groups._repo
        real_commit = repo.commit
        gate = trio.Event()
        held = []

        async def gated_commit(ops):
            if not held:  # the first change's commit waits until the others queue behind it
                held.append(ops)
                await gate.wait()
            return await real_commit(ops)

        repo.commit = gated_commit
        outcomes: dict[str, object] = {}
        definitions = {
            "a": AppDefinition(id="/v/a", cmd="sleep 1", instances=0),
            "big": AppDefinition(id="/v/big", cmd="sleep 1", instances=0, env=_env(100_000)),
            "c": AppDefinition(id="/v/c", cmd="sleep 1", instances=0),
        }

        async def change(name: str) -> None:
            app = definitions[name]
            try:
                outcomes[name] = await groups.update(lambda root, v: put_app(root, app, version=v))
            except Exception as exc:
                outcomes[name] = exc

        async with trio.open_nursery() as nursery:
            for name in definitions:
                nursery.start_soon(change, name)
                await trio.testing.wait_all_tasks_blocked()
            gate.set()
        repo.commit = real_commit
        assert isinstance(outcomes["big"], ValueTooLarge) and outcomes["big"].status == 413
        assert not isinstance(outcomes["a"], Exception) and not isinstance(outcomes["c"], Exception)
        assert {a.id for a in groups.root.transitive_apps()} == {"/v/a", "/v/c"}
        assert (await repo.load_root()).app("/v/c") is not None


async def test_the_root_of_a_refused_change_is_not_kept_alive(autojump_clock):
    async with InProcess.start(agents=1) as m:
        targets: list[weakref.ref[Group]] = []
        big = AppDefinition(id="/w/big", cmd="sleep 1", instances=0, env=_env(100_000))

        def change(root: Group, version: str) -> Group:
            target = put_app(root, big, version=version)
            targets.append(weakref.ref(target))
            return target

        try:
            await m.services.groups.update(change)
        except ValueTooLarge:
            pass
        gc.collect()
        assert targets and targets[0]() is None  # no cache holds the refused root
