"""Appearance: does one frame of the face look like skin seen directly, or like a recaptured picture?

It needs no motion, so it works at any frame rate. Per face, from the 68
landmarks, three similarity-aligned crops are taken: the face (64×64), the
face at 128×128 (for its spatial spectrum) and its surround (2.5 times wider,
64×64, where paper edges, a phone's bezel and the hand holding it show).
Feature groups (names as :data:`GROUPS`):

- ``face-lbp``: uniform LBP(8,1) histograms of each channel of the face in
  YCrCb and HSV: the colour texture of recaptured faces differs (Boulkenafet,
  Komulainen and Hadid, ICIP 2015);
- ``surround-lbp``: the same on the surround, in grey;
- ``edges``: the surround's gradient orientations (straight paper and screen
  edges) and its edge energy;
- ``banding``: periodic row and column bands in the surround (a display's
  refresh under a rolling shutter, its pixel rows);
- ``spectrum``: the face's radial spatial spectrum, its peakiness (moiré) and
  its detail energy (print blur);
- ``colour``: the face's colour moments (a screen's and an ink's gamut) and
  its near-white share (specular glare on glossy paper and glass).

A linear model (logistic regression, trained by
``scripts/train-liveness-appearance``) turns the features into a log-odds of
"live" per frame. Inference is numpy and OpenCV only, about 3 ms per face.
The coefficients ship in ``appearance-model.json`` beside this module; the
file is pinned by its SHA-256 and checked when it is loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from ...errors import ModelUnavailable

log = logging.getLogger(__name__)

#: Changes whenever :func:`features` changes: a model trained on other features is refused.
FEATURE_VERSION = "appearance-v2"
MODEL_FILE = "appearance-model.json"
#: SHA-256 of the shipped model file. ``scripts/train-liveness-appearance`` prints the new
#: value; a file that does not match is refused (``ModelUnavailable``).
MODEL_SHA256 = "606e253125e0c9d637f48b8bd262c8ae811df2d4133ada082f1a87131305a42f"

SIDE = 64
_N_LBP = 59

#: Feature groups in the order :func:`features` lays them out: name → column slice.
GROUPS: dict[str, slice] = {}
_layout = [("face-lbp", 6 * _N_LBP), ("surround-lbp", _N_LBP), ("edges", 9), ("banding", 4), ("spectrum", 14), ("colour", 10)]
_at = 0
for _name, _n in _layout:
    GROUPS[_name] = slice(_at, _at + _n)
    _at += _n
N_FEATURES = _at
#: Columns that are histograms (their square roots go into the model: the Hellinger map).
HISTOGRAM_COLUMNS = np.r_[GROUPS["face-lbp"], GROUPS["surround-lbp"], GROUPS["edges"].start : GROUPS["edges"].stop - 1]


def _uniform_table() -> np.ndarray:
    """Uniform LBP code (at most two 0/1 transitions round the circle) → bin 0..57; others → 58."""
    table = np.full(256, 58, np.int64)
    k = 0
    for code in range(256):
        bits = [(code >> i) & 1 for i in range(8)]
        if sum(bits[i] != bits[(i + 1) % 8] for i in range(8)) <= 2:
            table[code] = k
            k += 1
    return table


_U2 = _uniform_table()
_NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))


def lbp_histogram(channel: np.ndarray) -> np.ndarray:
    """Uniform LBP(8,1) histogram of a 2-D array: 59 bins summing to 1."""
    c = channel[1:-1, 1:-1]
    h, w = channel.shape
    code = np.zeros(c.shape, np.int64)
    for bit, (dy, dx) in enumerate(_NEIGHBOURS):
        code |= (channel[1 + dy : h - 1 + dy, 1 + dx : w - 1 + dx] >= c).astype(np.int64) << bit
    hist = np.bincount(_U2[code].ravel(), minlength=_N_LBP).astype(np.float64)
    return hist / hist.sum()


def align(image: np.ndarray, pts: np.ndarray, side: int, zoom: float) -> np.ndarray:
    """The face, similarity-aligned by its eyes and mouth into ``side``×``side``; ``zoom`` > 1 shows more surround."""
    le, re = pts[36:42].mean(0), pts[42:48].mean(0)
    eyes, mouth = (le + re) / 2, pts[48:68].mean(0)
    # The larger of the eye distance and the eye-to-mouth distance sets the scale: a turned head keeps its size.
    span = max(float(np.hypot(*(re - le))), 0.9 * float(np.hypot(*(mouth - eyes))), 1.0)
    angle = np.degrees(np.arctan2(re[1] - le[1], re[0] - le[0]))
    centre = eyes + (mouth - eyes) * 0.45
    s = side / (2.6 * span * zoom)
    M = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), float(angle), s)
    M[:, 2] += np.array([side / 2, side / 2]) - centre
    return cv2.warpAffine(image, M, (side, side), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _edges(grey: np.ndarray) -> np.ndarray:
    g = grey.astype(np.float32)
    gx, gy = cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1)
    mag = np.hypot(gx, gy)
    ang = (np.arctan2(gy, gx) % np.pi) / np.pi * 8
    hist = np.bincount(np.minimum(ang.astype(int), 7).ravel(), mag.ravel(), 8)
    return np.r_[hist / (hist.sum() + 1e-9), np.log(mag.mean() + 1)]


def _banding(grey: np.ndarray) -> np.ndarray:
    g = grey.astype(np.float32)
    hp = g - cv2.GaussianBlur(g, (0, 0), 4.0)
    out = []
    for profile in (hp.mean(1), hp.mean(0)):  # row means (horizontal bands), column means
        spec = np.abs(np.fft.rfft(profile * np.hanning(len(profile))))[3:]
        out += [np.log(spec.max() / (spec.mean() + 1e-6) + 1e-6), np.log(np.abs(profile).mean() + 1e-3)]
    return np.array(out)


def _spectrum(grey: np.ndarray, bins: int = 12) -> np.ndarray:
    g = grey.astype(np.float32)
    hp = g - cv2.GaussianBlur(g, (0, 0), 3.0)
    n = g.shape[0]
    mag = np.abs(np.fft.fftshift(np.fft.fft2(hp * np.outer(np.hanning(n), np.hanning(n))))) ** 2
    yy, xx = np.mgrid[-n // 2 : n // 2, -n // 2 : n // 2]
    r = np.hypot(xx, yy)
    edges = np.geomspace(2, n / 2, bins + 1)
    e = np.array([mag[(r >= a) & (r < b)].sum() for a, b in zip(edges[:-1], edges[1:])])
    band = mag[r >= 4]
    peaks = np.sort(band)[-8:].sum() / (band.sum() + 1e-9) * band.size / 8
    return np.r_[np.log(e / (e.sum() + 1e-9) + 1e-6), np.log(peaks + 1e-9), np.log(e.sum() / n / n + 1e-6)]


def _colour(ycc: np.ndarray, hsv: np.ndarray) -> np.ndarray:
    f = ycc.reshape(-1, 3).astype(np.float32)
    s = hsv[..., 1].astype(np.float32).ravel()
    v = hsv[..., 2].astype(np.float32).ravel()
    return np.r_[f.mean(0) / 255, f.std(0) / 64, s.mean() / 255, s.std() / 64, (v > 240).mean(), np.percentile(v, 99) / 255]


def features(image: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """The appearance features of one face: a vector of :data:`N_FEATURES` (BGR frame, 68 landmarks)."""
    pts = np.asarray(pts, np.float64)
    face = align(image, pts, SIDE, 1.0)
    ycc = cv2.cvtColor(face, cv2.COLOR_BGR2YCrCb)
    hsv = cv2.cvtColor(face, cv2.COLOR_BGR2HSV)
    surround = cv2.cvtColor(align(image, pts, SIDE, 2.5), cv2.COLOR_BGR2GRAY)
    wide = cv2.cvtColor(align(image, pts, 128, 2.0), cv2.COLOR_BGR2GRAY)
    fine = cv2.cvtColor(align(image, pts, 128, 1.0), cv2.COLOR_BGR2GRAY)
    parts = [lbp_histogram(ycc[..., i]) for i in range(3)] + [lbp_histogram(hsv[..., i]) for i in range(3)]
    parts += [lbp_histogram(surround), _edges(surround), _banding(wide), _spectrum(fine), _colour(ycc, hsv)]
    out = np.concatenate(parts)
    assert out.size == N_FEATURES
    return out


def model_inputs(x: np.ndarray) -> np.ndarray:
    """What the linear model sees: histogram columns square-rooted (rows are faces)."""
    x = np.array(x, np.float64, ndmin=2)
    x[:, HISTOGRAM_COLUMNS] = np.sqrt(np.maximum(x[:, HISTOGRAM_COLUMNS], 0))
    return x


@dataclass(frozen=True)
class AppearanceModel:
    """A standardised linear model over :func:`model_inputs`: ``logit = ((x - mean) / scale) · coef + intercept``."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    sha256: str
    info: dict

    @classmethod
    def load(cls, path: Path | None = None, *, sha256: str | None = MODEL_SHA256) -> "AppearanceModel":
        """The shipped model (or ``path``), refused unless its SHA-256 is ``sha256`` (None: not checked)."""
        try:
            raw = Path(path).read_bytes() if path else resources.files(__package__).joinpath(MODEL_FILE).read_bytes()
        except OSError as e:
            raise ModelUnavailable(f"{path or MODEL_FILE}: cannot read the appearance model: {e}") from e
        digest = hashlib.sha256(raw).hexdigest()
        if sha256 is not None and digest != sha256:
            raise ModelUnavailable(f"{path or MODEL_FILE}: SHA-256 {digest} is not the pinned {sha256}")
        try:
            d = json.loads(raw)
            if d["features"] != FEATURE_VERSION:
                raise ValueError(f"trained on features {d['features']!r}, this code makes {FEATURE_VERSION!r}")
            arrays = [np.asarray(d[k], np.float64) for k in ("mean", "scale", "coef")]
            if any(a.shape != (N_FEATURES,) for a in arrays) or not np.all(arrays[1] > 0):
                raise ValueError(f"expected {N_FEATURES} coefficients with positive scales")
            return cls(*arrays, float(d["intercept"]), digest, dict(d.get("trained", {})))
        except (ValueError, KeyError, TypeError) as e:
            raise ModelUnavailable(f"{path or MODEL_FILE}: not an appearance model: {e}") from e

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Log-odds of "live" for feature rows (as :func:`features` makes them)."""
        return ((model_inputs(x) - self.mean) / self.scale) @ self.coef + self.intercept

    def logit(self, image: np.ndarray, pts: np.ndarray) -> float:
        """Log-odds of "live" for one face."""
        return float(self.logits(features(image, pts))[0])


def appearance_evidence(logits: list[float], offset: float, scale: float) -> tuple[float, float | None]:
    """(evidence in [-1, 1], the visit's mean log-odds or None): 0 at ``offset``, full at ``offset ± scale``."""
    if not logits:
        return 0.0, None
    m = float(np.mean(logits))
    return float(np.clip((m - offset) / scale, -1, 1)), m
