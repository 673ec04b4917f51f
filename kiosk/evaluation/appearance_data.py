"""Per-frame appearance features of a clip set, for training and cross-validating the appearance model.

Each frame goes through the kiosk's own detector (``SceneDetector`` with the
given config, one per clip as in a visit), the 68-point landmarks and
:func:`kiosk.match.liveness.appearance.features`. Frames without a face are
skipped. Results are cached on disk (one ``.npz`` per set, keyed by the
feature version and the clips' files), since a set takes minutes to extract.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..capture.folder import decode_image
from ..config import KioskConfig
from ..match import models
from ..match.detect import SceneDetector, to_grey
from ..match.liveness.appearance import FEATURE_VERSION, N_FEATURES, features
from .livesets import GENUINE, LiveClip

log = logging.getLogger(__name__)

#: ``$XDG_CACHE_HOME/kiosk-data/liveness-features`` (``~/.cache`` when unset).
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kiosk-data" / "liveness-features"


@dataclass(frozen=True)
class FrameFeatures:
    """Rows are frames with a face: their features, the clip each came from, and its label (1 live)."""

    X: np.ndarray
    clip: np.ndarray  # index into ``clips``
    clips: list[LiveClip]

    @property
    def live(self) -> np.ndarray:
        return np.array([self.clips[i].label == GENUINE for i in self.clip], int)

    def subjects(self, prefix: str = "") -> np.ndarray:
        return np.array([prefix + self.clips[i].subject for i in self.clip])


def _fingerprint(clips: list[LiveClip], cfg: KioskConfig) -> str:
    h = hashlib.sha256(FEATURE_VERSION.encode())
    h.update(cfg.detect.model_dump_json().encode())
    for c in clips:
        for p, t in c.frames:
            h.update(f"{c.id}\0{p}\0{t:.4f}\0{p.stat().st_size}\n".encode())
    return h.hexdigest()[:20]


def frame_landmarks(clip: LiveClip, cfg: KioskConfig, shape) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """Per frame of ``clip``: (BGR image, 68 landmarks) of its largest face, or None."""
    det = SceneDetector(cfg.detect)
    out = []
    for path, _ in clip.frames:
        img = decode_image(path)
        if img is None:
            out.append(None)
            continue
        grey = to_grey(img)
        faces = det.detect(img, grey)
        if not faces:
            out.append(None)
            continue
        s = shape(grey, faces[0].box.to_dlib())
        out.append((img, np.array([(s.part(i).x, s.part(i).y) for i in range(68)], np.float64)))
    return out


def extract(clips: list[LiveClip], cfg: KioskConfig, *, cache: Path | None = DEFAULT_CACHE, name: str = "set",
            progress: bool = True) -> FrameFeatures:
    """Features of every frame with a face in ``clips`` (from the cache when it has them)."""
    path = None
    if cache is not None:
        path = Path(cache) / f"{name}-{FEATURE_VERSION}-{_fingerprint(clips, cfg)}.npz"
        if path.is_file():
            z = np.load(path, allow_pickle=False)
            return FrameFeatures(z["X"], z["clip"], clips)
    shape = models.load("landmarks68")
    X, idx = [], []
    shown = clips
    if progress:
        from tqdm import tqdm  # the admin extra

        shown = tqdm(clips, desc=f"features {name}", unit="clip", file=sys.stderr, disable=None)
    for i, c in enumerate(shown):
        for got in frame_landmarks(c, cfg, shape):
            if got is not None:
                X.append(features(*got))
                idx.append(i)
    out = FrameFeatures(np.array(X, np.float64).reshape(-1, N_FEATURES), np.array(idx, np.int64), clips)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, X=out.X, clip=out.clip)
        tmp.replace(path)
    return out
