"""``kiosk preview --snapshot aim.png``: one annotated frame for aiming the camera.

Face boxes are drawn green when the face passes the quality gates and red
with the failed gates named when it does not; the frame also shows the
smallest face size that is recognised and the edge margin. The snapshot is
a picture of whoever stands at the door: it is written only where the
installer asks, never kept by the kiosk.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import cv2
import numpy as np

from .config import KioskConfig, config_from_args
from .errors import CameraUnavailable, KioskError, SourceExhausted

log = logging.getLogger(__name__)

GREEN = (60, 200, 60)
RED = (40, 40, 230)
GREY = (200, 200, 200)


def grab_frame(cfg: KioskConfig, settle_frames: int = 10, timeout: float = 10.0):
    """A frame from ``capture.source``; live cameras get ``settle_frames`` to adjust exposure."""
    from .capture import open_source

    source = open_source(cfg.capture.source, cfg.capture)
    deadline = time.monotonic() + timeout
    frame = None
    with source:
        source.start()
        wanted = settle_frames if source.live else 1
        for _ in range(max(1, wanted)):
            try:
                frame = source.read()
            except SourceExhausted:
                break
            if time.monotonic() > deadline:
                break
    if frame is None:
        raise CameraUnavailable(f"no frame from {cfg.capture.source}")
    return frame


def annotate(image: np.ndarray, faces, cfg: KioskConfig) -> np.ndarray:
    """A copy of the frame with face boxes, sizes, quality and the gates drawn on it."""
    out = image.copy()
    h, w = out.shape[:2]
    d = cfg.detect
    # The edge margin: faces reaching into it count as partly outside.
    mx, my = int(round(d.edge_margin * w)), int(round(d.edge_margin * h))
    cv2.rectangle(out, (mx, my), (w - 1 - mx, h - 1 - my), GREY, 1)
    # The smallest face width that is recognised, bottom-left.
    s = d.min_face_px
    cv2.rectangle(out, (mx + 4, h - 1 - my - 4 - s), (mx + 4 + s, h - 1 - my - 4), GREY, 1)
    _label(out, f"min {s} px", (mx + 8, h - 1 - my - 10 - s), GREY)
    for face in faces:
        b = face.box
        colour = GREEN if face.ok else RED
        cv2.rectangle(out, (b.left, b.top), (b.right, b.bottom), colour, 2)
        text = f"{b.width} px, sharpness {face.sharpness:.0f}"
        text += ", ok" if face.ok else ": " + ", ".join(face.reasons)
        _label(out, text, (b.left, max(12, b.top - 6)), colour)
    summary = f"{len(faces)} face(s), {sum(f.ok for f in faces)} good; {w}x{h}"
    _label(out, summary, (8, 20), GREEN if any(f.ok for f in faces) else RED)
    return out


def _label(img: np.ndarray, text: str, org: tuple[int, int], colour) -> None:
    # On a dark box, so the text reads on any background.
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
    x, y = org
    cv2.rectangle(img, (x - 2, y - h - 3), (x + w + 2, y + base), (0, 0, 0), cv2.FILLED)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)


def snapshot(cfg: KioskConfig, path: Path, settle_frames: int = 10):
    """Grab, detect, annotate and write ``path``; returns the faces found."""
    from .match.detect import SceneDetector

    frame = grab_frame(cfg, settle_frames)
    # What the kiosk would find, the far pass included (one frame: no frames to skip).
    faces = SceneDetector(cfg.detect.model_copy(update={"far_every": 1})).detect(frame.image)
    try:
        written = cv2.imwrite(str(path), annotate(frame.image, faces, cfg))
    except cv2.error:
        written = False
    if not written:
        raise KioskError(f"{path}: cannot write the snapshot (use .png or .jpg, in an existing folder)")
    return frame, faces


# -- `kiosk preview` -------------------------------------------------------------


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "preview",
        help="save one annotated frame for aiming the camera",
        description="Grab one frame, find faces, and save it with face boxes, sizes and quality drawn on it, "
        "so the camera can be aimed. The picture shows whoever is at the door: delete it when done.",
    )
    p.add_argument("--config", metavar="FILE", help="kiosk config file (default: built-in defaults)")
    p.add_argument("--source", metavar="SPEC", help="override capture.source")
    p.add_argument("--snapshot", required=True, type=Path, metavar="FILE", help="where to write the picture (.png)")
    p.add_argument("--settle", type=int, default=10, metavar="N",
                   help="frames to let a live camera adjust exposure first (default 10)")
    p.add_argument("--json", action="store_true", help="also print the faces as JSON")
    p.set_defaults(func=cmd_preview)


def cmd_preview(args) -> int:
    cfg = config_from_args(args)
    frame, faces = snapshot(cfg, args.snapshot, args.settle)
    h, w = frame.image.shape[:2]
    if args.json:
        print(json.dumps({"snapshot": str(args.snapshot), "width": w, "height": h,
                          "faces": [f.as_json() for f in faces]}, indent=2))
    else:
        print(f"{args.snapshot}: {w}x{h}, {len(faces)} face(s)")
        for f in faces:
            verdict = "ok" if f.ok else "refused: " + ", ".join(f.reasons)
            print(f"  {f.box.width}x{f.box.height} px at ({f.box.left},{f.box.top}), "
                  f"sharpness {f.sharpness:.0f}: {verdict}")
        if not faces:
            print("  no face found: stand where residents will stand, then aim again")
    return 0
