"""The metrics registry: every counter, gauge, histogram, meter and timer Marathon reports.

One `MetricsRegistry` per server, Dropwizard-style (SPEC.md 13).  A metric's
full name is `<prefix>.<name>.<type>[.<unit>]` (`marathon.apps.active.gauge`,
`marathon.http.requests.duration.timer.seconds`).  Recording is cheap and
synchronous (an addition, or a slot in a fixed-size reservoir), so the HTTP
middleware and the event observer can record on the hot path; everything
else (percentiles, rates, gauges computed by callbacks) is worked out when the
registry is read: by `GET /metrics`, `/metrics/prometheus`, or a sink flush.

`install(services, registry)` derives Marathon's metrics from the running
services without any of them knowing about metrics: gauges read the
services' views at read time, counters come from an event-bus observer and an
instance-tracker listener.  `MetricsService` pushes a snapshot to every sink
(`marathon_metrics_sinks` hook) on the sink's own interval.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import resource
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import trio

from ..hookspecs import MetricsSink, MetricsSnapshot
from ..instance_update import Updated
from ..models.events import (
    DeploymentFailed,
    DeploymentInfo,
    DeploymentSuccess,
    Event,
    StatusUpdateEvent,
    UnhealthyInstanceKillEvent,
)
from ..models.instance import ACTIVE, Condition, Goal

if TYPE_CHECKING:
    import pluggy

    from ..config import Config
    from .deployments import DeploymentManager
    from .events import EventBus
    from .groups import GroupManager
    from .instances import InstanceTracker
    from .launch_queue import LaunchQueue
    from .scheduler import Scheduler

log = logging.getLogger("marathon.metrics")

# Dropwizard's defaults: a reservoir of the latest values for percentiles, and
# exponentially weighted rates updated every 5 seconds.
RESERVOIR_SIZE = 1024  # a power of two: the write index wraps with a mask
TICK_SECONDS = 5.0
_M1 = 1.0 - math.exp(-TICK_SECONDS / 60.0)
_M5 = 1.0 - math.exp(-TICK_SECONDS / 300.0)
_M15 = 1.0 - math.exp(-TICK_SECONDS / 900.0)

# A sink's send is cut off after its interval, and never later than this.
SEND_TIMEOUT_SECONDS = 10.0
MIN_INTERVAL_SECONDS = 0.05

QUANTILES = (("p50", 0.5), ("p75", 0.75), ("p95", 0.95), ("p98", 0.98), ("p99", 0.99), ("p999", 0.999))


class Counter:
    """A count that only goes up (or a callback read at read time)."""

    __slots__ = ("count", "fn")

    def __init__(self, fn: Callable[[], int] | None = None) -> None:
        self.count = 0
        self.fn = fn

    def inc(self, n: int = 1) -> None:
        self.count += n

    @property
    def value(self) -> int:
        return int(self.fn()) if self.fn is not None else self.count


class Gauge:
    """A current value: set by its owner, or computed by a callback at read time."""

    __slots__ = ("current", "fn")

    def __init__(self, fn: Callable[[], float] | None = None) -> None:
        self.current: float = 0
        self.fn = fn

    def set(self, value: float) -> None:
        self.current = value

    def inc(self, n: float = 1) -> None:
        self.current += n

    def dec(self, n: float = 1) -> None:
        self.current -= n

    @property
    def value(self) -> float:
        return self.fn() if self.fn is not None else self.current


class Histogram:
    """Distribution of values: a lifetime count and sum, and the latest
    `RESERVOIR_SIZE` values for min/mean/max/percentiles/stddev."""

    __slots__ = ("count", "total", "_values", "_next")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self._values: list[float] = []
        self._next = 0

    def update(self, value: float) -> None:
        self.count += 1
        self.total += value
        values = self._values
        if len(values) < RESERVOIR_SIZE:
            values.append(value)
        else:
            values[self._next] = value
            self._next = (self._next + 1) & (RESERVOIR_SIZE - 1)

    def summary(self) -> dict[str, float]:
        """count, max, mean, min, p50 ... p999, stddev (Dropwizard's snapshot)."""
        values = sorted(self._values)
        n = len(values)
        out: dict[str, float] = {"count": self.count}
        if n == 0:
            out.update(max=0.0, mean=0.0, min=0.0)
            out.update((key, 0.0) for key, _ in QUANTILES)
            out["stddev"] = 0.0
            return out
        mean = math.fsum(values) / n
        out["max"] = values[-1]
        out["mean"] = mean
        out["min"] = values[0]
        for key, q in QUANTILES:
            out[key] = quantile(values, q)
        out["stddev"] = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
        return out


def quantile(ordered: Sequence[float], q: float) -> float:
    """The q-quantile of sorted values, interpolated as Dropwizard does."""
    n = len(ordered)
    if n == 0:
        return 0.0
    pos = q * (n + 1)
    index = int(pos)
    if index < 1:
        return ordered[0]
    if index >= n:
        return ordered[-1]
    lower, upper = ordered[index - 1], ordered[index]
    return lower + (pos - index) * (upper - lower)


class Meter:
    """Rate of events: count, mean rate and 1/5/15-minute moving averages
    (events per second).  `mark` only adds; the averages catch up, tick by
    5-second tick, when read or ticked."""

    __slots__ = ("count", "_uncounted", "_clock", "_start", "_last_tick", "_rates", "_primed")

    def __init__(self, clock: Callable[[], float]) -> None:
        self.count = 0
        self._uncounted = 0
        self._clock = clock
        self._start = self._last_tick = clock()
        self._rates = [0.0, 0.0, 0.0]
        self._primed = False

    def mark(self, n: int = 1) -> None:
        self.count += n
        self._uncounted += n

    def tick_if_necessary(self) -> None:
        now = self._clock()
        ticks = int((now - self._last_tick) // TICK_SECONDS)
        if ticks <= 0:
            return
        self._last_tick += ticks * TICK_SECONDS
        instant = self._uncounted / TICK_SECONDS
        self._uncounted = 0
        rates = self._rates
        for i, alpha in enumerate((_M1, _M5, _M15)):
            rate = rates[i] + alpha * (instant - rates[i]) if self._primed else instant
            # The ticks after the first saw no events (they were all counted in
            # the first): each decays the average once more.
            rates[i] = rate * (1.0 - alpha) ** (ticks - 1)
        self._primed = True

    def summary(self) -> dict[str, float]:
        """count, m15_rate, m1_rate, m5_rate, mean_rate."""
        self.tick_if_necessary()
        elapsed = self._clock() - self._start
        m1, m5, m15 = self._rates
        return {
            "count": self.count,
            "m15_rate": m15,
            "m1_rate": m1,
            "m5_rate": m5,
            "mean_rate": self.count / elapsed if elapsed > 0 else 0.0,
        }


class Timer:
    """Durations in seconds: a histogram of them and a meter of their rate."""

    __slots__ = ("histogram", "meter")

    def __init__(self, clock: Callable[[], float]) -> None:
        self.histogram = Histogram()
        self.meter = Meter(clock)

    @property
    def count(self) -> int:
        return self.histogram.count

    def update(self, seconds: float) -> None:
        self.histogram.update(seconds)
        self.meter.count += 1
        self.meter._uncounted += 1

    def time(self) -> _Timing:
        """`with timer.time(): ...` records the block's duration."""
        return _Timing(self)

    def summary(self) -> dict[str, float]:
        out = self.histogram.summary()
        rates = self.meter.summary()
        del rates["count"]
        out.update(rates)
        return out


class _Timing:
    __slots__ = ("_timer", "_start")

    def __init__(self, timer: Timer) -> None:
        self._timer = timer
        self._start = 0.0

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self._timer.update(time.perf_counter() - self._start)


@dataclass
class _GaugeGroup:
    """Several gauges computed by one callback (one pass over the instances)."""

    fn: Callable[[], Mapping[str, float]]
    names: dict[str, str]  # short name -> full name


@dataclass(frozen=True)
class Reading:
    """Every metric's value at one moment, by full name."""

    counters: dict[str, int]
    gauges: dict[str, float]
    histograms: dict[str, dict[str, float]]
    meters: dict[str, dict[str, float]]
    timers: dict[str, dict[str, float]]


class MetricsRegistry:
    """Get-or-create metrics by short name; read them all at once."""

    def __init__(
        self,
        prefix: str = "marathon",
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.prefix = prefix
        self.clock = clock
        self.wall = wall
        self.started = clock()
        self._counters: dict[str, Counter] = {}
        self._gauges: dict[str, Gauge] = {}
        self._groups: list[_GaugeGroup] = []
        self._histograms: dict[str, Histogram] = {}
        self._meters: dict[str, Meter] = {}
        self._timers: dict[str, Timer] = {}
        self._failing: set[str] = set()

    def full_name(self, name: str, kind: str, unit: str | None = None) -> str:
        """`<prefix>.<name>.<kind>[.<unit>]` (SPEC.md 13)."""
        full = f"{self.prefix}.{name}.{kind}" if self.prefix else f"{name}.{kind}"
        return f"{full}.{unit}" if unit else full

    # -- registration (get-or-create) ---------------------------------------------

    def counter(self, name: str, *, unit: str | None = None, fn: Callable[[], int] | None = None) -> Counter:
        """A counter; with `fn`, its value is `fn()` at read time (a count kept elsewhere)."""
        full = self.full_name(name, "counter", unit)
        c = self._counters.get(full)
        if c is None:
            c = self._counters[full] = Counter(fn)
        elif fn is not None:
            c.fn = fn
        return c

    def gauge(self, name: str, fn: Callable[[], float] | None = None, *, unit: str | None = None) -> Gauge:
        """A gauge; with `fn`, its value is `fn()` at read time (registering
        again replaces the callback)."""
        full = self.full_name(name, "gauge", unit)
        g = self._gauges.get(full)
        if g is None:
            g = self._gauges[full] = Gauge(fn)
        elif fn is not None:
            g.fn = fn
        return g

    def gauges(self, fn: Callable[[], Mapping[str, float]], names: Mapping[str, str | None]) -> None:
        """Gauges `names` (short name -> unit) whose values all come from one
        call of `fn()` per read (a name `fn` leaves out reads 0)."""
        self._groups.append(_GaugeGroup(fn, {short: self.full_name(short, "gauge", unit) for short, unit in names.items()}))

    def histogram(self, name: str, *, unit: str | None = None) -> Histogram:
        full = self.full_name(name, "histogram", unit)
        h = self._histograms.get(full)
        if h is None:
            h = self._histograms[full] = Histogram()
        return h

    def meter(self, name: str) -> Meter:
        full = self.full_name(name, "meter")
        m = self._meters.get(full)
        if m is None:
            m = self._meters[full] = Meter(self.clock)
        return m

    def timer(self, name: str) -> Timer:
        """A timer of durations in seconds (`<prefix>.<name>.timer.seconds`)."""
        full = self.full_name(name, "timer", "seconds")
        t = self._timers.get(full)
        if t is None:
            t = self._timers[full] = Timer(self.clock)
        return t

    # -- reading ------------------------------------------------------------------

    def tick(self) -> None:
        """Advance every moving average (the metrics service calls this every tick)."""
        for m in self._meters.values():
            m.tick_if_necessary()
        for t in self._timers.values():
            t.meter.tick_if_necessary()

    def read(self) -> Reading:
        counters: dict[str, int] = {}
        for name, c in self._counters.items():
            if c.fn is None:
                counters[name] = c.count
                continue
            value = self._guarded(name, c.fn)
            if value is not None:
                counters[name] = int(value)
        gauges: dict[str, float] = {}
        for name, g in self._gauges.items():
            value = g.current if g.fn is None else self._guarded(name, g.fn)
            if value is not None:
                gauges[name] = _finite(value)
        for group in self._groups:
            values = self._guarded(getattr(group.fn, "__qualname__", "gauges"), group.fn) or {}
            for short, full in group.names.items():
                gauges[full] = _finite(values.get(short, 0))
        return Reading(
            counters=counters,
            gauges=gauges,
            histograms={name: h.summary() for name, h in self._histograms.items()},
            meters={name: m.summary() for name, m in self._meters.items()},
            timers={name: t.summary() for name, t in self._timers.items()},
        )

    def _guarded(self, name: str, fn: Callable[[], Any]) -> Any:
        """A callback's value; a failing callback is logged once and skipped."""
        try:
            value = fn()
        except Exception:
            if name not in self._failing:
                self._failing.add(name)
                log.exception("metric callback failed metric=%s", name)
            return None
        self._failing.discard(name)
        return value

    def snapshot(self) -> MetricsSnapshot:
        """What sinks get: counters and gauges by name; histograms, meters and
        timers by name -> their summary fields (count, mean, p50, m1_rate, ...)."""
        r = self.read()
        summaries: dict[str, Mapping[str, float]] = {}
        summaries.update(r.histograms)
        summaries.update(r.meters)
        summaries.update(r.timers)
        return MetricsSnapshot(timestamp=self.wall(), counters=r.counters, gauges=r.gauges, timers=summaries)

    def to_json(self) -> dict[str, Any]:
        """Marathon's `GET /metrics` body (Dropwizard's JSON, SPEC.md 1.14)."""
        r = self.read()
        return {
            "version": "4.0.0",
            "counters": {name: {"count": v} for name, v in sorted(r.counters.items())},
            "gauges": {name: {"value": v} for name, v in sorted(r.gauges.items())},
            "histograms": dict(sorted(r.histograms.items())),
            "meters": {name: {**v, "units": "events/second"} for name, v in sorted(r.meters.items())},
            "timers": {
                name: {**v, "duration_units": "seconds", "rate_units": "calls/second"}
                for name, v in sorted(r.timers.items())
            },
        }


def _finite(value: float) -> float:
    """NaN and infinities read as 0 (as Marathon's reporters do)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and not math.isfinite(value):
        return 0.0
    return value


# ==============================================================================
# The service: pushing snapshots to the sinks
# ==============================================================================


def collect_sinks(pm: pluggy.PluginManager, flags: Mapping[str, Any]) -> list[MetricsSink]:
    """Every sink the plugins (built-in ones included) provide for these flags."""
    sinks: list[MetricsSink] = []
    for provided in pm.hook.marathon_metrics_sinks(flags=flags):
        sinks.extend(provided or ())
    return sinks


class _Streak:
    """Log a failure once when it starts and once when it ends, not every flush."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failing = False

    def failed(self, message: str, *args: object, exc_info: bool = False) -> None:
        if not self.failing:
            self.failing = True
            log.warning(message + " (not logged again until it recovers)", *args, exc_info=exc_info)

    def ok(self) -> None:
        if self.failing:
            self.failing = False
            log.info("metrics sink recovered sink=%s", self.what)


class MetricsService:
    """Calls every sink's `send(snapshot)` on the sink's interval.

    Each sink runs in its own task, so a slow receiver delays nobody else; a
    send is cut off after min(interval, `SEND_TIMEOUT_SECONDS`); exceptions
    are logged (once per streak of failures), never raised.  Every
    `TICK_SECONDS` the rates of meters and timers are advanced.
    """

    def __init__(self, registry: MetricsRegistry, sinks: Iterable[MetricsSink] = ()) -> None:
        self.registry = registry
        self.sinks = list(sinks)
        self.flushes: dict[str, int] = {}  # sink name -> completed sends

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._tick)
            for sink in self.sinks:
                log.info("metrics sink started sink=%s interval_seconds=%s", sink.name, sink.interval_seconds)
                nursery.start_soon(self._drive, sink, name=f"metrics sink {sink.name}")
            task_status.started()

    async def _tick(self) -> None:
        while True:
            await trio.sleep(TICK_SECONDS)
            self.registry.tick()

    async def _drive(self, sink: MetricsSink) -> None:
        interval = max(float(sink.interval_seconds), MIN_INTERVAL_SECONDS)
        timeout = min(interval, SEND_TIMEOUT_SECONDS)
        streak = _Streak(sink.name)
        next_at = trio.current_time()
        while True:
            try:
                snapshot = self.registry.snapshot()
                with trio.move_on_after(timeout) as scope:
                    await sink.send(snapshot)
                if scope.cancelled_caught:
                    streak.failed("metrics sink timed out sink=%s timeout_seconds=%s", sink.name, timeout)
                else:
                    self.flushes[sink.name] = self.flushes.get(sink.name, 0) + 1
                    streak.ok()
            except Exception:
                streak.failed("metrics sink failed sink=%s", sink.name, exc_info=True)
            # Missed ticks (a send that took its whole interval) are skipped, not bunched.
            next_at += interval
            now = trio.current_time()
            if next_at < now:
                next_at = now + interval - (now - next_at) % interval
            await trio.sleep_until(next_at)


# ==============================================================================
# Marathon's metrics, derived from the services
# ==============================================================================

class Services(Protocol):
    """What `install` reads of `marathon.server.Services` (which sits above this layer)."""

    config: Config
    tracker: InstanceTracker
    groups: GroupManager
    deployments: DeploymentManager
    launch_queue: LaunchQueue
    scheduler: Scheduler
    bus: EventBus


_CONDITIONS = (
    Condition.SCHEDULED, Condition.PROVISIONED, Condition.STAGING, Condition.STARTING, Condition.RUNNING,
    Condition.KILLING, Condition.UNREACHABLE, Condition.UNREACHABLE_INACTIVE, Condition.KILLED,
    Condition.FINISHED, Condition.FAILED, Condition.ERROR, Condition.DROPPED, Condition.GONE, Condition.UNKNOWN,
)
_LAUNCHING = frozenset({Condition.PROVISIONED, Condition.STAGING, Condition.STARTING})


def _kebab(name: str) -> str:
    """`UnreachableInactive` -> `unreachable-inactive`; `TASK_RUNNING` -> `task-running`."""
    if "_" in name or name.isupper():
        return name.lower().replace("_", "-")
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i:
            out.append("-")
        out.append(ch.lower())
    return "".join(out)


def install(services: Services, registry: MetricsRegistry, *, time_ms: Callable[[], int]) -> None:
    """Register Marathon's metrics (SPEC.md 13) over the running services;
    `time_ms` is the wall clock instances are stamped with."""
    config = services.config
    started = registry.clock()
    launch_timeout_ms = config.task_launch_timeout

    # -- gauges read from the services' views ------------------------------------
    born = registry.clock() - _process_age()
    registry.gauge("uptime", lambda: registry.clock() - born, unit="seconds")
    # Embedded mode is the leader from the start: leadership began with the services.
    registry.gauge("leadership.duration", lambda: registry.clock() - started, unit="seconds")
    registry.gauge("apps.active", lambda: sum(1 for _ in services.groups.root.transitive_apps()))
    registry.gauge("groups.active", lambda: sum(1 for _ in services.groups.root.transitive_groups()) - 1)
    registry.gauge("pods.active", lambda: 0)  # pods are not implemented yet
    registry.gauge("deployments.active", lambda: len(services.deployments.running()))
    registry.gauge("http.event-streams.active", lambda: services.bus.subscriber_count)

    def instance_gauges() -> dict[str, float]:
        counts = dict.fromkeys(_CONDITIONS, 0)
        scheduled = overdue = inflight_kills = 0
        now = time_ms()
        for inst in services.tracker.all():
            cond = inst.state.condition
            counts[cond] = counts.get(cond, 0) + 1
            if inst.is_scheduled:
                scheduled += 1
            elif cond in _LAUNCHING:
                since = inst.task.staged_at if inst.task is not None and inst.task.staged_at else inst.state.since
                if now - since > launch_timeout_ms:
                    overdue += 1
            if cond in ACTIVE and (cond == Condition.KILLING or inst.state.goal != Goal.RUNNING):
                inflight_kills += 1
        out: dict[str, float] = {f"instances.{_kebab(c)}": n for c, n in counts.items()}
        out["instances.staged"] = counts[Condition.PROVISIONED] + counts[Condition.STAGING]
        out["instances.launch-overdue"] = overdue
        out["instances.inflight-kills"] = inflight_kills
        out["launch-queue.size"] = scheduled
        return out

    names = {f"instances.{_kebab(c)}": None for c in _CONDITIONS}
    names.update({"instances.staged": None, "instances.launch-overdue": None, "instances.inflight-kills": None, "launch-queue.size": None})
    registry.gauges(instance_gauges, names)
    _install_process_gauges(registry)

    # -- counters kept elsewhere ---------------------------------------------------
    registry.counter("mesos.offer-operations.launch", fn=lambda: services.scheduler.launched)
    registry.counter("scheduler.passes", fn=lambda: services.scheduler.passes)

    # -- counters derived from the instance tracker's effects ----------------------
    offers_used = registry.counter("mesos.offers.used")

    def on_effects(effects: Sequence[object]) -> None:
        agents: set[str] = set()
        for eff in effects:
            if isinstance(eff, Updated):
                inst, prev = eff.instance, eff.previous
                if inst.state.condition == Condition.PROVISIONED and (prev is None or prev.state.condition != Condition.PROVISIONED):
                    agents.add(inst.agent_id or "")
        # One offer per agent a batch of placements went to.
        offers_used.inc(len(agents))

    services.tracker.add_listener(on_effects)
    registry.counter("mesos.offers.declined", fn=lambda: services.scheduler.offers_declined)

    # -- counters derived from the event bus ---------------------------------------
    services.bus.add_observer(EventCounters(registry))


class EventCounters:
    """An event-bus observer that counts what the events say happened."""

    def __init__(self, registry: MetricsRegistry) -> None:
        self.registry = registry
        self.deployments = registry.counter("deployments")
        self.dismissed = registry.counter("deployments.dismissed")
        self.launched = registry.counter("tasks.launched")
        self.health_kills = registry.counter("health.unhealthy-instance-kills")
        self._task_updates: dict[str, Counter] = {}
        self._seen: set[str] = set()  # ids of deployments counted and still running
        self._handlers: dict[type, Callable[[Any], None]] = {
            StatusUpdateEvent: self._status,
            DeploymentInfo: self._deployment_step,
            DeploymentSuccess: self._deployment_done,
            DeploymentFailed: self._deployment_failed,
            UnhealthyInstanceKillEvent: self._health_kill,
        }

    def __call__(self, event: Event) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _status(self, event: StatusUpdateEvent) -> None:
        state = event.task_status
        counter = self._task_updates.get(state)
        if counter is None:
            counter = self._task_updates[state] = self.registry.counter(f"mesos.task-updates.{_kebab(state)}")
        counter.inc()
        if state == "TASK_STAGING":
            self.launched.inc()

    def _started(self, plan_id: str) -> None:
        if plan_id not in self._seen:
            self._seen.add(plan_id)
            self.deployments.inc()

    def _deployment_step(self, event: DeploymentInfo) -> None:
        plan_id = event.plan.get("id") if isinstance(event.plan, dict) else None
        if plan_id:
            self._started(plan_id)

    def _deployment_done(self, event: DeploymentSuccess) -> None:
        self._started(event.id)  # a plan without steps has no step events
        self._seen.discard(event.id)

    def _deployment_failed(self, event: DeploymentFailed) -> None:
        self._deployment_done(event)  # type: ignore[arg-type]
        self.dismissed.inc()

    def _health_kill(self, event: UnhealthyInstanceKillEvent) -> None:
        self.health_kills.inc()


# -- process metrics (what jvm.* is to Marathon) ---------------------------------------

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _process_age() -> float:
    """Seconds since this process started (0 where /proc does not say)."""
    try:
        with open("/proc/self/stat", "rb") as f:
            start_ticks = int(f.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/uptime", "rb") as f:
            system_uptime = float(f.read().split()[0])
        return max(0.0, system_uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def _process_values() -> dict[str, float]:
    out: dict[str, float] = {}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["process.cpu.user"] = usage.ru_utime
    out["process.cpu.system"] = usage.ru_stime
    out["process.memory.max-rss"] = usage.ru_maxrss * 1024  # KiB on Linux
    try:
        with open("/proc/self/statm", "rb") as f:
            size, rss = f.read().split()[:2]
        out["process.memory.virtual"] = int(size) * _PAGE
        out["process.memory.rss"] = int(rss) * _PAGE
        out["process.fds.open"] = len(os.listdir("/proc/self/fd"))
        out["process.threads.active"] = len(os.listdir("/proc/self/task"))
    except OSError:
        pass
    out["process.fds.max"] = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    for gen, stats in enumerate(gc.get_stats()):
        out[f"python.gc.gen{gen}.collections"] = stats.get("collections", 0)
        out[f"python.gc.gen{gen}.collected"] = stats.get("collected", 0)
    for gen, pending in enumerate(gc.get_count()):
        out[f"python.gc.gen{gen}.objects"] = pending
    try:
        stats = trio.lowlevel.current_statistics()
        out["trio.tasks.living"] = stats.tasks_living
        out["trio.tasks.runnable"] = stats.tasks_runnable
    except RuntimeError:  # read outside the trio thread
        pass
    return out


def _install_process_gauges(registry: MetricsRegistry) -> None:
    names: dict[str, str | None] = {
        "process.cpu.user": "seconds",
        "process.cpu.system": "seconds",
        "process.memory.rss": "bytes",
        "process.memory.virtual": "bytes",
        "process.memory.max-rss": "bytes",
        "process.fds.open": None,
        "process.fds.max": None,
        "process.threads.active": None,
        "trio.tasks.living": None,
        "trio.tasks.runnable": None,
    }
    for gen in range(len(gc.get_stats())):
        names[f"python.gc.gen{gen}.collections"] = None
        names[f"python.gc.gen{gen}.collected"] = None
        names[f"python.gc.gen{gen}.objects"] = None
    registry.gauges(_process_values, names)
