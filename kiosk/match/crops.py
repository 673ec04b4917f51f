"""Evidence crops: a small JPEG of the face a decision was about (``[outbox] evidence_crop``).

The daemon shows this stage every frame's open tracks; it keeps, per track,
only a reference to the last frame the face was seen in and its box (frames
are fresh arrays, never reused by the capture), and encodes a crop only when
the track's decision is made. The crop travels only inside the event's
encryption and is erased from the device once the event is delivered (see
docs/events.md).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import cv2
import numpy as np

from .detect import Box
from .track import Track

log = logging.getLogger(__name__)

#: Longest side of the crop in pixels: enough to tell who it was, small enough for every event.
MAX_SIDE = 128
#: Border around the face box, as a fraction of its size.
BORDER = 0.2
JPEG_QUALITY = 80


def face_jpeg(image: np.ndarray, box: Box, *, max_side: int = MAX_SIDE, border: float = BORDER,
              quality: int = JPEG_QUALITY) -> bytes | None:
    """The face (with a border) cut from a frame, at most ``max_side`` pixels, as JPEG; None if nothing is left."""
    h, w = image.shape[:2]
    dx, dy = round(box.width * border), round(box.height * border)
    top, bottom = max(0, box.top - dy), min(h, box.bottom + dy)
    left, right = max(0, box.left - dx), min(w, box.right + dx)
    if bottom - top < 2 or right - left < 2:
        return None
    crop = image[top:bottom, left:right]
    scale = max_side / max(crop.shape[:2])
    if scale < 1:
        crop = cv2.resize(crop, (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))),
                          interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return data.tobytes() if ok else None


class EvidenceCrops:
    """The last look at each open track's face, turned into a JPEG when its decision comes."""

    def __init__(self) -> None:
        self._looks: dict[int, tuple[np.ndarray, Box]] = {}

    def see(self, image: np.ndarray, timestamp: float, tracks: Iterable[Track]) -> None:
        """Remember where each undecided track (or one decided on this frame) is in this frame (a reference, no copy)."""
        for tr in tracks:
            if tr.last_seen == timestamp and (tr.decision is None or tr.decision.timestamp == timestamp):
                self._looks[tr.id] = (image, tr.box)

    def take(self, track_id: int) -> bytes | None:
        """The JPEG of a track's face (once: the track's look is forgotten), or None if it was never seen."""
        look = self._looks.pop(track_id, None)
        return face_jpeg(*look) if look is not None else None

    def forget(self, open_ids: Iterable[int]) -> None:
        """Drop the looks of tracks that are no longer open (ended without a decision)."""
        keep = set(open_ids)
        for tid in [t for t in self._looks if t not in keep]:
            del self._looks[tid]

    def __len__(self) -> int:
        return len(self._looks)
