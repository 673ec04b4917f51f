"""Frames from a Raspberry Pi camera through picamera2.

picamera2 imports libcamera when it is imported, which fails anywhere but a
Pi, so it is imported in :meth:`Picamera2Source._open` and nowhere else.
"""

from __future__ import annotations

import logging
import time

from ..config import CaptureSettings
from ..errors import CameraUnavailable
from .base import BaseSource, Frame, to_bgr

log = logging.getLogger(__name__)

#: picamera2's "RGB888" is B, G, R in memory: exactly OpenCV's BGR.
PIXEL_FORMAT = "RGB888"


class Picamera2Source(BaseSource):
    """Raspberry Pi camera ``camera_num``, as a live BGR stream.

    The camera is configured for video at ``settings.width`` ×
    ``settings.height`` and ``settings.fps``. A read that waits longer than
    ``settings.stall_timeout`` raises :class:`CameraUnavailable`, as does a
    missing picamera2, a missing camera or one that fails to start.
    """

    def __init__(self, camera_num: int = 0, settings: CaptureSettings | None = None, *, name: str | None = None):
        super().__init__(name or f"picamera2:{camera_num}", live=True)
        self.camera_num = camera_num
        self.settings = settings or CaptureSettings()
        self.fps = self.settings.fps
        self._cam = None

    def _open(self) -> None:
        try:
            from picamera2 import Picamera2
        except Exception as e:  # ImportError off a Pi; libcamera errors on a broken one
            raise CameraUnavailable(f"{self.name}: picamera2 is not available: {e}") from e
        try:
            cam = Picamera2(self.camera_num)
        except Exception as e:
            raise CameraUnavailable(f"{self.name}: cannot open camera: {e}") from e
        s = self.settings
        try:
            config = cam.create_video_configuration(
                main={"size": (s.width, s.height), "format": PIXEL_FORMAT},
                controls={"FrameRate": s.fps},
            )
            cam.configure(config)
            cam.start()
        except Exception as e:
            # Release the camera we grabbed before giving up on it.
            _quietly(cam.close)
            raise CameraUnavailable(f"{self.name}: cannot start camera: {e}") from e
        self._cam = cam
        log.info("%s: started at %dx%d, %g fps", self.name, s.width, s.height, s.fps)

    def _read(self) -> Frame:
        try:
            # A number for ``wait`` is a timeout: picamera2 raises TimeoutError.
            array = self._cam.capture_array("main", wait=self.settings.stall_timeout)
        except Exception as e:
            raise CameraUnavailable(f"{self.name}: no frame: {e!r}") from e
        if array is None:
            raise CameraUnavailable(f"{self.name}: no frame")
        try:
            image = to_bgr(array)
        except ValueError as e:
            raise CameraUnavailable(f"{self.name}: {e}") from e
        return self._frame(image, time.monotonic())

    def _halt(self) -> None:
        cam, self._cam = self._cam, None
        if cam is not None:
            _quietly(cam.stop)
            _quietly(cam.close)

    def _release(self) -> None:
        self._halt()


def _quietly(fn) -> None:
    try:
        fn()
    except Exception as e:  # already failing: the first error is the one that matters
        log.debug("ignored error while releasing the camera: %r", e)
