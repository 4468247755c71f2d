"""Fixtures for the agent tests: a running LocalDriver, and cleanup that
kills (by PID) every process a test left behind, even when it failed."""

from __future__ import annotations

from pathlib import Path

import pytest
from agent_helpers import Recorder, kill_pids, pids_with_sandbox_under

from marathon.agent.cgroups import Cgroups, detect
from marathon.cluster.local import LocalDriver


@pytest.fixture(autouse=True)
def no_leftovers(tmp_path: Path):
    """After the test (and its drivers) ended: no task process may survive."""
    yield
    leftovers = pids_with_sandbox_under(tmp_path)
    kill_pids(leftovers)
    for id_file in tmp_path.glob("*/agent_id"):
        cg, _ = detect(f"marathon-{id_file.read_text().strip()}")
        if cg is not None:
            for stale in cg.stale(set()):
                Cgroups.kill_all(stale)
                Cgroups.remove(stale)
            cg.remove_bases()
    assert not leftovers, f"task processes outlived their driver: {leftovers}"


@pytest.fixture
async def start_agent(nursery, tmp_path: Path):
    """`await start_agent(name, **LocalDriver options)` -> (driver, recorder), running."""

    async def start(name: str = "agent", **kw) -> tuple[LocalDriver, Recorder]:
        kw.setdefault("hostname", "127.0.0.1")
        driver = LocalDriver(tmp_path / name, **kw)
        await nursery.start(driver.run)
        recorder = Recorder(driver.updates)
        nursery.start_soon(recorder.run)
        return driver, recorder

    return start


@pytest.fixture(scope="session")
def cgroups_reason() -> str:
    """Empty if task cgroups work on this machine, else why not."""
    cg, why = detect("marathon-probe")
    if cg is not None:
        cg.remove_bases()
    return why


@pytest.fixture
def need_cgroups(cgroups_reason: str) -> None:
    if cgroups_reason:
        pytest.skip(f"cgroups unavailable: {cgroups_reason}")
