"""Turning a visit's votes into one door decision.

A visit (one track) casts a vote per descriptor: the nearest resident, its
distance, and the margin to the nearest *other* resident. The visit is
ACCEPTED for resident R only when K of its last M votes name R with a
distance under the threshold and a margin over the configured one.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field

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

    def add(self, vote: Vote) -> None:
        if not self.full:
            self.votes.append(vote)

    @property
    def full(self) -> bool:
        """The visit's descriptor budget is spent."""
        return len(self.votes) >= self.settings.max_votes

    @property
    def settled(self) -> bool:
        """K votes already agree: more descriptors would change nothing."""
        return self.leader()[1] >= self.settings.votes_k

    @property
    def window(self) -> list[Vote]:
        return self.votes[-self.settings.votes_m :]

    def _good(self, v: Vote) -> bool:
        s = self.settings
        return v.resident_id is not None and v.distance <= s.threshold and v.margin >= s.margin

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
        if (final or self.full) and self.votes:
            best = min(self.votes, key=lambda v: v.distance)
            return Outcome.UNKNOWN, None, best.distance, best.margin
        return None
