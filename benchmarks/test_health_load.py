"""Health checks at scale: 1,000 instances probed over HTTP every second (issue 5).

Marathon runs on simulated agents whose hostname is this machine, and every
instance's port is served by one real responder process listening on the
whole agent port range, so each probe is a real HTTP request over a real
socket.  While the checks run, the benchmark measures the API's latency
(`GET /v2/apps`, `GET /v2/info`), the probes per second actually achieved,
and the server's CPU.  Target: API p99 < 100 ms.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from marathon.testing import MarathonProcess, wait_for
from marathon.testing.measure import cpu_seconds, percentile

INSTANCES = int(os.environ.get("HEALTH_BENCH_INSTANCES", "1000"))
RESPONDER = Path(__file__).parent / "apps" / "multiport_http.py"


@pytest.fixture
def responder(tmp_path):
    count_file = tmp_path / "answered"
    proc = subprocess.Popen(
        [sys.executable, str(RESPONDER), "31000", "32000", str(count_file)], stdout=subprocess.PIPE, text=True
    )
    assert "listening" in proc.stdout.readline()
    proc.answered = lambda: int(count_file.read_text() or 0)  # type: ignore[attr-defined]
    yield proc
    proc.terminate()
    proc.wait(10)


def test_api_latency_with_1000_health_checked_instances(benchmark, tmp_path, responder):
    m = MarathonProcess(tmp_path, args=["--master", "sim://10?cpus=32&hostname=127.0.0.1", "--logging_level", "warn"])
    with m:
        app = {"id": "/checked", "cmd": "serve", "cpus": 0.01, "mem": 1, "instances": INSTANCES,
               "healthChecks": [{"protocol": "HTTP", "path": "/", "intervalSeconds": 1, "timeoutSeconds": 1,
                                 "gracePeriodSeconds": 300}]}
        assert m.client.post("/v2/apps", json=app).status_code == 201
        wait_for(lambda: m.client.get("/v2/apps/checked").json()["app"]["tasksHealthy"] == INSTANCES,
                 timeout=120, message="all instances healthy")

        # Phase 1: the checks alone.
        cpu0, wall0, answered0 = cpu_seconds(m.proc.pid), time.monotonic(), responder.answered()
        time.sleep(10)
        idle_wall = time.monotonic() - wall0
        idle_cpu = cpu_seconds(m.proc.pid) - cpu0
        idle_probes = (responder.answered() - answered0) / idle_wall

        # Phase 2: API requests back to back while the checks run.
        client = httpx.Client(base_url=m.url, timeout=30)
        latencies: dict[str, list[float]] = {"/v2/apps": [], "/v2/info": []}

        def round_trip() -> None:
            for path, samples in latencies.items():
                t0 = time.perf_counter()
                r = client.get(path)
                samples.append(time.perf_counter() - t0)
                assert r.status_code == 200

        cpu0, wall0 = cpu_seconds(m.proc.pid), time.monotonic()
        answered0 = responder.answered()
        benchmark.pedantic(round_trip, rounds=400, iterations=1, warmup_rounds=10)
        wall = time.monotonic() - wall0
        cpu = cpu_seconds(m.proc.pid) - cpu0
        probes_per_s = (responder.answered() - answered0) / wall

        summary = {}
        for path, samples in latencies.items():
            summary[path] = {
                "p50_ms": round(statistics.median(samples) * 1000, 2),
                "p99_ms": round(percentile(samples, 99) * 1000, 2),
                "max_ms": round(max(samples) * 1000, 2),
            }
        benchmark.extra_info.update({
            "instances": INSTANCES, "window": "API request under health-check load",
            "checks_only": {"probes_per_second": round(idle_probes), "server_cpu_share": round(idle_cpu / idle_wall, 2)},
            "with_api_load": {"probes_per_second": round(probes_per_s), "server_cpu_share": round(cpu / wall, 2)},
            "latency": summary,
        })
        print(f"\nhealth load: {INSTANCES} instances; checks alone: {idle_probes:.0f} probes/s at "
              f"{idle_cpu / idle_wall:.0%} of a core; with API requests back to back: {probes_per_s:.0f} probes/s, "
              f"{cpu / wall:.0%} of a core; latency {summary}")
        client.close()
