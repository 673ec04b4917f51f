"""Clocks: the real one, and a fake one tests can advance.

Stages that wait (capture back-off, pacing a video file) are handed a clock
instead of calling :mod:`time` themselves, so tests run in no time and can
ask afterwards how long the stage meant to wait.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Monotonic seconds, and a sleep that a :class:`threading.Event` can cut short."""

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float, wake: threading.Event | None = None) -> bool:
        """Wait ``seconds``; return True if ``wake`` was set (early or already)."""
        ...


class SystemClock:
    """The real clock: :func:`time.monotonic` and interruptible sleeps."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float, wake: threading.Event | None = None) -> bool:
        seconds = max(0.0, seconds)
        if wake is None:
            time.sleep(seconds)
            return False
        return wake.wait(seconds)


class FakeClock:
    """A clock that only moves when told to.

    With ``autojump`` (the default) every :meth:`sleep` advances the clock by
    the time asked for and returns at once; without it, a sleeping thread
    blocks until a test calls :meth:`advance` far enough. Either way
    :attr:`sleeps` records every wait that was asked for, in order.
    """

    def __init__(self, start: float = 0.0, *, autojump: bool = True):
        self._now = float(start)
        self.autojump = autojump
        self.sleeps: list[float] = []
        self._sleeping = 0
        self._cond = threading.Condition()

    def monotonic(self) -> float:
        with self._cond:
            return self._now

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds``; returns the new time."""
        if seconds < 0:
            raise ValueError("time does not go backwards")
        with self._cond:
            self._now += seconds
            self._cond.notify_all()
            return self._now

    @property
    def sleeping(self) -> int:
        """Threads blocked in :meth:`sleep` right now (``autojump=False`` only)."""
        with self._cond:
            return self._sleeping

    def sleep(self, seconds: float, wake: threading.Event | None = None) -> bool:
        seconds = max(0.0, float(seconds))
        with self._cond:
            self.sleeps.append(seconds)
            if self.autojump:
                self._now += seconds
                self._cond.notify_all()
            else:
                deadline = self._now + seconds
                self._sleeping += 1
                try:
                    # Poll the event: a Condition cannot wait on it directly.
                    while self._now < deadline and not (wake is not None and wake.is_set()):
                        self._cond.wait(0.01)
                finally:
                    self._sleeping -= 1
        if self.autojump:
            time.sleep(0)  # let other threads run, as a real sleep would
        return wake is not None and wake.is_set()
