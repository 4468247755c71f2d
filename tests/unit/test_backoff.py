"""Launch backoff arithmetic (SPEC.md 4.9)."""

from __future__ import annotations

import pytest

from marathon import backoff


def test_delays_grow_by_factor_and_cap():
    d = None
    seen = []
    for _ in range(45):
        d = backoff.on_failure(d, now=0, backoff_seconds=1, factor=1.15, max_seconds=300)
        seen.append(d.current)
    assert seen[:4] == pytest.approx([1, 1.15, 1.3225, 1.520875])
    assert seen[-1] == 300
    assert seen.index(300) == 41  # reaches the cap after ~41 failures


def test_advance_keeps_delay_but_reanchors():
    d = backoff.on_failure(None, now=1000, backoff_seconds=10, factor=2, max_seconds=300)
    moved = backoff.on_advance(d, now=5000)
    assert moved.current == 10 and moved.reference == 5000 and moved.deadline == 15000


def test_time_left_and_overdue():
    d = backoff.on_failure(None, now=0, backoff_seconds=3, factor=2, max_seconds=300)
    assert d.time_left_seconds(500) == 3 and not d.overdue(2999) and d.overdue(3000)


def test_expired_after_max_launch_delay_without_failures():
    d = backoff.on_failure(None, now=0, backoff_seconds=1, factor=2, max_seconds=300)
    assert not backoff.expired(d, now=300_000) and backoff.expired(d, now=300_001)
