"""The open-set evaluation's vectorised decisions are the kiosk's: VoteBox and the operating point agree."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kiosk.config import MatchSettings
from kiosk.evaluation.openset import Trials
from kiosk.evaluation.rates import rates_of, single_decisions, visit_decisions, wilson_upper
from kiosk.match.decide import OperatingPoint, Outcome, Vote, VoteBox


def random_trials(rng, visits: int, v: int, residents: int = 4) -> Trials:
    best = rng.integers(-1, residents, size=(visits, v))
    dist = rng.uniform(0.3, 0.6, size=(visits, v))
    margin = rng.uniform(0.0, 0.15, size=(visits, v))
    cohort = rng.uniform(0.7, 1.0, size=(visits, v))
    v_best = rng.integers(-1, residents, size=visits)
    z = np.zeros(0)
    return Trials(
        size=residents, galleries=1, residents=z, s_truth=z, s_best=z, s_distance=z, s_margin=z, s_cohort=z,
        v_truth=rng.integers(-1, residents, size=visits), v_best=v_best, v_distance=rng.uniform(0.3, 0.55, size=visits),
        v_margin=rng.uniform(0.0, 0.15, size=visits), v_cohort=rng.uniform(0.7, 1.0, size=visits),
        votes_best=best, votes_distance=dist, votes_margin=margin, votes_cohort=cohort, v_residents=z,
        templates=np.ones(residents, int),
    )


@pytest.mark.parametrize("v", [1, 2, 3, 5])
@pytest.mark.parametrize("weight", [0.0, 0.6])
def test_visit_decisions_are_the_voteboxs(v, weight):
    rng = np.random.default_rng(v)
    t = random_trials(rng, 400, v)
    point = OperatingPoint(0.45, 0.06, 0.42, cohort_weight=weight, cohort_anchor=0.85)
    settings = MatchSettings(votes_k=min(3, v), votes_m=v, max_votes=max(15, v))
    fast = visit_decisions(point, t, votes_k=3)
    for i in range(len(fast)):
        box = VoteBox(settings, point)
        for j in range(v):
            b = int(t.votes_best[i, j])
            box.add(Vote(None if b < 0 else str(b), float(t.votes_distance[i, j]), float(t.votes_margin[i, j]), float(j),
                         cohort=float(t.votes_cohort[i, j])), np.zeros(128))
        vb = int(t.v_best[i])
        box.set_visit(Vote(None if vb < 0 else str(vb), float(t.v_distance[i]), float(t.v_margin[i]), float(v),
                           cohort=float(t.v_cohort[i])))
        verdict = box.verdict(final=True)
        expected = int(verdict[1]) if verdict[0] is Outcome.ACCEPTED else -1
        assert fast[i] == expected, (i, t.votes_best[i], fast[i], verdict)
    assert (fast >= 0).any() and (fast < 0).any()  # both outcomes were exercised


def test_single_decisions_follow_threshold_margin_and_cohort():
    z = np.zeros(0)
    t = Trials(size=3, galleries=1, residents=np.full(4, 3), s_truth=np.array([0, 1, -1, -1]),
               s_best=np.array([0, 2, 1, -1]), s_distance=np.array([0.40, 0.40, 0.44, 0.1]),
               s_margin=np.array([0.1, 0.1, 0.02, 0.5]), s_cohort=np.array([0.85, 0.75, 0.85, math.nan]),
               v_truth=z, v_best=z, v_distance=z, v_margin=z, v_cohort=z, votes_best=np.zeros((0, 2)),
               votes_distance=np.zeros((0, 2)), votes_margin=np.zeros((0, 2)), votes_cohort=np.zeros((0, 2)), v_residents=z,
               templates=np.ones(3, int))
    plain = OperatingPoint(0.45, 0.06, 0.42)
    assert single_decisions(plain, t).tolist() == [0, 2, -1, -1]  # margin too small; nobody found
    # A face close to many residents (cohort 0.75, under the anchor 0.85) must be closer still.
    normed = OperatingPoint(0.45, 0.06, 0.42, cohort_weight=0.6, cohort_anchor=0.85)
    assert single_decisions(normed, t).tolist() == [0, -1, -1, -1]
    r = rates_of(single_decisions(plain, t), t.s_truth)
    assert (r.mated, r.non_mated, r.misses, r.wrong_residents, r.false_accepts) == (2, 2, 1, 1, 0)
    assert r.fnir == 0.5 and r.wrong == 0.5 and r.fpir == 0.0


def test_wilson_upper_bound():
    assert wilson_upper(0, 3000) == pytest.approx(0.00128, abs=1e-5)  # about 3.8/n for no events
    assert wilson_upper(10, 10000) > 0.001 > wilson_upper(2, 10000)
