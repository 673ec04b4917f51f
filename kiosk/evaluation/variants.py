"""What each piece of evidence buys: FNIR at the same FPIR, on the open-set protocol.

``python -m kiosk.evaluation.variants LFW_DEV`` (``scripts/calibrate --evidence``) runs each
variant on the same people (those with at least 4 photos are the residents; their probes are
their photos from the 4th on, whatever they were enrolled from), fits the thresholds that give
0.1% FPIR at 100 and 300 residents, and prints the FNIR that costs, for single photos and
visits. A variant is kept in the kiosk only where it lowers FNIR at that FPIR (docs/recognition.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path


from ..config import DetectSettings
from .calibration import Rule, fit_cell
from .descriptors import DescriptorCache, default_cache_path, describe_samples
from .openset import Protocol, Trials, jittered_enrollment, run_trials
from .pairs import Describer, labelled_images

BASE = Protocol(enroll_photos=3, visit_photos=2, sizes=(100, 300), mean_template=True, min_photos=4, probe_from=3)
VARIANTS = [
    ("one photo per resident (today)", replace(BASE, enroll_photos=1, mean_template=False), Rule(0.06, 0.0)),
    ("three photos, three templates", replace(BASE, mean_template=False), Rule(0.06, 0.0)),
    ("three photos and their mean template", BASE, Rule(0.06, 0.0)),
    ("  with margin 0.08", BASE, Rule(0.08, 0.0)),
    ("  with margin 0.08 and cohort normalisation 0.6", BASE, Rule(0.08, 0.6)),
    ("  with visits of 3 photos, not 2", replace(BASE, visit_photos=3), Rule(0.08, 0.6)),
]
JITTER = ("  with templates from 10 jittered passes", BASE, Rule(0.08, 0.6))
CELLS = ((100, 0.001), (300, 0.001), (300, 0.0003))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kiosk.evaluation.variants", description=__doc__.split("\n\n")[0])
    ap.add_argument("directory", type=Path, help="the LFW development half (DIR/<identity>/*.jpg)")
    ap.add_argument("--seed", default="0,1,2", help="seeds pooled (default 0,1,2)")
    ap.add_argument("--jitter", type=int, default=0, metavar="J",
                    help="also try enrollment descriptors with J jitter passes (costly: about J x 100 ms a photo)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    from ..extra import need, tqdm

    need("the evidence study", "tqdm")
    seeds = [int(x) for x in args.seed.split(",")]
    samples = labelled_images(args.directory)
    settings = DetectSettings()
    cache = DescriptorCache(default_cache_path())
    describe_samples(samples, Describer(settings, face="central"), cache)
    variants = list(VARIANTS)
    enroll = {}
    if args.jitter:
        enroll[JITTER[0]] = jittered_enrollment(samples, BASE, Describer(settings, jitter=args.jitter, face="central"), cache)
        variants.append(JITTER)
    cache.close()
    rows = []
    for label, protocol, rule in tqdm(variants, desc="variants", file=sys.stderr, disable=None):
        runs = [run_trials(samples, replace(protocol, seed=s), enroll_vectors=enroll.get(label)) for s in seeds]
        trials: dict[int, Trials] = {size: Trials.pooled([r[size] for r in runs]) for size in protocol.sizes}
        cells = [fit_cell(trials[size], rule, target, 3, len(seeds), near=False) for size, target in CELLS]
        rows.append({"variant": label, "enroll_photos": protocol.enroll_photos, "mean_template": protocol.mean_template,
                     "visit_photos": protocol.visit_photos, "margin": rule.margin, "cohort_weight": rule.cohort_weight,
                     "cells": cells})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    head = " | ".join(f"N={n} at {t:.2%}: visit / single" for n, t in CELLS)
    print(f"| variant | {head} |")
    print("|---|" + "---:|" * len(CELLS))
    for r in rows:
        cells = " | ".join(f"{c['fnir']:.1%} / {c['fnir_single']:.1%}" for c in r["cells"])
        print(f"| {r['variant'].strip()} | {cells} |")
    c = rows[-1]["cells"]
    print(f"(FNIR at the thresholds fitted to each FPIR; stranger visits / photos per cell: "
          + ", ".join(f"{x['non_mated']:,} / {x['non_mated_single']:,}" for x in c) + f"; {len(seeds)} seeds pooled)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
