"""Launch delay arithmetic (SPEC.md 4.9), pure.

A delay exists per `(app id, lastConfigChangeAt)`, so scaling keeps it and a
config change starts fresh.  Times are milliseconds since the epoch (wall
clock: the delay must mean the same after a restart).
"""

from __future__ import annotations

from msgspec import Struct


class Delay(Struct, frozen=True, kw_only=True):
    reference: int  # ms: when the delay was last (re)anchored
    current: float  # seconds
    max_seconds: float

    @property
    def deadline(self) -> int:
        """Launches of this config are allowed from this moment (ms)."""
        return self.reference + int(self.current * 1000)

    def time_left_seconds(self, now: int) -> int:
        return max(0, -(-(self.deadline - now) // 1000))

    def overdue(self, now: int) -> bool:
        return now >= self.deadline


def on_failure(delay: Delay | None, *, now: int, backoff_seconds: float, factor: float, max_seconds: float) -> Delay:
    """A task of this config failed (Failed, Error, Finished, Dropped, Gone)."""
    if delay is None:
        current = min(backoff_seconds, max_seconds)
    else:
        current = min(delay.current * factor, max_seconds)
    return Delay(reference=now, current=current, max_seconds=max_seconds)


def on_advance(delay: Delay, *, now: int) -> Delay:
    """A task of this config started: keep the delay, re-anchor it to now."""
    return Delay(reference=now, current=delay.current, max_seconds=delay.max_seconds)


def expired(delay: Delay, *, now: int) -> bool:
    """Cleanup rule: forget a delay `maxLaunchDelaySeconds` after its last anchor."""
    return now > delay.reference + int(delay.max_seconds * 1000)
