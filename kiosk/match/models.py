"""Locating and loading the dlib models that face-recognition-models ships.

The package is found with ``importlib.util.find_spec`` rather than imported:
its ``__init__`` needs ``pkg_resources``, which new setuptools lacks.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from pathlib import Path

from ..errors import ModelUnavailable

#: Goes into every event, so the back end knows which model decided.
MODEL_ID = "dlib-resnet-v1/hog"

FILES = {
    "landmarks5": "shape_predictor_5_face_landmarks.dat",
    "landmarks68": "shape_predictor_68_face_landmarks.dat",
    "resnet": "dlib_face_recognition_resnet_model_v1.dat",
    "mmod": "mmod_human_face_detector.dat",
}

_lock = threading.Lock()


def models_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable("face-recognition-models is not installed (pip install face-recognition-models)")
    d = Path(list(spec.submodule_search_locations)[0]) / "models"
    if not d.is_dir():
        raise ModelUnavailable(f"{d}: model folder missing")
    return d


def model_path(name: str) -> Path:
    p = models_dir() / FILES[name]
    if not p.is_file():
        raise ModelUnavailable(f"{p}: model file missing")
    return p


@functools.cache
def _load(name: str):
    import dlib

    path = str(model_path(name))
    try:
        if name.startswith("landmarks"):
            return dlib.shape_predictor(path)
        if name == "resnet":
            return dlib.face_recognition_model_v1(path)
        if name == "mmod":
            return dlib.cnn_face_detection_model_v1(path)
    except RuntimeError as e:
        raise ModelUnavailable(f"{path}: cannot load model: {e}") from e
    raise KeyError(name)


def load(name: str):
    """The named model, loaded once per process and shared (dlib models are read-only)."""
    with _lock:
        return _load(name)


_per_thread = threading.local()


def hog_detector():
    """dlib's HOG face detector, one per thread (made at a thread's first call, about 0.5 s).

    Unlike the models above it keeps scratch state while it runs: two threads
    running one detector at once crash the process (a daemon and an enrolment
    in one process, or the console enrolling on two of its threads).
    """
    det = getattr(_per_thread, "hog", None)
    if det is None:
        import dlib

        det = _per_thread.hog = dlib.get_frontal_face_detector()
    return det
