"""Reading QR codes (installer provisioning) from camera frames with zbar."""

from __future__ import annotations

import cv2
import numpy as np
from pyzbar.pyzbar import ZBarSymbol
from pyzbar.pyzbar import decode as zbar_decode


def _grey(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise ValueError(f"image has unsupported sample type {a.dtype}")
    if a.ndim == 2:
        return a
    if a.ndim == 3 and a.shape[2] == 3:
        return cv2.cvtColor(a, cv2.COLOR_BGR2GRAY)
    if a.ndim == 3 and a.shape[2] == 4:
        return cv2.cvtColor(a, cv2.COLOR_BGRA2GRAY)
    raise ValueError(f"image has unsupported shape {a.shape}")


def _stretched(grey: np.ndarray) -> np.ndarray:
    """Contrast stretched to the full range, then lightly sharpened (unsharp mask)."""
    lo, hi = np.percentile(grey[::4, ::4], (1, 99))  # a sample is plenty for two percentiles
    if hi - lo < 1:
        return grey
    stretched = cv2.convertScaleAbs(grey, alpha=255.0 / (hi - lo), beta=-lo * 255.0 / (hi - lo))
    blurred = cv2.GaussianBlur(stretched, (0, 0), 1.5)
    return cv2.addWeighted(stretched, 1.6, blurred, -0.6, 0)


def _binarised(grey: np.ndarray) -> np.ndarray:
    """Doubled, locally equalised and thresholded: a small, soft or badly lit code."""
    big = cv2.resize(grey, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    big = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(8, 8)).apply(big)
    return cv2.adaptiveThreshold(big, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY, 31, 5)


def _as_is(grey: np.ndarray) -> np.ndarray:
    return grey


def decode_qr(image: np.ndarray, *, thorough: bool = True) -> list[bytes]:
    """The payloads of the QR codes in a frame (BGR, BGRA or grey), in the order zbar finds them.

    A grey copy is tried first; if nothing is found, a contrast-stretched and
    sharpened copy; then, if ``thorough``, a doubled, equalised and
    thresholded one (finds codes of ~2 px per module; costs about four times
    the first pass). zbar hands back text payloads as UTF-8, so provisioning
    codes should carry ASCII (such as a compact JWS), not raw binary.
    """
    grey = _grey(image)
    passes = (_as_is, _stretched, _binarised) if thorough else (_as_is, _stretched)
    for variant in passes:
        found = zbar_decode(variant(grey), symbols=[ZBarSymbol.QRCODE])
        if found:
            payloads: list[bytes] = []
            for symbol in found:
                if symbol.data not in payloads:
                    payloads.append(symbol.data)
            return payloads
    return []
