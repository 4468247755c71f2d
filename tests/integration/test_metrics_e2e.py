"""Metrics end to end: a real server, real tasks, a real carbon-cache.

/metrics and /metrics/prometheus follow an app and its tasks; the StatsD and
DataDog flags deliver to UDP receivers in this test; `--reporter_graphite`
delivers to Debian's carbon-cache (started here, read back with whisper), and
the server keeps serving while carbon is down, then reconnects.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from marathon.testing import free_port, wait_for

CARBON = Path("/usr/bin/carbon-cache")
SLEEPER = {"id": "/metrics/sleeper", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "instances": 2}

STORAGE_SCHEMAS = "[default]\npattern = .*\nretentions = 1s:1h,60s:1d\n"


class Carbon:
    """Debian's carbon-cache on free 127.0.0.1 ports, configured in `root`, stopped by PID."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        for d in ("conf", "storage/whisper", "storage/lists", "log", "run"):
            (root / d).mkdir(parents=True, exist_ok=True)
        (root / "conf" / "carbon.conf").write_text(
            "[cache]\n"
            f"STORAGE_DIR = {root}/storage/\n"
            f"LOCAL_DATA_DIR = {root}/storage/whisper/\n"
            f"WHITELISTS_DIR = {root}/storage/lists/\n"
            f"CONF_DIR = {root}/conf/\n"
            f"LOG_DIR = {root}/log/\n"
            f"PID_DIR = {root}/run/\n"
            "DATABASE = whisper\n"
            "ENABLE_LOGROTATION = False\n"
            "MAX_CACHE_SIZE = inf\n"
            "MAX_UPDATES_PER_SECOND = 5000\n"
            "MAX_CREATES_PER_MINUTE = 5000\n"
            "LINE_RECEIVER_INTERFACE = 127.0.0.1\n"
            f"LINE_RECEIVER_PORT = {self.port}\n"
            "ENABLE_UDP_LISTENER = False\n"
            "PICKLE_RECEIVER_INTERFACE = 127.0.0.1\n"
            f"PICKLE_RECEIVER_PORT = {free_port()}\n"
            "CACHE_QUERY_INTERFACE = 127.0.0.1\n"
            f"CACHE_QUERY_PORT = {free_port()}\n"
            "USE_FLOW_CONTROL = True\n"
            "CACHE_WRITE_STRATEGY = sorted\n"
            "WHISPER_AUTOFLUSH = True\n"
            "CARBON_METRIC_INTERVAL = 0\n"
        )
        (root / "conf" / "storage-schemas.conf").write_text(STORAGE_SCHEMAS)

    def start(self) -> Carbon:
        log = open(self.root / "console.log", "ab")
        self.proc = subprocess.Popen(
            [str(CARBON), f"--config={self.root}/conf/carbon.conf", "--nodaemon", "start"],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
        )
        log.close()
        wait_for(self._listening, timeout=20, message="carbon-cache to listen")
        return self

    def _listening(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"carbon-cache exited: {(self.root / 'console.log').read_text()[-3000:]}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def values(self, metric: str, since: float) -> list[float]:
        """Points of `metric` stored since `since` (whisper, read by Debian's python3)."""
        path = self.root / "storage" / "whisper" / (metric.replace(".", "/") + ".wsp")
        if not path.exists():
            return []
        script = (
            "import json, sys, time, whisper\n"
            "(start, end, step), values = whisper.fetch(sys.argv[1], float(sys.argv[2]))\n"
            "print(json.dumps([v for v in values if v is not None]))\n"
        )
        out = subprocess.run(
            ["/usr/bin/python3", "-c", script, str(path), str(since)], capture_output=True, check=True, timeout=20
        )
        return json.loads(out.stdout)


@pytest.fixture
def carbon(tmp_path: Path) -> Iterator[Carbon]:
    assert CARBON.exists(), "graphite-carbon is missing: run scripts/install-system-deps.sh"
    c = Carbon(tmp_path / "carbon").start()
    yield c
    c.stop()


class UdpReceiver:
    """Collects datagrams on 127.0.0.1 in a thread."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            self.lines.extend(data.decode().splitlines())

    def has(self, line: str) -> bool:
        return line in list(self.lines)

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close()


@pytest.fixture
def udp() -> Iterator[list[UdpReceiver]]:
    receivers = [UdpReceiver(), UdpReceiver()]
    yield receivers
    for r in receivers:
        r.close()


def gauges_and_counters(m) -> dict[str, float]:
    body = m.client.get("/metrics").json()
    out = {name: v["count"] for name, v in body["counters"].items()}
    out.update({name: v["value"] for name, v in body["gauges"].items()})
    return out


def prometheus(m) -> dict[str, float]:
    r = m.client.get("/metrics/prometheus")
    assert r.status_code == 200
    return {
        name: float(value)
        for name, _, value in (line.partition(" ") for line in r.text.splitlines() if line and not line.startswith("#"))
        if "{" not in name
    }


def test_metrics_follow_an_app_to_every_reporter_and_survive_carbon_going_away(marathon_factory, carbon, udp):
    statsd, datadog = udp
    m = marathon_factory(args=[
        "--metrics_statsd", "--metrics_statsd_host", "127.0.0.1", "--metrics_statsd_port", str(statsd.port),
        "--metrics_statsd_transmission_interval_ms", "200",
        "--metrics_datadog", "--metrics_datadog_host", "127.0.0.1", "--metrics_datadog_port", str(datadog.port),
        "--metrics_datadog_transmission_interval_ms", "200", "--metrics_datadog_tags", "env:e2e",
        "--reporter_graphite", f"tcp://127.0.0.1:{carbon.port}",
        "--metrics_graphite_transmission_interval_ms", "250",
    ]).start()
    since = time.time() - 5

    r = m.client.post("/v2/apps", json=SLEEPER)
    assert r.status_code == 201, r.text
    wait_for(lambda: len(m.running_tasks("/metrics/sleeper")) == 2, timeout=30, message="2 running tasks")
    m.wait_deployments_done(timeout=30)

    # /metrics: Marathon's JSON, reflecting the app and its tasks.
    v = wait_for(lambda: (g := gauges_and_counters(m))["marathon.instances.running.gauge"] == 2 and g, timeout=10)
    assert v["marathon.apps.active.gauge"] == 1
    assert v["marathon.groups.active.gauge"] == 1
    assert v["marathon.tasks.launched.counter"] == 2
    assert v["marathon.mesos.task-updates.task-running.counter"] >= 2
    assert v["marathon.deployments.counter"] == 1
    assert v["marathon.process.memory.rss.gauge.bytes"] > 0

    # /metrics/prometheus: the same numbers under Prometheus names.
    p = prometheus(m)
    assert p["marathon_apps_active_gauge"] == 1
    assert p["marathon_instances_running_gauge"] == 2
    assert p["marathon_tasks_launched_counter"] == 2
    assert p["marathon_http_responses_2xx_rate_meter_count"] >= 1

    # StatsD and DataDog receivers get every metric as gauges.  A report
    # spans several datagrams (at most 1,432 bytes each), which the
    # receiver's thread takes in one by one: wait for each line.
    wait_for(lambda: statsd.has("marathon.instances.running.gauge:2|g"), timeout=10, message="statsd gauge")
    wait_for(lambda: statsd.has("marathon.apps.active.gauge:1|g"), timeout=10, message="statsd apps gauge")
    tags = "|#framework:marathon,env:e2e"
    wait_for(lambda: datadog.has("marathon.instances.running.gauge:2|g" + tags), timeout=10, message="datadog gauge")
    wait_for(lambda: datadog.has("marathon.tasks.launched.counter:2|g" + tags), timeout=10,
             message="datadog counter")

    # Graphite: the points are in carbon's whisper files.
    wait_for(lambda: 2.0 in carbon.values("marathon.instances.running.gauge", since), timeout=15, message="whisper")
    # carbon writes each metric's whisper file on its own: wait for this one too.
    wait_for(lambda: 1.0 in carbon.values("marathon.apps.active.gauge", since), timeout=15, message="whisper apps")

    # Carbon goes away: the server keeps answering at once, and logs it once.
    carbon.stop()
    for _ in range(10):
        start = time.monotonic()
        assert m.client.get("/v2/apps").status_code == 200
        assert m.client.get("/metrics").status_code == 200
        assert time.monotonic() - start < 1.0
        time.sleep(0.1)

    # Carbon comes back: the sink reconnects and the new numbers arrive.
    carbon.start()
    restarted = time.time()
    r = m.client.put("/v2/apps/metrics/sleeper", json={"instances": 3})
    assert r.status_code == 200, r.text
    wait_for(lambda: len(m.running_tasks("/metrics/sleeper")) == 3, timeout=30, message="3 running tasks")
    wait_for(lambda: 3.0 in carbon.values("marathon.instances.running.gauge", restarted), timeout=15, message="whisper after restart")
    log = m.log_path.read_text(errors="replace")
    assert log.count("metrics receiver unreachable") == 1, log[-5000:]
    assert "metrics receiver reachable again sink=graphite" in log


def test_server_serves_while_graphite_receiver_is_down_and_prometheus_off(marathon_factory):
    nobody = free_port()
    m = marathon_factory(args=[
        "--reporter_graphite", f"tcp://127.0.0.1:{nobody}", "--metrics_graphite_transmission_interval_ms", "100",
        "--disable_metrics_prometheus",
    ]).start()
    r = m.client.get("/metrics/prometheus")
    assert (r.status_code, r.json()) == (404, {"message": "Prometheus reporter is disabled"})
    slowest = 0.0
    deadline = time.monotonic() + 2.0  # twenty failed flushes
    while time.monotonic() < deadline:
        start = time.monotonic()
        assert m.client.get("/v2/apps").status_code == 200
        slowest = max(slowest, time.monotonic() - start)
    assert slowest < 0.5
    assert m.client.get("/metrics").json()["version"] == "4.0.0"
    log = m.log_path.read_text(errors="replace")
    assert log.count("metrics receiver unreachable") == 1
    assert m.proc is not None and m.proc.poll() is None
