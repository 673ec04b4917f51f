"""Presentation-attack clips, synthesised from still photos, and genuine clips cut from real video.

An attack clip shows a photo as if held to the camera by hand: a flat
picture whose 3D pose (yaw, pitch, roll, distance) drifts smoothly, seen
through a pinhole camera onto a wall behind. Three kinds of presentation:

- ``photo``: a glossy print, sharp, with a moving specular highlight;
- ``print``: a paper print, blurred and washed out (ink on paper);
- ``screen``: a phone or tablet screen: the photo is drawn on an RGB
  sub-pixel grid and re-sampled by the camera without anti-aliasing, so
  moiré appears the way it does in front of a real sensor.

A genuine clip is a window of a real video. Clips are written as folders of
JPEG frames (what ``FolderSource`` replays), listed in ``manifest.json``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

ATTACK_TYPES = ("photo", "print", "screen")
FRAME_SIZE = (640, 480)  # width, height of synthesised frames
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Pose:
    """Pose of the held picture: angles in degrees, shift as a fraction of the frame, distance scale."""

    yaw: float
    pitch: float
    roll: float
    dx: float
    dy: float
    scale: float


def hand_path(n: int, rng: np.random.Generator, *, still: bool = False) -> list[Pose]:
    """A smooth hand-held trajectory of ``n`` poses (a few slow sinusoids per axis)."""
    t = np.linspace(0, 1, n)

    def wander(amp: float) -> np.ndarray:
        out = np.zeros(n)
        for k in range(1, 4):
            out += amp / k * np.sin(2 * math.pi * (rng.uniform(0.3, 1.2) * k * t) + rng.uniform(0, 2 * math.pi))
        return out

    k = 0.1 if still else 1.0  # a "still" hand only trembles
    yaw, pitch, roll = wander(14 * k) + rng.uniform(-6, 6), wander(9 * k) + rng.uniform(-4, 4), wander(5 * k)
    dx, dy = wander(0.05 * k), wander(0.04 * k)
    scale = 1 + wander(0.06 * k)
    return [Pose(*map(float, v)) for v in zip(yaw, pitch, roll, dx, dy, scale)]


def plane_homography(src_w: int, src_h: int, pose: Pose, out_size=FRAME_SIZE, fill: float = 0.8) -> np.ndarray:
    """Homography taking the picture's pixels to the camera frame for a plane in ``pose``."""
    W, H = out_size
    f = 1.1 * W  # focal length in pixels: a ~50° horizontal field of view
    # The picture, centred, in world units where its height fills ``fill`` of the frame at distance f.
    s = fill * H / src_h * pose.scale
    corners = np.array([[-src_w / 2, -src_h / 2, 0], [src_w / 2, -src_h / 2, 0], [src_w / 2, src_h / 2, 0], [-src_w / 2, src_h / 2, 0]]) * s
    a, b, c = np.radians([pose.pitch, pose.yaw, pose.roll])
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    world = corners @ (rz @ ry @ rx).T + np.array([pose.dx * W, pose.dy * H, f])
    proj = world[:, :2] / world[:, 2:3] * f + np.array([W / 2, H / 2])
    src = np.array([[0, 0], [src_w, 0], [src_w, src_h], [0, src_h]], np.float32)
    return cv2.getPerspectiveTransform(src, proj.astype(np.float32))


def wall(rng: np.random.Generator, out_size=FRAME_SIZE) -> np.ndarray:
    """A plain lit wall behind the picture: a soft gradient in a random light colour."""
    W, H = out_size
    base = rng.uniform(90, 200, 3)
    gx = np.linspace(-1, 1, W)[None, :, None] * rng.uniform(-25, 25)
    gy = np.linspace(-1, 1, H)[:, None, None] * rng.uniform(-25, 25)
    return np.clip(base[None, None, :] + gx + gy, 0, 255).astype(np.float32)


def crop_portrait(image: np.ndarray, box=None, max_side: int = 420) -> np.ndarray:
    """A head-and-shoulders crop of a photo (around ``box`` if given), at most ``max_side`` pixels."""
    h, w = image.shape[:2]
    if box is not None:
        cx, cy = (box.left + box.right) / 2, (box.top + box.bottom) / 2
        side = 2.4 * max(box.width, box.height)
        x0, x1 = int(max(0, cx - side * 0.5)), int(min(w, cx + side * 0.5))
        y0, y1 = int(max(0, cy - side * 0.55)), int(min(h, cy + side * 0.65))
        image = image[y0:y1, x0:x1]
        h, w = image.shape[:2]
    k = min(1.0, max_side / max(h, w))
    if k < 1:
        image = cv2.resize(image, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)
    return image


def _print_look(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Paper: blurred ink, lower contrast, a warm paper white, and a margin."""
    img = cv2.GaussianBlur(photo, (0, 0), rng.uniform(1.4, 2.4)).astype(np.float32)
    img = 40 + img * rng.uniform(0.68, 0.8)
    grey = img.mean(2, keepdims=True)
    img = grey + (img - grey) * 0.75  # inks are less saturated than a camera's colours
    img *= np.array([0.93, 0.98, 1.0])  # BGR: slightly warm paper
    return cv2.copyMakeBorder(np.clip(img, 0, 255), 12, 12, 12, 12, cv2.BORDER_CONSTANT, value=(225, 235, 240))


def _screen_look(photo: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """A display: each pixel drawn as R, G, B sub-pixel stripes with dark gaps, and a black bezel.

    Returns the sub-pixel image and its up-sampling factor.
    """
    up = 3
    h, w = photo.shape[:2]
    big = cv2.resize(photo, (w * up, h * up), interpolation=cv2.INTER_NEAREST).astype(np.float32)
    mask = np.zeros((h * up, w * up, 3), np.float32)
    for ch, col in ((2, 0), (1, 1), (0, 2)):  # BGR channels under R, G, B columns
        mask[:, col::up, ch] = 1.0
    mask[up - 1 :: up, :, :] *= 0.5  # the dark row between pixel rows
    mask = 0.7 + 0.3 * mask / mask.mean()  # what is left after the lens has spread each sub-pixel
    img = big * mask * rng.uniform(0.9, 1.05) + 10  # backlight: black is never quite black
    img = np.clip(img, 0, 255)
    bezel = 10 * up
    img = cv2.copyMakeBorder(img, bezel, bezel, bezel, bezel, cv2.BORDER_CONSTANT, value=(12, 12, 12))
    return img, up


def _highlight(frame: np.ndarray, H: np.ndarray, size: tuple[int, int], phase: float, strength) -> None:
    """A soft specular highlight that slides over the picture as it tilts (in place)."""
    w, h = size
    c = cv2.perspectiveTransform(np.array([[[w * (0.3 + 0.4 * math.sin(phase)), h * (0.3 + 0.2 * math.cos(phase))]]], np.float32), H)[0, 0]
    yy, xx = np.mgrid[0 : frame.shape[0], 0 : frame.shape[1]]
    r2 = ((xx - c[0]) ** 2 + (yy - c[1]) ** 2) / (0.18 * frame.shape[1]) ** 2
    frame += (strength * np.exp(-r2))[..., None]


def render_attack(photo: np.ndarray, kind: str, n: int, rng: np.random.Generator, *, still: bool = False, out_size=FRAME_SIZE) -> list[np.ndarray]:
    """``n`` BGR frames of ``photo`` presented as a ``kind`` attack."""
    if kind not in ATTACK_TYPES:
        raise ValueError(f"unknown attack type {kind!r}; expected one of {', '.join(ATTACK_TYPES)}")
    if kind == "print":
        picture = _print_look(photo, rng)
    elif kind == "screen":
        picture, _ = _screen_look(photo, rng)
    else:
        picture = cv2.copyMakeBorder(photo, 6, 6, 6, 6, cv2.BORDER_CONSTANT, value=(245, 245, 245)).astype(np.float32)
    ph, pw = picture.shape[:2]
    back = wall(rng, out_size)
    W, H = out_size
    gain = rng.uniform(0.85, 1.1)
    frames = []
    for i, pose in enumerate(hand_path(n, rng, still=still)):
        M = plane_homography(pw, ph, pose, out_size)
        # Nearest-neighbour sampling of the sub-pixel grid is what makes moiré (a sensor does not low-pass).
        interp = cv2.INTER_NEAREST if kind == "screen" else cv2.INTER_LINEAR
        warped = cv2.warpPerspective(picture, M, (W, H), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        inside = cv2.warpPerspective(np.ones((ph, pw), np.float32), M, (W, H), flags=cv2.INTER_LINEAR)[..., None]
        frame = back * (1 - inside) + warped * inside * gain
        if kind == "photo":
            _highlight(frame, M, (pw, ph), 0.7 * i / max(1, n) * 2 * math.pi, 70.0 * inside[..., 0])
        if kind == "screen":
            frame = cv2.GaussianBlur(frame, (0, 0), 0.8)  # camera optics: a little, not enough to hide the grid
        frame += rng.normal(0, 2.5, frame.shape)  # sensor noise
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames


@dataclass(frozen=True)
class ClipEntry:
    """One clip of an attack set, as listed in the manifest."""

    path: str  # folder of frames, relative to the manifest
    label: str  # "attack" or "genuine"
    attack_type: str | None  # one of ATTACK_TYPES for attacks
    source: str  # where the picture or video came from (a data-set path, not a person's name)
    frames: int
    fps: float


def write_clip(frames: list[np.ndarray], folder: Path, quality: int = 92) -> None:
    """Frames as ``000.jpg``…, like a camera's compressed stream."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(frames):
        ok, data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise OSError(f"{folder}: cannot encode frame {i}")
        (folder / f"{i:03d}.jpg").write_bytes(data.tobytes())


def write_manifest(root: Path, entries: list[ClipEntry]) -> Path:
    p = root / MANIFEST
    p.write_text(json.dumps({"version": 1, "clips": [asdict(e) for e in entries]}, indent=1))
    return p


def read_manifest(root: Path) -> list[ClipEntry]:
    p = Path(root) / MANIFEST
    try:
        data = json.loads(p.read_text())
        return [ClipEntry(**c) for c in data["clips"]]
    except FileNotFoundError:
        raise FileNotFoundError(f"{p}: no manifest (make one with kiosk-admin make-attacks)") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{p}: not a clip manifest: {e}") from e


def video_windows(path: Path, seconds: float, *, max_frames: int = 600, width: int = 640, fps: float = 15.0) -> tuple[list[list[np.ndarray]], float]:
    """A real video cut into consecutive windows of ``seconds``, re-sampled to about ``fps``.

    Frames are scaled to ``width`` pixels wide (small GIF previews are
    enlarged so the face is the size a door camera sees). Returns the windows
    and the clip frame rate.
    """
    cap = cv2.VideoCapture(str(path))
    try:
        native = cap.get(cv2.CAP_PROP_FPS) or fps
        if not 1 <= native <= 120:
            native = fps
        step = max(1, round(native / fps))
        frames, i = [], 0
        while len(frames) < max_frames:
            ok, img = cap.read()
            if not ok:
                break
            if i % step == 0:
                h, w = img.shape[:2]
                if w != width:
                    img = cv2.resize(img, (width, round(h * width / w)), interpolation=cv2.INTER_AREA if w > width else cv2.INTER_CUBIC)
                frames.append(img)
            i += 1
    finally:
        cap.release()
    out_fps = native / step
    per = max(2, round(seconds * out_fps))
    windows = [frames[i : i + per] for i in range(0, len(frames), per)]
    # A short tail is kept only if it is at least half a window.
    windows = [w for w in windows if len(w) >= per // 2]
    return windows, out_fps
