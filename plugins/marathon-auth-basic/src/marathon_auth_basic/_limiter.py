"""Failed-login limiting per client address (a sliding one-minute window).

An address with `limit` failed logins within the last `window` seconds is
blocked until the oldest of them leaves the window.  Requests refused while
blocked are not counted (the block does not grow while a client keeps
knocking), and a successful login does not clear earlier failures (one known
account must not reset an attacker's count).
"""

from __future__ import annotations

from collections import deque


class FailureLimiter:
    def __init__(self, limit: int, window: float = 60.0, max_addresses: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.max_addresses = max_addresses
        self._failures: dict[str, deque[float]] = {}

    def record(self, address: str, now: float) -> None:
        """Count one failed login from `address` at monotonic time `now`."""
        times = self._failures.get(address)
        if times is None:
            if len(self._failures) >= self.max_addresses:
                self._forget_idle(now)
            times = self._failures[address] = deque(maxlen=self.limit)
        times.append(now)

    def recent(self, address: str, now: float) -> int:
        """Failed logins from `address` within the window before `now`."""
        times = self._failures.get(address)
        if times is None:
            return 0
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[address]
        return len(times)

    def retry_after(self, address: str, now: float) -> float | None:
        """Seconds until `address` may try again, or None if it is not blocked."""
        if self.recent(address, now) < self.limit:
            return None
        return self._failures[address][0] + self.window - now

    def _forget_idle(self, now: float) -> None:
        """Bound memory under a flood of addresses: drop those with no recent
        failure, and if that is not enough, the half that failed least recently."""
        cutoff = now - self.window
        for address in [a for a, t in self._failures.items() if not t or t[-1] <= cutoff]:
            del self._failures[address]
        if len(self._failures) >= self.max_addresses:
            by_age = sorted(self._failures, key=lambda a: self._failures[a][-1])
            for address in by_age[: len(by_age) // 2]:
                del self._failures[address]
