"""FPIR, FNIR and wrong-resident rate of an operating point on open-set trials.

The decisions are the kiosk's own rule (:class:`~kiosk.match.decide.OperatingPoint`
and the vote counting of :class:`~kiosk.match.decide.VoteBox`), applied to
all trials at once:

- a single photo is accepted when its one vote names a resident;
- a visit of V photos is judged as a door visit whose window is those V
  votes (``votes_m`` = V, ``votes_k`` = min(votes_k, V)): accepted when K of
  its votes name one resident, or when its mean descriptor names a resident
  that most of its votes have nearest.

FPIR: non-mated searches accepted as anyone. FNIR: mated searches not
accepted as their own resident (refused, or taken for someone else).
Wrong resident: mated searches accepted as someone else.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from ..match.decide import OperatingPoint
from .openset import Trials

#: Two-sided 95% normal quantile, for Wilson score intervals.
_Z = 1.959963984540054


@dataclass(frozen=True)
class Rates:
    fpir: float
    fnir: float
    wrong: float
    non_mated: int
    mated: int
    false_accepts: int
    misses: int
    wrong_residents: int

    @property
    def fpir_upper(self) -> float:
        """Upper end of the 95% Wilson interval of FPIR (how large it could be, given the trials)."""
        return wilson_upper(self.false_accepts, self.non_mated)

    def as_json(self) -> dict:
        d = asdict(self)
        d["fpir_upper95"] = self.fpir_upper
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in d.items()}


def wilson_upper(k: int, n: int) -> float:
    if n == 0:
        return float("nan")
    p = k / n
    centre = p + _Z * _Z / (2 * n)
    spread = _Z * math.sqrt(p * (1 - p) / n + _Z * _Z / (4 * n * n))
    return min(1.0, (centre + spread) / (1 + _Z * _Z / n))


def single_decisions(point: OperatingPoint, t: Trials) -> np.ndarray:
    """The resident each single photo is accepted as (-1: not accepted)."""
    ok = (t.s_best >= 0) & point.vote_names(t.s_distance, t.s_margin, t.s_cohort)
    return np.where(ok, t.s_best, -1)


def visit_decisions(point: OperatingPoint, t: Trials, votes_k: int) -> np.ndarray:
    """The resident each visit is accepted as (-1: not accepted)."""
    best = t.votes_best
    if best.shape[0] == 0:
        return np.zeros(0, np.intp)
    v = best.shape[1]
    good = (best >= 0) & point.vote_names(t.votes_distance, t.votes_margin, t.votes_cohort)
    # For each good vote, how many good votes name the same resident.
    same = (best[:, :, None] == best[:, None, :]) & good[:, None, :]
    count = np.where(good, same.sum(axis=2), 0)
    lead = count.argmax(axis=1)
    k_of_m = count.max(axis=1) >= min(votes_k, v)
    leader = best[np.arange(len(best)), lead]
    agree = 2 * (best == t.v_best[:, None]).sum(axis=1) > v
    mean_ok = (t.v_best >= 0) & point.mean_names(t.v_distance, t.v_margin, t.v_cohort) & agree
    return np.where(k_of_m, leader, np.where(mean_ok, t.v_best, -1))


def rates_of(accepted_as: np.ndarray, truth: np.ndarray) -> Rates:
    mated = truth >= 0
    accepted = accepted_as >= 0
    fa = int((accepted & ~mated).sum())
    right = accepted & (accepted_as == truth) & mated
    wrong = int((accepted & mated & (accepted_as != truth)).sum())
    nm, m = int((~mated).sum()), int(mated.sum())
    misses = m - int(right.sum())
    return Rates(fa / nm if nm else float("nan"), misses / m if m else float("nan"), wrong / m if m else float("nan"),
                 nm, m, fa, misses, wrong)


def single_rates(point: OperatingPoint, t: Trials) -> Rates:
    return rates_of(single_decisions(point, t), t.s_truth)


def visit_rates(point: OperatingPoint, t: Trials, votes_k: int) -> Rates:
    return rates_of(visit_decisions(point, t, votes_k), t.v_truth)


def shifted(point: OperatingPoint, delta: float) -> OperatingPoint:
    """The point with both thresholds moved by ``delta`` (a step along its DET curve)."""
    return replace(point, threshold=point.threshold + delta,
                   visit_threshold=point.visit_threshold + delta if point.visit_threshold > 0 else 0.0)


def det_curve(point: OperatingPoint, t: Trials, votes_k: int, deltas: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """FPIR and FNIR, single and visit, as both thresholds move together around ``point``."""
    deltas = np.linspace(-0.3, 0.3, 121) if deltas is None else deltas
    out = {k: np.empty(len(deltas)) for k in ("single_fpir", "single_fnir", "visit_fpir", "visit_fnir")}
    for i, d in enumerate(deltas):
        p = shifted(point, float(d))
        s, v = single_rates(p, t), visit_rates(p, t, votes_k)
        out["single_fpir"][i], out["single_fnir"][i] = s.fpir, s.fnir
        out["visit_fpir"][i], out["visit_fnir"][i] = v.fpir, v.fnir
    out["delta"] = deltas
    return out
