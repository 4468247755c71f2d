"""Shared fixtures."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config, items):
    # Everything under tests/integration starts real processes.
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def purepython() -> bool:
    return os.environ.get("MARATHON_PUREPYTHON", "") in ("1", "true", "yes")


@pytest.fixture
def autojump_clock():
    import trio.testing

    return trio.testing.MockClock(autojump_threshold=0)
