"""How fast the agent starts processes, next to a bare `subprocess.Popen` loop.

Run with `-s` to see the numbers.  The assertion is deliberately loose (the
machine may be busy); the printed rates are the measurement.
"""

from __future__ import annotations

import subprocess
import time

import pytest
import trio
from agent_helpers import make_task, task_pids

N = 200


def _raw_popen_rate() -> float:
    start = time.perf_counter()
    procs = [subprocess.Popen(["sleep", "1000"]) for _ in range(N)]
    elapsed = time.perf_counter() - start
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()
    return N / elapsed


@pytest.mark.parametrize("cgroups", ["auto", "off"])
async def test_spawn_rate_of_200_sleepers(start_agent, cgroups, cgroups_reason):
    driver, rec = await start_agent(cgroups=cgroups)
    tasks = [make_task(driver.agent_id, argv=["sleep", "1000"], cpus=0.001, mem=1) for _ in range(N)]
    start = trio.current_time()
    driver.launch(tasks)
    for t in tasks:
        await rec.wait(t.task_id, "TASK_RUNNING")
    launched = trio.current_time() - start

    start = trio.current_time()
    driver.kill([t.task_id for t in tasks])
    for t in tasks:
        assert (await rec.terminal(t.task_id)).state == "TASK_KILLED"
    killed = trio.current_time() - start
    assert all(task_pids(t.task_id) == [] for t in tasks[:10])

    raw = _raw_popen_rate()
    mode = "off" if cgroups == "off" or cgroups_reason else "on"
    print(f"\nspawn rate, {N} x sleep 1000: LocalDriver (cgroups {mode}) {N / launched:.0f}/s "
          f"(launch to all RUNNING {launched:.3f} s; kill to all KILLED {killed:.3f} s); "
          f"raw subprocess.Popen loop {raw:.0f}/s")
    assert N / launched > 50
