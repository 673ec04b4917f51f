"""Frames through OpenCV: a V4L2 camera, a network stream or a video file.

OpenCV's FFmpeg backend reads every shared test video: MP4 (H.264), MOV
(HEVC) and animated GIF.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import cv2

from ..config import CaptureSettings
from ..errors import CameraUnavailable, SourceExhausted
from .base import BaseSource, Frame, to_bgr

log = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https")


def redact_url(url: str) -> str:
    """The URL without its password, fit for names and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else "***@"
    return urlunsplit(parts._replace(netloc=user + host))


class OpenCVSource(BaseSource):
    """A camera index, a stream URL or a video file, read with OpenCV.

    Cameras and streams are live: frames are stamped with
    :func:`time.monotonic` and a failed read raises
    :class:`CameraUnavailable`. Files are not: frames are stamped with their
    media position and the end raises :class:`SourceExhausted`. Stopping a
    file keeps its place; stopping a camera releases it.
    """

    def __init__(
        self,
        target: int | str | os.PathLike,
        settings: CaptureSettings | None = None,
        *,
        name: str | None = None,
    ):
        self.settings = settings or CaptureSettings()
        if isinstance(target, int):
            self.kind = "device"
            default_name = f"opencv:{target}"
        elif isinstance(target, str) and urlsplit(target).scheme.lower() in STREAM_SCHEMES:
            self.kind = "stream"
            default_name = redact_url(target)
        else:
            self.kind = "file"
            target = Path(target)
            default_name = f"file:{target}"
        super().__init__(name or default_name, live=self.kind != "file")
        self.target = target
        #: Nominal frame rate: the file's own, or the one asked of the camera.
        self.fps: float = self.settings.fps
        self._cap: cv2.VideoCapture | None = None
        self._last_ts = 0.0

    def _open(self) -> None:
        if self._cap is not None:  # a stopped file keeps its place
            return
        cap = self._open_capture()
        try:
            if not cap.isOpened():
                raise CameraUnavailable(f"{self.name}: cannot open {self.kind}")
            if self.live:
                self._configure(cap)
            else:
                fps = cap.get(cv2.CAP_PROP_FPS)
                if math.isfinite(fps) and 0 < fps <= 1000:
                    self.fps = fps
        except BaseException:
            cap.release()
            raise
        self._cap = cap
        log.info("%s: opened (%s)", self.name, cap.getBackendName())

    def _open_capture(self) -> cv2.VideoCapture:
        try:
            if self.kind == "device":
                return cv2.VideoCapture(self.target, cv2.CAP_ANY)
            if self.kind == "stream":
                ms = int(self.settings.stall_timeout * 1000)
                params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
                return cv2.VideoCapture(self.target, cv2.CAP_FFMPEG, params)
            if not self.target.is_file():
                raise CameraUnavailable(f"{self.name}: no such video file")
            return cv2.VideoCapture(str(self.target), cv2.CAP_FFMPEG)
        except cv2.error as e:
            raise CameraUnavailable(f"{self.name}: cannot open {self.kind}: {e}") from e

    def _configure(self, cap: cv2.VideoCapture) -> None:
        s = self.settings
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, s.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, s.height)
        cap.set(cv2.CAP_PROP_FPS, s.fps)
        # One buffered frame: the reader wants the newest, not a backlog.
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        if self.kind == "device":
            cap.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(s.stall_timeout * 1000))
        got = (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if got != (s.width, s.height):
            log.info("%s: asked for %dx%d, camera gives %dx%d", self.name, s.width, s.height, *got)

    def _read(self) -> Frame:
        try:
            ok, image = self._cap.read()
        except cv2.error as e:
            if self.live:
                raise CameraUnavailable(f"{self.name}: read failed: {e}") from e
            raise CameraUnavailable(f"{self.name}: cannot decode frame {self._index}: {e}") from e
        if not ok or image is None:
            if self.live:
                raise CameraUnavailable(f"{self.name}: no frame")
            raise SourceExhausted(f"{self.name}: end of file after {self._index} frames")
        if self.live:
            return self._frame(to_bgr(image), time.monotonic())
        # POS_MSEC, read after the frame, is that frame's presentation time.
        ts = self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        if not math.isfinite(ts) or ts < 0 or (ts == 0 and self._index > 0):
            ts = self._index / self.fps
        ts = self._last_ts = max(ts, self._last_ts)
        return self._frame(to_bgr(image), ts)

    def _halt(self) -> None:
        if self.live:
            self._release()

    def _release(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()
