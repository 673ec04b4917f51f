"""What the calibration expects of strangers near the threshold: the near-miss profile of an operating point.

A visit's *gap* is how far its best evidence fell short of the rule: the
smallest amount by which both thresholds would have to be loosened for the
visit to be accepted (K votes naming one resident, or the mean, margins
unchanged); an accepted visit's gap is at most 0. The door computes the same
gap for every face visit it decides (:meth:`kiosk.match.decide.VoteBox.gap`)
and sends it with UNKNOWN events, so that a site's strangers can be compared
with the calibration's (:mod:`kiosk.siteestimate`).

The profile is, for each delta, the share of strangers' visits whose gap is at
most delta: the visit FPIR of the point with both thresholds moved up by
delta (:func:`kiosk.evaluation.rates.shifted`), so it is exactly the rule's
own decision, accepted visits included (the share at delta 0 is the FPIR).
"""

from __future__ import annotations

from ..match.decide import OperatingPoint
from ..siteestimate import DELTAS
from .openset import Trials
from .rates import shifted, visit_rates


def near_miss(point: OperatingPoint, t: Trials, votes_k: int, deltas=DELTAS) -> dict:
    """``{"deltas": [...], "share": [...]}``: strangers' visits with a gap of at most each delta."""
    share = [round(visit_rates(shifted(point, d), t, votes_k).fpir, 6) for d in deltas]
    return {"deltas": [float(d) for d in deltas], "share": share}
