"""The door's own quality gates, beyond detection's: too dark, and turned away (which needs the landmarks).

They run in the recogniser, before tracking, on the faces detection found:
guided capture turns their reasons into instructions (:mod:`.guide`).
Enrollment and the offline evaluations keep detection's gates only.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..config import DetectSettings
from .detect import TOO_DARK, TOO_SMALL, TURNED_AWAY, Face, too_dark, turned_away
from .pose import Pose, head_pose, landmark_points


def door_gates(grey: np.ndarray, faces: list[Face], shapes,
               settings: DetectSettings) -> tuple[list[Face], list[Pose | None]]:
    """Each face with ``too_dark`` and ``turned_away`` added where they apply, and its head pose.

    Faces too small for landmarks get no pose. ``shapes``: a 68-point predictor (a
    :class:`~kiosk.match.pose.LandmarkCache`, so that the liveness check reuses the fit).
    """
    out, poses = [], []
    for face in faces:
        reasons = list(face.reasons)
        if too_dark(grey, face.box, settings):
            reasons.append(TOO_DARK)
        pose = None
        if TOO_SMALL not in reasons:
            pose = head_pose(landmark_points(shapes(grey, face.box.to_dlib())), grey.shape)
        if pose is not None and turned_away(pose.yaw, pose.pitch, settings):
            reasons.append(TURNED_AWAY)
        out.append(replace(face, reasons=tuple(reasons)) if len(reasons) != len(face.reasons) else face)
        poses.append(pose)
    return out, poses
