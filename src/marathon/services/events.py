"""The event bus: every event, encoded once, fanned out to bounded subscribers.

Producers call `publish()` (synchronous, never blocks).  Each subscriber owns
a memory channel of at most `max_outstanding` encoded events; a subscriber
that falls that far behind is disconnected (its channel is closed), never
buffered without bound (SPEC.md 1.9).  Observers (plugins, metrics) get every
event synchronously through `add_observer`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import msgspec
import trio
import trio.lowlevel

from ..models.events import Event
from ..models.timestamp import format_ms
from ._pacing import YIELD_EVERY

log = logging.getLogger("marathon.events")

# Events published between two scheduler checkpoints in a burst: a quarter of
# the per-consumer bound, so a consumer that keeps up never overflows.
YIELD_FRACTION = 8
# A stream that drains nothing for this long while the publisher waits for it
# is not waited for again (until it catches up).
STALL_SECONDS = 0.05


@dataclass(eq=False)
class Subscription:
    """One consumer of the bus.  Iterate `events` for `(event_type, json_bytes)`."""

    events: trio.MemoryReceiveChannel[tuple[str, bytes]]
    _send: trio.MemorySendChannel[tuple[str, bytes]]
    types: frozenset[str] | None
    remote_address: str = ""
    # Per-subscriber view of an event: the event itself, a trimmed copy (e.g.
    # a plan without the apps the caller may not view), or None to skip it.
    view: Callable[[Event], Event | None] | None = None
    dropped: bool = False
    stalled: bool = False  # made no progress while the publisher waited: not waited for again
    closed: trio.Event = field(default_factory=trio.Event)
    _bus: EventBus | None = field(default=None, repr=False)

    def close(self) -> None:
        if self._bus is not None:
            self._bus._remove(self)


class EventBus:
    def __init__(self, *, time_ms: Callable[[], int], max_outstanding: int = 1024) -> None:
        self._time_ms = time_ms
        self._max = max_outstanding
        self._subscribers: list[Subscription] = []
        self._observers: list[Callable[[Event], None]] = []
        self._encoder = msgspec.json.Encoder()

    def now(self) -> str:
        """The `timestamp` for a new event."""
        return format_ms(self._time_ms())

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def add_observer(self, observer: Callable[[Event], None]) -> None:
        self._observers.append(observer)

    def publish(self, event: Event) -> None:
        for observer in self._observers:
            try:
                observer(event)
            except Exception:  # an observer must never break the producer
                log.exception("event observer failed event=%s", event.event_type)
        if not self._subscribers:
            return
        event_type = event.event_type
        data = self._encoder.encode(event)
        for sub in list(self._subscribers):
            if sub.types is not None and event_type not in sub.types:
                continue
            payload = data
            if sub.view is not None:
                seen = sub.view(event)
                if seen is None:
                    continue
                if seen is not event:
                    payload = self._encoder.encode(seen)
            try:
                sub._send.send_nowait((event_type, payload))
            except trio.WouldBlock:
                log.warning(
                    "event stream consumer too slow, disconnecting remote=%s buffered=%d",
                    sub.remote_address, self._max,
                )
                sub.dropped = True
                self._remove(sub)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._remove(sub)

    async def publish_batch(self, events: Iterable[Event]) -> None:
        """Publish many events, letting consumers run every few events.

        A burst (one batch of thousands of status updates) must not overflow
        the buffer of a consumer that keeps up, just because it never got a
        turn: yielding to the scheduler lets every stream drain as it goes.
        """
        every = max(1, min(self._max // YIELD_FRACTION, YIELD_EVERY))
        for i, e in enumerate(events, 1):
            self.publish(e)
            if i % every == 0:
                await trio.lowlevel.checkpoint()
                if self._subscribers:
                    await self._let_streams_drain()

    async def _let_streams_drain(self) -> None:
        """Backpressure for streams that keep up, never for one that does not.

        While a stream is more than half full and still draining, wait for it;
        a stream that drains nothing within `STALL_SECONDS` is marked stalled
        and no longer waited for: it is cut off at its bound as usual.
        """
        half = self._max // 2
        while True:
            laggards = []
            for sub in self._subscribers:
                used = sub._send.statistics().current_buffer_used
                if used <= self._max // 4:
                    sub.stalled = False
                elif used > half and not sub.stalled:
                    laggards.append((sub, used))
            if not laggards:
                return
            await trio.sleep(STALL_SECONDS)
            for sub, before in laggards:
                if sub._send.statistics().current_buffer_used >= before:
                    sub.stalled = True

    def subscribe(
        self,
        *,
        types: Iterable[str] | None = None,
        remote_address: str = "",
        view: Callable[[Event], Event | None] | None = None,
    ) -> Subscription:
        send, recv = trio.open_memory_channel[tuple[str, bytes]](self._max)
        sub = Subscription(
            events=recv,
            _send=send,
            types=frozenset(types) if types else None,
            remote_address=remote_address,
            view=view,
            _bus=self,
        )
        self._subscribers.append(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        if sub in self._subscribers:
            self._subscribers.remove(sub)
        sub._send.close()
        sub.closed.set()
