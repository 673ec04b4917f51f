"""One calibration fitted on several populations, judged on each, and without each (leave-one-set-out).

A threshold fitted on one population keeps its promise on that population; on another (other faces,
other cameras, look-alikes) it may not (issue 20). So the shipped calibration is fitted on the development
halves of several sets together, by one rule: for each gallery size and target, **the strictest threshold
(and visit threshold) that meets the target on every set that can resolve it**.

- A set whose people are too few for a gallery of N residents speaks for N through its largest gallery n,
  at the target scaled by n / N: the kiosk assumes a stranger's chance of resembling someone grows at most
  in proportion to N (:mod:`kiosk.match.calibration`), and so does the fit.
  Where its strangers are too few for the scaled target, it still bounds the cell: the threshold that meets
  the target at n, since more residents never need a looser threshold.
- A set that cannot resolve a cell (its stranger visits and photos, every deal pooled, allow under one false
  accept at that target) does not set that cell's threshold; it is still reported.
- The margin and cohort weight are chosen as before (:func:`kiosk.evaluation.calibration.choose_rule`), but
  on this fit: the lowest mean FNIR per visit on the first set (LFW's half, the only one with galleries of
  100 and more) at 100 and 300 residents, targets 0.1% and 1%.
- Acceptance is monotone in both thresholds, so the smallest of each meets the target on every set that set it.
  A stricter target never gets a looser threshold than a looser one at the same size.
- A cell is vouched for (``resolvable``, what the kiosk's "target met" rests on) only where a set measured that
  target itself, not as a bound, with a false accept allowed in one deal's trials.

:func:`leave_one_out` fits the same rule without each set in turn; that fit is then judged on the set left
out, on other deals (seeds) than the ones fitted on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .calibration import COHORT_WEIGHTS, MARGINS, TARGETS, Rule, fit_cell
from .openset import Trials
from .rates import single_rates, visit_rates


@dataclass
class Population:
    """One set's trials: by calibrated size, and ``0`` for everyone enrolled (the largest gallery it can form)."""

    name: str
    trials: dict[int, Trials]
    groups: dict[str, str] = field(default_factory=dict)  # identity -> group, where the set has labels

    def reach(self, size: int) -> tuple[Trials, int] | None:
        """The trials that speak for a gallery of ``size``, and their gallery size (``size`` or smaller)."""
        t = self.trials.get(size)
        if t is not None and len(t.residents) and int(np.median(t.residents)) == size:
            return t, size
        everyone = self.trials.get(0)
        if everyone is None or not len(everyone.residents):
            return None
        n = int(np.median(everyone.residents))
        return (everyone, n) if n < size else None


def cell(populations: list[Population], rule: Rule, size: int, target: float, votes_k: int,
         repeats: int, memo: dict | None = None, cap: tuple[float, float] | None = None) -> dict:
    """The point for one gallery size and target, fitted on every set at once, and how it does on each.

    ``memo``: each set's own fit of a cell, kept across calls (it does not depend on the other sets).
    ``cap``: thresholds it may not exceed (a looser target's, so that a stricter target is never looser).
    """
    memo = {} if memo is None else memo
    fitted = {}
    for pop in populations:
        got = pop.reach(size)
        if got is None:
            continue
        t, n = got
        key = (pop.name, rule, size, target)
        if key not in memo:
            c = {**fit_cell(t, rule, target * n / size, votes_k, repeats), "bound": False}
            if not _speaks(c) and n < size:
                # Too few strangers for the scaled target; the same target at n still bounds the threshold
                # (more residents never need a looser one), and that the set can resolve.
                c = {**fit_cell(t, rule, target, votes_k, repeats), "bound": True}
            memo[key] = c
        fitted[pop.name] = (t, n, memo[key])
    binding = [name for name, (_, _, c) in fitted.items() if _speaks(c)]
    pool = binding or list(fitted)  # none resolves it: the strictest measured, marked not resolvable
    # fit_cell rounds its threshold to 4 places, perhaps up past a stranger's score: step down to below it.
    threshold = math.floor((min(fitted[name][2]["threshold"] for name in pool) - 5e-5) * 1e4) / 1e4
    visit_threshold = min(min(fitted[name][2]["visit_threshold"] for name in pool), threshold)
    if cap is not None:
        threshold, visit_threshold = min(threshold, cap[0]), min(visit_threshold, cap[1])
    point = rule.point(threshold, visit_threshold)
    sets, scaled = {}, []
    for name, (t, n, _) in fitted.items():
        s, v = single_rates(point, t), visit_rates(point, t, votes_k)
        k = size / n
        sets[name] = {"residents": n, "fpir": round(v.fpir, 6), "fnir": round(v.fnir, 4),
                      "fpir_single": round(s.fpir, 6), "fnir_single": round(s.fnir, 4),
                      "wrong": round(v.wrong, 6), "wrong_single": round(s.wrong, 6),
                      "non_mated": v.non_mated, "mated": v.mated, "non_mated_single": s.non_mated,
                      "mated_single": s.mated, "fpir_upper95": round(v.fpir_upper, 6),
                      "resolvable": name in binding, "bound": fitted[name][2]["bound"]}
        scaled.append((min(1.0, v.fpir * k), min(1.0, s.fpir * k), min(1.0, v.fpir_upper * k)))
    worst = lambda key: max(x[key] for x in sets.values())  # noqa: E731
    strictest = min(pool, key=lambda name: fitted[name][2]["threshold"])
    # Anything else fit_cell measures (what this module does not combine) comes from the set whose threshold it is.
    extra = {k: v for k, v in fitted[strictest][2].items() if k not in _COMBINED}
    if "near_miss" in extra:
        # At the point as the file holds it (rounded), the one the door decides by.
        held = rule.point(round(threshold, 4), round(math.floor(visit_threshold * 1e4) / 1e4, 4))
        extra["near_miss"], sets_nm = _crowdest(held, fitted, votes_k)
        for name, nm in sets_nm.items():
            sets[name]["near_miss"] = nm
    # The kiosk reads one FPIR and FNIR per cell: the worst set's (FPIR scaled to this size where measured smaller).
    return extra | {
        "residents": size, "fpir_target": target,
        "threshold": round(threshold, 4), "visit_threshold": round(math.floor(visit_threshold * 1e4) / 1e4, 4),
        "fpir": round(max(x[0] for x in scaled), 6), "fnir": worst("fnir"),
        "fpir_single": round(max(x[1] for x in scaled), 6), "fnir_single": worst("fnir_single"),
        "wrong": worst("wrong"), "wrong_single": worst("wrong_single"),
        "non_mated": sum(x["non_mated"] for x in sets.values()), "mated": sum(x["mated"] for x in sets.values()),
        "non_mated_single": sum(x["non_mated_single"] for x in sets.values()),
        "mated_single": sum(x["mated_single"] for x in sets.values()),
        "fpir_upper95": round(max(x[2] for x in scaled), 6),
        # Vouched for only where a set measured this target itself (not a bound) on one deal's trials.
        "resolvable": any(fitted[name][2]["resolvable"] and not fitted[name][2]["bound"] for name in binding),
        "repeats": repeats,
        "binding": [strictest] if binding else [],
        "sets": sets,
    }


def _crowdest(point, fitted: dict, votes_k: int) -> tuple[dict, dict]:
    """The near-miss profile a site is compared with, and every set's own, all at the cell's point (not at each
    set's own fit, which the floor and the cap may have moved).

    The profile is the envelope of the sets': for each gap, the largest share of strangers not accepted whose gap
    was at most it, over the sets; at 0, the largest FPIR. A site is then called crowded only when its strangers
    come closer than those of every population the point was fitted on. (Compared with the binding set's profile
    alone, a set whose strangers keep the target, ORL's, was warned about.)"""
    from ..siteestimate import expected_share
    from .nearmiss import near_miss

    profiles = {name: near_miss(point, t, votes_k) for name, (t, _n, _c) in fitted.items()}
    deltas = next(iter(profiles.values()))["deltas"]
    accepted = max(p["share"][deltas.index(0.0)] for p in profiles.values())
    band = [max(expected_share(p, d) for p in profiles.values()) if d else 0.0 for d in deltas]
    share = [round(accepted + b * (1.0 - accepted), 6) if d else accepted for d, b in zip(deltas, band)]
    return {"deltas": deltas, "share": share, "sets": sorted(profiles)}, profiles


#: What :func:`cell` computes itself from fit_cell's output (and "bound", its own mark).
_COMBINED = frozenset({"residents", "fpir_target", "threshold", "visit_threshold", "fpir", "fnir", "fpir_single",
                       "fnir_single", "wrong", "wrong_single", "non_mated", "mated", "non_mated_single",
                       "mated_single", "fpir_upper95", "resolvable", "repeats", "bound"})


def _speaks(c: dict) -> bool:
    """Whether a set's own fit of a cell may set the threshold: its trials (every deal pooled) allow a false
    accept at that target, for visits and single photos. Whether the point can be vouched for (``resolvable``)
    asks that of one deal's trials: the deals share their strangers."""
    return c["fpir_target"] * c["non_mated"] >= 1 - 1e-9 and c["fpir_target"] * c["non_mated_single"] >= 1 - 1e-9


def choose_rule(populations: list[Population], votes_k: int, cells, repeats: int = 1, memo: dict | None = None,
                margins=MARGINS, weights=COHORT_WEIGHTS) -> tuple[Rule, list[dict]]:
    """The (margin, cohort weight) whose fit on every set has the lowest mean visit FNIR over ``cells``
    (size, target) on the first set; and the table."""
    memo = {} if memo is None else memo
    first = populations[0].name
    table = []
    for w in weights:
        for m in margins:
            rule = Rule(m, w)
            fnirs = [cell(populations, rule, size, target, votes_k, repeats, memo)["sets"][first]["fnir"]
                     for size, target in cells]
            table.append({"margin": m, "cohort_weight": w, "mean_fnir": round(float(np.mean(fnirs)), 4),
                          "fnir": [round(f, 4) for f in fnirs]})
    best = min(table, key=lambda r: r["mean_fnir"])
    return Rule(best["margin"], best["cohort_weight"]), table


def fit(populations: list[Population], rule: Rule, votes_k: int, sizes: list[int], targets=TARGETS,
        repeats: int = 1, memo: dict | None = None) -> list[dict]:
    """Every cell (size x target) that some set can speak for."""
    memo = {} if memo is None else memo
    out = []
    for size in sizes:
        if not any(p.reach(size) for p in populations):
            continue
        cap, cells = None, []
        for target in sorted(targets, reverse=True):  # loosest first: each stricter target is capped by it
            c = cell(populations, rule, size, target, votes_k, repeats, memo, cap)
            cap = (c["threshold"], c["visit_threshold"])
            cells.append(c)
        out += sorted(cells, key=lambda c: c["fpir_target"])
    return out


def leave_one_out(populations: list[Population], rule: Rule, votes_k: int, sizes: list[int], targets=TARGETS,
                  repeats: int = 1, memo: dict | None = None) -> dict[str, list[dict]]:
    """For each set, the points fitted on all the others."""
    memo = {} if memo is None else memo
    return {p.name: fit([q for q in populations if q is not p], rule, votes_k, sizes, targets, repeats, memo)
            for p in populations}


def by_group(accepted_as: np.ndarray, truth: np.ndarray, group_of_row: np.ndarray) -> dict[str, dict]:
    """FPIR (strangers by their group) and FNIR (residents by theirs) of one decision array."""
    out = {}
    for g in sorted(set(group_of_row.tolist())):
        mine = group_of_row == g
        stranger = mine & (truth < 0)
        resident = mine & (truth >= 0)
        fa = int((accepted_as[stranger] >= 0).sum())
        miss = int((accepted_as[resident] != truth[resident]).sum())
        out[g] = {"non_mated": int(stranger.sum()), "false_accepts": fa, "mated": int(resident.sum()), "misses": miss}
    return out


# -- the command: python -m kiosk.evaluation.multiset (scripts/calibrate --open-set DIR,DIR,...) ---------------

#: The protocol the shipped calibration is measured with (as scripts/calibrate --open-set has it).
SIZES = (10, 30, 100, 300)
#: The cells the rule (margin, cohort weight) is chosen on, on the first set (the only one with galleries of 100+).
RULE_CELLS = ((100, 0.001), (300, 0.001), (100, 0.01), (300, 0.01))


def _load(directory, settings, cache):
    import csv
    from pathlib import Path

    from .descriptors import describe_samples
    from .pairs import Describer, labelled_images

    root = Path(directory)
    samples = labelled_images(root)
    if not samples:
        raise SystemExit(f"multiset: {root}: no labelled images (DIR/<identity>/*)")
    describe_samples(samples, Describer(settings, face="central"), cache, desc=root.name)
    groups = {}
    if (root / "groups.csv").is_file():  # identity,group (e.g. Essex faces94's female/male/malestaff)
        with open(root / "groups.csv", newline="") as f:
            groups = {row["identity"]: row["group"] for row in csv.DictReader(f)}
    return root.name, samples, groups


def _trials(samples, protocol, seeds) -> dict[int, Trials]:
    from dataclasses import replace

    from .openset import run_trials

    runs = [run_trials(samples, replace(protocol, seed=s)) for s in seeds]
    return {size: Trials.pooled([r[size] for r in runs]) for size in protocol.sizes}


def check(pop: Population, samples, calibration, match, protocol) -> list[dict]:
    """The kiosk's operating point from ``calibration`` at each gallery the set's check trials hold."""
    from ..match.calibration import operating_point
    from .openset import photos_of

    rows = []
    for size, t in sorted(pop.trials.items(), key=lambda kv: (kv[0] == 0, kv[0])):
        n = int(np.median(t.residents)) if len(t.residents) else 0
        if n == 0 or (size and n != size) or (size == 0 and any(r["residents"] == n for r in rows)):
            continue
        point = operating_point(match, n, calibration)
        s, v = single_rates(point, t), visit_rates(point, t, match.votes_k)
        row = {"residents": n, "threshold": point.threshold, "visit_threshold": point.visit_threshold,
               "visit": v.as_json(), "single": s.as_json()}
        if pop.groups:
            from .rates import single_decisions

            ids = np.asarray([pop.groups.get(p.identity, "?") for p in photos_of(samples, protocol.max_photos)])
            row["groups_single"] = by_group(single_decisions(point, t), t.s_truth, ids[t.s_photo])
        rows.append(row)
    return rows


def main(argv=None) -> int:
    import argparse
    import json
    import sys
    import time
    from pathlib import Path

    from ..config import load_config
    from ..extra import need
    from ..match.calibration import Calibration
    from .calibration import calibration_json
    from .descriptors import DescriptorCache, default_cache_path
    from .openset import Protocol

    ap = argparse.ArgumentParser(prog="python -m kiosk.evaluation.multiset", description=__doc__.split("\n\n")[0])
    ap.add_argument("directories", help="development halves, comma-separated (the first, LFW's, chooses the rule)")
    ap.add_argument("--out", type=Path, required=True, help="where the calibration goes")
    ap.add_argument("--work", type=Path, required=True, help="folder for the leave-one-out calibrations and the report")
    ap.add_argument("--config", type=Path, help="kiosk config (default: the defaults)")
    ap.add_argument("--fit-seeds", default="0,1,2")
    ap.add_argument("--check-seeds", default="3,4")
    ap.add_argument("--rule", metavar="MARGIN,WEIGHT",
                    help="take this margin and cohort weight instead of choosing them on the first set (quicker)")
    args = ap.parse_args(argv)
    need("the calibration", "tqdm")
    started = time.monotonic()
    cfg = load_config(args.config)
    match = cfg.match
    fit_seeds = [int(x) for x in args.fit_seeds.split(",")]
    check_seeds = [int(x) for x in args.check_seeds.split(",")]
    protocol = Protocol(enroll_photos=3, visit_photos=2, sizes=SIZES + (0,), mean_template=True, seed=fit_seeds[0])
    cache = DescriptorCache(default_cache_path())
    try:
        loaded = [_load(d, cfg.detect, cache) for d in args.directories.split(",")]
    finally:
        cache.close()
    fitting = [Population(name, _trials(samples, protocol, fit_seeds), groups) for name, samples, groups in loaded]
    memo: dict = {}
    repeats = len(fit_seeds)
    if args.rule:
        margin, weight = (float(x) for x in args.rule.split(","))
        rule, table = Rule(margin, weight), []
    else:
        rule, table = choose_rule(fitting, match.votes_k, RULE_CELLS, repeats, memo)
    points = fit(fitting, rule, match.votes_k, list(SIZES), repeats=repeats, memo=memo)
    what = "; ".join(f"{name}: {len({s.identity for s in samples})} people, "
                     f"{sum(s.vector is not None for s in samples)} photos with a face"
                     for name, samples, _ in loaded)
    what += (f" (at most {protocol.max_photos} photos each, {protocol.folds} folds); per size and target the "
             "strictest threshold that meets the target on every set that resolves it")
    def write(path: Path, pts: list[dict], data: str) -> Calibration:
        doc = calibration_json(pts, rule, protocol, match.votes_k, data, fit_seeds)
        doc["protocol"]["sizes"] = list(SIZES)
        path.write_text(json.dumps(doc, indent=1) + "\n")
        return Calibration.from_json(doc, str(path))

    shipped = write(args.out, points, what)
    args.work.mkdir(parents=True, exist_ok=True)
    without = {}
    for name, pts in leave_one_out(fitting, rule, match.votes_k, list(SIZES), repeats=repeats, memo=memo).items():
        if pts:
            without[name] = write(args.work / f"calibration-without-{name}.json", pts, f"{what}; without {name}")
    report = {"rule": {"margin": rule.margin, "cohort_weight": rule.cohort_weight}, "rules_tried": table,
              "points": points, "check_seeds": check_seeds, "sets": {}}
    for (name, samples, groups), fitted in zip(loaded, fitting):
        checking = Population(name, _trials(samples, protocol, check_seeds), groups)
        report["sets"][name] = {
            "all": check(checking, samples, shipped, match, protocol),
            "without": check(checking, samples, without[name], match, protocol) if name in without else None,
        }
    report["seconds"] = round(time.monotonic() - started)
    (args.work / "multiset-report.json").write_text(json.dumps(report, indent=1) + "\n")
    print_report(report, args.out, sys.stdout)
    return 0


def print_report(report: dict, out, file) -> None:
    r = report["rule"]
    print(f"calibration {out}: margin {r['margin']}, cohort weight {r['cohort_weight']}; "
          f"fitted on every set at once, strictest per cell", file=file)
    print(f"{'residents':>9} {'target':>8} {'thr':>6} {'visit':>6}  set of the threshold, and FPIR per visit on each set "
          f"(its own gallery size)", file=file)
    for p in report["points"]:
        if p["fpir_target"] not in (0.0003, 0.001, 0.01):
            continue
        each = ", ".join(f"{name} {s['fpir']:.3%}@{s['residents']}" + ("" if s["resolvable"] else "*")
                         for name, s in p["sets"].items())
        print(f"{p['residents']:>9} {p['fpir_target']:>8.3%} {p['threshold']:>6.3f} {p['visit_threshold']:>6.3f}  "
              f"{(p['binding'] or ['none resolves'])[0]}: {each}", file=file)
    print("(* the set cannot resolve that target at that size)", file=file)
    print(f"\nthe kiosk at its default target on other deals (seeds {report['check_seeds']}): fitted on every set "
          "('all') and on every set but the one judged ('without')", file=file)
    print(f"{'set':<20} {'fit':<8} {'N':>5} {'thr':>6} {'FPIR visit':>11} {'(accepted)':>14} {'upper95':>8} "
          f"{'FNIR':>6} {'wrong 1':>8} {'FPIR 1':>8}", file=file)
    for name, s in report["sets"].items():
        for fit_name in ("all", "without"):
            for row in s[fit_name] or []:
                v, one = row["visit"], row["single"]
                print(f"{name:<20} {fit_name:<8} {row['residents']:>5} {row['threshold']:>6.3f} {v['fpir']:>11.3%} "
                      f"{v['false_accepts']:>6} of {v['non_mated']:<6} {v['fpir_upper95']:>8.3%} {v['fnir']:>6.1%} "
                      f"{one['wrong']:>8.3%} {one['fpir']:>8.3%}", file=file)
                for g, c in (row.get("groups_single") or {}).items():
                    print(f"{'':<20} {'  ' + g:<14} single photos: strangers {c['false_accepts']} of {c['non_mated']} "
                          f"accepted, residents {c['misses']} of {c['mated']} missed", file=file)
    print(f"\n{report['seconds']} s", file=file)


if __name__ == "__main__":
    import sys

    sys.exit(main())
