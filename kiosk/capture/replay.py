"""A frame source for tests and demos that replays real frames, and can be made to misbehave.

Like gpiozero's mock pins it is driven (:meth:`ReplaySource.stall`,
:meth:`~ReplaySource.fail_next`, :meth:`~ReplaySource.disconnect`) and asked
what happened (:attr:`~ReplaySource.frames_delivered`,
:attr:`~ReplaySource.opens`, ...).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..clock import Clock, SystemClock
from ..errors import CameraUnavailable, SourceExhausted
from .base import BaseSource, Frame, to_bgr

log = logging.getLogger(__name__)

#: Decoding a whole video up front stops at this much memory.
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


class ReplaySource(BaseSource):
    """Replays a list of real frames, as a live camera or as a file.

    :param frames: BGR (or greyscale) uint8 images, replayed in order.
    :param fps: frame rate: spaces file timestamps and, when ``realtime``,
        paces reads as a camera would.
    :param timestamps: media timestamps of ``frames`` (seconds); default ``i / fps``.
    :param live: stamp frames with the clock and present as a camera.
    :param loop: start again after the last frame instead of running dry.
    :param realtime: make :meth:`read` wait for the next frame time (default: ``live``).
    :param stall_timeout: seconds a read waits while stalled before it raises
        :class:`CameraUnavailable` (real time, not the clock's).
    """

    def __init__(
        self,
        frames: Sequence[np.ndarray],
        *,
        fps: float = 15.0,
        timestamps: Sequence[float] | None = None,
        live: bool = True,
        loop: bool = False,
        realtime: bool | None = None,
        stall_timeout: float = 5.0,
        clock: Clock | None = None,
        name: str = "replay",
    ):
        if not len(frames):
            raise ValueError("a replay needs at least one frame")
        if fps <= 0:
            raise ValueError("fps must be positive")
        if timestamps is not None and len(timestamps) != len(frames):
            raise ValueError("one timestamp per frame")
        super().__init__(name, live=live)
        self.frames = [to_bgr(f) for f in frames]
        self.fps = float(fps)
        self.timestamps = [float(t) for t in timestamps] if timestamps is not None else None
        self.loop = loop
        self.realtime = live if realtime is None else realtime
        self.stall_timeout = stall_timeout
        self.clock = clock or SystemClock()
        self._cond = threading.Condition()
        self._pos = 0
        self._next_due: float | None = None
        self._stalled = False
        self._disconnected = False
        self._fail_next = 0
        # What happened, for tests to inspect.
        self.frames_delivered = 0
        self.reads = 0
        self.failures = 0
        self.stall_timeouts = 0
        self.blocked_reads = 0  # reads waiting in a stall right now
        self.opens = 0
        self.failed_opens = 0
        self.stops = 0
        self.loops = 0

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike,
        *,
        max_frames: int | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        **kwargs,
    ) -> "ReplaySource":
        """Decode a video file (or a folder of images) up front and replay it.

        Decoding stops at ``max_frames`` frames or ``max_bytes`` of pixels,
        whichever comes first. Keyword arguments go to the constructor; the
        file's own frame rate and timestamps are used unless given.
        """
        from .folder import FolderSource
        from .opencv import OpenCVSource

        path = Path(path)
        src = FolderSource(path) if path.is_dir() else OpenCVSource(path)
        frames, stamps, size = [], [], 0
        with src:
            while max_frames is None or len(frames) < max_frames:
                try:
                    f = src.read()
                except SourceExhausted:
                    break
                if size + f.image.nbytes > max_bytes:
                    log.warning("%s: replay truncated to %d frames (%d MiB)", src.name, len(frames), size >> 20)
                    break
                frames.append(f.image)
                stamps.append(f.timestamp)
                size += f.image.nbytes
        if not frames:
            raise CameraUnavailable(f"{src.name}: no frames to replay")
        kwargs.setdefault("fps", src.fps)
        kwargs.setdefault("timestamps", stamps)
        kwargs.setdefault("name", f"replay:{path}")
        return cls(frames, **kwargs)

    # Driving it.
    def stall(self) -> None:
        """Reads block (then time out) until :meth:`resume`."""
        with self._cond:
            self._stalled = True

    def resume(self) -> None:
        with self._cond:
            self._stalled = False
            self._cond.notify_all()

    def fail_next(self, n: int = 1) -> None:
        """The next ``n`` reads raise :class:`CameraUnavailable`."""
        with self._cond:
            self._fail_next += n

    def disconnect(self) -> None:
        """Reads and opens fail until :meth:`reconnect`, as with an unplugged camera."""
        with self._cond:
            self._disconnected = True
            self._cond.notify_all()

    def reconnect(self) -> None:
        with self._cond:
            self._disconnected = False

    def rewind(self) -> None:
        with self._cond:
            self._pos = 0

    # Asking it.
    @property
    def position(self) -> int:
        """Index into :attr:`frames` of the next frame to replay."""
        return self._pos

    @property
    def stalled(self) -> bool:
        return self._stalled

    @property
    def disconnected(self) -> bool:
        return self._disconnected

    # The FrameSource part.
    def _open(self) -> None:
        with self._cond:
            if self._disconnected:
                self.failed_opens += 1
                raise CameraUnavailable(f"{self.name}: camera disconnected")
            self.opens += 1
            self._next_due = None

    def _read(self) -> Frame:
        with self._cond:
            self.reads += 1
            self._check_faults()
            if self._stalled:
                self.blocked_reads += 1
                try:
                    unstuck = self._cond.wait_for(self._unstuck, timeout=self.stall_timeout)
                finally:
                    self.blocked_reads -= 1
                if not unstuck:
                    self.stall_timeouts += 1
                    self.failures += 1
                    raise CameraUnavailable(f"{self.name}: stalled, no frame for {self.stall_timeout:g}s")
                self._check_faults()
            if self._closed:
                raise CameraUnavailable(f"{self.name}: source is closed")
            if self._pos >= len(self.frames):
                if not self.loop:
                    raise SourceExhausted(f"{self.name}: end of replay after {self._index} frames")
                self._pos = 0
                self.loops += 1
            pos = self._pos
            self._pos += 1
        if self.realtime:
            self._wait_for_frame_time()
        image = self.frames[pos].copy()  # a fresh buffer, as a camera gives
        frame = self._frame(image, self.clock.monotonic() if self.live else self._media_time(pos))
        self.frames_delivered += 1
        return frame

    def _unstuck(self) -> bool:
        return not self._stalled or self._disconnected or self._closed

    def _check_faults(self) -> None:
        if self._disconnected:
            self.failures += 1
            raise CameraUnavailable(f"{self.name}: camera disconnected")
        if self._fail_next > 0:
            self._fail_next -= 1
            self.failures += 1
            raise CameraUnavailable(f"{self.name}: injected read failure")

    def _wait_for_frame_time(self) -> None:
        now = self.clock.monotonic()
        if self._next_due is not None and self._next_due > now:
            self.clock.sleep(self._next_due - now)
            now = self._next_due
        self._next_due = now + 1.0 / self.fps

    def _media_time(self, pos: int) -> float:
        if self.timestamps is None:
            return self._index / self.fps
        # Each loop starts one frame interval after the last frame of the one before.
        span = self.timestamps[-1] - self.timestamps[0] + 1.0 / self.fps
        return self.timestamps[pos] + self.loops * span

    def _halt(self) -> None:
        with self._cond:
            self.stops += 1
            self._cond.notify_all()

    def _release(self) -> None:
        with self._cond:
            self._cond.notify_all()
