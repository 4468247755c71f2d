"""ZooKeeper ensembles for tests (`marathon.testing.zookeeper.Ensemble`):
three real servers on 127.0.0.1 that elect a leader, lose their quorum and
get it back.  Import the fixtures into a test module (tests/ is on
sys.path, as the directory of the top conftest.py):

    from zookeeper_fixtures import zk_ensemble, zk_ensemble_factory  # noqa: F401

`zk_ensemble` is shared by the whole session: connect to it, never kill or
stop its nodes.  A test that does takes one of its own from
`zk_ensemble_factory`.  Every node is stopped by its PID when its fixture
ends; its log stays in the test's temporary directory (n<myid>/zk.log).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from marathon.testing.zookeeper import Ensemble

__all__ = ["zk_ensemble", "zk_ensemble_factory"]


@pytest.fixture(scope="session")
def zk_ensemble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ensemble]:
    """A started 3-node ensemble for the session (`.hosts` to connect); its
    nodes must stay up: use `zk_ensemble_factory` to kill some."""
    with Ensemble(tmp_path_factory.mktemp("zk-ensemble"), size=3) as ensemble:
        yield ensemble


@pytest.fixture
def zk_ensemble_factory(tmp_path: Path) -> Iterator[Callable[..., Ensemble]]:
    """`make(size=3, **options)`: a started ensemble of the test's own (to
    kill, stop and restart nodes of); all are closed when the test ends.
    It blocks for the 2-3 s a start takes: from a trio test, call it in
    `trio.to_thread.run_sync`."""
    made: list[Ensemble] = []

    def make(size: int = 3, **options: object) -> Ensemble:
        ensemble = Ensemble(tmp_path / f"zk-ensemble-{len(made)}", size, **options)  # type: ignore[arg-type]
        made.append(ensemble)
        return ensemble.start()

    try:
        yield make
    finally:
        for ensemble in made:
            ensemble.close()
