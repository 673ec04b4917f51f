"""Parallax: does the face's surround move with the face (a picture) or stay put (a head before a scene)?"""

from __future__ import annotations

import math
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


def _votes(ref_grey: np.ndarray, grey: np.ndarray, H: np.ndarray, box: tuple[int, int, int, int], regions: np.ndarray | None,
           n_regions: int, noise: float) -> np.ndarray:
    """Votes of the textured pixels of each region over ``box`` (``regions``: each pixel's region number,
    -1 for none; None: one region, the whole box), as an array of (follow the map H, stay put) per region."""
    l, t, r, b = box
    cur = grey[t:b, l:r].astype(np.float32)
    # The reference frame warped by the face's motion, sampled on this crop.
    shift = np.array([[1, 0, l], [0, 1, t], [0, 0, 1]], np.float64)
    warped = cv2.warpPerspective(ref_grey, np.linalg.inv(shift) @ H, (r - l, b - t),
                                 flags=cv2.INTER_LINEAR | cv2.WARP_FILL_OUTLIERS).astype(np.float32)
    still = ref_grey[t:b, l:r].astype(np.float32)
    gx = cv2.Sobel(cur, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(cur, cv2.CV_32F, 0, 1, ksize=3)
    textured = cv2.magnitude(gx, gy) > 40  # motion is only visible where there is detail
    # > 0: the warped reference explains the pixel better than the still one ("follows"), < 0: worse.
    margin = cv2.subtract(cv2.absdiff(still, cur), cv2.absdiff(warped, cur))
    out = np.zeros((n_regions, 2), np.int64)
    for k, vote in enumerate((margin > noise, margin < -noise)):
        sel = vote & textured
        out[:, k] = (np.bincount(regions[sel].astype(np.intp) + 1, minlength=n_regions + 1)[1:] if regions is not None
                     else [np.count_nonzero(sel)])
    return out


class Coherence(NamedTuple):
    """One move's votes: the share of "follows the face" in the ring round the face, the number of votes,
    and the share in the band beyond it (None without enough texture there)."""

    share: float
    votes: int
    beyond: float | None = None


#: The ring round the face and the band beyond it, in half face sizes from the face's centre.
RING = (1.15, 2.0)
BEYOND = (2.0, 3.0)


def _square(c: float, radius: float, lo: int, hi: int) -> slice:
    """The pixels within ``radius`` of ``c`` on an axis, as a slice of the crop [lo, hi)."""
    a, z = max(lo, math.ceil(c - radius)), min(hi - 1, math.floor(c + radius))
    return slice(a - lo, max(a, z + 1) - lo)


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
    ((f_follows, f_stays),) = _votes(ref_grey, grey, H, (fl, ft, fr, fb), None, 1, noise).tolist()
    if f_follows + f_stays < 50 or f_follows < FACE_FOLLOWS_MIN * (f_follows + f_stays):
        return None
    outer = BEYOND[1] * half
    l, t = int(max(0, cx - outer)), int(max(0, cy - outer))
    r, b = int(min(w, cx + outer)), int(min(h, cy + outer))
    # The band beyond (1), the ring (0) and the face (-1): squares round the face's centre.
    regions = np.ones((b - t, r - l), np.int8)
    for k, value in ((RING[1], 0), (RING[0], -1)):
        regions[_square(cy, k * half, t, b), _square(cx, k * half, l, r)] = value
    (follows, stays), (b_follows, b_stays) = _votes(ref_grey, grey, H, (l, t, r, b), regions, 2, noise).tolist()
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
