"""Face descriptors: 5-point landmarks, an aligned chip, dlib's ResNet 128-D."""

from __future__ import annotations

import numpy as np

from ..config import DetectSettings
from ..gallery.templates import DIMENSIONS
from . import models
from .detect import Face


class Embedder:
    """Computes 128-D descriptors; one per recognising thread (dlib's net is not re-entrant)."""

    def __init__(self, settings: DetectSettings, *, jitter: int | None = None):
        self.settings = settings
        self.jitter = settings.jitter if jitter is None else jitter
        self._shape = models.load("landmarks68" if settings.landmarks == 68 else "landmarks5")
        self._net = models.load("resnet")
        self.computed = 0  # descriptors computed since start, for benchmarks

    def landmarks(self, grey: np.ndarray, face: Face):
        """dlib full_object_detection for the face (on the grey frame)."""
        return self._shape(grey, face.box.to_dlib())

    def embed(self, rgb: np.ndarray, face: Face, shape=None, jitter: int | None = None) -> np.ndarray:
        """The descriptor of ``face`` in an RGB frame, as float32[128].

        ``shape`` may be landmarks already computed on the same frame.
        """
        import dlib

        if shape is None:
            shape = self._shape(rgb, face.box.to_dlib())
        chip = dlib.get_face_chip(rgb, shape, size=150, padding=0.25)
        n = self.jitter if jitter is None else jitter
        if n:
            desc = self._net.compute_face_descriptor(chip, n)
        else:
            desc = self._net.compute_face_descriptor(chip)
        self.computed += 1
        return np.asarray(desc, dtype=np.float32)
