"""Store fixtures: every backend in `BACKENDS` runs the whole conformance suite.

A backend is one line: given the test's `request` (to pull in whatever
fixture it needs, such as a running ZooKeeper), return a store URL template
in which "{name}" becomes a fresh name for each store a test opens.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from marathon.storage import Store, open_store

from .zk_fixtures import zk_server as zk_server

BACKENDS: dict[str, Callable[[pytest.FixtureRequest], str]] = {
    "memory": lambda request: "memory://",
    "sqlite": lambda request: f"sqlite://{request.getfixturevalue('tmp_path')}/{{name}}.db",
    # Each test under a root of its own on the session's ZooKeeper.
    "zk": lambda request: f"zk://{request.getfixturevalue('zk_server')}/t/{uuid.uuid4().hex}/{{name}}",
}


@pytest.fixture(params=list(BACKENDS))
def store_url(request: pytest.FixtureRequest) -> Callable[[], str]:
    """A function returning the URL of a fresh, empty store of this backend
    on every call (for tests that open stores themselves, e.g. in trio.run)."""
    template = BACKENDS[request.param](request)
    names = itertools.count()
    return lambda: template.format(name=f"store{next(names)}")


@pytest.fixture
async def new_store(store_url: Callable[[], str]) -> AsyncIterator[Callable[..., Store]]:
    """`new_store(**options)` opens a fresh store of this backend; every store
    opened this way is closed when the test ends."""
    opened: list[Store] = []

    def open_new(**options: object) -> Store:
        store = open_store(store_url(), **options)
        opened.append(store)
        return store

    yield open_new
    for store in opened:
        await store.aclose()


@pytest.fixture
def store(new_store: Callable[..., Store]) -> Store:
    """A fresh, empty store of each backend, closed after the test."""
    return new_store()
