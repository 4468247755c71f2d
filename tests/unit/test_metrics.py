"""Metrics: the registry, Marathon's JSON and Prometheus shapes, the metrics
derived from the services, the HTTP middleware, the metrics service and the
built-in sinks against real UDP/TCP receivers on 127.0.0.1."""

from __future__ import annotations

import logging
import math
import socket
import time

import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from marathon.api.metrics import HttpMetricsMiddleware
from marathon.builtin import metrics_sinks
from marathon.builtin.metrics_sinks import DataDogSink, GraphiteSink, StatsDSink, parse_graphite_url
from marathon.config import ConfigError
from marathon.hookspecs import Identity, MetricsSnapshot, hookimpl
from marathon.models.events import (
    DeploymentFailed,
    DeploymentInfo,
    DeploymentSuccess,
    StatusUpdateEvent,
)
from marathon.plugins import plugin_manager
from marathon.services.metrics import (
    RESERVOIR_SIZE,
    EventCounters,
    MetricsRegistry,
    MetricsService,
    collect_sinks,
)
from marathon.testing import InProcess


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the registry -------------------------------------------------------------------


def test_names_are_prefix_name_type_and_unit():
    r = MetricsRegistry()
    r.counter("deployments")
    r.counter("http.responses.event-stream.size", unit="bytes")
    r.gauge("apps.active", lambda: 3)
    r.timer("http.requests.duration")
    r.meter("http.responses.2xx.rate")
    r.histogram("batch.size")
    reading = r.read()
    assert set(reading.counters) == {"marathon.deployments.counter", "marathon.http.responses.event-stream.size.counter.bytes"}
    assert set(reading.gauges) == {"marathon.apps.active.gauge"}
    assert set(reading.timers) == {"marathon.http.requests.duration.timer.seconds"}
    assert set(reading.meters) == {"marathon.http.responses.2xx.rate.meter"}
    assert set(reading.histograms) == {"marathon.batch.size.histogram"}
    assert MetricsRegistry(prefix="mara").full_name("uptime", "gauge", "seconds") == "mara.uptime.gauge.seconds"
    assert MetricsRegistry(prefix="").full_name("uptime", "gauge") == "uptime.gauge"


def test_metrics_are_created_once_and_shared_by_name():
    r = MetricsRegistry()
    r.counter("deployments").inc()
    r.counter("deployments").inc(2)
    assert r.read().counters["marathon.deployments.counter"] == 3


def test_callback_gauges_and_counters_are_read_at_read_time():
    r = MetricsRegistry()
    box = {"apps": 1, "launched": 5}
    r.gauge("apps.active", lambda: box["apps"])
    r.counter("launched", fn=lambda: box["launched"])
    box.update(apps=7, launched=9)
    reading = r.read()
    assert reading.gauges["marathon.apps.active.gauge"] == 7
    assert reading.counters["marathon.launched.counter"] == 9


def test_a_gauge_group_is_computed_once_per_read():
    r = MetricsRegistry()
    calls = []

    def compute():
        calls.append(1)
        return {"instances.running": 4, "instances.staged": 1}

    r.gauges(compute, {"instances.running": None, "instances.staged": None, "instances.gone": None})
    gauges = r.read().gauges
    assert calls == [1]
    assert gauges["marathon.instances.running.gauge"] == 4
    assert gauges["marathon.instances.gone.gauge"] == 0  # left out by the callback


def test_a_failing_callback_is_skipped_and_logged_once(caplog):
    r = MetricsRegistry()
    r.gauge("broken", lambda: 1 / 0)
    r.gauge("fine", lambda: 2)
    with caplog.at_level(logging.ERROR, "marathon.metrics"):
        for _ in range(3):
            gauges = r.read().gauges
    assert gauges == {"marathon.fine.gauge": 2}
    assert len([rec for rec in caplog.records if "metric callback failed" in rec.message]) == 1


def test_nan_gauges_read_as_zero():
    r = MetricsRegistry()
    r.gauge("nan", lambda: math.nan)
    assert r.read().gauges["marathon.nan.gauge"] == 0.0


def test_histogram_summary_interpolates_like_dropwizard():
    r = MetricsRegistry()
    h = r.histogram("h")
    for v in range(1, 101):
        h.update(float(v))
    s = r.read().histograms["marathon.h.histogram"]
    assert s["count"] == 100
    assert (s["min"], s["max"], s["mean"]) == (1.0, 100.0, 50.5)
    assert s["p50"] == pytest.approx(50.5)
    assert s["p75"] == pytest.approx(75.75)
    assert s["p99"] == pytest.approx(99.99)
    assert s["p999"] == 100.0
    assert s["stddev"] == pytest.approx(29.0115, rel=1e-4)


def test_histogram_keeps_only_the_latest_values_but_counts_all():
    h = MetricsRegistry().histogram("h")
    for _ in range(RESERVOIR_SIZE):
        h.update(1000.0)
    for _ in range(RESERVOIR_SIZE):
        h.update(1.0)
    s = h.summary()
    assert s["count"] == 2 * RESERVOIR_SIZE
    assert s["max"] == 1.0


def test_empty_histogram_reads_zeros():
    s = MetricsRegistry().timer("t").summary()
    assert s["count"] == 0 and s["p99"] == 0.0 and s["mean_rate"] == 0.0


def test_meter_rates_are_exponentially_weighted_per_five_second_tick():
    clock = FakeClock()
    r = MetricsRegistry(clock=clock)
    m = r.meter("launches")
    m.mark(300)  # 60 a second during the first tick
    clock.now += 5.0
    s = m.summary()
    assert s["count"] == 300
    assert s["m1_rate"] == pytest.approx(60.0)
    assert s["mean_rate"] == pytest.approx(60.0)
    clock.now += 60.0  # a quiet minute: the 1-minute average falls by e
    s = m.summary()
    assert s["m1_rate"] == pytest.approx(60.0 / math.e, rel=1e-6)
    assert s["m15_rate"] > s["m5_rate"] > s["m1_rate"]


def test_json_is_marathons_dropwizard_shape():
    clock = FakeClock()
    r = MetricsRegistry(clock=clock)
    r.counter("deployments").inc(2)
    r.gauge("apps.active", lambda: 1)
    r.histogram("h").update(2.0)
    r.meter("http.responses.2xx.rate").mark()
    r.timer("http.requests.duration").update(0.25)
    clock.now += 1
    body = r.to_json()
    assert list(body) == ["version", "counters", "gauges", "histograms", "meters", "timers"]
    assert body["version"] == "4.0.0"
    assert body["counters"] == {"marathon.deployments.counter": {"count": 2}}
    assert body["gauges"] == {"marathon.apps.active.gauge": {"value": 1}}
    hist_fields = ["count", "max", "mean", "min", "p50", "p75", "p95", "p98", "p99", "p999", "stddev"]
    rate_fields = ["m15_rate", "m1_rate", "m5_rate", "mean_rate"]
    assert list(body["histograms"]["marathon.h.histogram"]) == hist_fields
    assert list(body["meters"]["marathon.http.responses.2xx.rate.meter"]) == ["count", *rate_fields, "units"]
    assert body["meters"]["marathon.http.responses.2xx.rate.meter"]["units"] == "events/second"
    timer = body["timers"]["marathon.http.requests.duration.timer.seconds"]
    assert list(timer) == [*hist_fields, *rate_fields, "duration_units", "rate_units"]
    assert (timer["count"], timer["max"], timer["duration_units"], timer["rate_units"]) == (1, 0.25, "seconds", "calls/second")


def test_snapshot_for_sinks_flattens_histograms_meters_and_timers_into_summaries():
    r = MetricsRegistry(wall=lambda: 1_700_000_000.5)
    r.counter("c").inc()
    r.gauge("g", lambda: 2.5)
    r.histogram("h").update(1.0)
    r.meter("m").mark()
    r.timer("t").update(0.5)
    snap = r.snapshot()
    assert snap.timestamp == 1_700_000_000.5
    assert snap.counters == {"marathon.c.counter": 1}
    assert snap.gauges == {"marathon.g.gauge": 2.5}
    assert set(snap.timers) == {"marathon.h.histogram", "marathon.m.meter", "marathon.t.timer.seconds"}
    assert snap.timers["marathon.t.timer.seconds"]["p99"] == 0.5
    assert snap.timers["marathon.m.meter"]["count"] == 1


# -- metrics derived from events ---------------------------------------------------


def _status(state: str) -> StatusUpdateEvent:
    return StatusUpdateEvent(
        timestamp="t", slave_id="a", task_id="t1", task_status=state, message="", app_id="/a",
        host="h", ip_addresses=[], ports=[], version="v",
    )


def test_event_counters_count_deployments_launches_and_task_updates():
    r = MetricsRegistry()
    observe = EventCounters(r)
    plan = {"id": "p1", "steps": [], "version": "v"}
    observe(DeploymentInfo(timestamp="t", plan=plan, current_step={}))
    observe(DeploymentInfo(timestamp="t", plan=plan, current_step={}))  # its second step
    observe(DeploymentSuccess(timestamp="t", id="p1", plan=plan))
    observe(DeploymentSuccess(timestamp="t", id="p2", plan={"id": "p2"}))  # no steps: no step events
    observe(DeploymentInfo(timestamp="t", plan={"id": "p3"}, current_step={}))
    observe(DeploymentFailed(timestamp="t", id="p3", plan={"id": "p3"}, reason="cancelled"))
    for state in ("TASK_STAGING", "TASK_RUNNING", "TASK_STAGING", "TASK_LOST"):
        observe(_status(state))
    c = r.read().counters
    assert c["marathon.deployments.counter"] == 3
    assert c["marathon.deployments.dismissed.counter"] == 1
    assert c["marathon.tasks.launched.counter"] == 2
    assert c["marathon.mesos.task-updates.task-staging.counter"] == 2
    assert c["marathon.mesos.task-updates.task-running.counter"] == 1
    assert c["marathon.mesos.task-updates.task-lost.counter"] == 1


# -- the running server (in process, simulated agents, virtual time) ----------------------


def _values(body: dict) -> dict:
    out = {name: v["count"] for name, v in body["counters"].items()}
    out.update({name: v["value"] for name, v in body["gauges"].items()})
    return out


async def test_metrics_reflect_apps_instances_deployments_and_launches(autojump_clock):
    from marathon.cluster.sim import SimConfig

    async with InProcess.start(sim=SimConfig(agents=2, cpus=1.0, mem=1024)) as m:
        r = await m.client.post("/v2/apps", json={"id": "/web", "cmd": "sleep 1000", "cpus": 0.25, "mem": 16, "instances": 3})
        assert r.status_code == 201
        with trio.fail_after(60):
            await m.settle()
        v = _values((await m.client.get("/metrics")).json())
        assert v["marathon.apps.active.gauge"] == 1
        assert v["marathon.groups.active.gauge"] == 0
        assert v["marathon.instances.running.gauge"] == 3
        assert v["marathon.instances.staged.gauge"] == 0
        assert v["marathon.deployments.counter"] == 1
        assert v["marathon.deployments.active.gauge"] == 0
        assert v["marathon.tasks.launched.counter"] == 3
        assert v["marathon.mesos.task-updates.task-running.counter"] == 3
        assert v["marathon.mesos.offer-operations.launch.counter"] == 3
        assert v["marathon.mesos.offers.used.counter"] >= 1
        assert v["marathon.launch-queue.size.gauge"] == 0
        assert v["marathon.uptime.gauge.seconds"] > 0

        # More than the agents hold (8 x 0.25 cpus): 3 stay in the queue, declined.
        r = await m.client.put("/v2/apps/web", json={"instances": 11})
        deployment = r.json()["deploymentId"]
        with trio.fail_after(60):
            await m.wait_until(lambda: len(m.running("/web")) == 8)
            await trio.sleep(10)  # a few retry passes
        v = _values((await m.client.get("/metrics")).json())
        assert v["marathon.launch-queue.size.gauge"] == 3
        assert v["marathon.instances.scheduled.gauge"] == 3
        assert v["marathon.mesos.offers.declined.counter"] > 0
        assert v["marathon.deployments.active.gauge"] == 1

        r = await m.client.delete(f"/v2/deployments/{deployment}", params={"force": "true"})
        assert r.status_code == 202, r.text
        with trio.fail_after(60):
            await m.wait_until(lambda: not m.services.deployments.running())
        v = _values((await m.client.get("/metrics")).json())
        assert v["marathon.deployments.dismissed.counter"] == 1
        assert v["marathon.deployments.counter"] == 2


async def test_prometheus_text_has_marathons_names_and_parses(autojump_clock):
    async with InProcess.start(agents=2) as m:
        await m.client.post("/v2/apps", json={"id": "/a", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "instances": 2})
        with trio.fail_after(60):
            await m.settle()
        await m.client.get("/v2/apps")
        r = await m.client.get("/metrics/prometheus")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        families = {f.name: f for f in text_string_to_metric_families(r.text)}
        samples = {s.name: s.value for f in families.values() for s in f.samples if not s.labels}
        assert samples["marathon_apps_active_gauge"] == 1
        assert samples["marathon_instances_running_gauge"] == 2
        assert samples["marathon_tasks_launched_counter"] == 2
        assert samples["marathon_http_event_streams_active_gauge"] == 0
        get = families["marathon_http_requests_get_duration_timer_seconds"]
        assert get.type == "summary"
        quantiles = {s.labels["quantile"] for s in get.samples if s.labels}
        assert quantiles == {"0.5", "0.75", "0.95", "0.98", "0.99", "0.999"}
        assert samples["marathon_http_requests_get_duration_timer_seconds_count"] >= 1
        assert "marathon_http_requests_get_duration_timer_seconds_m1_rate" in samples
        assert samples["marathon_http_responses_2xx_rate_meter_count"] >= 2
        assert not any("." in name or "-" in name for name in samples)


async def test_prometheus_endpoint_can_be_disabled(autojump_clock):
    async with InProcess.start(agents=1, metrics_prometheus=False) as m:
        r = await m.client.get("/metrics/prometheus")
        assert r.status_code == 404
        assert r.json() == {"message": "Prometheus reporter is disabled"}
        assert (await m.client.get("/metrics")).status_code == 200


class DenyMetrics:
    @hookimpl
    def marathon_auth_authenticate(self, request):
        return Identity(name="viewer")

    @hookimpl
    def marathon_auth_authorize(self, identity, action, resource):
        return not (resource.kind == "system" and resource.id == "SystemMetrics")


async def test_metrics_need_view_on_system_metrics(autojump_clock):
    async with InProcess.start(agents=1, plugins=[("deny-metrics", DenyMetrics())]) as m:
        assert (await m.client.get("/metrics")).status_code == 403
        assert (await m.client.get("/metrics/prometheus")).status_code == 403
        assert (await m.client.get("/v2/apps")).status_code == 200


async def test_name_prefix_flag_renames_every_metric(autojump_clock):
    async with InProcess.start(agents=1, metrics_name_prefix="dcos.marathon") as m:
        body = (await m.client.get("/metrics")).json()
        names = [*body["counters"], *body["gauges"], *body["meters"], *body["timers"]]
        assert names and all(n.startswith("dcos.marathon.") for n in names)
        assert "dcos.marathon.apps.active.gauge" in body["gauges"]


async def test_http_metrics_count_statuses_sizes_durations_and_streams(autojump_clock):
    async with InProcess.start(agents=1) as m:
        await m.client.get("/v2/apps")
        await m.client.get("/v2/apps/missing")
        await m.client.post("/v2/apps", content=b"{not json")
        sub = m.services.bus.subscribe()
        body = (await m.client.get("/metrics")).json()
        sub.close()
        meters = {n: v["count"] for n, v in body["meters"].items()}
        assert meters["marathon.http.responses.2xx.rate.meter"] == 1
        assert meters["marathon.http.responses.4xx.rate.meter"] == 2
        assert meters["marathon.http.responses.5xx.rate.meter"] == 0
        timers = body["timers"]
        assert timers["marathon.http.requests.duration.timer.seconds"]["count"] == 3
        assert timers["marathon.http.requests.get.duration.timer.seconds"]["count"] == 2
        assert timers["marathon.http.requests.post.duration.timer.seconds"]["count"] == 1
        v = _values(body)
        assert v["marathon.http.requests.size.counter.bytes"] == len(b"{not json")
        assert v["marathon.http.responses.size.counter.bytes"] > 0
        assert v["marathon.http.requests.active.gauge"] == 1  # this very request
        assert v["marathon.http.event-streams.active.gauge"] == 1


async def test_http_middleware_adds_only_microseconds_per_request():
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"pong"})

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        pass

    scope = {"type": "http", "method": "GET", "path": "/ping"}
    wrapped = HttpMetricsMiddleware(app, MetricsRegistry())
    n = 20000

    async def per_request(handler) -> float:
        best = math.inf
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(n):
                await handler(scope, receive, send)
            best = min(best, (time.perf_counter() - start) / n)
        return best

    overhead = await per_request(wrapped) - await per_request(app)
    print(f"middleware overhead: {overhead * 1e6:.2f} us/request")
    assert overhead < 50e-6  # a loose bound: measured at a few microseconds


# -- the metrics service ------------------------------------------------------------


class RecordingSink:
    def __init__(self, name: str, interval: float, behaviour: str = "ok") -> None:
        self.name = name
        self.interval_seconds = interval
        self.behaviour = behaviour
        self.calls: list[float] = []

    async def send(self, snapshot: MetricsSnapshot) -> None:
        self.calls.append(trio.current_time())
        if self.behaviour == "hang":
            await trio.sleep_forever()
        if self.behaviour == "raise":
            raise RuntimeError("receiver exploded")


async def test_service_flushes_each_sink_on_its_interval_and_survives_bad_sinks(autojump_clock, caplog):
    registry = MetricsRegistry()
    good = RecordingSink("good", 1.0)
    hanging = RecordingSink("hanging", 2.0, "hang")
    raising = RecordingSink("raising", 1.0, "raise")
    service = MetricsService(registry, [good, hanging, raising])
    with caplog.at_level(logging.INFO, "marathon.metrics"):
        async with trio.open_nursery() as nursery:
            start = trio.current_time()
            await nursery.start(service.run)
            await trio.sleep(10.5)
            nursery.cancel_scope.cancel()
    assert [round(t - start, 3) for t in good.calls] == [float(i) for i in range(11)]
    # Cut off after its interval each time, and called again on schedule.
    assert [round(t - start, 3) for t in hanging.calls] == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    assert len(raising.calls) == 11
    assert service.flushes == {"good": 11}
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if "sink=hanging" in w]) == 1
    assert len([w for w in warnings if "sink=raising" in w]) == 1


async def test_service_ticks_meter_rates_in_the_background(autojump_clock):
    r = MetricsRegistry(clock=trio.current_time)
    meter = r.meter("m")
    async with trio.open_nursery() as nursery:
        await nursery.start(MetricsService(r).run)
        meter.mark(50)
        await trio.sleep(5.5)
        assert meter._rates[0] == pytest.approx(10.0)  # ticked without anyone reading
        nursery.cancel_scope.cancel()


# -- the sinks against real receivers -------------------------------------------------------------


def _snapshot(**gauges: float) -> MetricsSnapshot:
    r = MetricsRegistry(wall=lambda: 1_700_000_000.0)
    r.counter("deployments").inc(3)
    r.gauge("http.event-streams.active", lambda: 1)
    for name, value in gauges.items():
        r.gauge(name, lambda v=value: v)
    r.timer("http.requests.duration").update(0.5)
    return r.snapshot()


async def _udp_receiver() -> tuple[trio.socket.SocketType, int]:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]


async def _datagrams(sock: trio.socket.SocketType, quiet: float = 0.2) -> list[bytes]:
    out = []
    while True:
        with trio.move_on_after(quiet):
            out.append(await sock.recv(65536))
            continue
        return out


async def test_statsd_sends_every_metric_as_a_gauge_in_small_datagrams():
    sock, port = await _udp_receiver()
    with sock:
        sink = StatsDSink("statsd", "127.0.0.1", port, 10.0)
        many = {f"apps.app{i}.instances": i for i in range(200)}
        await sink.send(_snapshot(**many))
        datagrams = await _datagrams(sock)
    assert all(len(d) <= metrics_sinks.MAX_DATAGRAM for d in datagrams) and len(datagrams) > 1
    lines = b"".join(datagrams).decode().splitlines()
    assert "marathon.deployments.counter:3|g" in lines
    assert "marathon.http.event-streams.active.gauge:1|g" in lines
    assert "marathon.apps.app7.instances.gauge:7|g" in lines
    assert "marathon.http.requests.duration.timer.seconds.p99:0.5|g" in lines
    assert "marathon.http.requests.duration.timer.seconds.count:1|g" in lines
    assert all(line.endswith("|g") for line in lines)


async def test_datadog_sends_tagged_gauges_with_safe_names():
    sock, port = await _udp_receiver()
    with sock:
        sink = DataDogSink("datadog", "127.0.0.1", port, 10.0, ["framework:marathon", "env:test"])
        await sink.send(_snapshot())
        lines = b"".join(await _datagrams(sock)).decode().splitlines()
    assert "marathon.deployments.counter:3|g|#framework:marathon,env:test" in lines
    assert "marathon.http.event_streams.active.gauge:1|g|#framework:marathon,env:test" in lines
    assert "marathon.http.requests.duration.timer.seconds.median:0.5|g|#framework:marathon,env:test" in lines
    assert "marathon.http.requests.duration.timer.seconds.99percentile:0.5|g|#framework:marathon,env:test" in lines
    assert not any("-" in line.split(":")[0] for line in lines)


async def test_udp_sinks_do_not_mind_a_receiver_that_is_down():
    port = _free_port()
    sink = StatsDSink("statsd", "127.0.0.1", port, 10.0)
    with trio.fail_after(2):
        for _ in range(3):
            await sink.send(_snapshot())
    assert sink.datagrams >= 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GraphiteReceiver:
    """A TCP receiver of plaintext lines; can drop connections or stop reading."""

    def __init__(self, port: int = 0, *, read: bool = True, close_after_first: bool = False) -> None:
        self.port = port
        self.read = read
        self.close_after_first = close_after_first
        self.lines: list[str] = []
        self.connections = 0
        self.got = trio.Event()
        self._want = 0
        self._enough = trio.Event()

    async def wait_lines(self, n: int) -> None:
        self._want, self._enough = n, trio.Event()
        if len(self.lines) < n:
            await self._enough.wait()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listener = trio.socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if not self.read:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self.port = listener.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started()
            with listener:
                while True:
                    conn, _ = await listener.accept()
                    self.connections += 1
                    nursery.start_soon(self._serve, conn)

    async def _serve(self, conn) -> None:
        with conn:
            if not self.read:
                await trio.sleep_forever()
            buf = b""
            while True:
                data = await conn.recv(65536)
                if not data:
                    return
                buf += data
                *complete, buf = buf.split(b"\n")
                self.lines.extend(line.decode() for line in complete)
                if len(self.lines) >= self._want:
                    self._enough.set()
                if complete:
                    self.got.set()
                    if self.close_after_first:
                        self.close_after_first = False
                        return


async def test_graphite_sends_plaintext_lines_and_reconnects():
    receiver = GraphiteReceiver(close_after_first=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(receiver.run)
        sink = GraphiteSink("graphite", "127.0.0.1", receiver.port, 10.0, prefix="test")
        snapshot = _snapshot()
        await sink.send(snapshot)
        with trio.fail_after(5):
            await receiver.got.wait()
        assert "test.marathon.deployments.counter 3 1700000000" in receiver.lines
        assert "test.marathon.http.requests.duration.timer.seconds.p50 0.5 1700000000" in receiver.lines
        first = len(receiver.lines)
        # The receiver closed that connection: the next flush notices and reconnects.
        await trio.sleep(0.1)
        await sink.send(snapshot)
        with trio.fail_after(5):
            await receiver.wait_lines(2 * first)
        assert receiver.lines[first:] == receiver.lines[:first]
        assert (sink.connects, receiver.connections) == (2, 2)
        nursery.cancel_scope.cancel()


async def test_graphite_receiver_down_costs_nothing_and_is_logged_once(caplog):
    port = _free_port()
    sink = GraphiteSink("graphite", "127.0.0.1", port, 10.0, connect_timeout=0.5)
    with caplog.at_level(logging.INFO, "marathon.metrics"):
        start = time.monotonic()
        for _ in range(5):
            await sink.send(_snapshot())  # refused: dropped, never raised
        assert time.monotonic() - start < 1.0
        receiver = GraphiteReceiver(port)
        async with trio.open_nursery() as nursery:
            await nursery.start(receiver.run)
            await sink.send(_snapshot())
            with trio.fail_after(5):
                await receiver.got.wait()
            nursery.cancel_scope.cancel()
    messages = [r.message for r in caplog.records]
    assert len([m for m in messages if "unreachable" in m]) == 1
    assert len([m for m in messages if "reachable again" in m]) == 1


async def test_graphite_receiver_that_stops_reading_does_not_block_the_sender():
    receiver = GraphiteReceiver(read=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(receiver.run)
        sink = GraphiteSink("graphite", "127.0.0.1", receiver.port, 10.0, send_timeout=0.3)
        big = _snapshot(**{f"apps.app{i:06d}.instances": i for i in range(100_000)})
        start = time.monotonic()
        await sink.send(big)  # fills the socket buffers, then gives up
        elapsed = time.monotonic() - start
        assert elapsed < 2.0
        assert sink._stream is None  # a half-written stream is never continued
        nursery.cancel_scope.cancel()


# -- the hook: sinks by flags ---------------------------------------------------------------------


def test_flags_choose_the_sinks():
    pm = plugin_manager()
    assert collect_sinks(pm, {}) == []
    flags = {
        "framework_name": "marathon",
        "metrics_statsd": True, "metrics_statsd_host": "127.0.0.1", "metrics_statsd_port": 9125,
        "metrics_statsd_transmission_interval_ms": 500,
        "metrics_datadog": True, "metrics_datadog_host": "127.0.0.1", "metrics_datadog_port": 9126,
        "metrics_datadog_transmission_interval_ms": 10000, "metrics_datadog_tags": "env:prod, team:infra",
        "reporter_graphite": "tcp://127.0.0.1:2003?prefix=dc1&interval=5",
        "metrics_graphite_transmission_interval_ms": 10000,
    }
    sinks = {s.name: s for s in collect_sinks(pm, flags)}
    assert set(sinks) == {"statsd", "datadog", "graphite"}
    assert isinstance(sinks["statsd"], StatsDSink) and sinks["statsd"].interval_seconds == 0.5
    assert sinks["datadog"].tags == ["framework:marathon", "env:prod", "team:infra"]
    graphite = sinks["graphite"]
    assert isinstance(graphite, GraphiteSink)
    assert (graphite.port, graphite.prefix, graphite.interval_seconds) == (2003, "dc1", 5.0)


@pytest.mark.parametrize("url", ["localhost:2003", "http://h:1", "tcp://h", "tcp://h:x", "tcp://h:1?interval=0"])
def test_bad_graphite_urls_are_refused(url):
    with pytest.raises(ConfigError):
        parse_graphite_url(url, 10.0)


def test_graphite_url_defaults():
    assert parse_graphite_url("tcp://carbon:2003", 7.0) == ("tcp", "carbon", 2003, "", 7.0)
    assert parse_graphite_url("udp://carbon:2003?prefix=a.b", 7.0)[0] == "udp"
