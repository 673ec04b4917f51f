"""FPIR and FNIR by the probe's quality: face size, sharpness and pose (issue 20).

Each photo's face is found as the describer finds it (:class:`~kiosk.evaluation.pairs.Describer`: the same
detector passes and the face nearest the centre) and measured with the detector's own measures
(:class:`~kiosk.match.detect.Face`: box width in pixels, sharpness) and a pose measure from dlib's 5
landmarks: ``yaw``, the nose tip's sideways offset from the eyes' midpoint over the distance between the eyes
(0 frontal; about 0.3 at a quarter turn). The measures are cached by photo content in a JSON file.

A visit is as good as its worst photo: its width and sharpness are its photos' smallest, its yaw the largest.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..match.decide import OperatingPoint
from .openset import Trials
from .rates import single_decisions, visit_decisions

#: Bin edges (lower ends) of each measure; the kiosk's gates are at 80 px and sharpness 25.
BINS = {
    "width": (0, 60, 80, 100, 130),
    "sharpness": (0, 25, 50, 100, 200),
    "yaw": (0, 0.1, 0.2, 0.35),
}


@dataclass(frozen=True)
class Quality:
    width: float
    sharpness: float
    yaw: float


def measure(samples, settings, cache_file: Path | None = None, progress: bool = True) -> dict[str, Quality]:
    """The quality of each sample's described face, by photo SHA-256 (photos with no face are left out)."""
    import cv2
    from tqdm import tqdm

    from ..match import models
    from ..match.enroll import read_image
    from .pairs import Describer

    known = {}
    if cache_file is not None and cache_file.is_file():
        known = {k: Quality(*v) for k, v in json.loads(cache_file.read_text()).items()}
    todo = {s.sha256: s for s in samples if s.sha256 not in known and s.vector is not None}
    if todo:
        finder = Describer(settings, face="central")
        shape = models.load("landmarks5")
        for sha, s in tqdm(todo.items(), desc="quality", unit="photo", disable=not progress or None):
            image = read_image(s.path)
            face, image = _face(finder, image)
            if face is None:
                continue
            grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
            p = shape(grey, face.box.to_dlib())
            pts = np.array([(p.part(i).x, p.part(i).y) for i in range(5)], float)
            right, left, nose = pts[0:2].mean(axis=0), pts[2:4].mean(axis=0), pts[4]
            eyes = np.linalg.norm(left - right)
            # The nose's offset along the line between the eyes, from their midpoint.
            yaw = abs(float(np.dot(nose - (left + right) / 2, (left - right) / eyes) / eyes)) if eyes > 0 else math.nan
            known[sha] = Quality(float(face.box.width), round(face.sharpness, 1), round(yaw, 3))
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            cache_file.write_text(json.dumps({k: [q.width, q.sharpness, q.yaw] for k, q in known.items()}))
    return known


def _face(finder, image):
    """The face the describer describes, and the image it found it in (as ``Describer.describe``)."""
    import cv2

    h, w = image.shape[:2]
    k = min(1.0, 1200 / max(h, w))
    if k < 1.0:
        image = cv2.resize(image, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)
    faces = finder.detect1.detect(image)
    if not faces:
        pad = max(h, w) // 3
        image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        faces = finder.detect2.detect(image)
    if not faces:
        return None, image
    ih, iw = image.shape[:2]
    face = min(faces, key=lambda f: ((f.box.left + f.box.right - iw) ** 2 + (f.box.top + f.box.bottom - ih) ** 2))
    return face, image


def arrays(photos, quality: dict[str, Quality]) -> dict[str, np.ndarray]:
    """Each measure as an array indexed like ``Trials.s_photo`` (``photos``: :func:`~kiosk.evaluation.openset.photos_of`)."""
    rows = [quality.get(p.sha256, Quality(math.nan, math.nan, math.nan)) for p in photos]
    return {k: np.array([getattr(q, k) for q in rows], float) for k in ("width", "sharpness", "yaw")}


def per_visit(measures: dict[str, np.ndarray], votes_photo: np.ndarray) -> dict[str, np.ndarray]:
    """A visit's quality: its worst photo's (smallest width and sharpness, largest yaw)."""
    return {k: (v[votes_photo].max(axis=1) if k == "yaw" else v[votes_photo].min(axis=1)) for k, v in measures.items()}


def binned(point: OperatingPoint, t: Trials, measures: dict[str, np.ndarray], votes_k: int) -> dict[str, list[dict]]:
    """FPIR and FNIR (single photos and visits) in each bin of each measure."""
    s_dec, v_dec = single_decisions(point, t), visit_decisions(point, t, votes_k)
    s_q = {k: v[t.s_photo] for k, v in measures.items()}
    v_q = per_visit(measures, t.votes_photo)
    out = {}
    for name, edges in BINS.items():
        rows = []
        for lo, hi in zip(edges, edges[1:] + (math.inf,)):
            row = {"from": lo, "to": hi}
            for kind, dec, truth, q in (("single", s_dec, t.s_truth, s_q[name]), ("visit", v_dec, t.v_truth, v_q[name])):
                inside = (q >= lo) & (q < hi)
                row[kind] = _rates(dec[inside], truth[inside])
            rows.append(row)
        out[name] = rows
    return out


def _rates(dec: np.ndarray, truth: np.ndarray) -> dict:
    nm, m = truth < 0, truth >= 0
    fa = int((dec[nm] >= 0).sum())
    miss = int((dec[m] != truth[m]).sum())
    wrong = int(((dec[m] >= 0) & (dec[m] != truth[m])).sum())
    return {"non_mated": int(nm.sum()), "false_accepts": fa, "mated": int(m.sum()), "misses": miss, "wrong": wrong}


def gated(point: OperatingPoint, t: Trials, measures: dict[str, np.ndarray], votes_k: int, min_width: float,
          min_sharpness: float) -> dict:
    """Visit FPIR and FNIR when visits with a photo under the gates are refused (a refused resident is a miss)."""
    v_q = per_visit(measures, t.votes_photo)
    ok = (v_q["width"] >= min_width) & (v_q["sharpness"] >= min_sharpness)
    dec = np.where(ok, visit_decisions(point, t, votes_k), -1)
    r = _rates(dec, t.v_truth)
    r["refused"] = int((~ok).sum())
    r["visits"] = len(ok)
    return r


def degrade(src: Path, out: Path, *, scale: float, restore: bool, people: int = 120, photos: int = 6) -> int:
    """A synthetic stress population from a development half: its first ``people`` with ``photos`` photos or
    more, their first ``photos`` photos downscaled by ``scale`` (``restore``: scaled back up, so the face keeps
    its size and loses its detail: soft). Returns how many photos it wrote."""
    import cv2

    from .pairs import IMAGE_SUFFIXES

    written = 0
    dirs = [d for d in sorted(src.iterdir()) if d.is_dir()]
    for d in dirs:
        mine = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(mine) < photos:
            continue
        (out / d.name).mkdir(parents=True, exist_ok=True)
        for p in mine[:photos]:
            if scale == 1.0:  # the control: the photos as they are
                (out / d.name / p.name).unlink(missing_ok=True)
                (out / d.name / p.name).symlink_to(p.resolve())
                written += 1
                continue
            image = cv2.imread(str(p))
            h, w = image.shape[:2]
            small = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
            if restore:
                small = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
            cv2.imwrite(str(out / d.name / (p.stem + ".png")), small)
            written += 1
        people -= 1
        if people == 0:
            break
    return written


def main(argv=None) -> int:
    """``python -m kiosk.evaluation.quality DIR,DIR,... [--calibration FILE]``: the tables of docs/recognition.md."""
    import argparse
    import sys

    from ..config import load_config
    from ..extra import need
    from ..match.calibration import Calibration, operating_point
    from .descriptors import DescriptorCache, default_cache_path, describe_samples
    from .multiset import _trials
    from .openset import Protocol, photos_of
    from .pairs import Describer, labelled_images

    ap = argparse.ArgumentParser(prog="python -m kiosk.evaluation.quality", description=__doc__.split("\n\n")[0])
    ap.add_argument("directories", nargs="?", help="development halves, comma-separated")
    ap.add_argument("--calibration", type=Path, help="calibration to judge (default: the one the kiosk ships)")
    ap.add_argument("--seeds", default="3,4")
    ap.add_argument("--sizes", default="100,0", help="gallery sizes (0: everyone); each set at those it can form")
    ap.add_argument("--json", type=Path, help="also write the whole report here")
    ap.add_argument("--degrade", nargs=2, type=Path, metavar=("SRC", "OUT"),
                    help="only write two synthetic stress sets from the development half SRC: OUT-small (faces at "
                         "0.45 of their size) and OUT-soft (the same, scaled back up: their size, their detail lost), "
                         "and OUT-control (the same people's photos as they are)")
    args = ap.parse_args(argv)
    if args.degrade:
        src, out = args.degrade
        for suffix, scale, restore in (("-control", 1.0, False), ("-small", 0.45, False), ("-soft", 0.45, True)):
            n = degrade(src, out.with_name(out.name + suffix), scale=scale, restore=restore)
            print(f"{out.name + suffix}: {n} photos ({'the same people, as they are' if scale == 1 else 'synthetic: degraded'})")
        return 0
    if not args.directories:
        ap.error("DIR,DIR,... is needed (or --degrade SRC OUT)")
    need("the quality study", "tqdm")
    cfg = load_config(None)
    cal = Calibration.from_json(json.loads(args.calibration.read_text()), str(args.calibration)) if args.calibration else None
    seeds = [int(x) for x in args.seeds.split(",")]
    protocol = Protocol(enroll_photos=3, visit_photos=2, sizes=tuple(int(x) for x in args.sizes.split(",")),
                        mean_template=True, seed=seeds[0])
    cache = DescriptorCache(default_cache_path())
    report = {}
    for directory in args.directories.split(","):
        root = Path(directory)
        samples = labelled_images(root)
        describe_samples(samples, Describer(cfg.detect, face="central"), cache, desc=root.name)
        q = measure(samples, cfg.detect, default_cache_path().with_name("quality.json"))
        measures = arrays(photos_of(samples, protocol.max_photos), q)
        trials = _trials(samples, protocol, seeds)
        report[root.name] = {}
        for size, t in trials.items():
            n = int(np.median(t.residents))
            if size and n != size:
                continue
            point = operating_point(cfg.match, n, cal)
            gates = {f"{w}px/{s}": gated(point, t, measures, cfg.match.votes_k, w, s)
                     for w, s in ((0, 0), (cfg.detect.min_face_px, cfg.detect.min_sharpness), (100, 25), (80, 50), (100, 50))}
            report[root.name][n] = {"bins": binned(point, t, measures, cfg.match.votes_k), "gates": gates,
                                    "photos": {k: np.nanpercentile(v, [5, 50, 95]).round(2).tolist() for k, v in measures.items()}}
    cache.close()
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=float) + "\n")
    _print(report, sys.stdout)
    return 0


def _pct(k: int, n: int) -> str:
    return f"{k / n:.2%} ({k}/{n})" if n else "-"


def _print(report: dict, file) -> None:
    for name, by_n in report.items():
        for n, r in by_n.items():
            print(f"\n{name}, {n} residents; photos 5/50/95th percentile: "
                  + ", ".join(f"{k} {v}" for k, v in r["photos"].items()), file=file)
            print(f"  {'measure':<10} {'bin':<12} {'FPIR visit':>20} {'FNIR visit':>20} {'FPIR single':>22} {'FNIR single':>20}", file=file)
            for measure_name, rows in r["bins"].items():
                for b in rows:
                    v, s = b["visit"], b["single"]
                    print(f"  {measure_name:<10} {b['from']:>5}-{b['to']:<6} {_pct(v['false_accepts'], v['non_mated']):>20} "
                          f"{_pct(v['misses'], v['mated']):>20} {_pct(s['false_accepts'], s['non_mated']):>22} "
                          f"{_pct(s['misses'], s['mated']):>20}", file=file)
            for gate, g in r["gates"].items():
                print(f"  gate {gate:<10} refused {_pct(g['refused'], g['visits']):>20}  FPIR visit "
                      f"{_pct(g['false_accepts'], g['non_mated'])}  FNIR visit {_pct(g['misses'], g['mated'])}", file=file)


if __name__ == "__main__":
    import sys

    sys.exit(main())
