"""The site estimate's arithmetic: exact binomial bounds, the crowding, the tail fit and its bounds, the minimum
numbers of visits; and, on real gaps, a site whose look-alikes pass the threshold without crowding the band."""

from __future__ import annotations

import math

import pytest

from kiosk import siteestimate as se
from kiosk import sitestats as ss
from kiosk.config import MatchSettings
from kiosk.match.calibration import operating_point

POINTS = [{"residents": 100, "fpir_target": t, "threshold": th, "fpir": f, "fnir": n, "resolvable": True,
           "near_miss": {"deltas": list(se.DELTAS), "share": [f, f + q / 2, f + q, f + 1.5 * q, f + 2 * q, f + 3 * q]}}
          for t, th, f, n, q in ((0.0003, 0.42, 0.00029, 0.3, 0.01), (0.001, 0.45, 0.00097, 0.2, 0.02),
                                 (0.01, 0.52, 0.0098, 0.05, 0.08))]


@pytest.mark.parametrize("k, n", [(0, 50), (1, 50), (6, 300), (40, 1000), (300, 100000), (50, 50)])
def test_clopper_pearson_is_the_beta_quantile(k, n):
    beta = pytest.importorskip("scipy.stats").beta
    lo, hi = se.clopper_pearson(k, n)
    assert lo == pytest.approx(0.0 if k == 0 else beta.ppf(0.05, k, n - k + 1), abs=1e-9)
    assert hi == pytest.approx(1.0 if k == n else beta.ppf(0.95, k + 1, n - k), abs=1e-9)


def visits(n: int, near: int, threshold: float = 0.45) -> list[se.Visit]:
    return [se.Visit(0.01, threshold)] * near + [se.Visit(0.5, threshold)] * (n - near) + [se.Visit(None, threshold)]


def test_the_estimate_scales_the_calibrated_fpir_by_the_crowding_and_bounds_it():
    share = se.expected_share(POINTS[1]["near_miss"], 0.06)  # gap in (0, 0.06]: 0.03 of the strangers not accepted
    assert share == pytest.approx(0.03 / (1 - 0.00097))
    e = se.estimate(visits(2000, 180), POINTS, delta=0.06)
    assert e.strangers == 2001 and e.near == 180 and e.expected == pytest.approx(2001 * share)
    assert e.ratio == pytest.approx(180 / (2001 * share))
    lo, hi = se.clopper_pearson(180, 2001)
    assert (e.ratio_low, e.ratio_high) == (pytest.approx(lo / share), pytest.approx(hi / share))
    assert e.fpir is None and e.tail_near == 180  # every near miss at one gap: no shape to fit
    assert e.enough and e.crowded and "crowd the threshold" in e.line() and "too few gaps" in e.line()
    # The stricter calibrated point whose FPIR, scaled by the upper bound, stays within the target.
    s = se.suggest(POINTS, e, 80)
    assert s["fpir_target"] == 0.0003 and s["threshold"] == 0.42 and s["enough"]
    # As the calibration expected: not crowded, nothing suggested.
    calm = se.estimate(visits(2000, 60), POINTS, delta=0.06)
    assert calm.enough and not calm.crowded and se.suggest(POINTS, calm, 80) is None
    # Visits under a threshold the calibration does not hold are not counted.
    assert se.estimate(visits(100, 5, threshold=0.4444), POINTS).strangers == 0


def test_the_minimum_number_of_visits_is_where_the_bound_comes_within_twice_the_estimate():
    share = se.expected_share(POINTS[1]["near_miss"])
    need = se.min_visits(share)
    assert need == pytest.approx(6 / share, rel=0.01)  # six near misses expected: see docs/recognition.md

    def spread(n):
        k = round(n * share)
        return se.clopper_pearson(k, n)[1] / (k / n)

    assert spread(need) <= 2.0 < spread(round(need * 5 / 6))
    few = se.estimate(visits(need - 2, round((need - 2) * share) * 4), POINTS)
    assert not few.enough and not few.crowded and f"needs {need}" in few.line()
    assert se.estimate(visits(need - 1, round(need * share) * 4), POINTS).enough


def exponential_bins(rate: float, count: float, band: float = ss.TAIL_BAND, step: float = 0.001) -> list:
    """``count`` gaps in (0, band] with the density exp(rate g), in the events' bins (exact expected counts)."""
    total = ss._bin_mass(rate, 0.0, band)
    return [(i * step, (i + 1) * step, count * ss._bin_mass(rate, i * step, (i + 1) * step) / total)
            for i in range(round(band / step))]


@pytest.mark.parametrize("rate", [35.0, 10.0, 0.0, -10.0])
def test_the_tail_fit_recovers_the_rate_and_extrapolates_past_the_threshold(rate):
    # Strangers whose gaps have the density exp(rate g) down to -TAIL_DEPTH: the share past the threshold is known.
    past = 20_000 * ss._bin_mass(rate, -ss.TAIL_DEPTH, 0.0) / ss._bin_mass(rate, 0.0, ss.TAIL_BAND)
    t = ss.tail_fit(exponential_bins(rate, 20_000), 1_000_000)
    assert t.rate == pytest.approx(rate, abs=0.5) and t.near == 20_000
    assert t.fpir == pytest.approx(past / (1_000_000 + past), rel=0.02)
    assert t.fpir_low < t.fpir < t.fpir_high
    # Fewer gaps, the same shape: the same estimate, wider bounds.
    few = ss.tail_fit(exponential_bins(rate, 200), 10_000)
    assert few.fpir == pytest.approx(t.fpir, rel=0.05) and few.fpir_high / few.fpir > t.fpir_high / t.fpir
    # A density that does not fall toward the threshold puts more strangers past it than in the band before it.
    assert (t.fpir > 20_000 / 1_000_000) is (rate <= 0)


def test_the_tail_needs_gaps_to_fit_and_counts_them_in_the_events_bins():
    assert ss.tail_fit([], 1000).fpir is None and ss.tail_fit([(0.0, 0.001, 50)], 1000).fpir is None
    assert ss.gap_bins([0.0004, 0.001, 0.0011, 0.05, 0.051, -0.01]) == [(0.0, 0.001, 2), (0.001, 0.002, 1),
                                                                      (0.049, 0.05, 1)]


def test_the_tail_needs_visits_until_its_bound_comes_within_three_times_its_estimate():
    profile = POINTS[1]["near_miss"]
    need = ss.tail_min_visits(profile)
    edges = [0.0, 0.02, 0.04, ss.TAIL_BAND]
    shares = [ss._profile_share(profile, d) for d in edges]
    assert shares[-1] == pytest.approx(math.sqrt(shares[2] * (0.00097 + 0.03)))  # between 0.04 and 0.06, log-linear

    def spread(n):
        bins = [(a, b, n * (s1 - s0)) for a, b, s0, s1 in zip(edges, edges[1:], shares, shares[1:])]
        return ss.tail_fit(bins, n * (1 - shares[0])).spread

    assert spread(need) <= ss.TAIL_SPREAD < spread(round(need * 0.9))
    e = se.estimate(visits(need - 10, 0), POINTS)
    assert e.tail_min_visits == need and not e.tail_enough


@pytest.mark.slow
def test_look_alikes_who_pass_the_threshold_are_bounded_by_the_tail_not_by_the_crowding():
    """A site of real strangers and a few look-alikes: residents' own visits (real gaps), ``realgaps.SHIFT`` less
    alike.

    The look-alikes get 5 to 10 times the target in without crowding the band before it: the crowding stays
    under the calibration's and its scaled FPIR far under the truth (the old estimate); the tail bounds it.
    """
    from realgaps import lookalikes
    from site_streams import in_force

    points = se.load_points()
    for seed in (1, 2, 3):
        stream = lookalikes(20_000, 300, seed)
        true = sum(g is not None and g <= 0 for g in stream) / len(stream)
        e = se.estimate([se.Visit(g, in_force().threshold) for g in stream if g is None or g > 0], points)
        assert 5 * e.fpir_target < true < 10 * e.fpir_target and e.fpir_calibrated * e.ratio_high < true / 5  # the old estimate's bound
        assert e.fpir_low < true <= e.fpir_high and e.crowded and e.ratio_low < 1
        assert se.suggest(points, e, 10) is not None


def test_points_that_share_a_threshold_are_told_apart_by_the_doors_size_and_target():
    """The four-set fit gives several cells one threshold: a door at 100 residents and 0.1% runs 0.3773, as do the
    cells for 10 residents at 0.02% and 100 at 0.05%; its visits are judged against its own cell's profile."""
    points = se.load_points()
    for residents, target in ((10, 0.001), (100, 0.001), (300, 0.002), (30, 0.0005)):
        op = operating_point(MatchSettings(fpir_target=target), residents)
        own = next(p for p in points if p["residents"] == op.calibrated_size and p["fpir_target"] == target)
        assert se.point_for(points, op.threshold, target, residents) is own
        e = se.estimate([se.Visit(0.5, op.threshold, target, residents)] * 10, points)
        assert (e.fpir_calibrated, e.fpir_target) == (own["fpir"], target)
