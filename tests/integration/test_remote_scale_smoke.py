"""Smoke-sized remote-agent benchmarks (BENCHMARKS.md S8, S6-remote, the
status round trip): the paths of `benchmarks/remote_scenarios.py` with a few
hundred instances, so the code the benchmarks drive keeps working.
Correctness only; no speed asserted."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from marathon.testing.netns import available

pytestmark = pytest.mark.integration


def _load():
    path = Path(__file__).parents[2] / "benchmarks" / "remote_scenarios.py"
    spec = importlib.util.spec_from_file_location("remote_scenarios", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("remote_scenarios", module)
    spec.loader.exec_module(module)
    return module


remote_scenarios = _load()


def test_s8_places_every_instance_on_remote_simulated_agents_then_scales_to_zero(tmp_path):
    result = remote_scenarios.s8(tmp_path, instances=400, agents=2, timeout=120)
    assert result["tasks_per_agent"] == [200, 200]
    assert result["agent_acks"]["acked"] >= 800  # STAGING and RUNNING of each task
    assert result["agent_acks"]["pending"] == 0
    assert result["api_errors"] == []
    assert result["sim"]["running_s"] > 0 and result["running_vs_sim"] > 0


def test_status_round_trip_is_measured_from_the_agents_ack_record(tmp_path):
    result = remote_scenarios.roundtrip(tmp_path, rate=600, apps=6, warmup=1.0, seconds=2.0, timeout=60)
    assert result["put_errors"] == []
    assert result["updates_per_s"] > 0
    assert 0 < result["ack_p50_ms"] <= result["ack_p99_ms"] <= result["ack_max_ms"]
    assert result["observed_p99_ms"] >= result["ack_p50_ms"]


def test_s6_remote_real_processes_start_on_both_agents_and_all_end(tmp_path):
    if (why := available()) is not None:
        pytest.skip(f"network namespaces: {why}")
    result = remote_scenarios.s6_remote(tmp_path, instances=60, embedded=False, timeout=120)
    assert result["processes_per_agent"] == [30, 30]
    assert result["raw_spawn_per_s"] > 0 and result["spawn_per_s"] > 0
    assert all(0 < mib < 1024 for mib in result["agent_rss_mib"])
