"""Same-camera sessions of the same people: the recordings issue 23's door templates are measured on.

A *session* is one recording of one person by one camera under one light. Three sets are read:

- Idiap Replay-Attack's development part (``../shared/data/recipes/replay-attack-dev.sh``): per client four real
  webcam clips, two in the office's controlled light and two in adverse light, 20 frames each (about 1.3 fps);
  sessions are named ``controlled_1``, ``controlled_2``, ``adverse_1``, ``adverse_2``.
- NUAA's development part (``nuaa-dev.sh``): per subject one to four webcam sessions (``live/<subject>/`` files
  ``<subject>_<glasses>_<place>_<session>_<frame>.jpg``; the session is the name up to the frame).
- A photo set laid out as ``<identity>/*`` (e.g. the shared ORL subjects): its photos in name order, cut into
  ``parts`` equal consecutive sessions. Not a camera's sessions; it lets the tests run on the shared data.

Frames keep their order; :func:`describe` gives each its descriptor through the descriptor cache.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..gallery.templates import DIMENSIONS
from .pairs import IMAGE_SUFFIXES, Sample, _sha

_REPLAY = re.compile(r"__real__real__client(\d+)_session\d+_webcam_authenticate_(controlled|adverse)_(\d+)$")
_NUAA = re.compile(r"^(\d{4}_\d{2}_\d{2}_\d{2})_(\d+)$")


@dataclass
class Person:
    """One person's sessions, each a list of frames in order."""

    identity: str
    sessions: dict[str, list[Sample]] = field(default_factory=dict)

    def vectors(self, session: str) -> np.ndarray:
        """The session's descriptors, frames with no face left out (shape (n, DIMENSIONS))."""
        got = [s.vector for s in self.sessions.get(session, []) if s.vector is not None]
        return np.vstack(got) if got else np.zeros((0, DIMENSIONS), np.float32)


def _frames(folder: Path, limit: int) -> list[Path]:
    found = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_frame_order)
    if limit and len(found) > limit:  # evenly spread over the session, not its first seconds
        found = [found[i] for i in np.linspace(0, len(found) - 1, limit).round().astype(int)]
    return found


def _frame_order(p: Path):
    digits = re.findall(r"\d+", p.stem)
    return (int(digits[-1]) if digits else 0, p.name)


def replay_attack(root: Path, limit: int = 0) -> list[Person]:
    """Replay-Attack's real clips under ``root`` (its ``train/`` and ``devel/`` folders, or one of them)."""
    people: dict[str, Person] = {}
    for clip in sorted(root.rglob("*__real__*")):
        m = _REPLAY.search(clip.name)
        if not clip.is_dir() or not m:
            continue
        client, light, take = m.groups()
        person = people.setdefault(f"client{client}", Person(f"client{client}"))
        person.sessions[f"{light}_{take}"] = [Sample(p, person.identity, _sha(p)) for p in _frames(clip, limit)]
    return list(people.values())


def nuaa(root: Path, limit: int = 0) -> list[Person]:
    """NUAA's genuine sessions under ``root/live/<subject>/``."""
    people = []
    live = root / "live" if (root / "live").is_dir() else root
    for subject in sorted(d for d in live.iterdir() if d.is_dir()):
        groups: dict[str, list[Path]] = {}
        for p in subject.iterdir():
            m = _NUAA.match(p.stem)
            if m and p.suffix.lower() in IMAGE_SUFFIXES:
                groups.setdefault(m.group(1), []).append(p)
        person = Person(subject.name)
        for name, paths in sorted(groups.items()):
            paths.sort(key=_frame_order)
            if limit and len(paths) > limit:
                paths = [paths[i] for i in np.linspace(0, len(paths) - 1, limit).round().astype(int)]
            person.sessions[name] = [Sample(p, person.identity, _sha(p)) for p in paths]
        people.append(person)
    return people


def photo_parts(root: Path, parts: int = 3) -> list[Person]:
    """A photo set ``root/<identity>/*`` with its photos (name order) cut into ``parts`` sessions ``p1``, ``p2``, …"""
    people = []
    for d in sorted(x for x in root.iterdir() if x.is_dir()):
        photos = sorted((p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_frame_order)
        if len(photos) < parts:
            continue
        person = Person(d.name)
        for i, chunk in enumerate(np.array_split(np.arange(len(photos)), parts), 1):
            person.sessions[f"p{i}"] = [Sample(photos[j], d.name, _sha(photos[j])) for j in chunk]
        people.append(person)
    return people


def load(kind: str, root: Path, limit: int = 0) -> list[Person]:
    if kind == "replay-attack":
        return replay_attack(root, limit)
    if kind == "nuaa":
        return nuaa(root, limit)
    if kind == "photos":
        return photo_parts(root)
    raise ValueError(f"unknown session set {kind!r} (replay-attack, nuaa, photos)")


def describe(people: list[Person], describer, cache, *, progress: bool = True, desc: str = "describing") -> None:
    from .descriptors import describe_samples

    describe_samples([s for p in people for frames in p.sessions.values() for s in frames], describer, cache,
                     progress=progress, desc=desc)
