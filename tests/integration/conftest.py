"""Fixtures that start real `marathon serve` processes (stopped by PID)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from marathon.testing import MarathonProcess, pid_alive, private_port_range


@pytest.fixture
def marathon_factory(tmp_path: Path) -> Iterator:
    started: list[MarathonProcess] = []

    def make(name: str = "m", args: list[str] | None = None, **kw) -> MarathonProcess:
        m = MarathonProcess(
            tmp_path / name,
            args=["--agent_resources", "cpus:8;mem:4096;disk:4096", *(args or [])],
            agent_ports=kw.pop("agent_ports", private_port_range()),
            **kw,
        )
        started.append(m)
        return m

    yield make
    for m in started:
        m.stop()


@pytest.fixture
def marathon(marathon_factory) -> Iterator[MarathonProcess]:
    m = marathon_factory().start()
    yield m
    if m.proc is not None and os.environ.get("MARATHON_TEST_SHOW_LOG"):
        print(m.log())


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (by parent links in /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return {p for p in out if pid_alive(p)}


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except FileNotFoundError:
        return ""


def pids_matching(text: str) -> set[int]:
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and text in cmdline(int(entry)) and pid_alive(int(entry)):
            out.add(int(entry))
    return out
