"""Does guided capture tell the resident what is really wrong? The instruction against the known fault.

Real frames whose face passes every quality gate are degraded in the one
way each gate is about (:data:`FAULTS`): shrunk until the face is narrower
than ``detect.min_face_px`` (come closer), smeared by a short motion blur
(hold still), darkened (more light). Real frames of turned heads, labelled by
eye, stand for "face the camera"; frontal frames labelled the same way are
the control (no instruction). Each frame goes through the door's detection
and gates (:class:`SceneDetector`, :func:`~kiosk.match.gates.door_gates`), and the instruction is
the one the guide would give (:func:`kiosk.match.guide.main_reason` →
:data:`kiosk.prompts.REASON_PROMPTS`). A face not found gets no instruction:
it counts against the agreement.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..config import DetectSettings
from ..match.detect import SceneDetector, to_grey
from ..match.guide import main_reason
from ..match.gates import door_gates
from ..prompts import REASON_PROMPTS, Prompt


def shrink(image: np.ndarray, face_width: int, settings: DetectSettings) -> np.ndarray:
    """The frame scaled so that the face is three quarters of ``detect.min_face_px`` wide (the detector's
    boxes come in steps of about a fifth, so a face just under the gate may be boxed just over it)."""
    f = 0.75 * settings.min_face_px / face_width
    return cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)


def motion_blur(image: np.ndarray, face_width: int, settings: DetectSettings) -> np.ndarray:
    """A horizontal smear over a quarter of the face's width (a head moving during the exposure)."""
    n = max(3, face_width // 4) | 1
    kernel = np.zeros((n, n), np.float32)
    kernel[n // 2, :] = 1.0 / n
    return cv2.filter2D(image, -1, kernel)


def darken(image: np.ndarray, face_width: int, settings: DetectSettings) -> np.ndarray:
    """A quarter of the light: every level scaled to 25% (a dim hallway)."""
    return (image.astype(np.float32) * 0.25).astype(np.uint8)


#: A fault, how a frame is given it, and the instruction that fixes it.
FAULTS = {
    "too_small": (shrink, Prompt.COME_CLOSER),
    "blurred": (motion_blur, Prompt.HOLD_STILL),
    "too_dark": (darken, Prompt.MORE_LIGHT),
}


@dataclass
class Agreement:
    """One fault's frames: how many, how many got the right instruction, and what the others got."""

    expected: Prompt | None
    frames: int = 0
    agreed: int = 0
    refused: int = 0  # frames whose face was found and failed a gate (an instruction was given)
    got: Counter = field(default_factory=Counter)  # the gate's main reason (or no_face, or None: passed)

    @property
    def rate(self) -> float | None:
        """Share of all the frames that got the right instruction."""
        return self.agreed / self.frames if self.frames else None

    @property
    def rate_refused(self) -> float | None:
        """Share of the frames a gate refused that got the right instruction (the mapping, not the gates)."""
        return self.agreed / self.refused if self.refused else None

    def add(self, reason: str | None, got: Prompt | None) -> None:
        self.frames += 1
        self.agreed += got is self.expected
        self.refused += reason not in (None, "no_face")
        self.got[reason] += 1

    def as_json(self) -> dict:
        return {"expected": self.expected.value if self.expected else None, "frames": self.frames,
                "agreed": self.agreed, "refused": self.refused,
                "rate": None if self.rate is None else round(self.rate, 4),
                "rate_refused": None if self.rate_refused is None else round(self.rate_refused, 4),
                "got": {(k or "passed"): v for k, v in sorted(self.got.items(), key=lambda kv: str(kv[0]))}}


class Judge:
    """The door's detection and gates on one frame at a time, and the instruction they lead to."""

    def __init__(self, settings: DetectSettings, shapes):
        self.settings = settings
        self.shapes = shapes
        self._detector = SceneDetector(settings.model_copy(update={"far_every": 1}))

    def faces(self, image: np.ndarray):
        grey = to_grey(image)
        # Single frames, not a stream: the far pass runs whenever the near one finds nobody.
        faces = self._detector.detect(image, grey)
        faces, poses = door_gates(grey, faces, self.shapes, self.settings)
        return faces, poses

    def instruction(self, image: np.ndarray) -> tuple[str | None, Prompt | None]:
        """(the gate's main reason, the instruction) for the largest face; (no_face, None) without one."""
        faces, _ = self.faces(image)
        if not faces:
            return "no_face", None
        reason = main_reason(faces[0].reasons)
        return reason, REASON_PROMPTS.get(reason) if reason else None


def evaluate(images: list[np.ndarray], labelled: list[tuple[np.ndarray, bool]], judge: Judge) -> dict[str, Agreement]:
    """Agreement per fault on ``images`` (frames whose face passes every gate are degraded; others are
    counted as skipped), and on ``labelled`` frames (turned away by eye: True, frontal: False)."""
    out = {name: Agreement(prompt) for name, (_, prompt) in FAULTS.items()}
    out["turned_away"] = Agreement(Prompt.FACE_CAMERA)
    out["frontal"] = Agreement(None)
    skipped = 0
    for image in images:
        faces, _ = judge.faces(image)
        if not faces or not faces[0].ok:
            skipped += 1
            continue
        width = faces[0].box.width
        for name, (fault, prompt) in FAULTS.items():
            out[name].add(*judge.instruction(fault(image, width, judge.settings)))
    for image, turned in labelled:
        out["turned_away" if turned else "frontal"].add(*judge.instruction(image))
    out["skipped"] = skipped  # type: ignore[assignment]
    return out
