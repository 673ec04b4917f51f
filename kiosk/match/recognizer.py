"""The recognising stage: frame → faces → tracks → descriptors → votes → decisions.

Detection runs on every frame it is given (cheap, downscaled, with a finer
pass for far faces only when the cheap one finds nobody: ``SceneDetector``);
descriptors only for undecided tracks, on every ``embed_every``-th face that
passes the quality gates, and at most ``max_votes`` per visit. A decided
track is followed without further work until it ends.

While a visit goes on, the reason its face fails a gate is given to the
resident as an instruction (:mod:`.guide`); when the liveness check cannot
tell, the resident is asked for head turns (:mod:`.challenge`).
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
from . import models
from .calibration import GalleryPoint, operating_point, summary
from .challenge import KEY as CHALLENGE, PASSED, Challenge
from .decide import Decision, OperatingPoint, Outcome, Vote
from .detect import Face, FaceDetector, SceneDetector, to_grey
from .embed import Embedder
from .guide import Guide
from .gates import door_gates
from .pose import LandmarkCache
from ..gallery.store import Gallery
from .second_factor import SecondFactor
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

    def yaws(self, track: Track) -> list[tuple[float, float]]:
        """The visit's head yaw per frame, (frame time, degrees), for the active check."""


@dataclass
class RecognizerStats:
    frames: int = 0
    faces: int = 0
    descriptors: int = 0
    decisions: Counter = field(default_factory=Counter)
    short_tracks: int = 0
    prompts: int = 0  # visits asked to look at the camera (or, with the active check, to turn the head)
    instructions: Counter = field(default_factory=Counter)  # instructions given, by reason
    challenges: Counter = field(default_factory=Counter)  # active checks, by result


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
        on_instruction: Callable[[Track, str], None] | None = None,
        wall_clock=time.time,
        recent_checkins: dict[str, float] | None = None,
        shapes: LandmarkCache | None = None,
        rng=None,
    ):
        self.config = config
        # Called (once per visit) when liveness cannot tell yet: the resident is
        # asked to look at the camera while the visit goes on.
        self.on_prompt = on_prompt
        # Called with a reason (a quality gate's, or the active check's turn_left / turn_right) that the
        # door screen and voice turn into an instruction (kiosk.prompts); not a decision.
        self.on_instruction = on_instruction
        self.shapes = shapes or LandmarkCache(models.load("landmarks68"))
        self.guide = Guide(config.guide)
        self._rng = rng  # the active check's directions: secrets unless a test injects a seeded one
        self.detector = detector or SceneDetector(config.detect)
        self.embedder = embedder or Embedder(config.detect)
        self.tracker = Tracker(config.track, config.match)
        self.liveness = liveness
        self._gallery = gallery
        self._gallery_lock = threading.Lock()
        self.point: GalleryPoint | None = None
        self.second_factor = SecondFactor(config.match.second_factor_window_s)
        self._follow_gallery()
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
        """Replace the gallery in one step; the frame being processed finishes on the old one.

        The operating point follows the new gallery's size (see :mod:`kiosk.match.calibration`).
        """
        with self._gallery_lock:
            self._gallery = gallery
            self._follow_gallery()

    def reconfigure(self, config: KioskConfig) -> None:
        """Take new match and track settings; visits already open keep their vote rules."""
        self.config = config
        self.tracker.settings = config.track
        self.tracker.match = config.match
        self.second_factor.window_s = config.match.second_factor_window_s
        self._follow_gallery()

    def _follow_gallery(self) -> None:
        """The operating point for this config and this gallery's size in residents and templates; new visits take it."""
        g = self._gallery
        point = operating_point(self.config.match, len(g), cap=getattr(g, "fpir_cap", None), templates=g.template_count)
        if point != self.point:
            log.log(logging.INFO if point.met else logging.WARNING, "operating point: %s; %s",
                    point.describe(), summary(point))
        self.point = point
        self.tracker.point = point

    def process(self, frame: Frame, faces: list[Face] | None = None) -> list[Decision]:
        """Handle one frame; return the decisions it completed."""
        self.stats.frames += 1
        grey = to_grey(frame.image)
        if faces is None:
            faces = self.detector.detect(frame.image, grey)
            faces, _ = door_gates(grey, faces, self.shapes, self.config.detect)
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
            if self.config.guide.enabled and CHALLENGE not in track.extras:
                reason = self.guide.update(track, face, frame.timestamp)
                if reason is not None:
                    self._instruct(track, reason)
            # Descriptors only while they can still change the verdict (not while
            # an accepted face waits for the liveness check).
            wanted = not track.votes.full and not track.votes.settled
            if face.ok and wanted and (track.good_frames - 1) % self.config.track.embed_every == 0:
                if rgb is None:
                    rgb = cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB)
                desc = self.embedder.embed(rgb, face)
                self.stats.descriptors += 1
                now = self._wall()
                means = self.config.match.mean_template
                m = gallery.search(desc, now=now, means=means)
                track.votes.add(_vote(m, frame.timestamp), desc)
                mean = track.votes.mean()
                if mean is not None:
                    track.votes.set_visit(_vote(gallery.search(mean, now=now, means=means), frame.timestamp))
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

    def operating_status(self) -> dict:
        """The operating point and what it is expected to give at this gallery's size (for the status topic)."""
        p = self.point
        out = {
            "residents": len(self._gallery), "templates": self._gallery.template_count,
            "effective_residents": p.effective_residents or len(self._gallery),
            "threshold": round(p.threshold, 4), "margin": p.margin, "visit_threshold": round(p.visit_threshold, 4),
            "source": p.source, "fpir_target": p.fpir_target, "expected_fpir": p.fpir, "expected_fnir": p.fnir,
            "calibrated_size": p.calibrated_size, "target_met": p.met,
            "second_factor": p.second_factor, "face_alone": p.face_alone,
            "summary": summary(p),
        }
        if p.second_factor and not self.config.qr_credential.enabled:
            out["summary"] += "; but qr_credential.enabled is false: no credential can confirm a face"
        return out

    def review(self, decisions: list[Decision], now: float, *, final: bool = False) -> list[Decision]:
        """Decisions as the door takes them: with the second factor on, residents' QR credentials
        only confirm a face in view that narrowed to them (:mod:`kiosk.match.second_factor`).

        Called once per frame, after :meth:`process` (the tracker's tracks are the faces in view).
        ``now``: the frame time; ``final``: the source is over (credentials still waiting are refused).
        """
        if not (self.point.second_factor or self.second_factor.waiting):
            return decisions
        out = self.second_factor.review(decisions, now, self.tracker.tracks)
        return out + self.second_factor.flush(now) if final else out

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
        shown_qr = outcome is Outcome.SHOW_QR  # the face is half of the evidence: it must be live too
        if (outcome is Outcome.ACCEPTED or shown_qr) and self.liveness is not None and CHALLENGE in track.extras:
            live = self._challenged(track, t, final)
            if live is None:
                return None
        elif (outcome is Outcome.ACCEPTED or shown_qr) and self.liveness is not None:
            live = self.liveness.assess(track, final)
            if not final and (live is None or live.live is None) and self._start_challenge(track, t):
                return None  # the active check has begun
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
        if live is not None:
            if live.live is False:
                outcome, reason = Outcome.SPOOF, live.reason or "presentation_attack"
            elif live.live is None:
                outcome, reason = Outcome.LOOK_AT_CAMERA, live.reason or "insufficient_liveness_evidence"
            elif live.reason == PASSED:
                reason = "active_check"
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
            candidates=track.votes.candidates() if outcome is Outcome.SHOW_QR else (),
            gap=track.votes.gap(),
            nearest=track.votes.nearest() if outcome is Outcome.UNKNOWN else None,
            named=(track.votes.named() if outcome is Outcome.SHOW_QR else None),
            descriptor=(np.mean(track.votes.descriptors, axis=0) if track.votes.descriptors
                        and outcome in (Outcome.ACCEPTED, Outcome.SHOW_QR) else None),
        )
        return self._finish(track, d)

    def _instruct(self, track: Track, reason: str) -> None:
        self.stats.instructions[reason] += 1
        if self.on_instruction is not None:
            self.on_instruction(track, reason)

    def _start_challenge(self, track: Track, t: float) -> bool:
        """Begin the active check if it is on and due (the cues had ``active_after_s`` to say live)."""
        s = self.config.liveness
        if not s.active_check or t - track.first_seen < s.active_after_s:
            return False
        ch = track.extras[CHALLENGE] = Challenge.start(s, t, self.liveness.yaws(track), self._rng)
        self.stats.prompts += 1
        self._announce(track, ch)
        return True

    def _announce(self, track: Track, ch: Challenge) -> None:
        """Tell the resident which way to turn, once per turn."""
        if ch.asked is not None and ch.announced != ch.step:
            ch.announced = ch.step
            self._instruct(track, ch.asked)

    def _challenged(self, track: Track, t: float, final: bool) -> LivenessResult | None:
        """The liveness verdict of a visit under the active check, or None while it goes on.

        The passive cues keep watching: their "live" admits, their "attack" refuses, whatever the turns.
        """
        ch: Challenge = track.extras[CHALLENGE]
        live = challenged(ch, self.liveness, track, t, final, self.config.liveness.max_wait_s)
        self._announce(track, ch)
        if live is not None:
            self.stats.challenges[live.reason if live.live is None or live.reason == PASSED
                                  else "passive " + ("live" if live.live else "attack")] += 1
        return live

    def _finish(self, track: Track, d: Decision) -> Decision:
        track.decision = d
        self.stats.decisions[d.outcome] += 1
        return d


def _vote(m, t: float) -> Vote:
    return Vote(m.resident_id, m.distance, m.margin, t, cohort=m.cohort, runner_up_id=m.runner_up_id)


def challenged(ch: Challenge, check: LivenessCheck, track: Track, t: float, final: bool,
               max_wait_s: float) -> LivenessResult | None:
    """A visit's liveness under the active check ``ch`` at frame time ``t``, or None while it goes on.

    The passive cues keep watching: their "live" admits and their "attack" refuses, whatever the turns.
    All turns made: live (reason ``passed``). A turn not made (the wrong way, or none in time) admits
    nothing, and the visit goes on exactly as it would have without the check: the cues get the time they
    would have had (``max_wait_s`` after they first said unsure) before the visit ends unsure, with the
    challenge's reason. So the check only ever adds a way in. (Shared with the liveness evaluation.)
    """
    result = ch.advance(check.yaws(track), t)
    passive = check.assess(track, final=final)
    if passive is not None and passive.live is not None:
        return LivenessResult(passive.live, {**passive.scores, **ch.scores()}, passive.reason)
    if passive is not None and ch.unsure_at is None:
        ch.unsure_at = t
    if result != PASSED and not final and (ch.unsure_at is None or t - ch.unsure_at < max_wait_s):
        return None
    if result == PASSED and not final:
        passive = check.assess(track, final=True)  # the cues' last word on the frames so far
        if passive.live is False:
            return LivenessResult(False, {**passive.scores, **ch.scores()}, passive.reason)
    result = result or "challenge_unfinished"
    scores = {**(passive.scores if passive else {}), **ch.scores()}
    return LivenessResult(True, scores, PASSED) if result == PASSED else LivenessResult(None, scores, result)
