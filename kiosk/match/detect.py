"""Face detection and the quality gates a face must pass to be recognised.

Detection runs dlib's HOG detector on a downscaled grey copy of the frame
(``detect.scale``) and maps the boxes back to full-frame pixels. Each face
carries its quality measures and, if it fails a gate, the reasons why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..config import DetectSettings
from . import models

log = logging.getLogger(__name__)

# Quality reasons, as kept in decisions and printed by the admin tools.
TOO_SMALL = "too_small"
BLURRED = "blurred"
PARTLY_OUTSIDE = "partly_outside"
NO_FACE = "no_face"
SEVERAL_FACES = "several_faces"
# The door's own gates (kiosk.match.gates): the recogniser adds them, enrollment and evaluation do not.
TOO_DARK = "too_dark"
TURNED_AWAY = "turned_away"

# Side of the grey face crop on which sharpness is measured, so the
# measure does not depend on how large the face is in the frame.
_SHARPNESS_SIDE = 96


@dataclass(frozen=True, slots=True)
class Box:
    """A face box in full-frame pixels (face_recognition's order: top, right, bottom, left)."""

    top: int
    right: int
    bottom: int
    left: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    def iou(self, other: "Box") -> float:
        t, b = max(self.top, other.top), min(self.bottom, other.bottom)
        l, r = max(self.left, other.left), min(self.right, other.right)
        inter = max(0, b - t) * max(0, r - l)
        union = self.width * self.height + other.width * other.height - inter
        return inter / union if union > 0 else 0.0

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.top, self.right, self.bottom, self.left)

    def to_dlib(self):
        import dlib

        return dlib.rectangle(self.left, self.top, self.right, self.bottom)


@dataclass(frozen=True)
class Face:
    """A detected face and its quality."""

    box: Box
    score: float
    sharpness: float
    edge_distance: float  # smallest gap to a frame edge, as a fraction of the frame
    reasons: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.reasons

    def as_json(self) -> dict:
        return {
            "top": self.box.top,
            "right": self.box.right,
            "bottom": self.box.bottom,
            "left": self.box.left,
            "width": self.box.width,
            "height": self.box.height,
            "score": round(self.score, 3),
            "sharpness": round(self.sharpness, 1),
            "edge_distance": round(self.edge_distance, 3),
            "ok": self.ok,
            "reasons": list(self.reasons),
        }


def to_grey(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def sharpness(grey: np.ndarray, box: Box) -> float:
    """Variance of the Laplacian of the face, resampled to a fixed size."""
    h, w = grey.shape[:2]
    t, b = max(0, box.top), min(h, box.bottom)
    l, r = max(0, box.left), min(w, box.right)
    if b - t < 4 or r - l < 4:
        return 0.0
    crop = cv2.resize(grey[t:b, l:r], (_SHARPNESS_SIDE, _SHARPNESS_SIDE), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(crop, cv2.CV_64F).var())


def brightness(grey: np.ndarray, box: Box) -> float:
    """Mean grey level (0-255) of the face's box, clipped to the frame."""
    h, w = grey.shape[:2]
    crop = grey[max(0, box.top):min(h, box.bottom), max(0, box.left):min(w, box.right)]
    return float(crop.mean()) if crop.size else 0.0


def too_dark(grey: np.ndarray, box: Box, settings: DetectSettings) -> bool:
    """The face is too dark to be recognised (guided capture asks for more light)."""
    return brightness(grey, box) < settings.min_brightness


def turned_away(yaw: float, pitch: float, settings: DetectSettings) -> bool:
    """The head is turned further from the camera than the gate allows (angles in degrees)."""
    return abs(yaw) > settings.max_yaw or abs(pitch) > settings.max_pitch


class FaceDetector:
    """HOG face detector with quality gates; the dlib detector it runs is the calling thread's own."""

    def __init__(self, settings: DetectSettings, *, scale: float | None = None, upsample: int | None = None):
        self.settings = settings
        self.scale = settings.scale if scale is None else scale
        self.upsample = settings.upsample if upsample is None else upsample
        models.hog_detector()  # loaded now (the constructing thread's), not at the first frame

    def detect(self, image: np.ndarray, grey: np.ndarray | None = None) -> list[Face]:
        """Faces in a BGR (or grey) frame, boxes in full-frame pixels, largest first."""
        grey = to_grey(image) if grey is None else grey
        h, w = grey.shape[:2]
        if self.scale != 1.0:
            small = cv2.resize(grey, (max(1, round(w * self.scale)), max(1, round(h * self.scale))), interpolation=cv2.INTER_AREA)
        else:
            small = grey
        rects, scores, _ = models.hog_detector().run(small, self.upsample, 0.0)
        faces = []
        inv = 1.0 / self.scale
        for rect, score in zip(rects, scores):
            box = Box(
                top=round(rect.top() * inv),
                right=round(rect.right() * inv),
                bottom=round(rect.bottom() * inv),
                left=round(rect.left() * inv),
            )
            faces.append(self.assess(grey, box, float(score)))
        faces.sort(key=lambda f: f.box.width * f.box.height, reverse=True)
        return faces

    def assess(self, grey: np.ndarray, box: Box, score: float = 0.0) -> Face:
        """Measure a face's quality and name the gates it fails."""
        h, w = grey.shape[:2]
        s = self.settings
        edge = min(box.left / w, box.top / h, (w - box.right) / w, (h - box.bottom) / h)
        sharp = sharpness(grey, box)
        reasons = []
        if box.width < s.min_face_px:
            reasons.append(TOO_SMALL)
        if sharp < s.min_sharpness:
            reasons.append(BLURRED)
        if edge < s.edge_margin:
            reasons.append(PARTLY_OUTSIDE)
        return Face(box=box, score=score, sharpness=sharp, edge_distance=edge, reasons=tuple(reasons))


class SceneDetector:
    """Two passes for a scene: the downscaled pass on every frame, a finer one for faces too small for it.

    The near pass (``detect.scale``) is sized for a resident at the door.
    When it finds no face, the far pass (``detect.far_scale``) looks for
    smaller, farther faces on every ``far_every``-th frame, and on every
    frame while it keeps finding them; so a resident still a few metres away
    is tracked and recognised, at the finer pass's cost only while someone is
    that far. One per recognising thread (it keeps that state).
    """

    def __init__(self, settings: DetectSettings):
        self.settings = settings
        self.near = FaceDetector(settings)
        far = settings.far_scale
        self.far = FaceDetector(settings, scale=far) if far > self.near.scale else None
        self._skipped = 0  # frames since the far pass last ran
        self._far_seen = False  # its last run found faces

    def detect(self, image: np.ndarray, grey: np.ndarray | None = None) -> list[Face]:
        grey = to_grey(image) if grey is None else grey
        faces = self.near.detect(image, grey)
        if faces or self.far is None:
            self._far_seen = False
            return faces
        if not self._far_seen and self._skipped + 1 < self.settings.far_every:
            self._skipped += 1
            return faces
        self._skipped = 0
        faces = self.far.detect(image, grey)
        self._far_seen = bool(faces)
        return faces
