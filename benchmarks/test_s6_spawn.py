"""S6: 1,000 real `sleep` processes through the embedded agent.

The baseline, measured first in the same run: this machine's raw rate of
`os.posix_spawn` for long-lived children (no sandbox, no bookkeeping), and
of SIGKILL + reap.  Then `marathon serve` with its embedded agent (cgroups
off, so both sides do the same work) runs one app of 1,000 `sleep 3600`.
Clock windows: *running* (the API counts all 1,000 running, from the POST)
and scale to 0 (PUT instances=0 until none is running); every process is
checked gone.  Targets: >= 80% of the raw spawn rate; >= 1,000 kills/s.
"""

from __future__ import annotations

import os

from marathon.testing import scenarios

INSTANCES = int(os.environ.get("S6_INSTANCES", "1000"))


def test_s6_real_processes(benchmark, report, tmp_path):
    result = benchmark.pedantic(scenarios.s6, args=(tmp_path,), kwargs={"instances": INSTANCES},
                                rounds=1, iterations=1)
    report("S6 spawn", {**result, "targets": "spawn >= 0.8 x raw posix_spawn; scale to 0 >= 1000 kills/s"})
