"""The budget of password checks: how many argon2 verifications may run, and where.

An argon2id check costs about 30 ms of CPU by design, so wrong logins are a
cheap way to make a server busy.  The per-address limit (`_limiter`) does not
bound that: every new source address brings its own tries.  `CheckBudget`
bounds it for the whole server:

* at most `per_second` checks start per second, whatever their source (a
  token bucket holding one second's worth, so a burst of that many is
  admitted at once);
* at most `max_pending` checks are admitted and not finished (waiting for a
  worker thread or running in one);
* checks run in `threads` worker threads of their own, never on the event
  loop (libargon2 releases the GIL while it hashes).

A check that does not fit is refused at once, without hashing: `run`
answers None and the caller says "too many authentication attempts".
"""

from __future__ import annotations

from collections.abc import Callable

import trio

CHECK_THREADS = 2


class CheckBudget:
    def __init__(self, per_second: int, max_pending: int, threads: int = CHECK_THREADS) -> None:
        self.per_second = per_second
        self.max_pending = max_pending
        self.pending = 0
        self.checks = 0  # checks admitted since start-up
        self.refused = 0  # checks refused since start-up
        self._tokens = float(per_second)
        self._refilled: float | None = None
        self._threads = trio.CapacityLimiter(threads)

    def _admit(self, now: float) -> bool:
        if self._refilled is not None:
            self._tokens = min(float(self.per_second), self._tokens + (now - self._refilled) * self.per_second)
        self._refilled = now
        if self.pending >= self.max_pending or self._tokens < 1:
            self.refused += 1
            return False
        self._tokens -= 1
        self.pending += 1
        self.checks += 1
        return True

    async def run(self, check: Callable[[], bool], now: float) -> bool | None:
        """`check()`'s answer, computed in a worker thread; None if the budget
        has no room for it at monotonic time `now` (it was not run).

        The admission is decided before the first checkpoint, so concurrent
        callers never overdraw the budget.
        """
        if not self._admit(now):
            return None
        try:
            return await trio.to_thread.run_sync(check, limiter=self._threads)
        finally:
            self.pending -= 1
