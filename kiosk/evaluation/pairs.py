"""Verification accuracy on labelled photos: genuine and impostor distances, TAR/FAR, ROC.

Pairs of byte-identical files are never formed: they would count a photo as
matching itself.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..capture.formats import IMAGE_SUFFIXES
from ..config import DetectSettings
from ..errors import EnrollmentRefused
from ..match.detect import FaceDetector
from ..match.embed import Embedder
from ..match.enroll import read_image

log = logging.getLogger(__name__)

FAR_TARGETS = (0.01, 0.001, 0.0001)


@dataclass
class Sample:
    path: Path
    identity: str
    sha256: str
    vector: np.ndarray | None = None


def labelled_images(root: Path, groups_csv: Path | None = None) -> list[Sample]:
    """Images with identities: ``root/<identity>/*`` or a flat folder plus a CSV (image, identity)."""
    out = []
    if groups_csv:
        with open(groups_csv, newline="") as f:
            for row in csv.reader(f):
                if len(row) < 2 or row[0].lower() in ("image", "file"):
                    continue
                p = root / row[0]
                out.append(Sample(p, row[1], _sha(p)))
    else:
        for d in sorted(x for x in root.iterdir() if x.is_dir()):
            for p in sorted(d.rglob("*")):
                if p.suffix.lower() in IMAGE_SUFFIXES:
                    out.append(Sample(p, d.name, _sha(p)))
    return out


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


#: Which face of a photo with several is described: the largest, or the one nearest the centre
#: (the labelled person of a centred set such as LFW, where a larger face may stand beside them).
FACE_CHOICES = ("largest", "central")


class Describer:
    """Descriptor of the largest (or most central) face of a photo; tight crops get a border and more upsampling."""

    def __init__(self, settings: DetectSettings, jitter: int = 0, face: str = "largest"):
        if face not in FACE_CHOICES:
            raise ValueError(f"face must be one of {FACE_CHOICES}")
        self.detect1 = FaceDetector(settings, scale=1.0, upsample=1)
        self.detect2 = FaceDetector(settings, scale=1.0, upsample=2)
        self.embedder = Embedder(settings, jitter=jitter)
        self.face = face
        self.jitter = jitter
        self.landmarks = settings.landmarks

    def describe(self, image: np.ndarray) -> np.ndarray | None:
        h, w = image.shape[:2]
        k = min(1.0, 1200 / max(h, w))
        if k < 1.0:
            image = cv2.resize(image, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)
        faces = self.detect1.detect(image)
        if not faces:
            # Tight crops (e.g. ORL) leave the detector no context: add a border.
            pad = max(h, w) // 3
            image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            faces = self.detect2.detect(image)
        if not faces:
            return None
        face = faces[0]
        if self.face == "central":
            ih, iw = image.shape[:2]
            face = min(faces, key=lambda f: ((f.box.left + f.box.right - iw) ** 2 + (f.box.top + f.box.bottom - ih) ** 2))
        return self.embedder.embed(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), face)


@dataclass
class Evaluation:
    genuine: np.ndarray
    impostor: np.ndarray
    images: int
    identities: int
    no_face: list[str] = field(default_factory=list)
    identical_pairs_skipped: int = 0

    def rates(self, threshold: float) -> tuple[float, float]:
        """(TAR, FAR) at ``threshold`` (accept when distance <= threshold)."""
        tar = float(np.mean(self.genuine <= threshold)) if len(self.genuine) else float("nan")
        far = float(np.mean(self.impostor <= threshold)) if len(self.impostor) else float("nan")
        return tar, far

    def threshold_at_far(self, far: float) -> float:
        """Largest threshold whose FAR does not exceed ``far``."""
        imp = np.sort(self.impostor)
        k = int(np.floor(far * len(imp)))
        if k >= len(imp):
            return float(imp[-1])
        return float(np.nextafter(imp[k], -np.inf))

    def summary(self, threshold: float, baseline: float = 0.6) -> dict:
        tar, far = self.rates(threshold)
        btar, bfar = self.rates(baseline)
        at = []
        for target in FAR_TARGETS:
            t = self.threshold_at_far(target)
            ttar, tfar = self.rates(t)
            at.append({"far_target": target, "threshold": round(t, 4), "tar": round(ttar, 4), "far": tfar,
                       "resolvable": len(self.impostor) * target >= 1})
        return {
            "images": self.images,
            "identities": self.identities,
            "no_face": len(self.no_face),
            "genuine_pairs": int(len(self.genuine)),
            "impostor_pairs": int(len(self.impostor)),
            "identical_pairs_skipped": self.identical_pairs_skipped,
            "genuine_distance": _dist_stats(self.genuine),
            "impostor_distance": _dist_stats(self.impostor),
            "threshold": threshold,
            "tar": round(tar, 4),
            "far": far,
            "baseline_threshold": baseline,
            "baseline_tar": round(btar, 4),
            "baseline_far": bfar,
            "at_far": at,
        }


def _dist_stats(d: np.ndarray) -> dict:
    if not len(d):
        return {}
    q = np.percentile(d, [1, 5, 50, 95, 99])
    return {"min": round(float(d.min()), 4), "p1": round(float(q[0]), 4), "p5": round(float(q[1]), 4),
            "median": round(float(q[2]), 4), "p95": round(float(q[3]), 4), "p99": round(float(q[4]), 4),
            "max": round(float(d.max()), 4)}


def pair_distances(samples: list[Sample]) -> Evaluation:
    """All genuine and impostor pairs of samples that have a descriptor."""
    usable = [s for s in samples if s.vector is not None]
    no_face = [str(s.path) for s in samples if s.vector is None]
    if not usable:
        return Evaluation(np.zeros(0), np.zeros(0), len(samples), 0, no_face)
    V = np.vstack([s.vector for s in usable]).astype(np.float64)
    ids = np.array([s.identity for s in usable])
    shas = np.array([s.sha256 for s in usable])
    sq = (V * V).sum(1)
    D = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * V @ V.T, 0))
    iu = np.triu_indices(len(usable), k=1)
    same_file = shas[iu[0]] == shas[iu[1]]
    same_id = ids[iu[0]] == ids[iu[1]]
    d = D[iu]
    return Evaluation(
        genuine=d[same_id & ~same_file],
        impostor=d[~same_id & ~same_file],
        images=len(samples),
        identities=len(set(ids)),
        no_face=no_face,
        identical_pairs_skipped=int(same_file.sum()),
    )


def visit_distances(samples: list[Sample], k: int) -> Evaluation:
    """Pairs as a visit sees them: the mean of ``k`` photos of one person against one photo of a resident.

    For each identity with more than ``k`` usable photos, each photo in turn
    is the enrolled template and the ``k`` photos after it (in order, wrapping
    round) are the visit; the visit's mean descriptor is a genuine pair with
    that template and an impostor pair with every photo of every other
    identity. Byte-identical copies are dropped first.
    """
    seen, usable = set(), []
    for s in samples:
        if s.vector is not None and s.sha256 not in seen:
            seen.add(s.sha256)
            usable.append(s)
    if not usable:
        return Evaluation(np.zeros(0), np.zeros(0), len(samples), 0)
    V = np.vstack([s.vector for s in usable]).astype(np.float64)
    ids = np.array([s.identity for s in usable])
    genuine, impostor = [], []
    for ident in sorted(set(ids)):
        mine = np.flatnonzero(ids == ident)
        if len(mine) <= k:
            continue
        others = V[ids != ident]
        for j, t in enumerate(mine):
            probe = [mine[(j + 1 + i) % len(mine)] for i in range(k)]
            mean = V[probe].mean(0)
            genuine.append(np.linalg.norm(mean - V[t]))
            impostor.append(np.linalg.norm(others - mean, axis=1))
    return Evaluation(
        genuine=np.asarray(genuine),
        impostor=np.concatenate(impostor) if impostor else np.zeros(0),
        images=len(samples),
        identities=len(set(ids)),
    )


def describe_all(samples: list[Sample], describer: Describer, progress=None) -> None:
    for s in samples:
        try:
            s.vector = describer.describe(read_image(s.path))
        except EnrollmentRefused as e:
            log.warning("%s", e)
        if s.vector is None:
            log.info("no face in %s", s.path)
        if progress is not None:
            progress.update(1)


def plot_roc(ev: Evaluation, threshold: float, path: Path, title: str, baseline: float = 0.6) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts = np.unique(np.concatenate([ev.genuine, ev.impostor]))
    far = np.searchsorted(np.sort(ev.impostor), ts, side="right") / max(1, len(ev.impostor))
    tar = np.searchsorted(np.sort(ev.genuine), ts, side="right") / max(1, len(ev.genuine))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    floor = 0.5 / max(1, len(ev.impostor))
    ax1.plot(np.maximum(far, floor), tar, lw=1.5)
    for t, style, label in ((threshold, "o", f"kiosk threshold {threshold:g}"), (baseline, "s", f"face_recognition {baseline:g}")):
        tr, fr = ev.rates(t)
        ax1.plot(max(fr, floor), tr, style, label=f"{label}: TAR {tr:.3f}, FAR {fr:.4%}")
    ax1.set_xscale("log")
    ax1.set_xlabel("false accept rate (impostor pairs)")
    ax1.set_ylabel("true accept rate (genuine pairs)")
    ax1.set_title(f"ROC — {title}")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(loc="lower right", fontsize=8)
    bins = np.linspace(0, max(1.2, float(max(ev.genuine.max(initial=0), ev.impostor.max(initial=0)))), 80)
    ax2.hist(ev.genuine, bins=bins, alpha=0.6, density=True, label=f"genuine ({len(ev.genuine)})")
    ax2.hist(ev.impostor, bins=bins, alpha=0.6, density=True, label=f"impostor ({len(ev.impostor)})")
    ax2.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax2.axvline(baseline, color="r", ls=":", lw=1, label=f"{baseline:g} baseline")
    ax2.set_xlabel("descriptor distance")
    ax2.set_title("distance distributions")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
