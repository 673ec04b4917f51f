"""The calibration's near-miss profile is the door's own gap: the same rule, on real descriptors."""

from __future__ import annotations

import json

import pytest
from realgaps import VISIT, gaps, point, trials

from kiosk.evaluation.calibration import Rule, fit_cell
from kiosk.evaluation.nearmiss import near_miss
from kiosk.evaluation.rates import visit_rates
from kiosk.match.calibration import CALIBRATION_FILE, Calibration
from kiosk import sitestats as ss
from kiosk.siteestimate import DELTAS

pytestmark = pytest.mark.slow


def test_the_profile_counts_exactly_the_visits_whose_door_gap_is_within_delta():
    p = point()
    profile = near_miss(p, trials(), VISIT.votes_k)
    strangers = gaps(p)
    assert profile["deltas"] == list(DELTAS) and len(strangers) > 1000
    for d, share in zip(profile["deltas"], profile["share"]):
        within = sum(g is not None and g <= d + 1e-9 for g in strangers) / len(strangers)
        assert within == pytest.approx(share, abs=2e-6), d
    # The share at 0 is the FPIR itself; it grows with delta (real strangers come near).
    assert profile["share"][0] == pytest.approx(visit_rates(p, trials(), VISIT.votes_k).fpir, abs=1e-6)
    assert profile["share"] == sorted(profile["share"]) and profile["share"][-1] > profile["share"][0]


def test_a_resident_accepted_has_a_gap_of_at_most_zero_and_one_turned_away_above():
    p = point()
    residents = gaps(p, mated=True)
    accepted = visit_rates(p, trials(), VISIT.votes_k)
    # Residents taken by the rule (as themselves or anyone) are the visits with a gap <= 0.
    assert sum(g is not None and g <= 0 for g in residents) >= accepted.mated - accepted.misses
    assert any(g is not None and g > 0 for g in residents)


def test_fit_cell_writes_the_profile_and_the_kiosk_reads_it_or_does_without():
    cal = json.loads(CALIBRATION_FILE.read_text())
    cell = fit_cell(trials(), Rule(cal["rule"]["margin"], cal["rule"]["cohort_weight"]), 0.01, VISIT.votes_k)
    assert cell["near_miss"]["deltas"] == list(DELTAS) and cell["near_miss"]["share"][0] == cell["fpir"]
    old = {**cal, "points": [{k: v for k, v in q.items() if k != "near_miss"} for q in cal["points"]]}
    assert all(q.near_miss is None for q in Calibration.from_json(old).points)  # an older file still loads
    new = {**cal, "points": [cell]}
    read = Calibration.from_json(new).points[0]
    assert read.near_miss_json() == cell["near_miss"]


def test_the_tail_the_calibration_expects_is_the_tail_of_the_doors_gaps():
    """``tail_min_visits`` fits the profile's sub-bands; a site fits its visits' gaps: the same shape, fitted."""
    p = point(0.05)  # a looser point: enough strangers' gaps in (0, TAIL_BAND] on the slice (at 1%: 26)
    strangers = gaps(p)
    profile = near_miss(p, trials(), VISIT.votes_k)
    seen = sum(g is None or g > 0 for g in strangers)
    door = ss.tail_fit(ss.gap_bins(g for g in strangers if g is not None), seen)
    n = len(strangers)
    edges = [d for d in profile["deltas"] if d < ss.TAIL_BAND] + [ss.TAIL_BAND]
    shares = [ss._profile_share(profile, d) for d in edges]
    cal = ss.tail_fit([(a, b, n * (s1 - s0)) for a, b, s0, s1 in zip(edges, edges[1:], shares, shares[1:])],
                      n * (1 - shares[0]))
    assert door.near >= 50 and cal.near == pytest.approx(door.near, abs=door.near * 0.1)
    assert door.fpir_low < cal.fpir < door.fpir_high and door.fpir_low < door.fpir < door.fpir_high
    assert ss.tail_min_visits(profile) > 0
