"""At most so many events of one kind a minute; the rest counted, and summed up once a minute.

For what anyone at the camera can make up at no cost (a forged QR code is
a new one every time): each would otherwise be an event of its own, six to
a frame, filling the outbox, the back end's store and the reports. A token
bucket lets a short burst through (as many as a minute's share), then one
every ``60 / per_minute`` seconds. Nothing is dropped silently: what the
bucket holds back is counted, and :meth:`EventRateLimit.summary` hands the
count back once a minute after the first one held back, for one event that
stands for them all.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: Seconds between summaries of what was held back, while it goes on.
SUMMARY_EVERY_S = 60.0


class EventRateLimit:
    """A token bucket of ``per_minute`` tokens, refilled at ``per_minute`` a minute, on ``clock`` (monotonic s)."""

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic):
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.per_minute = per_minute
        self._clock = clock
        self._tokens = float(per_minute)
        self._at = clock()
        self.held_back = 0  # since the last summary
        self.held_back_total = 0
        self._first_held_at = 0.0

    def take(self) -> bool:
        """True if one more event may be recorded now; False (and counted) if not."""
        now = self._clock()
        rate = self.per_minute / 60.0
        self._tokens = min(float(self.per_minute), self._tokens + max(0.0, now - self._at) * rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        if not self.held_back:
            self._first_held_at = now
        self.held_back += 1
        self.held_back_total += 1
        return False

    def summary(self, *, final: bool = False) -> int:
        """How many were held back since the last summary, once a summary is due; else 0.

        Due :data:`SUMMARY_EVERY_S` after the first one held back, or at once
        with ``final`` (stopping).
        """
        if not self.held_back or (not final and self._clock() - self._first_held_at < SUMMARY_EVERY_S):
            return 0
        n, self.held_back = self.held_back, 0
        return n
