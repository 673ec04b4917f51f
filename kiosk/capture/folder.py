"""Frames from a folder of still images, in name order."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import cv2
import numpy as np

from ..errors import CameraUnavailable, SourceExhausted
from .base import BaseSource, Frame, to_bgr
from .formats import IMAGE_SUFFIXES

log = logging.getLogger(__name__)


def natural_key(name: str) -> list:
    """Sort key that puts ``frame_2`` before ``frame_10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_images(folder: Path) -> list[Path]:
    """The image files directly inside ``folder``, in natural name order."""
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(files, key=lambda p: natural_key(p.name))


def decode_image(path: Path) -> np.ndarray | None:
    """Decode a still by its content (a WebP named ``.jpg`` still works) as BGR; None if it cannot be."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    # IMREAD_COLOR turns greyscale and RGBA into BGR in the one decode.
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return None if image is None else to_bgr(image)


class FolderSource(BaseSource):
    """The images of a folder as a finite, non-live stream.

    Files are listed when the source starts; frame ``i`` (counting only the
    images that decoded) is stamped ``i / fps``. A file that cannot be
    decoded is logged, listed in :attr:`skipped` and passed over.
    """

    def __init__(self, folder: str | os.PathLike, *, fps: float = 15.0, name: str | None = None):
        if fps <= 0:
            raise ValueError("fps must be positive")
        self.folder = Path(folder)
        super().__init__(name or f"folder:{self.folder}", live=False)
        self.fps = float(fps)
        self.files: list[Path] = []
        self.skipped: list[Path] = []
        self._pos = 0

    def _open(self) -> None:
        if self.files:  # restarted after stop(): carry on where it was
            return
        if not self.folder.is_dir():
            raise CameraUnavailable(f"{self.name}: no such folder")
        try:
            self.files = list_images(self.folder)
        except OSError as e:
            raise CameraUnavailable(f"{self.name}: cannot list folder: {e.strerror}") from e
        if not self.files:
            suffixes = ", ".join(sorted(s.lstrip(".") for s in IMAGE_SUFFIXES))
            raise CameraUnavailable(f"{self.name}: no images ({suffixes}) in folder")
        log.info("%s: %d images", self.name, len(self.files))

    def _read(self) -> Frame:
        while self._pos < len(self.files):
            path = self.files[self._pos]
            self._pos += 1
            image = decode_image(path)
            if image is None:
                self.skipped.append(path)
                # The position, not the name: file names may name people.
                log.warning("%s: skipped unreadable file %d of %d", self.name, self._pos, len(self.files))
                continue
            return self._frame(image, self._index / self.fps)
        raise SourceExhausted(f"{self.name}: no more images after {self._index}")
