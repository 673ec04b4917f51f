"""Following faces across frames, so that one visit yields one decision.

Detections are matched to live tracks greedily by box overlap (IoU). A track
that goes unseen for ``max_gap_s`` (frame time) has ended: the visit is over.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field

from ..config import MatchSettings, TrackSettings
from .decide import Decision, OperatingPoint, VoteBox
from .detect import Box, Face


@dataclass
class Track:
    id: int
    box: Box
    first_seen: float
    last_seen: float
    votes: VoteBox
    frames: int = 0  # frames in which the face was seen
    good_frames: int = 0  # frames that passed the quality gates
    poor_reasons: Counter = field(default_factory=Counter)
    decision: Decision | None = None
    # Per-stage scratch (e.g. liveness observations), keyed by stage name.
    extras: dict = field(default_factory=dict)

    @property
    def decided(self) -> bool:
        return self.decision is not None


class Tracker:
    def __init__(self, settings: TrackSettings, match: MatchSettings, point: OperatingPoint | None = None):
        self.settings = settings
        self.match = match
        self.point = point  # the operating point new visits vote with (None: match's fixed numbers)
        self.tracks: dict[int, Track] = {}
        self._ids = itertools.count(1)

    def update(self, faces: list[Face], t: float) -> tuple[list[tuple[Track, Face]], list[Track]]:
        """Assign this frame's faces to tracks; return (track, face) pairs and tracks that ended."""
        pairs = sorted(
            ((tr.box.iou(f.box), tid, i) for tid, tr in self.tracks.items() for i, f in enumerate(faces)),
            reverse=True,
        )
        used_t, used_f, seen = set(), set(), []
        for iou, tid, i in pairs:
            if iou < self.settings.iou_min:
                break
            if tid in used_t or i in used_f:
                continue
            used_t.add(tid)
            used_f.add(i)
            seen.append((self.tracks[tid], faces[i]))
        for i, f in enumerate(faces):
            if i not in used_f:
                tr = Track(id=next(self._ids), box=f.box, first_seen=t, last_seen=t, votes=VoteBox(self.match, self.point))
                self.tracks[tr.id] = tr
                seen.append((tr, f))
        for tr, f in seen:
            tr.box, tr.last_seen = f.box, t
            tr.frames += 1
            if f.ok:
                tr.good_frames += 1
            else:
                tr.poor_reasons.update(f.reasons)
        ended = [tr for tr in self.tracks.values() if t - tr.last_seen > self.settings.max_gap_s]
        for tr in ended:
            del self.tracks[tr.id]
        return seen, ended

    def flush(self) -> list[Track]:
        """End every track (the stream is over)."""
        ended = list(self.tracks.values())
        self.tracks.clear()
        return ended
