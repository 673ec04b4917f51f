"""Parallax: does the face's surround move with the face (a picture) or stay put (a head before a scene)?"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from .blink import interocular, rms


def similarity_shift(ref: np.ndarray, pts: np.ndarray) -> float:
    """How far the face moved (RMS landmark displacement), in interocular distances."""
    return rms(ref, pts) / (interocular(ref) or 1.0)


def affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares affine map from ``src`` to ``dst`` points, as a 3×3 matrix."""
    A = np.hstack([src, np.ones((len(src), 1))])
    M, *_ = np.linalg.lstsq(A, dst, rcond=None)
    H = np.eye(3)
    H[:2, :] = M.T
    return H


#: Share of the face's own textured pixels that must follow its landmarks for a move to count.
FACE_FOLLOWS_MIN = 0.5


def _votes(ref_grey: np.ndarray, grey: np.ndarray, H: np.ndarray, box: tuple[int, int, int, int], regions, noise: float):
    """Votes of the textured pixels of each of ``regions`` (masks over ``box``): [(follow the map H, stay put), ...]."""
    l, t, r, b = box
    cur = grey[t:b, l:r].astype(np.float32)
    # The reference frame warped by the face's motion, sampled on this crop.
    shift = np.array([[1, 0, l], [0, 1, t], [0, 0, 1]], np.float64)
    warped = cv2.warpPerspective(ref_grey, np.linalg.inv(shift) @ H, (r - l, b - t),
                                 flags=cv2.INTER_LINEAR | cv2.WARP_FILL_OUTLIERS).astype(np.float32)
    still = ref_grey[t:b, l:r].astype(np.float32)
    gx = cv2.Sobel(cur, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(cur, cv2.CV_32F, 0, 1, ksize=3)
    textured = np.hypot(gx, gy) > 40  # motion is only visible where there is detail
    e_follow = np.abs(warped - cur)
    e_still = np.abs(still - cur)
    follows, stays = e_follow + noise < e_still, e_still + noise < e_follow
    return [(int((follows & m).sum()), int((stays & m).sum())) for m in (textured & region for region in regions)]


class Coherence(NamedTuple):
    """One move's votes: the share of "follows the face" in the ring round the face, the number of votes,
    and the share in the band beyond it (None without enough texture there)."""

    share: float
    votes: int
    beyond: float | None = None


#: The ring round the face and the band beyond it, in half face sizes from the face's centre.
RING = (1.15, 2.0)
BEYOND = (2.0, 3.0)


def surround_coherence(ref_grey: np.ndarray, ref_pts: np.ndarray, grey: np.ndarray, pts: np.ndarray, *, noise: float = 6.0) -> Coherence | None:
    """Does the face's surround move with the face (a picture) or stay put (a scene behind a head)?

    The face's own motion between two frames is fitted as an affine map of
    its landmarks: the first-order motion of a plane over a region the size
    of the ring. (A full homography fitted to landmarks that span only the
    face extrapolates its noise into the ring: on the generated attack sets
    it let the surround of a close-up print look static.) Every textured
    pixel of a ring around the face then votes for the hypothesis that
    explains it better: "follows the face" (the ring warped by that map
    matches) or "static" (it matches unwarped). Returns the share of "follows"
    votes, the number of votes, and the same share in the band beyond the ring
    (:data:`BEYOND`). Motion correlation between face and background is a
    classic photo-attack counter-measure (Anjos and Marcel, IJCB 2011).

    The ring (:data:`RING`) holds the head's own hair, ears and neck, which
    follow a real face too; the band beyond it mostly holds the scene, unless
    the picture is larger than that or the person's body moves along (someone
    walking up). :func:`parallax_evidence` weighs the two.

    The face's own pixels vote first: unless most of them follow the map,
    the landmarks moved and the face did not (dlib's landmarks jump by a
    tenth of the eye distance on a still, low-resolution or screen-lit face),
    and a still picture would look like a head before a still scene. Then the
    move does not count (None).
    """
    H = affine(ref_pts, pts)
    h, w = grey.shape[:2]
    x0, y0 = pts.min(0)
    x1, y1 = pts.max(0)
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) / 2
    fl, ft, fr, fb = int(max(0, x0)), int(max(0, y0)), int(min(w, x1)), int(min(h, y1))
    if fr - fl < 8 or fb - ft < 8:
        return None
    ((f_follows, f_stays),) = _votes(ref_grey, grey, H, (fl, ft, fr, fb), (True,), noise)
    if f_follows + f_stays < 50 or f_follows < FACE_FOLLOWS_MIN * (f_follows + f_stays):
        return None
    outer = BEYOND[1] * half
    l, t = int(max(0, cx - outer)), int(max(0, cy - outer))
    r, b = int(min(w, cx + outer)), int(min(h, cy + outer))
    yy, xx = np.mgrid[t:b, l:r]
    d = np.maximum(np.abs(xx - cx), np.abs(yy - cy)) / half
    (follows, stays), (b_follows, b_stays) = _votes(
        ref_grey, grey, H, (l, t, r, b), ((d > RING[0]) & (d <= RING[1]), d > BEYOND[0]), noise)
    if follows + stays < 50:
        return None
    beyond = b_follows / (b_follows + b_stays) if b_follows + b_stays >= 50 else None
    return Coherence(follows / (follows + stays), follows + stays, beyond)


def parallax_evidence(coherence: list[float], *, min_moves: int, full_moves: int, follow_min: float, static_max: float,
                      beyond: list[float | None] = ()) -> tuple[float, float | None, float | None]:
    """(evidence in [-1, 1], median share of "follows" votes in the ring or None, the same in the band beyond it
    or None): at or above follow_min a picture (-1), at or below static_max a head before a scene (+1), a ramp
    between; weighed by the number of moves (full weight from ``full_moves`` on: a hand-held print can look
    static for three).

    A picture only when the band beyond the ring follows too, or shows too little texture to say: where the
    scene beyond stays put (at or below static_max), what follows the face in the ring may be the person's own
    hair and body (someone walking up carries them along) as well as the edge of a small picture. Motion
    cannot tell those apart, so it gives no evidence of a picture then."""
    if len(coherence) < min_moves:
        return 0.0, None, None  # the face hardly moved: no evidence either way
    f = float(np.median(coherence))
    known = [b for b in beyond if b is not None]
    fb = float(np.median(known)) if len(known) >= min_moves else None
    e = float(np.clip(1 - 2 * (f - static_max) / (follow_min - static_max), -1, 1))
    if e < 0 and fb is not None and fb <= static_max:
        e = 0.0
    return e * min(1.0, len(coherence) / full_moves), f, fb
