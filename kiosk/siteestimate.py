"""How close a site's strangers come to the threshold, against what the calibration expected; the site's FPIR.

A stranger accepted at a door is never seen as a stranger: the event is a
check-in like any other. What a site does show is how close its strangers
come: every UNKNOWN visit carries its *gap* (how far the visit fell short of
the rule, :mod:`kiosk.evaluation.nearmiss`) and the threshold in force. Two
things are computed from the gaps (docs/recognition.md has the measurements):

- **crowding**, the detector: near misses seen (gap in (0, delta]) / near
  misses the calibration's profile (``near_miss``) expected among as many
  visits, with one-sided Clopper–Pearson bounds. The site is *crowded* when
  the lower bound is above 1: its strangers come closer than the
  calibration's, beyond chance. It needs a few hundred visits.
- **the site's FPIR**, from the site's own tail (:mod:`kiosk.sitestats`):
  the gaps in (0, 0.05] are fitted with an exponential density (b may be 0
  or negative: the density does not fall toward the threshold), which is
  extrapolated past the threshold, down to a gap of -0.10: the strangers
  the doors accepted. Scaling the calibrated FPIR by the crowding
  instead understates a crowded site several times over (its look-alikes
  pass the threshold without filling the band in proportion). It needs tens
  of thousands of visits before its bounds come within 3 times the
  estimate; they hold before.

The site is also *crowded* when the tail's lower bound is above the target in
force. Nothing here needs numpy: the back end runs it too. Used by ``kiosk-admin
report site``, the door's status and ``kiosk selftest`` (docs/recognition.md,
docs/backend.md).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from .sitestats import CONFIDENCE, TAIL_BAND, clopper_pearson, gap_bins, tail_fit, tail_min_visits

#: The gaps the calibration's near-miss profile is measured at (0: the FPIR itself).
DELTAS = (0.0, 0.02, 0.04, 0.06, 0.08, 0.10)
#: The near-miss band the estimate counts: a gap in (0, DEFAULT_DELTA].
DEFAULT_DELTA = 0.10
#: The estimate means something once, at the calibration's own crowding, its upper bound is at most this
#: many times the estimate (so that a site at twice the calibrated FPIR can be told from one that keeps it).
MEANINGFUL_SPREAD = 2.0
#: The calibration the package ships (read here as plain JSON: the back end has no numpy).
CALIBRATION_FILE = Path(__file__).resolve().parent / "match" / "calibration.json"


def expected_share(near_miss: dict, delta: float = DEFAULT_DELTA) -> float | None:
    """The share of strangers' visits *not accepted* whose gap is in (0, delta], by the calibration."""
    if not near_miss:
        return None
    deltas, share = near_miss["deltas"], near_miss["share"]
    if delta not in deltas or 0.0 not in deltas:
        return None
    accepted = share[deltas.index(0.0)]
    return (share[deltas.index(delta)] - accepted) / (1.0 - accepted)


def min_visits(share: float, spread: float = MEANINGFUL_SPREAD, confidence: float = CONFIDENCE) -> int:
    """Stranger visits the estimate needs before it means anything.

    The fewest visits N at which a site crowding exactly as the calibration expected (N × ``share``
    near misses, rounded) gets an upper bound at most ``spread`` times its estimate.
    """
    if not share or share <= 0:
        return 0
    k = 1
    while True:  # the spread depends (nearly) on the count of near misses alone: find the count, then N
        n = max(k, math.ceil(k / share))
        if clopper_pearson(k, n, confidence)[1] <= spread * k / n:
            return n
        k += 1



@dataclass(frozen=True)
class Estimate:
    """A site's (or a door's) strangers against the calibration, and the FPIR that follows."""

    strangers: int  # UNKNOWN visits with a calibrated point (residents' retries left out)
    near: int  # of which near misses: gap in (0, delta]
    expected: float  # near misses the calibration expected among them
    delta: float
    ratio: float | None  # near / expected
    ratio_low: float | None
    ratio_high: float | None
    fpir_calibrated: float | None  # the point in force, as calibrated (per visit)
    fpir: float | None  # the site's, estimated from its own tail (None: nothing to fit)
    fpir_high: float | None
    fpir_target: float | None
    min_visits: int  # stranger visits the crowding needs (see min_visits)
    enough: bool
    crowded: bool  # strangers come closer than the calibration's, or the site's FPIR is over target, beyond chance
    fpir_low: float | None = None
    tail_near: int = 0  # stranger visits with a gap in (0, tail_band]
    tail_band: float = TAIL_BAND
    tail_rate: float | None = None  # the fitted rate b of the gaps' density near the threshold
    tail_min_visits: int = 0  # stranger visits the tail estimate needs (see tail_min_visits)
    tail_enough: bool = False  # enough visits for the tail's bounds to come within TAIL_SPREAD (they hold before)

    def as_json(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    def line(self) -> str:
        """One line for a report, the status and the selftest."""
        from_pct = lambda x: "n/a" if x is None else f"{100 * x:.2g}%"  # noqa: E731
        if not self.strangers:
            return "no stranger visits with a calibrated point yet"
        head = (f"{self.strangers} stranger visits, {self.near} near misses (gap <= {self.delta:g}; "
                f"{self.expected:.1f} expected)")
        if not self.enough:
            return head + f": too few to estimate (needs {self.min_visits})"
        text = (f"{head}: {self.ratio:.2f}x the calibration's crowding "
                f"(95% {self.ratio_low:.2f}-{self.ratio_high:.2f}); ")
        if self.fpir is not None:
            text += (f"site FPIR ~{from_pct(self.fpir)} (95% {from_pct(self.fpir_low)}-{from_pct(self.fpir_high)}, "
                     f"from {self.tail_near} gaps <= {self.tail_band:g}"
                     + ("" if self.tail_enough else f"; wide below {self.tail_min_visits} visits")
                     + f") against {from_pct(self.fpir_calibrated)} calibrated")
        else:
            text += f"site FPIR: too few gaps <= {self.tail_band:g} to fit; {from_pct(self.fpir_calibrated)} calibrated"
        if self.crowded and self.enough and self.ratio_low > 1.0:
            text += "; strangers crowd the threshold more than the calibration expected"
        elif self.crowded:
            text += "; strangers crowd the threshold: the site's FPIR is over its target, beyond chance"
        return text


@dataclass(frozen=True)
class Visit:
    """One UNKNOWN visit as the estimate sees it: its gap (None: no rule came near) and the rule in force.

    ``fpir_target`` and ``gallery_size`` (as the event carries them) tell apart calibrated points that share a
    threshold (the four-set fit has several).
    """

    gap: float | None
    threshold: float
    fpir_target: float | None = None
    gallery_size: int | None = None


@dataclass
class Split:
    """A door's or a site's face visits, told apart: strangers, and residents' visits (some turned away)."""

    strangers: list[Visit]
    resident_visits: int = 0
    turned_away: int = 0
    gallery_size: int | None = None  # as the latest stranger visit had it

    @property
    def fnir(self) -> float | None:
        return self.turned_away / self.resident_visits if self.resident_visits else None


def split(events: Iterable[dict]) -> Split:
    """Tell strangers from residents among events (dicts of ``type`` and ``claims``, one door or one site).

    An UNKNOWN face visit (one with a threshold) is a stranger's unless a check-in names it as its retry
    (``retry_of``): then it is a resident turned away. A face check-in is a resident's visit, turned away
    too if a QR credential had to confirm what the face alone did not name (``face_alone`` false).
    """
    events = list(events)
    retried = {(e["claims"].get("device"), e["claims"]["retry_of"]) for e in events if e["claims"].get("retry_of")}
    out = Split([])
    for e in events:
        c = e["claims"]
        if c.get("threshold") is None:
            continue
        if e["type"] == "unknown":
            if (c.get("device"), c.get("event_id")) in retried:
                out.resident_visits += 1
                out.turned_away += 1
            else:
                out.strangers.append(Visit(c.get("gap"), c["threshold"], c.get("fpir_target"), c.get("gallery_size")))
                out.gallery_size = c.get("gallery_size")
        elif e["type"] == "checkin":
            out.resident_visits += 1
            out.turned_away += int(c.get("face_alone") is False)
    return out


#: The event types the estimate reads.
EVENT_TYPES = ("unknown", "checkin", "qr")
#: How far back a door's own estimate looks (its outbox keeps delivered events ``outbox.retention_days``).
DOOR_WINDOW_S = 30 * 86400.0


def door_estimate(events: Iterable[dict], points: list[dict], delta: float = DEFAULT_DELTA) -> dict:
    """The door's own estimate, for its status and ``kiosk selftest``: the estimate, its line, the FNIR."""
    s = split(events)
    est = estimate(s.strangers, points, delta=delta)
    return {**est.as_json(), "resident_visits": s.resident_visits, "turned_away": s.turned_away,
            "fnir": None if s.fnir is None else round(s.fnir, 4), "summary": est.line()}


def load_points(path: Path | None = None) -> list[dict]:
    """The calibration's points (plain dicts; those without a near-miss profile too)."""
    data = json.loads(Path(path or CALIBRATION_FILE).read_text(encoding="utf-8"))
    return list(data["points"])


def point_for(points: list[dict], threshold: float, fpir_target: float | None = None,
              residents: int | None = None) -> dict | None:
    """The calibrated point with this threshold (the one the door ran), or None.

    Several points may share a threshold: the door's gallery size picks the calibrated size it used (the
    smallest at least as large, as :meth:`kiosk.match.calibration.Calibration.at` does), and its target the
    point of that size with the largest target within it; without them, the largest size's loosest.
    """
    found = [p for p in points if abs(p["threshold"] - threshold) < 5e-5 and p.get("near_miss")]
    if residents and found:
        sizes = sorted({p["residents"] for p in points})
        basis = next((s for s in sizes if s >= residents), sizes[-1])
        found = [p for p in found if p["residents"] == basis] or found
    if fpir_target and found:
        found = [p for p in found if p["fpir_target"] <= fpir_target * (1 + 1e-9)] or found
    return max(found, key=lambda p: (p["residents"], p["fpir_target"])) if found else None


def estimate(visits: Iterable[Visit], points: list[dict], *, delta: float = DEFAULT_DELTA,
             current: dict | None = None) -> Estimate:
    """Pool the visits (each against its own point's expected share) into one estimate.

    ``current``: the point whose FPIR is scaled (default: the last visit's).
    """
    n = near = 0
    expected = 0.0
    last = None
    tail_gaps = []
    looked_up: dict[tuple, tuple[dict | None, float | None]] = {}  # each rule's point, once (not per visit)
    for v in visits:
        key = (v.threshold, v.fpir_target, v.gallery_size)
        if key not in looked_up:
            p = point_for(points, v.threshold, v.fpir_target, v.gallery_size)
            looked_up[key] = p, (expected_share(p["near_miss"], delta) if p else None)
        p, share = looked_up[key]
        if share is None:
            continue
        n += 1
        expected += share
        near += int(v.gap is not None and 0.0 < v.gap <= delta + 1e-9)
        if v.gap is not None:
            tail_gaps.append(v.gap)
        last = p
    point = current or last
    share = expected / n if n else 0.0
    need = min_visits(share) if share else 0
    enough = n > 0 and share > 0 and n >= need
    if not n or not share:
        return Estimate(n, near, expected, delta, None, None, None, point and point["fpir"], None, None,
                        point and point["fpir_target"], need, False, False)
    lo, hi = clopper_pearson(near, n)
    ratio, r_lo, r_hi = near / expected, lo / share, hi / share
    tail = tail_fit(gap_bins(tail_gaps), n)
    t_need = tail_min_visits(point.get("near_miss"))
    t_enough = bool(t_need) and n >= t_need and tail.fpir is not None
    # Crowded: strangers come closer than the calibration's beyond chance, or the tail puts the site's FPIR over
    # its target beyond chance (a site whose look-alikes pass the threshold without crowding the band).
    over = tail.fpir_low is not None and point["fpir_target"] is not None and tail.fpir_low > point["fpir_target"]
    return Estimate(n, near, expected, delta, ratio, r_lo, r_hi, point["fpir"], tail.fpir, tail.fpir_high,
                    point["fpir_target"], need, enough, (enough and r_lo > 1.0) or over, fpir_low=tail.fpir_low,
                    tail_near=tail.near, tail_rate=tail.rate, tail_min_visits=t_need, tail_enough=t_enough)


def suggest(points: list[dict], estimate: Estimate, residents: int) -> dict | None:
    """A stricter target that keeps the site's FPIR (upper bound) within the target in force, if one is needed.

    The calibrated point of the same size with the largest target whose FPIR, scaled by how many times the
    calibrated FPIR the site's is (its upper bound: the tail's when it has enough visits or puts the site over
    its target, and never less than the crowding's), is still within the target in force (``enough``); if none
    is, the strictest (``enough`` false). None when nothing stricter is needed or none exists.
    """
    if not estimate.crowded or estimate.fpir_target is None or not estimate.ratio_high:
        return None
    factor = estimate.ratio_high
    tail_over = estimate.fpir_low is not None and estimate.fpir_low > estimate.fpir_target
    if estimate.fpir_high is not None and estimate.fpir_calibrated and (estimate.tail_enough or tail_over):
        factor = max(factor, estimate.fpir_high / estimate.fpir_calibrated)
    sizes = sorted({p["residents"] for p in points})
    basis = next((s for s in sizes if s >= residents), sizes[-1])
    cells = sorted((p for p in points if p["residents"] == basis and p.get("resolvable")),
                   key=lambda p: p["fpir_target"])
    fitting = [p for p in cells if p["fpir"] * factor <= estimate.fpir_target]
    choice = fitting[-1] if fitting else (cells[0] if cells else None)
    if choice is None or choice["fpir_target"] >= estimate.fpir_target:
        return None
    return {"fpir_target": choice["fpir_target"], "threshold": choice["threshold"], "fnir": choice["fnir"],
            "residents": basis, "enough": bool(fitting)}
