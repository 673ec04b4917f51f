"""The motion gate: is anyone in front of the camera, cheaply?

Face detection costs tens of milliseconds a frame; this costs well under
one. Each frame is shrunk to a small grey picture (64×48 by default) and
compared with a slowly updated background. The gate opens when enough small
pixels changed, or when the PIR says someone is there, and stays open for
``hold_s`` after the last motion. A person standing still in front of the
camera makes no motion, so the daemon calls :meth:`MotionGate.hold` whenever
detection finds a face: the gate then stays open while the face is there.
"""

from __future__ import annotations

import logging
from typing import Protocol

import cv2
import numpy as np

from ..config import MotionSettings

log = logging.getLogger(__name__)


class PresenceSensor(Protocol):
    """Anything with gpiozero's ``motion_detected`` (a ``MotionSensor``)."""

    motion_detected: bool


class MotionGate:
    """Says, frame by frame, whether face detection should run.

    :param sensor: an optional PIR (gpiozero ``MotionSensor``); its motion
        opens the gate as frame motion does.
    """

    def __init__(self, settings: MotionSettings, sensor: PresenceSensor | None = None):
        self.settings = settings
        self.sensor = sensor
        self._background: np.ndarray | None = None
        self._open_until = float("-inf")
        self._now = 0.0
        #: Fraction of small-frame pixels that changed in the last frame.
        self.changed = 0.0
        #: Frames seen and frames on which the gate was open.
        self.frames = 0
        self.open_frames = 0

    def small(self, image: np.ndarray) -> np.ndarray:
        """The frame as a small grey picture (float32)."""
        s = self.settings
        h, w = image.shape[:2]
        # Crop (centred) to a whole multiple of the small size: INTER_AREA
        # then takes OpenCV's fast integer box-filter path (5x cheaper).
        kh, kw = max(1, h // s.height), max(1, w // s.width)
        top, left = (h - kh * s.height) // 2, (w - kw * s.width) // 2
        if h >= s.height and w >= s.width:
            image = image[top : top + kh * s.height, left : left + kw * s.width]
        if image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        small = cv2.resize(image, (s.width, s.height), interpolation=cv2.INTER_AREA)
        return small.astype(np.float32)

    def motion(self, image: np.ndarray) -> bool:
        """Whether this frame differs from the background; updates the background."""
        s = self.settings
        small = self.small(image)
        bg = self._background
        if bg is None:
            self._background = small
            self.changed = 1.0
            return True
        diff = small - bg
        # A camera's auto-exposure shifts every pixel at once: that is not
        # someone arriving, so the median shift is taken out.
        diff -= np.median(diff)
        self.changed = float(np.count_nonzero(np.abs(diff) > s.pixel_threshold)) / diff.size
        cv2.accumulateWeighted(small, bg, s.background_rate)
        return self.changed >= s.area_threshold

    def update(self, frame) -> bool:
        """Feed one :class:`~kiosk.capture.base.Frame`; True while someone may be there."""
        self._now = now = float(frame.timestamp)
        self.frames += 1
        if not self.settings.enabled:
            self.open_frames += 1
            return True
        moved = self.motion(frame.image)
        if self.sensor is not None and self.sensor.motion_detected:
            moved = True
        if moved:
            self._open_until = now + self.settings.hold_s
        is_open = moved or now <= self._open_until
        self.open_frames += is_open
        return is_open

    def hold(self, timestamp: float | None = None) -> None:
        """Someone is there (a face was found): keep the gate open ``hold_s`` more."""
        now = self._now if timestamp is None else timestamp
        self._open_until = max(self._open_until, now + self.settings.hold_s)

    @property
    def is_open(self) -> bool:
        return not self.settings.enabled or self._now <= self._open_until

    def reset(self) -> None:
        """Forget the background (after the camera was reopened)."""
        self._background = None
