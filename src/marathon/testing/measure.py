"""Measuring a running server: CPU seconds, peak memory, request latencies,
and the machine's own baselines.  Used by `benchmarks/` and by the smoke
versions of the benchmarks in the test suite.

Everything reads the kernel's numbers for a PID (`/proc/PID/stat`,
`/proc/PID/status`), so it measures the server process, not the client.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU of `pid` (and of its reaped children, if asked)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the command: state is field 3, utime/stime 14/15, cutime/cstime 16/17.
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICK


def peak_rss_mib(pid: int) -> float:
    """The high-water mark of resident memory (VmHWM) in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(len(ordered) * q / 100))
    return ordered[rank - 1]


class Poller:
    """GET `url` every `interval` seconds in a thread; keeps each latency (ms)
    and hands every JSON answer to `observe` (e.g. to stamp when a count is
    reached).  Requests never overlap: one client, one connection."""

    def __init__(
        self,
        url: str,
        *,
        interval: float = 0.05,
        observe: Callable[[float, Any], None] | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.url = url
        self.interval = interval
        self.observe = observe
        self.latencies_ms: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._client = httpx.Client(timeout=timeout)
        self._thread = threading.Thread(target=self._loop, name="poller", daemon=True)

    def start(self) -> Poller:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                response = self._client.get(self.url)
                took = time.perf_counter() - started
                self.latencies_ms.append(took * 1000)
                if response.status_code != 200:
                    self.errors.append(f"{response.status_code}: {response.text[:200]}")
                elif self.observe is not None:
                    self.observe(time.perf_counter(), response.json())
            except httpx.HTTPError as exc:
                self.errors.append(repr(exc))
                took = time.perf_counter() - started
            self._stop.wait(max(0.0, self.interval - took))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=120)
        self._client.close()

    def summary(self) -> dict[str, float]:
        lat = self.latencies_ms
        if not lat:
            return {"requests": 0}
        return {
            "requests": len(lat),
            "p50_ms": round(percentile(lat, 50), 1),
            "p99_ms": round(percentile(lat, 99), 1),
            "max_ms": round(max(lat), 1),
        }


def wrk(url: str, *, seconds: int = 5, connections: int = 8, threads: int = 1) -> dict[str, float]:
    """Requests per second and latency of `url` under wrk's closed-loop load."""
    binary = shutil.which("wrk")
    if binary is None:
        raise RuntimeError("wrk is not installed (make system-deps installs it)")
    out = subprocess.run(
        [binary, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    ).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"\s99%\s+([\d.]+)(us|ms|s)\b", out)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if rate is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    result = {"req_per_s": float(rate.group(1)), "non_2xx": float(errors.group(1)) if errors else 0.0}
    if p99 is not None:
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
        result["p99_ms"] = float(p99.group(1)) * scale
    return result


def raw_spawn_rate(count: int, *, argv: tuple[str, ...] = ("sleep", "3600"),
                   sandboxes: Path | None = None) -> dict[str, float]:
    """This machine's rate of starting long-lived children with posix_spawn
    (no bookkeeping), and of killing them: the S6 baseline.

    With `sandboxes`, each child also gets what any Mesos-style agent must
    give a task: its own directory there and stdout/stderr files in it
    (opened by the child), so the difference from the bare rate is the cost
    of three new inodes per task on that file system.
    """
    path = shutil.which(argv[0])
    if path is None:
        raise RuntimeError(f"{argv[0]} not found")
    root = Path(tempfile.mkdtemp(prefix="raw-sandboxes-", dir=sandboxes)) if sandboxes is not None else None
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    pids: list[int] = []
    started = time.perf_counter()
    try:
        for i in range(count):
            if root is None:
                pids.append(os.posix_spawn(path, list(argv), os.environ))
                continue
            sandbox = root / str(i)
            sandbox.mkdir()
            actions = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                       (os.POSIX_SPAWN_OPEN, 1, str(sandbox / "stdout"), flags, 0o644),
                       (os.POSIX_SPAWN_OPEN, 2, str(sandbox / "stderr"), flags, 0o644)]
            pids.append(os.posix_spawn(path, list(argv), os.environ, file_actions=actions, setsid=True))
        spawned = time.perf_counter() - started
    finally:
        kill_started = time.perf_counter()
        for pid in pids:
            os.kill(pid, 9)
        for pid in pids:
            os.waitpid(pid, 0)
        killed = time.perf_counter() - kill_started
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)
    return {"spawn_per_s": count / spawned, "kill_per_s": count / killed if pids else 0.0}


def filesystem_of(path: str | Path) -> str:
    """The type of the file system `path` is on (from /proc/mounts), e.g. "ext4"."""
    best, kind = "", "unknown"
    target = str(Path(path).resolve())
    try:
        with open("/proc/mounts") as f:
            mounts = [line.split() for line in f]
    except OSError:
        return kind
    for fields in mounts:
        point = fields[1]
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind
