"""Per-task cgroups on this machine: limits written, OOM reported, dirs removed."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest
from agent_helpers import make_task, wait_until

from marathon.agent import executor as executor_module

MIB = 1024 * 1024


def _own(controller: str) -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if controller in ctrls.split(","):
            return path
    raise KeyError(controller)


def _exists(path: str) -> bool:
    return os.path.exists(path)  # a sysfs stat: instant, and this is a test


def _read(d: str, name: str) -> str:
    return (Path(d) / name).read_text().strip()


async def test_limits_are_written_and_the_task_runs_inside(start_agent, need_cgroups):
    driver, rec = await start_agent()
    t = make_task(driver.agent_id, command="sleep 1000 & sleep 1000", cpus=0.25, mem=64)
    driver.launch([t])
    await rec.wait(t.task_id, "TASK_RUNNING")
    cg = driver.executor.cgroups
    assert cg is not None
    if cg.version != 1:
        pytest.skip("the file checks below are for cgroup v1 (this machine's)")
    mem_dir, cpu_dir = (str(b / t.task_id) for b in cg.bases)
    # Under our own cgroup in each hierarchy, in the agent's directory.
    assert mem_dir.startswith(f"/sys/fs/cgroup/memory{_own('memory').rstrip('/')}/marathon-")
    assert cpu_dir.startswith(f"/sys/fs/cgroup/cpu{_own('cpu').rstrip('/')}/marathon-")
    assert int(_read(mem_dir, "memory.limit_in_bytes")) == 64 * MIB
    assert int(_read(cpu_dir, "cpu.cfs_quota_us")) == 25_000
    assert int(_read(cpu_dir, "cpu.cfs_period_us")) == 100_000
    assert int(_read(cpu_dir, "cpu.shares")) == 256
    pid = driver.executor.task_pid(t.task_id)
    # The wrapper joins before it execs the shell: then the shell starts both sleeps.
    await wait_until(lambda: len(_read(mem_dir, "cgroup.procs").split()) == 3)
    procs = {int(p) for p in _read(mem_dir, "cgroup.procs").split()}
    assert pid in procs
    assert pid in {int(p) for p in _read(cpu_dir, "cgroup.procs").split()}
    driver.kill([t.task_id])
    await rec.terminal(t.task_id)
    assert not _exists(mem_dir) and not _exists(cpu_dir)


async def test_hard_limits_and_unlimited(start_agent, need_cgroups):
    driver, rec = await start_agent()
    hard = make_task(driver.agent_id, argv=["sleep", "1000"], cpus=0.5, mem=64,
                     cpu_limit=1.5, mem_limit=128)
    free = make_task(driver.agent_id, argv=["sleep", "1000"], cpus=0.5, mem=64,
                     cpu_limit="unlimited", mem_limit="unlimited")
    driver.launch([hard, free])
    await rec.wait(hard.task_id, "TASK_RUNNING")
    await rec.wait(free.task_id, "TASK_RUNNING")
    cg = driver.executor.cgroups
    if cg.version != 1:
        pytest.skip("the file checks below are for cgroup v1 (this machine's)")
    mem, cpu = cg.bases
    assert int(_read(mem / hard.task_id, "memory.limit_in_bytes")) == 128 * MIB
    assert int(_read(cpu / hard.task_id, "cpu.cfs_quota_us")) == 150_000
    assert int(_read(cpu / hard.task_id, "cpu.shares")) == 512
    assert int(_read(mem / free.task_id, "memory.limit_in_bytes")) > 2**60
    assert int(_read(cpu / free.task_id, "cpu.cfs_quota_us")) == -1


async def test_task_over_its_memory_limit_is_oom_killed_and_failed(start_agent, need_cgroups):
    driver, rec = await start_agent()
    hog = f"{sys.executable} -c 'b = b\"x\" * (200 * 1024 * 1024); print(\"survived\")'"
    t = make_task(driver.agent_id, command=hog, cpus=1, mem=64)
    driver.launch([t])
    final = await rec.terminal(t.task_id)
    assert final.state == "TASK_FAILED"
    assert final.message.startswith("Memory limit exceeded: Requested: 64MB")
    assert final.reason == "REASON_CONTAINER_LIMITATION_MEMORY"


async def test_no_cgroups_means_no_limits_and_one_warning(start_agent, monkeypatch, caplog):
    monkeypatch.setattr(executor_module, "detect", lambda name: (None, "read-only for this test"))
    caplog.set_level(logging.WARNING, logger="marathon.agent")
    driver, rec = await start_agent()
    tasks = [make_task(driver.agent_id, command="true", mem=64) for _ in range(3)]
    driver.launch(tasks)
    for t in tasks:
        assert (await rec.terminal(t.task_id)).state == "TASK_FINISHED"
    warnings = [r.getMessage() for r in caplog.records if r.name == "marathon.agent"]
    assert warnings == ["cgroups unavailable (read-only for this test): "
                        "tasks run without cpu/memory limits"]
