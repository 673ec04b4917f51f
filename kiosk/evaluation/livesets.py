"""Clip sets for the liveness evaluation: the project's own (a manifest) and two real research sets.

Every reader returns :class:`LiveClip` s: a clip's frames with the times they
were taken, so the check sees a set at the frame rate it really has.

- ``manifest``: a folder made by ``kiosk-admin make-attacks`` (``manifest.json``;
  frame ``i`` at ``i / fps``).
- ``replay-attack``: the Idiap Replay-Attack frames as the recipe in
  ``shared/data/recipes`` extracts them, ``DIR/<split>/<clip>/frame_NNNNN.jpg``.
  The number is the frame of the original 25 fps video, so frame times are
  exact: a genuine clip is 20 frames over 15 s (about 1.3 fps), an attack
  clip 20 frames over about 9.5 s (about 2 fps). The clip's folder name says
  what it is: ``real``, or ``attack`` with ``fixed`` or ``hand`` support and
  ``attack_print`` (a printed photo), ``attack_mobile`` (an iPhone screen) or
  ``attack_highdef`` (an iPad screen), showing a ``photo`` or a ``video``.
- ``nuaa``: the NUAA Photograph Imposter Database as its recipe extracts it,
  ``DIR/{live,print}/<subject>/<subject>_<glasses>_<position>_<session>_<frame>.jpg``.
  A clip is one sequence (subject, glasses, position, session); frame numbers
  are of the 20 fps webcam stream, of which about every fourth was kept.

A clip's ``subject`` is the person in it (a client or subject number of the
set, never a name): splits and cross-validation folds keep a person on one side.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..capture.folder import list_images, natural_key
from .attacks import read_manifest

FORMATS = ("manifest", "replay-attack", "nuaa")
GENUINE = "genuine"
#: Replay-Attack's attack folders → the attack types reported.
_RA_KINDS = {"print": "print", "mobile": "phone", "highdef": "tablet"}
_RA_FPS = 25.0
_NUAA_FPS = 20.0
_RA_NAME = re.compile(
    r"^(?P<split>[a-z]+)__(?P<cls>real|attack)__(?P<support>fixed|hand|real)__(?:attack_(?P<kind>print|mobile|highdef))?"
    r"_?client(?P<client>\d+)_session\d+_(?P<rest>.+)$"
)
_NUAA_NAME = re.compile(r"^(?P<subject>\d{4})_(?P<glasses>\d+)_(?P<pos>\d+)_(?P<session>\d+)_(?P<frame>\d+)$")


@dataclass(frozen=True)
class LiveClip:
    """One clip: who and what it shows, and its frames as (file, seconds from the clip's start)."""

    id: str
    label: str  # GENUINE or "attack"
    attack_type: str | None  # e.g. print / phone / tablet (real sets), photo / print / screen (synthesised)
    subject: str
    frames: tuple[tuple[Path, float], ...]
    medium: str | None = None  # photo or video (what an attack shows)
    support: str | None = None  # fixed or hand (how an attack is held)

    @property
    def fps(self) -> float:
        """Frames per second over the clip (its real, average rate)."""
        span = self.frames[-1][1] - self.frames[0][1] if len(self.frames) > 1 else 0.0
        return (len(self.frames) - 1) / span if span > 0 else 0.0


def read_set(fmt: str, root: Path, *, split: str = "devel", subjects: set[str] | None = None,
             window_s: float | None = None) -> list[LiveClip]:
    """The clips of a set in format ``fmt`` (one of :data:`FORMATS`) at ``root``.

    :param split: Replay-Attack's split folder (``train`` or ``devel``).
    :param subjects: keep only these subjects (NUAA subject or Replay-Attack client numbers).
    :param window_s: cut clips longer than this into consecutive visits of this length.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    if fmt == "manifest":
        clips = _manifest(root)
    elif fmt == "replay-attack":
        clips = _replay_attack(root, split)
    elif fmt == "nuaa":
        clips = _nuaa(root)
    else:
        raise ValueError(f"unknown set format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if subjects:
        clips = [c for c in clips if c.subject in subjects]
    if window_s:
        clips = [w for c in clips for w in windows(c, window_s)]
    if not clips:
        raise ValueError(f"{root}: no clips found for format {fmt}" + (f", split {split}" if fmt == "replay-attack" else ""))
    return clips


def windows(clip: LiveClip, seconds: float) -> list[LiveClip]:
    """``clip`` cut into consecutive visits of ``seconds`` (a tail shorter than half of that is dropped)."""
    out, start, cur = [], clip.frames[0][1], []
    for f in clip.frames:
        if f[1] - start >= seconds and cur:
            out.append(cur)
            cur, start = [], f[1]
        cur.append(f)
    if cur and (cur[-1][1] - cur[0][1] >= seconds / 2 or not out):
        out.append(cur)
    if len(out) == 1:
        return [clip]
    return [LiveClip(f"{clip.id}#{i}", clip.label, clip.attack_type, clip.subject,
                     tuple((p, t - w[0][1]) for p, t in w), clip.medium, clip.support) for i, w in enumerate(out)]


def _manifest(root: Path) -> list[LiveClip]:
    out = []
    for c in read_manifest(root):
        files = list_images(root / c.path)
        out.append(LiveClip(c.path, GENUINE if c.label == GENUINE else "attack", c.attack_type, c.source,
                            tuple((p, i / c.fps) for i, p in enumerate(files))))
    return out


def _replay_attack(root: Path, split: str) -> list[LiveClip]:
    base = root / split
    if not base.is_dir():
        raise FileNotFoundError(f"{base}: no such split folder (Replay-Attack's are train and devel)")
    out = []
    for d in sorted(p for p in base.iterdir() if p.is_dir()):
        m = _RA_NAME.match(d.name)
        if not m:
            raise ValueError(f"{d}: not a Replay-Attack clip folder name")
        frames = tuple((p, int(re.sub(r"\D", "", p.stem)) / _RA_FPS) for p in list_images(d))
        if not frames:
            continue
        if m["cls"] == "real":
            out.append(LiveClip(d.name, GENUINE, None, m["client"], frames))
        else:
            medium = "video" if "_video_" in f"_{m['rest']}_" else "photo"
            out.append(LiveClip(d.name, "attack", _RA_KINDS[m["kind"]], m["client"], frames, medium, m["support"]))
    return out


def _nuaa(root: Path) -> list[LiveClip]:
    out = []
    for cls, label in (("live", GENUINE), ("print", "attack")):
        folder = root / cls
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: missing (NUAA's recipe makes live/ and print/)")
        for sd in sorted(p for p in folder.iterdir() if p.is_dir()):
            seqs: dict[str, list[tuple[Path, float]]] = {}
            for p in list_images(sd):
                m = _NUAA_NAME.match(p.stem)
                if m:
                    key = f"{m['subject']}_{m['glasses']}_{m['pos']}_{m['session']}"
                    seqs.setdefault(key, []).append((p, int(m["frame"]) / _NUAA_FPS))
            for key in sorted(seqs, key=natural_key):
                fr = sorted(seqs[key], key=lambda f: f[1])
                t0 = fr[0][1]
                frames = tuple((p, t - t0) for p, t in fr)
                if label == GENUINE:
                    out.append(LiveClip(f"{cls}/{key}", GENUINE, None, sd.name, frames))
                else:
                    out.append(LiveClip(f"{cls}/{key}", "attack", "print", sd.name, frames, "photo", "hand"))
    return out


def parse_subjects(text: str | None) -> set[str] | None:
    """``"0006-0008,0010"`` → {"0006", "0007", "0008", "0010"} (numbers keep their width)."""
    if not text:
        return None
    out = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        a, _, b = part.partition("-")
        if not a.isdigit() or (b and not b.isdigit()):
            raise ValueError(f"bad subject list {text!r}: expected numbers and ranges like 0006-0008,0010")
        if b:
            out.update(str(i).zfill(len(a)) for i in range(int(a), int(b) + 1))
        else:
            out.add(a)
    return out
