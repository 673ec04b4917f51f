"""Turning a visit's votes into one door decision.

A visit (one track) casts a vote per descriptor: the nearest resident, its
distance, and the margin to the nearest *other* resident. The visit is
ACCEPTED for resident R when K of its last M votes name R with a distance
under the threshold and a margin over the configured one, or when the mean
of its descriptors (once it has M) names R under the stricter visit
threshold, with the margin, and R is the nearest resident of most of its
single descriptors.

The mean is the visit's own template: averaging several looks at a face
cancels much of what varies from frame to frame (pose, expression, blur),
so a resident seen from a few metres, whose single frames each fall just
over the threshold, is still recognised. It also draws an impostor's
descriptor a little closer to everyone, which is why its threshold is
lower (see docs/recognition.md).

The numbers of the rule are an :class:`OperatingPoint`: the fixed ones of
``[match]``, or (with ``match.fpir_target``) those the calibration gives
for the gallery's size (:mod:`kiosk.match.calibration`). A vote's distance
may be normalised against the rest of the gallery (``cohort_weight``): a
face that is close to many residents at once must be closer still to the
one it is taken for.
"""

from __future__ import annotations

import enum
import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ..config import MatchSettings


class Outcome(str, enum.Enum):
    ACCEPTED = "ACCEPTED"
    UNKNOWN = "UNKNOWN"
    TOO_POOR = "TOO_POOR"
    # The resident was accepted less than repeat_interval_s ago.
    DUPLICATE = "DUPLICATE"
    # Liveness could not tell: the resident is asked to look at the camera.
    LOOK_AT_CAMERA = "LOOK_AT_CAMERA"
    # A presentation attack (photo, screen) was detected.
    SPOOF = "SPOOF"
    # Refused because the device is not at its service location.
    REFUSED_LOCATION = "REFUSED_LOCATION"
    # A resident's QR credential was refused (expired, replayed, other site, forged).
    QR_REFUSED = "QR_REFUSED"
    # The face narrowed the candidates; the resident's QR credential must confirm (second factor).
    SHOW_QR = "SHOW_QR"
    # Enrollment at the door (kiosk.enrollment): taking descriptors (shown, never committed), the
    # descriptors sent as a proposal for the admin to approve, or the enrollment not finished.
    ENROLLING = "ENROLLING"
    ENROLL_PROPOSED = "ENROLL_PROPOSED"
    ENROLL_FAILED = "ENROLL_FAILED"

    @property
    def event_type(self) -> str:
        return "checkin" if self is Outcome.ACCEPTED else self.value.lower()


@dataclass(frozen=True, slots=True)
class Vote:
    """One descriptor's answer: nearest resident and how clearly."""

    resident_id: str | None
    distance: float
    margin: float  # runner-up distance minus best distance (inf if none)
    timestamp: float
    # Mean distance to the residents after the nearest (the gallery's cohort); nan if none.
    cohort: float = math.nan
    runner_up_id: str | None = None


@dataclass(frozen=True)
class OperatingPoint:
    """The rule's numbers, and what they are expected to give at this gallery's size.

    A vote names its resident when its score (the distance, normalised
    against the cohort when ``cohort_weight`` is set) is at most
    ``threshold`` and it beats the runner-up by ``margin``; a visit's mean,
    at most ``visit_threshold`` (never above ``threshold``).
    """

    threshold: float
    margin: float
    visit_threshold: float
    cohort_weight: float = 0.0
    cohort_anchor: float = 0.0
    source: str = "config"  # "config" (the fixed [match] numbers) or "calibration"
    residents: int | None = None  # the gallery size it was chosen for
    fpir_target: float | None = None
    fpir: float | None = None  # strangers accepted per visit, as calibrated
    fnir: float | None = None  # residents' visits not accepted, as calibrated
    calibrated_size: int | None = None  # the calibrated gallery size the numbers come from
    met: bool = True  # the target is met at this size, with a usable FNIR
    second_factor: bool = False  # a QR credential confirms a resident the face narrowed to
    face_alone: bool = True  # a face may open the door by itself

    @classmethod
    def fixed(cls, settings: MatchSettings) -> "OperatingPoint":
        return cls(settings.threshold, settings.margin, settings.visit_threshold)

    def score(self, distance, cohort):
        """The distance, normalised against the cohort (scalars or numpy arrays)."""
        if not self.cohort_weight:
            return distance
        c = np.where(np.isnan(cohort), self.cohort_anchor, cohort)
        out = distance + self.cohort_weight * (self.cohort_anchor - c)
        return float(out) if np.ndim(out) == 0 else out

    def vote_names(self, distance, margin, cohort=math.nan):
        """Does one descriptor name its nearest resident? (scalars or numpy arrays)"""
        return (self.score(distance, cohort) <= self.threshold) & (margin >= self.margin)

    def mean_names(self, distance, margin, cohort=math.nan):
        """Does a visit's mean descriptor name its nearest resident? (single votes must agree too)"""
        if self.visit_threshold <= 0:
            return np.zeros(np.shape(distance), bool) if np.ndim(distance) else False
        limit = min(self.visit_threshold, self.threshold)
        return (self.score(distance, cohort) <= limit) & (margin >= self.margin)

    def describe(self) -> str:
        s = f"threshold {self.threshold:.3f}, margin {self.margin:.3f}, visit threshold {self.visit_threshold:.3f}"
        if self.cohort_weight:
            s += f", cohort weight {self.cohort_weight:g}"
        if self.source == "calibration":
            s += (f"; calibrated for {self.residents} residents: expected FPIR {percent(self.fpir)} per visit"
                  f" (target {percent(self.fpir_target)}), FNIR {percent(self.fnir)}")
        return s


def percent(x: float | None) -> str:
    """A rate as a short percentage ("0.1%", "23%")."""
    return "n/a" if x is None else f"{100 * x:.2g}%"


@dataclass(frozen=True)
class Decision:
    """What the kiosk decided about one visit."""

    outcome: Outcome
    track_id: int
    resident_id: str | None = None
    distance: float | None = None
    margin: float | None = None
    frames: int = 0  # descriptors that voted
    reason: str | None = None  # quality reason for TOO_POOR, etc.
    timestamp: float = 0.0  # monotonic time of the decision
    liveness: dict[str, float] = field(default_factory=dict)
    method: str = "face"  # how the resident identified: "face", "qr", or "face+qr" (second factor)
    # SHOW_QR: the residents the face could be (kept in memory for the credential, never published).
    candidates: tuple[str, ...] = ()
    # How far the face fell short of the rule in force (VoteBox.gap; <= 0: it passed); None: nothing came near.
    gap: float | None = None
    # In memory only, never published: the resident nearest the face (UNKNOWN), and the one the rule
    # in force names (SHOW_QR): what tells a resident's retry, and a face the credential confirms.
    nearest: str | None = None
    named: str | None = None
    # face+qr: whether the face alone named the resident the credential confirmed.
    face_alone: bool | None = None
    # ACCEPTED and SHOW_QR: the visit's mean descriptor, in memory only (a door template may come of it,
    # kiosk.enrollment.door_templates); never published, never stored.
    descriptor: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def event_type(self) -> str:
        """The event's ``type``: an accepted QR credential is a check-in of type ``qr``."""
        if self.method == "qr" and self.outcome is Outcome.ACCEPTED:
            return "qr"
        return self.outcome.event_type

    def describe(self) -> str:
        parts = [f"{self.outcome.value:<8}", f"track={self.track_id}"]
        if self.method != "face":
            parts.append(f"method={self.method}")
        if self.resident_id:
            parts.append(f"resident={self.resident_id}")
        if self.distance is not None:
            parts.append(f"distance={self.distance:.3f}")
        if self.margin is not None and self.margin != float("inf"):
            parts.append(f"margin={self.margin:.3f}")
        parts.append(f"frames={self.frames}")
        if self.reason:
            parts.append(f"reason={self.reason}")
        return " ".join(parts)


class VoteBox:
    """Collects a visit's votes and says when they suffice for a decision.

    ACCEPTED needs K good votes for one resident among the last M (a sliding
    window: a resident walking up is judged on their closest, sharpest frames,
    not written off on the first far ones). A visit that reaches ``max_votes``
    descriptors, or ends, without that is UNKNOWN.
    """

    def __init__(self, settings: MatchSettings, point: OperatingPoint | None = None):
        self.settings = settings
        self.point = point or OperatingPoint.fixed(settings)
        self.votes: list[Vote] = []
        self.descriptors: list[np.ndarray] = []  # those that came with their votes
        self.visit: Vote | None = None  # the mean descriptor's answer (see set_visit)

    def add(self, vote: Vote, descriptor: np.ndarray | None = None) -> None:
        if self.full:
            return
        self.votes.append(vote)
        if descriptor is not None:
            self.descriptors.append(descriptor)

    def mean(self) -> np.ndarray | None:
        """The visit's mean descriptor, once M descriptors voted and the visit rule is on."""
        if self.point.visit_threshold <= 0 or len(self.descriptors) < self.settings.votes_m:
            return None
        return np.mean(self.descriptors, axis=0)

    def set_visit(self, vote: Vote) -> None:
        """The gallery's answer for :meth:`mean`."""
        self.visit = vote

    @property
    def full(self) -> bool:
        """The visit's descriptor budget is spent."""
        return len(self.votes) >= self.settings.max_votes

    @property
    def settled(self) -> bool:
        """K votes already agree: more descriptors would change nothing."""
        return self.leader()[1] >= self.settings.votes_k or self._visit_good()

    @property
    def window(self) -> list[Vote]:
        return self.votes[-self.settings.votes_m :]

    @property
    def candidate_point(self) -> OperatingPoint:
        """The looser rule that narrows a face to candidates for a second factor: the fixed
        ``match.threshold`` and ``visit_threshold``, no margin (the credential tells lookalikes apart)."""
        s = self.settings
        return OperatingPoint(s.threshold, 0.0, s.visit_threshold)

    def _good(self, v: Vote, point: OperatingPoint | None = None) -> bool:
        p = point or self.point
        return v.resident_id is not None and bool(p.vote_names(v.distance, v.margin, v.cohort))

    def _visit_good(self, point: OperatingPoint | None = None) -> bool:
        """The mean descriptor names a resident clearly, and most single descriptors agree on who is nearest."""
        v, p = self.visit, point or self.point
        if v is None or v.resident_id is None or not p.mean_names(v.distance, v.margin, v.cohort):
            return False
        return 2 * sum(x.resident_id == v.resident_id for x in self.votes) > len(self.votes)

    def leader(self, point: OperatingPoint | None = None) -> tuple[str | None, int]:
        """The resident with most good votes in the window, and how many."""
        counts = Counter(v.resident_id for v in self.window if self._good(v, point))
        if not counts:
            return None, 0
        rid, n = counts.most_common(1)[0]
        return rid, n

    def _named(self, point: OperatingPoint) -> tuple[str, float, float] | None:
        """The resident the rule at ``point`` names (K of M votes, or the mean), with distance and margin."""
        rid, n = self.leader(point)
        if rid is not None and n >= self.settings.votes_k:
            mine = [v for v in self.window if v.resident_id == rid and self._good(v, point)]
            dist = sorted(v.distance for v in mine)[len(mine) // 2]
            margin = sorted(v.margin for v in mine)[len(mine) // 2]
            return rid, dist, margin
        if self._visit_good(point):
            return self.visit.resident_id, self.visit.distance, self.visit.margin
        return None

    def gap(self, point: OperatingPoint | None = None) -> float | None:
        """How far the visit fell short of ``point``'s rule: the least both thresholds would have to be
        loosened for it to name a resident (at most 0 if it does). Any window of M votes counts, as
        the visit went; margins stay. None: no vote and no mean with the margin (nothing came near).

        The same gap as the calibration's near-miss profile (:mod:`kiosk.evaluation.nearmiss`).
        """
        p = point or self.point
        k, m = self.settings.votes_k, self.settings.votes_m
        best = math.inf
        for end in range(1, len(self.votes) + 1):
            over: dict[str, list[float]] = {}
            for v in self.votes[max(0, end - m):end]:
                if v.resident_id is not None and v.margin >= p.margin:
                    over.setdefault(v.resident_id, []).append(float(p.score(v.distance, v.cohort)) - p.threshold)
            for gaps in over.values():
                if len(gaps) >= k:
                    best = min(best, sorted(gaps)[k - 1])
        v = self.visit
        if (p.visit_threshold > 0 and v is not None and v.resident_id is not None and v.margin >= p.margin
                and 2 * sum(x.resident_id == v.resident_id for x in self.votes) > len(self.votes)):
            best = min(best, float(p.score(v.distance, v.cohort)) - min(p.visit_threshold, p.threshold))
        return None if best == math.inf else best

    def named(self) -> str | None:
        """The resident the rule in force names, whatever the second-factor policy does with it."""
        found = self._named(self.point)
        return found[0] if found else None

    def nearest(self) -> str | None:
        """The resident nearest to any of the visit's votes (kept in memory, never published)."""
        return min(self.votes, key=lambda v: v.distance).resident_id if self.votes else None

    def candidates(self) -> tuple[str, ...]:
        """Residents the face could be, by the candidate rule: each vote's and the mean's nearest
        and runner-up within ``match.threshold``, nearest first."""
        limit = self.settings.threshold
        found: dict[str, float] = {}
        for v in [*self.votes, *([self.visit] if self.visit else [])]:
            for rid, d in ((v.resident_id, v.distance), (v.runner_up_id, v.distance + v.margin)):
                if rid is not None and d <= limit:
                    found[rid] = min(d, found.get(rid, math.inf))
        return tuple(sorted(found, key=found.get))

    def verdict(self, final: bool = False) -> tuple[Outcome, str | None, float | None, float | None] | None:
        """ACCEPTED as soon as K good votes agree in the window (or the mean names one resident);
        UNKNOWN once the budget or the visit is over without that; ``None`` while undecided.

        Where a QR credential is the second factor (``point.second_factor``), a face the
        operating point does not let through alone, but the candidate rule names, is
        SHOW_QR: at once when faces never open the door alone, else once the budget or
        the visit is over.
        """
        p = self.point
        named = self._named(p)
        if named is not None and p.face_alone:
            return (Outcome.ACCEPTED, *named)
        if p.second_factor:
            narrowed = self._named(self.candidate_point) or named
            if narrowed is not None and (not p.face_alone or final or self.full):
                return (Outcome.SHOW_QR, *narrowed)
        if (final or self.full) and self.votes:
            best = min(self.votes, key=lambda v: v.distance)
            return Outcome.UNKNOWN, None, best.distance, best.margin
        return None
