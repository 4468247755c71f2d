"""`marathon serve` sets the collector's thresholds for a large long-lived heap."""

from __future__ import annotations

import gc

import pytest

from marathon.cli import _main


@pytest.fixture
def restore_gc():
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)
    gc.unfreeze()


def test_serve_uses_the_server_thresholds_and_freezes_what_is_loaded(restore_gc, monkeypatch):
    monkeypatch.delenv("MARATHON_GC_THRESHOLDS", raising=False)
    gc.unfreeze()
    _main._tune_gc()
    assert gc.get_threshold() == _main.GC_THRESHOLDS
    assert gc.get_freeze_count() > 0


def test_thresholds_can_be_set_from_the_environment(restore_gc, monkeypatch):
    monkeypatch.setenv("MARATHON_GC_THRESHOLDS", "700,10,10")
    _main._tune_gc()
    assert gc.get_threshold() == (700, 10, 10)


def test_unusable_thresholds_fall_back_with_a_message(restore_gc, monkeypatch, capsys):
    monkeypatch.setenv("MARATHON_GC_THRESHOLDS", "lots")
    _main._tune_gc()
    assert gc.get_threshold() == _main.GC_THRESHOLDS
    assert "MARATHON_GC_THRESHOLDS" in capsys.readouterr().err
