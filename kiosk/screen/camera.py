"""The live camera on the door screen: the newest frame with the face's box, as a JPEG, in memory only.

The match loop hands each frame over (:meth:`LiveView.put`, a reference and
the boxes, no copy, no encoding); a JPEG is made only when the page asks
for one, and at most once per frame. Nothing is written to disk.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

#: The box's colour (BGR) and the JPEG quality: enough to see oneself, small on loopback.
BOX = (60, 200, 60)
QUALITY = 70


class LiveView:
    def __init__(self, max_width: int = 960):
        self._lock = threading.Lock()
        self._image: np.ndarray | None = None
        self._boxes: tuple = ()
        self._seq = 0
        self._jpeg: tuple[int, bytes] | None = None
        self._max_width = max_width

    def put(self, image: np.ndarray, boxes=()) -> None:
        """The newest frame and the faces' boxes in it (``Box``: top, right, bottom, left)."""
        with self._lock:
            self._image, self._boxes = image, tuple(boxes)
            self._seq += 1

    def forget(self) -> None:
        """No picture (the camera is gone, or the door is closing)."""
        with self._lock:
            self._image, self._boxes, self._jpeg = None, (), None
            self._seq += 1

    def jpeg(self) -> bytes | None:
        """The newest frame as a JPEG with the boxes drawn, or None before the first frame."""
        with self._lock:
            image, boxes, seq = self._image, self._boxes, self._seq
            if self._jpeg is not None and self._jpeg[0] == seq:
                return self._jpeg[1]
        if image is None:
            return None
        out = image.copy()
        for b in boxes:
            cv2.rectangle(out, (int(b.left), int(b.top)), (int(b.right), int(b.bottom)), BOX, 3)
        h, w = out.shape[:2]
        if w > self._max_width:
            out = cv2.resize(out, (self._max_width, round(h * self._max_width / w)), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
        if not ok:
            return None
        data = buf.tobytes()
        with self._lock:
            if self._seq == seq:
                self._jpeg = (seq, data)
        return data
