"""``kiosk-admin evaluate``: how well the kiosk tells people apart on labelled photos."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ..evaluation.pairs import Describer, describe_all, labelled_images, pair_distances, plot_roc, visit_distances
from .common import config_of
from .extra import need, tqdm


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="genuine/impostor distances, TAR and FAR on a folder of labelled photos",
        description="Evaluate verification on DIR/<identity>/* (or a flat DIR with --groups CSV): genuine and "
        "impostor distance distributions, TAR and FAR at the configured threshold and at the face_recognition "
        "default, and the threshold and TAR at FAR 1%%, 0.1%% and 0.01%%. Byte-identical images are not paired.",
    )
    p.add_argument("directory", metavar="DIR", help="folder of labelled photos: DIR/<identity>/*")
    p.add_argument("--groups", type=Path, metavar="CSV", help="image,identity rows for a flat folder")
    p.add_argument("--threshold", type=float, help="threshold to report (default: match.threshold)")
    p.add_argument("--baseline", type=float, default=0.6, help="comparison threshold (default 0.6)")
    p.add_argument("--jitter", type=int, default=0, help="jittered descriptor passes per photo")
    p.add_argument("--visit", type=int, default=0, metavar="K",
                   help="also report visits: the mean of K photos of a person against one photo (at match.visit_threshold)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--plot", type=Path, metavar="PNG", help="write the ROC curve and histograms as PNG")
    p.add_argument("--cache", type=Path, metavar="NPZ", help="reuse/stash descriptors in this file")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    need("evaluate", "tqdm", *(["matplotlib"] if args.plot else []))
    cfg = config_of(args)
    root = Path(args.directory)
    if not root.is_dir():
        raise SystemExit(f"kiosk-admin: {root}: not a folder")
    samples = labelled_images(root, args.groups)
    if not samples:
        raise SystemExit(f"kiosk-admin: {root}: no labelled images (expected DIR/<identity>/*.jpg)")
    cache = {}
    if args.cache and args.cache.exists():
        z = np.load(args.cache)
        cache = dict(zip(z["keys"].tolist(), z["vectors"]))
    todo = [s for s in samples if f"{s.sha256}:{args.jitter}" not in cache]
    for s in samples:
        s.vector = cache.get(f"{s.sha256}:{args.jitter}")
    if todo:
        with tqdm(total=len(todo), desc="describing", unit="photo", file=sys.stderr, disable=None) as bar:
            describe_all(todo, Describer(cfg.detect, jitter=args.jitter), bar)
    if args.cache:
        keys = [f"{s.sha256}:{args.jitter}" for s in samples if s.vector is not None]
        vecs = [s.vector for s in samples if s.vector is not None]
        merged = {**cache, **dict(zip(keys, vecs))}
        np.savez(args.cache, keys=np.array(list(merged)), vectors=np.array(list(merged.values())))
    ev = pair_distances(samples)
    threshold = cfg.match.threshold if args.threshold is None else args.threshold
    if not len(ev.genuine) or not len(ev.impostor):
        raise SystemExit("kiosk-admin: need at least two identities with two photos each")
    report = {"directory": str(root), **ev.summary(threshold, args.baseline)}
    if args.visit > 0:
        vev = visit_distances(samples, args.visit)
        if len(vev.genuine) and len(vev.impostor):
            report["visit"] = {"photos": args.visit, **vev.summary(min(cfg.match.visit_threshold, threshold), args.baseline)}
        else:
            report["visit"] = {"photos": args.visit, "error": f"no identity has more than {args.visit} photos"}
    if args.plot:
        plot_roc(ev, threshold, args.plot, root.name, args.baseline)
        report["plot"] = str(args.plot)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_text(report)
    return 0


def _print_text(r: dict) -> None:
    print(f"{r['directory']}: {r['images']} images, {r['identities']} identities, {r['no_face']} without a face")
    print(f"pairs: {r['genuine_pairs']} genuine, {r['impostor_pairs']} impostor ({r['identical_pairs_skipped']} identical skipped)")
    for kind in ("genuine", "impostor"):
        s = r[f"{kind}_distance"]
        print(f"{kind:>9} distance: min {s['min']:.3f}  p5 {s['p5']:.3f}  median {s['median']:.3f}  p95 {s['p95']:.3f}  max {s['max']:.3f}")
    print(f"at threshold {r['threshold']:g}: TAR {r['tar']:.2%}  FAR {r['far']:.4%}")
    print(f"at baseline  {r['baseline_threshold']:g}: TAR {r['baseline_tar']:.2%}  FAR {r['baseline_far']:.4%}")
    for a in r["at_far"]:
        note = "" if a["resolvable"] else " (too few impostor pairs to resolve)"
        print(f"TAR at FAR {a['far_target']:.2%}: {a['tar']:.2%} (threshold {a['threshold']:.4f}){note}")
    v = r.get("visit")
    if v and "error" in v:
        print(f"visits of {v['photos']} photos: {v['error']}")
    elif v:
        print(f"visits (mean of {v['photos']} photos vs one photo): {v['genuine_pairs']} genuine, {v['impostor_pairs']} impostor")
        print(f"at visit threshold {v['threshold']:g}: TAR {v['tar']:.2%}  FAR {v['far']:.4%}  (impostor min {v['impostor_distance']['min']:.3f})")
    if "plot" in r:
        print(f"plot: {r['plot']}")
