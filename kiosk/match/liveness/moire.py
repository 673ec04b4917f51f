"""Moiré: a screen re-sampled by a camera leaves periodic ripples and colour fringes on the face; skin does not."""

from __future__ import annotations

import cv2
import numpy as np

PATCH = 64  # side of the cheek-and-nose patch the texture cue looks at


def moire_score(bgr: np.ndarray, pts: np.ndarray) -> float | None:
    """Share of the face patch's detail energy in sharp periodic peaks, with a colour-fringe term.

    The patch is taken at full camera resolution (no resampling, which would
    alias or smooth away the ripples) between the eyes and the mouth.
    """
    h, w = bgr.shape[:2]
    cx, cy = pts[27:36].mean(0)  # nose bridge and tip
    x0, y0 = int(round(cx - PATCH / 2)), int(round(cy - PATCH / 2))
    if x0 < 0 or y0 < 0 or x0 + PATCH > w or y0 + PATCH > h:
        return None
    patch = bgr[y0 : y0 + PATCH, x0 : x0 + PATCH].astype(np.float32)
    grey = patch.mean(2)
    hp = grey - cv2.GaussianBlur(grey, (0, 0), 2.0)  # keep detail, drop shading
    win = np.outer(np.hanning(PATCH), np.hanning(PATCH))
    mag = np.abs(np.fft.fftshift(np.fft.fft2(hp * win)))
    yy, xx = np.mgrid[-PATCH // 2 : PATCH // 2, -PATCH // 2 : PATCH // 2]
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


def moire_evidence(scores: list[float], threshold: float, ramp: float) -> tuple[float, float | None]:
    """(evidence in [-1, 0], the visit's median measure or None): evidence of a screen ramps from
    ``threshold - ramp`` to full at ``threshold``."""
    if not scores:
        return 0.0, None
    m = float(np.median(scores))
    e = -float(np.clip((m - threshold) / ramp + 1, 0, 1)) if m > threshold - ramp else 0.0
    return e, m
