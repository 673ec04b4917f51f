"""Measuring the calibration the kiosk ships: thresholds per gallery size and target FPIR.

For each gallery size and target, on open-set trials (:mod:`kiosk.evaluation.openset`):

1. ``threshold``: the largest at which single photos of strangers are
   accepted at most at the target rate. A door visit's frames are alike, so
   a stranger whose one frame passes may pass on three; the single-photo
   rate is what a visit of near-identical frames would get.
2. ``visit_threshold``: the largest (never above ``threshold``) at which
   strangers' visits (the vote rule and the mean together) are accepted at
   most at the target rate.
3. ``near_miss``: how many strangers' visits came within 0.02 … 0.10 of those
   thresholds (:mod:`.nearmiss`): what a site's own strangers are compared with.

The margin and the cohort weight are one rule for every cell, chosen from a
small grid by the lowest mean visit FNIR over the cells that matter
(:func:`choose_rule`); the table of every rule tried is in the report. A cell whose target allows less than one false
accept among its stranger visits (or single photos) of one run is kept (the
strictest numbers measured) but marked not resolvable: the data cannot show
that target is met.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..match.decide import OperatingPoint
from ..gallery.store import COHORT_SIZE
from ..match.models import MODEL_ID
from .nearmiss import near_miss
from .openset import Protocol, Trials
from .rates import single_rates, visit_rates

TARGETS = (0.0001, 0.0002, 0.0003, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05)
#: Margins tried. Larger ones lower FNIR on LFW at the strictest targets, but turn away a resident
#: who resembles another resident (siblings), which LFW cannot show: 0.08 is the most we allow.
MARGINS = (0.04, 0.06, 0.08)
COHORT_WEIGHTS = (0.0, 0.3, 0.6, 0.9)
#: The cohort distance at which normalisation leaves a distance unchanged (about the median on LFW).
COHORT_ANCHOR = 0.85
#: Thresholds are never set above this (the calibrated ones sit far below it).
_CEILING = 0.8


@dataclass(frozen=True)
class Rule:
    margin: float
    cohort_weight: float
    cohort_anchor: float = COHORT_ANCHOR

    def point(self, threshold: float, visit_threshold: float) -> OperatingPoint:
        return OperatingPoint(threshold, self.margin, visit_threshold, self.cohort_weight, self.cohort_anchor)


def _largest_below(scores: np.ndarray, allowed: int) -> float:
    """The largest threshold that accepts at most ``allowed`` of ``scores``."""
    s = np.sort(scores[np.isfinite(scores)])
    if allowed >= len(s):
        return _CEILING
    return float(min(_CEILING, np.nextafter(s[allowed], -np.inf)))


def fit_cell(t: Trials, rule: Rule, target: float, votes_k: int, repeats: int = 1, near: bool = True) -> dict:
    """The thresholds for one gallery size and target, and their rates.

    ``repeats``: how many runs (seeds) the trials pool. The same strangers come back in each, so a
    target counts as resolvable only if it allows a false accept among one run's worth of trials.
    ``near``: with the strangers' near-miss profile (:mod:`.nearmiss`), what a site compares its own with.
    """
    probe = rule.point(0.0, 0.0)
    nm = ~t.s_mated
    eligible = nm & (t.s_best >= 0) & (t.s_margin >= rule.margin)
    allowed = math.floor(target * int(nm.sum()) + 1e-9)
    threshold = _largest_below(np.asarray(probe.score(t.s_distance[eligible], t.s_cohort[eligible])), allowed)
    n_visits = int((~t.v_mated).sum())
    v_allowed = math.floor(target * n_visits + 1e-9)
    # The vote rule alone may already accept too many strangers' visits: then lower the threshold.
    while visit_rates(rule.point(threshold, 0.0), t, votes_k).false_accepts > v_allowed and threshold > 0:
        threshold = round(threshold - 0.005, 4)
    # The visit threshold: the largest that keeps visits within the target (binary search; monotone).
    lo, hi = 0.0, threshold
    if visit_rates(rule.point(threshold, hi), t, votes_k).false_accepts <= v_allowed:
        lo = hi
    else:
        for _ in range(30):
            mid = (lo + hi) / 2
            if visit_rates(rule.point(threshold, mid), t, votes_k).false_accepts <= v_allowed:
                lo = mid
            else:
                hi = mid
    point = rule.point(threshold, lo)
    s, v = single_rates(point, t), visit_rates(point, t, votes_k)
    return {
        "residents": int(np.median(t.residents)) if len(t.residents) else 0,
        "fpir_target": target,
        "threshold": round(threshold, 4),
        "visit_threshold": round(math.floor(lo * 1e4) / 1e4, 4),
        "fpir": round(v.fpir, 6), "fnir": round(v.fnir, 4),
        "fpir_single": round(s.fpir, 6), "fnir_single": round(s.fnir, 4),
        "wrong": round(v.wrong, 6), "wrong_single": round(s.wrong, 6),
        "non_mated": v.non_mated, "mated": v.mated,
        "non_mated_single": s.non_mated, "mated_single": s.mated,
        "fpir_upper95": round(v.fpir_upper, 6),
        "resolvable": bool(math.floor(target * int(nm.sum()) / repeats + 1e-9) >= 1
                           and math.floor(target * n_visits / repeats + 1e-9) >= 1),
        "repeats": repeats,
        "near_miss": near_miss(point, t, votes_k) if near else None,
    }


def fit(trials: dict[int, Trials], rule: Rule, votes_k: int, targets=TARGETS, repeats: int = 1) -> list[dict]:
    return [fit_cell(t, rule, target, votes_k, repeats) for _, t in sorted(trials.items()) for target in targets]


def choose_rule(trials: dict[int, Trials], votes_k: int, cells: list[tuple[int, float]],
                margins=MARGINS, weights=COHORT_WEIGHTS) -> tuple[Rule, list[dict]]:
    """The (margin, cohort weight) with the lowest mean visit FNIR over ``cells`` (size, target); and the table."""
    table = []
    for w in weights:
        for m in margins:
            rule = Rule(m, w)
            fnirs = [fit_cell(trials[size], rule, target, votes_k, near=False)["fnir"] for size, target in cells]
            table.append({"margin": m, "cohort_weight": w, "mean_fnir": round(float(np.mean(fnirs)), 4),
                          "fnir": [round(f, 4) for f in fnirs]})
    best = min(table, key=lambda r: r["mean_fnir"])
    return Rule(best["margin"], best["cohort_weight"]), table


def calibration_json(points: list[dict], rule: Rule, protocol: Protocol, votes_k: int, data: str,
                     seeds: list[int] | None = None) -> dict:
    """The file the kiosk ships (kiosk/match/calibration.json)."""
    return {
        "format": 1,
        "model": MODEL_ID,
        "data": data,
        "protocol": {**protocol.as_json(), "votes_k": votes_k, "seeds": seeds or [protocol.seed]},
        "rule": {"margin": rule.margin, "cohort_weight": rule.cohort_weight, "cohort_anchor": rule.cohort_anchor,
                 "cohort_size": COHORT_SIZE},
        "points": points,
    }
