"""Is the face at the door alive? Cheap cues from the frames of one visit.

Three methods, each turned into evidence in [-1, 1] (positive: live,
negative: a presentation attack, 0: no information) and combined by the
configured weights:

- ``blink``: the eye aspect ratio (EAR, from the 68 landmarks) dips well
  below the visit's usual value and comes back, while the face is steady.
  A picture does not blink; but while a face moves fast, its landmarks
  jitter and lag enough to fake a one-frame dip, so dips then do not count.
- ``parallax``: when a held picture moves, what is printed around the face
  moves with it, by the same plane motion as the face's landmarks; when a
  head moves, the scene behind it stays put. Each time the face has moved,
  the textured pixels around it vote for one or the other. The evidence
  grows with the number of moves seen, to full weight at ``full_moves``.
- ``moire``: a screen redrawn by a camera leaves periodic, high-frequency
  ripples (moiré) and sub-pixel colour fringes on the face; skin does not.

Per frame this costs one 68-point landmark fit, a 64×64 FFT and a few
small least-squares fits: a few milliseconds on a Pi.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..config import LivenessSettings
from . import models
from .detect import Face
from .recognizer import LivenessResult
from .track import Track

log = logging.getLogger(__name__)

_KEY = "liveness"
_LEFT_EYE = slice(36, 42)
_RIGHT_EYE = slice(42, 48)
_NOT_EYES = np.r_[0:36, 48:68]  # jaw, brows, nose, mouth: how the face itself moves
_PATCH = 64  # side of the cheek-and-nose patch the texture cue looks at
# Landmark sets kept per visit: enough for several seconds at camera rate.
_MAX_FRAMES = 120


def eye_aspect_ratio(pts: np.ndarray) -> float:
    """Mean EAR of both eyes (Soukupová and Čech, 2016): eye height over width."""

    def one(e: np.ndarray) -> float:
        w = np.linalg.norm(e[0] - e[3])
        return float((np.linalg.norm(e[1] - e[5]) + np.linalg.norm(e[2] - e[4])) / (2 * w)) if w > 0 else 0.0

    return (one(pts[_LEFT_EYE]) + one(pts[_RIGHT_EYE])) / 2


def interocular(pts: np.ndarray) -> float:
    return float(np.linalg.norm(pts[_LEFT_EYE].mean(0) - pts[_RIGHT_EYE].mean(0)))


def _rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((a - b) ** 2).sum(1).mean()))


def similarity_shift(ref: np.ndarray, pts: np.ndarray) -> float:
    """How far the face moved (RMS landmark displacement), in interocular distances."""
    return _rms(ref, pts) / (interocular(ref) or 1.0)


def _affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares affine map from ``src`` to ``dst`` points, as a 3×3 matrix."""
    A = np.hstack([src, np.ones((len(src), 1))])
    M, *_ = np.linalg.lstsq(A, dst, rcond=None)
    H = np.eye(3)
    H[:2, :] = M.T
    return H


def face_speed(points: list[np.ndarray]) -> np.ndarray:
    """Per frame, how far the face moved between its neighbouring frames (RMS of the
    landmarks other than the eyes, in interocular distances)."""
    n = len(points)
    out = np.zeros(n)
    for i in range(n):
        a, b = points[max(0, i - 1)], points[min(n - 1, i + 1)]
        out[i] = _rms(a[_NOT_EYES], b[_NOT_EYES]) / (interocular(points[i]) or 1.0)
    return out


def surround_coherence(ref_grey: np.ndarray, ref_pts: np.ndarray, grey: np.ndarray, pts: np.ndarray, *, noise: float = 6.0) -> tuple[float, int] | None:
    """Does the face's surround move with the face (a picture) or stay put (a scene behind a head)?

    The face's own motion between two frames is fitted as an affine map of
    its landmarks: the first-order motion of a plane over a region the size
    of the ring. (A full homography fitted to landmarks that span only the
    face extrapolates its noise into the ring: on the generated attack sets
    it let the surround of a close-up print look static.) Every textured
    pixel of a ring around the face then votes for the hypothesis that
    explains it better: "follows the face" (the ring warped by that map
    matches) or "static" (it matches unwarped). Returns the share of "follows" votes and the number of votes.
    Motion correlation between face and background is a classic photo-attack
    counter-measure (Anjos and Marcel, IJCB 2011).
    """
    H = _affine(ref_pts, pts)
    h, w = grey.shape[:2]
    x0, y0 = pts.min(0)
    x1, y1 = pts.max(0)
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) / 2
    outer, inner = 2.0 * half, 1.15 * half
    l, t = int(max(0, cx - outer)), int(max(0, cy - outer))
    r, b = int(min(w, cx + outer)), int(min(h, cy + outer))
    if r - l < 8 or b - t < 8:
        return None
    cur = grey[t:b, l:r].astype(np.float32)
    # The reference frame warped by the face's motion, sampled on this crop.
    shift = np.array([[1, 0, l], [0, 1, t], [0, 0, 1]], np.float64)
    warped = cv2.warpPerspective(ref_grey, np.linalg.inv(shift) @ H, (r - l, b - t), flags=cv2.INTER_LINEAR | cv2.WARP_FILL_OUTLIERS).astype(np.float32)
    still = ref_grey[t:b, l:r].astype(np.float32)
    yy, xx = np.mgrid[t:b, l:r]
    ring = np.maximum(np.abs(xx - cx), np.abs(yy - cy)) > inner
    gx = cv2.Sobel(cur, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(cur, cv2.CV_32F, 0, 1, ksize=3)
    textured = ring & (np.hypot(gx, gy) > 40)  # motion is only visible where there is detail
    e_follow = np.abs(warped - cur)[textured]
    e_still = np.abs(still - cur)[textured]
    follows = int((e_follow + noise < e_still).sum())
    stays = int((e_still + noise < e_follow).sum())
    if follows + stays < 50:
        return None
    return follows / (follows + stays), follows + stays


def moire_score(bgr: np.ndarray, pts: np.ndarray) -> float | None:
    """Share of the face patch's detail energy in sharp periodic peaks, with a colour-fringe term.

    The patch is taken at full camera resolution (no resampling, which would
    alias or smooth away the ripples) between the eyes and the mouth.
    """
    h, w = bgr.shape[:2]
    cx, cy = pts[27:36].mean(0)  # nose bridge and tip
    x0, y0 = int(round(cx - _PATCH / 2)), int(round(cy - _PATCH / 2))
    if x0 < 0 or y0 < 0 or x0 + _PATCH > w or y0 + _PATCH > h:
        return None
    patch = bgr[y0 : y0 + _PATCH, x0 : x0 + _PATCH].astype(np.float32)
    grey = patch.mean(2)
    hp = grey - cv2.GaussianBlur(grey, (0, 0), 2.0)  # keep detail, drop shading
    win = np.outer(np.hanning(_PATCH), np.hanning(_PATCH))
    mag = np.abs(np.fft.fftshift(np.fft.fft2(hp * win)))
    yy, xx = np.mgrid[-_PATCH // 2 : _PATCH // 2, -_PATCH // 2 : _PATCH // 2]
    band = mag[(np.hypot(xx, yy) >= 6)]
    total = float(band.sum())
    if total <= 1e-6:
        return 0.0
    top = np.sort(band)[-8:].sum()  # a few strong spectral lines = a periodic pattern
    peaks = float(top / total) * band.size / 8  # ≈1 for a flat spectrum
    # Sub-pixel fringes: fine colour detail that a camera's colour filter and JPEG chroma would not make.
    ycc = cv2.cvtColor(patch.astype(np.uint8), cv2.COLOR_BGR2YCrCb).astype(np.float32)
    chroma_detail = sum(float(np.abs(c - cv2.GaussianBlur(c, (0, 0), 2.0)).mean()) for c in (ycc[..., 1], ycc[..., 2]))
    luma_detail = float(np.abs(hp).mean()) + 1.0
    return float(np.log(peaks) + chroma_detail / luma_detail)


@dataclass
class Evidence:
    """What one visit has shown so far (kept in ``track.extras['liveness']``)."""

    first: float
    last: float = 0.0
    points: list[np.ndarray] = field(default_factory=list)
    ears: list[float] = field(default_factory=list)
    moire: list[float] = field(default_factory=list)
    # Face/surround coherence: share of "follows the face" votes per comparison.
    coherence: list[float] = field(default_factory=list)
    ref_grey: np.ndarray | None = None  # the frame motion is measured from
    ref_points: np.ndarray | None = None


class Liveness:
    """The kiosk's liveness check (see module docstring); implements ``LivenessCheck``."""

    def __init__(self, settings: LivenessSettings, *, shape_predictor=None):
        self.settings = settings
        self._shape = shape_predictor or models.load("landmarks68")

    def observe(self, track: Track, frame, grey: np.ndarray, face: Face) -> None:
        ev = track.extras.get(_KEY)
        if ev is None:
            ev = track.extras[_KEY] = Evidence(first=frame.timestamp)
        ev.last = frame.timestamp
        if len(ev.points) >= _MAX_FRAMES:
            return
        shape = self._shape(grey, face.box.to_dlib())
        pts = np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], np.float64)
        if interocular(pts) < 8:  # landmarks collapsed: not a usable face
            return
        ev.points.append(pts)
        ev.ears.append(eye_aspect_ratio(pts))
        if ev.ref_points is None:
            ev.ref_grey, ev.ref_points = grey, pts
        elif similarity_shift(ev.ref_points, pts) >= self.settings.min_motion:
            c = surround_coherence(ev.ref_grey, ev.ref_points, grey, pts)
            if c is not None:
                ev.coherence.append(c[0])
            ev.ref_grey, ev.ref_points = grey, pts  # measure the next move from here
        if frame.image.ndim == 3:
            m = moire_score(frame.image, pts)
            if m is not None:
                ev.moire.append(m)

    def scores(self, track: Track) -> dict[str, float]:
        """Each method's raw measure and evidence, and the weighted total."""
        ev: Evidence | None = track.extras.get(_KEY)
        s = self.settings
        out = {"frames": float(len(ev.points) if ev else 0)}
        if not ev or len(ev.points) < 2:
            out.update(blink=0.0, parallax=0.0, moire=0.0, score=0.0)
            return out
        # Blink: the deepest dip below the visit's usual eye opening on a steady face, if the
        # eyes opened again after it.
        ears = np.asarray(ev.ears)
        usual = float(np.median(ears))
        steady = face_speed(ev.points) <= s.blink_steady
        low = int(np.argmin(np.where(steady, ears, np.inf))) if steady.any() else int(np.argmax(ears))
        dip = (usual - ears[low]) / usual if usual > 0 else 0.0
        reopened = ears[low:].max() >= usual * (1 - s.blink_drop / 2) and ears[: low + 1].max() >= usual * (1 - s.blink_drop / 2)
        out["blink_dip"] = round(float(dip), 4)
        blink = 1.0 if dip >= s.blink_drop and reopened else 0.0
        # Coherence: does the surround follow the face when it moves?
        if len(ev.coherence) >= s.min_moves:
            f = float(np.median(ev.coherence))
            out["follows"] = round(f, 4)
            # At or above follow_min: a picture; at or below static_max: a head before a scene; a ramp between.
            parallax = float(np.clip(1 - 2 * (f - s.static_max) / (s.follow_min - s.static_max), -1, 1))
            # A few moves are weak evidence (a hand-held print can look static
            # for three): full weight only from full_moves on.
            parallax *= min(1.0, len(ev.coherence) / s.full_moves)
        else:
            parallax = 0.0  # the face hardly moved: no evidence either way
        out["moves"] = float(len(ev.coherence))
        # Texture: the visit's typical moiré measure against the threshold.
        if ev.moire:
            m = float(np.median(ev.moire))
            out["moire_raw"] = round(m, 4)
            moire = -float(np.clip((m - s.moire_threshold) / s.moire_ramp + 1, 0, 1)) if m > s.moire_threshold - s.moire_ramp else 0.0
        else:
            moire = 0.0
        out.update(blink=blink, parallax=round(parallax, 4), moire=round(moire, 4))
        out["score"] = round(s.blink_weight * blink + s.parallax_weight * parallax + s.moire_weight * moire, 4)
        return out

    def assess(self, track: Track, final: bool) -> LivenessResult | None:
        s = self.settings
        ev: Evidence | None = track.extras.get(_KEY)
        frames = len(ev.points) if ev else 0
        waited = (ev.last - ev.first) if ev else 0.0
        if not final and frames < s.min_frames:
            return None
        sc = self.scores(track)
        if sc["score"] >= s.live_score:
            return LivenessResult(True, sc)
        settled = final or waited >= s.max_wait_s
        # Before the wait is over only strong evidence refuses: a blink may still come.
        if sc["score"] <= -s.spoof_score * (1 if settled else 2):
            why = "screen_texture" if sc["moire"] < 0 and sc["parallax"] >= 0 else "flat_picture"
            return LivenessResult(False, sc, why)
        if not settled:
            return None
        return LivenessResult(None, sc, "insufficient_liveness_evidence" if frames >= s.min_frames else "too_few_frames")
