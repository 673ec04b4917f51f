"""``kiosk-admin faces`` and ``compare``: look at photos the way the kiosk does."""

from __future__ import annotations

import json

import cv2
import numpy as np

from ..errors import EnrollmentRefused
from ..match.detect import FaceDetector
from ..match.enroll import Enroller, read_image
from .common import config_of


def register(sub) -> None:
    p = sub.add_parser(
        "faces",
        help="print one JSON line per face found in each image",
        description="Detect faces as enrollment does (full scale, upsampled once) and print one JSON line per "
        "face: the box as top, right, bottom, left in the original image's pixels, and the quality measures.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="photos to look at")
    p.add_argument("--upsample", type=int, default=1, help="detector upsampling steps (default 1)")
    p.set_defaults(func=cmd_faces)

    p = sub.add_parser(
        "compare",
        help="print the descriptor distance between the faces of two photos",
        description="Print the distance between the descriptors of the single face in each photo, and whether "
        "it is under the configured threshold (match.threshold).",
    )
    p.add_argument("image_a", metavar="IMAGE_A", help="photo of one person alone")
    p.add_argument("image_b", metavar="IMAGE_B", help="photo of one person alone")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=cmd_compare)


def cmd_faces(args) -> int:
    cfg = config_of(args)
    det = FaceDetector(cfg.detect, scale=1.0, upsample=args.upsample)
    status = 0
    for name in args.images:
        try:
            img = read_image(name)
        except EnrollmentRefused as e:
            print(json.dumps({"image": name, "error": str(e)}))
            status = 1
            continue
        for i, face in enumerate(det.detect(img)):
            print(json.dumps({"image": name, "face": i, **face.as_json()}))
    return status


def cmd_compare(args) -> int:
    cfg = config_of(args)
    enroller = Enroller(cfg.detect)  # full scale, upsampled once: as enrollment sees photos
    vecs = []
    for name in (args.image_a, args.image_b):
        img = read_image(name)
        face = enroller.single_face(img, name)
        vecs.append(enroller.embedder.embed(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), face))
    dist = float(np.linalg.norm(vecs[0] - vecs[1]))
    same = dist <= cfg.match.threshold
    if args.json:
        print(json.dumps({"a": args.image_a, "b": args.image_b, "distance": round(dist, 6), "threshold": cfg.match.threshold, "match": same}))
    else:
        print(f"{dist:.4f} ({'under' if same else 'over'} the threshold {cfg.match.threshold})")
    return 0
