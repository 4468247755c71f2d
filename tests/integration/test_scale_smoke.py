"""Smoke-sized benchmark scenarios (BENCHMARKS.md): the S1, S2 and S6 paths
of `marathon.testing.scenarios`, a few hundred instances each, so the code
the benchmarks drive keeps working.  Correctness only; no speed asserted."""

from __future__ import annotations

from marathon.testing import scenarios


def test_s1_burst_places_exactly_n_then_scales_to_zero(tmp_path):
    result = scenarios.s1(tmp_path, instances=400, agents=20, agent_cpus=32, agent_mem=8192, timeout=120)
    # check_placement asserted no duplicates, capacity and ports; scale to 0 left nothing.
    assert result["check"]["tasks"] == 400
    assert result["check"]["most_on_one_agent"] <= 32
    assert result["api_errors"] == []
    assert result["peak_rss_mib"] > 0 and result["cpu_s"] >= 0


def test_s2_concurrent_posts_and_a_group_post(tmp_path):
    result = scenarios.s2(tmp_path, apps=60, concurrency=8, group_apps=200, agents=20, timeout=120)
    assert result["deployment_p99_ms"] >= result["deployment_p50_ms"] > 0
    assert result["group_running_s"] > 0


def test_s6_real_sleep_processes_start_and_all_end(tmp_path):
    result = scenarios.s6(tmp_path, instances=60, timeout=120)
    assert result["processes_checked"] == 60
    assert result["raw_spawn_per_s"] > 0 and result["spawn_per_s"] > 0
