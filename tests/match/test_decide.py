"""K-of-M voting with threshold and margin, and the visit's mean descriptor."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kiosk.config import MatchSettings
from kiosk.match.decide import Outcome, Vote, VoteBox

S = MatchSettings(threshold=0.45, margin=0.06, votes_k=3, votes_m=5, max_votes=10, visit_threshold=0.42)


def box(*votes):
    b = VoteBox(S)
    for i, (rid, d, m) in enumerate(votes):
        b.add(Vote(rid, d, m, float(i)))
    return b


def test_accepts_once_k_good_votes_agree():
    b = box(("a", 0.3, 0.3), ("a", 0.3, 0.3))
    assert b.verdict() is None
    b.add(Vote("a", 0.35, 0.2, 3.0))
    outcome, rid, dist, margin = b.verdict()
    assert (outcome, rid) == (Outcome.ACCEPTED, "a")
    assert dist == 0.3 and margin == 0.3


def test_distance_over_threshold_does_not_count():
    b = box(("a", 0.3, 0.3), ("a", 0.5, 0.3), ("a", 0.3, 0.3), ("a", 0.5, 0.3), ("a", 0.46, 0.3))
    assert b.verdict() is None  # 2 good in the window, budget not spent
    assert b.verdict(final=True)[0] is Outcome.UNKNOWN


def test_small_margin_does_not_count():
    b = box(*[("a", 0.3, 0.05)] * 10)
    assert b.full
    assert b.verdict()[0] is Outcome.UNKNOWN


def test_resident_walking_up_is_judged_on_the_latest_votes():
    # Far away first (poor votes), then close: K good votes among the last M accept.
    b = box(("a", 0.58, 0.1), ("a", 0.55, 0.1), ("x", 0.6, 0.05), ("a", 0.5, 0.1), ("a", 0.3, 0.3), ("a", 0.32, 0.3))
    assert b.verdict() is None
    b.add(Vote("a", 0.31, 0.3, 7.0))
    outcome, rid, dist, _ = b.verdict()
    assert (outcome, rid) == (Outcome.ACCEPTED, "a") and dist == 0.31


def test_good_votes_that_slid_out_of_the_window_do_not_count():
    b = box(("a", 0.3, 0.3), ("a", 0.3, 0.3), ("b", 0.9, 0.1), ("b", 0.9, 0.1), ("b", 0.9, 0.1), ("b", 0.9, 0.1))
    assert [v.resident_id for v in b.window] == ["a", "b", "b", "b", "b"]
    b.add(Vote("a", 0.3, 0.3, 9.0))
    assert b.verdict() is None  # only 2 good votes for a among the last 5


def test_stranger_is_unknown_once_the_budget_is_spent():
    b = box(*[("a", 0.7, 0.1)] * 9)
    assert b.verdict() is None
    b.add(Vote("a", 0.69, 0.1, 9.0))
    outcome, rid, dist, _ = b.verdict()
    assert outcome is Outcome.UNKNOWN and rid is None and dist == 0.69


def test_final_verdict_without_enough_votes_is_unknown():
    b = box(("a", 0.3, 0.3))
    assert b.verdict() is None
    outcome, rid, dist, _ = b.verdict(final=True)
    assert outcome is Outcome.UNKNOWN and rid is None and dist == 0.3


def test_no_votes_after_the_budget():
    b = box(*[("x", 0.9, math.inf)] * 10)
    b.add(Vote("a", 0.1, 0.5, 9.0))
    assert len(b.votes) == 10 and b.full


def test_settled_once_k_votes_agree():
    b = box(("a", 0.3, 0.3), ("a", 0.3, 0.3))
    assert not b.settled
    b.add(Vote("a", 0.3, 0.3, 3.0))
    assert b.settled


def visit_box(nearest, settings=S):
    """Votes over the threshold (no K-of-M acceptance), each with a descriptor."""
    b = VoteBox(settings)
    for i, rid in enumerate(nearest):
        b.add(Vote(rid, 0.47, 0.1, float(i)), np.full(128, float(i)))
    return b


def test_visit_mean_waits_for_m_descriptors_and_averages_them():
    b = visit_box(["a"] * (S.votes_m - 1))
    assert b.mean() is None
    b.add(Vote("a", 0.47, 0.1, 9.0), np.full(128, 10.0))
    assert b.mean() == pytest.approx(np.full(128, (0 + 1 + 2 + 3 + 10) / 5))


def test_visit_mean_under_the_visit_threshold_accepts():
    b = visit_box(["a"] * 5)
    assert b.verdict() is None  # no single vote is under 0.45
    b.set_visit(Vote("a", 0.40, 0.2, 5.0))
    assert b.settled
    assert b.verdict() == (Outcome.ACCEPTED, "a", 0.40, 0.2)


@pytest.mark.parametrize(
    "visit, nearest",
    [
        (Vote("a", 0.43, 0.2, 5.0), ["a"] * 5),  # over the visit threshold (though under the single one)
        (Vote("a", 0.40, 0.05, 5.0), ["a"] * 5),  # too small a margin
        (Vote("a", 0.40, 0.2, 5.0), ["a", "a", "b", "b", "b"]),  # most single descriptors say someone else
        (Vote(None, 0.40, 0.2, 5.0), ["a"] * 5),  # nobody (an empty gallery)
    ],
)
def test_visit_mean_refused(visit, nearest):
    b = visit_box(nearest)
    b.set_visit(visit)
    assert not b.settled and b.verdict() is None
    assert b.verdict(final=True)[0] is Outcome.UNKNOWN


def test_visit_rule_off_at_zero():
    b = visit_box(["a"] * 5, MatchSettings(visit_threshold=0))
    assert b.mean() is None



def test_visit_threshold_never_exceeds_the_threshold():
    b = visit_box(["a"] * 5, MatchSettings(threshold=0.38, visit_threshold=0.42))
    b.set_visit(Vote("a", 0.40, 0.2, 5.0))
    assert b.verdict() is None
