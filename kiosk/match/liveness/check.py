"""The liveness check of one visit: each cue's evidence, weighed into one verdict.

Each cue turns what the visit has shown into evidence in [-1, 1] (positive:
live, negative: a presentation attack, 0: no information):

- ``blink`` (:mod:`.blink`): a dip of the eye aspect ratio on a steady face, +1;
- ``parallax`` (:mod:`.parallax`): the surround moves with the face (a held
  picture, -1) or stays put (a head before a scene, +1), from 3 moves on;
  not a picture when the band beyond the surround stays put (a walking
  person's hair and body follow the face too); and a head when the motion
  stops at an outline between the two while the appearance model calls the
  face live (either alone is no proof);
- ``moire`` (:mod:`.moire`): screen ripples on the face, down to -1;
- ``appearance`` (:mod:`.appearance`): a trained texture/colour/surround model,
  the visit's mean log-odds of "live" mapped to [-1, 1] around
  ``appearance_offset``. It needs no motion, so it is the one cue that works
  at a low frame rate and against a replayed video, which blinks and moves.
  Its "attack" weighs ``appearance_weight`` (3: it refuses on its own); its
  "live" weighs ``appearance_live_weight`` (0 by default, and always less than
  ``live_score``): the model was trained on two research sets and knows their
  recaptures, but it cannot tell a clean picture of a face from the face (the
  synthesised attacks look live to it, see docs/liveness.md).

The weighted total decides: live at ``live_score`` or more, an attack at
``-spoof_score`` or less (before ``max_wait_s`` only at twice that).
Per frame this costs one 68-point landmark fit, a 64×64 FFT, the appearance
features (about 3 ms) and, on moves, one warp of a small crop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from ...config import LivenessSettings
from .. import models
from ..challenge import KEY as CHALLENGE
from ..detect import Face
from ..pose import head_pose
from ..recognizer import LivenessResult
from ..track import Track
from .appearance import AppearanceModel, appearance_evidence
from .blink import blink_evidence, eye_aspect_ratio, interocular
from .moire import moire_evidence, moire_score
from .parallax import parallax_evidence, similarity_shift, surround_coherence

log = logging.getLogger(__name__)

_KEY = "liveness"
# Landmark sets kept per visit: enough for several seconds at camera rate.
_MAX_FRAMES = 120
#: The cues, in the order their evidence is reported.
CUES = ("blink", "parallax", "moire", "appearance")


@dataclass
class Evidence:
    """What one visit has shown so far (kept in ``track.extras['liveness']``)."""

    first: float
    last: float = 0.0
    points: list[np.ndarray] = field(default_factory=list)
    ears: list[float] = field(default_factory=list)
    moire: list[float] = field(default_factory=list)
    # Face/surround coherence: share of "follows the face" votes per comparison, in the ring round the
    # face and in the band beyond it (None where it had too little texture).
    coherence: list[float] = field(default_factory=list)
    beyond: list[float | None] = field(default_factory=list)
    # Appearance: the model's log-odds of "live", per frame.
    appearance: list[float] = field(default_factory=list)
    # Head yaw per frame, (frame time, degrees), for the active check (kiosk.match.pose).
    yaws: list[tuple[float, float]] = field(default_factory=list)
    ref_grey: np.ndarray | None = None  # the frame motion is measured from
    ref_points: np.ndarray | None = None


class Liveness:
    """The kiosk's liveness check (see module docstring); implements ``LivenessCheck``.

    :param appearance: the appearance model; by default the shipped one when
        ``settings.appearance`` is on. ``off`` lists the cues switched off
        (for ablation): their evidence counts as 0.
    """

    def __init__(self, settings: LivenessSettings, *, shape_predictor=None, appearance: AppearanceModel | None = None,
                 off: frozenset[str] = frozenset()):
        self.settings = settings
        self._shape = shape_predictor or models.load("landmarks68")
        if appearance is None and settings.appearance and "appearance" not in off:
            appearance = AppearanceModel.load()
        self.appearance = appearance if settings.appearance else None
        self.off = frozenset(off) | ({"appearance"} if self.appearance is None else set())
        bad = self.off - set(CUES)
        if bad:
            raise ValueError(f"unknown liveness cues {sorted(bad)}; expected some of {', '.join(CUES)}")

    def status(self) -> dict:
        """Which cues are on (for the device status)."""
        out = {c: ("off" if c in self.off else "on") for c in CUES}
        if self.appearance is not None:
            out["appearance_model"] = self.appearance.sha256[:16]
        elif self.settings.appearance:
            out["appearance"] = "off (switched off for this run)"
        else:
            out["appearance"] = "off (liveness.appearance = false)"
        return out

    def observe(self, track: Track, frame, grey: np.ndarray, face: Face) -> None:
        ev = track.extras.get(_KEY)
        if ev is None:
            ev = track.extras[_KEY] = Evidence(first=frame.timestamp)
        ev.last = frame.timestamp
        capped = len(ev.points) >= _MAX_FRAMES
        if capped and CHALLENGE not in track.extras:  # only an active check still needs the head's pose
            return
        shape = self._shape(grey, face.box.to_dlib())
        pts = np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], np.float64)
        if interocular(pts) < 8:  # landmarks collapsed: not a usable face
            return
        pose = head_pose(pts, grey.shape)
        if pose is not None:
            ev.yaws.append((frame.timestamp, pose.yaw))
        if capped:
            return
        ev.points.append(pts)
        ev.ears.append(eye_aspect_ratio(pts))
        if ev.ref_points is None:
            ev.ref_grey, ev.ref_points = grey, pts
        elif similarity_shift(ev.ref_points, pts) >= self.settings.min_motion:
            c = surround_coherence(ev.ref_grey, ev.ref_points, grey, pts)
            if c is not None:
                ev.coherence.append(c.share)
                ev.beyond.append(c.beyond)
            ev.ref_grey, ev.ref_points = grey, pts  # measure the next move from here
        if frame.image.ndim == 3:
            m = moire_score(frame.image, pts)
            if m is not None:
                ev.moire.append(m)
            if self.appearance is not None:
                ev.appearance.append(self.appearance.logit(frame.image, pts))

    def scores(self, track: Track) -> dict[str, float]:
        """Each cue's raw measure and evidence, and the weighted total."""
        ev: Evidence | None = track.extras.get(_KEY)
        s = self.settings
        out = {"frames": float(len(ev.points) if ev else 0)}
        if not ev or len(ev.points) < 2:
            out.update({c: 0.0 for c in CUES}, score=0.0)
            return out
        blink, dip = blink_evidence(ev.ears, ev.points, s.blink_drop, s.blink_steady)
        out["blink_dip"] = round(dip, 4)
        parallax, follows, beyond = parallax_evidence(ev.coherence, min_moves=s.min_moves, full_moves=s.full_moves,
                                                      follow_min=s.follow_min, static_max=s.static_max, beyond=ev.beyond)
        if follows is not None:
            out["follows"] = round(follows, 4)
        if beyond is not None:
            out["beyond_follows"] = round(beyond, 4)
        out["moves"] = float(len(ev.coherence))
        moire, m = moire_evidence(ev.moire, s.moire_threshold, s.moire_ramp)
        if m is not None:
            out["moire_raw"] = round(m, 4)
        appearance, a = appearance_evidence(ev.appearance, s.appearance_offset, s.appearance_scale)
        if a is not None:
            out["appearance_logit"] = round(a, 4)
        e = {"blink": blink, "parallax": parallax, "moire": moire, "appearance": appearance}
        e = {c: (0.0 if c in self.off else v) for c, v in e.items()}
        # What moved with the face stopped short of the band beyond it: the outline of a head (its hair and
        # body follow, the scene does not). Alone that proves nothing (a small print or a phone held up shows
        # an edge there too); with a face that the appearance model calls live (full evidence) it is a head
        # before a scene. Neither alone opens the door.
        if (beyond is not None and follows - beyond >= s.outline_drop and e["appearance"] >= 1
                and "parallax" not in self.off):
            outline = min(1.0, len(ev.coherence) / s.full_moves)
            if outline > e["parallax"]:
                e["parallax"] = outline
                out["outline"] = 1.0
        w = {"blink": s.blink_weight, "parallax": s.parallax_weight, "moire": s.moire_weight,
             "appearance": s.appearance_weight if e["appearance"] < 0 else s.appearance_live_weight}
        out.update({c: round(v, 4) for c, v in e.items()})
        out["score"] = round(sum(w[c] * e[c] for c in CUES), 4)
        return out

    def yaws(self, track: Track) -> list[tuple[float, float]]:
        ev: Evidence | None = track.extras.get(_KEY)
        return ev.yaws if ev else []

    def assess(self, track: Track, final: bool) -> LivenessResult | None:
        s = self.settings
        ev: Evidence | None = track.extras.get(_KEY)
        frames = len(ev.points) if ev else 0
        waited = (ev.last - ev.first) if ev else 0.0
        if not final and frames < s.min_frames:
            return None
        sc = self.scores(track)
        if sc["score"] >= s.live_score:
            return LivenessResult(True, sc)
        settled = final or waited >= s.max_wait_s
        # Before the wait is over only strong evidence refuses: a blink may still come.
        if sc["score"] <= -s.spoof_score * (1 if settled else 2):
            return LivenessResult(False, sc, _why(sc))
        if not settled:
            return None
        return LivenessResult(None, sc, "insufficient_liveness_evidence" if frames >= s.min_frames else "too_few_frames")


def _why(sc: dict) -> str:
    """The reason of a SPOOF: the cue that spoke most against the face."""
    if sc["appearance"] <= -0.5 and sc["appearance"] <= min(sc["moire"], sc["parallax"]):
        return "recaptured_face"
    return "screen_texture" if sc["moire"] < 0 and sc["parallax"] >= 0 else "flat_picture"
