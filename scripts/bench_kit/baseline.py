"""The classic per-frame loop that face_recognition teaches (examples/facerec_from_video_file.py).

On every frame: ``face_locations`` (HOG, upsampled once, the default),
``face_encodings`` for each face, then ``compare_faces`` at the library's
default tolerance of 0.6; among the matches the nearest known face names the
person, as the library's webcam examples do with ``face_distance``.
"""

from __future__ import annotations

import time

import numpy as np

from .result import RunResult

TOLERANCE = 0.6


def rgb(bgr: np.ndarray) -> np.ndarray:
    """BGR -> RGB as the example does (``frame[:, :, ::-1]``), made contiguous.

    dlib 19.22+ (pybind11) refuses the example's negative-stride view in
    ``compute_face_descriptor``; the copy is the known workaround and is
    counted in the loop's time (well under a millisecond a frame).
    """
    return np.ascontiguousarray(bgr[:, :, ::-1])


def run_baseline(frames, known: np.ndarray, labels: list[str]) -> RunResult:
    import face_recognition

    result = RunResult(frames=len(frames))
    start = time.process_time()
    for frame in frames:
        rgb_frame = rgb(frame.image)
        locations = face_recognition.face_locations(rgb_frame)
        encodings = face_recognition.face_encodings(rgb_frame, locations)
        result.faces += len(locations)
        result.descriptors += len(encodings)
        for (top, right, bottom, left), encoding in zip(locations, encodings):
            matches = face_recognition.compare_faces(known, encoding, tolerance=TOLERANCE)
            if any(matches):
                distances = face_recognition.face_distance(known, encoding)
                best = int(np.argmin(distances))
                if matches[best]:
                    result.add_identity(labels[best], right - left, float(distances[best]))
    result.cpu_s = time.process_time() - start
    return result
