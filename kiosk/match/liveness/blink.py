"""Blink: the eye aspect ratio dips and comes back while the face holds still.

A picture does not blink; but while a face moves fast its landmarks jitter
and lag enough to fake a one-frame dip, so dips then do not count.
"""

from __future__ import annotations

import numpy as np

LEFT_EYE = slice(36, 42)
RIGHT_EYE = slice(42, 48)
NOT_EYES = np.r_[0:36, 48:68]  # jaw, brows, nose, mouth: how the face itself moves


def eye_aspect_ratio(pts: np.ndarray) -> float:
    """Mean EAR of both eyes (Soukupová and Čech, 2016): eye height over width."""

    def one(e: np.ndarray) -> float:
        w = np.linalg.norm(e[0] - e[3])
        return float((np.linalg.norm(e[1] - e[5]) + np.linalg.norm(e[2] - e[4])) / (2 * w)) if w > 0 else 0.0

    return (one(pts[LEFT_EYE]) + one(pts[RIGHT_EYE])) / 2


def interocular(pts: np.ndarray) -> float:
    return float(np.linalg.norm(pts[LEFT_EYE].mean(0) - pts[RIGHT_EYE].mean(0)))


def rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((a - b) ** 2).sum(1).mean()))


def face_speed(points: list[np.ndarray]) -> np.ndarray:
    """Per frame, how far the face moved between its neighbouring frames (RMS of the
    landmarks other than the eyes, in interocular distances)."""
    n = len(points)
    out = np.zeros(n)
    for i in range(n):
        a, b = points[max(0, i - 1)], points[min(n - 1, i + 1)]
        out[i] = rms(a[NOT_EYES], b[NOT_EYES]) / (interocular(points[i]) or 1.0)
    return out


def blink_evidence(ears: list[float], points: list[np.ndarray], drop: float, steady: float) -> tuple[float, float]:
    """(evidence 1 or 0, deepest dip): the deepest dip below the visit's usual eye opening on a
    steady face counts if the eyes were open before it and opened again after it."""
    e = np.asarray(ears)
    usual = float(np.median(e))
    still = face_speed(points) <= steady
    low = int(np.argmin(np.where(still, e, np.inf))) if still.any() else int(np.argmax(e))
    dip = (usual - e[low]) / usual if usual > 0 else 0.0
    reopened = e[low:].max() >= usual * (1 - drop / 2) and e[: low + 1].max() >= usual * (1 - drop / 2)
    return (1.0 if dip >= drop and reopened else 0.0), float(dip)
