"""S6-remote: 1,000 real `sleep` processes on 2 `marathon agent` processes,
each in a network namespace of its own (`marathon.testing.netns`), against
this machine's raw `posix_spawn` rate measured just before and just after
in the same run (S6's baseline: bare, and with a sandbox directory and
stdout/stderr files per child on the agents' file system; the ratio is
against the mean of the two, since the raw rate swings within minutes).
The master is in a namespace too; every launch and status update crosses
the bridge.  Window: *running* from the POST; then scale to 0, every
process checked gone from /proc.  Target: >= 70% of the raw spawn rate.
Then S6 itself (the embedded agent, same file system), so `vs_embedded`
is the price of the remote path minutes apart.  As S6, twice: agents'
work dirs on disk and on tmpfs.

And the agent's memory: one agent running 1,000 `sleep` processes, its
VmRSS / VmHWM after 5 s of steady state.  Target: <= 150 MiB.

Needs root (network namespaces); skipped otherwise.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import remote_scenarios

from marathon.testing.netns import available

INSTANCES = int(os.environ.get("S6_INSTANCES", "1000"))


@pytest.fixture(autouse=True)
def _netns():
    why = available()
    if why is not None:
        pytest.skip(f"network namespaces: {why}")


@pytest.mark.timeout(600)
@pytest.mark.parametrize("where", ["disk", "tmpfs"])
def test_s6_remote_real_processes(benchmark, report, tmp_path, where):
    work_base = None
    if where == "tmpfs":
        if not os.path.isdir("/dev/shm"):
            pytest.skip("no /dev/shm")
        work_base = Path(tempfile.mkdtemp(prefix="marathon-s6r-", dir="/dev/shm"))
    try:
        result = benchmark.pedantic(remote_scenarios.s6_remote, args=(tmp_path,),
                                    kwargs={"instances": INSTANCES, "work_base": work_base},
                                    rounds=1, iterations=1)
    finally:
        if work_base is not None:
            shutil.rmtree(work_base, ignore_errors=True)
    report(f"S6-remote spawn ({where})", {**result, "targets": "spawn >= 0.7 x raw posix_spawn"})


@pytest.mark.timeout(300)
def test_agent_memory_with_1000_tasks(benchmark, report, tmp_path):
    result = benchmark.pedantic(remote_scenarios.agent_memory, args=(tmp_path,), kwargs={"instances": INSTANCES},
                                rounds=1, iterations=1)
    report("agent memory", {**result, "targets": f"agent rss <= 150MiB with {INSTANCES} tasks"})
