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

from ..models.events import Event
from ..models.timestamp import format_ms

log = logging.getLogger("marathon.events")


@dataclass(eq=False)
class Subscription:
    """One consumer of the bus.  Iterate `events` for `(event_type, json_bytes)`."""

    events: trio.MemoryReceiveChannel[tuple[str, bytes]]
    _send: trio.MemorySendChannel[tuple[str, bytes]]
    types: frozenset[str] | None
    remote_address: str = ""
    dropped: bool = False
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
            try:
                sub._send.send_nowait((event_type, data))
            except trio.WouldBlock:
                log.warning(
                    "event stream consumer too slow, disconnecting remote=%s buffered=%d",
                    sub.remote_address, self._max,
                )
                sub.dropped = True
                self._remove(sub)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._remove(sub)

    def publish_all(self, events: Iterable[Event]) -> None:
        for e in events:
            self.publish(e)

    def subscribe(self, *, types: Iterable[str] | None = None, remote_address: str = "") -> Subscription:
        send, recv = trio.open_memory_channel[tuple[str, bytes]](self._max)
        sub = Subscription(
            events=recv,
            _send=send,
            types=frozenset(types) if types else None,
            remote_address=remote_address,
            _bus=self,
        )
        self._subscribers.append(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        if sub in self._subscribers:
            self._subscribers.remove(sub)
        sub._send.close()
        sub.closed.set()
