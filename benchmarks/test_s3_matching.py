"""S3: one matching pass over 10,000 agents with 1,000 pending apps (BENCHMARKS.md).

Clock window: *placement* (the decision only: `matching.match`, models in,
placements, reject summaries and updated offers out).

Figures printed per run: median wall time of a pass with the compiled core,
the same pass on the pure-Python reference (same input, same answer), their
ratio, CPU seconds, and where the compiled pass spends its time (building the
arrays, the core, building the results).  Also the S1 shape the scheduler
needs: 1 app x 100,000 instances over 2,000 agents in one pass.

Targets: <= 50 ms per pass; compiled >= 20x the reference on the same input.
"""

from __future__ import annotations

import random
import statistics
import time
from contextlib import contextmanager
from unittest import mock

import pytest

from marathon import _core_ref, matching
from marathon.matching import MatchConfig, PlacementRequest, match
from marathon.models import AppDefinition, Instance, InstanceState, Offer, PortRange, Resources
from marathon.models.app import PortDefinition

MACHINES = [(16000, 65536), (32000, 131072), (64000, 262144)]
CONSTRAINTS = [
    [["hostname", "UNIQUE"]],
    [["rack", "GROUP_BY", "3"]],
    [["@zone", "GROUP_BY"]],
    [["rack", "MAX_PER", "2"]],
    [["type", "LIKE", "comp.*"]],
    [["@zone", "CLUSTER", "eu-1a"]],
    [["hostname", "UNLIKE", r"10\.0\.1\..*"]],
    [["hostname", "UNIQUE"], ["rack", "MAX_PER", "3"]],
    [["ssd", "IS", "true"], ["rack", "GROUP_BY"]],
]


def s3_cluster(n: int, rnd: random.Random) -> list[Offer]:
    """Three machine sizes, 0-70% already used, 100 racks, 3 zones, some attributes."""
    offers = []
    for i in range(n):
        cpus, mem = rnd.choice(MACHINES)
        used = rnd.random() * 0.7
        offers.append(Offer(
            agent_id=f"agent-{i}", hostname=f"10.0.{i // 256}.{i % 256}",
            free=Resources(cpus=int(cpus * (1 - used)), mem=int(mem * (1 - used)),
                           disk=400_000),
            total=Resources(cpus=cpus, mem=mem, disk=500_000),
            port_ranges=[PortRange(31000, 32000)], region="eu-1", zone=f"eu-1{'abc'[i % 3]}",
            attributes={"rack": f"rack-{i % 100}",
                        "type": rnd.choice(["general", "compute", "memory"]),
                        "ssd": rnd.choice(["true", "false"])}))
    return offers


def s3_requests(k: int, rnd: random.Random, offers: list[Offer]) -> list[PlacementRequest]:
    """k pending apps of 1-5 instances, 20% with constraints and running instances."""
    reqs = []
    for a in range(k):
        constrained = rnd.random() < 0.2
        app = AppDefinition(
            id=f"/bench/app-{a}", cmd="serve", cpus=rnd.choice([0.1, 0.25, 0.5, 1, 2, 4]),
            mem=rnd.choice([128, 256, 512, 1024, 4096, 8192]), instances=rnd.randint(1, 5),
            constraints=rnd.choice(CONSTRAINTS) if constrained else [],
            port_definitions=[PortDefinition(port=0) for _ in range(rnd.choice([0, 1, 1, 2]))])
        existing = []
        for e in range(rnd.randint(0, 3) if constrained else 0):
            o = rnd.choice(offers)
            existing.append(Instance(
                instance_id=f"bench_app-{a}.instance-e{e}", run_spec_id=app.id,
                run_spec_version="2026-01-01T00:00:00.000Z",
                state=InstanceState(condition="Running", since=0), agent_id=o.agent_id,
                hostname=o.hostname, region=o.region, zone=o.zone))
        reqs.append(PlacementRequest(
            app=app, instance_ids=[f"bench_app-{a}.instance-{j}" for j in range(app.instances)],
            existing=existing))
    return reqs


@pytest.fixture(scope="module")
def s3():
    rnd = random.Random(2026)
    offers = s3_cluster(10_000, rnd)
    return s3_requests(1_000, rnd, offers), offers


@contextmanager
def core_timer(times: list[float]):
    """Time the core call inside `match` (the rest is building arrays and results)."""
    real = matching._core

    class Timed:
        def __getattr__(self, name):
            return getattr(real, name)

        @staticmethod
        def place(*args):
            t = time.perf_counter()
            try:
                return real.place(*args)
            finally:
                times.append(time.perf_counter() - t)

    with mock.patch.object(matching, "_core", Timed()):
        yield


def report(label: str, **figures) -> None:
    print(f"\n[{label}] " + "  ".join(f"{k}={v}" for k, v in figures.items()))


def test_s3_one_pass_10000_agents_1000_apps(benchmark, s3):
    reqs, offers = s3
    assert matching.BACKEND == "compiled"
    cpu0 = time.process_time()
    result = benchmark.pedantic(match, args=(reqs, offers), rounds=21, iterations=1,
                                warmup_rounds=2)
    cpu = time.process_time() - cpu0
    compiled_ms = benchmark.stats.stats.median * 1000
    instances = sum(len(r.instance_ids) for r in reqs)
    placed = len(result.placements)
    assert placed + sum(map(len, result.unplaced.values())) == instances
    assert placed > 0.95 * instances

    core_times: list[float] = []
    with core_timer(core_times):
        for _ in range(9):
            match(reqs, offers)
    core_ms = statistics.median(core_times) * 1000

    # The reference on the same input: the same answer, and the speed-up.
    with mock.patch.object(matching, "_core", _core_ref):
        t0, c0 = time.perf_counter(), time.process_time()
        ref_result = match(reqs, offers)
        ref_ms = (time.perf_counter() - t0) * 1000
        ref_cpu = time.process_time() - c0
    assert ref_result == result
    benchmark.extra_info.update(
        compiled_ms=round(compiled_ms, 1), core_ms=round(core_ms, 1),
        reference_ms=round(ref_ms), speedup=round(ref_ms / compiled_ms, 1),
        placed=placed, instances=instances)
    report("S3 placement", pass_median_ms=f"{compiled_ms:.1f}", target_ms=50,
           core_only_ms=f"{core_ms:.1f}", python_ms=f"{compiled_ms - core_ms:.1f}",
           reference_ms=f"{ref_ms:.0f}", speedup=f"{ref_ms / compiled_ms:.0f}x",
           target_speedup="20x", cpu_s=f"{cpu:.2f}+{ref_cpu:.2f}",
           placed=f"{placed}/{instances}")


@pytest.mark.parametrize("strategy", ["spread", "firstfit"])
def test_s3_one_pass_other_strategies(benchmark, s3, strategy):
    reqs, offers = s3
    config = MatchConfig(strategy=strategy)
    cpu0 = time.process_time()
    result = benchmark.pedantic(match, args=(reqs, offers, config), rounds=11, iterations=1,
                                warmup_rounds=1)
    cpu = time.process_time() - cpu0
    ms = benchmark.stats.stats.median * 1000
    report(f"S3 placement {strategy}", pass_median_ms=f"{ms:.1f}", cpu_s=f"{cpu:.2f}",
           placed=len(result.placements))


def test_s1_shape_one_app_100000_instances_2000_agents(benchmark):
    offers = [Offer(agent_id=f"agent-{i}", hostname=f"10.1.{i // 256}.{i % 256}",
                    free=Resources(cpus=64000, mem=262144, disk=1_000_000),
                    total=Resources(cpus=64000, mem=262144, disk=1_000_000),
                    port_ranges=[PortRange(20000, 32000)]) for i in range(2000)]
    app = AppDefinition(id="/s1/app", cmd="sleep 3600", cpus=1.0, mem=128, instances=100_000,
                        port_definitions=[PortDefinition(port=0)])
    req = PlacementRequest(app=app, instance_ids=[f"s1_app.instance-{j}" for j in range(100_000)])
    cpu0 = time.process_time()
    result = benchmark.pedantic(match, args=([req], offers), rounds=5, iterations=1,
                                warmup_rounds=1)
    cpu = time.process_time() - cpu0
    assert len(result.placements) == 100_000
    core_times: list[float] = []
    with core_timer(core_times):
        match([req], offers)
    ms = benchmark.stats.stats.median * 1000
    report("S1 shape placement", pass_median_ms=f"{ms:.0f}", target="well under 1000 ms",
           core_only_ms=f"{core_times[0] * 1000:.0f}", per_instance_us=f"{ms * 10 / 1000:.2f}",
           cpu_s=f"{cpu:.2f}")
