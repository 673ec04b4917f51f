"""Head pose from dlib's 68 landmarks: how far a face is turned away, and which way.

Fourteen rigid landmarks (brows, eye corners, nose wings, mouth, chin) are
fitted to a generic 3D head with ``cv2.solvePnP`` (a pinhole camera whose
focal length is the frame's width; the pose is robust to that guess). Angles
are in degrees, in the resident's own frame: ``yaw`` > 0 is a head turned to
the resident's **left** (on an unmirrored camera the nose moves to the
frame's right), ``pitch`` > 0 a head tilted up.

:class:`LandmarkCache` lets the quality gate, the liveness check and the
active check share one landmark fit per face per frame.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import cv2
import numpy as np

# A generic head: 14 rigid landmarks of a 3D face model (brows, eye corners, nose wings, mouth, chin), as
# the widely used 14-point head-pose model gives them (centimetres; here x to the frame's right, y down,
# z away from the camera). Rigid points only: the nose tip and the jaw line jitter most in dlib's fit.
_MODEL = np.array([
    (-6.825897, -6.760612, -4.402142),  # 17: brow, outer end (frame's left)
    (-1.330353, -7.122144, -6.903745),  # 21: brow, inner end
    (1.330353, -7.122144, -6.903745),   # 22
    (6.825897, -6.760612, -4.402142),   # 26
    (-5.311432, -5.485328, -3.987654),  # 36: eye, outer corner
    (-1.789930, -5.393625, -4.413414),  # 39: eye, inner corner
    (1.789930, -5.393625, -4.413414),   # 42
    (5.311432, -5.485328, -3.987654),   # 45
    (-2.005628, -1.409845, -6.165652),  # 31: nose wing
    (2.005628, -1.409845, -6.165652),   # 35
    (-2.774015, 2.080775, -5.048531),   # 48: mouth corner
    (2.774015, 2.080775, -5.048531),    # 54
    (0.0, 3.116408, -6.097667),         # 57: lower lip
    (0.0, 7.415691, -4.070434),         # 8: chin
], np.float64)
_POINTS = (17, 21, 22, 26, 36, 39, 42, 45, 31, 35, 48, 54, 57, 8)
_EYE_SPAN = 2 * 5.311432  # between the eyes' outer corners (model units)


class Pose(NamedTuple):
    yaw: float  # degrees, > 0: turned to the resident's left
    pitch: float  # degrees, > 0: tilted up

    @property
    def away(self) -> float:
        """How far from facing the camera, the larger of the two angles."""
        return max(abs(self.yaw), abs(self.pitch))


def head_pose(pts: np.ndarray, frame_size: tuple[int, int]) -> Pose | None:
    """The pose of a face from its 68 landmarks (``pts``: 68×2, frame pixels); None if the fit fails.

    :param frame_size: (height, width) of the frame the landmarks are in.
    """
    h, w = frame_size[:2]
    f = float(w)
    camera = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]], np.float64)
    image = np.ascontiguousarray(pts[list(_POINTS)], np.float64)
    # Start from a face looking at the camera at the distance its eye corners give: without a start the
    # solver may settle on the mirror pose (a face turned the other way) on a noisy fit.
    span = float(np.linalg.norm(image[7] - image[4])) or 1.0
    z = f * _EYE_SPAN / span
    centre = image.mean(axis=0)
    rvec = np.zeros((3, 1))
    tvec = np.array([[(centre[0] - w / 2) * z / f], [(centre[1] - h / 2) * z / f], [z]])
    ok, rvec, _ = cv2.solvePnP(_MODEL, image, camera, None, rvec, tvec, useExtrinsicGuess=True,
                               flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return None
    R, _ = cv2.Rodrigues(rvec)
    # The face's forward axis (towards the camera, -z in the model) in camera coordinates.
    fwd = R @ np.array([0.0, 0.0, -1.0])
    yaw = math.degrees(math.atan2(fwd[0], -fwd[2]))
    pitch = math.degrees(math.atan2(-fwd[1], math.hypot(fwd[0], fwd[2])))
    if not (math.isfinite(yaw) and math.isfinite(pitch)):
        return None
    return Pose(yaw, pitch)


def landmark_points(shape) -> np.ndarray:
    """A dlib ``full_object_detection`` as an N×2 float array."""
    return np.array([(shape.part(i).x, shape.part(i).y) for i in range(shape.num_parts)], np.float64)


class LandmarkCache:
    """A 68-point shape predictor that fits each face of the current frame once.

    Called like the dlib predictor it wraps, ``(grey, rect)``; results are kept
    for the last frame only (keyed by the frame array and the box).
    """

    def __init__(self, predictor):
        self._predictor = predictor
        self._frame: np.ndarray | None = None
        self._shapes: dict[tuple[int, int, int, int], object] = {}
        self.fits = 0  # landmark fits computed (not served from the cache), for benchmarks

    def __call__(self, grey: np.ndarray, rect):
        if grey is not self._frame:
            self._frame, self._shapes = grey, {}
        key = (rect.left(), rect.top(), rect.right(), rect.bottom())
        shape = self._shapes.get(key)
        if shape is None:
            shape = self._shapes[key] = self._predictor(grey, rect)
            self.fits += 1
        return shape

