"""S6: 1,000 real `sleep` processes through the embedded agent.

The baselines, measured first in the same run: this machine's raw rate of
`os.posix_spawn` for long-lived children (no sandbox, no bookkeeping) and
of SIGKILL + reap; and the same spawn loop giving each child a sandbox
directory with stdout/stderr files on the data dir's file system (what any
Mesos-style agent must do per task).  Then `marathon serve` with its
embedded agent (cgroups off, so both sides do the same work) runs one app
of 1,000 `sleep 3600`.  Clock windows: *running* (the API counts all 1,000
running, from the POST) and scale to 0 (PUT instances=0 until none is
running); every process is checked gone.  Targets: >= 80% of the raw spawn
rate; >= 1,000 kills/s.

Run twice: with the data dir on the default temporary directory (a disk,
as in production) and on tmpfs (/dev/shm), where creating the four files
of a task (sandbox, stdout, stderr, checkpoint) costs next to nothing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from marathon.testing import scenarios

INSTANCES = int(os.environ.get("S6_INSTANCES", "1000"))


@pytest.mark.parametrize("where", ["disk", "tmpfs"])
def test_s6_real_processes(benchmark, report, tmp_path, where):
    if where == "tmpfs":
        if not os.path.isdir("/dev/shm"):
            pytest.skip("no /dev/shm")
        data_dir = Path(tempfile.mkdtemp(prefix="marathon-s6-", dir="/dev/shm"))
    else:
        data_dir = tmp_path
    try:
        result = benchmark.pedantic(scenarios.s6, args=(data_dir,), kwargs={"instances": INSTANCES},
                                    rounds=1, iterations=1)
    finally:
        if where == "tmpfs":
            shutil.rmtree(data_dir, ignore_errors=True)
    report(f"S6 spawn ({where})",
           {**result, "targets": "spawn >= 0.8 x raw posix_spawn; scale to 0 >= 1000 kills/s"})
