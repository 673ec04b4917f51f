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
"""

from __future__ import annotations

import enum
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
    method: str = "face"  # how the resident identified: "face" or "qr"

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

    def __init__(self, settings: MatchSettings):
        self.settings = settings
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
        if self.settings.visit_threshold <= 0 or len(self.descriptors) < self.settings.votes_m:
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

    def _good(self, v: Vote) -> bool:
        s = self.settings
        return v.resident_id is not None and v.distance <= s.threshold and v.margin >= s.margin

    def _visit_good(self) -> bool:
        """The mean descriptor names a resident clearly, and most single descriptors agree on who is nearest."""
        v, s = self.visit, self.settings
        if v is None or v.resident_id is None or v.distance > min(s.visit_threshold, s.threshold) or v.margin < s.margin:
            return False
        return 2 * sum(x.resident_id == v.resident_id for x in self.votes) > len(self.votes)

    def leader(self) -> tuple[str | None, int]:
        """The resident with most good votes in the window, and how many."""
        counts = Counter(v.resident_id for v in self.window if self._good(v))
        if not counts:
            return None, 0
        rid, n = counts.most_common(1)[0]
        return rid, n

    def verdict(self, final: bool = False) -> tuple[Outcome, str | None, float | None, float | None] | None:
        """ACCEPTED as soon as K good votes agree in the window; UNKNOWN once the
        budget or the visit is over without that; ``None`` while undecided."""
        s = self.settings
        rid, n = self.leader()
        if rid is not None and n >= s.votes_k:
            mine = [v for v in self.window if v.resident_id == rid and self._good(v)]
            dist = sorted(v.distance for v in mine)[len(mine) // 2]
            margin = sorted(v.margin for v in mine)[len(mine) // 2]
            return Outcome.ACCEPTED, rid, dist, margin
        if self._visit_good():
            return Outcome.ACCEPTED, self.visit.resident_id, self.visit.distance, self.visit.margin
        if (final or self.full) and self.votes:
            best = min(self.votes, key=lambda v: v.distance)
            return Outcome.UNKNOWN, None, best.distance, best.margin
        return None
