"""``kiosk-admin evaluate-adaptation``: door templates on same-camera sessions (:mod:`kiosk.evaluation.adaptation`)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ModelUnavailable
from ..extra import need
from .common import config_of

KINDS = ("replay-attack", "nuaa", "photos")


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate-adaptation",
        help="door templates measured: enroll from one session, adapt on a second, judge on a third",
        description="Enroll each person of a set of same-camera sessions from one session, let the door-template "
        "policy adapt their templates on the visits of a second session that the door is sure of (face and QR "
        "credential together, or the face alone far inside the threshold), and judge the visits of a third: FNIR and "
        "FPIR per visit at the calibrated point, without and with door templates (with them, at the point of the "
        "gallery's effective size). Then every stranger shows each resident's stolen code, over and over: how many "
        "templates they plant, and how often the face alone then lets them in. See docs/enrollment.md.",
    )
    p.add_argument("kind", choices=KINDS, help="replay-attack (the recipe's replay-attack-dev folder), nuaa "
                   "(nuaa-dev), or photos (DIR/<identity>/*, cut into three sessions)")
    p.add_argument("directory", type=Path, help="the set's folder")
    p.add_argument("--frames", type=int, default=40, metavar="N",
                   help="at most N frames per session, spread over it (default 40; 0: all)")
    p.add_argument("--anchor", type=float, metavar="D", help="admit a door template only within D of an enrolled "
                   "one (default: the calibrated threshold of the gallery's point)")
    p.add_argument("--max-door-templates", type=int, default=3, metavar="M", help="per resident (default 3)")
    p.add_argument("--seed", type=int, default=0, help="which people each fold holds out as strangers")
    p.add_argument("--no-poisoning", action="store_true", help="skip the stolen-code run")
    p.add_argument("--part", choices=("dev", "held-out", "all"), default="all",
                   help="only the people that the door-visit benchmark (evaluate-visits) puts in its development or "
                   "held-out part (replay-attack and nuaa; default all)")
    p.add_argument("--open-set", action="store_true", help="instead, on labelled photos (DIR/<identity>/*, kind "
                   "photos): the same residents enrolled from 3 photos and from 3 + M (more photos standing in for "
                   "door templates), strangers and residents judged at the point for the gallery's size and, with "
                   "more templates, for its effective size")
    p.add_argument("--sizes", default="100,all", metavar="LIST", help="gallery sizes for --open-set (default "
                   "100,all)")
    p.add_argument("--seeds", default="0,1,2", metavar="LIST", help="seeds pooled for --open-set (default 0,1,2)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_evaluate_adaptation)


def cmd_evaluate_adaptation(args) -> int:
    need("evaluate-adaptation", "tqdm")
    from ..evaluation import adaptation, sessions
    from ..evaluation.descriptors import DescriptorCache, default_cache_path
    from ..evaluation.pairs import Describer
    from ..evaluation.visitsets import in_part

    cfg = config_of(args)
    if not args.directory.is_dir():
        raise SystemExit(f"kiosk-admin: {args.directory}: no such folder")
    if args.open_set:
        return _open_set(args, cfg)
    if args.part != "all" and args.kind == "photos":
        raise SystemExit("kiosk-admin: --part splits the door-visit benchmark's people (replay-attack, nuaa), "
                         "not photos")
    try:
        people = in_part(args.part, args.kind, sessions.load(args.kind, args.directory, args.frames))
        cache = DescriptorCache(default_cache_path())
        try:
            sessions.describe(people, Describer(cfg.detect, face="largest"), cache, desc=args.directory.name)
        finally:
            cache.close()
        rep = adaptation.measure(people, adaptation.PLANS[args.kind], match=cfg.match, anchor=args.anchor,
                                 max_door_templates=args.max_door_templates, seed=args.seed,
                                 with_poisoning=not args.no_poisoning)
    except (ValueError, ModelUnavailable) as e:
        raise SystemExit(f"kiosk-admin: {e}") from None
    rep = {"set": args.kind if args.part == "all" else f"{args.kind} ({args.part} part of the door visits)",
           "directory": str(args.directory), **rep}
    if args.json:
        print(json.dumps(rep, indent=2))
    else:
        print_report(rep)
    return 0


def print_report(rep: dict) -> None:
    plan = rep["plan"]
    others = f" and {rep['strangers_only']} without them, strangers only" if rep.get("strangers_only") else ""
    print(f"{rep['set']}: {rep['people']} people with every session{others}; enrolled from {plan['enroll']} ({plan['enroll_frames']} frames), "
          f"adapted on {plan['adapt']}, judged on {', '.join(plan['judge'])} (visits of {plan['visit_frames']} "
          f"frames; {plan['folds']} folds, each holding a share of the people out as strangers)")
    pol = rep["policy"]
    print(f"policy: anchor {pol['anchor']}, at most {pol['max_door_templates']} door templates per resident")
    print(f"{'':22} {'FNIR per visit':>16} {'FPIR per visit':>16} {'wrong resident':>15}")
    for key, label in (("without", "enrolled templates"), ("with", "with door templates")):
        r = rep[key]
        print(f"{label:22} {r['fnir']:>9.1%} ({r['misses']}/{r['mated']})".ljust(40)
              + f"{r['fpir']:>8.2%} ({r['false_accepts']}/{r['non_mated']})".ljust(18)
              + f"{r['wrong']:>8.2%}")
    for name, r in rep.get("by_session", {}).items():
        a, b = r["without"], r["with"]
        print(f"  residents judged on {name}: FNIR {a['fnir']:.1%} ({a['misses']}/{a['mated']}) -> "
              f"{b['fnir']:.1%} ({b['misses']}/{b['mated']})")
    for i, f in enumerate(rep["folds"]):
        print(f"  fold {i}: {f['residents']} residents (effective {f['effective']}), threshold {f['threshold']} -> "
              f"{f['threshold_with']}, {f['door_templates']} door templates from {f['proposed']} proposals"
              + (f", refused {f['refused']}" if f["refused"] else ""))
    p = rep.get("poisoning")
    if p:
        print(f"stolen codes: {p['impostors']} impostors x {p['victims']} victims, {p['tries']} visits: "
              f"{p['planted']} templates planted (farthest {p['farthest_from_enrolled']} from the enrolled ones, "
              f"anchor at most {p['anchor_max']}); the impostors' own visits let in as the victim: "
              f"{p['let_in_as_victim_before']} before, {p['let_in_as_victim_after']} after, "
              f"of {p['impostor_visits_judged']}")


def _open_set(args, cfg) -> int:
    from ..evaluation import adaptation
    from ..evaluation.descriptors import DescriptorCache, default_cache_path, describe_samples
    from ..evaluation.pairs import Describer, labelled_images

    if args.kind != "photos":
        raise SystemExit("kiosk-admin: --open-set takes labelled photos (kind photos)")
    try:
        sizes = tuple(0 if x.strip() == "all" else int(x) for x in args.sizes.split(","))
        seeds = tuple(int(x) for x in args.seeds.split(","))
    except ValueError:
        raise SystemExit("kiosk-admin: --sizes and --seeds are comma-separated numbers ('all' for everyone)") from None
    samples = labelled_images(args.directory)
    cache = DescriptorCache(default_cache_path())
    try:
        describe_samples(samples, Describer(cfg.detect, face="central"), cache, desc=args.directory.name)
    finally:
        cache.close()
    rows = adaptation.more_templates([s for s in samples if s.vector is not None], cfg.match, sizes=sizes,
                                     extra=args.max_door_templates, seeds=seeds)
    if not rows:
        raise SystemExit(f"kiosk-admin: nobody in {args.directory} has {3 + args.max_door_templates + 2} photos")
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'templates':32} {'each':>4} {'residents':>9} {'read as':>7} {'thresholds':>15}  {'FPIR per visit':>28}  "
          f"{'FNIR per visit':>20}")
    for r in rows:
        v = r["visit"]
        print(f"{r['templates']:32} {r['per_resident']:>4} {r['residents']:>9} {r['effective']:>7} "
              f"{r['threshold']:>7.4f}/{r['visit_threshold']:.4f}  {v['fpir']:>7.3%} ({v['false_accepts']}/{v['non_mated']}, upper "
              f"{v['fpir_upper95']:.3%})  {v['fnir']:>7.1%} ({v['misses']}/{v['mated']})")
    return 0
