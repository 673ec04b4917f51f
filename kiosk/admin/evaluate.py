"""``kiosk-admin evaluate``: how well the kiosk tells people apart on labelled photos."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..evaluation.pairs import FACE_CHOICES, Describer, describe_all, labelled_images, pair_distances, plot_roc, visit_distances
from ..extra import need, tqdm
from .common import config_of


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
    register_open_set(sub)


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


# -- evaluate-open-set --------------------------------------------------------


def register_open_set(sub) -> None:
    p = sub.add_parser(
        "evaluate-open-set",
        help="open-set 1:N: FPIR, FNIR and wrong-resident rate by gallery size, single photos and visits",
        description="Open-set 1:N evaluation on DIR/<identity>/*: residents are enrolled from their first K photos "
        "(people with fewer photos are enrolled distractors), their other photos are mated probes, the people of "
        "one fold at a time are strangers never enrolled. Reports FPIR, FNIR and the wrong-resident rate at each "
        "gallery size, for single photos and for visits (V photos judged by the kiosk's vote and visit-mean rule), "
        "at the kiosk's operating point: the calibrated one for each size when match.fpir_target is set, else the "
        "fixed [match] numbers. Descriptors are cached by photo content and model.",
    )
    p.add_argument("directory", metavar="DIR", help="folder of labelled photos: DIR/<identity>/*")
    p.add_argument("--enroll-photos", type=int, default=3, metavar="K", help="photos each resident is enrolled from (default 3)")
    p.add_argument("--visit-photos", type=int, default=2, metavar="V", help="photos per visit (default 2)")
    p.add_argument("--sizes", default="100,1000,all", metavar="LIST",
                   help="gallery sizes, comma-separated; 'all' is everyone enrolled (default 100,1000,all)")
    p.add_argument("--folds", type=int, default=5, help="identity folds; each is the strangers once (default 5)")
    p.add_argument("--max-photos", type=int, default=20, metavar="P", help="photos used per person at most (default 20)")
    p.add_argument("--max-visits", type=int, default=10, help="visits per person at most (default 10)")
    p.add_argument("--max-galleries", type=int, default=20, help="galleries per size and fold at most (default 20)")
    p.add_argument("--seed", default="0", metavar="N[,N...]",
                   help="seed of the folds and galleries; several: their trials are pooled (default 0)")
    p.add_argument("--mean-template", action=argparse.BooleanOptionalAction, default=None,
                   help="search each resident's mean template too (default: match.mean_template)")
    p.add_argument("--mixed", action="store_true",
                   help="enroll people with fewer than K photos too, from what they have (understates FPIR)")
    p.add_argument("--face", choices=FACE_CHOICES, default="central",
                   help="face described in a photo with several: central (LFW's labelled person; default) or largest")
    p.add_argument("--enroll-jitter", type=int, default=0, metavar="J",
                   help="dlib jitter passes for the enrollment photos' descriptors (default 0; costly)")
    p.add_argument("--descriptor-cache", type=Path, metavar="DB", default=None,
                   help="SQLite descriptor cache (default ~/.cache/kiosk-data/descriptors.sqlite)")
    p.add_argument("--no-descriptor-cache", action="store_true", help="compute every descriptor, keep none")
    p.add_argument("--fpir-target", type=float, help="override match.fpir_target (0: the fixed numbers)")
    p.add_argument("--calibration", type=Path, metavar="JSON",
                   help="take operating points from this calibration instead of the one the kiosk ships")
    p.add_argument("--threshold", type=float, help="evaluate this fixed threshold (implies --fpir-target 0)")
    p.add_argument("--margin", type=float, help="with --threshold: the margin (default match.margin)")
    p.add_argument("--visit-threshold", type=float, help="with --threshold: the visit threshold (default match.visit_threshold)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--plot", type=Path, metavar="PNG", help="write the DET curves as PNG")
    p.add_argument("--stolen-code", action="store_true",
                   help="also: how often a stranger holding one resident's stolen QR credential gets in where the "
                        "credential is the second factor (the resident among the stranger's candidates)")
    p.add_argument("--write-calibration", type=Path, metavar="JSON",
                   help="measure the calibration (thresholds per size and target) and write it here")
    p.set_defaults(func=cmd_evaluate_open_set)


def _sizes(text: str) -> tuple[int, ...]:
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        if part == "all":
            out.append(0)
        elif part.isdigit() and int(part) > 0:
            out.append(int(part))
        else:
            raise SystemExit(f"kiosk-admin: --sizes: {part!r} is not a positive number or 'all'")
    return tuple(dict.fromkeys(out))


def cmd_evaluate_open_set(args) -> int:
    from ..evaluation import calibration as fitting
    from ..evaluation.descriptors import DescriptorCache, default_cache_path, describe_samples
    from ..evaluation.det import plot_det
    from ..evaluation.openset import Protocol, Trials, jittered_enrollment, people_of, run_trials
    from ..evaluation.report import curves, open_set_report, print_report
    from ..match.calibration import Calibration, operating_point

    need("evaluate-open-set", "tqdm", *(["matplotlib"] if args.plot else []))
    cfg = config_of(args)
    root = Path(args.directory)
    if not root.is_dir():
        raise SystemExit(f"kiosk-admin: {root}: not a folder")
    for name in ("enroll_photos", "visit_photos", "folds", "max_photos", "max_visits", "max_galleries"):
        if getattr(args, name) < 1:
            raise SystemExit(f"kiosk-admin: --{name.replace('_', '-')} must be at least 1")
    if args.folds < 2:
        raise SystemExit("kiosk-admin: --folds must be at least 2 (one fold of strangers, the rest enrolled)")
    samples = labelled_images(root)
    if not samples:
        raise SystemExit(f"kiosk-admin: {root}: no labelled images (expected DIR/<identity>/*.jpg)")
    try:
        seeds = [int(x) for x in str(args.seed).split(",")]
    except ValueError:
        raise SystemExit(f"kiosk-admin: --seed: {args.seed!r} is not a list of numbers") from None
    match = cfg.match
    if args.threshold is not None:
        match = match.model_copy(update={"threshold": args.threshold, "fpir_target": 0.0,
                                         "margin": match.margin if args.margin is None else args.margin,
                                         "visit_threshold": match.visit_threshold if args.visit_threshold is None
                                         else args.visit_threshold})
    elif args.fpir_target is not None:
        match = match.model_copy(update={"fpir_target": args.fpir_target})
    protocol = Protocol(
        enroll_photos=args.enroll_photos, visit_photos=args.visit_photos, folds=args.folds, sizes=_sizes(args.sizes),
        max_photos=args.max_photos, max_visits=args.max_visits, max_galleries=args.max_galleries,
        mean_template=match.mean_template if args.mean_template is None else args.mean_template, seed=seeds[0],
        mixed=args.mixed,
    )
    cache = None if args.no_descriptor_cache else DescriptorCache(args.descriptor_cache or default_cache_path())
    try:
        describe_samples(samples, Describer(cfg.detect, face=args.face), cache)
        enroll_vectors = None
        if args.enroll_jitter > 0:
            enroll_vectors = jittered_enrollment(samples, protocol, Describer(cfg.detect, jitter=args.enroll_jitter,
                                                                              face=args.face), cache)
    finally:
        if cache is not None:
            cache.close()
    used = sum(len(v) for v in people_of(samples, protocol.max_photos).values())
    runs = []
    with tqdm(total=protocol.folds * len(seeds), desc="searching", unit="fold", file=sys.stderr, disable=None) as bar:
        for seed in seeds:
            runs.append(run_trials(samples, replace(protocol, seed=seed), enroll_vectors=enroll_vectors, progress=bar))
    trials = {size: Trials.pooled([r[size] for r in runs]) for size in protocol.sizes}
    data = {"directory": str(root), "images": len(samples), "identities": len({s.identity for s in samples}),
            "no_face": sum(s.vector is None for s in samples), "used": used, "face": args.face,
            "enroll_jitter": args.enroll_jitter, "seeds": seeds}
    calibration = None
    if args.calibration is not None:
        try:
            calibration = Calibration.from_json(json.loads(args.calibration.read_text()), str(args.calibration))
        except (OSError, ValueError, KeyError) as e:
            raise SystemExit(f"kiosk-admin: {args.calibration}: not a calibration: {e}") from None
    report, at = open_set_report(trials, lambda n: operating_point(match, n, calibration), match.votes_k, protocol, data)
    if args.plot:
        plot_det(curves(trials, at, match.votes_k), {at[s]["residents"]: at[s] for s in at}, args.plot, root.name)
        report["plot"] = str(args.plot)
    if args.write_calibration:
        # The rule is chosen where it matters most: galleries of 100 and more (or all sizes, if none is).
        large = [s for s in trials if s == 0 or s >= 100] or list(trials)
        cells = [(s, 0.001) for s in large] + [(s, 0.01) for s in large]
        rule, table = fitting.choose_rule(trials, match.votes_k, cells)
        points = fitting.fit(trials, rule, match.votes_k, repeats=len(seeds))
        what = (f"{root.name}: {data['identities']} people, {used} photos (at most {protocol.max_photos} each), "
                f"{protocol.folds} folds")
        args.write_calibration.write_text(json.dumps(fitting.calibration_json(points, rule, protocol, match.votes_k, what, seeds),
                                                     indent=1) + "\n")
        report["calibration"] = {"file": str(args.write_calibration), "rule": {"margin": rule.margin,
                                 "cohort_weight": rule.cohort_weight}, "rules_tried": table, "points": points}
    if args.stolen_code:
        from ..evaluation.stolen_code import StolenCode, stolen_code

        report["stolen_code"] = StolenCode.pooled([stolen_code(samples, replace(protocol, seed=seed), match)
                                                   for seed in seeds]).as_json()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report, sys.stdout)
        if args.write_calibration:
            _print_calibration(report["calibration"])
        if args.stolen_code:
            _print_stolen_code(report["stolen_code"])
    return 0


def _print_stolen_code(s: dict) -> None:
    print(f"\nA stolen QR credential (the second factor, candidates within match.threshold), "
          f"{s['visits']} stranger visits, about {s['residents']} residents:")
    print(f"  stranger visits narrowed to anyone (SHOW_QR): {s['narrowed']} ({100 * s['narrowed_share']:.2f}%)")
    print(f"  one resident's code with a stranger's face: accepted {100 * s['per_code']:.4f}% "
          f"({s['accepted']} of {s['pairs']} pairs; 95% upper bound {100 * s['per_code_upper95']:.4f}%), "
          f"as a runner-up {100 * s['runner_up_per_code']:.4f}%")
    print(f"  the resident most often a stranger's candidate: {100 * s['worst_resident']:.2f}% of visits")


def _print_calibration(c: dict) -> None:
    print(f"calibration written to {c['file']}: margin {c['rule']['margin']}, cohort weight {c['rule']['cohort_weight']}")
    print(f"{'residents':>9} {'target':>8} {'thr':>6} {'visit':>6} {'FPIR':>8} {'FNIR':>7} {'FPIR 1':>8} {'FNIR 1':>7} "
          f"{'wrong':>7} {'strangers':>9}  resolvable")
    for p in c["points"]:
        print(f"{p['residents']:>9} {p['fpir_target']:>8.4%} {p['threshold']:>6.3f} {p['visit_threshold']:>6.3f} "
              f"{p['fpir']:>8.4%} {p['fnir']:>7.2%} {p['fpir_single']:>8.4%} {p['fnir_single']:>7.2%} "
              f"{p['wrong']:>7.3%} {p['non_mated']:>9}  {'yes' if p['resolvable'] else 'no'}")
