"""S6-oci: 1 app x 200 busybox containers on one agent, against raw
`runc run --detach` of the same image in the same run; and the pull +
unpack of a ~5 MB image, cold and cached (BENCHMARKS.md).

The scenarios are `oci_scenarios.py` (read its docstring for the clock
windows); each also runs alone: `python benchmarks/oci_scenarios.py s6oci`.
Raw: per container a sandbox, an overlay over the unpacked image and a
config.json (`agent.oci.build_spec`), then `runc run --detach`, one after
the other, timed from the first to the last.  Ours: `marathon serve` with
its embedded agent (cgroups off), the image cached by a 1-instance warm-up
app, then one app of 200 `exec sleep 600` containers, timed from the POST
until the API counts 200 running, and until /proc shows the 200 sleeps.
Target: >= 70% of the raw rate.  Every timing is a figure, not an
assertion; what is asserted is that 200 containers really ran (their
`sleep 600` in /proc, each with its own overlay root under the run's
directory) and that everything is gone afterwards.

Needs root, runc, skopeo, umoci and docker-registry; skipped otherwise.
`S6OCI_INSTANCES` changes the count.
"""

from __future__ import annotations

import os

import oci_scenarios
import pytest

from marathon.agent.oci import runtime_problem
from marathon.testing.registry import images_installed

INSTANCES = int(os.environ.get("S6OCI_INSTANCES", "200"))

pytestmark = [
    pytest.mark.skipif(bool(images_installed()), reason=f"missing: {images_installed()}"),
    pytest.mark.skipif(runtime_problem() is not None, reason=f"no containers here: {runtime_problem()}"),
]


@pytest.mark.timeout(1200)
def test_s6_oci_containers(benchmark, report, tmp_path):
    result = benchmark.pedantic(oci_scenarios.s6_oci, args=(tmp_path,), kwargs={"instances": INSTANCES},
                                rounds=1, iterations=1)
    report("S6-oci containers", {**result, "targets": "ours >= 0.7 x raw runc run --detach"})
    assert result["raw"]["processes_checked"] == INSTANCES
    assert result["ours"]["processes_checked"] == INSTANCES


@pytest.mark.timeout(600)
def test_s6_oci_pull_5mb_image(benchmark, report, tmp_path):
    result = benchmark.pedantic(oci_scenarios.pull, args=(tmp_path,), kwargs={"mb": 5, "rounds": 3},
                                rounds=1, iterations=1)
    report("S6-oci pull", {**result, "targets": "pull+unpack of a 5 MB image: cold and cached (no number)"})
