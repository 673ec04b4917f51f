"""From a photo (or a short video) to templates, refusing what cannot serve.

A photo is refused, with a reason, when it has no face, more than one face,
or a face that is too small or too blurred. The photo itself is never kept:
only its SHA-256, so the same photo is not enrolled twice.

A resident is best enrolled from a few different photos (or a short video):
several templates, and the mean the gallery derives from them, recognise
them far more often at the same rate of strangers let in (see
docs/recognition.md). :func:`select_diverse` keeps the sharpest template
and then the ones least like those kept, at most ``MAX_TEMPLATES``: the
calibration assumes residents enrolled from up to that many photos, and a
resident with many more templates resembles more strangers.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..capture.formats import VIDEO_SUFFIXES
from ..config import DetectSettings
from ..errors import EnrollmentRefused
from .detect import BLURRED, NO_FACE, PARTLY_OUTSIDE, SEVERAL_FACES, TOO_SMALL, Face, FaceDetector
from .embed import Embedder

log = logging.getLogger(__name__)

# Photos are shrunk to this longest side before detection (speed); boxes map back.
_MAX_SIDE = 1600
#: Templates a resident is enrolled with at most (the calibration's enrollment).
MAX_TEMPLATES = 3
#: Frames of a video looked at when enrolling from it.
VIDEO_CANDIDATES = 15
#: Templates closer than this to one already kept add nothing (the same look twice).
NEAR_DUPLICATE = 0.05

_MESSAGES = {
    NO_FACE: "no face found",
    SEVERAL_FACES: "more than one face: use a photo of the resident alone",
    TOO_SMALL: "face too small",
    BLURRED: "face too blurred",
    PARTLY_OUTSIDE: "face partly outside the photo",
}


@dataclass(frozen=True)
class Template:
    vector: np.ndarray
    source_sha256: str
    face: Face


def read_image(path: Path | str) -> np.ndarray:
    """A BGR image from any format OpenCV decodes (by content, not by name)."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        raise EnrollmentRefused("unreadable", f"{path}: {e.strerror}") from None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise EnrollmentRefused("unreadable", f"{path}: not an image OpenCV can read")
    return img


def select_diverse(templates: list["Template"], k: int = MAX_TEMPLATES,
                   near: float = NEAR_DUPLICATE) -> list["Template"]:
    """At most ``k`` templates: the sharpest face first, then each time the one farthest from all
    kept (farthest-point sampling), never one within ``near`` of a kept one."""
    if not templates:
        return []
    left = sorted(templates, key=lambda t: -t.face.sharpness)
    kept = [left.pop(0)]
    while left and len(kept) < k:
        far = [min(float(np.linalg.norm(t.vector - c.vector)) for c in kept) for t in left]
        i = int(np.argmax(far))
        if far[i] < near:
            break
        kept.append(left.pop(i))
    return kept


def video_frames(path: Path | str, count: int = 5) -> list[np.ndarray]:
    """Up to ``count`` frames spread evenly over a video."""
    cap = cv2.VideoCapture(str(path))
    try:
        frames = []
        while True:
            ok, img = cap.read()
            if not ok:
                break
            frames.append(img)
    finally:
        cap.release()
    if not frames:
        raise EnrollmentRefused("unreadable", f"{path}: no frames could be read")
    idx = np.linspace(0, len(frames) - 1, num=min(count, len(frames))).round().astype(int)
    return [frames[i] for i in sorted(set(idx))]


class Enroller:
    """Turns photos into templates with the detector's quality gates (upsampled, full scale)."""

    def __init__(self, settings: DetectSettings, *, detector: FaceDetector | None = None, embedder: Embedder | None = None):
        self.settings = settings
        self.detector = detector or FaceDetector(settings, scale=1.0, upsample=1)
        self.embedder = embedder or Embedder(settings)

    def single_face(self, image: np.ndarray, label: str = "photo") -> Face:
        """The one good face in ``image``, or :class:`EnrollmentRefused`."""
        h, w = image.shape[:2]
        k = min(1.0, _MAX_SIDE / max(h, w))
        det = self.detector
        if k < 1.0:
            det = FaceDetector(self.settings, scale=k, upsample=det.upsample)
        faces = det.detect(image)
        if not faces:
            raise EnrollmentRefused(NO_FACE, f"{label}: {_MESSAGES[NO_FACE]}")
        if len(faces) > 1:
            raise EnrollmentRefused(SEVERAL_FACES, f"{label}: {_MESSAGES[SEVERAL_FACES]} ({len(faces)} found)")
        face = faces[0]
        if not face.ok:
            r = face.reasons[0]
            detail = {
                TOO_SMALL: f"{face.box.width} px wide, at least {self.settings.min_face_px} needed",
                BLURRED: f"sharpness {face.sharpness:.0f}, at least {self.settings.min_sharpness:.0f} needed",
                PARTLY_OUTSIDE: "move the face away from the edge",
            }[r]
            raise EnrollmentRefused(r, f"{label}: {_MESSAGES[r]} ({detail})")
        return face

    def from_image(self, image: np.ndarray, sha256: str, label: str = "photo") -> Template:
        face = self.single_face(image, label)
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        return Template(self.embedder.embed(rgb, face), sha256, face)

    def from_file(self, path: Path | str) -> list[Template]:
        """Templates from a photo (one) or a video (one per usable sampled frame)."""
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise EnrollmentRefused("unreadable", f"{path}: {e.strerror}") from e
        digest = hashlib.sha256(raw).hexdigest()
        if path.suffix.lower() in VIDEO_SUFFIXES:
            out, last = [], None
            for i, img in enumerate(video_frames(path, VIDEO_CANDIDATES)):
                try:
                    out.append(self.from_image(img, f"{digest}:{i}", f"{path} frame {i}"))
                except EnrollmentRefused as e:
                    last = e
            if not out:
                raise last or EnrollmentRefused(NO_FACE, f"{path}: no usable frame")
            return select_diverse(out)
        return [self.from_image(read_image(path), digest, str(path))]
