"""The frame-source interface every capture backend implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import CameraUnavailable


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured frame.

    ``image`` is always BGR uint8 (H×W×3): colour order is converted once, in
    the backend that reads the frame. ``timestamp`` is monotonic seconds
    (``time.monotonic()`` for live sources; the media timestamp for files),
    ``index`` counts frames delivered by the source since it was opened.
    """

    image: np.ndarray
    timestamp: float
    index: int
    source: str = field(default="", compare=False)


@runtime_checkable
class FrameSource(Protocol):
    """A camera, a video or a folder of images.

    ``read()`` returns the next :class:`Frame`; it raises
    :class:`~kiosk.errors.SourceExhausted` when a finite source has run dry and
    :class:`~kiosk.errors.CameraUnavailable` when a live one fails.
    ``close()`` is safe to call twice. Sources are context managers.
    """

    name: str
    live: bool

    def start(self) -> None: ...

    def read(self) -> Frame: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> "FrameSource": ...

    def __exit__(self, *exc) -> None: ...


def to_bgr(image: np.ndarray) -> np.ndarray:
    """The image as contiguous BGR uint8 H×W×3.

    Greyscale is expanded, a fourth (alpha or padding) channel dropped and
    16-bit samples scaled down. Colour order is the caller's business: BGR
    and BGRA/BGRX in, BGR out.
    """
    a = np.asarray(image)
    if a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    elif a.dtype != np.uint8:
        raise ValueError(f"frame has unsupported sample type {a.dtype}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, :3]
    elif not (a.ndim == 3 and a.shape[2] == 3):
        raise ValueError(f"frame has unsupported shape {a.shape}")
    return np.ascontiguousarray(a)


class BaseSource:
    """Bookkeeping shared by the backends: state checks, numbering, closing once.

    A backend fills in ``_open`` (grab the device or file), ``_read`` (return
    the next :class:`Frame` via :meth:`_frame`), ``_halt`` (let go of a live
    device so it can be reopened) and ``_release`` (free everything).
    """

    def __init__(self, name: str, live: bool):
        self.name = name
        self.live = live
        self._started = False
        self._closed = False
        self._index = 0

    @property
    def started(self) -> bool:
        return self._started

    @property
    def closed(self) -> bool:
        return self._closed

    def start(self) -> None:
        """Open the device or file; a no-op when already started."""
        if self._closed:
            raise CameraUnavailable(f"{self.name}: source is closed")
        if self._started:
            return
        self._open()
        self._started = True

    def read(self) -> Frame:
        if self._closed:
            raise CameraUnavailable(f"{self.name}: source is closed")
        if not self._started:
            raise CameraUnavailable(f"{self.name}: source not started")
        return self._read()

    def stop(self) -> None:
        """Stop delivering frames; a live device is let go so it can be reopened."""
        if self._started:
            self._started = False
            self._halt()

    def close(self) -> None:
        """Release everything; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self.stop()
        finally:
            self._release()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "started" if self._started else "stopped"
        return f"<{type(self).__name__} {self.name!r} {state}>"

    def _frame(self, image: np.ndarray, timestamp: float) -> Frame:
        frame = Frame(image, float(timestamp), self._index, self.name)
        self._index += 1
        return frame

    # Backend hooks.
    def _open(self) -> None:
        pass

    def _read(self) -> Frame:  # pragma: no cover - every backend overrides it
        raise NotImplementedError

    def _halt(self) -> None:
        pass

    def _release(self) -> None:
        pass
