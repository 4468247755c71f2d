"""Built-in metrics sinks: StatsD, DataDog (DogStatsD) and Graphite.

Registered through the `marathon_metrics_sinks` hook like any plugin's, and
enabled by Marathon's flags (SPEC.md 10.6): `--metrics_statsd`,
`--metrics_datadog`, and Marathon 1.7's `--reporter_graphite`.  Every sink is
a plain trio socket: nothing blocks the loop, a receiver that is down costs a
failed datagram or a refused connect (bounded by a short timeout), and the
sink logs once per outage, drops that flush and tries again next interval.

Wire formats, per snapshot entry (counters are sent as gauges, as Marathon's
reporters do: they carry the running total):

* StatsD:   `name:value|g`, summaries as `name.<field>:value|g`
  (`count`, `min`, `mean`, `p50` ... `p999`, `max`, `stddev`, `m1_rate` ...)
* DataDog:  the same with characters outside `[A-Za-z0-9_.]` made `_`,
  Marathon's DataDog field names (`average`, `median`, `95percentile`, ...)
  and tags: `name:value|g|#framework:marathon,key:value`
* Graphite: plaintext `name value timestamp\\n` over TCP (or UDP)

Marathon's DataDog `api` protocol (HTTP with `--metrics_datadog_api_key`) is
not provided: run a DataDog agent and use its DogStatsD port.
"""

from __future__ import annotations

import logging
import math
import re
import select
import socket
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trio

from ..config import ConfigError
from ..hookspecs import MetricsSink, MetricsSnapshot, hookimpl

log = logging.getLogger("marathon.metrics.sinks")

# One datagram carries several lines, up to this many bytes: the usual
# payload that fits an Ethernet frame (StatsD's own advice for LANs).
MAX_DATAGRAM = 1432
# Names are resolved again after this long (a receiver may move).
RESOLVE_TTL_SECONDS = 60.0
CONNECT_TIMEOUT_SECONDS = 2.0
SEND_TIMEOUT_SECONDS = 5.0

_DATADOG_FIELDS = {
    "mean": "average",
    "p50": "median",
    "p75": "75percentile",
    "p95": "95percentile",
    "p98": "98percentile",
    "p99": "99percentile",
    "p999": "999percentile",
}
_DATADOG_UNSAFE = re.compile(r"[^a-zA-Z0-9_.]")


def format_value(value: float) -> str:
    """Integers without a decimal point; NaN and infinities as 0."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return "0"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def entries(snapshot: MetricsSnapshot, rename: Mapping[str, str] | None = None) -> Iterator[tuple[str, float]]:
    """Every (name, value) of a snapshot, summaries flattened to `name.<field>`."""
    yield from snapshot.gauges.items()
    yield from snapshot.counters.items()
    for name, summary in snapshot.timers.items():
        for field, value in summary.items():
            if isinstance(value, int | float):
                yield f"{name}.{rename.get(field, field) if rename else field}", value


def pack(lines: Iterator[bytes], limit: int = MAX_DATAGRAM) -> Iterator[bytes]:
    """Newline-terminated lines joined into payloads of at most `limit` bytes
    (a longer line goes alone)."""
    buf: list[bytes] = []
    size = 0
    for line in lines:
        if buf and size + len(line) > limit:
            yield b"".join(buf)
            buf, size = [], 0
        buf.append(line)
        size += len(line)
    if buf:
        yield b"".join(buf)


class _Outage:
    """Logs a receiver going away once, and its return once."""

    def __init__(self, sink: str, target: str) -> None:
        self.sink = sink
        self.target = target
        self.down = False

    def failed(self, error: BaseException | str) -> None:
        if not self.down:
            self.down = True
            log.warning(
                "metrics receiver unreachable, dropping flushes until it is back sink=%s target=%s error=%s",
                self.sink, self.target, error,
            )

    def ok(self) -> None:
        if self.down:
            self.down = False
            log.info("metrics receiver reachable again sink=%s target=%s", self.sink, self.target)


class _Resolver:
    """host:port -> socket address, cached for `RESOLVE_TTL_SECONDS`."""

    def __init__(self, host: str, port: int, socktype: int) -> None:
        self.host = host
        self.port = port
        self.socktype = socktype
        self._cached: tuple[float, int, Any] | None = None

    async def resolve(self) -> tuple[int, Any]:
        now = trio.current_time()
        if self._cached is None or now - self._cached[0] > RESOLVE_TTL_SECONDS:
            infos = await trio.socket.getaddrinfo(self.host, self.port, type=self.socktype)
            family, _, _, _, addr = infos[0]
            self._cached = (now, family, addr)
        return self._cached[1], self._cached[2]

    def forget(self) -> None:
        self._cached = None


class UdpLinesSink:
    """Lines of text in datagrams to one UDP receiver (StatsD, DogStatsD, Graphite UDP)."""

    def __init__(self, name: str, host: str, port: int, interval_seconds: float) -> None:
        self.name = name
        self.interval_seconds = interval_seconds
        self.target = f"{host}:{port}"
        self._resolver = _Resolver(host, port, socket.SOCK_DGRAM)
        self._outage = _Outage(name, self.target)
        self._sock: trio.socket.SocketType | None = None
        self.datagrams = 0

    def lines(self, snapshot: MetricsSnapshot) -> Iterator[bytes]:
        raise NotImplementedError

    async def send(self, snapshot: MetricsSnapshot) -> None:
        try:
            family, addr = await self._resolver.resolve()
            if self._sock is None or self._sock.family != family:
                self.close()
                self._sock = trio.socket.socket(family, socket.SOCK_DGRAM)
            with trio.fail_after(SEND_TIMEOUT_SECONDS):
                for payload in pack(self.lines(snapshot)):
                    await self._sock.sendto(payload, addr)
                    self.datagrams += 1
        except (OSError, trio.TooSlowError) as exc:
            # Unconnected UDP sockets do not hear of a receiver that is down;
            # what lands here is a name that does not resolve or no route.
            self._resolver.forget()
            self.close()
            self._outage.failed(exc)
            return
        self._outage.ok()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class StatsDSink(UdpLinesSink):
    """Marathon's StatsD reporter: every metric as a gauge (`name:value|g`)."""

    def lines(self, snapshot: MetricsSnapshot) -> Iterator[bytes]:
        for name, value in entries(snapshot):
            yield f"{name}:{format_value(value)}|g\n".encode()


class DataDogSink(UdpLinesSink):
    """DogStatsD: gauges with tags, names limited to `[A-Za-z0-9_.]`."""

    def __init__(self, name: str, host: str, port: int, interval_seconds: float, tags: Sequence[str] = ()) -> None:
        super().__init__(name, host, port, interval_seconds)
        self.tags = [_DATADOG_UNSAFE.sub("_", t.split(":", 1)[0]) + (":" + t.split(":", 1)[1] if ":" in t else "") for t in tags if t]
        self._suffix = ("|g|#" + ",".join(self.tags) + "\n").encode() if self.tags else b"|g\n"

    def lines(self, snapshot: MetricsSnapshot) -> Iterator[bytes]:
        suffix = self._suffix
        for name, value in entries(snapshot, _DATADOG_FIELDS):
            yield _DATADOG_UNSAFE.sub("_", name).encode() + b":" + format_value(value).encode() + suffix


def graphite_lines(snapshot: MetricsSnapshot, prefix: str = "") -> Iterator[bytes]:
    ts = int(snapshot.timestamp)
    lead = f"{prefix}." if prefix else ""
    for name, value in entries(snapshot):
        yield f"{lead}{name.replace(' ', '_')} {format_value(value)} {ts}\n".encode()


class GraphiteUdpSink(UdpLinesSink):
    def __init__(self, name: str, host: str, port: int, interval_seconds: float, prefix: str = "") -> None:
        super().__init__(name, host, port, interval_seconds)
        self.prefix = prefix

    def lines(self, snapshot: MetricsSnapshot) -> Iterator[bytes]:
        return graphite_lines(snapshot, self.prefix)


class GraphiteSink:
    """Graphite's plaintext protocol over one kept-open TCP connection.

    A flush connects if needed (bounded by `connect_timeout`), writes every
    line (bounded by `send_timeout`), and on any failure closes the
    connection and drops the flush: a half-written stream is never resumed,
    and the next flush reconnects.  A connection the receiver has closed is
    noticed before writing (it turns readable), so a restarted carbon loses
    nothing but the flushes made while it was down.
    """

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        interval_seconds: float,
        *,
        prefix: str = "",
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
        send_timeout: float = SEND_TIMEOUT_SECONDS,
    ) -> None:
        self.name = name
        self.interval_seconds = interval_seconds
        self.host = host
        self.port = port
        self.prefix = prefix
        self.connect_timeout = connect_timeout
        self.send_timeout = send_timeout
        self.target = f"{host}:{port}"
        self._outage = _Outage(name, self.target)
        self._stream: trio.SocketStream | None = None
        self.connects = 0

    async def send(self, snapshot: MetricsSnapshot) -> None:
        payload = b"".join(graphite_lines(snapshot, self.prefix))
        done = False
        try:
            if self._stream is not None and _peer_closed(self._stream):
                await self._close()
            if self._stream is None:
                with trio.fail_after(self.connect_timeout):
                    self._stream = await trio.open_tcp_stream(self.host, self.port)
                self.connects += 1
            with trio.fail_after(self.send_timeout):
                await self._stream.send_all(payload)
            done = True
        except (OSError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._outage.failed(str(exc) or type(exc).__name__)
            return
        finally:
            if not done:  # failed or cancelled: how much of the stream got out is unknown
                await self._close()
        self._outage.ok()

    async def _close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)


def _peer_closed(stream: trio.SocketStream) -> bool:
    """Has the receiver closed (or reset) the connection?  Graphite never
    writes to us, so a readable socket means end-of-stream or an error."""
    try:
        poller = select.poll()
        poller.register(stream.socket.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


# ==============================================================================
# The hook: which sinks the flags ask for
# ==============================================================================


def _interval(flags: Mapping[str, Any], name: str) -> float:
    ms = flags.get(name)
    if ms is None:
        return 10.0
    if int(ms) <= 0:
        raise ConfigError(f"--{name} must be positive")
    return int(ms) / 1000.0


def _port(flags: Mapping[str, Any], name: str) -> int:
    port = int(flags.get(name) or 0)
    if not 0 < port <= 65535:
        raise ConfigError(f"--{name} must be a port (1-65535)")
    return port


def parse_graphite_url(url: str, default_interval: float) -> tuple[str, str, int, str, float]:
    """`tcp://host:port[?prefix=p&interval=seconds]` -> (scheme, host, port, prefix, interval)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in ("tcp", "udp") or not parts.hostname or port is None:
        raise ConfigError(f"--reporter_graphite {url}: expected tcp://host:port or udp://host:port")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    interval = default_interval
    if "interval" in query:
        try:
            interval = float(query["interval"])
        except ValueError:
            raise ConfigError(f"--reporter_graphite {url}: interval must be a number of seconds") from None
        if interval <= 0:
            raise ConfigError(f"--reporter_graphite {url}: interval must be positive")
    return parts.scheme, parts.hostname, port, query.get("prefix", ""), interval


@hookimpl
def marathon_metrics_sinks(flags: Mapping[str, Any]) -> Sequence[MetricsSink]:
    sinks: list[MetricsSink] = []
    if flags.get("metrics_statsd"):
        sinks.append(
            StatsDSink(
                "statsd",
                str(flags.get("metrics_statsd_host") or "localhost"),
                _port(flags, "metrics_statsd_port"),
                _interval(flags, "metrics_statsd_transmission_interval_ms"),
            )
        )
    if flags.get("metrics_datadog"):
        tags = [f"framework:{flags.get('framework_name') or 'marathon'}"]
        tags += [t.strip() for t in str(flags.get("metrics_datadog_tags") or "").split(",") if t.strip()]
        sinks.append(
            DataDogSink(
                "datadog",
                str(flags.get("metrics_datadog_host") or "localhost"),
                _port(flags, "metrics_datadog_port"),
                _interval(flags, "metrics_datadog_transmission_interval_ms"),
                tags,
            )
        )
    url = flags.get("reporter_graphite")
    if url:
        scheme, host, port, prefix, interval = parse_graphite_url(
            str(url), _interval(flags, "metrics_graphite_transmission_interval_ms")
        )
        if scheme == "tcp":
            sinks.append(
                GraphiteSink(
                    "graphite", host, port, interval, prefix=prefix,
                    connect_timeout=min(CONNECT_TIMEOUT_SECONDS, interval / 2),
                    send_timeout=min(SEND_TIMEOUT_SECONDS, interval * 0.8),
                )
            )
        else:
            sinks.append(GraphiteUdpSink("graphite", host, port, interval, prefix=prefix))
    return sinks
