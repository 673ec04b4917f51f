"""This pipeline on decoded frames, with the motion gate exactly as the daemon's match loop uses it."""

from __future__ import annotations

import time

from kiosk.config import KioskConfig
from kiosk.match.decide import Outcome
from kiosk.gallery.store import Gallery
from kiosk.match.motion import MotionGate
from kiosk.match.recognizer import Recognizer

from .result import RunResult

# Outcomes that mean "this resident was recognised" (a DUPLICATE is a repeat
# recognition within repeat_interval_s).
RECOGNISED = (Outcome.ACCEPTED, Outcome.DUPLICATE)


def run_ours(frames, config: KioskConfig, gallery: Gallery) -> RunResult:
    """A fresh recogniser and gate per video, as a freshly started daemon has.

    Mirrors ``kiosk.daemon.Kiosk.run``: detect only while the gate is open,
    hold the gate while a track is open, and feed closed-gate frames with no
    faces so that visits still end.
    """
    recognizer = Recognizer(config, gallery)
    motion = MotionGate(config.motion)
    result = RunResult(frames=len(frames))
    decisions = []
    start = time.process_time()
    for frame in frames:
        if motion.update(frame):
            decisions += recognizer.process(frame)
            if recognizer.tracker.tracks:
                motion.hold(frame.timestamp)
        else:
            decisions += recognizer.process(frame, faces=[])
    decisions += recognizer.finish()
    result.cpu_s = time.process_time() - start
    result.faces = recognizer.stats.faces
    result.descriptors = recognizer.stats.descriptors
    result.gate_open_frames = motion.open_frames
    for d in decisions:
        result.outcomes[d.outcome.value] += 1
        if d.outcome in RECOGNISED and d.resident_id:
            result.add_identity(d.resident_id, None)
    return result
