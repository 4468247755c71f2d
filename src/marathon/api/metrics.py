"""`GET /metrics`, `GET /metrics/prometheus`, and the HTTP metrics middleware.

`/metrics` is Marathon's Dropwizard JSON (SPEC.md 1.14); `/metrics/prometheus`
is the Prometheus text exposition, written by prometheus-client from a
collector over our registry, with Marathon's names (`.` and `-` become `_`)
and shapes: gauges and counters as single samples (counters untyped, so their
names stay Marathon's, without the `_total` prometheus-client would add),
histograms and timers as summaries (quantiles, `_count`, `_sum`) with `_min`,
`_mean`, `_max`, `_stddev` gauges, meters and timers with `_count` and rate
gauges (`_mean_rate`, `_m1_rate`, `_m5_rate`, `_m15_rate`).

`HttpMetricsMiddleware` counts every request: active requests, response
status classes, request and response bytes, and durations (overall and per
method).  It only adds numbers on the request path (a few microseconds).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric, UnknownMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..services.metrics import MetricsRegistry
from ._context import ApiContext
from ._http import json_response

_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")
_QUANTILES = (("p50", "0.5"), ("p75", "0.75"), ("p95", "0.95"), ("p98", "0.98"), ("p99", "0.99"), ("p999", "0.999"))
_RATES = ("mean_rate", "m1_rate", "m5_rate", "m15_rate")


def _registry(request: Request) -> MetricsRegistry:
    ctx: ApiContext = request.app.state.ctx
    registry = getattr(ctx, "metrics", None)
    if registry is None:  # an API built without the metrics service: nothing to report
        registry = ctx.metrics = MetricsRegistry(prefix=ctx.config.metrics_name_prefix)
    return registry


async def metrics_json(request: Request) -> Response:
    request.app.state.ctx.auth.check_system(request, "ViewResource", "SystemMetrics")
    return json_response(_registry(request).to_json())


def prometheus_name(name: str) -> str:
    return _UNSAFE.sub("_", name)


class RegistryCollector(Collector):
    """Our registry, read once per scrape, as Prometheus metric families."""

    def __init__(self, registry: MetricsRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        r = self.registry.read()
        for name, value in sorted(r.gauges.items()):
            yield GaugeMetricFamily(prometheus_name(name), name, value=value)
        for name, count in sorted(r.counters.items()):
            yield UnknownMetricFamily(prometheus_name(name), name, value=count)
        for name, summary in sorted(r.histograms.items()):
            yield from _summary(prometheus_name(name), name, summary, rates=False)
        for name, summary in sorted(r.meters.items()):
            pname = prometheus_name(name)
            yield GaugeMetricFamily(f"{pname}_count", name, value=summary["count"])
            yield from _rates(pname, name, summary)
        for name, summary in sorted(r.timers.items()):
            yield from _summary(prometheus_name(name), name, summary, rates=True)


def _summary(pname: str, name: str, summary: dict[str, float], *, rates: bool) -> Iterator[Metric]:
    family = Metric(pname, name, "summary")
    for key, q in _QUANTILES:
        family.add_sample(pname, {"quantile": q}, summary[key])
    family.add_sample(f"{pname}_count", {}, summary["count"])
    family.add_sample(f"{pname}_sum", {}, summary["count"] * summary["mean"])
    yield family
    for key in ("min", "mean", "max", "stddev"):
        yield GaugeMetricFamily(f"{pname}_{key}", name, value=summary[key])
    if rates:
        yield from _rates(pname, name, summary)


def _rates(pname: str, name: str, summary: dict[str, float]) -> Iterator[Metric]:
    for key in _RATES:
        yield GaugeMetricFamily(f"{pname}_{key}", f"{name} ({key}, events/second)", value=summary[key])


async def metrics_prometheus(request: Request) -> Response:
    ctx: ApiContext = request.app.state.ctx
    ctx.auth.check_system(request, "ViewResource", "SystemMetrics")
    if not ctx.config.metrics_prometheus:
        return json_response({"message": "Prometheus reporter is disabled"}, 404)
    body = generate_latest(RegistryCollector(_registry(request)))
    return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)


routes = [
    Route("/metrics", metrics_json, methods=["GET"]),
    Route("/metrics/prometheus", metrics_prometheus, methods=["GET"]),
]


# ==============================================================================
# The middleware
# ==============================================================================

_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
EVENT_STREAM_PATH = "/v2/events"


class HttpMetricsMiddleware:
    """ASGI middleware recording Marathon's `http.*` metrics (SPEC.md 13).

    Event streams (`/v2/events`) count their bytes in
    `http.responses.event-stream.size` and are left out of the duration
    timers: a stream lasts as long as its client stays.  A request that ends
    without a response status (the app raised) counts as a 5xx.
    """

    def __init__(self, app: Any, registry: MetricsRegistry) -> None:
        self.app = app
        self.active = registry.gauge("http.requests.active")
        self.request_bytes = registry.counter("http.requests.size", unit="bytes")
        self.response_bytes = registry.counter("http.responses.size", unit="bytes")
        self.stream_bytes = registry.counter("http.responses.event-stream.size", unit="bytes")
        # Index = status // 100; 0 and 6-9 are folded into 5xx (no valid status).
        five = registry.meter("http.responses.5xx.rate")
        self.status_meters = [five] + [registry.meter(f"http.responses.{c}xx.rate") for c in range(1, 5)] + [five] * 5
        self.duration = registry.timer("http.requests.duration")
        self.other_duration = registry.timer("http.requests.other.duration")
        self.method_durations = {m: registry.timer(f"http.requests.{m.lower()}.duration") for m in _METHODS}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = _Exchange(receive, send)
        active = self.active
        active.current += 1
        try:
            await self.app(scope, state.receive, state.send)
        finally:
            active.current -= 1
            status = state.status
            self.status_meters[status // 100 if status < 1000 else 0].mark()
            self.request_bytes.inc(state.received)
            if scope["path"] == EVENT_STREAM_PATH:
                self.stream_bytes.inc(state.sent)
            else:
                self.response_bytes.inc(state.sent)
                elapsed = time.perf_counter() - start
                self.duration.update(elapsed)
                self.method_durations.get(scope["method"], self.other_duration).update(elapsed)


class _Exchange:
    """One request's receive/send, wrapped to count bytes and catch the status."""

    __slots__ = ("_receive", "_send", "status", "received", "sent")

    def __init__(self, receive: Any, send: Any) -> None:
        self._receive = receive
        self._send = send
        self.status = 0
        self.received = 0
        self.sent = 0

    async def receive(self) -> dict:
        message = await self._receive()
        body = message.get("body")
        if body:
            self.received += len(body)
        return message

    async def send(self, message: dict) -> None:
        if message["type"] == "http.response.body":
            body = message.get("body")
            if body:
                self.sent += len(body)
        elif message["type"] == "http.response.start":
            self.status = message["status"]
        await self._send(message)
