"""The frame-source interface every capture backend implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


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
