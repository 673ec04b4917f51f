"""The recognising stage: frame → faces → tracks → descriptors → votes → decisions.

Detection runs on every frame it is given (cheap, downscaled, with a finer
pass for far faces only when the cheap one finds nobody: ``SceneDetector``);
descriptors only for undecided tracks, on every ``embed_every``-th face that
passes the quality gates, and at most ``max_votes`` per visit. A decided
track is followed without further work until it ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Protocol

import cv2
import numpy as np

from ..capture.base import Frame
from ..config import KioskConfig
from .decide import Decision, Outcome, Vote
from .detect import Face, FaceDetector, SceneDetector, to_grey
from .embed import Embedder
from .gallery import Gallery
from .track import Track, Tracker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LivenessResult:
    """A liveness check's verdict on a visit: live True/False, or None when unsure."""

    live: bool | None
    scores: dict[str, float] = field(default_factory=dict)
    reason: str | None = None


class LivenessCheck(Protocol):
    def observe(self, track: Track, frame: Frame, grey: np.ndarray, face: Face) -> None: ...

    def assess(self, track: Track, final: bool) -> LivenessResult | None:
        """A verdict, or None while evidence is still coming in (only when not ``final``)."""


@dataclass
class RecognizerStats:
    frames: int = 0
    faces: int = 0
    descriptors: int = 0
    decisions: Counter = field(default_factory=Counter)
    short_tracks: int = 0
    prompts: int = 0  # visits asked to look at the camera


class Recognizer:
    def __init__(
        self,
        config: KioskConfig,
        gallery: Gallery,
        *,
        detector: FaceDetector | SceneDetector | None = None,
        embedder: Embedder | None = None,
        liveness: LivenessCheck | None = None,
        on_prompt: Callable[[Track, LivenessResult], None] | None = None,
        wall_clock=time.time,
        recent_checkins: dict[str, float] | None = None,
    ):
        self.config = config
        # Called (once per visit) when liveness cannot tell yet: the resident is
        # asked to look at the camera while the visit goes on.
        self.on_prompt = on_prompt
        self.detector = detector or SceneDetector(config.detect)
        self.embedder = embedder or Embedder(config.detect)
        self.tracker = Tracker(config.track, config.match)
        self.liveness = liveness
        self._gallery = gallery
        self._gallery_lock = threading.Lock()
        self._wall = wall_clock
        self._last_accepted: dict[str, float] = {}
        # Check-ins committed before this run (resident -> wall time): the
        # repeat interval holds across a restart too.
        self._accepted_before: dict[str, float] = dict(recent_checkins or {})
        self.stats = RecognizerStats()

    @property
    def gallery(self) -> Gallery:
        return self._gallery

    def swap_gallery(self, gallery: Gallery) -> None:
        """Replace the gallery in one step; the frame being processed finishes on the old one."""
        with self._gallery_lock:
            self._gallery = gallery

    def reconfigure(self, config: KioskConfig) -> None:
        """Take new match and track settings; visits already open keep their vote rules."""
        self.config = config
        self.tracker.settings = config.track
        self.tracker.match = config.match

    def process(self, frame: Frame, faces: list[Face] | None = None) -> list[Decision]:
        """Handle one frame; return the decisions it completed."""
        self.stats.frames += 1
        grey = to_grey(frame.image)
        if faces is None:
            faces = self.detector.detect(frame.image, grey)
        self.stats.faces += len(faces)
        seen, ended = self.tracker.update(faces, frame.timestamp)
        gallery = self._gallery  # one snapshot for the whole frame
        rgb = None
        decisions = []
        for track, face in seen:
            if track.decided:
                continue
            if self.liveness is not None:
                self.liveness.observe(track, frame, grey, face)
            # Descriptors only while they can still change the verdict (not while
            # an accepted face waits for the liveness check).
            wanted = not track.votes.full and not track.votes.settled
            if face.ok and wanted and (track.good_frames - 1) % self.config.track.embed_every == 0:
                if rgb is None:
                    rgb = cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB)
                desc = self.embedder.embed(rgb, face)
                self.stats.descriptors += 1
                now = self._wall()
                m = gallery.search(desc, now=now)
                track.votes.add(Vote(m.resident_id, m.distance, m.margin, frame.timestamp), desc)
                mean = track.votes.mean()
                if mean is not None:
                    v = gallery.search(mean, now=now)
                    track.votes.set_visit(Vote(v.resident_id, v.distance, v.margin, frame.timestamp))
            d = self._decide(track, frame.timestamp, final=False)
            if d:
                decisions.append(d)
        for track in ended:
            d = self._end(track, track.last_seen)
            if d:
                decisions.append(d)
        return decisions

    def finish(self) -> list[Decision]:
        """The stream is over: decide every open visit."""
        return [d for tr in self.tracker.flush() if (d := self._end(tr, tr.last_seen))]

    def _end(self, track: Track, t: float) -> Decision | None:
        if track.decided:
            return None
        if track.frames < self.config.track.min_frames and not track.votes.votes:
            self.stats.short_tracks += 1
            return None
        d = self._decide(track, t, final=True)
        if d is None:  # no descriptor at all: every frame failed a quality gate
            reason = track.poor_reasons.most_common(1)[0][0] if track.poor_reasons else "no_good_frames"
            d = self._finish(track, Decision(Outcome.TOO_POOR, track.id, frames=0, reason=reason, timestamp=t))
        return d

    def _decide(self, track: Track, t: float, final: bool) -> Decision | None:
        verdict = track.votes.verdict(final=final)
        if verdict is None:
            return None
        outcome, rid, dist, margin = verdict
        n = len(track.votes.votes)
        live: LivenessResult | None = None
        reason: str | None = None
        if outcome is Outcome.ACCEPTED and self.liveness is not None:
            live = self.liveness.assess(track, final)
            if live is None:
                return None  # wait for more evidence while the visit goes on
            if live.live is None and not final:
                # Not a decision yet: prompt once and keep gathering evidence for
                # one more wait (bounded, so an attacker gets no endless tries);
                # still unsure then, or at the end of the visit: LOOK_AT_CAMERA.
                prompted_at = track.extras.setdefault("prompted_at", t)
                if prompted_at == t and not track.extras.get("prompted"):
                    track.extras["prompted"] = True
                    self.stats.prompts += 1
                    if self.on_prompt is not None:
                        self.on_prompt(track, live)
                if t - prompted_at < self.config.liveness.max_wait_s:
                    return None
            if live.live is False:
                outcome, reason = Outcome.SPOOF, live.reason or "presentation_attack"
            elif live.live is None:
                outcome, reason = Outcome.LOOK_AT_CAMERA, live.reason or "insufficient_liveness_evidence"
        if outcome is Outcome.ACCEPTED:
            last = self._last_accepted.get(rid)
            before = self._accepted_before.get(rid)
            interval = self.config.match.repeat_interval_s
            if (last is not None and t - last < interval) or (before is not None and self._wall() - before < interval):
                outcome, reason = Outcome.DUPLICATE, "repeat_within_interval"
            else:
                self._last_accepted[rid] = t
        d = Decision(
            outcome,
            track.id,
            resident_id=rid if outcome in (Outcome.ACCEPTED, Outcome.DUPLICATE, Outcome.SPOOF, Outcome.LOOK_AT_CAMERA) else None,
            distance=dist,
            margin=margin,
            frames=n,
            reason=reason,
            timestamp=t,
            liveness=dict(live.scores) if live else {},
        )
        return self._finish(track, d)

    def _finish(self, track: Track, d: Decision) -> Decision:
        track.decision = d
        self.stats.decisions[d.outcome] += 1
        return d
