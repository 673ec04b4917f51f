"""The capture stage: a thread that reads a frame source into a small queue.

Capture never waits on matching. From a live camera the newest frame wins:
when the queue is full the oldest frame is dropped and counted. From a file
the thread waits for room instead, so a replay gives the same frames every
time, unless ``pace_files`` asks for the file to be played at its own rate
(and dropped from like a camera). A live camera that fails or stalls is
reported and reopened with exponential back-off; a file that runs dry ends
the stream, and the consumer's :meth:`CaptureThread.get` returns ``None``.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque

from ..clock import Clock, SystemClock
from ..config import CaptureSettings
from ..errors import CameraUnavailable, SourceExhausted
from .base import Frame, FrameSource

log = logging.getLogger(__name__)


class FrameBuffer:
    """A bounded queue of frames with an end-of-stream mark."""

    def __init__(self, maxsize: int):
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self.dropped = 0
        self._items: deque[Frame] = deque()
        self._cond = threading.Condition()
        self._ended = False
        self._error: BaseException | None = None

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    @property
    def ended(self) -> bool:
        return self._ended

    def put_newest(self, frame: Frame) -> bool:
        """Add a frame, dropping (and counting) the oldest if full; False once ended."""
        with self._cond:
            if self._ended:
                return False
            if len(self._items) >= self.maxsize:
                self._items.popleft()
                self.dropped += 1
            self._items.append(frame)
            self._cond.notify_all()
            return True

    def put_wait(self, frame: Frame) -> bool:
        """Add a frame, waiting for room; False if the stream ended meanwhile."""
        with self._cond:
            self._cond.wait_for(lambda: self._ended or len(self._items) < self.maxsize)
            if self._ended:
                return False
            self._items.append(frame)
            self._cond.notify_all()
            return True

    def end(self, error: BaseException | None = None) -> None:
        """Mark the end of the stream (the first call wins); frames queued stay readable."""
        with self._cond:
            if not self._ended:
                self._ended = True
                self._error = error
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Frame | None:
        """The oldest queued frame; ``None`` at the end of the stream.

        Raises :class:`queue.Empty` if ``timeout`` passes first, and the error
        that ended the stream, if one did, once the queue is drained.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._ended, timeout):
                raise queue.Empty
            if self._items:
                frame = self._items.popleft()
                self._cond.notify_all()
                return frame
            if self._error is not None:
                raise self._error
            return None


class CaptureThread:
    """Reads ``source`` on a thread named "capture" into a queue of ``settings.queue_size``.

    The thread opens the source, and closes it when it ends. The consumer
    calls :meth:`get` (or iterates). The daemon can read :attr:`healthy`,
    :attr:`last_frame_at`, :attr:`dropped`, :attr:`reopens` and
    :attr:`failures`, or all of them from :meth:`status`.
    """

    def __init__(
        self,
        source: FrameSource,
        settings: CaptureSettings | None = None,
        *,
        clock: Clock | None = None,
        name: str = "capture",
    ):
        self.source = source
        self.settings = settings or CaptureSettings()
        self.clock = clock or SystemClock()
        self.name = name
        self.buffer = FrameBuffer(self.settings.queue_size)
        self.frames_read = 0
        self.failures = 0
        self.reopens = 0
        self.stalls = 0
        #: Clock time of the last frame read from the source (None before the first).
        self.last_frame_at: float | None = None
        #: What ended the stream, if it was an error.
        self.error: BaseException | None = None
        self._ok = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # Life cycle.
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("capture thread already started")
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop reading, end the stream, join the thread; the source gets closed. Safe twice."""
        self._stop.set()
        self.buffer.end()
        if self._thread is None:
            self.source.close()
            return
        if timeout is None:
            timeout = self.settings.stall_timeout + 2.0
        self._thread.join(timeout)
        if self._thread.is_alive():
            # Stuck inside the backend's read(); it closes the source when it returns.
            log.error("%s: capture thread did not stop within %.1fs", self.source.name, timeout)

    close = stop

    def __enter__(self) -> "CaptureThread":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # The consumer's side.
    def get(self, timeout: float | None = None) -> Frame | None:
        """The next frame; ``None`` once the stream has ended (file done or stopped).

        Raises :class:`queue.Empty` on timeout, and the error that ended the
        stream (e.g. :class:`CameraUnavailable` for an unreadable file) after
        the frames read before it.
        """
        return self.buffer.get(timeout)

    def __iter__(self):
        while (frame := self.get()) is not None:
            yield frame

    # What the daemon reads.
    @property
    def dropped(self) -> int:
        return self.buffer.dropped

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def ended(self) -> bool:
        """The stream is over: source exhausted, failed for good, or stopped."""
        return self.buffer.ended

    @property
    def healthy(self) -> bool:
        """Frames are arriving: a live source has delivered one within ``stall_timeout``.

        Judged from the clock, so it turns False even while a read is stuck.
        """
        if not self._ok or not self.running:
            return False
        if not self.source.live:
            return True
        last = self.last_frame_at
        return last is not None and self.clock.monotonic() - last <= self.settings.stall_timeout

    def status(self) -> dict:
        return {
            "source": self.source.name,
            "live": self.source.live,
            "healthy": self.healthy,
            "ended": self.ended,
            "frames_read": self.frames_read,
            "dropped": self.dropped,
            "failures": self.failures,
            "reopens": self.reopens,
            "stalls": self.stalls,
            "last_frame_at": self.last_frame_at,
            "error": repr(self.error) if self.error else None,
        }

    # The thread.
    def _run(self) -> None:
        try:
            if self.source.live:
                self._run_live()
            else:
                self._run_file()
        except BaseException as e:  # noqa: BLE001 - the consumer must hear of it
            log.exception("%s: capture failed", self.source.name)
            self.error = e
        finally:
            self._ok = False
            self.buffer.end(self.error)
            try:
                self.source.close()
            except Exception:
                log.exception("%s: error while closing the source", self.source.name)

    def _got(self, frame: Frame) -> None:
        now = self.clock.monotonic()
        if self.last_frame_at is not None and now - self.last_frame_at > self.settings.stall_timeout:
            self.stalls += 1
            log.warning("%s: no frame for %.1fs", self.source.name, now - self.last_frame_at)
        self.last_frame_at = now
        self.frames_read += 1
        self._ok = True

    def _run_file(self) -> None:
        try:
            self.source.start()
        except CameraUnavailable as e:
            log.error("%s: cannot open: %s", self.source.name, e)
            self.error = e
            return
        pace = self.settings.pace_files
        t0 = ts0 = None
        while not self._stop.is_set():
            try:
                frame = self.source.read()
            except SourceExhausted:
                log.info("%s: end of stream after %d frames", self.source.name, self.frames_read)
                return
            except CameraUnavailable as e:
                log.error("%s: read failed after %d frames: %s", self.source.name, self.frames_read, e)
                self.error = e
                return
            self._got(frame)
            if not pace:
                if not self.buffer.put_wait(frame):
                    return
                continue
            # Paced: hand each frame over at its media time, newest wins.
            if t0 is None:
                t0, ts0 = self.clock.monotonic(), frame.timestamp
            else:
                delay = t0 + (frame.timestamp - ts0) - self.clock.monotonic()
                if delay > 0 and self.clock.sleep(delay, self._stop):
                    return
            self.buffer.put_newest(frame)

    def _run_live(self) -> None:
        s = self.settings
        delay = s.reopen_backoff_initial
        is_open = False
        opened_before = False
        while not self._stop.is_set():
            if not is_open:
                try:
                    self.source.start()
                except Exception as e:
                    self._failed("cannot open", e)
                    if self.clock.sleep(delay, self._stop):
                        return
                    delay = min(delay * 2, s.reopen_backoff_max)
                    continue
                is_open = True
                if opened_before:
                    self.reopens += 1
                    log.info("%s: reopened (reopen %d)", self.source.name, self.reopens)
                opened_before = True
            try:
                frame = self.source.read()
            except SourceExhausted:
                log.info("%s: end of stream after %d frames", self.source.name, self.frames_read)
                return
            except Exception as e:
                self._failed("read failed", e)
                is_open = False
                try:
                    self.source.stop()
                except Exception:
                    log.exception("%s: error while stopping the source", self.source.name)
                if self.clock.sleep(delay, self._stop):
                    return
                delay = min(delay * 2, s.reopen_backoff_max)
                continue
            self._got(frame)
            delay = s.reopen_backoff_initial  # a frame came: the next failure starts afresh
            self.buffer.put_newest(frame)

    def _failed(self, what: str, e: Exception) -> None:
        self._ok = False
        self.failures += 1
        # A CameraUnavailable is expected weather; anything else is a bug worth a traceback.
        log.warning(
            "%s: %s (failure %d): %s",
            self.source.name,
            what,
            self.failures,
            e,
            exc_info=not isinstance(e, CameraUnavailable),
        )
