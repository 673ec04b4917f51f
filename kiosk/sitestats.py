"""The statistics of a site's estimate, in pure Python (the back end has no numpy): exact binomial bounds, and the
fit of a site's own tail of strangers' gaps.

The tail fit: the gaps in (0, TAIL_BAND] are fitted with an exponential
density exp(b g) by maximum likelihood (in the events' bins of 0.001; b is
free: 0 or negative means the density does not fall toward the threshold),
which is extrapolated past the threshold, down to a gap of -TAIL_DEPTH: the
strangers the doors accepted, which a site never sees as strangers. The 95%
bounds join a 97.5% Clopper–Pearson bound on the count in the band with a
97.5% profile-likelihood bound on b. :mod:`kiosk.siteestimate` uses both;
docs/recognition.md has the measurements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

#: One-sided confidence of the bounds.
CONFIDENCE = 0.95
#: The tail fit: the band of gaps fitted, how far past the threshold it is extrapolated (every stranger accepted
#: on the four development sets measured had a gap above -0.07), the spread at which the estimate means something.
TAIL_BAND = 0.05
TAIL_DEPTH = 0.10
TAIL_SPREAD = 3.0
#: chi-square(1) at 95%: a two-sided 95% (so one-sided 97.5%) profile-likelihood bound on the tail's rate.
_CHI2_95 = 3.841


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if k >= n else 0.0
    lp, lq = math.log(p), math.log1p(-p)
    total, log_c = 0.0, 0.0  # log C(n, i), built up term by term
    for i in range(0, k + 1):
        if i:
            log_c += math.log(n - i + 1) - math.log(i)
        total += math.exp(log_c + i * lp + (n - i) * lq)
    return min(1.0, total)


def _solve(f, lo: float, hi: float) -> float:
    """The root of a decreasing ``f`` on [lo, hi] (bisection)."""
    for _ in range(100):
        mid = (lo + hi) / 2
        if f(mid) > 0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def clopper_pearson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """One-sided exact bounds on a binomial share: (lower, upper), each holding with ``confidence``."""
    if n <= 0:
        return 0.0, 1.0
    alpha = 1.0 - confidence
    upper = 1.0 if k >= n else _solve(lambda p: _binom_cdf(k, n, p) - alpha, k / n, 1.0)
    lower = 0.0 if k <= 0 else _solve(lambda p: alpha - (1.0 - _binom_cdf(k - 1, n, p)), 0.0, k / n)
    return lower, upper



Bins = list[tuple[float, float, float]]  # (low, high, count): gaps in (low, high]


def _bin_mass(b: float, lo: float, hi: float) -> float:
    """The integral of exp(b g) over (lo, hi] (times a constant that cancels)."""
    if abs(b) < 1e-9:
        return hi - lo
    m = max(b * lo, b * hi)
    return math.exp(m) * (math.exp(b * hi - m) - math.exp(b * lo - m)) / b


def _tail_loglik(b: float, bins: Bins, band: float) -> float:
    total = _bin_mass(b, 0.0, band)
    return sum(k * (math.log(_bin_mass(b, lo, hi)) - math.log(total)) for lo, hi, k in bins if k)


#: The rates searched: wider than any tail the four sets showed (about -40 to 60 over 0.05).
_RATES = (-400.0, 600.0)


def _tail_rate(bins: Bins, band: float) -> tuple[float, float, float]:
    """The rate b of the exponential density over (0, band] (maximum likelihood) and its 95% profile bounds.

    The log-likelihood of an exponential family is concave in b: a ternary search finds its maximum, bisection
    each bound (a bound at the edge of the search: none).
    """
    lo, hi = _RATES
    for _ in range(200):
        m1, m2 = lo + (hi - lo) / 3, hi - (hi - lo) / 3
        if _tail_loglik(m1, bins, band) < _tail_loglik(m2, bins, band):
            lo = m1
        else:
            hi = m2
    b = (lo + hi) / 2
    floor = _tail_loglik(b, bins, band) - _CHI2_95 / 2
    inside = lambda x: _tail_loglik(x, bins, band) - floor  # noqa: E731
    low = _RATES[0] if inside(_RATES[0]) > 0 else _solve(lambda x: -inside(x), _RATES[0], b)
    high = _RATES[1] if inside(_RATES[1]) > 0 else _solve(inside, b, _RATES[1])
    return b, low, high


def _past_per_band(b: float, band: float, depth: float = TAIL_DEPTH) -> float:
    """Strangers with a gap in (-depth, 0] per stranger with a gap in (0, band], under the density exp(b g)."""
    return _bin_mass(b, -depth, 0.0) / _bin_mass(b, 0.0, band)


@dataclass(frozen=True)
class Tail:
    """The site's FPIR from its own tail (see the module's note); None where there is nothing to fit."""

    near: int  # stranger visits with a gap in (0, band]
    band: float
    rate: float | None
    fpir: float | None
    fpir_low: float | None
    fpir_high: float | None

    @property
    def spread(self) -> float:
        return self.fpir_high / self.fpir if self.fpir else math.inf


def tail_fit(bins: Bins, seen: float, band: float = TAIL_BAND) -> Tail:
    """The FPIR of strangers of whom ``seen`` visits were not accepted, ``bins`` of them with a gap in (0, band]."""
    k = sum(c for _, _, c in bins)
    if k < 2 or len({(lo, hi) for lo, hi, c in bins if c}) < 2:
        return Tail(round(k), band, None, None, None, None)
    b, b_low, b_high = _tail_rate(bins, band)
    n = max(round(seen), round(k))
    k_low, k_high = clopper_pearson(round(k), n, 0.975)

    def fpir(count: float, rate: float) -> float:
        past = count * _past_per_band(rate, band)
        return past / (seen + past)

    return Tail(round(k), band, b, fpir(k, b), fpir(k_low * n, b_high), fpir(k_high * n, b_low))


def gap_bins(gaps: Iterable[float], band: float = TAIL_BAND, step: float = 0.001) -> Bins:
    """The gaps in (0, band], counted in the events' bins of ``step`` (the door rounds them to 0.001)."""
    counts: dict[int, int] = {}
    for g in gaps:
        if 0.0 < g <= band + 1e-9:
            i = max(1, math.ceil(g / step - 1e-6))
            counts[i] = counts.get(i, 0) + 1
    return [((i - 1) * step, i * step, c) for i, c in sorted(counts.items())]


def _profile_share(near_miss: dict, delta: float) -> float | None:
    """The calibration's share of strangers with a gap of at most ``delta`` (log-linear between its deltas)."""
    ds, sh = near_miss["deltas"], near_miss["share"]
    if delta in ds:
        return sh[ds.index(delta)]
    for (d0, s0), (d1, s1) in zip(zip(ds, sh), zip(ds[1:], sh[1:])):
        if d0 < delta < d1 and s0 > 0 and s1 > 0:
            return math.exp(math.log(s0) + (delta - d0) / (d1 - d0) * (math.log(s1) - math.log(s0)))
    return None


def tail_min_visits(near_miss: dict | None, band: float = TAIL_BAND, spread: float = TAIL_SPREAD) -> int:
    """Stranger visits the tail estimate needs: the fewest at which, with gaps exactly as the calibration's profile
    expects (its counts per sub-band), the upper bound is at most ``spread`` times the estimate; 0 if it never is."""
    if not near_miss:
        return 0
    edges = sorted({d for d in near_miss["deltas"] if 0.0 <= d < band} | {band})
    shares = [_profile_share(near_miss, d) for d in edges]
    if any(x is None for x in shares) or shares[-1] <= shares[0]:
        return 0
    accepted = shares[0]

    def spread_at(n: int) -> float:
        bins = [(lo, hi, n * (s1 - s0)) for lo, hi, s0, s1 in zip(edges, edges[1:], shares, shares[1:])]
        return tail_fit(bins, n * (1.0 - accepted), band).spread

    lo, hi = 100, 100
    while spread_at(hi) > spread:
        lo, hi = hi, hi * 2
        if hi > 10_000_000:
            return 0
    while hi - lo > max(1, lo // 100):
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if spread_at(mid) <= spread else (mid, hi)
    return hi
