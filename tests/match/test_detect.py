"""Scene detection: the downscaled pass on every frame, the far pass for small faces only when needed."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from kiosk.config import DetectSettings
from kiosk.match.detect import Box, Face, SceneDetector


class ScriptedDetector:
    """A detector the test drives: finds a face on the frames listed in ``hits``; logs every call."""

    def __init__(self, hits=()):
        self.hits = set(hits)
        self.calls: list[int] = []

    def detect(self, image, grey=None):
        i = int(image[0, 0])  # the frame number is written into the first pixel
        self.calls.append(i)
        return [Face(box=Box(10, 50, 50, 10), score=1.0, sharpness=100.0, edge_distance=0.1, reasons=())] if i in self.hits else []


def frames(n):
    for i in range(n):
        img = np.zeros((8, 8), np.uint8)
        img[0, 0] = i
        yield img


def scene(near_hits=(), far_hits=(), **settings):
    sd = SceneDetector(DetectSettings(**settings))
    sd.near, sd.far = ScriptedDetector(near_hits), ScriptedDetector(far_hits)
    return sd


def test_far_pass_runs_every_nth_frame_while_the_near_pass_finds_nobody():
    sd = scene(far_every=3)
    for img in frames(9):
        assert sd.detect(img, img) == []
    assert sd.near.calls == list(range(9))
    assert sd.far.calls == [2, 5, 8]


def test_far_pass_runs_on_every_frame_while_it_finds_faces_and_stops_when_the_near_pass_does():
    sd = scene(near_hits={6, 7}, far_hits={2, 3, 4}, far_every=3)
    found = [len(sd.detect(img, img)) for img in frames(10)]
    assert found == [0, 0, 1, 1, 1, 0, 1, 1, 0, 0]
    # 2: first try; 3, 4: it keeps finding; 5: it finds nobody; 6, 7: the near pass finds the
    # face; 8, 9: skipped again (the next try would be frame 11).
    assert sd.far.calls == [2, 3, 4, 5]


@pytest.mark.parametrize("far_scale", [0.0, 0.5, 0.3])
def test_far_pass_off_unless_finer_than_the_near_pass(far_scale):
    assert SceneDetector(DetectSettings(scale=0.5, far_scale=far_scale)).far is None


def test_far_pass_finds_the_small_faces_of_a_stage_clip(test_data):
    cap = cv2.VideoCapture(str(test_data / "faces/face_recognition/examples/short_hamilton_clip.mp4"))
    for _ in range(100):
        ok, img = cap.read()
        assert ok
    cap.release()
    sd = SceneDetector(DetectSettings(far_every=1))
    assert sd.near.detect(img) == []  # 70-105 px faces: too small at half scale
    faces = sd.detect(img)
    assert faces and all(f.box.width < 160 for f in faces)
