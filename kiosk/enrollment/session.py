"""Enrollment at the door: read an invitation, take a few diverse, sharp descriptors of one live face, propose them.

The daemon hands every frame to :meth:`DoorEnrollment.step` first. While no
one is enrolling it looks for an invitation every ``every_n_frames`` frames
(while someone is there); a good one starts a session, which owns the frames
until it ends (the recogniser meanwhile only closes its open visits). The
session follows one face (the largest) on its own track, asks the resident
to look at the camera and then to turn slightly, runs the liveness check as
for a visit, and takes a descriptor of each sharp frame that passes the
quality gates. When the passive cues cannot tell, it asks for head turns as
a visit does (the active check, :mod:`kiosk.match.challenge`, where
``[liveness] active_check`` is on) and proposes only if they are made: a
still picture cannot enroll. With enough of them, over ``collect_s`` seconds, it keeps the
sharper half and picks the most diverse among them (farthest first), seals
them to the admin's key and hands the proposal to the outbox. No frame is
kept: only the chosen descriptors leave the door, encrypted.

The invitation is used up when its proposal is committed, or when the
liveness check finds a presentation attack; any other end (the face lost,
the time up) leaves it good for another try.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..capture.base import Frame
from ..capture.qr import decode_qr
from ..config import KioskConfig
from ..errors import TokenRefused
from ..match.challenge import Challenge
from ..match.decide import Decision, Outcome
from ..match.detect import SEVERAL_FACES, to_grey
from ..match.recognizer import challenged
from ..match.track import Track, Tracker
from ..ratelimit import EventRateLimit
from ..sync.events.format import PROPOSAL_EVENT
from ..sync.keys import PartyKeys
from .invitation import RECORDED, Invitation, InvitationVerifier
from .proposal import new_proposal, seal_proposal

log = logging.getLogger(__name__)

METHOD = "invitation"
#: Descriptors farther than this from the others' median are another face (or a bad frame), not proposed.
OUTLIER_DISTANCE = 0.6
#: After a session, the same invitation in view is the same showing (the phone still held up), not a replay.
REPEAT_WINDOW_S = 30.0
#: After a session, the frames stay the enrollment's this long (the outcome stays on the screen).
LINGER_S = 3.0
#: The instruction on the screen is said again this often (the screen drops an instruction after a few seconds).
REPEAT_PROMPT_S = 2.0
#: Descriptors computed at most, per wanted one.
CANDIDATES_PER_DESCRIPTOR = 4


@dataclass
class Step:
    """What one frame gave: whether the enrollment took it, what to show, what to commit (decision, claims)."""

    owns: bool = False
    show: list[Decision] = field(default_factory=list)
    commit: list[tuple[Decision, dict]] = field(default_factory=list)


@dataclass
class _Candidate:
    descriptor: np.ndarray
    sharpness: float
    t: float


class _Session:
    def __init__(self, inv: Invitation, key: bytes, t: float, tracker: Tracker):
        self.inv = inv
        self.key = key  # the SHA-256 of the code as read
        self.started = t
        self.tracker = tracker
        self.track: Track | None = None
        self.candidates: list[_Candidate] = []
        self.ready_at: float | None = None
        self.said: str | None = None
        self.said_at = t
        self.turned = False
        self.challenge: Challenge | None = None  # the active check, once the passive cues could not tell
        self.ended_at: float | None = None


def choose(candidates: list[_Candidate], want: int) -> list[_Candidate]:
    """``want`` descriptors: outliers dropped, the sharper half kept, then the most diverse (farthest first)."""
    if len(candidates) < want:
        return []
    d = np.stack([c.descriptor for c in candidates])
    centre = np.median(d, axis=0)
    near = [c for c, dist in zip(candidates, np.linalg.norm(d - centre, axis=1)) if dist <= OUTLIER_DISTANCE]
    if len(near) < want:
        return []
    near.sort(key=lambda c: -c.sharpness)
    pool = near[: max(want, (len(near) + 1) // 2)]
    chosen = [pool[0]]
    rest = pool[1:]
    while len(chosen) < want:
        gaps = [min(float(np.linalg.norm(c.descriptor - k.descriptor)) for k in chosen) for c in rest]
        chosen.append(rest.pop(int(np.argmax(gaps))))
    return chosen


class DoorEnrollment:
    """The door's enrollment stage (see the module docstring)."""

    def __init__(self, config: KioskConfig, verifier: InvitationVerifier, *, door: PartyKeys, admin: PartyKeys,
                 detector, embedder, liveness=None, model_id: str, wall_clock: Callable[[], float] = time.time,
                 clock: Callable[[], float] = time.monotonic, rng=None):
        self.config = config
        self.settings = config.enrollment
        self.verifier = verifier
        self.door = door
        self.admin = admin
        self.detector = detector
        self.embedder = embedder
        self.liveness = liveness
        self.model_id = model_id
        self._wall = wall_clock
        self._rng = rng  # the turns' draws (None: ``secrets``; tests inject a seed)
        self.forged = EventRateLimit(config.qr_credential.forged_per_minute, clock=clock)
        self.session: _Session | None = None
        self._seen: dict[bytes, float] = {}  # invitations shown lately (sha256) -> frame time
        self._frames = 0
        self.proposed = 0
        self.refused: dict[str, int] = {}

    @property
    def _spacing(self) -> float:
        """Seconds between two descriptors taken: the wanted number, several times over, across ``collect_s``."""
        return self.settings.collect_s / (CANDIDATES_PER_DESCRIPTOR * self.settings.descriptors)

    @property
    def active(self) -> bool:
        return self.session is not None

    @property
    def enrolling(self) -> bool:
        """A session is taking descriptors now (not just showing how the last one ended)."""
        s = self.session
        return s is not None and s.ended_at is None

    def status(self, outbox) -> dict:
        """The enrollment's part of the door's retained status: whether a session runs, the proposals waiting in
        the outbox, made and refused since start (counts only: never whose)."""
        return {"enabled": True, "session": self.enrolling, "proposals_waiting": outbox.waiting(PROPOSAL_EVENT),
                "proposed": self.proposed, "refused": dict(self.refused)}

    def boxes(self, t: float) -> list:
        """The enrolling face's box in the frame of time ``t`` (for the door screen), if it was seen in it."""
        tr = self.session.track if self.session is not None else None
        return [tr.box] if tr is not None and tr.last_seen == t else []

    def step(self, frame: Frame, someone_there: bool = True) -> Step:
        """Hand one frame to the enrollment (see the module docstring)."""
        self._frames += 1
        if self.session is not None:
            return self._process(frame)
        if not someone_there or (self._frames - 1) % self.settings.every_n_frames:
            return Step()
        return self._look(frame)

    # -- the invitation --------------------------------------------------------------

    def _look(self, frame: Frame) -> Step:
        payloads = decode_qr(frame.image, thorough=False)
        if not payloads:
            return Step()
        t = frame.timestamp
        self._seen = {k: s for k, s in self._seen.items() if t - s <= REPEAT_WINDOW_S}
        step = Step()
        for payload in payloads:
            key = hashlib.sha256(payload).digest()
            if key in self._seen:
                self._seen[key] = t
                continue
            try:
                inv = self.verifier.verify(payload)
            except TokenRefused as e:
                if e.reason == "not_ours":
                    continue  # a resident's credential, or someone else's code
                self._seen[key] = t
                self.refused[e.reason] = self.refused.get(e.reason, 0) + 1
                if e.reason not in RECORDED or (e.reason == "forged" and not self.forged.take()):
                    continue
                log.info("enrollment invitation refused: %s", e.reason)
                d = Decision(Outcome.QR_REFUSED, 0, resident_id=getattr(e, "resident_id", None), reason=e.reason,
                             timestamp=t, method=METHOD)
                step.commit.append((d, {}))
                continue
            self._seen[key] = t
            log.info("enrollment invitation accepted: taking descriptors")
            self.session = _Session(inv, key, t, Tracker(self.config.track, self.config.match))
            step.owns = True
            step.show.append(Decision(Outcome.ENROLLING, 0, timestamp=t, method=METHOD))
            return step
        return step

    # -- the session -----------------------------------------------------------------

    def _process(self, frame: Frame) -> Step:
        s = self.session
        t = frame.timestamp
        step = Step(owns=True)
        if s.ended_at is not None:
            if t - s.ended_at >= LINGER_S:
                self.session = None
            return step
        grey = to_grey(frame.image)
        faces = self.detector.detect(frame.image, grey)
        seen, ended = s.tracker.update(faces, t)
        if s.track is None and seen:
            s.track = max(seen, key=lambda p: p[1].box.width * p[1].box.height)[0]
        if s.track is not None and any(tr.id == s.track.id for tr in ended):
            return self._fail(step, t, "face_lost")
        if t - s.started >= self.settings.timeout_s:
            return self._fail(step, t, "timeout")
        pair = next(((tr, f) for tr, f in seen if s.track is not None and tr.id == s.track.id), None)
        if pair is None:
            self._say(step, t, "no_face")
            return step
        track, face = pair
        if self.liveness is not None:
            self.liveness.observe(track, frame, grey, face)
        if s.challenge is not None:
            pass  # turning as asked: no other instruction, and the descriptors are taken
        elif len(faces) > 1:
            self._say(step, t, SEVERAL_FACES)
        elif not face.ok:
            self._say(step, t, face.reasons[0])
        elif (len(s.candidates) < CANDIDATES_PER_DESCRIPTOR * self.settings.descriptors
              and (not s.candidates or t - s.candidates[-1].t >= self._spacing)):
            rgb = cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB)
            s.candidates.append(_Candidate(self.embedder.embed(rgb, face), face.sharpness, t))
            # Half-way: a little turn gives the descriptors some spread of pose.
            s.turned = s.turned or len(s.candidates) * 2 >= self.settings.descriptors
            self._say(step, t, "enroll_turn" if s.turned else None)
        want = self.settings.descriptors
        enough = len(s.candidates) >= want and (
            t - s.candidates[0].t >= self.settings.collect_s
            or len(s.candidates) >= CANDIDATES_PER_DESCRIPTOR * want)
        if not enough:
            return step
        live = None
        if self.liveness is not None:
            live = self._live(step, track, t)
            if live is None:
                return step
            if live.live is False:
                self.verifier.use(s.inv)  # a presentation attack spends the invitation
                return self._fail(step, t, live.reason or "presentation_attack")
            if live.live is None and s.challenge is not None:
                return self._fail(step, t, live.reason)  # the turns not made: a picture cannot enroll
            if live.live is None:
                s.ready_at = s.ready_at if s.ready_at is not None else t
                if t - s.ready_at < self.config.liveness.max_wait_s:
                    return step
                return self._fail(step, t, live.reason or "insufficient_liveness_evidence")
        chosen = choose(s.candidates, want)
        if not chosen:
            return self._fail(step, t, "inconsistent_face")
        return self._propose(step, t, track, chosen, live.scores if live is not None else {})

    def _live(self, step: Step, track: Track, t: float):
        """The liveness verdict, or None while it is still to come; the active check where the cues cannot tell.

        As for a visit (:meth:`kiosk.match.recognizer.Recognizer._decide`): once the passive cues have had
        ``active_after_s`` and still cannot tell, the resident is asked for head turns; the cues go on watching
        (their "live" admits, their "attack" refuses), and the turns not made end it unsure.
        """
        s = self.session
        cfg = self.config.liveness
        if s.challenge is None:
            live = self.liveness.assess(track, False)
            if ((live is None or live.live is None) and cfg.active_check
                    and t - track.first_seen >= cfg.active_after_s):
                s.challenge = Challenge.start(cfg, t, self.liveness.yaws(track), self._rng)
                log.info("enrollment: the cues cannot tell, asking for head turns")
            else:
                return live
        live = challenged(s.challenge, self.liveness, track, t, False, cfg.max_wait_s)
        if live is None and s.challenge.asked is not None:
            self._say(step, t, s.challenge.asked)
        return live

    def _say(self, step: Step, t: float, reason: str | None) -> None:
        s = self.session
        if reason == s.said and t - s.said_at < REPEAT_PROMPT_S:
            return
        s.said, s.said_at = reason, t
        step.show.append(Decision(Outcome.ENROLLING, s.track.id if s.track else 0, reason=reason, timestamp=t,
                                  method=METHOD))

    def _propose(self, step: Step, t: float, track: Track, chosen: list[_Candidate], scores: dict) -> Step:
        s = self.session
        if self._wall() > s.inv.expires_at + self.settings.clock_skew_s:
            return self._fail(step, t, "expired")  # it ran out while the resident was enrolling
        if not self.verifier.use(s.inv):
            return self._fail(step, t, "replayed")
        claims = new_proposal(invitation=s.inv, site=self.config.device.site, device=self.config.device.device_id,
                              descriptors=[c.descriptor for c in chosen], model_id=self.model_id,
                              frames=len(s.candidates), liveness=scores, now=self._wall())
        sealed = seal_proposal(claims, self.door, self.admin)
        self.proposed += 1
        log.info("enrollment proposal made: %d descriptors from %d frames", len(chosen), len(s.candidates))
        # The resident is named as on a check-in (the back end files the proposal under the keyed hash an
        # erasure keeps, so that erasing them reaches it); the log says nothing of whose.
        d = Decision(Outcome.ENROLL_PROPOSED, track.id, resident_id=s.inv.resident_id, frames=len(chosen),
                     timestamp=t, method=METHOD, liveness=dict(scores))
        step.commit.append((d, {"proposal": sealed, "invitation": s.inv.nonce, "proposal_kind": "enrollment"}))
        self._seen[s.key] = t  # still held up: the same showing, not a replay
        s.ended_at = t
        s.candidates.clear()
        return step

    def _fail(self, step: Step, t: float, reason: str) -> Step:
        s = self.session
        log.info("enrollment not finished: %s", reason)
        d = Decision(Outcome.ENROLL_FAILED, s.track.id if s.track else 0, resident_id=s.inv.resident_id,
                     reason=reason, timestamp=t, method=METHOD)
        step.commit.append((d, {"invitation": s.inv.nonce}))
        self._seen.pop(s.key, None)  # shown again, it is another try
        s.ended_at = t
        s.candidates.clear()
        return step


def admin_key_path(config: KioskConfig) -> Path:
    """Where the admin's public key is (``keys.admin_public_key``, relative to the state folder)."""
    from ..sync import keys as keymod

    return keymod.resolve(config.keys.admin_public_key, config.device.state_dir)


def sealing_keys(config: KioskConfig) -> tuple[PartyKeys, PartyKeys] | None:
    """The door's own keys and the admin's public key, which a proposal is signed and sealed with; None without an
    admin public key."""
    from ..sync import keys as keymod

    path = admin_key_path(config)
    if not path.is_file():
        return None
    door, _ = keymod.load_device_keys(config)
    return door, keymod.load_public_one(path)


def open_enrollment(config: KioskConfig, db, recognizer, *, wall_clock: Callable[[], float] = time.time
                    ) -> DoorEnrollment | None:
    """The enrollment stage the config asks for, or None (off, no MQTT, or no admin key to check and seal with)."""
    from ..match.models import MODEL_ID
    from ..qrtoken import NonceCache

    if not config.enrollment.enabled or not config.mqtt.enabled:
        return None
    keys = sealing_keys(config)
    if keys is None:
        log.warning("enrollment at the door is off: no admin public key at %s", admin_key_path(config))
        return None
    door, admin = keys
    verifier = InvitationVerifier(admin, config.device.site, config.enrollment, NonceCache(db, wall_clock=wall_clock),
                                  wall_clock=wall_clock)
    return DoorEnrollment(config, verifier, door=door, admin=admin, detector=recognizer.detector,
                          embedder=recognizer.embedder, liveness=recognizer.liveness, model_id=MODEL_ID,
                          wall_clock=wall_clock)
