"""Parallax: does the face's surround move with the face (a picture) or stay put (a head before a scene)?"""

from __future__ import annotations

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


def _votes(ref_grey: np.ndarray, grey: np.ndarray, H: np.ndarray, box: tuple[int, int, int, int], region, noise: float):
    """Votes of the textured pixels of ``region`` (a mask over ``box``): (follow the map H, stay put)."""
    l, t, r, b = box
    cur = grey[t:b, l:r].astype(np.float32)
    # The reference frame warped by the face's motion, sampled on this crop.
    shift = np.array([[1, 0, l], [0, 1, t], [0, 0, 1]], np.float64)
    warped = cv2.warpPerspective(ref_grey, np.linalg.inv(shift) @ H, (r - l, b - t),
                                 flags=cv2.INTER_LINEAR | cv2.WARP_FILL_OUTLIERS).astype(np.float32)
    still = ref_grey[t:b, l:r].astype(np.float32)
    gx = cv2.Sobel(cur, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(cur, cv2.CV_32F, 0, 1, ksize=3)
    textured = region & (np.hypot(gx, gy) > 40)  # motion is only visible where there is detail
    e_follow = np.abs(warped - cur)[textured]
    e_still = np.abs(still - cur)[textured]
    return int((e_follow + noise < e_still).sum()), int((e_still + noise < e_follow).sum())


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
    f_follows, f_stays = _votes(ref_grey, grey, H, (fl, ft, fr, fb), True, noise)
    if f_follows + f_stays < 50 or f_follows < FACE_FOLLOWS_MIN * (f_follows + f_stays):
        return None
    outer, inner = 2.0 * half, 1.15 * half
    l, t = int(max(0, cx - outer)), int(max(0, cy - outer))
    r, b = int(min(w, cx + outer)), int(min(h, cy + outer))
    yy, xx = np.mgrid[t:b, l:r]
    ring = np.maximum(np.abs(xx - cx), np.abs(yy - cy)) > inner
    follows, stays = _votes(ref_grey, grey, H, (l, t, r, b), ring, noise)
    if follows + stays < 50:
        return None
    return follows / (follows + stays), follows + stays


def parallax_evidence(coherence: list[float], *, min_moves: int, full_moves: int, follow_min: float, static_max: float) -> tuple[float, float | None]:
    """(evidence in [-1, 1], median share of "follows" votes or None): at or above follow_min a
    picture (-1), at or below static_max a head before a scene (+1), a ramp between; weighed
    by the number of moves (full weight from ``full_moves`` on: a hand-held print can look
    static for three)."""
    if len(coherence) < min_moves:
        return 0.0, None  # the face hardly moved: no evidence either way
    f = float(np.median(coherence))
    e = float(np.clip(1 - 2 * (f - static_max) / (follow_min - static_max), -1, 1))
    return e * min(1.0, len(coherence) / full_moves), f
