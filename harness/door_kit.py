"""A door under test: the real daemon fed clips on demand, with a panel that records what it shows."""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

from harness.ingest_kit import wait_for
from kiosk.capture.base import BaseSource
from kiosk.daemon import Kiosk


class Playlist(BaseSource):
    """A camera at the door as a file would give it (every frame, media time): an empty hallway, and a clip
    whenever one is played, a minute after the last (so that nothing of one showing carries to the next)."""

    def __init__(self, shape=(360, 640, 3)):
        super().__init__("doorway", live=False)
        self._empty = np.full(shape, 96, np.uint8)
        self._queue: deque = deque()
        self._lock = threading.Lock()
        self._t = 0.0

    def play(self, frames, fps: float) -> None:
        with self._lock:
            self._queue.append((None, 60.0))
            self._queue.extend((f, 1.0 / fps) for f in frames)

    @property
    def idle(self) -> bool:
        with self._lock:
            return not self._queue

    def _read(self):
        with self._lock:
            image, dt = self._queue.popleft() if self._queue else (None, None)
        if dt is None:
            time.sleep(0.03)
            dt = 0.1
        self._t += dt
        return self._frame((self._empty if image is None else image).copy(), self._t)


class Panel:
    motion_sensor = None

    def __init__(self):
        self.shown = []

    def show(self, d):
        self.shown.append(d)

    def clear(self):
        pass

    def error(self):
        pass

    def close(self):
        pass


class Door:
    def __init__(self, config):
        self.source = Playlist()
        self.panel = Panel()
        self.committed = []
        self.kiosk = Kiosk(config, source=self.source, panel=self.panel,
                           on_decision=lambda d, c: self.committed.append((d, c)))
        self.kiosk.start()
        self.runner = threading.Thread(target=self.kiosk.run, name="kiosk-under-test", daemon=True)
        self.runner.start()

    def play(self, frames, fps: float, until, timeout: float = 90.0) -> list:
        """Play a clip; the decisions committed from then until ``until(decisions)`` and the hallway is empty."""
        n = len(self.committed)
        self.source.play(frames, fps)
        assert wait_for(lambda: self.source.idle and until([d for d, _ in self.committed[n:]]), timeout), \
            [d.describe() for d, _ in self.committed[n:]]
        time.sleep(1.0)  # the empty hallway ends what is still open
        return [d for d, _ in self.committed[n:]]

    def stop(self):
        self.kiosk.request_stop()
        self.runner.join(15)
        self.kiosk.stop()
