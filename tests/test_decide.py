"""K-of-M voting with threshold and margin."""

from __future__ import annotations

import math

from kiosk.config import MatchSettings
from kiosk.match.decide import Outcome, Vote, VoteBox

S = MatchSettings(threshold=0.45, margin=0.06, votes_k=3, votes_m=5)


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
    b = box(("a", 0.3, 0.3), ("a", 0.5, 0.3), ("a", 0.3, 0.3), ("a", 0.5, 0.3))
    assert b.verdict() is None  # 2 good of 4, one vote left could make 3
    b.add(Vote("a", 0.46, 0.3, 5.0))
    assert b.verdict()[0] is Outcome.UNKNOWN


def test_small_margin_does_not_count():
    b = box(*[("a", 0.3, 0.05)] * 5)
    assert b.verdict()[0] is Outcome.UNKNOWN


def test_split_votes_are_unknown_early():
    b = box(("a", 0.3, 0.3), ("b", 0.3, 0.3), ("c", 0.3, 0.3), ("d", 0.3, 0.3))
    # a has 1 good vote and only one vote is left: K=3 is out of reach.
    assert b.verdict()[0] is Outcome.UNKNOWN


def test_final_verdict_without_enough_votes_is_unknown():
    b = box(("a", 0.3, 0.3))
    assert b.verdict() is None
    outcome, rid, dist, _ = b.verdict(final=True)
    assert outcome is Outcome.UNKNOWN and rid is None and dist == 0.3


def test_only_the_first_m_votes_count():
    b = box(*[("x", 0.9, math.inf)] * 5)
    b.add(Vote("a", 0.1, 0.5, 9.0))
    assert len(b.votes) == 5
