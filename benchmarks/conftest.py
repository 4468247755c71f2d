"""Shared by the benchmarks: printing a figure so it shows without `-s`."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def report(capsys, benchmark):
    """`report(label, figures)`: print one line per scenario and keep the
    figures in pytest-benchmark's JSON (`--benchmark-json`) as extra_info."""

    def emit(label: str, figures: dict) -> None:
        benchmark.extra_info.update(figures)
        with capsys.disabled():
            print(f"\n[{label}] {json.dumps(figures)}", flush=True)

    return emit
