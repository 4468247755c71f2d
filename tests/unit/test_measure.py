"""`marathon.testing.measure`: the numbers benchmarks report."""

from __future__ import annotations

import os

import pytest

from marathon.agent.machine import own_children
from marathon.testing.measure import (
    cpu_seconds,
    filesystem_of,
    peak_rss_mib,
    percentile,
    raw_spawn_rate,
)


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7.0
    assert percentile([3, 1, 2], 0) == 1
    with pytest.raises(ValueError):
        percentile([], 50)


def test_cpu_and_memory_of_this_process():
    before = cpu_seconds(os.getpid())
    sum(i * i for i in range(2_000_000))
    assert cpu_seconds(os.getpid()) > before
    assert 10 < peak_rss_mib(os.getpid()) < 100_000


def test_raw_spawn_rate_starts_and_reaps_every_child():
    result = raw_spawn_rate(20)
    assert result["spawn_per_s"] > 0 and result["kill_per_s"] > 0


def test_spawn_rate_with_sandboxes_cleans_up_its_children_and_files(tmp_path):
    children_before = set(own_children())
    assert raw_spawn_rate(20, sandboxes=tmp_path)["spawn_per_s"] > 0
    assert list(tmp_path.iterdir()) == []
    assert set(own_children()) == children_before


def test_filesystem_of_names_the_mount_a_path_is_on():
    assert filesystem_of("/proc/self") == "proc"
    assert filesystem_of("/") != "unknown"
